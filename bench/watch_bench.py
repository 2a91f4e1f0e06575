#!/usr/bin/python3
"""Watch streams held by one replica (see bench/README.md): a benchmark, not a test.

    bench/watch_bench.py [--streams 10000] [--channels 20] [--idle-s 30] [--changes 5]
                         [--build build/release]

Starts the AWS fake and one Release gateway (--watch-poll-interval-s 1) on free loopback
ports, then pgw-bench-watch-clients (bench/watch_clients.c, a gRPC core client) with STREAMS
watches of one job over CHANNELS connections. Measures:
  - the gateway's RSS before and with the streams open: bytes per idle stream;
  - its CPU (user + system, /proc/<pid>/stat) over IDLE_S seconds with every stream idle and
    the job polled once per second;
  - fan-out: the job's status changed CHANGES times; each time, from the moment the fake
    answered the poll that saw the change to the moment the last of the STREAMS watchers
    received it (one machine, one clock: CLOCK_REALTIME on both sides).
Prints Markdown rows."""

import argparse
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

import pgw_bench_build  # noqa: E402
import pgw_harness as h  # noqa: E402
import pgw_load  # noqa: E402

ARN = "arn:aws:personalize:us-east-1:123456789012:batch-inference-job/bench-watch"
STATUSES = ["PENDING", "IN PROGRESS"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", type=int, default=10000)
    ap.add_argument("--channels", type=int, default=20)
    ap.add_argument("--idle-s", type=float, default=30)
    ap.add_argument("--changes", type=int, default=5)
    ap.add_argument("--build", default=os.path.join(ROOT, "build", "release"))
    args = ap.parse_args()

    pgw_bench_build.build(args.build,
                          ["personalize-gateway", "pgw-bench-watch-clients", "pgw_py_proto"])
    binary = os.path.join(args.build, "personalize-gateway")
    clients_bin = os.path.join(args.build, "bench", "pgw-bench-watch-clients")
    os.environ["PGW_PY_GEN_DIR"] = os.path.join(args.build, "py")

    work = tempfile.mkdtemp(prefix="pgw-watch-bench.")
    fake = h.FakeAws(os.path.join(work, "fake"))
    gw = clients = None
    rows = []
    try:
        fake.add_job(ARN, status=STATUSES[0])
        home = os.path.join(work, "home")
        os.makedirs(home)
        gw = h.Gateway(binary, os.path.join(work, "gw"),
                       ["--watch-poll-interval-s", "1", "--watch-max-streams",
                        str(args.streams + 100), "--log-level", "warn"],
                       h.gateway_env(fake, home, None))
        h.describe(gw.grpc_target, ARN)  # warm: the first lookup and its cache entry
        time.sleep(1)
        rss_before = pgw_load.rss_bytes(gw.pid)
        opened = time.monotonic()
        clients = subprocess.Popen([clients_bin, gw.grpc_target, ARN, str(args.streams),
                                    str(args.channels)], stdout=subprocess.PIPE, text=True)
        line = clients.stdout.readline().split()
        assert line and line[0] == "ready", line
        open_s = time.monotonic() - opened
        time.sleep(2)
        rss_open = pgw_load.rss_bytes(gw.pid)
        polls_before = fake.stats()["personalize"]["per_arn"].get(ARN, 0)
        cpu0, t0 = pgw_load.cpu_seconds(gw.pid), time.monotonic()
        time.sleep(args.idle_s)
        cpu1, t1 = pgw_load.cpu_seconds(gw.pid), time.monotonic()
        polls = fake.stats()["personalize"]["per_arn"].get(ARN, 0) - polls_before
        per_stream = (rss_open - rss_before) / args.streams
        rows.append("| %d idle watch streams, one job, 1 s poll interval | RSS %.1f MiB -> %.1f MiB: "
                    "**%.1f KiB per stream**; all open in %.1f s |" % (
                        args.streams, rss_before / 2**20, rss_open / 2**20, per_stream / 1024,
                        open_s))
        rows.append("| the same, idle for %.0f s | CPU **%.2f %%** of one core (%.1f ms/s); %d upstream "
                    "polls (%.2f/s) |" % (t1 - t0, 100 * (cpu1 - cpu0) / (t1 - t0),
                                          1000 * (cpu1 - cpu0) / (t1 - t0), polls,
                                          polls / (t1 - t0)))
        fanouts, spreads = [], []
        for k in range(args.changes):
            status = ["IN PROGRESS", "PENDING"][k % 2]
            fake.set_job_status(ARN, status)
            line = clients.stdout.readline().split()
            assert line and line[0] == "msg", line
            first_ns, last_ns = int(line[2]), int(line[3])
            answered = fake.stats()["personalize"]["answered"][ARN]
            assert answered["status"] == status, answered
            fanouts.append(last_ns / 1e9 - answered["first_at"])
            spreads.append((last_ns - first_ns) / 1e9)
            time.sleep(0.5)
        fanouts.sort()
        rows.append("| fan-out of a change to %d watchers (%d changes) | poll answered -> last "
                    "watcher: median **%.0f ms**, max %.0f ms (first -> last watcher: median "
                    "%.0f ms) |" % (args.streams, args.changes, 1000 * fanouts[len(fanouts) // 2],
                                    1000 * fanouts[-1], 1000 * sorted(spreads)[len(spreads) // 2]))
        fake.set_job_status(ARN, "ACTIVE")
        line = clients.stdout.readline().split()
        while line and line[0] != "end":
            line = clients.stdout.readline().split()
        assert line and line[1] == str(args.streams), line
    finally:
        if clients and clients.poll() is None:
            clients.kill()  # our own child, by its handle
            clients.wait()
        if gw:
            gw.stop()
        fake.stop()
    print("| scenario | result |")
    print("| --- | --- |")
    for r in rows:
        print(r)


if __name__ == "__main__":
    main()
