#!/usr/bin/python3
"""Soak: mixed traffic for PGW_SOAK_SECONDS (default 600) while RSS and fds are sampled every
second (see bench/README.md, "Soak"). A benchmark, not a test: run it by hand.

    PGW_SOAK_SECONDS=600 /usr/bin/python3 bench/soak.py [--build build/release] [--out bench/results]

Starts the AWS fake, a real redis-server and one gateway (a Release build, configured and built
here unless --binary is given) on free loopback ports, with the integration tests' harness
(tests/integration/pgw_harness.py, imported by path). Three client processes (this script with
--worker) then drive, until the parent says stop:

  unary   cached hits over gRPC and HTTP GET, misses on ever-new ARNs (registered at the fake
          just before), NOT_FOUND (a fixed set and ever-new ones), cache-control: no-cache;
  slow    calls with a deadline shorter than the fake's injected latency, gRPC calls cancelled
          mid-flight, HTTP requests whose client hangs up mid-flight;
  watch   WatchBatchInferenceJob streams and SSE ?watch=true streams opened and closed (by
          the client, by a deadline, by the job reaching a terminal status, NOT_FOUND).

The parent moves the watched jobs on (FakeAws.set_job_status) so watchers get messages,
restarts Redis once at half time, and samples the gateway's VmRSS, threads and open fds (each
socket classified by its peer via /proc/net/tcp) plus the clients' per-second outcome counts
into a CSV. "Flat after warm-up" is computed at the end (definition in flat_verdict()), and the
figures and a PNG (matplotlib) are written next to the CSV. Exit status 0 when flat, 1 if not,
2 on a setup error.

Two quiet points (all clients idle, their HTTP connections and streams closed, QUIET_S long)
measure fds without in-flight calls: one at the end of warm-up, one at the end of the run.
"""

import argparse
import datetime
import http.client
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

import pgw_bench_build  # bench/, beside this script

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
HARNESS = os.path.join(ROOT, "tests", "integration", "pgw_harness.py")
PYTHON = "/usr/bin/python3"

ACCOUNT_PREFIX = "arn:aws:personalize:us-east-1:123456789012:batch-inference-job/"
SLOW_MS = 1500  # the fake's latency for the slow ARNs: longer than every deadline below
QUIET_S = 6  # length of a quiet point
NO_CACHE = (("cache-control", "no-cache"),)


def load_harness():
    import importlib.util

    spec = importlib.util.spec_from_file_location("pgw_harness", HARNESS)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["pgw_harness"] = mod
    spec.loader.exec_module(mod)
    return mod


h = load_harness()


# --- client side (--worker) ---------------------------------------------------------------------


class Counts:
    """Thread-safe outcome counters: key "kind.outcome" -> n."""

    def __init__(self):
        self.lock = threading.Lock()
        self.c = {}

    def add(self, key, n=1):
        with self.lock:
            self.c[key] = self.c.get(key, 0) + n

    def snapshot(self):
        with self.lock:
            return dict(self.c)


class Ctl:
    """The parent's control files: pause (go idle and close connections), stop (exit)."""

    def __init__(self, d):
        self.d = d

    def paused(self):
        return os.path.exists(os.path.join(self.d, "pause"))

    def stopped(self):
        return os.path.exists(os.path.join(self.d, "stop"))

    def watch_arns(self):
        try:
            with open(os.path.join(self.d, "watch.json")) as f:
                return json.load(f)
        except (OSError, ValueError):
            return []


class HttpClient:
    """One keep-alive HTTP/1.1 connection to the gateway, opened lazily, closable on pause."""

    def __init__(self, base):
        u = urllib.parse.urlsplit(base)
        self.host, self.port = u.hostname, u.port
        self.conn = None

    def get(self, path, headers=None, timeout=10):
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
            try:
                self.conn.request("GET", path, headers=headers or {})
                resp = self.conn.getresponse()
                body = resp.read()
                if resp.getheader("Connection", "").lower() == "close":
                    self.close()
                return resp.status, resp.getheader("x-cache"), body
            except (http.client.HTTPException, OSError):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def rest_path(arn, watch=False):
    return "/v1/batch-inference-jobs/" + urllib.parse.quote(arn, safe="") + (
        "?watch=true" if watch else "")


def paced(ctl, rate, body, on_pause=None):
    """Calls body() about `rate` times a second until stop; idles (after on_pause) while paused."""
    interval = 1.0 / rate
    next_t = time.monotonic()
    was_paused = False
    while not ctl.stopped():
        if ctl.paused():
            if not was_paused and on_pause:
                on_pause()
            was_paused = True
            time.sleep(0.05)
            next_t = time.monotonic()
            continue
        was_paused = False
        body()
        next_t += interval
        delay = next_t - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        elif delay < -1.0:
            next_t = time.monotonic()  # behind by a second: do not burst to catch up
    if on_pause:
        on_pause()


def grpc_describe(counts, stub, req_cls, kind, arn, timeout=5, metadata=()):
    import grpc

    try:
        _, call = stub.with_call(req_cls(batch_inference_job_arn=arn), timeout=timeout,
                                 metadata=metadata)
        counts.add(kind + ".OK")
        xc = dict(call.initial_metadata() or ()).get("x-cache")
        if xc:
            counts.add(kind + ".x-cache=" + xc)
    except grpc.RpcError as e:
        counts.add(kind + "." + e.code().name)


def http_describe(counts, client, kind, arn, headers=None):
    try:
        status, xc, _ = client.get(rest_path(arn), headers=headers)
        counts.add("%s.%d" % (kind, status))
        if xc:
            counts.add(kind + ".x-cache=" + xc)
    except (http.client.HTTPException, OSError) as e:
        counts.add(kind + ".error_" + type(e).__name__)


def fake_add_job(fake_url, arn, status):
    h.http_request("POST", fake_url + "/__control/jobs",
                   body={"arn": arn, "fixture": "job_full", "status": status})


def worker_unary(a, ctl, counts, channel, arns, rng):
    stub, req = h.describe_stub(channel)
    tag = "%d-%d" % (os.getpid(), int(time.time()))
    seq = {"miss": 0, "nf": 0}
    seq_lock = threading.Lock()

    def next_seq(k):
        with seq_lock:
            seq[k] += 1
            return seq[k]

    threads = []

    def spawn(rate, fn, use_http=True):
        client = HttpClient(a.http) if use_http else None

        def body():
            fn(client)

        t = threading.Thread(target=paced, args=(ctl, rate, body, client.close if client else None),
                             daemon=True)
        t.start()
        threads.append(t)

    def hit_grpc(_):
        grpc_describe(counts, stub, req, "hit_grpc", rng.choice(arns["hot"]))

    def hit_http(client):
        http_describe(counts, client, "hit_http", rng.choice(arns["hot"]))

    def miss(client):
        # A never-seen ARN, registered at the fake first: an L1 and Redis miss, one upstream
        # call, then a new entry that pushes an old one out of the small L1.
        n = next_seq("miss")
        arn = "%ssoak-miss-%s-%d" % (ACCOUNT_PREFIX, tag, n)
        fake_add_job(a.fake, arn, rng.choice(("ACTIVE", "IN PROGRESS", "CREATE FAILED")))
        if n % 2:
            grpc_describe(counts, stub, req, "miss_grpc", arn)
        else:
            http_describe(counts, client, "miss_http", arn)

    def not_found(client):
        n = next_seq("nf")
        if n % 4 < 2:
            arn = rng.choice(arns["not_found"])  # a known-unknown one: NOT_FOUND from cache
        else:
            arn = "%ssoak-nf-%s-%d" % (ACCOUNT_PREFIX, tag, n)  # ever-new: from AWS
        if n % 2:
            grpc_describe(counts, stub, req, "nf_grpc", arn)
        else:
            http_describe(counts, client, "nf_http", arn)

    def no_cache(client):
        arn = rng.choice(arns["hot"])
        if rng.random() < 0.5:
            grpc_describe(counts, stub, req, "nocache_grpc", arn, metadata=NO_CACHE)
        else:
            http_describe(counts, client, "nocache_http", arn, headers={"Cache-Control": "no-cache"})

    for _ in range(2):
        spawn(60, hit_grpc, use_http=False)
    spawn(40, hit_http)
    spawn(15, miss)
    spawn(15, not_found)
    spawn(8, no_cache)
    return threads


def worker_slow(a, ctl, counts, channel, arns, rng):
    import grpc

    stub, req = h.describe_stub(channel)
    threads = []

    def deadline(_):
        # The fake answers the slow ARNs after SLOW_MS; no-cache so that every call waits on
        # upstream (it still shares the fetch in flight) instead of finding it cached.
        grpc_describe(counts, stub, req, "deadline", rng.choice(arns["slow"]),
                      timeout=rng.uniform(0.05, 0.4), metadata=NO_CACHE)

    def cancel_grpc(_):
        fut = stub.future(req(batch_inference_job_arn=rng.choice(arns["slow"])), timeout=10,
                          metadata=NO_CACHE)
        time.sleep(rng.uniform(0.02, 0.5))
        if fut.cancel():
            counts.add("cancel_grpc.CANCELLED")
        else:
            try:
                fut.result()
                counts.add("cancel_grpc.OK")
            except grpc.RpcError as e:
                counts.add("cancel_grpc." + e.code().name)

    def cancel_http(_):
        # A client that hangs up while its request waits on upstream.
        u = urllib.parse.urlsplit(a.http)
        try:
            with socket.create_connection((u.hostname, u.port), timeout=5) as s:
                s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nCache-Control: no-cache\r\n\r\n" %
                           rest_path(rng.choice(arns["slow"]))).encode())
                time.sleep(rng.uniform(0.02, 0.5))
            counts.add("cancel_http.hung_up")
        except OSError as e:
            counts.add("cancel_http.error_" + type(e).__name__)

    for rate, fn in ((6, deadline), (6, deadline), (4, cancel_grpc), (4, cancel_http)):
        t = threading.Thread(target=paced, args=(ctl, rate, lambda fn=fn: fn(None)), daemon=True)
        t.start()
        threads.append(t)
    return threads


def watch_slot(ctl, counts, channel, arns, rng):
    """One gRPC watcher after another: open, read, end by cancel / deadline / the job's end."""
    import grpc

    while not ctl.stopped():
        if ctl.paused():
            time.sleep(0.05)
            continue
        r = rng.random()
        if r < 0.08:
            arn, what = rng.choice(arns["not_found"]), "nf"  # ends NOT_FOUND at once
        elif r < 0.15:
            arn, what = rng.choice(arns["hot"]), "done"  # terminal already: one message, OK
        else:
            live = ctl.watch_arns()
            if not live:
                time.sleep(0.1)
                continue
            arn, what = rng.choice(live), "live"
        deadline = rng.uniform(1, 4) if rng.random() < 0.3 else None
        stream = h.WatchStream(channel, arn, timeout=deadline)
        counts.add("watch.opened")
        hold_until = time.monotonic() + rng.uniform(0.5, 6)
        while (not stream.done.is_set() and time.monotonic() < hold_until and
               not ctl.paused() and not ctl.stopped()):
            stream.done.wait(0.1)
        if not stream.done.is_set():
            stream.cancel()
        stream.done.wait(10)
        counts.add("watch.msgs", len(stream.jobs))
        code = stream.code.name if isinstance(stream.code, grpc.StatusCode) else "STILL_OPEN"
        counts.add("watch.end_%s_%s" % (what, code))
        time.sleep(rng.uniform(0, 0.3))


def sse_slot(a, ctl, counts, arns, rng):
    """One SSE watcher after another, each held for a while and closed by the client. A raw
    socket with select(): a buffered reader is unusable after one read timeout."""
    import select

    u = urllib.parse.urlsplit(a.http)
    while not ctl.stopped():
        if ctl.paused():
            time.sleep(0.05)
            continue
        live = ctl.watch_arns()
        if not live:
            time.sleep(0.1)
            continue
        arn = rng.choice(live)
        outcome = "closed_by_client"
        try:
            with socket.create_connection((u.hostname, u.port), timeout=5) as s:
                s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n" %
                           rest_path(arn, watch=True)).encode())
                counts.add("sse.opened")
                buf = b""
                status_seen = False
                hold_until = time.monotonic() + rng.uniform(0.5, 6)
                while time.monotonic() < hold_until and not ctl.paused() and not ctl.stopped():
                    if not select.select([s], [], [], 0.1)[0]:
                        continue
                    data = s.recv(65536)
                    if not data:
                        outcome = "ended_by_server"
                        break
                    buf += data
                    if not status_seen and b"\r\n" in buf:
                        status_seen = True
                        code = buf.split(b" ", 2)[1]
                        if code != b"200":
                            outcome = "status_" + code.decode(errors="replace")
                            break
                    # Count whole lines only; keep a partial one for the next read.
                    lines = buf.split(b"\n")
                    buf = lines.pop()
                    for line in lines:
                        if line.startswith(b"data:"):
                            counts.add("sse.msgs")
                        elif line.startswith(b"event: error"):
                            counts.add("sse.error_events")
        except OSError as e:
            outcome = "error_" + type(e).__name__
        counts.add("sse." + outcome)
        time.sleep(rng.uniform(0, 0.3))


def worker_watch(a, ctl, counts, channel, arns, rng):
    threads = []
    for i in range(8):
        t = threading.Thread(target=watch_slot,
                             args=(ctl, counts, channel, arns, random.Random(rng.random())),
                             daemon=True)
        t.start()
        threads.append(t)
    for i in range(3):
        t = threading.Thread(target=sse_slot, args=(a, ctl, counts, arns, random.Random(rng.random())),
                             daemon=True)
        t.start()
        threads.append(t)
    return threads


def worker_main(a):
    import grpc

    ctl = Ctl(a.ctl)
    with open(os.path.join(a.ctl, "arns.json")) as f:
        arns = json.load(f)
    counts = Counts()
    rng = random.Random(a.seed)
    channel = grpc.insecure_channel(a.grpc)
    role = {"unary": worker_unary, "slow": worker_slow, "watch": worker_watch}[a.worker]
    threads = role(a, ctl, counts, channel, arns, rng)
    # Cumulative counts, one JSON line every half second, read by the parent.
    while not ctl.stopped():
        print(json.dumps(counts.snapshot()), flush=True)
        time.sleep(0.5)
    for t in threads:
        t.join(timeout=15)
    print(json.dumps(counts.snapshot()), flush=True)
    channel.close()


# --- the gateway's resources ----------------------------------------------------------------------


def proc_status(pid):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "Threads"):
                out[k] = int(v.split()[0])
    return out


def tcp_table():
    """inode -> (local port, remote port, state) from /proc/net/tcp and tcp6."""
    table = {}
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    lport = int(parts[1].rsplit(":", 1)[1], 16)
                    rport = int(parts[2].rsplit(":", 1)[1], 16)
                    table[parts[9]] = (lport, rport, parts[3])
        except OSError:
            pass
    return table


def fd_breakdown(pid, ports):
    """Open fds by kind: sockets by peer (upstream = the fake, redis, clients on the gateway's
    ports, listen), pipes, anon inodes (eventfd, epoll, timerfd), files."""
    fds = {"total": 0, "upstream": 0, "redis": 0, "client": 0, "listen": 0, "socket_other": 0,
           "pipe": 0, "anon": 0, "file": 0}
    d = "/proc/%d/fd" % pid
    table = None
    for name in os.listdir(d):
        try:
            target = os.readlink(os.path.join(d, name))
        except OSError:
            continue  # closed meanwhile
        fds["total"] += 1
        if target.startswith("socket:["):
            if table is None:
                table = tcp_table()
            ent = table.get(target[8:-1])
            if ent is None:
                fds["socket_other"] += 1  # unix sockets, or closed since
            elif ent[2] == "0A":
                fds["listen"] += 1
            elif ent[1] == ports["fake"]:
                fds["upstream"] += 1
            elif ent[1] == ports["redis"]:
                fds["redis"] += 1
            elif ent[0] in (ports["grpc"], ports["http"]):
                fds["client"] += 1
            else:
                fds["socket_other"] += 1
        elif target.startswith("pipe:"):
            fds["pipe"] += 1
        elif target.startswith("anon_inode:"):
            fds["anon"] += 1
        else:
            fds["file"] += 1
    return fds


# --- the parent -------------------------------------------------------------------------------

# CSV columns of per-second counts: (column, predicate on "kind.outcome" keys).
RATE_COLUMNS = [
    ("hit_ok", lambda k: k in ("hit_grpc.OK", "hit_http.200")),
    ("miss_ok", lambda k: k in ("miss_grpc.OK", "miss_http.200")),
    ("not_found", lambda k: k in ("nf_grpc.NOT_FOUND", "nf_http.404")),
    ("no_cache_ok", lambda k: k in ("nocache_grpc.OK", "nocache_http.200")),
    ("deadline_exceeded", lambda k: k == "deadline.DEADLINE_EXCEEDED"),
    ("cancelled", lambda k: k in ("cancel_grpc.CANCELLED", "cancel_http.hung_up")),
    ("watch_opened", lambda k: k in ("watch.opened", "sse.opened")),
    ("watch_msgs", lambda k: k in ("watch.msgs", "sse.msgs")),
]

EXPECTED = {
    "hit_grpc.OK", "hit_http.200", "miss_grpc.OK", "miss_http.200", "nf_grpc.NOT_FOUND",
    "nf_http.404", "nocache_grpc.OK", "nocache_http.200", "deadline.DEADLINE_EXCEEDED",
    "cancel_grpc.CANCELLED", "cancel_http.hung_up", "watch.opened", "watch.msgs",
    "watch.end_live_CANCELLED", "watch.end_live_DEADLINE_EXCEEDED", "watch.end_live_OK",
    "watch.end_nf_NOT_FOUND", "watch.end_done_OK", "sse.opened", "sse.msgs",
    "sse.closed_by_client", "sse.ended_by_server",
}
# A call cancelled or a gRPC deadline reached just as its answer came is no fault either.
BENIGN = {"cancel_grpc.OK", "deadline.OK", "watch.end_done_CANCELLED", "watch.end_nf_CANCELLED",
          "watch.end_done_DEADLINE_EXCEEDED"}


def is_unexpected(k):
    return not (k in EXPECTED or k in BENIGN or ".x-cache=" in k)


class Workers:
    def __init__(self, a, ctl_dir, gw, fake):
        self.procs = []
        self.latest = {}
        self.lock = threading.Lock()
        for i, role in enumerate(("unary", "unary", "slow", "watch")):
            cmd = [PYTHON, os.path.abspath(__file__), "--worker", role, "--ctl", ctl_dir,
                   "--grpc", gw.grpc_target, "--http", gw.http_url, "--fake", fake.url,
                   "--seed", str(a.seed * 100 + i)]
            p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=open(
                os.path.join(ctl_dir, "worker-%d.stderr" % i), "wb"), stdin=subprocess.DEVNULL,
                env=dict(os.environ))
            self.procs.append(p)
            threading.Thread(target=self._read, args=(i, p), daemon=True).start()

    def _read(self, i, p):
        for line in p.stdout:
            try:
                snap = json.loads(line)
            except ValueError:
                continue
            with self.lock:
                self.latest[i] = snap

    def totals(self):
        out = {}
        with self.lock:
            for snap in self.latest.values():
                for k, v in snap.items():
                    out[k] = out.get(k, 0) + v
        return out

    def wait(self, timeout=30):
        for p in self.procs:
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        time.sleep(0.2)  # the reader threads take the last line


class WatchedJobs(threading.Thread):
    """Moves the watched jobs on, so the watchers get messages: one of them changes every
    0.5 s (a new status or last-updated time); every 15 s the oldest reaches a terminal status
    (its streams end OK) and a new one takes its place."""

    def __init__(self, fake, ctl_dir, stop, n=5):
        super().__init__(daemon=True)
        self.fake, self.ctl_dir, self.stop_ev = fake, ctl_dir, stop
        self.seq = 0
        self.live = []
        self.changes = 0
        self.finished = 0
        for _ in range(n):
            self._add()
        self._publish()

    def _add(self):
        self.seq += 1
        arn = "%ssoak-watch-%d-%d" % (ACCOUNT_PREFIX, os.getpid(), self.seq)
        self.fake.add_job(arn, status="CREATE PENDING")
        self.live.append(arn)

    def _publish(self):
        tmp = os.path.join(self.ctl_dir, "watch.json.tmp")
        with open(tmp, "w") as f:
            json.dump(self.live, f)
        os.replace(tmp, os.path.join(self.ctl_dir, "watch.json"))

    def run(self):
        rng = random.Random(7)
        last_finish = time.monotonic()
        while not self.stop_ev.wait(0.5):
            try:
                arn = rng.choice(self.live)
                self.fake.set_job_status(arn, rng.choice(("CREATE PENDING", "CREATE IN_PROGRESS")))
                self.changes += 1
                if time.monotonic() - last_finish >= 15:
                    last_finish = time.monotonic()
                    old = self.live.pop(0)
                    self._add()
                    self._publish()
                    self.fake.set_job_status(old, rng.choice(("ACTIVE", "CREATE FAILED")))
                    self.finished += 1
            except (OSError, RuntimeError) as e:
                print("watched jobs: %s" % e, file=sys.stderr)


def least_squares_slope(xs, ys):
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0


def flat_verdict(rows, warmup_s, quiet):
    """"Flat after warm-up", over the samples taken at t >= warmup_s under load:

    - RSS: the least-squares slope is under RSS_SLOPE_LIMIT_KB_PER_MIN, and the mean of the
      last minute is within RSS_DRIFT_LIMIT_KB of the mean of the first minute after warm-up
      (a leak shows in both; allocator noise in neither);
    - fds: at the end-of-run quiet point, every kind of fd but upstream sockets is back to
      exactly its count at the warm-up quiet point, and the upstream keep-alive pool is no
      larger than the largest pool seen under load during warm-up (curl keeps idle
      connections up to two minutes, so the pool's size at an instant is not a leak)."""
    post = [r for r in rows if r["t_s"] >= warmup_s and r["phase"] == "load"]
    ts = [r["t_s"] for r in post]
    rss = [r["rss_kb"] for r in post]
    slope = least_squares_slope(ts, rss) * 60.0
    first = [r["rss_kb"] for r in post if r["t_s"] < warmup_s + 60]
    last = [r["rss_kb"] for r in post if r["t_s"] >= post[-1]["t_s"] - 60]
    drift = sum(last) / len(last) - sum(first) / len(first)
    fds = [r["fds"] for r in post]
    warm_pool_max = max([r["fd_upstream"] for r in rows if r["t_s"] < warmup_s] or [0])
    qw, qe = quiet["warmup"], quiet["end"]
    non_upstream_equal = all(qw[k] == qe[k] for k in qw if k not in ("total", "upstream"))
    rss_ok = slope < RSS_SLOPE_LIMIT_KB_PER_MIN and abs(drift) < RSS_DRIFT_LIMIT_KB
    fds_ok = non_upstream_equal and qe["upstream"] <= max(warm_pool_max, qw["upstream"])
    return {
        "warmup_s": warmup_s,
        "samples_after_warmup": len(post),
        "rss_kb_at_warmup": rss[0],
        "rss_kb_at_end": rss[-1],
        "rss_kb_min_after_warmup": min(rss),
        "rss_kb_max_after_warmup": max(rss),
        "rss_kb_range_after_warmup": max(rss) - min(rss),
        "rss_slope_kb_per_min": round(slope, 1),
        "rss_drift_kb_first_to_last_minute": round(drift, 1),
        "fds_min_after_warmup": min(fds),
        "fds_max_after_warmup": max(fds),
        "quiet_fds_warmup": qw,
        "quiet_fds_end": qe,
        "upstream_pool_max_during_warmup": warm_pool_max,
        "rss_flat": rss_ok,
        "fds_flat": fds_ok,
        "flat": rss_ok and fds_ok,
    }


RSS_SLOPE_LIMIT_KB_PER_MIN = 64.0
RSS_DRIFT_LIMIT_KB = 1024.0


def plot(csv_rows, events, warmup_s, png, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [r["t_s"] for r in csv_rows]
    fig, (ax1, ax2, ax3) = plt.subplots(3, 1, figsize=(11, 9), sharex=True,
                                        gridspec_kw={"height_ratios": [3, 2, 2]})
    ax1.plot(t, [r["rss_kb"] / 1024.0 for r in csv_rows], color="tab:blue", lw=1)
    ax1.set_ylabel("VmRSS (MiB)")
    ax1.set_title(title, fontsize=10)
    ax2.plot(t, [r["fds"] for r in csv_rows], color="tab:green", lw=1, label="all fds")
    ax2.plot(t, [r["fd_client"] for r in csv_rows], color="tab:olive", lw=0.7, label="client sockets")
    ax2.plot(t, [r["fd_upstream"] for r in csv_rows], color="tab:purple", lw=0.7,
             label="upstream sockets")
    ax2.set_ylabel("open fds")
    ax2.legend(loc="upper left", fontsize=8)
    for col, color in (("hit_ok", "tab:blue"), ("miss_ok", "tab:orange"),
                       ("not_found", "tab:brown"), ("no_cache_ok", "tab:gray"),
                       ("deadline_exceeded", "tab:red"), ("cancelled", "tab:pink"),
                       ("watch_msgs", "tab:cyan"), ("unexpected", "black")):
        ax3.plot(t, [r[col] for r in csv_rows], lw=0.7, label=col, color=color)
    ax3.set_yscale("symlog", linthresh=10)
    ax3.set_ylim(top=20000)  # room for the legend above the lines
    ax3.set_ylabel("calls / messages per second")
    ax3.set_xlabel("seconds since the traffic started")
    ax3.legend(loc="upper left", fontsize=7, ncol=4)
    for ax in (ax1, ax2, ax3):
        ax.axvspan(0, warmup_s, color="0.92", lw=0)
        for name, at in events:
            if name.startswith("quiet"):
                ax.axvspan(at, at + QUIET_S, color="0.85", lw=0)
        ax.grid(True, lw=0.3)
        for name, at in events:
            if name == "redis restart":
                ax.axvline(at, color="red", ls="--", lw=1)
            elif name.startswith("quiet"):
                ax.axvline(at, color="0.5", ls=":", lw=1)
    ymax = ax1.get_ylim()[1]
    for name, at in events:
        if name == "redis restart" or name.startswith("quiet"):
            ax1.text(at, ymax, " " + name, color="red" if name == "redis restart" else "0.4",
                     fontsize=8, va="top", rotation=90)
    ax1.text(warmup_s / 2, ymax, "warm-up", ha="center", va="top", fontsize=8, color="0.4")
    fig.tight_layout()
    fig.savefig(png, dpi=100)


def replot(a):
    import csv

    with open(a.replot) as f:
        summary = json.load(f)
    with open(os.path.join(ROOT, summary["csv"])) as f:
        rows = [{k: (v if k in ("phase", "event") else int(v)) for k, v in r.items()}
                for r in csv.DictReader(f)]
    plot(rows, summary["events"], summary["verdict"]["warmup_s"], a.png, summary.get(
        "title", "personalize-gateway soak, %s: %.0f s of mixed traffic" % (
            summary["started_utc"], summary["seconds"])))
    return 0


def build(a):
    if a.binary:
        return os.path.abspath(a.binary), None
    pgw_bench_build.build(a.build, ["personalize-gateway", "pgw_py_proto"], a.build_type, jobs=2)
    return os.path.join(a.build, "personalize-gateway"), os.path.join(a.build, "py")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", choices=("unary", "slow", "watch"))
    ap.add_argument("--ctl")
    ap.add_argument("--grpc")
    ap.add_argument("--http")
    ap.add_argument("--fake")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--build", default=os.path.join(ROOT, "build", "release"))
    ap.add_argument("--build-type", default="Release")
    ap.add_argument("--binary", help="a built gateway (skips the build)")
    ap.add_argument("--out", default=os.path.join(HERE, "results"),
                    help="directory for soak-<date>.csv/.json and the PNG")
    ap.add_argument("--png", default=os.path.join(HERE, "soak.png"))
    ap.add_argument("--replot", metavar="JSON",
                    help="only redraw --png from a finished run's summary (and its CSV)")
    ap.add_argument("--warmup-s", type=float, default=None,
                    help="default: 120 s, or a fifth of shorter runs")
    a = ap.parse_args()
    if a.worker:
        return worker_main(a)
    if a.replot:
        return replot(a)

    seconds = float(os.environ.get("PGW_SOAK_SECONDS", "600"))
    warmup_s = a.warmup_s if a.warmup_s is not None else min(120.0, seconds / 5)
    binary, py_gen = build(a)
    if py_gen:
        os.environ["PGW_PY_GEN_DIR"] = py_gen
    h.protos()  # generate the message modules once, before the workers start
    os.makedirs(a.out, exist_ok=True)
    stamp = datetime.datetime.utcnow().strftime("%Y%m%dT%H%M%SZ")
    csv_path = os.path.join(a.out, "soak-%s.csv" % stamp)
    json_path = os.path.join(a.out, "soak-%s.json" % stamp)

    work = tempfile.mkdtemp(prefix="pgw-soak.")
    ctl_dir = os.path.join(work, "ctl")
    os.makedirs(ctl_dir)
    fake = h.FakeAws(os.path.join(work, "fake"))
    redis = h.RedisServer(os.path.join(work, "redis"))
    gw = workers = mover = None
    stop_ev = threading.Event()
    try:
        arns = {
            "hot": ["%ssoak-hot-%d" % (ACCOUNT_PREFIX, i) for i in range(50)],
            "not_found": ["%ssoak-gone-%d" % (ACCOUNT_PREFIX, i) for i in range(20)],
            "slow": ["%ssoak-slow-%d" % (ACCOUNT_PREFIX, i) for i in range(6)],
        }
        for arn in arns["hot"] + arns["slow"]:
            fake.add_job(arn, status="ACTIVE")
        for arn in arns["slow"]:
            fake.set_latency(SLOW_MS, arn=arn)
        with open(os.path.join(ctl_dir, "arns.json"), "w") as f:
            json.dump(arns, f)
        home = os.path.join(work, "home")
        os.makedirs(home)
        gw_args = ["--redis-url", redis.url, "--log-level", "warn",
                   "--l1-max-entries", "256",  # small: the misses' churn evicts
                   "--cache-ttl-running-s", "2", "--cache-ttl-not-found-s", "2",
                   "--watch-poll-interval-s", "1"]
        gw = h.Gateway(binary, os.path.join(work, "gw"), gw_args, h.gateway_env(fake, home))
        gw.wait_readyz()
        ports = {"fake": fake.port, "redis": redis.port, "grpc": gw.grpc_port,
                 "http": gw.http_port}
        print("soak: %s %s, %.0f s (warm-up %.0f s), work dir %s" % (
            binary, " ".join(gw_args).replace(redis.url, "<redis>"), seconds, warmup_s, work),
            flush=True)

        mover = WatchedJobs(fake, ctl_dir, stop_ev)
        mover.start()
        workers = Workers(a, ctl_dir, gw, fake)
        rows, events, quiet = [], [], {}
        prev = {}
        t0 = time.monotonic()
        redis_done = False
        quiet_state = None  # ("warmup"|"end", ends at)
        csv_f = open(csv_path, "w")
        header = (["t_s", "phase", "rss_kb", "threads", "fds"] +
                  ["fd_" + k for k in ("upstream", "redis", "client", "listen", "socket_other",
                                       "pipe", "anon", "file")] +
                  [c for c, _ in RATE_COLUMNS] + ["unexpected", "event"])
        csv_f.write(",".join(header) + "\n")
        tick = 0
        end_at = seconds  # traffic time excluding the warm-up quiet point
        while True:
            tick += 1
            due = t0 + tick
            time.sleep(max(0.0, due - time.monotonic()))
            t = tick  # seconds since the traffic started (quiet points included)
            event = ""
            if not gw.running():
                raise RuntimeError("the gateway exited: %s" % gw.logs()[-30:])
            phase = "load"
            if quiet_state is None and "warmup" not in quiet and t >= warmup_s:
                open(os.path.join(ctl_dir, "pause"), "w").close()
                quiet_state = ("warmup", t + QUIET_S)
                end_at += QUIET_S
                events.append(("quiet (warm-up)", t))
                event = "quiet_start"
            if quiet_state is None and "end" not in quiet and t >= end_at:
                open(os.path.join(ctl_dir, "pause"), "w").close()
                quiet_state = ("end", t + QUIET_S)
                events.append(("quiet (end)", t))
                event = "quiet_start"
            if quiet_state is not None:
                phase = "quiet"
            if not redis_done and t >= warmup_s + (end_at - warmup_s) / 2:
                redis_done = True
                r0 = time.monotonic()
                redis.restart()
                events.append(("redis restart", t))
                event = "redis_restart_%.1fs" % (time.monotonic() - r0)
                print("soak: t=%d s redis restarted (%.1f s)" % (t, time.monotonic() - r0),
                      flush=True)
            st = proc_status(gw.pid)
            fds = fd_breakdown(gw.pid, ports)
            tot = workers.totals()
            row = {"t_s": t, "phase": phase, "rss_kb": st["VmRSS"], "threads": st["Threads"],
                   "fds": fds["total"]}
            for k in ("upstream", "redis", "client", "listen", "socket_other", "pipe", "anon",
                      "file"):
                row["fd_" + k] = fds[k]
            for col, pred in RATE_COLUMNS:
                row[col] = sum(v - prev.get(k, 0) for k, v in tot.items() if pred(k))
            row["unexpected"] = sum(v - prev.get(k, 0) for k, v in tot.items() if is_unexpected(k))
            if quiet_state is not None and t >= quiet_state[1]:
                # End of a quiet point: every client idle for QUIET_S, streams closed.
                quiet[quiet_state[0]] = fds
                event = "quiet_end"
                if quiet_state[0] == "end":
                    row["event"] = event
                    rows.append(row)
                    csv_f.write(",".join(str(row.get(k, "")) for k in header) + "\n")
                    break
                os.unlink(os.path.join(ctl_dir, "pause"))
                quiet_state = None
            row["event"] = event
            prev = tot
            rows.append(row)
            csv_f.write(",".join(str(row.get(k, "")) for k in header) + "\n")
            csv_f.flush()
            if t % 30 == 0:
                print("soak: t=%d s rss %.1f MiB fds %d (upstream %d, clients %d) "
                      "hits/s %d misses/s %d unexpected %d" % (
                          t, st["VmRSS"] / 1024.0, fds["total"], fds["upstream"],
                          fds["client"], row["hit_ok"], row["miss_ok"], row["unexpected"]),
                      flush=True)
        csv_f.close()
        open(os.path.join(ctl_dir, "stop"), "w").close()
        stop_ev.set()
        workers.wait()
        totals = workers.totals()
        snap = h.scrape_metrics(gw)
        metrics = {n + "{" + ",".join("%s=%s" % kv for kv in sorted(l)) + "}": v
                   for (n, l), v in snap.items() if n.startswith(
                       ("pgw_requests_total", "pgw_cache_requests_total", "pgw_watch_",
                        "pgw_redis_connections_total", "pgw_redis_errors_total",
                        "pgw_upstream_requests_total", "pgw_upstream_connections_opened_total"))}
        verdict = flat_verdict(rows, warmup_s, quiet)
        code = gw.stop(timeout=30)
        findings = gw.sanitizer_findings()
        summary = {
            "binary": binary,
            "gateway_args": [x if x != redis.url else "<redis url>" for x in gw_args],
            "seconds": seconds,
            "started_utc": stamp,
            "counts": dict(sorted(totals.items())),
            "unexpected": {k: v for k, v in sorted(totals.items()) if is_unexpected(k)},
            "watched_job_changes": mover.changes,
            "watched_jobs_finished": mover.finished,
            "events": events,
            "verdict": verdict,
            "gateway_exit_code": code,
            "sanitizer_findings": findings[:50],
            "metrics": metrics,
            "csv": os.path.relpath(csv_path, ROOT),
        }
        summary["title"] = "personalize-gateway soak, %s: %.0f s of mixed traffic (%s)" % (
            stamp, seconds, os.path.basename(os.path.dirname(binary)))
        with open(json_path, "w") as f:
            json.dump(summary, f, indent=1)
        plot(rows, events, warmup_s, a.png, summary["title"])
        print(json.dumps({k: summary[k] for k in ("counts", "unexpected", "events",
                                                   "gateway_exit_code")}, indent=1))
        print(json.dumps(verdict, indent=1))
        print("soak: sanitizer findings at exit: %d%s" % (
            len(findings), "" if not findings else "\n" + "\n".join(findings[:20])))
        print("soak: wrote %s, %s, %s; %s" % (csv_path, json_path, a.png,
                                              "FLAT" if verdict["flat"] else "NOT FLAT"))
        return 0 if verdict["flat"] and not findings else 1
    finally:
        stop_ev.set()
        try:
            open(os.path.join(ctl_dir, "stop"), "w").close()
        except OSError:
            pass
        if workers:
            workers.wait(timeout=10)
        if gw:
            gw.stop()
        redis.stop()
        fake.stop()


if __name__ == "__main__":
    sys.exit(main())
