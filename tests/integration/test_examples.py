"""Issue 10: the client examples in examples/ (Python grpcio, Go grpc-go from Debian's packages,
curl on the SSE endpoint) run against a real gateway while the AWS fake moves a job through
PENDING -> IN PROGRESS -> ACTIVE: describe, then watch until done. They cannot rot unnoticed."""

import json
import os
import shutil
import signal
import subprocess
import threading

import pytest

import pgw_harness as h

PREFIX = "arn:aws:personalize:us-east-1:123456789012:batch-inference-job/"
EXAMPLES = os.path.join(h.REPO, "examples")
WATCH_ARGS = ["--watch-poll-interval-s", "1"]


class Run:
    """An example as a child process; stdout lines collected by a thread."""

    def __init__(self, cmd, env=None):
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL, env=env)
        self.lines = []
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self):
        for raw in self.proc.stdout:
            self.lines.append(raw.decode().rstrip("\n"))

    def wait_line(self, prefix, timeout=15):
        return h.wait_until(lambda: [l for l in self.lines if l.startswith(prefix)] or (
            self.proc.poll() is not None and "exited"), timeout=timeout,
            what="a line %r (have %s)" % (prefix, self.lines))

    def finish(self, timeout=20):
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()  # our own child, by its handle
                self.proc.wait(5)
        self._t.join(5)
        return code, self.proc.stderr.read().decode()


def drive_job(fake, arn, run, first_prefix):
    """Waits for the example's first watch line, then moves the job on; returns its exit."""
    run.wait_line(first_prefix)
    fake.set_job_status(arn, "IN PROGRESS")
    run.wait_line(first_prefix.replace("PENDING", "IN PROGRESS"))
    fake.set_job_status(arn, "ACTIVE")
    return run.finish()


def test_python_example_watches_until_done_and_reconnects_to_another_replica(
        gateway, fake_aws):
    arn = PREFIX + "example-python"
    fake_aws.add_job(arn, status="PENDING")
    first, second = gateway(extra_args=WATCH_ARGS + ["--shutdown-grace-ms", "3000"]), gateway(
        extra_args=WATCH_ARGS)
    # Two replicas as one target, as behind a Service: pick_first talks to the first.
    target = "ipv4:%s,%s" % (first.grpc_target, second.grpc_target)
    run = Run([h.PYTHON, os.path.join(EXAMPLES, "python", "watch_job.py"), "--target", target,
               "--gen-dir", h._gen_dir(), arn])
    run.wait_line("watch: PENDING")
    assert h.metric(first, "pgw_watch_streams") == 1
    first.signal(signal.SIGTERM)  # its stream ends UNAVAILABLE; the example goes to the second
    h.wait_until(lambda: h.metric(second, "pgw_watch_streams") == 1, timeout=15,
                 what="the example watching on the second replica")
    assert first.stop() == 0
    code, err = drive_job(fake_aws, arn, run, "watch: PENDING")
    assert code == 0, (run.lines, err)
    assert "reconnecting" in err
    # One line per state, none repeated across the reconnection.
    assert [l.rsplit(" ", 1)[0] if l.startswith("watch") else l for l in run.lines] == [
        "describe: PENDING", "watch: PENDING", "watch: IN PROGRESS", "watch: ACTIVE",
        "done: ACTIVE"], run.lines


def test_go_example_watches_until_done(gateway, fake_aws, tmp_path):
    for tool in ("go", "protoc-gen-go", "protoc-gen-go-grpc"):
        assert shutil.which(tool), "%s is missing: scripts/install-deps installs it" % tool
    binary = str(tmp_path / "watch_job")
    env = dict(os.environ)
    # A build cache kept in the build tree makes later runs quick.
    gen = os.environ.get("PGW_PY_GEN_DIR")
    env["GOCACHE"] = os.path.join(os.path.dirname(gen), "go-cache") if gen else str(
        tmp_path / "go-cache")
    build = subprocess.run([os.path.join(EXAMPLES, "go", "build.sh"), binary], env=env,
                           capture_output=True, timeout=240)
    assert build.returncode == 0, build.stderr.decode()[-3000:]
    arn = PREFIX + "example-go"
    fake_aws.add_job(arn, status="PENDING")
    gw = gateway(extra_args=WATCH_ARGS)
    run = Run([binary, "-target", gw.grpc_target, arn])
    code, err = drive_job(fake_aws, arn, run, "watch: PENDING")
    assert code == 0, (run.lines, err)
    assert [l.rsplit(" ", 1)[0] if l.startswith("watch") else l for l in run.lines] == [
        "describe: PENDING", "watch: PENDING", "watch: IN PROGRESS", "watch: ACTIVE",
        "done: ACTIVE"], run.lines
    unknown = subprocess.run([binary, "-target", gw.grpc_target, PREFIX + "nope"],
                             capture_output=True, timeout=20)
    assert unknown.returncode == 3, unknown.stderr


def test_curl_example_watches_until_done(gateway, fake_aws):
    arn = PREFIX + "example-curl"
    fake_aws.add_job(arn, status="PENDING")
    gw = gateway(extra_args=WATCH_ARGS)
    script = os.path.join(EXAMPLES, "curl", "watch_job.sh")
    run = Run([script, gw.http_url, arn])
    run.wait_line("watch: ")
    fake_aws.set_job_status(arn, "IN PROGRESS")
    h.wait_until(lambda: len([l for l in run.lines if l.startswith("watch: ")]) == 2, timeout=15,
                 what="second event")
    fake_aws.set_job_status(arn, "ACTIVE")
    code, err = run.finish()
    assert code == 0, (run.lines, err)
    kinds = [l.split(": ", 1)[0] for l in run.lines]
    assert kinds == ["describe", "watch", "watch", "watch"], run.lines
    jobs = [json.loads(l.split(": ", 1)[1])["batchInferenceJob"] for l in run.lines]
    assert [j["status"] for j in jobs] == ["PENDING", "PENDING", "IN PROGRESS", "ACTIVE"]
    unknown = subprocess.run([script, gw.http_url, PREFIX + "nope"], capture_output=True,
                             timeout=20)
    assert unknown.returncode != 0
    assert b"NOT_FOUND" in unknown.stdout + unknown.stderr
