"""Issue 12's defect "a NUL inside an ARN": an ARN holding a NUL byte, or bytes that are not
valid UTF-8, gets INVALID_ARGUMENT (HTTP 400) on every path, with no cache lookup and no
upstream call.

The job "...job/x" is cached first: before the fix, "...job/x\\0anything" over gRPC was cut at
the NUL and answered with x's job from the cache. The gRPC requests are sent as raw bytes with
an identity serializer, because the Python protobuf library refuses to encode a str field that
is not valid UTF-8. Redis is configured, so "no cache lookup" covers both tiers: the gateway's
pgw_cache_requests_total does not move and Redis counts no GET for them.
"""

import json
import urllib.parse

import grpc
import pytest

import pgw_harness as h

GOOD = "arn:aws:personalize:us-east-1:123456789012:batch-inference-job/x"
TARGET = "AmazonPersonalize.DescribeBatchInferenceJob"
AMZ_JSON = "application/x-amz-json-1.1"

# (raw ARN bytes, what the status message must say)
BAD_ARNS = [
    (GOOD.encode() + b"\x00anything", "control character 0x00 at offset 64"),
    (b"\x00" + GOOD.encode(), "control character 0x00 at offset 0"),
    (GOOD.encode() + b"\x00", "control character 0x00 at offset 64"),
    (GOOD.encode() + b"\xff", "non-ASCII byte at offset 64"),
    (GOOD.encode() + b"\xc0\xaf", "non-ASCII byte at offset 64"),       # overlong "/"
    (GOOD.encode() + b"\xed\xa0\x80", "non-ASCII byte at offset 64"),   # a UTF-16 surrogate
    (GOOD.encode()[:-1] + b"\xc3\xa9", "non-ASCII byte at offset 63"),  # valid UTF-8, not ASCII
]
IDS = ["nul-inside", "nul-first", "nul-last", "ff", "overlong", "surrogate", "non-ascii"]


def wire_request(arn_bytes):
    """DescribeBatchInferenceJobRequest on the wire: field 1, length-delimited."""
    n, varint = len(arn_bytes), b""
    while True:
        b = n & 0x7F
        n >>= 7
        varint += bytes([b | (0x80 if n else 0)])
        if not n:
            return b"\x0a" + varint + arn_bytes


def cache_lookups(gw):
    """Sum of pgw_cache_requests_total over every tier and result."""
    from prometheus_client.parser import text_string_to_metric_families

    status, _, body = gw.http_get("/metrics")
    assert status == 200
    total = 0.0
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            if s.name == "pgw_cache_requests_total":
                total += s.value
    return total


def redis_gets(redis_server):
    stats = redis_server.client().info("commandstats")
    return stats.get("cmdstat_get", {}).get("calls", 0)


@pytest.fixture
def primed(gateway, fake_aws, redis_server):
    """A gateway with Redis whose cache holds GOOD's job, and the counters to compare against."""
    fake_aws.add_job(GOOD)
    gw = gateway(extra_args=["--redis-url", redis_server.url])
    resp, md, _ = h.describe(gw.grpc_target, GOOD)
    assert resp.batch_inference_job.batch_inference_job_arn == GOOD
    h.wait_until(lambda: redis_server.client().exists("pgw:v1:bij:" + GOOD), what="redis filled")
    _, md, _ = h.describe(gw.grpc_target, GOOD)
    assert dict(md).get("x-cache") == "hit"
    return gw


def assert_untouched(gw, fake_aws, redis_server, lookups, gets):
    assert fake_aws.stats()["personalize"]["requests"] == 1  # the priming call only
    assert cache_lookups(gw) == lookups
    assert redis_gets(redis_server) == gets


@pytest.mark.parametrize("arn,why", BAD_ARNS, ids=IDS)
def test_grpc(primed, fake_aws, redis_server, arn, why):
    gw = primed
    lookups, gets = cache_lookups(gw), redis_gets(redis_server)
    pb, _ = h.protos()
    with grpc.insecure_channel(gw.grpc_target) as ch:
        raw = ch.unary_unary(h.GRPC_METHOD, request_serializer=lambda b: b,
                             response_deserializer=pb.DescribeBatchInferenceJobResponse.FromString)
        for metadata in ((), (("cache-control", "no-cache"),)):
            with pytest.raises(grpc.RpcError) as e:
                raw(wire_request(arn), timeout=5, metadata=metadata)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value.details()
            assert why in e.value.details()
            assert "batch inference job ARN" in e.value.details()
    assert_untouched(gw, fake_aws, redis_server, lookups, gets)
    # The gateway keeps serving the good ARN from its cache.
    _, md, _ = h.describe(gw.grpc_target, GOOD)
    assert dict(md).get("x-cache") == "hit"


@pytest.mark.parametrize("arn,why", BAD_ARNS, ids=IDS)
def test_rest(primed, fake_aws, redis_server, arn, why):
    gw = primed
    lookups, gets = cache_lookups(gw), redis_gets(redis_server)
    path = "/v1/batch-inference-jobs/" + urllib.parse.quote(arn, safe="")
    status, headers, body = gw.http_get(path)
    assert status == 400, body
    assert headers["content-type"] == "application/json"
    err = json.loads(body)
    assert err["code"] == "INVALID_ARGUMENT" and why in err["message"]
    assert_untouched(gw, fake_aws, redis_server, lookups, gets)


def aws_post(gw, body):
    return h.http_request("POST", gw.http_url + "/", body=body,
                          headers={"X-Amz-Target": TARGET, "Content-Type": AMZ_JSON})


@pytest.mark.parametrize("arn,why", BAD_ARNS, ids=IDS)
def test_aws_json(primed, fake_aws, redis_server, arn, why):
    """POST /: jansson refuses a \\u0000 escape, a raw NUL and bytes that are not UTF-8 as
    invalid JSON (SerializationException, before any lookup); valid UTF-8 that is not ASCII
    parses and the ARN check refuses it (InvalidInputException)."""
    gw = primed
    lookups, gets = cache_lookups(gw), redis_gets(redis_server)
    try:
        text = arn.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    bodies = [b'{"batchInferenceJobArn":"' + arn + b'"}']  # the bytes as they are
    if text is not None:
        bodies.append(json.dumps({"batchInferenceJobArn": text}).encode())  # \u escapes
    for body in bodies:
        status, headers, data = aws_post(gw, body)
        assert status == 400, data
        err = json.loads(data)
        assert headers["x-amzn-errortype"] == err["__type"]
        if b"\x00" in arn or text is None:
            assert err["__type"] == "SerializationException"
            assert err["message"] == "the request body is not valid JSON"
        else:
            assert err["__type"] == "InvalidInputException" and why in err["message"]
    assert_untouched(gw, fake_aws, redis_server, lookups, gets)
