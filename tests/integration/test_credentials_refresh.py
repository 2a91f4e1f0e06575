"""Issue 4: temporary credentials refreshed before they expire, under load, across failures.

The fake issues short-lived credentials (ttl_s of 30-45 s); the gateway refreshes at half
their lifetime when that comes before "expiry - refresh window" (see credentials_cached.h),
so refreshes happen within these tests. The fake verifies every Personalize signature and
records expired or unknown credentials as signature failures: zero failures means no request
ever carried expired credentials."""

import os
import secrets
import threading
import time

import grpc
import pytest

import pgw_harness as h

ROLE = "arn:aws:iam::123456789012:role/pgw-gateway"
NO_ENV_KEYS = {"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None,
               "AWS_SESSION_TOKEN": None, "AWS_REGION": "us-east-1"}


def arn_n(i):
    return "arn:aws:personalize:us-east-1:123456789012:batch-inference-job/refresh-%d" % i


def write(path, text):
    # Like the kubelet: write a new file, then rename it over the old one.
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path



def call(gw, arn, channel=None, timeout=10):
    return h.describe(gw.grpc_target, arn, timeout=timeout, channel=channel,
                      metadata=(("cache-control", "no-cache"),))


def all_secrets(fake, configured=()):
    out = [s for s in configured if s]
    for c in fake.issued_credentials():
        out += [c["secret_key"], c["session_token"]]
    return out


def web_identity_env(fake, token_file):
    return dict(NO_ENV_KEYS, AWS_WEB_IDENTITY_TOKEN_FILE=token_file, AWS_ROLE_ARN=ROLE,
                AWS_ENDPOINT_URL_STS=fake.url)


def test_token_file_rotated_between_refreshes(gateway, fake_aws, tmp_path):
    fake_aws.add_job(arn_n(0))
    fake_aws.set_credentials([], replace=True)
    t1, t2 = "tok1." + secrets.token_urlsafe(40), "tok2." + secrets.token_urlsafe(40)
    token_file = write(str(tmp_path / "token"), t1)
    fake_aws.configure_sts(ttl_s=30, expected_web_identity_token=t1)
    gw = gateway(env=web_identity_env(fake_aws, token_file))
    gw.wait_readyz()
    call(gw, arn_n(0))
    # /metrics names the source and the expiry of the credentials in use.
    status, _, body = gw.http_get("/metrics")
    first = fake_aws.issued_credentials()[0]
    assert status == 200
    line = [l for l in body.decode().splitlines()
            if l.startswith("pgw_credentials_expiry_timestamp_seconds")]
    assert line and 'source="web_identity"' in line[0], line
    assert abs(float(line[0].split()[-1]) - first["expires_at"]) < 2

    write(token_file, t2)  # the kubelet rotates the token; STS now only takes the new one
    fake_aws.configure_sts(expected_web_identity_token=t2)
    h.wait_until(lambda: t2 in fake_aws.stats()["sts"]["web_identity_tokens"], timeout=30,
                 what="a refresh with the rotated token")
    h.wait_until(lambda: len(fake_aws.issued_credentials()) >= 2, timeout=5, what="new creds")
    tokens = fake_aws.stats()["sts"]["web_identity_tokens"]
    assert tokens[0] == t1 and t2 in tokens and set(tokens) == {t1, t2}
    fake_aws.reset_stats()
    call(gw, arn_n(0))
    second = fake_aws.issued_credentials()[-1]["access_key"]
    assert set(fake_aws.stats()["personalize"]["per_access_key"]) == {second}
    fake_aws.assert_no_signature_failures()
    h.secrets_never_logged(gw, all_secrets(fake_aws, [t1, t2]))


def test_no_call_fails_while_credentials_expire_under_load(gateway, fake_aws):
    """Container credentials living 30 s, 8 clients calling non-stop for 24 s: the
    credentials are replaced (at least once) mid-load, no call fails, and the fake never sees
    an expired or unknown key."""
    n_arns = 16
    for i in range(n_arns):
        fake_aws.add_job(arn_n(i))
    fake_aws.set_credentials([], replace=True)
    fake_aws.configure_container(ttl_s=30)
    fake_aws.set_latency(30)  # calls overlap the switch to new credentials
    gw = gateway(env=dict(NO_ENV_KEYS,
                          AWS_CONTAINER_CREDENTIALS_FULL_URI=fake_aws.url + "/v1/credentials"))
    gw.wait_readyz()
    errors, done = [], [0]
    lock = threading.Lock()
    stop_at = time.monotonic() + 24

    def client(k):
        with h.grpc_channel(gw.grpc_target) as ch:
            i = k
            while time.monotonic() < stop_at:
                try:
                    call(gw, arn_n(i % n_arns), channel=ch)
                    with lock:
                        done[0] += 1
                except grpc.RpcError as e:
                    with lock:
                        errors.append((e.code(), e.details()))
                i += 1

    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [], errors[:5]
    issued = fake_aws.issued_credentials()
    stats = fake_aws.stats()
    assert len(issued) >= 2, issued
    assert stats["container"]["requests"] == len(issued)  # one fetch per refresh, not per call
    used = set(stats["personalize"]["per_access_key"])
    assert len(used) >= 2 and used <= {c["access_key"] for c in issued}
    assert stats["signature_failure_count"] == 0, stats["signature_failures"][:5]
    assert done[0] > 100
    h.secrets_never_logged(gw, all_secrets(fake_aws))


def test_failed_refresh_keeps_the_last_good_credentials(gateway, fake_aws, tmp_path):
    fake_aws.add_job(arn_n(0))
    fake_aws.set_credentials([], replace=True)
    token = secrets.token_urlsafe(40)
    token_file = write(str(tmp_path / "token"), token)
    fake_aws.configure_sts(ttl_s=44)
    gw = gateway(env=web_identity_env(fake_aws, token_file))
    gw.wait_readyz()
    call(gw, arn_n(0))
    # The next two STS calls (the refresh at ~22 s and its first retry) fail.
    fake_aws.fail(service="sts", count=2, status=503, type="ServiceUnavailable",
                  message="Injected STS outage")
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline and len(fake_aws.issued_credentials()) < 2:
        call(gw, arn_n(0))  # must never fail: the old credentials are still good
        assert gw.http_get("/readyz")[0] == 200
        time.sleep(0.2)
    assert len(fake_aws.issued_credentials()) == 2
    call(gw, arn_n(0))
    failures = [r for r in gw.log_records() if r.get("msg") == "AWS credentials fetch failed"]
    assert len(failures) == 2 and all(r["still_valid"] for r in failures), failures
    assert "ServiceUnavailable" in failures[0]["error"]
    fake_aws.assert_no_signature_failures()
    h.secrets_never_logged(gw, all_secrets(fake_aws, [token]))


def test_source_that_fails_at_start_then_recovers(gateway, fake_aws):
    fake_aws.add_job(arn_n(0))
    fake_aws.set_credentials([], replace=True)
    token = "ecs-" + secrets.token_urlsafe(30)
    fake_aws.configure_container(token=token)
    fake_aws.fail(service="container", count=3, status=500, message="agent not ready")
    gw = gateway(env=dict(NO_ENV_KEYS,
                          AWS_CONTAINER_CREDENTIALS_FULL_URI=fake_aws.url + "/v1/credentials",
                          AWS_CONTAINER_AUTHORIZATION_TOKEN=token))
    gw.wait_for_log(lambda r: r.get("msg") == "AWS credentials fetch failed")
    status, _, body = gw.http_get("/readyz")
    assert status == 503 and b"credentials" in body
    gw.wait_readyz(timeout=20)  # retried with backoff until the endpoint answers
    call(gw, arn_n(0))
    fails = [r for r in gw.log_records() if r.get("msg") == "AWS credentials fetch failed"]
    assert len(fails) >= 3 and all("HTTP 500" in r["error"] for r in fails)
    # Backoff: the gaps between attempts grow.
    assert fake_aws.stats()["container"]["requests"] <= 6
    h.secrets_never_logged(gw, all_secrets(fake_aws, [token]))


def test_expired_token_answer_triggers_one_refresh_for_all_callers(gateway, fake_aws, tmp_path):
    """AWS rejects the current credentials as expired (revoked early): every call in flight
    retries once with fresh credentials, and the burst costs one or two STS calls, not one
    per call."""
    n = 20
    for i in range(n):
        fake_aws.add_job(arn_n(i))
    fake_aws.set_credentials([], replace=True)
    token_file = write(str(tmp_path / "token"), secrets.token_urlsafe(40))
    gw = gateway(env=web_identity_env(fake_aws, token_file))
    gw.wait_readyz()
    call(gw, arn_n(0))
    first = fake_aws.issued_credentials()[0]["access_key"]
    fake_aws.expire_credentials(first)
    sts_before = fake_aws.stats()["sts"]["AssumeRoleWithWebIdentity"]
    errors = []
    barrier = threading.Barrier(n)

    def client(i):
        barrier.wait()
        try:
            call(gw, arn_n(i))
        except grpc.RpcError as e:
            errors.append((e.code(), e.details()))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [], errors[:3]
    stats = fake_aws.stats()
    # Calls rejected while the refresh runs join it; only a call whose rejection arrives after
    # the new credentials may start one more (the interface does not say which were rejected).
    # One refresh for the whole burst: invalidate names the rejected credentials.
    assert stats["sts"]["AssumeRoleWithWebIdentity"] == sts_before + 1
    # The only rejected requests are the ones signed with the revoked key.
    assert {f["code"] for f in stats["signature_failures"]} <= {"ExpiredTokenException"}
    assert {f["access_key"] for f in stats["signature_failures"]} <= {first}
    h.secrets_never_logged(gw, all_secrets(fake_aws))


def test_credentials_lapse_without_replacement_makes_the_gateway_unready(gateway, fake_aws):
    """The source goes away for good: the gateway keeps the credentials while they are
    valid, then drops them (never signs with expired ones) and turns unready."""
    fake_aws.add_job(arn_n(0))
    fake_aws.set_credentials([], replace=True)
    fake_aws.configure_container(ttl_s=20)
    gw = gateway(env=dict(NO_ENV_KEYS,
                          AWS_CONTAINER_CREDENTIALS_FULL_URI=fake_aws.url + "/v1/credentials"))
    gw.wait_readyz()
    call(gw, arn_n(0))
    fake_aws.fail(service="container", count=1000, status=500)
    gw.wait_for_log(lambda r: r.get("msg") == "AWS credentials expired without a replacement",
                    timeout=20)
    assert gw.http_get("/readyz")[0] == 503
    with pytest.raises(grpc.RpcError) as e:
        call(gw, arn_n(0))
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    fake_aws.assert_no_signature_failures()
    h.secrets_never_logged(gw, all_secrets(fake_aws))
