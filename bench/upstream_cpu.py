#!/usr/bin/python3
"""The gateway's CPU per upstream call (see bench/README.md, "Idle memory"): a benchmark, not
a test. Compares builds, e.g. the static libcurl against Debian's libcurl4:

    cmake -S . -B /tmp/rel-sys -DCMAKE_BUILD_TYPE=Release -DPGW_SYSTEM_CURL=ON
    bench/upstream_cpu.py --build build/release --build /tmp/rel-sys [--calls 3000] [--rounds 2]

For each build in turn (ROUNDS times, interleaved) starts the AWS fake and the gateway (no
Redis), then makes CALLS Describe calls of distinct, unknown ARNs from CONCURRENCY threads over
one channel: every call is an L1 miss, one signed upstream request through libcurl (HTTP/1.1
keep-alive to the fake) and a NOT_FOUND answer. Prints the gateway's CPU (user + system,
/proc/<pid>/stat) per call and the upstream request count the fake saw. The builds must exist
(cmake --build <dir> --target personalize-gateway pgw_py_proto)."""

import argparse
import os
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

import pgw_harness as h  # noqa: E402
import pgw_load  # noqa: E402

ARN = "arn:aws:personalize:us-east-1:123456789012:batch-inference-job/bench-miss-%d-%d"


def one_run(build, calls, concurrency, run_id):
    import grpc

    work = tempfile.mkdtemp(prefix="pgw-upstream-cpu.")
    fake = h.FakeAws(os.path.join(work, "fake"))
    gw = None
    try:
        home = os.path.join(work, "home")
        os.makedirs(home)
        gw = h.Gateway(os.path.join(build, "personalize-gateway"), os.path.join(work, "gw"),
                       ["--log-level", "warn"], h.gateway_env(fake, home, None))
        channel = grpc.insecure_channel(gw.grpc_target)
        stub, request = h.describe_stub(channel)
        codes = {}

        def call(i):
            try:
                stub(request(batch_inference_job_arn=ARN % (run_id, i)), timeout=10)
                code = "OK"
            except grpc.RpcError as e:
                code = e.code().name
            codes[code] = codes.get(code, 0) + 1

        for i in range(50):  # warm: connection, credentials, L1
            call(-1 - i)
        fake.reset_stats()
        codes.clear()
        cpu0, t0 = pgw_load.cpu_seconds(gw.pid), time.monotonic()
        next_i = iter(range(calls))
        lock = threading.Lock()

        def worker():
            while True:
                with lock:
                    i = next(next_i, None)
                if i is None:
                    return
                call(i)

        threads = [threading.Thread(target=worker) for _ in range(concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        cpu1, t1 = pgw_load.cpu_seconds(gw.pid), time.monotonic()
        upstream = fake.stats()["personalize"]["requests"]
        channel.close()
        return (cpu1 - cpu0) / calls, calls / (t1 - t0), upstream, codes
    finally:
        if gw:
            gw.stop()
        fake.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", action="append", required=True)
    ap.add_argument("--calls", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    os.environ["PGW_PY_GEN_DIR"] = os.path.join(args.build[0], "py")
    print("| build | gateway CPU per upstream call | calls/s (client-bound) | upstream requests | answers |")
    print("| --- | ---: | ---: | ---: | --- |")
    run_id = 0
    for _ in range(args.rounds):
        for build in args.build:
            run_id += 1
            per_call, rate, upstream, codes = one_run(build, args.calls, args.concurrency, run_id)
            print("| %s | %.1f µs | %.0f | %s | %s |" % (build, per_call * 1e6, rate, upstream,
                                                        codes), flush=True)


if __name__ == "__main__":
    main()
