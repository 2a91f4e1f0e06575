"""Issue 2: a gRPC call in, a signed AWS call out, the full job back.

Real parts: the gateway binary, Debian's grpcio as the client, and the AWS fake, which checks
the SigV4 signature of every request with botocore (independently of our C signer)."""

import datetime
import os
import signal
import subprocess
import time

import grpc
import pytest
from google.protobuf import json_format

import pgw_harness as h

ARN = "arn:aws:personalize:us-east-1:123456789012:batch-inference-job/nightly-1"
FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures")


def arn_n(i, region="us-east-1"):
    return "arn:aws:personalize:%s:123456789012:batch-inference-job/job-%d" % (region, i)


def rfc3339(epoch):
    """proto3 JSON form of an epoch-seconds float, as json_format prints it."""
    secs = int(epoch)
    nanos = round((epoch - secs) * 1e9 / 1000) * 1000
    s = datetime.datetime.fromtimestamp(secs, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    if nanos:
        frac = "%09d" % nanos
        frac = frac[:3] if frac.endswith("000000") else frac[:6] if frac.endswith("000") else frac
        s += "." + frac
    return s + "Z"


def expected_proto_json(aws_job):
    """The AWS job as proto3 JSON: same names, timestamps as RFC 3339, mode as enum name."""
    out = dict(aws_job)
    for k in ("creationDateTime", "lastUpdatedDateTime"):
        if k in out:
            out[k] = rfc3339(out[k])
    if "batchInferenceJobMode" in out:
        out["batchInferenceJobMode"] = "BATCH_INFERENCE_JOB_MODE_" + out["batchInferenceJobMode"]
    return out


def test_every_field_round_trips(gateway, fake_aws):
    stored = fake_aws.add_job(ARN, fixture="job_full")["batchInferenceJob"]
    # The fixture must exercise every field of the AWS shape, or this test proves less.
    for field in ("jobName", "batchInferenceJobArn", "filterArn", "failureReason",
                  "solutionVersionArn", "numResults", "jobInput", "jobOutput",
                  "batchInferenceJobConfig", "roleArn", "batchInferenceJobMode",
                  "themeGenerationConfig", "status", "creationDateTime", "lastUpdatedDateTime"):
        assert field in stored, field
    gw = gateway()
    resp, initial_md, _ = h.describe(gw.grpc_target, ARN)
    got = json_format.MessageToDict(resp.batch_inference_job)
    assert got == expected_proto_json(stored)
    assert resp.batch_inference_job.creation_date_time.nanos != 0  # sub-second precision kept
    assert dict(initial_md).get("x-cache") == "miss"
    fake_aws.assert_no_signature_failures()
    assert fake_aws.stats()["personalize"]["requests"] == 1


def test_minimal_job_and_unknown_fields(gateway, fake_aws):
    job = {"batchInferenceJobArn": ARN, "status": "SOMETHING NEW", "brandNewField": {"x": [1]},
           "batchInferenceJobMode": "MODE_FROM_THE_FUTURE"}
    fake_aws.add_job(ARN, job=job)
    gw = gateway()
    resp, _, _ = h.describe(gw.grpc_target, ARN)
    j = resp.batch_inference_job
    assert j.batch_inference_job_arn == ARN
    assert j.status == "SOMETHING NEW"
    assert j.batch_inference_job_mode == 0  # unknown enum value -> UNSPECIFIED
    assert not j.HasField("job_input")


def test_not_found(gateway, fake_aws):
    gw = gateway()
    with pytest.raises(grpc.RpcError) as e:
        h.describe(gw.grpc_target, arn_n(404))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    assert "ResourceNotFoundException" in e.value.details()
    assert "request id" in e.value.details()
    fake_aws.assert_no_signature_failures()


@pytest.mark.parametrize("bad,why", [
    ("", "empty"),
    ("arn:aws:personalize:us-east-1:123456789012:batch-inference-job/" + "a" * 250, "256"),
    ("arn:aws:personalize:us-east-1.evil.example:123456789012:batch-inference-job/x", "region"),
    ("arn:aws:personalize:us-east-1:12345:batch-inference-job/x", "12 digits"),
    ("arn:aws:s3:us-east-1:123456789012:batch-inference-job/x", "service"),
    ("arn:aws:personalize:us-east-1:123456789012:solution/x", "batch-inference-job"),
    ("arn:aws-iso:personalize:us-east-1:123456789012:batch-inference-job/x", "partition"),
    ("not an arn at all", "arn:<partition>"),
])
def test_malformed_arn_is_invalid_argument_without_upstream_call(gateway, fake_aws, bad, why):
    gw = gateway()
    with pytest.raises(grpc.RpcError) as e:
        h.describe(gw.grpc_target, bad)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert why in e.value.details()
    assert fake_aws.stats()["total_requests"] == 0


def test_upstream_500_is_unavailable_after_retries(gateway, fake_aws):
    fake_aws.add_job(ARN)
    fake_aws.fail_next(n=10, status=500, type="InternalFailure")
    gw = gateway()
    with pytest.raises(grpc.RpcError) as e:
        h.describe(gw.grpc_target, ARN, timeout=20)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "InternalFailure" in e.value.details()
    assert fake_aws.stats()["personalize"]["requests"] == 3  # standard mode: 3 attempts
    assert any(r.get("level") == "warn" and r.get("msg") == "upstream call failed"
               for r in gw.log_records())


def test_transient_500_is_retried_to_success(gateway, fake_aws):
    fake_aws.add_job(ARN)
    fake_aws.fail_next(n=1, status=503, type="ServiceUnavailable")
    gw = gateway()
    resp, _, _ = h.describe(gw.grpc_target, ARN, timeout=20)
    assert resp.batch_inference_job.batch_inference_job_arn == ARN
    assert fake_aws.stats()["personalize"]["requests"] == 2


def test_bad_json_from_upstream_is_an_error_not_a_crash(gateway, fake_aws):
    fake_aws.add_job(ARN)
    gw = gateway()
    fake_aws.fail(count=1, body={"batchInferenceJob": {"jobName": 42}})
    with pytest.raises(grpc.RpcError) as e:
        h.describe(gw.grpc_target, ARN)
    assert e.value.code() == grpc.StatusCode.INTERNAL
    assert "jobName" in e.value.details()
    fake_aws.fail(count=1, raw="{not json", content_type="application/x-amz-json-1.1", status=200)
    with pytest.raises(grpc.RpcError) as e:
        h.describe(gw.grpc_target, ARN)
    assert e.value.code() == grpc.StatusCode.INTERNAL
    # still serving
    resp, _, _ = h.describe(gw.grpc_target, ARN)
    assert resp.batch_inference_job.batch_inference_job_arn == ARN


def test_upstream_slower_than_deadline_is_deadline_exceeded(gateway, fake_aws):
    fake_aws.add_job(ARN)
    fake_aws.set_latency(3000)
    gw = gateway()
    t0 = time.monotonic()
    with pytest.raises(grpc.RpcError) as e:
        h.describe(gw.grpc_target, ARN, timeout=0.5)
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - t0 < 2.5
    # The gateway gave up on the upstream call as well, and keeps serving.
    fake_aws.set_latency(0)
    resp, _, _ = h.describe(gw.grpc_target, ARN, timeout=5)
    assert resp.batch_inference_job.batch_inference_job_arn == ARN


@h.wrapper_timing_sensitive("200 calls with 10 s deadlines through a slowed-down gateway")
def test_200_concurrent_slow_calls_do_not_block(gateway, fake_aws):
    n = 200
    for i in range(n):
        fake_aws.add_job(arn_n(i))
    fake_aws.set_latency(200)
    gw = gateway()
    with h.grpc_channel(gw.grpc_target) as ch:
        stub, request = h.describe_stub(ch)
        # warm the channel so connection setup is not measured
        grpc.channel_ready_future(ch).result(timeout=5)
        futures = [stub.future(request(batch_inference_job_arn=arn_n(i)),
                               timeout=10) for i in range(n)]
        results = [f.result() for f in futures]
    assert [r.batch_inference_job.batch_inference_job_arn for r in results] == [arn_n(i) for i in range(n)]
    st = fake_aws.stats()
    assert st["personalize"]["requests"] == n
    # Not blocked: the upstream calls were in flight together (the fake counts them), where a
    # gateway that waited on each would have had one at a time (and 200 x 200 ms would have
    # outlived the 10 s deadlines). No wall-clock bound: that is bench/'s business.
    assert st["max_in_flight"] >= 50, st["max_in_flight"]
    fake_aws.assert_no_signature_failures()


def test_sigterm_lets_in_flight_calls_finish(gateway, fake_aws):
    for i in range(20):
        fake_aws.add_job(arn_n(i))
    fake_aws.set_latency(1000)
    gw = gateway()
    with h.grpc_channel(gw.grpc_target) as ch:
        stub, request = h.describe_stub(ch)
        futures = [stub.future(request(batch_inference_job_arn=arn_n(i)),
                               timeout=10) for i in range(20)]
        h.wait_until(lambda: fake_aws.stats()["personalize"]["requests"] >= 20, timeout=5,
                     what="calls in flight upstream")
        gw.signal(signal.SIGTERM)
        results = [f.result() for f in futures]
    assert len(results) == 20
    assert gw.stop(timeout=15) == 0
    assert any(r.get("msg") == "shutting down" for r in gw.log_records())


def test_region_comes_from_the_arn_even_with_an_endpoint_override(gateway, fake_aws):
    # The fake checks that the SigV4 scope's region equals the region in the ARN.
    arns = [arn_n(1, "eu-west-1"), arn_n(2, "ap-southeast-2"),
            "arn:aws-us-gov:personalize:us-gov-west-1:123456789012:batch-inference-job/g",
            "arn:aws-cn:personalize:cn-north-1:123456789012:batch-inference-job/c"]
    for a in arns:
        fake_aws.add_job(a)
    gw = gateway()
    for a in arns:
        resp, _, _ = h.describe(gw.grpc_target, a)
        assert resp.batch_inference_job.batch_inference_job_arn == a
    fake_aws.assert_no_signature_failures()


def test_session_token_is_sent_and_signed(tmp_path, gateway_binary):
    fake = h.FakeAws(str(tmp_path / "fake"), access_key="ASIATEMPORARYKEY123",
                     secret_key="tempSecretKeyValue/with+chars", session_token="FwoGZXIvYXdzEBYaDH" + "x" * 300)
    try:
        fake.add_job(ARN)
        home = tmp_path / "home"
        home.mkdir()
        gw = h.Gateway(gateway_binary, str(tmp_path / "gw"), [], h.gateway_env(fake, str(home)))
        try:
            resp, _, _ = h.describe(gw.grpc_target, ARN)
            assert resp.batch_inference_job.batch_inference_job_arn == ARN
            fake.assert_no_signature_failures()
            assert fake.stats()["personalize"]["requests_with_token"] == 1
        finally:
            assert gw.stop() == 0
        h.secrets_never_logged(gw, [fake.secret_key, fake.session_token])
        assert not gw.sanitizer_findings()
    finally:
        fake.stop()


def test_wrong_secret_is_unavailable_and_never_logged(gateway, fake_aws):
    fake_aws.add_job(ARN)
    secret = "WrongSecretKeyThatMustNeverAppear1234"
    gw = gateway(env={"AWS_SECRET_ACCESS_KEY": secret}, extra_args=["--log-level", "debug"])
    with pytest.raises(grpc.RpcError) as e:
        h.describe(gw.grpc_target, ARN)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "InvalidSignatureException" in e.value.details()
    assert secret not in e.value.details()
    gw.stop()
    h.secrets_never_logged(gw, [secret])


def test_no_credentials_starts_and_answers_unavailable(gateway, fake_aws):
    fake_aws.add_job(ARN)
    gw = gateway(env={"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None})
    with pytest.raises(grpc.RpcError) as e:
        h.describe(gw.grpc_target, ARN)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "credentials" in e.value.details()
    assert fake_aws.stats()["total_requests"] == 0


def raw_stub(channel, method=h.GRPC_METHOD):
    return channel.unary_unary(method, request_serializer=lambda b: b,
                               response_deserializer=lambda b: b)


def test_malformed_and_oversized_messages_then_still_serving(gateway, fake_aws):
    fake_aws.add_job(ARN)
    gw = gateway()
    with h.grpc_channel(gw.grpc_target) as ch:
        with pytest.raises(grpc.RpcError) as e:
            raw_stub(ch)(b"\x0a\xff\xff\xff\xff\x0f", timeout=5)  # length runs past the end
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as e:
            raw_stub(ch)(b"\x0a\x05" + b"x" * 100000, timeout=5)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        with pytest.raises(grpc.RpcError) as e:
            raw_stub(ch, "/personalize_gateway.v1.PersonalizeGateway/NoSuchMethod")(b"", timeout=5)
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
        # an empty message is valid protobuf: an empty ARN
        with pytest.raises(grpc.RpcError) as e:
            raw_stub(ch)(b"", timeout=5)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    resp, _, _ = h.describe(gw.grpc_target, ARN)
    assert resp.batch_inference_job.batch_inference_job_arn == ARN
    assert fake_aws.stats()["personalize"]["requests"] == 1


def test_cancelled_calls_are_harmless(gateway, fake_aws):
    for i in range(30):
        fake_aws.add_job(arn_n(i))
    fake_aws.set_latency(500)
    gw = gateway()
    with h.grpc_channel(gw.grpc_target) as ch:
        stub, request = h.describe_stub(ch)
        futures = [stub.future(request(batch_inference_job_arn=arn_n(i)),
                               timeout=10) for i in range(30)]
        time.sleep(0.2)
        for f in futures:
            f.cancel()
    fake_aws.set_latency(0)
    resp, _, _ = h.describe(gw.grpc_target, arn_n(1))
    assert resp.batch_inference_job.batch_inference_job_arn == arn_n(1)
    assert gw.stop() == 0


@pytest.mark.parametrize("args,env,needle", [
    (["--grpc-addr", "nonsense"], {}, "--grpc-addr"),
    (["--no-such-flag", "1"], {}, "--no-such-flag"),
    (["--upstream-timeout-ms", "abc"], {}, "--upstream-timeout-ms"),
    ([], {"PGW_REDIS_URL": "http://x"}, "PGW_REDIS_URL"),
    ([], {"AWS_ENDPOINT_URL_PERSONALIZE": "::not a url::"}, "AWS_ENDPOINT_URL_PERSONALIZE"),
    ([], {"PGW_LOG_LEVEL": "loud"}, "PGW_LOG_LEVEL"),
])
def test_bad_config_exits_2_with_one_line_naming_the_setting(gateway_binary, tmp_path, args, env, needle):
    e = h.gateway_env(None, str(tmp_path), env)
    p = subprocess.run([gateway_binary] + args, env=e, capture_output=True, text=True, timeout=30)
    assert p.returncode == 2
    lines = [l for l in p.stderr.splitlines() if l.strip() and "Sanitizer" not in l]
    assert len(lines) == 1 and needle in lines[0], p.stderr


def test_help_lists_every_flag(gateway_binary, tmp_path):
    p = subprocess.run([gateway_binary, "--help"], env=h.gateway_env(None, str(tmp_path)),
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0
    for flag in ("--grpc-addr", "--http-addr", "--redis-url", "--log-level", "PGW_GRPC_ADDR"):
        assert flag in p.stdout


def test_startup_log_names_listeners_and_no_secrets(gateway, fake_aws):
    gw = gateway()
    rec = gw.wait_for_log(lambda r: r.get("msg") == "personalize-gateway started")
    assert rec["grpc_addr"] == gw.grpc_target
    assert rec["endpoint_override"] == fake_aws.url
    # It holds secrets: no core file may ever carry them to disk.
    with open("/proc/%d/limits" % gw.pid) as f:
        core = [l for l in f if l.startswith("Max core file size")][0].split()
    assert core[4:6] == ["0", "0"], core
    gw.stop()
    h.secrets_never_logged(gw, [fake_aws.secret_key])
