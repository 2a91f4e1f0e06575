"""Helpers for the personalize-gateway integration tests.

Processes started here (the AWS fake, redis-server, the gateway) listen on loopback only,
are stopped by their own PID at teardown, and never have secrets put on their command
line. conftest.py turns these into pytest fixtures; tests may also use them directly.
"""

import contextlib
import http.client
import importlib.util
import json
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

PYTHON = "/usr/bin/python3"
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", ".."))
FAKE_SCRIPT = os.path.join(REPO, "tests", "fakes", "fake_personalize.py")

GRPC_METHOD = "/personalize_gateway.v1.PersonalizeGateway/DescribeBatchInferenceJob"
WATCH_METHOD = "/personalize_gateway.v1.PersonalizeGateway/WatchBatchInferenceJob"
HEALTH_METHOD = "/grpc.health.v1.Health/Check"

# Long-term test credentials. The secret is random per run so that a leak found by
# secrets_never_logged cannot be a coincidence with some fixed string.
TEST_ACCESS_KEY = "AKIAPGWFAKETEST00001"
TEST_SECRET_KEY = "pgwtest/" + secrets.token_urlsafe(24)

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer")


def free_port():
    """Returns a loopback TCP port that was free a moment ago (bind to 0, then release)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(host, port, timeout=0.2):
    """True if a TCP connection to host:port succeeds now."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def time_scale():
    """How many times slower than native the gateway runs: $PGW_TIME_SCALE, else 10 under
    $PGW_WRAPPER (valgrind's memcheck runs code 10-50 times slower and one thread at a time),
    else 1. Every wait_until timeout (readiness, "within N s" conditions) is multiplied by it:
    a bound that only says how long to wait before failing may stretch; a test's own gRPC
    deadlines and timing assertions do not, and such tests are not run under a wrapper."""
    v = os.environ.get("PGW_TIME_SCALE")
    if v:
        return float(v)
    return 10.0 if wrapper_command() else 1.0


def wait_until(predicate, timeout=10.0, interval=0.05, what="condition"):
    """Polls predicate() until truthy; returns its value or raises TimeoutError. The timeout
    is scaled by time_scale()."""
    timeout *= time_scale()
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


def _kill_pid(proc, timeout=10.0, sig=signal.SIGTERM):
    """Stops one process we started (by its own PID), escalating to SIGKILL; returns its exit code."""
    if proc.poll() is not None:
        return proc.returncode
    try:
        proc.send_signal(sig)
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(timeout=10)


def _read_lines(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


def http_request(method, url, body=None, headers=None, timeout=10.0):
    """One plain HTTP request; returns (status, headers dict with lowercase names, body bytes)."""
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
            headers = dict(headers or {})
            headers.setdefault("Content-Type", "application/json")
        path = u.path or "/"
        if u.query:
            path += "?" + u.query
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


# --- the AWS fake ----------------------------------------------------------------------------


class FakeAws:
    """A running tests/fakes/fake_personalize.py and a client for its /__control API."""

    def __init__(self, workdir, access_key=TEST_ACCESS_KEY, secret_key=TEST_SECRET_KEY,
                 session_token=None, fixture_dirs=(), verbose=False, tls=None):
        """tls: (cert.pem, key.pem) to serve HTTPS too, at .https_url (same state; the
        control API stays on .url)."""
        self.access_key = access_key
        self.secret_key = secret_key
        self.session_token = session_token
        self.workdir = workdir
        os.makedirs(workdir, exist_ok=True)
        port_file = os.path.join(workdir, "fake_aws.port")
        self.stdout_path = os.path.join(workdir, "fake_aws.stdout")
        self.stderr_path = os.path.join(workdir, "fake_aws.stderr")
        env = dict(os.environ)
        # Secrets go through the environment, never argv (visible in ps).
        env["FAKE_AWS_ACCESS_KEY_ID"] = access_key
        env["FAKE_AWS_SECRET_ACCESS_KEY"] = secret_key
        if session_token:
            env["FAKE_AWS_SESSION_TOKEN"] = session_token
        else:
            env.pop("FAKE_AWS_SESSION_TOKEN", None)
        cmd = [PYTHON, FAKE_SCRIPT, "--port", "0", "--port-file", port_file]
        for d in fixture_dirs:
            cmd += ["--fixtures", str(d)]
        if verbose:
            cmd.append("--verbose")
        tls_port_file = os.path.join(workdir, "fake_aws.tls_port")
        if tls:
            cmd += ["--tls-cert", tls[0], "--tls-key", tls[1], "--tls-port-file", tls_port_file]
        self.https_url = None
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            # Its own session, so its own scheduler autogroup: a thousand of its threads waking
            # at once (answers of a slow upstream) share one CPU share instead of starving the
            # gateway thread by thread. AWS runs on other machines; the fake must not stand in
            # for it by eating the gateway's CPU.
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        self.pid = self.proc.pid
        try:
            def ready(path):
                if self.proc.poll() is not None:
                    raise RuntimeError("fake AWS exited with %s:\n%s" % (
                        self.proc.returncode, "\n".join(_read_lines(self.stderr_path))))
                if not os.path.exists(path):
                    return None
                with open(path) as f:
                    text = f.read().strip()
                return int(text) if text else None

            self.port = wait_until(lambda: ready(port_file), timeout=20, what="fake AWS port file")
            self.url = "http://127.0.0.1:%d" % self.port
            if tls:
                tls_port = wait_until(lambda: ready(tls_port_file), timeout=20,
                                      what="fake AWS TLS port file")
                self.https_url = "https://127.0.0.1:%d" % tls_port
            wait_until(lambda: self._ping(), timeout=10, what="fake AWS /__control/ping")
        except BaseException:
            self.stop()
            raise

    def _ping(self):
        try:
            return self.control("GET", "ping").get("ok")
        except OSError:
            return False

    def stop(self):
        """Stops the fake (by PID); safe to call twice."""
        return _kill_pid(self.proc, timeout=5)

    def control(self, method, route, payload=None):
        """Calls /__control/<route>; returns the decoded JSON answer, raises on HTTP errors."""
        status, _, body = http_request(method, self.url + "/__control/" + route,
                                       body=payload if payload is not None else None)
        data = json.loads(body.decode() or "{}")
        if status != 200:
            raise RuntimeError("fake control %s %s failed: %s %s" % (method, route, status, data))
        return data

    # Convenience wrappers, one per control route.

    def reset(self):
        """Back to start: no jobs, no failures, no latency, initial credentials, zero stats."""
        return self.control("POST", "reset")

    def reset_stats(self):
        return self.control("POST", "reset_stats")

    def stats(self):
        """Counters and the last request (secrets redacted); see fake_personalize.State."""
        return self.control("GET", "stats")

    def add_job(self, arn, fixture="job_full", status=None, body=None, job=None,
                overrides=None, keep_arn=False):
        """Registers (or replaces) the answer for an ARN; returns the stored response body.

        fixture: a name in tests/fixtures or tests/fakes/fixtures (or an absolute path);
        body: a whole response body instead; job: just the inner batchInferenceJob object;
        status: overrides the job's status; overrides: {field: value or None to delete}."""
        p = {"arn": arn}
        if body is not None:
            p["body"] = body
        elif job is not None:
            p["job"] = job
        else:
            p["fixture"] = fixture
        if status is not None:
            p["status"] = status
        if overrides:
            p["overrides"] = overrides
        if keep_arn:
            p["keep_arn"] = True
        return self.control("POST", "jobs", p)["job"]

    def set_job_status(self, arn, status, last_updated=None):
        """Moves a registered job on: a new status and lastUpdatedDateTime (now by default,
        epoch seconds). Returns the stored response body."""
        p = {"arn": arn, "status": status}
        if last_updated is not None:
            p["last_updated"] = last_updated
        return self.control("POST", "jobs/status", p)["job"]

    def remove_job(self, arn):
        return self.control("POST", "jobs/delete", {"arn": arn})

    def set_credentials(self, creds, replace=True):
        """Sets the accepted credential sets: list of dicts with access_key, secret_key and
        optional session_token, expires_at (epoch s), expires_in_s, services (e.g. ["sts"])."""
        return self.control("POST", "credentials", {"credentials": list(creds), "replace": replace})

    def add_credentials(self, access_key, secret_key, session_token=None, expires_in_s=None,
                        services=None):
        c = {"access_key": access_key, "secret_key": secret_key}
        if session_token:
            c["session_token"] = session_token
        if expires_in_s is not None:
            c["expires_in_s"] = expires_in_s
        if services:
            c["services"] = services
        return self.set_credentials([c], replace=False)

    def expire_credentials(self, access_key):
        """Makes an accepted credential set expired now (ExpiredTokenException from then on)."""
        return self.control("POST", "credentials/expire", {"access_key": access_key})

    def remove_credentials(self, access_key):
        return self.control("POST", "credentials/remove", {"access_key": access_key})

    def set_latency(self, ms, arn=None, service="personalize"):
        """Delays answers by ms (0 clears): for one ARN, or for a whole service
        ("personalize", "sts", "container", "imds")."""
        p = {"ms": ms, "service": service}
        if arn:
            p["arn"] = arn
        return self.control("POST", "latency", p)

    def fail(self, count=None, arn=None, service="personalize", **spec):
        """Injects failures. Matches the next `count` requests (default 1), or with `arn`
        every request for that ARN (or `count` of them). spec keys: status, type, message
        (an AWS-shaped error), raw + content_type (a literal body), body (a JSON body,
        status 200 unless given), action="close"/"reset" (drop the connection) or
        "trickle" (a 200 answer sent one byte every trickle_ms, default 200), delay_ms,
        headers (extra response headers), omit_request_id."""
        p = dict(spec)
        p["service"] = service
        if count is not None:
            p["count"] = count
        if arn is not None:
            p["arn"] = arn
        return self.control("POST", "fail", p)

    def fail_next(self, n=1, status=500, type="InternalFailure", message="Injected failure", **spec):
        """The next n Personalize requests answer with an AWS error (default 500 InternalFailure)."""
        return self.fail(count=n, status=status, type=type, message=message, **spec)

    def close_connections(self, close=True):
        """With close, every Personalize answer says "Connection: close" (each request then
        needs a new connection)."""
        return self.control("POST", "connections", {"close": close})

    def clear_failures(self):
        return self.control("POST", "fail/clear")

    def set_clock(self, offset_s, skew_s=None):
        """Shifts the fake's clock (signature window, credential expiry) by offset_s."""
        p = {"offset_s": offset_s}
        if skew_s is not None:
            p["skew_s"] = skew_s
        return self.control("POST", "clock", p)

    def configure_sts(self, **cfg):
        """ttl_s, expected_web_identity_token, expected_role_arn, region (AssumeRole scope)."""
        return self.control("POST", "sts", cfg)

    def configure_container(self, **cfg):
        """path (default /v1/credentials), token (expected Authorization; None = any), ttl_s."""
        return self.control("POST", "container", cfg)

    def configure_imds(self, **cfg):
        """role, ttl_s, region, allow_v1 (default False: IMDSv1 requests get 401)."""
        return self.control("POST", "imds", cfg)

    def issued_credentials(self):
        """Every temporary credential set handed out, secrets included (for leak checks)."""
        return self.control("GET", "issued")["issued"]

    def signature_failures(self):
        return self.stats()["signature_failures"]

    def assert_no_signature_failures(self):
        s = self.stats()
        assert s["signature_failure_count"] == 0, s["signature_failures"][:5]

    def personalize_client(self, access_key=None, secret_key=None, session_token=None,
                           region="us-east-1", **kwargs):
        """A boto3 Personalize client pointed at the fake (the right credentials by default)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "personalize", endpoint_url=self.url, region_name=region,
            aws_access_key_id=access_key or self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            aws_session_token=session_token,
            config=kwargs.pop("config", Config(retries={"total_max_attempts": 1, "mode": "standard"})), **kwargs)


# --- redis ------------------------------------------------------------------------------------


class RedisServer:
    """A real redis-server on a loopback port, no persistence; stop()/start() keep the port.

    tls: {"cert": path, "key": path, "ca": path, "auth_clients": bool} also serves TLS on
    .tls_port (the plain .port stays, for the test's own checks)."""

    def __init__(self, workdir, password=None, port=None, tls=None):
        self.workdir = workdir
        os.makedirs(workdir, exist_ok=True)
        self.password = password
        self.port = port or free_port()
        self.tls = tls
        self.tls_port = None
        if tls:
            self.tls_port = free_port()
            while self.tls_port == self.port:
                self.tls_port = free_port()
        self.proc = None
        self.log_path = os.path.join(workdir, "redis-%d.log" % self.port)
        self.start()

    @property
    def url(self):
        auth = ":%s@" % urllib.parse.quote(self.password, safe="") if self.password else ""
        return "redis://%s127.0.0.1:%d" % (auth, self.port)

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def start(self, timeout=10.0):
        """Starts redis-server on self.port (again) and waits until it answers PING."""
        if self.proc is not None and self.proc.poll() is None:
            return
        cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
               "--save", "", "--appendonly", "no", "--dir", self.workdir,
               "--daemonize", "no", "--protected-mode", "yes"]
        if self.tls:
            cmd += ["--tls-port", str(self.tls_port), "--tls-cert-file", self.tls["cert"],
                    "--tls-key-file", self.tls["key"], "--tls-ca-cert-file", self.tls["ca"],
                    "--tls-auth-clients", "yes" if self.tls.get("auth_clients") else "no"]
        conf = None
        if self.password:
            # Through a config file on stdin, not argv, so the password is not in ps.
            conf = "requirepass %s\n" % self.password
            cmd.insert(1, "-")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=log,
                                         stdin=subprocess.PIPE if conf else subprocess.DEVNULL)
        if conf:
            self.proc.stdin.write(conf.encode())
            self.proc.stdin.close()

        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError("redis-server exited %s:\n%s" % (
                    self.proc.returncode, "\n".join(_read_lines(self.log_path)[-20:])))
            try:
                return self.client(socket_timeout=0.5).ping()
            except Exception:
                return False

        wait_until(ready, timeout=timeout, what="redis-server on port %d" % self.port)

    def stop(self, sig=signal.SIGTERM):
        """Stops redis (SIGKILL simulates a crash); returns its exit code or None if not running."""
        if self.proc is None:
            return None
        code = _kill_pid(self.proc, timeout=10, sig=sig)
        self.proc = None
        return code

    def restart(self):
        self.stop()
        self.start()

    def client(self, **kwargs):
        """A redis-py client (decode_responses=False)."""
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, **kwargs)


# --- generated protobuf messages ----------------------------------------------------------------

_PROTOS = {}
_PROTOS_LOCK = threading.Lock()


def _gen_dir():
    """Directory holding protoc --python_out output: $PGW_PY_GEN_DIR, else generated now."""
    d = os.environ.get("PGW_PY_GEN_DIR")
    if d and os.path.isfile(os.path.join(d, "personalize_gateway", "v1", "personalize_gateway_pb2.py")):
        return d
    d = os.path.join(tempfile.gettempdir(), "pgw-py-gen-%d" % os.getuid())
    os.makedirs(d, exist_ok=True)
    subprocess.run(
        ["protoc", "-I", os.path.join(REPO, "proto"), "-I", "/usr/include", "--python_out=" + d,
         "personalize_gateway/v1/personalize_gateway.proto", "grpc/health/v1/health.proto"],
        check=True, cwd=os.path.join(REPO, "proto"))
    return d


def _load_module(name, path):
    # By file path: the generated tree has a top-level "grpc/" folder without __init__.py
    # that must never shadow (or be shadowed by) the real grpc package.
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        del sys.modules[name]
        raise
    return mod


def protos():
    """Returns (personalize_gateway_pb2, health_pb2) message modules. Thread-safe: load
    threads ask for them at once, and a module half executed must not be handed out."""
    with _PROTOS_LOCK:
        return _protos_locked()


def _protos_locked():
    if not _PROTOS:
        d = _gen_dir()
        _PROTOS["pgw"] = _load_module(
            "pgw_gen_personalize_gateway_pb2",
            os.path.join(d, "personalize_gateway", "v1", "personalize_gateway_pb2.py"))
        _PROTOS["health"] = _load_module(
            "pgw_gen_health_pb2", os.path.join(d, "grpc", "health", "v1", "health_pb2.py"))
    return _PROTOS["pgw"], _PROTOS["health"]


def describe_stub(channel):
    """A DescribeBatchInferenceJob unary stub on `channel` (call it, or .future(...) for many
    concurrent calls); returns (stub, request_class)."""
    pb, _ = protos()
    stub = channel.unary_unary(GRPC_METHOD,
                               request_serializer=pb.DescribeBatchInferenceJobRequest.SerializeToString,
                               response_deserializer=pb.DescribeBatchInferenceJobResponse.FromString)
    return stub, pb.DescribeBatchInferenceJobRequest


def describe(target, arn, timeout=5, metadata=(), channel=None):
    """Calls DescribeBatchInferenceJob with real grpcio.

    Returns (response, initial_metadata, trailing_metadata); raises grpc.RpcError
    (.code(), .details(), .initial_metadata(), .trailing_metadata()) on failure.
    Pass `channel` to reuse one (e.g. many concurrent calls)."""
    import grpc

    own = channel is None
    ch = grpc.insecure_channel(target) if own else channel
    try:
        stub, request = describe_stub(ch)
        req = request(batch_inference_job_arn=arn)
        resp, call = stub.with_call(req, timeout=timeout, metadata=tuple(metadata))
        return resp, tuple(call.initial_metadata() or ()), tuple(call.trailing_metadata() or ())
    finally:
        if own:
            ch.close()


def watch_stub(channel):
    """A WatchBatchInferenceJob server-streaming stub on `channel`; returns (stub, request_class)."""
    pb, _ = protos()
    stub = channel.unary_stream(WATCH_METHOD,
                                request_serializer=pb.WatchBatchInferenceJobRequest.SerializeToString,
                                response_deserializer=pb.WatchBatchInferenceJobResponse.FromString)
    return stub, pb.WatchBatchInferenceJobRequest


class WatchStream:
    """One WatchBatchInferenceJob stream, read by a thread of its own (real grpcio).

    .jobs: [(monotonic time received, BatchInferenceJob)]; once it ended, .code (grpc.StatusCode)
    and .details; .done is set then."""

    def __init__(self, channel, arn, timeout=None, metadata=()):
        import threading

        stub, request = watch_stub(channel)
        self.jobs = []
        self.code = None
        self.details = None
        self.done = threading.Event()
        self.call = stub(request(batch_inference_job_arn=arn), timeout=timeout,
                         metadata=tuple(metadata))
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        import grpc

        try:
            for msg in self.call:
                self.jobs.append((time.monotonic(), msg.batch_inference_job))
            self.code = grpc.StatusCode.OK
        except grpc.RpcError as e:
            self.code, self.details = e.code(), e.details()
        self.done.set()

    def statuses(self):
        return [job.status for _, job in self.jobs]

    def wait_messages(self, n, timeout=10.0):
        """Waits until at least n messages arrived (or the stream ended); returns the statuses."""
        wait_until(lambda: len(self.jobs) >= n or self.done.is_set(), timeout=timeout,
                   what="%d watch messages (have %s)" % (n, self.statuses()))
        return self.statuses()

    def wait_done(self, timeout=10.0):
        """Waits for the end of the stream; returns its code."""
        if not self.done.wait(timeout):
            raise TimeoutError("watch stream still open after %.1fs (have %s)" % (
                timeout, self.statuses()))
        return self.code

    def cancel(self):
        self.call.cancel()


def scrape_metrics(gw):
    """The gateway's /metrics as {(sample name, frozenset(labels.items())): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    status, _, body = gw.http_get("/metrics")
    assert status == 200
    out = {}
    for fam in text_string_to_metric_families(body.decode()):
        for sample in fam.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def metric(gw, name, **labels):
    """One sample of the gateway's /metrics (0 when absent)."""
    return scrape_metrics(gw).get((name, frozenset(labels.items())), 0.0)


def health_check(target, service="", timeout=5):
    """grpc.health.v1.Health/Check; returns the status enum name (e.g. "SERVING")."""
    import grpc

    _, hp = protos()
    with grpc.insecure_channel(target) as ch:
        stub = ch.unary_unary(HEALTH_METHOD,
                              request_serializer=hp.HealthCheckRequest.SerializeToString,
                              response_deserializer=hp.HealthCheckResponse.FromString)
        resp = stub(hp.HealthCheckRequest(service=service), timeout=timeout)
        return hp.HealthCheckResponse.ServingStatus.Name(resp.status)


# --- the gateway ------------------------------------------------------------------------------


class GatewayExited(RuntimeError):
    """The gateway exited before listening; .code is its exit status."""

    def __init__(self, message, code):
        super().__init__(message)
        self.code = code


def wrapper_command():
    """$PGW_WRAPPER split into words (e.g. "valgrind --error-exitcode=99 ..."), or [].

    The gateway then runs under it; scripts/test-valgrind sets it for its chosen tests. A
    "%p" in a word is left to the wrapper (valgrind expands it to the PID)."""
    return shlex.split(os.environ.get("PGW_WRAPPER", ""))


# The exit status scripts/test-valgrind asks valgrind for (--error-exitcode) when it found an
# error or a leak; the gateway itself never exits with it.
WRAPPER_ERROR_EXIT = 99

# Every Gateway started in this process, in order; conftest.py checks each one's sanitizer
# and wrapper reports after every test, also those a test started without the fixture.
STARTED = []


def wrapper_timing_sensitive(reason):
    """Marks a test that cannot run under $PGW_WRAPPER (valgrind): it asserts a latency or
    races a timer the slowed-down gateway cannot meet. Skipped there, saying why."""
    import pytest

    return pytest.mark.skipif(bool(wrapper_command()),
                              reason="timing-sensitive under valgrind: " + reason)


class Gateway:
    """One running personalize-gateway process with captured output.

    preexec_fn runs in the child before exec (e.g. resource.setrlimit for a low fd limit);
    stdout_path sends the gateway's stdout (its logs and audit lines) to that file instead of
    a capture file (e.g. "/dev/full"), opened for appending when stdout_append."""

    def __init__(self, binary, workdir, args, env, wait=True, timeout=30.0, preexec_fn=None,
                 stdout_path=None, stdout_append=False):
        self.workdir = workdir
        os.makedirs(workdir, exist_ok=True)
        n = len([f for f in os.listdir(workdir) if f.startswith("gateway-") and f.endswith(".stderr")])
        self.stdout_path = stdout_path or os.path.join(workdir, "gateway-%d.stdout" % n)
        self.stderr_path = os.path.join(workdir, "gateway-%d.stderr" % n)
        self.grpc_port = free_port()
        self.http_port = free_port()
        while self.http_port == self.grpc_port:
            self.http_port = free_port()
        self.grpc_target = "127.0.0.1:%d" % self.grpc_port
        self.http_url = "http://127.0.0.1:%d" % self.http_port
        self.args = ["--grpc-addr", self.grpc_target, "--http-addr", "127.0.0.1:%d" % self.http_port]
        self.args += list(args)
        self.env = env
        self.wrapped = bool(wrapper_command())
        mode = "ab" if stdout_append or stdout_path == "/dev/full" else "wb"
        with open(self.stdout_path, mode) as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(wrapper_command() + [binary] + self.args, stdout=out,
                                         stderr=err, env=env, stdin=subprocess.DEVNULL,
                                         cwd=workdir, preexec_fn=preexec_fn)
        self.pid = self.proc.pid
        self.exit_code = None
        STARTED.append(self)
        if wait:
            try:
                self.wait_ready(timeout)
            except BaseException:
                self.stop(timeout=5)
                raise

    def http_enabled(self):
        """False when the arguments disable the HTTP side (--http-addr "", last one wins)."""
        addrs = [self.args[i + 1] for i, a in enumerate(self.args[:-1]) if a == "--http-addr"]
        return not addrs or addrs[-1] != ""

    def wait_ready(self, timeout=30.0):
        """Waits until the gRPC port (and the HTTP port, unless disabled) accept TCP; raises
        GatewayExited (with the output) if the process exits first.

        Under a wrapper, also until the gateway said it started (its "personalize-gateway
        started" line, or an answer on /healthz): the kernel accepts connections as soon as
        the ports are bound, and under valgrind the threads that answer them come up seconds
        later, which a test's first 5 s call would otherwise spend."""
        def exited():
            if self.proc.poll() is not None:
                raise GatewayExited("gateway exited with %s before listening:\n%s" % (
                    self.proc.returncode, "\n".join(self.logs()[-60:])), self.proc.returncode)

        def ready():
            exited()
            return port_open("127.0.0.1", self.grpc_port) and (
                not self.http_enabled() or port_open("127.0.0.1", self.http_port))

        wait_until(ready, timeout=timeout, what="gateway ports %d/%d" % (self.grpc_port, self.http_port))
        if not self.wrapped:
            return

        def started():
            exited()
            if any('"personalize-gateway started"' in l for l in self.stdout_lines()):
                return True
            if self.http_enabled():
                try:
                    self.http_get("/healthz", timeout=2)
                    return True
                except OSError:
                    return False
            # No HTTP port and no readable log (stdout on /dev/full, or --log-level error):
            # the open ports are all there is to go by.
            return True

        wait_until(started, timeout=timeout, what="gateway started (under %s)" % wrapper_command()[0])

    def wait_readyz(self, timeout=15.0):
        """Waits for GET /readyz to answer 200 (listening, AWS credentials obtained)."""
        def ready():
            try:
                return self.http_get("/readyz", timeout=2)[0] == 200
            except OSError:
                return False
        wait_until(ready, timeout=timeout, what="gateway /readyz 200")

    def stop(self, sig=signal.SIGTERM, timeout=15.0):
        """Sends sig, waits up to timeout (then SIGKILL); returns the exit code (-N = killed by N)."""
        if self.wrapped:
            timeout = max(timeout, 90.0)  # valgrind checks for leaks at exit: slowly
        if self.exit_code is None:
            self.exit_code = _kill_pid(self.proc, timeout=timeout, sig=sig)
        return self.exit_code

    def signal(self, sig):
        """Sends a signal without waiting (e.g. SIGHUP)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def running(self):
        return self.proc.poll() is None

    def stdout_lines(self):
        if not os.path.isfile(self.stdout_path):  # e.g. /dev/full: nothing to read back
            return []
        return _read_lines(self.stdout_path)

    def wrapper_log(self):
        """The wrapper's own report for this process (valgrind's --log-file=...%p...), or []."""
        for word in wrapper_command():
            if word.startswith("--log-file="):
                return _read_lines(word[len("--log-file="):].replace("%p", str(self.pid)))
        return []

    def wrapper_findings(self):
        """After stop(): why the wrapper's report fails the test, or None when it is clean.

        valgrind exits with WRAPPER_ERROR_EXIT when it counted an error or a definite or
        indirect leak; its log is read too, for a process that died of a signal before its
        exit code could say so (an invalid access that crashed it, a SIGKILL)."""
        if not self.wrapped or self.exit_code is None:
            return None
        log = self.wrapper_log()
        summaries = [l for l in log if "ERROR SUMMARY:" in l]
        bad = [l for l in summaries if "ERROR SUMMARY: 0 errors" not in l]
        if self.exit_code == WRAPPER_ERROR_EXIT or bad:
            return "exit %s, %s" % (self.exit_code, (bad or summaries or ["no summary"])[-1].strip())
        if not summaries and self.exit_code >= 0:
            # valgrind always writes a summary at a normal exit: without one, no report was
            # checked at all (a wrong --log-file), which must not pass silently.
            return "exit %s and no ERROR SUMMARY in the wrapper's log" % self.exit_code
        return None

    def stderr_lines(self):
        return _read_lines(self.stderr_path)

    def logs(self):
        """All captured output lines, stdout then stderr."""
        return self.stdout_lines() + self.stderr_lines()

    def log_records(self):
        """stdout lines that parse as JSON objects (the gateway logs one object per line)."""
        out = []
        for line in self.stdout_lines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                out.append(rec)
        return out

    def wait_for_log(self, predicate, timeout=10.0):
        """Waits for a log record (dict) for which predicate(record) is true; returns it."""
        def find():
            for rec in self.log_records():
                if predicate(rec):
                    return rec
            return None

        return wait_until(find, timeout=timeout, what="gateway log record")

    def sanitizer_findings(self):
        """stderr lines that are sanitizer reports."""
        return [l for l in self.stderr_lines() if any(m in l for m in SANITIZER_MARKERS)]

    def http_get(self, path, headers=None, timeout=10.0):
        """GET on the gateway's HTTP port; returns (status, headers, body bytes)."""
        return http_request("GET", self.http_url + path, headers=headers, timeout=timeout)


def gateway_env(fake, home, extra=None):
    """The gateway's environment: a clean HOME, the fake's endpoint and credentials, no IMDS.

    Values of None in `extra` remove a variable (e.g. AWS_ACCESS_KEY_ID for chain tests)."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "HOME": home,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": os.path.join(home, ".aws", "config"),
        "AWS_SHARED_CREDENTIALS_FILE": os.path.join(home, ".aws", "credentials"),
    }
    for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS", "TSAN_OPTIONS"):
        if k in os.environ:
            env[k] = os.environ[k]
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
    if fake is not None:
        env["AWS_ENDPOINT_URL_PERSONALIZE"] = fake.url
        env["AWS_ACCESS_KEY_ID"] = fake.access_key
        env["AWS_SECRET_ACCESS_KEY"] = fake.secret_key
        if fake.session_token:
            env["AWS_SESSION_TOKEN"] = fake.session_token
    for k, v in (extra or {}).items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = str(v)
    return env


def gateway_binary():
    """$PGW_BINARY, or None when it is unset or not built."""
    b = os.environ.get("PGW_BINARY")
    return b if b and os.access(b, os.X_OK) else None


def secrets_never_logged(gateway, secret_values):
    """Asserts that no secret (nor a long-enough piece of it) appears in the gateway's output."""
    lines = gateway.logs()
    for s in secret_values:
        if not s:
            continue
        # A secret split or truncated is still a leak; 16 characters are plenty to spot it.
        probes = {s} | ({s[:16], s[-16:]} if len(s) > 24 else set())
        for i, line in enumerate(lines):
            for p in probes:
                assert p not in line, (
                    "a secret (%d chars, starts %r...) leaked into gateway output line %d"
                    % (len(s), s[:3], i + 1))


@contextlib.contextmanager
def grpc_channel(target):
    """A grpcio insecure channel, closed on exit."""
    import grpc

    ch = grpc.insecure_channel(target)
    try:
        yield ch
    finally:
        ch.close()
