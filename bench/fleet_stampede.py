#!/usr/bin/python3
"""Three-replica cold-ARN stampede (see bench/README.md): a benchmark, not a test.

    bench/fleet_stampede.py [--rounds 20] [--calls 300] [--latency-ms 50] [--build build/release]

Starts the AWS fake, one redis-server and three Release gateways on free loopback ports (the
integration tests' harness). Each round asks for a new cold ARN CALLS times at once, spread
over the three replicas, and records the upstream calls it cost and every call's latency. The
same rounds then run with the replicas' Redis gone (each replica coalesces alone) for
comparison. Prints Markdown rows."""

import argparse
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

import grpc  # noqa: E402

import pgw_harness as h  # noqa: E402
import pgw_bench_build  # noqa: E402

PREFIX = "arn:aws:personalize:us-east-1:123456789012:batch-inference-job/bench-stampede-"


def percentile(sorted_values, p):
    if not sorted_values:
        return 0.0
    i = min(len(sorted_values) - 1, int(round(p / 100.0 * (len(sorted_values) - 1))))
    return sorted_values[i]


def run_rounds(fake, channels, rounds, calls, tag):
    latencies, upstream = [], []
    for n in range(rounds):
        arn = "%s%s-%d-%d" % (PREFIX, tag, os.getpid(), n)
        fake.add_job(arn, status="IN PROGRESS")
        pending = []
        for i in range(calls):
            stub, req = h.describe_stub(channels[i % len(channels)])
            pending.append((time.monotonic(),
                            stub.future(req(batch_inference_job_arn=arn), timeout=30)))
        for started, f in pending:
            f.result()  # an error fails the benchmark: every call must be answered
            latencies.append(time.monotonic() - started)
        upstream.append(fake.stats()["personalize"]["per_arn"].get(arn, 0))
        time.sleep(0.05)
    latencies.sort()
    return upstream, latencies


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--latency-ms", type=int, default=50)
    ap.add_argument("--build", default=os.path.join(ROOT, "build", "release"))
    args = ap.parse_args()

    pgw_bench_build.build(args.build, ["personalize-gateway", "pgw_py_proto"])
    binary = os.path.join(args.build, "personalize-gateway")
    os.environ["PGW_PY_GEN_DIR"] = os.path.join(args.build, "py")

    work = tempfile.mkdtemp(prefix="pgw-fleet-bench.")
    fake = h.FakeAws(os.path.join(work, "fake"))
    redis = h.RedisServer(os.path.join(work, "redis"))
    gws, channels = [], []
    try:
        redis.start()
        fake.set_latency(args.latency_ms)
        for i in range(3):
            home = os.path.join(work, "home%d" % i)
            os.makedirs(home)
            gws.append(h.Gateway(binary, os.path.join(work, "gw"),
                                 ["--redis-url", redis.url, "--log-level", "warn"],
                                 h.gateway_env(fake, home, None)))
        r = redis.client()
        h.wait_until(lambda: r.pubsub_numsub("pgw:v1:fill")[0][1] >= 3, timeout=15,
                     what="three subscribers")
        channels = [grpc.insecure_channel(gw.grpc_target) for gw in gws]
        fleet_up, fleet_lat = run_rounds(fake, channels, args.rounds, args.calls, "fleet")
        redis.stop()
        time.sleep(0.5)
        alone_up, alone_lat = run_rounds(fake, channels, args.rounds, args.calls, "alone")
    finally:
        for ch in channels:
            ch.close()
        for gw in gws:
            gw.stop()
        redis.stop()
        fake.stop()

    print("| scenario | rounds x calls | upstream calls per round (min/max) | p50 ms | p99 ms |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, up, lat in (("3 replicas, shared Redis (fleet lease)", fleet_up, fleet_lat),
                          ("3 replicas, Redis down (each alone)", alone_up, alone_lat)):
        print("| %s, %d ms upstream | %d x %d | %d / %d | %.1f | %.1f |" % (
            name, args.latency_ms, args.rounds, args.calls, min(up), max(up),
            percentile(lat, 50) * 1000, percentile(lat, 99) * 1000))


if __name__ == "__main__":
    main()
