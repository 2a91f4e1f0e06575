"""Issue 9: the Redis tier over TLS (rediss://) and with ACL users, end to end through the
gateway binary, against a real redis-server with --tls-port and certificates made by openssl
at test time (pgw_tls.make_pki).

Each Redis server also listens on a plain loopback port, used only by the test itself to look
at what the gateway wrote. With --l1-max-entries 0 every answer after the first comes from
Redis or from AWS, so "x-cache: hit" proves a Redis hit and the fake's call count proves a
fall-through. A TLS or AUTH problem must mean: Redis not used, every call still answered by
AWS, the failure counted in /metrics and logged, and no password anywhere in the output."""

import os
import secrets
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

import pgw_harness as h
import pgw_tls

ARN = "arn:aws:personalize:us-east-1:123456789012:batch-inference-job/tls-%d"
KEY = "pgw:v1:bij:"
# The minimum ACL the gateway needs (README, "Running a fleet").
# A gateway keeps two connections to Redis: commands, and the fleet's pub/sub subscriber.
CONNECTIONS = 2
MIN_ACL = ["~pgw:*", "&pgw:*", "+get", "+set", "+del", "+pttl", "+pexpire", "+publish",
           "+subscribe", "+unsubscribe", "+ping", "+select"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("pki"))
    pgw_tls.make_pki(d)
    # A certificate from the trusted CA, but for another name.
    pgw_tls._leaf(d, "otherhost", "ca", "other.example",
                  ["subjectAltName=DNS:other.example", "extendedKeyUsage=serverAuth"])
    return d


@pytest.fixture
def tls_redis(tmp_path, pki):
    """Factory: make(cert="server", auth_clients=False) -> RedisServer with .tls_port."""
    started = []

    def make(cert="server", auth_clients=False):
        r = h.RedisServer(str(tmp_path / ("tls-redis%d" % len(started))), tls={
            "cert": os.path.join(pki, cert + ".pem"), "key": os.path.join(pki, cert + ".key"),
            "ca": os.path.join(pki, "ca.pem"), "auth_clients": auth_clients})
        started.append(r)
        return r

    try:
        yield make
    finally:
        for r in started:
            r.stop()


def scrape(gw):
    """({(name, frozenset(labels)): value}, raw text) of GET /metrics."""
    status, _, body = gw.http_get("/metrics")
    assert status == 200
    samples = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples, body.decode()


def metric(gw, name, **labels):
    return scrape(gw)[0].get((name, frozenset(labels.items())), 0.0)


def redis_hits(gw):
    return metric(gw, "pgw_cache_requests_total", tier="redis", result="hit")


def wait_metric(gw, name, at_least, timeout=10):
    return h.wait_until(lambda: metric(gw, name) >= at_least, timeout=timeout,
                        what="%s >= %s" % (name, at_least))


def upstream_calls(fake, arn):
    return fake.stats()["personalize"]["per_arn"].get(arn, 0)


def cache_header(gw, arn):
    resp, initial, _ = h.describe(gw.grpc_target, arn)
    assert resp.batch_inference_job.batch_inference_job_arn == arn
    return dict(initial)["x-cache"]


def tls_flags(pki, url, *extra):
    return ["--redis-url", url, "--redis-ca-file", os.path.join(pki, "ca.pem"),
            "--l1-max-entries", "0", "--redis-timeout-ms", "500"] + list(extra)


def failures_logged(gw, kind):
    return [r for r in gw.log_records()
            if r.get("msg") == "redis connection attempt failed" and r.get("kind") == kind]


def assert_logged_once_per_attempt(gw, kind, metric_name):
    """Each failed attempt is one log line and one count: the log count lies between two
    scrapes taken around it."""
    before = metric(gw, metric_name)
    logged = len(failures_logged(gw, kind))
    after = metric(gw, metric_name)
    assert before <= logged <= after, (before, logged, after)


def acl_user(r, user, password, rules=MIN_ACL):
    r.client().execute_command("ACL", "SETUSER", user, "reset", "on", ">" + password, *rules)


def test_end_to_end_through_tls_and_a_second_gateway_hits(gateway, fake_aws, tls_redis, pki):
    r = tls_redis()
    arn = ARN % 1
    fake_aws.add_job(arn, status="ACTIVE")
    url = "rediss://127.0.0.1:%d" % r.tls_port
    gw1 = gateway(extra_args=tls_flags(pki, url))
    wait_metric(gw1, "pgw_redis_connections_total", CONNECTIONS)
    assert cache_header(gw1, arn) == "miss"
    # Written through TLS: the value is in that Redis, and our connections are on its TLS port.
    admin = r.client()
    h.wait_until(lambda: admin.exists(KEY + arn), timeout=5, what="key in redis")
    clients = admin.execute_command("CLIENT", "LIST", "TYPE", "normal").decode()
    assert "laddr=127.0.0.1:%d" % r.tls_port in clients
    # A second gateway (by host name this time: SNI and the DNS SAN) answers from Redis.
    gw2 = gateway(extra_args=tls_flags(pki, "rediss://localhost:%d" % r.tls_port))
    wait_metric(gw2, "pgw_redis_connections_total", CONNECTIONS)
    for _ in range(3):
        assert cache_header(gw2, arn) == "hit"
    assert redis_hits(gw2) == 3
    assert upstream_calls(fake_aws, arn) == 1
    for gw in (gw1, gw2):
        assert metric(gw, "pgw_redis_tls_failures_total") == 0
        assert metric(gw, "pgw_redis_auth_failures_total") == 0
    assert any(rec.get("msg") == "redis connected" and "TLS" in rec.get("detail", "")
               for rec in gw2.log_records())


@pytest.mark.parametrize("case", ["untrusted_ca", "cert_for_other_name_by_ip",
                                  "cert_for_other_name_by_host", "missing_client_cert"])
def test_tls_failure_means_redis_unused_and_calls_succeed(gateway, fake_aws, tls_redis, pki,
                                                          case):
    ca = os.path.join(pki, "ca.pem")
    if case == "untrusted_ca":
        r = tls_redis()
        url, ca = "rediss://127.0.0.1:%d" % r.tls_port, os.path.join(pki, "rogue-ca.pem")
        reason = "certificate verify failed"
    elif case == "cert_for_other_name_by_ip":
        r = tls_redis(cert="otherhost")
        url, reason = "rediss://127.0.0.1:%d" % r.tls_port, "IP address mismatch"
    elif case == "cert_for_other_name_by_host":
        r = tls_redis(cert="otherhost")
        url, reason = "rediss://localhost:%d" % r.tls_port, "hostname mismatch"
    else:
        r = tls_redis(auth_clients=True)
        url, reason = "rediss://localhost:%d" % r.tls_port, "TLS"
    arn = ARN % (10 + len(case))
    fake_aws.add_job(arn, status="ACTIVE")
    flags = ["--redis-url", url, "--redis-ca-file", ca, "--l1-max-entries", "0"]
    gw = gateway(extra_args=flags)
    wait_metric(gw, "pgw_redis_tls_failures_total", 2)  # it keeps retrying, with backoff
    for _ in range(3):
        assert cache_header(gw, arn) == "miss"  # answered by AWS, every time
    assert upstream_calls(fake_aws, arn) == 3
    assert not r.client().exists(KEY + arn)
    assert redis_hits(gw) == 0
    assert metric(gw, "pgw_redis_connections_total") == 0
    assert metric(gw, "pgw_redis_breaker_state") != 0  # a TLS failure opens the breaker
    logged = failures_logged(gw, "tls_failed")
    assert logged and all(reason in rec["error"] for rec in logged), logged[:2]
    assert_logged_once_per_attempt(gw, "tls_failed", "pgw_redis_tls_failures_total")


def test_client_certificate_accepted(gateway, fake_aws, tls_redis, pki):
    r = tls_redis(auth_clients=True)
    arn = ARN % 30
    fake_aws.add_job(arn, status="ACTIVE")
    gw = gateway(extra_args=tls_flags(
        pki, "rediss://localhost:%d" % r.tls_port, "--redis-cert",
        os.path.join(pki, "allowed.pem"), "--redis-key", os.path.join(pki, "allowed.key")))
    wait_metric(gw, "pgw_redis_connections_total", CONNECTIONS)
    assert cache_header(gw, arn) == "miss"
    h.wait_until(lambda: r.client().exists(KEY + arn), timeout=5, what="key in redis")
    assert cache_header(gw, arn) == "hit"
    assert upstream_calls(fake_aws, arn) == 1
    assert metric(gw, "pgw_redis_tls_failures_total") == 0


def test_acl_user_with_the_minimum_acl(gateway, fake_aws, tls_redis, pki):
    r = tls_redis()
    password = "acl-" + secrets.token_urlsafe(18)
    acl_user(r, "pgw-user", password)
    arn = ARN % 40
    fake_aws.add_job(arn, status="ACTIVE")
    # The URL carries the password: through the environment, never argv.
    env = {"PGW_REDIS_URL": "rediss://pgw-user:%s@127.0.0.1:%d/0" % (password, r.tls_port)}
    ca = ["--redis-ca-file", os.path.join(pki, "ca.pem"), "--l1-max-entries", "0"]
    gw1 = gateway(extra_args=ca, env=env)
    wait_metric(gw1, "pgw_redis_connections_total", CONNECTIONS)
    assert cache_header(gw1, arn) == "miss"
    h.wait_until(lambda: r.client().exists(KEY + arn), timeout=5, what="key in redis")
    gw2 = gateway(extra_args=ca, env=env)
    wait_metric(gw2, "pgw_redis_connections_total", CONNECTIONS)
    assert cache_header(gw2, arn) == "hit"
    assert upstream_calls(fake_aws, arn) == 1
    # The gateway's connections really are that user's.
    clients = r.client().execute_command("CLIENT", "LIST", "TYPE", "normal").decode()
    assert clients.count("user=pgw-user") >= 2
    for gw in (gw1, gw2):
        assert metric(gw, "pgw_redis_auth_failures_total") == 0
        assert metric(gw, "pgw_redis_errors_total", kind="error") == 0
        assert password not in scrape(gw)[1]
        h.secrets_never_logged(gw, [password])


def test_wrong_password_calls_succeed_failures_counted_secret_never_shown(gateway, fake_aws,
                                                                         tls_redis, pki):
    r = tls_redis()
    acl_user(r, "pgw-user", "right-" + secrets.token_urlsafe(12))
    wrong = "wrong-" + secrets.token_urlsafe(18)
    arn = ARN % 50
    fake_aws.add_job(arn, status="ACTIVE")
    env = {"PGW_REDIS_URL": "rediss://pgw-user:%s@127.0.0.1:%d" % (wrong, r.tls_port)}
    gw = gateway(extra_args=["--redis-ca-file", os.path.join(pki, "ca.pem"),
                             "--l1-max-entries", "0"], env=env)
    wait_metric(gw, "pgw_redis_auth_failures_total", 2)
    for _ in range(3):
        assert cache_header(gw, arn) == "miss"
    assert upstream_calls(fake_aws, arn) == 3
    assert not r.client().exists(KEY + arn)
    assert metric(gw, "pgw_redis_tls_failures_total") == 0  # TLS itself was fine
    logged = failures_logged(gw, "auth_failed")
    assert logged and all("WRONGPASS" in rec["error"] for rec in logged)
    assert_logged_once_per_attempt(gw, "auth_failed", "pgw_redis_auth_failures_total")
    assert wrong not in scrape(gw)[1]
    h.secrets_never_logged(gw, [wrong])


def test_password_file_is_reread_at_reconnect(gateway, fake_aws, tls_redis, pki, tmp_path):
    r = tls_redis()
    pw1 = "first-" + secrets.token_urlsafe(18)
    pw2 = "second-" + secrets.token_urlsafe(18)
    acl_user(r, "pgw-user", pw1)
    pwfile = tmp_path / "redis-password"  # as a Kubernetes Secret is mounted: with a newline
    pwfile.write_text(pw1 + "\n")
    gw = gateway(extra_args=tls_flags(pki, "rediss://pgw-user@localhost:%d" % r.tls_port,
                                      "--redis-password-file", str(pwfile)))
    wait_metric(gw, "pgw_redis_connections_total", CONNECTIONS)
    a1, a2 = ARN % 60, ARN % 61
    fake_aws.add_job(a1, status="ACTIVE")
    fake_aws.add_job(a2, status="ACTIVE")
    assert cache_header(gw, a1) == "miss"
    h.wait_until(lambda: r.client().exists(KEY + a1), timeout=5, what="key in redis")
    assert cache_header(gw, a1) == "hit"

    # Rotate the Secret, then drop the gateway's connection: it comes back with the new one.
    admin = r.client()
    admin.execute_command("ACL", "SETUSER", "pgw-user", "resetpass", ">" + pw2)
    pwfile.write_text(pw2 + "\n")
    assert admin.execute_command("CLIENT", "KILL", "USER", "pgw-user") >= 1
    wait_metric(gw, "pgw_redis_connections_total", 2 * CONNECTIONS)
    assert metric(gw, "pgw_redis_auth_failures_total") == 0

    def redis_answers():
        before = redis_hits(gw)
        header = cache_header(gw, a1)
        return header == "hit" and redis_hits(gw) == before + 1
    # The first GETs after the drop may meet the breaker's cool-down; bounded.
    h.wait_until(redis_answers, timeout=10, interval=0.2, what="redis hits after the rotation")
    assert cache_header(gw, a2) == "miss"
    h.wait_until(lambda: r.client().exists(KEY + a2), timeout=5, what="new key in redis")
    assert upstream_calls(fake_aws, a1) == 1
    assert upstream_calls(fake_aws, a2) == 1
    for pw in (pw1, pw2):
        assert pw not in scrape(gw)[1]
    h.secrets_never_logged(gw, [pw1, pw2])


def test_bad_tls_and_password_settings_are_startup_errors(gateway, pki, tmp_path):
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("this is not a certificate\n")
    ca = os.path.join(pki, "ca.pem")
    cert = os.path.join(pki, "allowed.pem")
    cases = [
        (["--redis-url", "rediss://127.0.0.1:1", "--redis-ca-file", "/nonexistent/ca.pem"],
         ["--redis-ca-file", "/nonexistent/ca.pem", "No such file"]),
        (["--redis-url", "rediss://127.0.0.1:1", "--redis-ca-file", str(not_pem)],
         ["--redis-ca-file"]),
        (["--redis-url", "rediss://127.0.0.1:1", "--redis-cert", cert], ["--redis-key"]),
        (["--redis-url", "rediss://127.0.0.1:1", "--redis-cert", cert, "--redis-key",
          os.path.join(pki, "other.key")], ["--redis-key"]),
        (["--redis-url", "redis://127.0.0.1:1", "--redis-ca-file", ca], ["rediss://"]),
        (["--redis-ca-file", ca], ["--redis-ca-file", "needs --redis-url"]),
        (["--redis-url", "rediss://pgw-user@127.0.0.1:1"], ["--redis-password-file"]),
        (["--redis-url", "rediss://127.0.0.1:1", "--redis-password-file", "/nonexistent/pw"],
         ["--redis-password-file"]),
        (["--redis-url", "redis+tls://127.0.0.1:1"], ["--redis-url"]),
    ]
    for args, needles in cases:
        gw = gateway(extra_args=args, wait=False)
        code = gw.proc.wait(timeout=20)
        err = "\n".join(gw.stderr_lines())
        assert code == 2, (args, code, err)
        for n in needles:
            assert n in err, (args, n, err)
