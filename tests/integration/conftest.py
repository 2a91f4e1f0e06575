"""pytest fixtures for the integration tests (the helpers live in pgw_harness.py).

fake_aws        a running AWS fake (Personalize + STS + container credentials + IMDS)
redis_server    a running redis-server on a free loopback port (stop/start/restart keep it)
redis_factory   make_redis(password=None) for more (or password-protected) servers
gateway         start_gateway(extra_args=[], env={}, wait=True, fake=<fake_aws>,
                preexec_fn=None, stdout_path=None) -> Gateway
gateway_reports (autouse) fails a test whose gateways left a sanitizer or valgrind report
"""

import os

import pytest

import pgw_harness as h


@pytest.fixture
def fake_aws(tmp_path):
    fake = h.FakeAws(str(tmp_path / "fake_aws"))
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def redis_factory(tmp_path):
    started = []

    def make_redis(password=None):
        r = h.RedisServer(str(tmp_path / ("redis%d" % len(started))), password=password)
        started.append(r)
        return r

    try:
        yield make_redis
    finally:
        for r in started:
            r.stop()


@pytest.fixture
def redis_server(redis_factory):
    return redis_factory()


@pytest.fixture
def gateway_binary():
    b = h.gateway_binary()
    if b is None:
        pytest.skip("PGW_BINARY is not set or not executable (run through ctest)")
    return b


@pytest.fixture(autouse=True)
def gateway_reports():
    """After every test, every gateway it started (through the fixture or h.Gateway directly)
    is stopped (SIGTERM, then SIGKILL) and its reports read: with PGW_SANITIZE=ON a sanitizer
    report in its stderr fails the test; under $PGW_WRAPPER (valgrind, scripts/test-valgrind)
    an error or a definite/indirect leak in the wrapper's log does, showing that log.

    Autouse and requested before any other fixture, so it tears down last: after the gateway
    fixture, and after a test's own fake or Redis is gone (the gateway's exit is what counts)."""
    first = len(h.STARTED)
    yield
    findings = []
    sanitize = os.environ.get("PGW_SANITIZE", "").upper() in ("ON", "1", "TRUE", "YES")
    for gw in h.STARTED[first:]:
        gw.stop()
        found = gw.wrapper_findings()
        if found:
            findings.append("gateway pid %d under %s: %s\n%s" % (
                gw.pid, h.wrapper_command()[0], found, "\n".join(gw.wrapper_log()[-150:])))
        if sanitize and gw.sanitizer_findings():
            findings.append("gateway pid %d:\n%s" % (gw.pid, "\n".join(gw.stderr_lines()[-80:])))
    del h.STARTED[first:]
    if findings:
        pytest.fail("sanitizer or valgrind reports from the gateway:\n" + "\n\n".join(findings))


@pytest.fixture
def gateway(request, tmp_path, fake_aws, gateway_binary):
    """Factory: start_gateway(extra_args=(), env=None, wait=True, fake=fake_aws, timeout=30,
    **popen) where popen is passed to h.Gateway (preexec_fn, stdout_path, stdout_append).

    Every gateway started is stopped at teardown (SIGTERM, then SIGKILL); gateway_reports
    then checks what it left behind."""
    started = []

    def start_gateway(extra_args=(), env=None, wait=True, fake=fake_aws, timeout=30.0,
                      **popen):
        # The ports are picked free before the gateway binds them; another socket may take one
        # in between. The gateway then exits with status 2 at once: start it again on new ports.
        for attempt in range(3):
            home = tmp_path / ("home%d" % len(started))
            home.mkdir(exist_ok=True)
            gw_env = h.gateway_env(fake, str(home), env)
            gw = h.Gateway(gateway_binary, str(tmp_path / "gateway"), list(extra_args), gw_env,
                           wait=False, **popen)
            started.append(gw)
            if not wait:
                return gw
            try:
                gw.wait_ready(timeout)
                return gw
            except h.GatewayExited as e:
                if e.code != 2 or "cannot listen" not in str(e) or attempt == 2:
                    raise

    yield start_gateway

    for gw in started:
        gw.stop()
