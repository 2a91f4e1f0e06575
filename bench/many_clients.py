#!/usr/bin/python3
"""Memory per gRPC connection, the gateway against the floor server (see bench/README.md): a
benchmark, not a test.

    bench/many_clients.py [--connections 2000] [--seconds 60] [--interval-s 1.0]
                          [--processes 4] [--build build/release]

Builds the Release gateway and pgw-bench-fixed-server, starts the AWS fake and a
redis-server on free loopback ports, and for each server in turn (the gateway with
--redis-url and --cache-ttl-running-s 3, then the floor server with 2 threads) opens
CONNECTIONS distinct connections from PROCESSES grpc.aio worker processes
(tests/integration/many_clients.py, the code test_many_clients.py runs), leaves them idle,
then has each poll once per INTERVAL_S for SECONDS (the same ARN mix as the test: hot
ARNs, every tenth call a running one), then closes them. RSS (VmRSS) is read at idle, with
the connections open and idle, at the end of the polling with them still open, and after
they closed; memory per connection is (RSS with them open - RSS at idle) / CONNECTIONS.
Prints Markdown rows and the calls' figures."""

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

import pgw_harness as h  # noqa: E402
import pgw_bench_build  # noqa: E402
import many_clients as mc  # noqa: E402
import pgw_load  # noqa: E402

ARN = "arn:aws:personalize:us-east-1:123456789012:batch-inference-job/bench-many-%s"
HOT = [ARN % ("hot-%d" % i) for i in range(20)]
RUNNING = [ARN % ("running-%d" % i) for i in range(100)]


def settle(pid, seconds=3.0):
    time.sleep(seconds)
    return pgw_load.rss_bytes(pid)


def measure(name, pid, target, port, args, workdir):
    """One server: returns a dict of RSS figures, calls, CPU and latencies."""
    r = {"name": name}
    r["idle"] = settle(pid)
    workers = mc.Workers(target, args.connections, {"hot": HOT, "running": RUNNING},
                         workdir, processes=args.processes)
    try:
        workers.start()
        r["connect_s"] = max(workers.connect_s)
        r["open"] = len(mc.server_connections(pid, port))
        r["connected"] = settle(pid)
        cpu0 = pgw_load.cpu_seconds(pid)
        t0 = workers.go(args.seconds, args.interval_s)
        peak = 0
        while time.monotonic() < t0 + args.seconds:
            time.sleep(2)
            peak = max(peak, pgw_load.rss_bytes(pid))
        res = workers.wait_done()
        r["cpu_s"] = pgw_load.cpu_seconds(pid) - cpu0
        r["polled"] = pgw_load.rss_bytes(pid)
        r["peak"] = max(peak, r["polled"])
        r["open_after"] = len(mc.server_connections(pid, port))
        r["polled_idle"] = settle(pid)
    except BaseException:
        workers.kill()
        raise
    workers.close()
    r["closed"] = settle(pid)
    conns = res["conns"]
    r["calls"] = sum(len(c["ok"]) + len(c["errors"]) for c in conns)
    r["errors"] = sum(len(c["errors"]) for c in conns)
    r["x_cache"] = res["x_cache"]
    r["lat"] = res["latencies_ms"]
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--connections", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--interval-s", type=float, default=1.0)
    ap.add_argument("--processes", type=int, default=4)
    ap.add_argument("--build", default=os.path.join(ROOT, "build", "release"))
    ap.add_argument("--only", choices=["gateway", "floor"], help="measure one server only")
    ap.add_argument("--wrapper", default="",
                    help='run the server under this command, e.g. "valgrind --tool=massif '
                    '--massif-out-file=/tmp/m.%%p" (same PID: not heaptrack\'s script); '
                    'the RSS figures are then the wrapper\'s')
    args = ap.parse_args()
    wrapper = shlex.split(args.wrapper)

    pgw_bench_build.build(args.build,
                          ["personalize-gateway", "pgw-bench-fixed-server", "pgw_py_proto"])
    binary = os.path.join(args.build, "personalize-gateway")
    floor_bin = os.path.join(args.build, "bench", "pgw-bench-fixed-server")
    os.environ["PGW_PY_GEN_DIR"] = os.path.join(args.build, "py")
    soft, _ = mc.raise_fd_limit(args.connections + 4096)
    assert soft >= args.connections + 512, "RLIMIT_NOFILE %d is too low" % soft

    work = tempfile.mkdtemp(prefix="pgw-many-clients.")
    fake = h.FakeAws(os.path.join(work, "fake"))
    redis = gw = floor = None
    rows = []
    try:
        redis = h.RedisServer(os.path.join(work, "redis"))
        for arn in HOT:
            fake.add_job(arn, status="ACTIVE")
        for arn in RUNNING:
            fake.add_job(arn, status="IN PROGRESS")
        home = os.path.join(work, "home")
        os.makedirs(home)
        if args.wrapper:
            os.environ["PGW_WRAPPER"] = args.wrapper  # pgw_harness.Gateway runs under it
        if args.only != "floor":
            gw = h.Gateway(binary, os.path.join(work, "gw"),
                           ["--redis-url", redis.url, "--cache-ttl-running-s", "3",
                            "--log-level", "warn"], h.gateway_env(fake, home, None),
                           timeout=120)
            with h.grpc_channel(gw.grpc_target) as ch:
                for arn in HOT + RUNNING:
                    h.describe(gw.grpc_target, arn, channel=ch, timeout=30)
            rows.append(measure("gateway", gw.pid, gw.grpc_target, gw.grpc_port, args,
                                os.path.join(work, "gw-workers")))
            gw.stop()
            gw = None
        if args.only != "gateway":
            port = h.free_port()
            floor = subprocess.Popen(wrapper + [floor_bin, "127.0.0.1:%d" % port, "2"],
                                     stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
            h.wait_until(lambda: h.port_open("127.0.0.1", port), timeout=120,
                         what="floor server")
            rows.append(measure("floor", floor.pid, "127.0.0.1:%d" % port, port, args,
                                os.path.join(work, "floor-workers")))
    finally:
        if floor and floor.poll() is None:
            floor.terminate()  # our own child, by its handle
            floor.wait(timeout=120)
        if gw:
            gw.stop()
        if redis:
            redis.stop()
        fake.stop()

    n = args.connections
    kib = lambda b: b / 1024.0  # noqa: E731
    mib = lambda b: b / 2.0**20  # noqa: E731
    print("| server | RSS idle MiB | + %d idle connections | after %.0f s polling (open) | "
          "peak | connections closed | per connection, idle | per connection, after polling |"
          % (n, args.seconds))
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print("| %s | %.1f | %.1f | %.1f | %.1f | %.1f | **%.1f KiB** | **%.1f KiB** |" % (
            r["name"], mib(r["idle"]), mib(r["connected"]), mib(r["polled_idle"]),
            mib(r["peak"]), mib(r["closed"]), kib(r["connected"] - r["idle"]) / n,
            kib(r["polled_idle"] - r["idle"]) / n))
    print()
    print("| server | connections open (before / after polling) | calls | calls/s | errors | "
          "server CPU µs/call | latency | x-cache |")
    print("| --- | --- | ---: | ---: | ---: | ---: | --- | --- |")
    for r in rows:
        print("| %s | %d / %d (all ready in %.1f s) | %d | %.0f | %d | %.1f | %s | %s |" % (
            r["name"], r["open"], r["open_after"], r["connect_s"], r["calls"],
            r["calls"] / args.seconds, r["errors"], 1e6 * r["cpu_s"] / max(r["calls"], 1),
            mc.latency_summary(r["lat"]), r["x_cache"]))
    if len(rows) < 2:
        return
    g, f = rows[0], rows[1]
    print()
    print("gateway/floor per-connection memory: idle %.2fx, after polling %.2fx" % (
        (g["connected"] - g["idle"]) / max(1, f["connected"] - f["idle"]),
        (g["polled_idle"] - g["idle"]) / max(1, f["polled_idle"] - f["idle"])))


if __name__ == "__main__":
    main()
