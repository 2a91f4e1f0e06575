#!/usr/bin/python3
"""The traffic scripts/startup-order profiles after start: what a replica serves.

    scripts/startup_traffic.py GRPC_ADDR HTTP_ADDR FAKE_AWS_URL

gRPC Describe (a miss, then hits; NOT_FOUND; a malformed ARN; no-cache), a Watch ending at its
deadline, REST (found and not) and AWS-compatible HTTP lookups, with real grpcio and
pgw_harness's HTTP client; every answer is checked, so
a profile of a gateway that failed is not taken for one that served. The functions these run
are laid out right after the start's (scripts/startup_order.py), so a replica that has served
and gone idle keeps its code in a few 64 KB windows too."""

import os
import sys
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "integration"))
import grpc  # noqa: E402
import pgw_harness as h  # noqa: E402

JOB = "arn:aws:personalize:us-east-1:123456789012:batch-inference-job/nightly-recs-2023-11-14"
MISSING = "arn:aws:personalize:us-east-1:123456789012:batch-inference-job/no-such-job"


def expect_code(code, call, *args, **kwargs):
    try:
        call(*args, **kwargs)
    except grpc.RpcError as e:
        assert e.code() == code, (code, e.code(), e.details())
        return
    raise AssertionError("expected %s" % code)


def main():
    grpc_addr, http_addr, fake_url = sys.argv[1:4]
    status, _, body = h.http_request("POST", fake_url + "/__control/jobs",
                                     body={"arn": JOB, "fixture": "job_full"})
    assert status == 200, (status, body)
    with grpc.insecure_channel(grpc_addr) as channel:
        for _ in range(10):
            resp, _, _ = h.describe(grpc_addr, JOB, timeout=10, channel=channel)
            assert resp.batch_inference_job.batch_inference_job_arn == JOB
            expect_code(grpc.StatusCode.NOT_FOUND, h.describe, grpc_addr, MISSING, timeout=10,
                        channel=channel)
            expect_code(grpc.StatusCode.INVALID_ARGUMENT, h.describe, grpc_addr, "not-an-arn",
                        timeout=10, channel=channel)
        watch = h.WatchStream(channel, JOB, timeout=2)
        assert watch.done.wait(10), "the watch did not end"
        assert watch.jobs, (watch.code, watch.details)
    for _ in range(10):
        for arn, expected in ((JOB, 200), (MISSING, 404)):
            status, _, body = h.http_request(
                "GET", "http://%s/v1/batch-inference-jobs/%s"
                % (http_addr, urllib.parse.quote(arn, safe="")))
            assert status == expected, (arn, status, body)
        status, _, body = h.http_request(
            "POST", "http://%s/" % http_addr, body='{"batchInferenceJobArn": "%s"}' % JOB,
            headers={"X-Amz-Target": "AmazonPersonalize.DescribeBatchInferenceJob",
                     "Content-Type": "application/x-amz-json-1.1"})
        assert status == 200, (status, body)
    # Upstream again, past the cache: curl reuses or replaces the connections the fake closed
    # after its error answers.
    for arn, code in ((JOB, None), (MISSING, grpc.StatusCode.NOT_FOUND)):
        try:
            h.describe(grpc_addr, arn, timeout=10, metadata=(("cache-control", "no-cache"),))
            assert code is None, arn
        except grpc.RpcError as e:
            assert e.code() == code, (arn, e.code(), e.details())


if __name__ == "__main__":
    main()
