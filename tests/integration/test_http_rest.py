"""The REST JSON path with the curl CLI, the probes, and the HTTP server's limits.

Every abuse (oversized body, bad JSON, wrong content type, unknown path, wrong method, a slow
client, a client leaving mid-call) must get a clear answer or a clean cut-off, and the server
must keep serving afterwards.
"""

import json
import socket
import subprocess
import time
import urllib.parse

import pytest

import pgw_harness as h

ARN = "arn:aws:personalize:us-east-1:123456789012:batch-inference-job/http-rest"
TARGET = "AmazonPersonalize.DescribeBatchInferenceJob"
AMZ_JSON = "application/x-amz-json-1.1"



def rest_path(arn):
    return "/v1/batch-inference-jobs/" + urllib.parse.quote(arn, safe="")


def curl(url, *args):
    """Runs the curl CLI; returns (status, headers dict lowercased, body str)."""
    p = subprocess.run(["curl", "-sS", "-D", "-", "--max-time", "20", *args, url],
                       capture_output=True, timeout=30)
    assert p.returncode == 0, p.stderr
    # bytes, not text mode: text mode would fold the CRLFs that separate head and body
    head, _, body = p.stdout.decode("utf-8").partition("\r\n\r\n")
    lines = head.split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, body


def assert_serving(gw, arn=ARN):
    status, _, body = h.http_request("GET", gw.http_url + rest_path(arn))
    assert status == 200, body
    assert json.loads(body)["batchInferenceJob"]["batchInferenceJobArn"] == arn


def test_curl_gets_proto3_json(gateway, fake_aws):
    stored = fake_aws.add_job(ARN, fixture="job_full")["batchInferenceJob"]
    gw = gateway()
    status, headers, body = curl(gw.http_url + rest_path(ARN))
    assert status == 200, body
    assert headers["content-type"] == "application/json"
    assert headers["x-cache"] == "miss"
    job = json.loads(body)["batchInferenceJob"]
    assert job["batchInferenceJobArn"] == ARN
    assert job["status"] == stored["status"]
    assert job["numResults"] == stored["numResults"]
    assert job["jobInput"] == stored["jobInput"]
    # proto3 JSON: RFC 3339 timestamps and the enum by name
    assert job["creationDateTime"].endswith("Z") and "T" in job["creationDateTime"]
    assert job["batchInferenceJobMode"] == "BATCH_INFERENCE_JOB_MODE_" + stored["batchInferenceJobMode"]
    # Second call: from the cache. With no-cache: from upstream again.
    status, headers, _ = curl(gw.http_url + rest_path(ARN))
    assert status == 200 and headers["x-cache"] == "hit"
    assert fake_aws.stats()["personalize"]["requests"] == 1
    status, headers, _ = curl(gw.http_url + rest_path(ARN), "-H", "Cache-Control: no-cache")
    assert status == 200 and headers["x-cache"] == "miss"
    assert fake_aws.stats()["personalize"]["requests"] == 2
    fake_aws.assert_no_signature_failures()


def test_unencoded_slash_in_the_arn_also_works(gateway, fake_aws):
    fake_aws.add_job(ARN)
    gw = gateway()
    status, _, body = curl(gw.http_url + "/v1/batch-inference-jobs/" + ARN)
    assert status == 200, body
    assert json.loads(body)["batchInferenceJob"]["batchInferenceJobArn"] == ARN


def test_curl_not_found_and_malformed(gateway, fake_aws):
    gw = gateway()
    unknown = "arn:aws:personalize:us-east-1:123456789012:batch-inference-job/none"
    status, headers, body = curl(gw.http_url + rest_path(unknown))
    assert status == 404
    assert headers["content-type"] == "application/json"
    err = json.loads(body)
    assert err["code"] == "NOT_FOUND" and "ResourceNotFoundException" in err["message"]
    requests_before = fake_aws.stats()["total_requests"]
    bad = "arn:aws:personalize:us-east-1.evil.example:123456789012:batch-inference-job/x"
    status, _, body = curl(gw.http_url + rest_path(bad))
    assert status == 400
    assert json.loads(body)["code"] == "INVALID_ARGUMENT"
    status, _, body = curl(gw.http_url + "/v1/batch-inference-jobs/%00abc")
    assert status == 400 and json.loads(body)["code"] == "INVALID_ARGUMENT"
    assert fake_aws.stats()["total_requests"] == requests_before


def test_upstream_unavailable_is_503(gateway, fake_aws):
    fake_aws.add_job(ARN)
    fake_aws.fail(arn=ARN, status=503, type="ServiceUnavailable")
    gw = gateway()
    status, _, body = curl(gw.http_url + rest_path(ARN))
    assert status == 503
    assert json.loads(body)["code"] == "UNAVAILABLE"


def test_healthz_and_readyz(gateway, fake_aws):
    gw = gateway()
    h.wait_until(lambda: gw.http_get("/readyz")[0] == 200, timeout=10, what="ready")
    status, _, body = gw.http_get("/healthz")
    assert (status, body) == (200, b"ok\n")
    status, _, body = curl(gw.http_url + "/readyz")
    assert status == 200 and body == "ready\n"


def test_readyz_503_without_credentials(gateway, fake_aws):
    gw = gateway(env={"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None})
    # The port accepts before startup has finished ("not listening yet"); wait that out.
    h.wait_until(lambda: b"listening" not in gw.http_get("/readyz")[2], timeout=10,
                 what="startup finished")
    status, _, body = gw.http_get("/readyz")
    assert status == 503
    assert b"credentials" in body
    # alive all the same
    assert gw.http_get("/healthz")[0] == 200


def test_unknown_path_and_wrong_method(gateway, fake_aws):
    fake_aws.add_job(ARN)
    gw = gateway()
    status, headers, body = gw.http_get("/no/such/path")
    assert status == 404 and json.loads(body)["code"] == "NOT_FOUND"
    status, _, _ = gw.http_get("/v1/batch-inference-jobs/")
    assert status == 404
    status, headers, body = h.http_request("DELETE", gw.http_url + rest_path(ARN))
    assert status == 405 and headers["allow"] == "GET"
    status, headers, _ = gw.http_get("/")
    assert status == 405 and headers["allow"] == "POST"
    status, _, _ = h.http_request("POST", gw.http_url + "/metrics", body="x")
    assert status == 405
    assert_serving(gw)


def test_oversized_body_is_413(gateway, fake_aws):
    fake_aws.add_job(ARN)
    gw = gateway(extra_args=["--http-max-body-bytes", "4096"])
    body = json.dumps({"batchInferenceJobArn": ARN, "pad": "x" * 100000})
    status, _, _ = h.http_request("POST", gw.http_url + "/", body=body,
                                  headers={"X-Amz-Target": TARGET, "Content-Type": AMZ_JSON})
    assert status == 413
    # just under the limit is fine
    body = json.dumps({"batchInferenceJobArn": ARN, "pad": "x" * 3000})
    status, _, raw = h.http_request("POST", gw.http_url + "/", body=body,
                                    headers={"X-Amz-Target": TARGET, "Content-Type": AMZ_JSON})
    assert status == 200, raw
    assert_serving(gw)


def test_oversized_headers_are_rejected(gateway, fake_aws):
    fake_aws.add_job(ARN)
    gw = gateway(extra_args=["--http-max-header-bytes", "2048"])
    status, _, _ = gw.http_get(rest_path(ARN), headers={"X-Big": "y" * 8000})
    assert status in (400, 413, 431)
    assert_serving(gw)


@h.wrapper_timing_sensitive("the others must be served before a 3 s request timeout runs out")
def test_slow_client_is_cut_off_while_others_are_served(gateway, fake_aws):
    fake_aws.add_job(ARN)
    gw = gateway(extra_args=["--http-request-timeout-ms", "3000"])
    slow = socket.create_connection(("127.0.0.1", gw.http_port), timeout=10)
    try:
        slow.sendall(b"GET " + rest_path(ARN).encode() + b" HTTP/1.1\r\nHost: x\r\nX-Half: ")
        t0 = time.monotonic()
        # Meanwhile the server answers everyone else, while the slow request is still open.
        for _ in range(3):
            assert_serving(gw)
        slow.setblocking(False)
        with pytest.raises(BlockingIOError):  # neither answered nor closed yet
            slow.recv(1)
        slow.setblocking(True)
        data = slow.recv(65536)  # b"" when the server closes on us
        waited = time.monotonic() - t0
    finally:
        slow.close()
    assert data == b"" or data.startswith(b"HTTP/1.1 4"), data
    assert waited >= 2.5, waited  # cut off by the request timeout, not before it
    assert_serving(gw)


def test_client_leaving_mid_call_cancels_it(gateway, fake_aws):
    fake_aws.add_job(ARN)
    fake_aws.set_latency(1500, arn=ARN)
    gw = gateway()
    s = socket.create_connection(("127.0.0.1", gw.http_port), timeout=10)
    s.sendall(b"GET " + rest_path(ARN).encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    h.wait_until(lambda: fake_aws.stats()["personalize"]["requests"] >= 1, timeout=5,
                 what="upstream call started")
    s.close()

    def gauge():
        _, _, body = gw.http_get("/metrics")
        text = body.decode()
        inflight = [l for l in text.splitlines()
                    if l.startswith('pgw_in_flight_requests{frontend="http_rest"}')]
        cancelled = [l for l in text.splitlines() if l.startswith("pgw_requests_total{")
                     and 'frontend="http_rest"' in l and 'code="CANCELLED"' in l]
        return inflight == ['pgw_in_flight_requests{frontend="http_rest"} 0'] and cancelled

    # Well before the upstream answers (1.5 s), the call is gone from the in-flight gauge.
    t0 = time.monotonic()
    h.wait_until(gauge, timeout=5, what="cancelled call")
    assert time.monotonic() - t0 < 1.2
    fake_aws.set_latency(0, arn=ARN)
    time.sleep(1.6)  # the shared upstream fetch completes with nobody waiting: harmless
    assert_serving(gw)
    assert gw.running()


def test_keep_alive_serves_several_requests_on_one_connection(gateway, fake_aws):
    import http.client

    fake_aws.add_job(ARN)
    gw = gateway()
    conn = http.client.HTTPConnection("127.0.0.1", gw.http_port, timeout=10)
    try:
        for path in (rest_path(ARN), "/healthz", rest_path(ARN), "/metrics"):
            conn.request("GET", path)
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 200
        assert conn.sock is not None  # the same connection throughout
    finally:
        conn.close()


def test_sigterm_drains_http_calls_in_flight(gateway, fake_aws):
    import signal
    import threading

    fake_aws.add_job(ARN)
    fake_aws.set_latency(1000, arn=ARN)
    gw = gateway()
    results = []

    def call():
        results.append(h.http_request("GET", gw.http_url + rest_path(ARN), timeout=10)[0])

    t = threading.Thread(target=call)
    t.start()
    h.wait_until(lambda: fake_aws.stats()["personalize"]["requests"] >= 1, timeout=5,
                 what="call in flight")
    gw.signal(signal.SIGTERM)
    t.join(timeout=15)
    assert results == [200]
    assert gw.stop(timeout=15) == 0


def test_http_can_be_disabled(gateway_binary, tmp_path, fake_aws):
    env = h.gateway_env(fake_aws, str(tmp_path))
    gw = h.Gateway(gateway_binary, str(tmp_path / "gw"), ["--http-addr", ""], env)
    try:
        assert not h.port_open("127.0.0.1", gw.http_port)
        rec = gw.wait_for_log(lambda r: r.get("msg") == "personalize-gateway started")
        assert rec.get("http_addr") is None
    finally:
        assert gw.stop() == 0
    assert not gw.sanitizer_findings()
