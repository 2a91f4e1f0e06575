"""The container image, run for real with podman: the gateway inside answers real gRPC and
HTTP calls against the AWS fake and a real Redis on loopback, runs as non-root with a
read-only root, no capabilities and no-new-privileges, and drains and exits 0 on
`podman stop`.

Run by scripts/test-deploy (which builds the image first) as
  PGW_IMAGE=localhost/personalize-gateway:ci /usr/bin/python3 -m pytest deploy/ci/test_image.py
Everything listens on 127.0.0.1 (the container shares the host's network namespace); every
container, fake and redis-server started here is stopped by its own name or PID.
"""

import json
import os
import re
import secrets
import subprocess
import sys
import threading
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))

import pgw_harness as h  # noqa: E402
import pgw_tls  # noqa: E402

IMAGE = os.environ.get("PGW_IMAGE", "localhost/personalize-gateway:ci")
# This machine's podman: runc with the cgroupfs manager; rlimits must be explicit (the
# defaults exceed what the sandbox allows a container).
PODMAN = ["podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs"]
ULIMITS = ["--ulimit", "nofile=16384:16384", "--ulimit", "nproc=4096:4096"]
# What Kubernetes' restricted securityContext amounts to. --read-only-tmpfs=false: no
# writable /tmp or /run either, as with readOnlyRootFilesystem and no emptyDir.
LOCKED_DOWN = ["--read-only", "--read-only-tmpfs=false", "--cap-drop=ALL",
               "--security-opt", "no-new-privileges", "--network=host"]
ARN = "arn:aws:personalize:us-east-1:111122223333:batch-inference-job/image-check"
SLOW_ARN = "arn:aws:personalize:us-east-1:111122223333:batch-inference-job/in-flight-at-stop"
GRACE_MS = 4000
STOP_TIMEOUT_S = 15


def podman(*args, check=True, env=None, timeout=60):
    return subprocess.run(PODMAN + list(args), check=check, capture_output=True, text=True,
                          env=env, timeout=timeout)


class Container:
    """One detached gateway container; secrets reach it through podman's environment
    (`-e NAME` without a value), never its command line."""

    def __init__(self, workdir, args, env, secret_env=None, mounts=()):
        self.name = "pgw-image-check-%s" % secrets.token_hex(4)
        self.grpc_port = h.free_port()
        self.http_port = h.free_port()
        while self.http_port == self.grpc_port:
            self.http_port = h.free_port()
        self.grpc_target = "127.0.0.1:%d" % self.grpc_port
        self.http_url = "http://127.0.0.1:%d" % self.http_port
        cmd = ["run", "--detach", "--pull=never", "--name", self.name] + LOCKED_DOWN + ULIMITS
        for k, v in env.items():
            cmd += ["--env", "%s=%s" % (k, v)]
        podman_env = dict(os.environ)
        for k, v in (secret_env or {}).items():
            cmd += ["--env", k]
            podman_env[k] = v
        for src, dst in mounts:
            cmd += ["--volume", "%s:%s:ro" % (src, dst)]
        cmd += [IMAGE, "--grpc-addr", self.grpc_target,
                "--http-addr", "127.0.0.1:%d" % self.http_port,
                "--shutdown-grace-ms", str(GRACE_MS)] + list(args)
        podman(*cmd, env=podman_env)
        self.started = True

    def state(self):
        out = podman("inspect", "--format", "json", self.name).stdout
        return json.loads(out)[0]["State"]

    def host_pid(self):
        return self.state()["Pid"]

    def logs(self):
        p = podman("logs", self.name, check=False)
        return (p.stdout + p.stderr).splitlines()

    def log_records(self):
        out = []
        for line in self.logs():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                out.append(rec)
        return out

    def wait_ready(self, timeout=30):
        def ready():
            st = self.state()
            if not st["Running"]:
                raise RuntimeError("container exited %s:\n%s" % (st["ExitCode"], "\n".join(self.logs())))
            try:
                return h.http_request("GET", self.http_url + "/readyz", timeout=2)[0] == 200
            except OSError:
                return False

        h.wait_until(ready, timeout=timeout, what="containerised gateway /readyz")

    def remove(self):
        podman("rm", "--force", "--time", "0", self.name, check=False)


@pytest.fixture
def container_factory(tmp_path):
    made = []

    def make(*args, **kwargs):
        c = Container(str(tmp_path), *args, **kwargs)
        made.append(c)
        return c

    yield make
    for c in made:
        c.remove()


def base_env(fake_url):
    return {"AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_ENDPOINT_URL_PERSONALIZE": fake_url, "PGW_LOG_LEVEL": "info"}


def aws_secrets(fake):
    return {"AWS_ACCESS_KEY_ID": fake.access_key, "AWS_SECRET_ACCESS_KEY": fake.secret_key}


def proc_status(pid):
    fields = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            fields[k] = v.split()
    return fields


def root_mount_options(pid):
    """Mount options of the process's / (from its own mountinfo)."""
    with open("/proc/%d/mountinfo" % pid) as f:
        for line in f:
            parts = line.split()
            if parts[4] == "/":
                return parts[5].split(",")
    raise AssertionError("no / in mountinfo of %d" % pid)


def test_image_metadata():
    cfg = json.loads(podman("image", "inspect", "--format", "json", IMAGE).stdout)[0]
    conf = cfg["Config"]
    assert conf["User"] == "65532:65532"
    assert conf["Entrypoint"] == ["/usr/local/bin/personalize-gateway"]
    assert "Healthcheck" not in conf or not conf["Healthcheck"]
    assert conf.get("StopSignal") in ("SIGTERM", "15")
    # No shell and no package manager to exec into: only the gateway and its libraries.
    p = podman("run", "--rm", "--pull=never", "--network=host", *ULIMITS,
               "--entrypoint", "/bin/sh", IMAGE, "-c", "true", check=False)
    assert p.returncode != 0, "the image has a shell"
    print("image %s: %.1f MB" % (IMAGE, cfg["Size"] / 1e6))


def test_image_contents():
    """The filesystem: the gateway, Debian's libraries with their package records, the CA
    bundle libcurl reads by default, and nothing setuid/setgid or executable besides."""
    name = "pgw-image-export-%s" % secrets.token_hex(4)
    podman("create", "--name", name, "--pull=never", IMAGE)
    try:
        out = subprocess.run(PODMAN + ["export", name], check=True, capture_output=True).stdout
    finally:
        podman("rm", "--force", name, check=False)
    import io
    import tarfile

    members = {m.name.lstrip("./"): m for m in tarfile.open(fileobj=io.BytesIO(out))}
    assert "usr/local/bin/personalize-gateway" in members
    bundle = tarfile.open(fileobj=io.BytesIO(out)).extractfile(
        members["etc/ssl/certs/ca-certificates.crt"]).read()
    assert bundle.count(b"BEGIN CERTIFICATE") > 100
    status = [n for n in members if n.startswith("var/lib/dpkg/status.d/")]
    assert any(n.endswith("/libgrpc29") for n in status) and any(n.endswith("/libc6") for n in status)
    # libcurl is linked statically from Debian's source (scripts/build-libcurl): no libcurl4 and
    # none of its 25 dependencies in the image, and curl's licence and version beside the binary.
    assert not any(n.endswith("/libcurl4") or n.endswith("/libldap-2.5-0") or
                   n.endswith("/libgnutls30") for n in status), status
    assert not any("libcurl.so" in n or "libgnutls" in n for n in members)
    doc = "usr/share/doc/personalize-gateway/curl/"
    assert doc + "COPYING" in members and doc + "copyright" in members
    version = tarfile.open(fileobj=io.BytesIO(out)).extractfile(
        members[doc + "debian-version"]).read().decode()
    assert re.fullmatch(r"\d+\.\d+\.\d+-\S+\n", version), version
    # So are libevent, jansson, hiredis, expat, protobuf-c and nghttp2 (PGW_STATIC_DEPS), from
    # Debian's archives: not their packages, but their licences and versions.
    for pkg in ("libevent-2.1-7", "libevent-core-2.1-7", "libjansson4", "libhiredis0.14",
                "libexpat1", "libprotobuf-c1", "libnghttp2-14"):
        assert not any(n.endswith("/" + pkg) for n in status), pkg
    for dev in ("libevent-dev", "libjansson-dev", "libhiredis-dev", "libexpat1-dev",
                "libprotobuf-c-dev", "libnghttp2-dev"):
        doc = "usr/share/doc/personalize-gateway/%s/" % dev
        assert doc + "copyright" in members and doc + "debian-version" in members, dev
    for n, m in members.items():
        assert not (m.mode & 0o6000) or m.isdir(), "setuid/setgid file in the image: " + n
    executables = [n for n, m in members.items() if m.isfile() and m.mode & 0o111
                   and not (".so" in n or n.startswith("usr/lib/"))]
    assert executables == ["usr/local/bin/personalize-gateway"], executables


def test_serves_grpc_and_http_as_nonroot_then_drains_on_stop(tmp_path, container_factory):
    fake = h.FakeAws(str(tmp_path / "fake"))
    redis_password = secrets.token_urlsafe(18)
    redis = h.RedisServer(str(tmp_path / "redis"), password=redis_password)
    try:
        job = fake.add_job(ARN, status="IN PROGRESS")["batchInferenceJob"]
        fake.add_job(SLOW_ARN, status="PENDING")
        c = container_factory(
            [], base_env(fake.url),
            secret_env=dict(aws_secrets(fake), PGW_REDIS_URL=redis.url))
        c.wait_ready()

        # The process as the kernel sees it: PID 1 of its namespace, uid/gid 65532, no
        # capabilities at all, no_new_privs set, root mounted read-only.
        pid = c.host_pid()
        st = proc_status(pid)
        assert st["NSpid"][-1] == "1", st["NSpid"]
        assert st["Uid"] == ["65532"] * 4 and st["Gid"] == ["65532"] * 4
        for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            assert int(st[cap][0], 16) == 0, (cap, st[cap])
        assert st["NoNewPrivs"] == ["1"]
        assert "ro" in root_mount_options(pid)

        # gRPC: a real grpcio call, answered from AWS (the fake), then from the cache.
        resp, md, _ = h.describe(c.grpc_target, ARN)
        assert resp.batch_inference_job.batch_inference_job_arn == ARN
        assert resp.batch_inference_job.status == "IN PROGRESS"
        assert resp.batch_inference_job.job_name == job["jobName"]
        assert dict(md).get("x-cache") == "miss"
        assert h.health_check(c.grpc_target) == "SERVING"

        # HTTP: boto3 pointed at the containerised gateway's AWS-compatible POST /.
        import boto3
        from botocore.config import Config

        pz = boto3.client("personalize", endpoint_url=c.http_url, region_name="us-east-1",
                          aws_access_key_id="unused", aws_secret_access_key="unused-secret",
                          config=Config(retries={"total_max_attempts": 1}))
        got = pz.describe_batch_inference_job(batchInferenceJobArn=ARN)["batchInferenceJob"]
        assert got["batchInferenceJobArn"] == ARN and got["status"] == "IN PROGRESS"

        stats = fake.stats()
        assert stats["personalize"]["per_arn"].get(ARN) == 1, stats["personalize"]["per_arn"]
        assert stats["signature_failure_count"] == 0
        # The real Redis holds the answer, written by the gateway in the container.
        assert redis.client().exists("pgw:v1:bij:" + ARN) == 1

        # SIGTERM with a call in flight: it still gets its answer, then the gateway exits 0
        # by itself well before podman's kill timeout.
        fake.set_latency(1500, arn=SLOW_ARN)
        outcome = {}

        def slow_call():
            try:
                outcome["resp"] = h.describe(c.grpc_target, SLOW_ARN, timeout=10)[0]
            except Exception as e:  # recorded and asserted below
                outcome["error"] = e

        t = threading.Thread(target=slow_call)
        t.start()
        h.wait_until(lambda: fake.stats()["personalize"]["per_arn"].get(SLOW_ARN),
                     timeout=10, what="the slow call to reach the fake")
        t0 = time.monotonic()
        podman("stop", "--time", str(STOP_TIMEOUT_S), c.name, timeout=STOP_TIMEOUT_S + 30)
        stop_s = time.monotonic() - t0
        t.join(timeout=15)
        assert "error" not in outcome, outcome.get("error")
        assert outcome["resp"].batch_inference_job.status == "PENDING"
        state = c.state()
        assert state["ExitCode"] == 0, (state, c.logs()[-20:])
        assert stop_s < GRACE_MS / 1000 + 3, "stop took %.1f s" % stop_s
        msgs = [r.get("msg") for r in c.log_records()]
        assert "shutting down" in msgs and "stopped" in msgs, msgs[-10:]
        print("podman stop with a call in flight: %.2f s, exit code 0" % stop_s)

        logs = "\n".join(c.logs())
        for s in (fake.secret_key, redis_password):
            assert s not in logs, "a secret reached the container's output"
    finally:
        fake.stop()
        redis.stop()


def test_mutual_tls_and_https_upstream_from_mounted_files(tmp_path, container_factory):
    pki = tmp_path / "pki"
    pki.mkdir()
    pgw_tls.make_pki(str(pki))
    fake = h.FakeAws(str(tmp_path / "fake"),
                     tls=(str(pki / "server.pem"), str(pki / "server.key")))
    try:
        fake.add_job(ARN, status="ACTIVE")
        # Mounted read-only and owned by the container's user, as Kubernetes does with a
        # Secret volume and fsGroup.
        certs = tmp_path / "mounted"
        certs.mkdir()
        for name in ("server.pem", "server.key", "ca.pem"):
            data = (pki / name).read_bytes()
            (certs / name).write_bytes(data)
            os.chown(certs / name, 65532, 65532)
            os.chmod(certs / name, 0o400)
        env = base_env(fake.https_url)
        c = container_factory(
            ["--tls-cert", "/etc/pgw/tls/server.pem", "--tls-key", "/etc/pgw/tls/server.key",
             "--tls-client-ca", "/etc/pgw/tls/ca.pem", "--upstream-ca-file", "/etc/pgw/tls/ca.pem"],
            env, secret_env=aws_secrets(fake), mounts=[(str(certs), "/etc/pgw/tls")])
        c.wait_ready()
        resp, _, _ = pgw_tls.describe(c.grpc_target, str(pki), "allowed", ARN)
        assert resp.batch_inference_job.status == "ACTIVE"
        assert fake.stats()["tls_connections"] >= 1
        import grpc

        with pytest.raises(grpc.RpcError) as e:
            pgw_tls.describe(c.grpc_target, str(pki), "untrusted", ARN)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE  # handshake refused
        podman("stop", "--time", str(STOP_TIMEOUT_S), c.name, timeout=STOP_TIMEOUT_S + 30)
        assert c.state()["ExitCode"] == 0
    finally:
        fake.stop()
