#!/usr/bin/python3
"""Describe a batch inference job through personalize-gateway, then watch it until it is done.

This replaces the usual polling loop (describe, sleep, describe again, ...) with one
WatchBatchInferenceJob stream: the gateway sends the job as it is now, then once per change of
its status (or last-updated time), and ends the stream after a terminal status. However many
callers watch the job, the gateway fleet polls AWS for it once per interval.

If the stream ends UNAVAILABLE (the replica is shutting down, or unreachable for a moment), the
example reconnects with backoff; the first message of the new stream is the job as it is then,
and a state already seen is not reported twice.

Run (Debian: python3-grpcio, python3-protobuf, protobuf-compiler):
  examples/python/watch_job.py --target 127.0.0.1:50051 \\
      arn:aws:personalize:us-east-1:123456789012:batch-inference-job/my-job

Prints one line per state ("describe: PENDING", "watch: IN PROGRESS 2026-...Z", ...). Exit
status: 0 the job is ACTIVE, 2 CREATE FAILED, 3 the job is unknown, 1 any other error.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

import grpc

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_DIR = os.path.normpath(os.path.join(HERE, "..", "..", "proto"))
SERVICE = "/personalize_gateway.v1.PersonalizeGateway/"
TERMINAL = {"ACTIVE": 0, "CREATE FAILED": 2}


def load_messages(gen_dir):
    """The generated message classes: from gen_dir, or generated now with protoc."""
    if not gen_dir:
        gen_dir = tempfile.mkdtemp(prefix="pgw-example-")
        subprocess.run(["protoc", "-I", PROTO_DIR, "-I", "/usr/include", "--python_out=" + gen_dir,
                        "personalize_gateway/v1/personalize_gateway.proto"], check=True)
    # Appended, never first: the generated tree must not shadow the grpc package.
    sys.path.append(gen_dir)
    from personalize_gateway.v1 import personalize_gateway_pb2

    return personalize_gateway_pb2


def when(job):
    return job.last_updated_date_time.ToDatetime().isoformat() + "Z"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("arn")
    ap.add_argument("--target", default="127.0.0.1:50051", help="the gateway's gRPC address")
    ap.add_argument("--gen-dir", help="protoc --python_out output (default: generate it now)")
    ap.add_argument("--max-wait-s", type=float, default=24 * 3600, help="give up after this long")
    args = ap.parse_args()
    pb = load_messages(args.gen_dir)

    channel = grpc.insecure_channel(args.target)
    describe = channel.unary_unary(SERVICE + "DescribeBatchInferenceJob",
                                   request_serializer=pb.DescribeBatchInferenceJobRequest.SerializeToString,
                                   response_deserializer=pb.DescribeBatchInferenceJobResponse.FromString)
    watch = channel.unary_stream(SERVICE + "WatchBatchInferenceJob",
                                 request_serializer=pb.WatchBatchInferenceJobRequest.SerializeToString,
                                 response_deserializer=pb.WatchBatchInferenceJobResponse.FromString)

    # Describe: what most callers did in a loop.
    try:
        job = describe(pb.DescribeBatchInferenceJobRequest(batch_inference_job_arn=args.arn),
                       timeout=10).batch_inference_job
    except grpc.RpcError as e:
        print("describe failed: %s %s" % (e.code().name, e.details()), file=sys.stderr)
        return 3 if e.code() == grpc.StatusCode.NOT_FOUND else 1
    print("describe: %s" % job.status, flush=True)

    # Watch: one stream instead of the loop.
    deadline = time.monotonic() + args.max_wait_s
    last = None  # (status, last-updated) already reported
    backoff = 0.5
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            print("gave up waiting", file=sys.stderr)
            return 1
        try:
            for msg in watch(pb.WatchBatchInferenceJobRequest(batch_inference_job_arn=args.arn),
                             timeout=left):
                job = msg.batch_inference_job
                key = (job.status, job.last_updated_date_time.ToNanoseconds())
                if key != last:
                    print("watch: %s %s" % (job.status, when(job)), flush=True)
                    last = key
                backoff = 0.5
            # The stream ended OK: the last message was terminal.
            print("done: %s" % job.status, flush=True)
            return TERMINAL.get(job.status, 1)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.UNAVAILABLE:
                print("reconnecting: %s" % e.details(), file=sys.stderr, flush=True)
                time.sleep(backoff)
                backoff = min(backoff * 2, 10)
                continue
            print("watch failed: %s %s" % (e.code().name, e.details()), file=sys.stderr)
            return 3 if e.code() == grpc.StatusCode.NOT_FOUND else 1


if __name__ == "__main__":
    sys.exit(main())
