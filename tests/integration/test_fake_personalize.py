"""Tests of the test tooling itself: the AWS fake (driven by boto3 and raw signed requests),
the redis fixture and the harness helpers. The gateway is not involved."""

import concurrent.futures
import datetime
import json
import os
import socket
import threading
import time

import boto3
import botocore.exceptions
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

import pgw_harness as h

ARN = "arn:aws:personalize:us-east-1:123456789012:batch-inference-job/smoke-job"
ARN_EU = "arn:aws:personalize:eu-west-1:123456789012:batch-inference-job/smoke-eu"
TARGET = "AmazonPersonalize.DescribeBatchInferenceJob"
# The fake's own fixtures, by path: tests/fixtures/job_*.json (same names) may differ.
OWN_FULL = os.path.join(h.REPO, "tests", "fakes", "fixtures", "job_full.json")
OWN_MINIMAL = os.path.join(h.REPO, "tests", "fakes", "fixtures", "job_minimal.json")


def signed_request(fake, arn=ARN, region="us-east-1", access_key=None, secret_key=None,
                   token=None, body=None, target=TARGET, content_type="application/x-amz-json-1.1",
                   service="personalize", when=None):
    """Signs a Personalize call with botocore; returns (headers dict, body bytes)."""
    if body is None:
        body = json.dumps({"batchInferenceJobArn": arn}).encode()
    req = AWSRequest(method="POST", url=fake.url + "/", data=body,
                     headers={"Content-Type": content_type, "X-Amz-Target": target})
    creds = Credentials(access_key or fake.access_key, secret_key or fake.secret_key, token)
    signer = SigV4Auth(creds, service, region)
    if when is None:
        signer.add_auth(req)
    else:
        # Sign as of a given moment (add_auth always uses now).
        stamp = when.strftime("%Y%m%dT%H%M%SZ")
        req.context["timestamp"] = stamp
        req.headers["X-Amz-Date"] = stamp
        if token:
            req.headers["X-Amz-Security-Token"] = token
        cr = signer.canonical_request(req)
        sig = signer.signature(signer.string_to_sign(req, cr), req)
        req.headers["Authorization"] = "AWS4-HMAC-SHA256 Credential=%s, SignedHeaders=%s, Signature=%s" % (
            signer.scope(req), signer.signed_headers(signer.headers_to_sign(req)), sig)
    return dict(req.headers.items()), body


def post(fake, headers, body):
    status, hdrs, data = h.http_request("POST", fake.url + "/", body=body, headers=headers)
    return status, hdrs, (json.loads(data) if data else None)


def error_code(exc):
    return exc.response["Error"]["Code"]


# --- Personalize ------------------------------------------------------------------------------


def test_registered_job_is_served_with_the_requested_arn(fake_aws):
    stored = fake_aws.add_job(ARN, fixture=OWN_FULL, status="IN PROGRESS")
    client = fake_aws.personalize_client()
    job = client.describe_batch_inference_job(batchInferenceJobArn=ARN)["batchInferenceJob"]
    assert job["batchInferenceJobArn"] == ARN
    assert job["status"] == "IN PROGRESS"
    assert job["jobName"] == stored["batchInferenceJob"]["jobName"]
    assert job["numResults"] == 25
    assert job["creationDateTime"].timestamp() == pytest.approx(1700000000.123)
    stats = fake_aws.stats()
    assert stats["personalize"]["per_arn"] == {ARN: 1}
    assert stats["personalize"]["per_access_key"] == {fake_aws.access_key: 1}
    assert stats["signature_failure_count"] == 0
    last = stats["last_request"]
    assert last["had_token"] is False and last["arn"] == ARN
    assert last["headers"]["authorization"] == "<redacted>"
    assert "host" in last["headers"]["authorization-parsed"]["signed_headers"]
    assert fake_aws.secret_key not in json.dumps(stats)


def test_minimal_and_inline_jobs(fake_aws):
    fake_aws.add_job(ARN, fixture=OWN_MINIMAL)
    fake_aws.add_job(ARN_EU, job={"status": "ACTIVE", "numResults": "not-a-number"})
    status, _, body = post(fake_aws, *signed_request(fake_aws))
    assert status == 200 and body["batchInferenceJob"] == {"batchInferenceJobArn": ARN,
                                                           "status": "PENDING"}
    status, _, body = post(fake_aws, *signed_request(fake_aws, arn=ARN_EU, region="eu-west-1"))
    assert status == 200 and body["batchInferenceJob"]["numResults"] == "not-a-number"
    fake_aws.add_job(ARN, fixture=OWN_FULL, overrides={"status": None, "extraField": 1})
    status, _, body = post(fake_aws, *signed_request(fake_aws))
    assert "status" not in body["batchInferenceJob"] and body["batchInferenceJob"]["extraField"] == 1
    fake_aws.assert_no_signature_failures()


def test_fixture_by_name_prefers_tests_fixtures(fake_aws):
    name_dir = os.path.join(h.REPO, "tests", "fixtures")
    if not os.path.isfile(os.path.join(name_dir, "job_full.json")):
        name_dir = os.path.dirname(OWN_FULL)
    with open(os.path.join(name_dir, "job_full.json")) as f:
        expected = json.load(f)["batchInferenceJob"]
    got = fake_aws.add_job(ARN, fixture="job_full")["batchInferenceJob"]
    assert got == dict(expected, batchInferenceJobArn=ARN)
    with pytest.raises(RuntimeError):
        fake_aws.add_job(ARN, fixture="no_such_fixture")


def test_job_status_changes_at_run_time(fake_aws):
    fake_aws.add_job(ARN, status="PENDING")
    client = fake_aws.personalize_client()
    first = client.describe_batch_inference_job(batchInferenceJobArn=ARN)["batchInferenceJob"]
    before = time.time()
    fake_aws.set_job_status(ARN, "IN PROGRESS")
    moved = client.describe_batch_inference_job(batchInferenceJobArn=ARN)["batchInferenceJob"]
    assert (first["status"], moved["status"]) == ("PENDING", "IN PROGRESS")
    assert moved["lastUpdatedDateTime"].timestamp() >= before - 0.01
    assert moved["jobName"] == first["jobName"]  # the rest of the job stays
    fake_aws.set_job_status(ARN, "ACTIVE", last_updated=1800000000.25)
    done = client.describe_batch_inference_job(batchInferenceJobArn=ARN)["batchInferenceJob"]
    assert done["status"] == "ACTIVE"
    assert done["lastUpdatedDateTime"].timestamp() == 1800000000.25
    with pytest.raises(RuntimeError):
        fake_aws.set_job_status(ARN + "-unknown", "ACTIVE")


def test_unknown_arn_is_resource_not_found(fake_aws):
    client = fake_aws.personalize_client()
    with pytest.raises(client.exceptions.ResourceNotFoundException) as ei:
        client.describe_batch_inference_job(batchInferenceJobArn=ARN)
    assert ei.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert ei.value.response["ResponseMetadata"]["RequestId"]
    status, hdrs, body = post(fake_aws, *signed_request(fake_aws))
    assert status == 400
    assert body["__type"] == "com.amazonaws.personalize#ResourceNotFoundException"
    assert "Could not find batch inference job" in body["message"]
    assert hdrs["x-amzn-errortype"] == "ResourceNotFoundException" and hdrs["x-amzn-requestid"]


def test_wrong_secret_is_invalid_signature(fake_aws):
    fake_aws.add_job(ARN)
    client = fake_aws.personalize_client(secret_key="not-the-secret")
    with pytest.raises(botocore.exceptions.ClientError) as ei:
        client.describe_batch_inference_job(batchInferenceJobArn=ARN)
    assert error_code(ei.value) == "InvalidSignatureException"
    assert ei.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    failures = fake_aws.signature_failures()
    assert len(failures) == 1 and failures[0]["reason"] == "signature mismatch"


def test_unknown_access_key_is_unrecognized_client(fake_aws):
    client = fake_aws.personalize_client(access_key="AKIAUNKNOWNUNKNOWN00")
    with pytest.raises(botocore.exceptions.ClientError) as ei:
        client.describe_batch_inference_job(batchInferenceJobArn=ARN)
    assert error_code(ei.value) == "UnrecognizedClientException"
    assert fake_aws.stats()["signature_failure_count"] == 1


def test_tampered_signature_or_body_with_the_right_key(fake_aws):
    fake_aws.add_job(ARN)
    headers, body = signed_request(fake_aws)
    assert post(fake_aws, headers, body)[0] == 200
    auth = headers["Authorization"]
    flipped = auth[:-1] + ("0" if auth[-1] != "0" else "1")
    status, hdrs, err = post(fake_aws, dict(headers, Authorization=flipped), body)
    assert (status, err["__type"]) == (403, "InvalidSignatureException")
    assert hdrs["x-amzn-errortype"] == "InvalidSignatureException"
    status, _, err = post(fake_aws, headers, body.replace(b"smoke-job", b"smoke-jox"))
    assert (status, err["__type"]) == (403, "InvalidSignatureException")
    status, _, err = post(fake_aws, {k: v for k, v in headers.items() if k != "Authorization"}, body)
    assert (status, err["__type"]) == (403, "MissingAuthenticationTokenException")
    assert fake_aws.stats()["signature_failure_count"] == 3


def test_scope_region_must_be_the_arn_region(fake_aws):
    fake_aws.add_job(ARN_EU)
    with pytest.raises(botocore.exceptions.ClientError) as ei:
        fake_aws.personalize_client(region="us-east-1").describe_batch_inference_job(
            batchInferenceJobArn=ARN_EU)
    assert error_code(ei.value) == "InvalidSignatureException"
    assert "region" in fake_aws.signature_failures()[0]["reason"]
    job = fake_aws.personalize_client(region="eu-west-1").describe_batch_inference_job(
        batchInferenceJobArn=ARN_EU)
    assert job["batchInferenceJob"]["batchInferenceJobArn"] == ARN_EU


def test_wrong_service_in_scope_and_stale_date(fake_aws):
    fake_aws.add_job(ARN)
    status, _, err = post(fake_aws, *signed_request(fake_aws, service="sts"))
    assert (status, err["__type"]) == (403, "InvalidSignatureException")
    old = datetime.datetime.utcnow() - datetime.timedelta(minutes=6)
    status, _, err = post(fake_aws, *signed_request(fake_aws, when=old))
    assert status == 403 and "Signature expired" in err["message"]
    recent = datetime.datetime.utcnow() - datetime.timedelta(minutes=4)
    assert post(fake_aws, *signed_request(fake_aws, when=recent))[0] == 200
    fake_aws.set_clock(offset_s=3600)  # the fake's clock runs an hour ahead
    assert post(fake_aws, *signed_request(fake_aws))[0] == 403


def test_session_tokens_rotation_and_expiry(fake_aws):
    fake_aws.add_job(ARN)
    fake_aws.set_credentials([
        {"access_key": "ASIAROTATED000000001", "secret_key": "s1", "session_token": "tok-1"},
        {"access_key": "ASIAROTATED000000002", "secret_key": "s2", "session_token": "tok-2",
         "expires_in_s": 3600},
    ])
    # The original long-term key was replaced.
    with pytest.raises(botocore.exceptions.ClientError) as ei:
        fake_aws.personalize_client().describe_batch_inference_job(batchInferenceJobArn=ARN)
    assert error_code(ei.value) == "UnrecognizedClientException"
    c1 = fake_aws.personalize_client("ASIAROTATED000000001", "s1", "tok-1")
    c2 = fake_aws.personalize_client("ASIAROTATED000000002", "s2", "tok-2")
    c1.describe_batch_inference_job(batchInferenceJobArn=ARN)
    c2.describe_batch_inference_job(batchInferenceJobArn=ARN)
    with pytest.raises(botocore.exceptions.ClientError) as ei:
        fake_aws.personalize_client("ASIAROTATED000000001", "s1", "tok-2").describe_batch_inference_job(
            batchInferenceJobArn=ARN)
    assert error_code(ei.value) == "UnrecognizedClientException"
    fake_aws.expire_credentials("ASIAROTATED000000002")
    with pytest.raises(botocore.exceptions.ClientError) as ei:
        c2.describe_batch_inference_job(batchInferenceJobArn=ARN)
    assert error_code(ei.value) == "ExpiredTokenException"
    assert ei.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    stats = fake_aws.stats()
    assert stats["security_tokens_seen"] == 2
    assert stats["last_request"]["had_token"] is True
    assert "tok-2" not in json.dumps(stats) and "tok-1" not in json.dumps(stats)
    fake_aws.reset()
    fake_aws.add_job(ARN)
    fake_aws.personalize_client().describe_batch_inference_job(batchInferenceJobArn=ARN)


def test_target_content_type_and_body_validation(fake_aws):
    status, _, err = post(fake_aws, *signed_request(fake_aws, target="AmazonPersonalize.Nope"))
    assert (status, err["__type"].split("#")[-1]) == (400, "UnknownOperationException")
    status, _, err = post(fake_aws, *signed_request(fake_aws, content_type="application/json"))
    assert (status, err["__type"].split("#")[-1]) == (400, "SerializationException")
    status, _, err = post(fake_aws, *signed_request(fake_aws, body=b"{nope"))
    assert (status, err["__type"].split("#")[-1]) == (400, "SerializationException")
    status, _, err = post(fake_aws, *signed_request(fake_aws, body=b"{}"))
    assert (status, err["__type"].split("#")[-1]) == (400, "InvalidInputException")
    status, _, err = post(fake_aws, *signed_request(fake_aws, arn="arn:aws:s3:::bucket"))
    assert (status, err["__type"].split("#")[-1]) == (400, "InvalidInputException")
    fake_aws.assert_no_signature_failures()


def test_injected_failures(fake_aws):
    fake_aws.add_job(ARN)
    client = fake_aws.personalize_client()
    fake_aws.fail_next(2, status=500, type="InternalFailure")
    for _ in range(2):
        with pytest.raises(botocore.exceptions.ClientError) as ei:
            client.describe_batch_inference_job(batchInferenceJobArn=ARN)
        assert error_code(ei.value) == "InternalFailure"
    client.describe_batch_inference_job(batchInferenceJobArn=ARN)

    fake_aws.fail(arn=ARN, count=1, status=400, type="ThrottlingException", message="Rate exceeded")
    with pytest.raises(botocore.exceptions.ClientError) as ei:
        client.describe_batch_inference_job(batchInferenceJobArn=ARN)
    assert error_code(ei.value) == "ThrottlingException"

    fake_aws.fail(status=502, raw="<html>Bad Gateway</html>", content_type="text/html")
    status, _, data = h.http_request("POST", fake_aws.url + "/", *reversed(signed_request(fake_aws)))
    assert (status, data) == (502, b"<html>Bad Gateway</html>")

    fake_aws.fail(raw="{not json")
    status, _, data = h.http_request("POST", fake_aws.url + "/", *reversed(signed_request(fake_aws)))
    assert (status, data) == (500, b"{not json")

    fake_aws.fail(body={"batchInferenceJob": {"status": 7}})
    assert post(fake_aws, *signed_request(fake_aws))[2] == {"batchInferenceJob": {"status": 7}}

    fake_aws.fail(action="close")
    with pytest.raises(botocore.exceptions.ConnectionClosedError):
        client.describe_batch_inference_job(batchInferenceJobArn=ARN)

    # A persistent per-ARN failure leaves other ARNs alone.
    fake_aws.add_job(ARN_EU)
    fake_aws.fail(arn=ARN, status=503, type="ServiceUnavailable")
    for _ in range(3):
        assert post(fake_aws, *signed_request(fake_aws))[0] == 503
    assert post(fake_aws, *signed_request(fake_aws, arn=ARN_EU, region="eu-west-1"))[0] == 200
    fake_aws.clear_failures()
    assert post(fake_aws, *signed_request(fake_aws))[0] == 200
    stats = fake_aws.stats()
    assert stats["injected_failures"] == 10
    assert stats["signature_failure_count"] == 0


def test_latency_and_200_concurrent_slow_requests(fake_aws):
    fake_aws.add_job(ARN)
    fake_aws.set_latency(1000, arn=ARN)
    requests = [signed_request(fake_aws) for _ in range(200)]
    barrier = threading.Barrier(200)

    def one(req):
        barrier.wait()
        return post(fake_aws, *req)[0]

    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(200) as pool:
        codes = list(pool.map(one, requests))
    elapsed = time.monotonic() - t0
    assert codes == [200] * 200
    assert 1.0 <= elapsed < 8.0, elapsed  # concurrent, not serialised (that would be 200 s)
    stats = fake_aws.stats()
    assert stats["max_in_flight"] >= 150
    assert stats["in_flight"] == 0


def test_thousand_concurrent_connections(fake_aws):
    fake_aws.add_job(ARN)
    fake_aws.set_latency(2000)
    reqs = [signed_request(fake_aws) for _ in range(1000)]
    socks = []
    try:
        # Open all 1,000 connections and send every request before reading any answer.
        for headers, body in reqs:
            s = socket.create_connection(("127.0.0.1", fake_aws.port), timeout=30)
            head = "POST / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % fake_aws.port + "".join(
                "%s: %s\r\n" % kv for kv in headers.items()) + "Content-Length: %d\r\n\r\n" % len(body)
            s.sendall(head.encode() + body)
            socks.append(s)
        ok = 0
        for s in socks:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            ok += data.startswith(b"HTTP/1.1 200 ")
        assert ok == 1000
    finally:
        for s in socks:
            s.close()
    stats = fake_aws.stats()
    assert stats["personalize"]["per_arn"][ARN] == 1000
    assert stats["max_in_flight"] >= 500
    assert stats["signature_failure_count"] == 0


def test_keep_alive_reuses_one_connection(fake_aws):
    import http.client

    fake_aws.add_job(ARN)
    conn = http.client.HTTPConnection("127.0.0.1", fake_aws.port, timeout=10)
    try:
        for _ in range(5):
            headers, body = signed_request(fake_aws)
            conn.request("POST", "/", body=body, headers=headers)
            resp = conn.getresponse()
            assert resp.status == 200 and json.loads(resp.read())
        assert conn.sock is not None
    finally:
        conn.close()


# --- STS, container credentials, IMDS -----------------------------------------------------------


def sts_client(fake, access_key="x", secret_key="y"):
    return boto3.client("sts", endpoint_url=fake.url, region_name="us-east-1",
                        aws_access_key_id=access_key, aws_secret_access_key=secret_key,
                        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}))


def test_sts_web_identity_credentials_work_against_personalize(fake_aws):
    fake_aws.add_job(ARN)
    fake_aws.configure_sts(ttl_s=900, expected_web_identity_token="jwt-abc")
    out = sts_client(fake_aws).assume_role_with_web_identity(
        RoleArn="arn:aws:iam::123456789012:role/pgw", RoleSessionName="pgw-session",
        WebIdentityToken="jwt-abc")
    creds = out["Credentials"]
    assert creds["AccessKeyId"].startswith("ASIA")
    left = (creds["Expiration"] - datetime.datetime.now(datetime.timezone.utc)).total_seconds()
    assert 800 < left <= 900
    assert out["AssumedRoleUser"]["Arn"].endswith("assumed-role/pgw/pgw-session")
    client = fake_aws.personalize_client(creds["AccessKeyId"], creds["SecretAccessKey"],
                                         creds["SessionToken"])
    client.describe_batch_inference_job(batchInferenceJobArn=ARN)
    with pytest.raises(botocore.exceptions.ClientError) as ei:
        sts_client(fake_aws).assume_role_with_web_identity(
            RoleArn="arn:aws:iam::123456789012:role/pgw", RoleSessionName="s1",
            WebIdentityToken="jwt-wrong")
    assert error_code(ei.value) == "InvalidIdentityToken"
    stats = fake_aws.stats()
    assert stats["sts"]["web_identity_tokens"] == ["jwt-abc", "jwt-wrong"]
    assert [i["access_key"] for i in stats["issued"]] == [creds["AccessKeyId"]]
    assert fake_aws.issued_credentials()[0]["session_token"] == creds["SessionToken"]


def test_sts_assume_role_is_signature_checked(fake_aws):
    fake_aws.add_job(ARN)
    good = sts_client(fake_aws, fake_aws.access_key, fake_aws.secret_key)
    creds = good.assume_role(RoleArn="arn:aws:iam::123456789012:role/r", RoleSessionName="s1")[
        "Credentials"]
    fake_aws.personalize_client(creds["AccessKeyId"], creds["SecretAccessKey"],
                                creds["SessionToken"]).describe_batch_inference_job(
        batchInferenceJobArn=ARN)
    with pytest.raises(botocore.exceptions.ClientError) as ei:
        sts_client(fake_aws, fake_aws.access_key, "wrong").assume_role(
            RoleArn="arn:aws:iam::123456789012:role/r", RoleSessionName="s1")
    assert error_code(ei.value) == "SignatureDoesNotMatch"
    fake_aws.fail(service="sts", status=503, type="ServiceUnavailable", message="down")
    with pytest.raises(botocore.exceptions.ClientError) as ei:
        good.assume_role(RoleArn="arn:aws:iam::123456789012:role/r", RoleSessionName="s1")
    assert error_code(ei.value) == "ServiceUnavailable"
    failures = fake_aws.signature_failures()
    assert [f["service"] for f in failures] == ["sts"]


def test_container_credentials(fake_aws):
    fake_aws.add_job(ARN)
    fake_aws.configure_container(path="/creds", token="Bearer-xyz", ttl_s=600)
    status, _, _ = h.http_request("GET", fake_aws.url + "/creds", headers={"Authorization": "nope"})
    assert status == 401
    status, _, data = h.http_request("GET", fake_aws.url + "/creds",
                                     headers={"Authorization": "Bearer-xyz"})
    assert status == 200
    creds = json.loads(data)
    assert set(creds) >= {"AccessKeyId", "SecretAccessKey", "Token", "Expiration"}
    fake_aws.personalize_client(creds["AccessKeyId"], creds["SecretAccessKey"],
                                creds["Token"]).describe_batch_inference_job(batchInferenceJobArn=ARN)
    c = fake_aws.stats()["container"]
    assert (c["requests"], c["auth_ok"], c["auth_failed"]) == (2, 1, 1)


def test_imds_v2_only(fake_aws):
    fake_aws.add_job(ARN)
    base = fake_aws.url + "/latest/meta-data/iam/security-credentials/"
    assert h.http_request("GET", base)[0] == 401  # IMDSv1
    assert h.http_request("PUT", fake_aws.url + "/latest/api/token")[0] == 400
    status, hdrs, token = h.http_request(
        "PUT", fake_aws.url + "/latest/api/token",
        headers={"X-aws-ec2-metadata-token-ttl-seconds": "21600"})
    assert status == 200 and hdrs["x-aws-ec2-metadata-token-ttl-seconds"] == "21600"
    auth = {"X-aws-ec2-metadata-token": token.decode()}
    assert h.http_request("GET", base, headers={"X-aws-ec2-metadata-token": "bogus"})[0] == 401
    status, _, role = h.http_request("GET", base, headers=auth)
    assert (status, role) == (200, b"fake-instance-role")
    status, _, data = h.http_request("GET", base + role.decode(), headers=auth)
    creds = json.loads(data)
    assert creds["Code"] == "Success"
    fake_aws.personalize_client(creds["AccessKeyId"], creds["SecretAccessKey"],
                                creds["Token"]).describe_batch_inference_job(batchInferenceJobArn=ARN)
    imds = fake_aws.stats()["imds"]
    assert imds["v1_rejected"] == 1 and imds["bad_token"] == 1 and imds["credential_requests"] == 1


# --- redis fixture and harness helpers ----------------------------------------------------------


def test_redis_server_restart_keeps_port(redis_server):
    r = redis_server.client()
    r.set("k", "v")
    assert r.get("k") == b"v"
    port, pid = redis_server.port, redis_server.pid
    redis_server.stop()
    assert not h.port_open("127.0.0.1", port)
    redis_server.start()
    assert redis_server.port == port and redis_server.pid != pid
    assert redis_server.client().get("k") is None  # no persistence
    assert redis_server.url == "redis://127.0.0.1:%d" % port


def test_redis_with_password(redis_factory):
    import redis

    r = redis_factory(password="pw-123")
    assert r.url.startswith("redis://:pw-123@127.0.0.1:")
    assert r.client().ping()
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=r.port).ping()


def test_generated_protos_load_without_shadowing_grpc():
    import grpc

    pb, health = h.protos()
    req = pb.DescribeBatchInferenceJobRequest(batch_inference_job_arn=ARN)
    assert pb.DescribeBatchInferenceJobRequest.FromString(req.SerializeToString()) == req
    assert health.HealthCheckResponse.ServingStatus.Name(1) == "SERVING"
    assert hasattr(grpc, "insecure_channel")


def test_secrets_never_logged_catches_a_leak(tmp_path):
    class FakeGateway:
        def __init__(self, lines):
            self._lines = lines

        def logs(self):
            return self._lines

    secret = h.TEST_SECRET_KEY
    h.secrets_never_logged(FakeGateway(['{"msg":"ok"}']), [secret, None])
    with pytest.raises(AssertionError) as ei:
        h.secrets_never_logged(FakeGateway(['{"k":"' + secret[:20] + '"}']), [secret])
    assert secret not in str(ei.value)
