"""Steady load and measurements for the fault-injection tests (tests/integration/test_faults*.py).

SteadyLoad runs a few threads, each calling DescribeBatchInferenceJob back to back on its own
grpcio channel with a deadline, and records every call: when it started, how long it took,
its status code and x-cache. A fault test starts the load, injects the fault, lifts it, and
asserts on the record: how many calls ended with which status, whether any ran into its
deadline, the slowest call, when answers recovered. Bounded: a few threads, one call in
flight per thread, loopback only.
"""

import os
import threading
import time

import grpc

import pgw_harness as h


class Call:
    __slots__ = ("start", "latency", "code", "cache", "details", "arn")

    def __init__(self, start, latency, code, cache, details, arn):
        self.start, self.latency, self.code = start, latency, code
        self.cache, self.details, self.arn = cache, details, arn

    def __repr__(self):
        return "Call(t=%.3f, %.0f ms, %s, %s, %r)" % (self.start, self.latency * 1000, self.code,
                                                      self.cache, self.details[:80])


class SteadyLoad:
    """threads x back-to-back calls of arns (round robin) with `timeout` s deadlines."""

    def __init__(self, target, arns, threads=4, timeout=2.0, metadata=(), pause_s=0.0,
                 channel_factory=None, channel=None):
        """channel: one connected channel shared by every thread and left open (for faults
        during which the gateway cannot accept new connections); else each thread opens its
        own with channel_factory (default: insecure to target)."""
        self.target = target
        self.arns = list(arns)
        self.n_threads = threads
        self.timeout = timeout
        self.metadata = tuple(metadata)
        self.pause_s = pause_s
        self.channel = channel
        self.channel_factory = channel_factory or (lambda: grpc.insecure_channel(target))
        self.calls = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = []
        self.t0 = None

    def _run(self, index):
        ch = self.channel or self.channel_factory()
        try:
            stub, request = h.describe_stub(ch)
            grpc.channel_ready_future(ch).result(timeout=10)
            i = index
            while not self._stop.is_set():
                arn = self.arns[i % len(self.arns)]
                i += self.n_threads
                start = time.monotonic()
                try:
                    _, call = stub.with_call(request(batch_inference_job_arn=arn),
                                             timeout=self.timeout, metadata=self.metadata)
                    md = dict(call.initial_metadata() or ())
                    rec = Call(start - self.t0, time.monotonic() - start, "OK",
                               md.get("x-cache"), "", arn)
                except grpc.RpcError as e:
                    md = dict(e.initial_metadata() or ())
                    rec = Call(start - self.t0, time.monotonic() - start, e.code().name,
                               md.get("x-cache"), e.details() or "", arn)
                with self._lock:
                    self.calls.append(rec)
                if self.pause_s:
                    time.sleep(self.pause_s)
        finally:
            if ch is not self.channel:
                ch.close()

    def start(self):
        self.t0 = time.monotonic()
        for i in range(self.n_threads):
            t = threading.Thread(target=self._run, args=(i,), daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def now(self):
        """Seconds since start(), on the same clock as Call.start."""
        return time.monotonic() - self.t0

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join(timeout=self.timeout + 10)
        assert not any(t.is_alive() for t in self._threads), "a load thread is stuck"
        return self.calls

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def window(self, t_from=0.0, t_to=float("inf")):
        """The calls that started in [t_from, t_to) seconds after start()."""
        with self._lock:
            return [c for c in self.calls if t_from <= c.start < t_to]


def codes(calls):
    """{code name: count}."""
    out = {}
    for c in calls:
        out[c.code] = out.get(c.code, 0) + 1
    return out


def caches(calls):
    """{x-cache value (None when absent): count}."""
    out = {}
    for c in calls:
        out[c.cache] = out.get(c.cache, 0) + 1
    return out


def slowest(calls):
    return max((c.latency for c in calls), default=0.0)


def percentile(calls, p):
    lat = sorted(c.latency for c in calls)
    if not lat:
        return 0.0
    return lat[min(len(lat) - 1, int(round(p / 100.0 * (len(lat) - 1))))]


def summary(calls):
    """One line of figures for a test's output (pytest -s, or the failure message)."""
    return "%d calls, codes %s, x-cache %s, p50 %.0f ms, p99 %.0f ms, max %.0f ms" % (
        len(calls), codes(calls), caches(calls), percentile(calls, 50) * 1000,
        percentile(calls, 99) * 1000, slowest(calls) * 1000)


def record(name, text):
    """Appends a measured outcome to $PGW_FAULT_REPORT (if set) and prints it (pytest -s)."""
    line = "%s: %s" % (name, text)
    print(line)
    path = os.environ.get("PGW_FAULT_REPORT")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


def metric(gw, name):
    """Sum of a metric's series on /metrics; `name` may also be one series, labels included."""
    _, _, body = gw.http_get("/metrics")
    total = 0.0
    found = False
    for line in body.decode().splitlines():
        if line.startswith("#"):
            continue
        key = line.rsplit(" ", 1)[0]
        if key == name or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
            found = True
    return total if found else None


def cpu_seconds(pid):
    """User + system CPU time the process has used so far (from /proc)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid):
    """The process's resident set (VmRSS from /proc), in bytes."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS for pid %d" % pid)


def open_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))
