#!/usr/bin/python3
"""A burst of concurrent DescribeBatchInferenceJob calls, from its own process (so its
client-side work never shares a Python interpreter lock with a latency measurement).

usage: burst_client.py TARGET COUNT ARN_PREFIX DEADLINE_S OUT.json [--start-file F]

Sends COUNT calls for ARN_PREFIX0 .. ARN_PREFIX<COUNT-1> at once on one channel, each with
its own DEADLINE_S deadline, and writes one JSON object: {"calls": [[code, seconds from its
send to its end, details], ...], "sent_s": time to send them all}. With --start-file, touches
F just before the first call is sent.
"""

import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grpc  # noqa: E402

import pgw_harness as h  # noqa: E402


def main():
    target, count, prefix, deadline, out = sys.argv[1:6]
    start_file = sys.argv[7] if len(sys.argv) > 7 and sys.argv[6] == "--start-file" else None
    count, deadline = int(count), float(deadline)
    channel = grpc.insecure_channel(target)
    grpc.channel_ready_future(channel).result(timeout=10)
    stub, request = h.describe_stub(channel)
    results = [None] * count
    left = [count]
    done = threading.Event()
    lock = threading.Lock()

    def finish(i, sent_at):
        def cb(fut):
            end = time.monotonic()
            exc = fut.exception()
            code = "OK" if exc is None else exc.code().name
            details = "" if exc is None else (exc.details() or "")
            results[i] = [code, end - sent_at, details]
            with lock:
                left[0] -= 1
                if left[0] == 0:
                    done.set()
        return cb

    if start_file:  # sending begins now
        open(start_file, "w").close()
    t0 = time.monotonic()
    futures = []
    for i in range(count):
        sent_at = time.monotonic()
        f = stub.future(request(batch_inference_job_arn=prefix + str(i)), timeout=deadline)
        f.add_done_callback(finish(i, sent_at))
        futures.append(f)
    sent_s = time.monotonic() - t0
    done.wait(timeout=deadline + 30)
    with open(out + ".tmp", "w") as f:
        json.dump({"calls": results, "sent_s": sent_s}, f)
    os.replace(out + ".tmp", out)
    channel.close()


if __name__ == "__main__":
    main()
