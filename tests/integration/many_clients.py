#!/usr/bin/python3
"""Thousands of distinct gRPC connections polling DescribeBatchInferenceJob, from a few worker
processes (tests/integration/test_many_clients.py, bench/many_clients.py).

One worker process (this file run as a script) holds CONNS grpc.aio channels, each its own
HTTP/2 connection: grpcio shares one subchannel, so one TCP connection, between channels of the
same target and arguments unless each channel has a subchannel pool of its own
(grpc.use_local_subchannel_pool). The parent drives it over stdin/stdout, one line each way:

    worker: ready <conns> <seconds spent connecting>     every channel is READY
    parent: go <t0> <seconds> <interval_s>               t0: time.monotonic() (CLOCK_MONOTONIC,
                                                         the same in every process) of the start
    worker: done                                         polling over; OUT.json written
    parent: close
    worker: closed                                       every channel closed; it exits

Between "ready" and "go" and between "done" and "close" the connections are open and idle, so
the parent can count them and measure the server's memory. While polling, each connection
makes one call at a time: every interval_s (its own random phase, so the calls are spread), a
call for one of the hot ARNs (cached), and every MISS_EVERY-th call for one of the running
ARNs (short TTL, so some of those are cache misses fetched upstream). A call past its slot is
sent at once after the previous one ends: the load lessens when the server slows down, and no
call is ever queued behind another on its connection.

OUT.json: {"conns": [{"ok": [start offsets s], "errors": [[offset, code, details]]}],
"latencies_ms": [...], "x_cache": {value: count}}, offsets from t0.

Parent side: Workers starts and drives them; tcp_connections()/process_sockets() read
/proc/net/tcp to count the TCP connections a process holds."""

import asyncio
import json
import os
import random
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import pgw_harness as h  # noqa: E402

MISS_EVERY = 10
CALL_TIMEOUT_S = 20.0
CONNECT_TIMEOUT_S = 120.0
CHANNEL_OPTIONS = [("grpc.use_local_subchannel_pool", 1)]


def raise_fd_limit(want=0):
    """Soft RLIMIT_NOFILE up to the hard limit (children inherit it); if that is below `want`,
    both up to `want` where this process may (root, CAP_SYS_RESOURCE). Returns (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
        except (ValueError, OSError):
            pass
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


# --- worker ------------------------------------------------------------------------------------


async def _worker(target, first, conns, arns, out_path):
    import grpc

    pb, _ = h.protos()
    hot, running = arns["hot"], arns["running"]
    channels = [grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) for _ in range(conns)]
    req_cls, resp_cls = pb.DescribeBatchInferenceJobRequest, pb.DescribeBatchInferenceJobResponse
    stubs = [ch.unary_unary(h.GRPC_METHOD, request_serializer=req_cls.SerializeToString,
                            response_deserializer=resp_cls.FromString) for ch in channels]
    t = time.monotonic()
    await asyncio.wait_for(asyncio.gather(*(ch.channel_ready() for ch in channels)),
                           CONNECT_TIMEOUT_S)
    loop = asyncio.get_running_loop()
    print("ready %d %.3f" % (conns, time.monotonic() - t), flush=True)

    line = (await loop.run_in_executor(None, sys.stdin.readline)).split()
    assert line and line[0] == "go", line
    t0, seconds, interval = float(line[1]), float(line[2]), float(line[3])
    end = t0 + seconds
    results = [{"ok": [], "errors": []} for _ in range(conns)]
    latencies = []
    x_cache = {}
    requests = {a: pb.DescribeBatchInferenceJobRequest(batch_inference_job_arn=a)
                for a in hot + running}

    async def poll(i):
        n = first + i
        rng = random.Random(n)
        due = t0 + rng.uniform(0, interval)
        k = 0
        while True:
            now = time.monotonic()
            if due > now:
                await asyncio.sleep(due - now)
            start = time.monotonic()
            if start >= end:
                return
            if (n + k) % MISS_EVERY == 0:  # connections out of phase: misses from the start
                arn = running[(n + k // MISS_EVERY) % len(running)]
            else:
                arn = hot[(n + k) % len(hot)]
            k += 1
            call = stubs[i](requests[arn], timeout=CALL_TIMEOUT_S)
            try:
                await call
                # grpc.aio's Metadata iterates as (key, value) pairs.
                md = {k: v for k, v in (await call.initial_metadata() or ())}
                results[i]["ok"].append(round(start - t0, 3))
                c = md.get("x-cache", "none")
                x_cache[c] = x_cache.get(c, 0) + 1
            except grpc.RpcError as e:
                results[i]["errors"].append([round(start - t0, 3), e.code().name,
                                             (e.details() or "")[:200]])
            latencies.append(round((time.monotonic() - start) * 1000, 3))
            due += interval

    await asyncio.gather(*(poll(i) for i in range(conns)))
    with open(out_path, "w") as f:
        json.dump({"conns": results, "latencies_ms": latencies, "x_cache": x_cache}, f)
    print("done", flush=True)

    line = (await loop.run_in_executor(None, sys.stdin.readline)).split()
    assert line and line[0] == "close", line
    await asyncio.gather(*(ch.close() for ch in channels))
    print("closed", flush=True)


def worker_main(argv):
    """many_clients.py TARGET FIRST CONNS ARNS.json OUT.json"""
    target, first, conns, arns_path, out_path = argv
    raise_fd_limit()
    with open(arns_path) as f:
        arns = json.load(f)
    asyncio.run(_worker(target, int(first), int(conns), arns, out_path))


# --- parent side -------------------------------------------------------------------------------


class Workers:
    """`processes` worker processes holding `connections` connections to `target` between them.

    start() returns once every connection is READY; poll(seconds, interval) runs the polling
    and returns the merged results; close() closes every connection and waits for the
    workers to exit. Workers run in sessions of their own (their own scheduler autogroup: the
    clients share the CPU with the server as one process group, not thread by thread)."""

    def __init__(self, target, connections, arns, workdir, processes=4):
        self.target = target
        self.connections = connections
        self.workdir = workdir
        os.makedirs(workdir, exist_ok=True)
        self.arns_path = os.path.join(workdir, "arns.json")
        with open(self.arns_path, "w") as f:
            json.dump(arns, f)
        self.procs = []
        self.outs = []
        self.connect_s = []
        per, extra = divmod(connections, processes)
        self.shares = [per + (1 if i < extra else 0) for i in range(processes)]

    @property
    def pids(self):
        return [p.pid for p in self.procs]

    def _expect(self, proc, word, timeout):
        # A blocking readline on a worker that died returns "": the assertion says so.
        line = proc.stdout.readline().split()
        if not line or line[0] != word:
            proc.poll()
            raise AssertionError("worker %d: expected %r, got %r (exit %s)\n%s" % (
                proc.pid, word, line, proc.returncode, self._stderr(proc)))
        return line

    def _stderr(self, proc):
        path = os.path.join(self.workdir, "worker-%d.stderr" % self.procs.index(proc))
        return "\n".join(h._read_lines(path)[-30:])

    def start(self):
        first = 0
        for i, n in enumerate(self.shares):
            out = os.path.join(self.workdir, "worker-%d.json" % i)
            err = open(os.path.join(self.workdir, "worker-%d.stderr" % i), "wb")
            self.procs.append(subprocess.Popen(
                [h.PYTHON, os.path.abspath(__file__), self.target, str(first), str(n),
                 self.arns_path, out],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True,
                start_new_session=True))
            err.close()
            self.outs.append(out)
            first += n
        for p in self.procs:
            self.connect_s.append(float(self._expect(p, "ready", CONNECT_TIMEOUT_S + 10)[2]))
        return self

    def _send(self, line):
        for p in self.procs:
            p.stdin.write(line + "\n")
            p.stdin.flush()

    def go(self, seconds, interval, t0=None):
        """Starts the polling (t0 defaults to now + 0.5 s); returns t0."""
        t0 = t0 if t0 is not None else time.monotonic() + 0.5
        self._send("go %.6f %.3f %.3f" % (t0, seconds, interval))
        return t0

    def wait_done(self):
        """Waits for every worker's "done"; returns the merged results: conns (one per
        connection, in order), latencies_ms (sorted), x_cache counts."""
        for p in self.procs:
            self._expect(p, "done", None)
        merged = {"conns": [], "latencies_ms": [], "x_cache": {}}
        for out in self.outs:
            with open(out) as f:
                r = json.load(f)
            merged["conns"] += r["conns"]
            merged["latencies_ms"] += r["latencies_ms"]
            for k, v in r["x_cache"].items():
                merged["x_cache"][k] = merged["x_cache"].get(k, 0) + v
        merged["latencies_ms"].sort()
        return merged

    def close(self):
        self._send("close")
        for p in self.procs:
            self._expect(p, "closed", None)
        for p in self.procs:
            assert p.wait(timeout=30) == 0, (p.pid, p.returncode, self._stderr(p))

    def kill(self):
        """Teardown after a failure: stops the workers still running, by their own PIDs."""
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def percentile(sorted_values, p):
    if not sorted_values:
        return 0.0
    i = int(round(p / 100.0 * (len(sorted_values) - 1)))
    return sorted_values[min(len(sorted_values) - 1, i)]


def latency_summary(sorted_ms):
    return "p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, p99.9 %.1f ms, max %.1f ms" % tuple(
        percentile(sorted_ms, p) for p in (50, 90, 99, 99.9, 100))


# --- counting TCP connections ------------------------------------------------------------------

TCP_ESTABLISHED = "01"


def tcp_table():
    """{socket inode: (local port, remote port, state hex)} for every IPv4/IPv6 TCP socket of
    this network namespace (/proc/net/tcp, /proc/net/tcp6)."""
    table = {}
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                lines = f.read().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], int(fields[9])
            if inode:
                table[inode] = (int(local.rsplit(":", 1)[1], 16),
                                int(remote.rsplit(":", 1)[1], 16), state)
    return table


def socket_inodes(pid):
    """The inodes of the sockets process pid holds open (fds closing meanwhile are skipped)."""
    d = "/proc/%d/fd" % pid
    out = set()
    for fd in os.listdir(d):
        try:
            link = os.readlink(os.path.join(d, fd))
        except FileNotFoundError:
            continue
        if link.startswith("socket:["):
            out.add(int(link[8:-1]))
    return out


def open_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def server_connections(pid, port, table=None):
    """The remote ports of the established TCP connections that process pid accepted on
    `port` (its sockets whose local port is `port`)."""
    table = table if table is not None else tcp_table()
    return {table[i][1] for i in socket_inodes(pid)
            if i in table and table[i][0] == port and table[i][2] == TCP_ESTABLISHED}


def client_connections(pid, port, table=None):
    """The local ports of the established TCP connections process pid holds to `port`."""
    table = table if table is not None else tcp_table()
    return {table[i][0] for i in socket_inodes(pid)
            if i in table and table[i][1] == port and table[i][2] == TCP_ESTABLISHED}


def sockets_to(pid, port, table=None):
    """How many of pid's sockets are connected to remote port `port` (any state)."""
    table = table if table is not None else tcp_table()
    return sum(1 for i in socket_inodes(pid) if i in table and table[i][1] == port)


if __name__ == "__main__":
    worker_main(sys.argv[1:])
