"""Issue 12, item 2: faults of the gateway's own host: the policy file replaced by garbage,
the disk full for the audit log, file descriptors exhausted.

Each test injects the fault into a real gateway process under calls, then asserts what the
issue asks: no crash, no stuck call (every call ends before its deadline with a clear status),
recovery afterwards; and records the measured outcome (pgw_load.record)."""

import json
import os
import resource
import shutil
import signal
import socket
import time

import grpc
import pytest

import pgw_harness as h
import pgw_load as load

ARN = "arn:aws:personalize:us-east-1:123456789012:batch-inference-job/faults-%s"
HOT = ARN % "hot"


def arn(name):
    return ARN % name


# --- the policy file replaced by garbage ----------------------------------------------------

POLICY_ALICE = {"version": 1, "rules": [{"callers": ["alice"], "arns": [ARN % "*"]}]}
POLICY_BOTH = {"version": 1, "rules": [{"callers": ["alice", "bob"], "arns": [ARN % "*"]}]}


def as_caller(gw, who, name="p", timeout=5):
    """One call as caller `who`; returns the status code name."""
    try:
        h.describe(gw.grpc_target, arn(name), timeout=timeout,
                   metadata=[("x-client-identity", who)])
        return "OK"
    except grpc.RpcError as e:
        return e.code().name


def policy_errors(gw):
    return [r for r in gw.log_records() if r.get("msg", "").startswith("authorization policy not")]


def _big(path):
    with open(path, "w") as f:
        f.write('{"version": 1, "rules": [' + " " * (2 << 20) + "]}")


def _directory(path):
    os.unlink(path)
    os.mkdir(path)


def _deleted(path):
    os.unlink(path)


GARBAGE = [
    ("binary", lambda p: open(p, "wb").write(os.urandom(4096))),
    ("truncated_json", lambda p: open(p, "w").write(json.dumps(POLICY_BOTH)[:30])),
    ("unknown_key", lambda p: open(p, "w").write(json.dumps(
        {"version": 1, "rules": [{"callers": ["*"], "arnz": ["*"]}]}))),
    ("empty", lambda p: open(p, "w").close()),
    ("over_1_mib", _big),
    ("a_directory", _directory),
    ("deleted", _deleted),
]


@pytest.mark.parametrize("name,make", GARBAGE, ids=[g[0] for g in GARBAGE])
def test_policy_replaced_by_garbage_keeps_the_old_policy(gateway, fake_aws, tmp_path, name, make):
    fake_aws.add_job(arn("p"))
    path = str(tmp_path / "policy.json")
    with open(path, "w") as f:
        json.dump(POLICY_ALICE, f)
    gw = gateway(["--identity-header", "x-client-identity", "--policy-file", path,
                  "--policy-poll-ms", "100"])
    assert (as_caller(gw, "alice"), as_caller(gw, "bob")) == ("OK", "PERMISSION_DENIED")

    make(path)
    gw.wait_for_log(lambda r: r.get("msg", "").startswith("authorization policy not"))
    decisions = set()
    t_end = time.monotonic() + 1.5  # 15 polls of the bad file, calls all along
    while time.monotonic() < t_end:
        decisions.add((as_caller(gw, "alice"), as_caller(gw, "bob")))
    errors = policy_errors(gw)
    load.record("policy garbage (%s)" % name, "decisions %s, %d error line(s) in 15 polls: %s" % (
        sorted(decisions), len(errors), errors[0]["error"][:120]))
    assert decisions == {("OK", "PERMISSION_DENIED")}  # the old policy, unchanged
    assert len(errors) == 1, [e["error"] for e in errors]
    assert "{" not in errors[0]["error"]  # names the problem, never quotes the file

    # Recovery: a good file in its place is loaded by the next poll.
    if os.path.isdir(path):
        os.rmdir(path)
    with open(path + ".new", "w") as f:
        json.dump(POLICY_BOTH, f)
    os.rename(path + ".new", path)
    gw.wait_for_log(lambda r: r.get("msg") == "authorization policy reloaded")
    assert as_caller(gw, "bob") == "OK"
    assert gw.running()


# --- the disk full for the audit log ---------------------------------------------------------


def test_audit_log_on_a_full_disk_keeps_serving_and_counts_the_loss(gateway, fake_aws):
    """stdout (logs and audit lines) is /dev/full: every write fails with ENOSPC."""
    fake_aws.add_job(HOT)
    gw = gateway(["--audit-log", "on"], stdout_path="/dev/full")
    gw.wait_readyz()
    with load.SteadyLoad(gw.grpc_target, [HOT, arn("cold")], threads=2, timeout=2) as ld:
        time.sleep(2)
    calls = ld.calls
    lost = load.metric(gw, 'pgw_log_write_failures_total{log="audit"}')
    notices = [l for l in gw.stderr_lines() if "cannot write to stdout" in l]
    load.record("audit log on /dev/full", "%s; %d audit lines lost (counted), %d stderr notice" % (
        load.summary(calls), lost, len(notices)))
    assert load.codes(calls).keys() <= {"OK", "NOT_FOUND"}, load.summary(calls)
    assert load.slowest(calls) < 2
    assert lost >= len(calls)  # one audit line per call, none written, all counted
    assert len(notices) == 1, notices  # once per episode, not per line
    assert gw.running()
    fake_aws.add_job(arn("after"))
    h.describe(gw.grpc_target, arn("after"))


def test_audit_log_disk_full_then_room_again(gateway, fake_aws, tmp_path):
    """stdout is a file that may not grow past 64 KiB (RLIMIT_FSIZE, with SIGXFSZ ignored as
    a full disk raises no signal): writes fail with EFBIG until the file is truncated (space
    freed, as log rotation with copytruncate does), then every line written is whole JSON."""
    fake_aws.add_job(HOT)
    out = str(tmp_path / "stdout.log")
    limit = 64 * 1024

    def small_disk():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    gw = gateway(["--audit-log", "on"], stdout_path=out, stdout_append=True,
                 preexec_fn=small_disk)
    lost = lambda: load.metric(gw, 'pgw_log_write_failures_total{log="audit"}') or 0  # noqa
    with load.SteadyLoad(gw.grpc_target, [HOT], threads=1, timeout=2, pause_s=0.01) as ld:
        h.wait_until(lambda: lost() > 20, timeout=30, what="the audit log to fill its disk")
        full_at = ld.now()
        assert os.path.getsize(out) <= limit
        os.truncate(out, 0)  # room again
        lost_at_truncate = lost()
        h.wait_until(lambda: os.path.getsize(out) > 4000, timeout=10,
                     what="audit lines written again")
    calls = ld.calls
    lost_after = lost()
    with open(out, encoding="utf-8") as f:
        text = f.read()
    assert len(text) < limit  # the disk did not fill up again: every line after is complete
    lines = [l for l in text.splitlines() if l]
    records = [json.loads(l) for l in lines]  # no half line glued to another
    audits = [r for r in records if r.get("log") == "audit"]
    load.record("audit log disk full then freed", "%s; full after %.1f s, %d lines lost, then %d "
                "whole lines written" % (load.summary(calls), full_at, lost_at_truncate,
                                         len(lines)))
    assert load.codes(calls) == {"OK": len(calls)}, load.summary(calls)
    assert len(audits) > 10
    assert lost_after - lost_at_truncate <= 1  # writes work again (one may race the truncate)
    assert len([l for l in gw.stderr_lines() if "cannot write to stdout" in l]) == 1


# --- file descriptors exhausted -------------------------------------------------------------

FD_LIMIT = 64


def fd_limit(soft, hard):
    def apply():
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return apply


def flood(port, gw, extra=20, timeout=20):
    """Opens idle TCP connections to port until the gateway holds every descriptor it may,
    then `extra` more (left in the listen backlog). Returns the sockets."""
    socks = []
    deadline = time.monotonic() + timeout
    while load.open_fds(gw.pid) < FD_LIMIT and time.monotonic() < deadline:
        socks.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        if len(socks) % 8 == 0:
            time.sleep(0.05)
    h.wait_until(lambda: load.open_fds(gw.pid) >= FD_LIMIT, timeout=10,
                 what="the gateway at its descriptor limit")
    for _ in range(extra):
        socks.append(socket.create_connection(("127.0.0.1", port), timeout=5))
    return socks


def test_descriptors_exhausted_by_http_clients_then_recovered(gateway, fake_aws):
    fake_aws.add_job(HOT)
    for i in range(50):
        fake_aws.add_job(arn("fd-cold-%d" % i))
    gw = gateway(["--http-request-timeout-ms", "60000", "--upstream-timeout-ms", "1000"],
                 preexec_fn=fd_limit(FD_LIMIT, FD_LIMIT))
    gw.wait_readyz()
    ch = grpc.insecure_channel(gw.grpc_target)  # connected before the descriptors run out
    h.describe(gw.grpc_target, HOT, channel=ch)
    # Every upstream answer closes its connection: each miss needs a new socket.
    fake_aws.close_connections()
    socks = flood(gw.http_port, gw, extra=5)
    try:
        # Idle at the limit, with connections waiting in the backlog: the gateway must not
        # spin (libevent retries a failing accept() at once by default, logging each time).
        cpu0 = load.cpu_seconds(gw.pid)
        time.sleep(1.5)
        cpu = load.cpu_seconds(gw.pid) - cpu0
        hot = load.SteadyLoad(gw.grpc_target, [HOT], threads=1, timeout=3, channel=ch).start()
        cold = load.SteadyLoad(gw.grpc_target, [arn("fd-cold-%d" % i) for i in range(50)],
                               threads=2, timeout=6, channel=ch,
                               metadata=[("cache-control", "no-cache")]).start()
        time.sleep(3)
        hot.stop()
        cold.stop()
        at_limit = load.open_fds(gw.pid)
    finally:
        for s in socks:
            s.close()
    stderr = gw.stderr_lines()
    load.record("fds exhausted by HTTP clients", "at %d/%d fds for 3 s: hits %s; misses %s; "
                "idle CPU at the limit %.2f s in 1.5 s; %d stderr lines; refusals say %r" % (
                    at_limit, FD_LIMIT, load.summary(hot.calls), load.summary(cold.calls), cpu,
                    len(stderr), [c.details for c in cold.calls if c.code != "OK"][:1]))
    # Hits need no descriptor: all answered. Misses need an upstream socket: answered from the
    # pooled connection or refused with UNAVAILABLE, each before its deadline.
    assert load.codes(hot.calls) == {"OK": len(hot.calls)} and len(hot.calls) > 20
    assert load.codes(cold.calls).keys() <= {"OK", "UNAVAILABLE"}, load.summary(cold.calls)
    assert load.slowest(cold.calls) < 6
    for c in cold.calls:
        assert c.code == "OK" or "attempt" in c.details or "saturated" in c.details, c
    # No busy loop on the listening socket (libevent retries accept() at once by default) and
    # no flood of warnings: one error line, accepting paused and retried.
    assert cpu < 0.3, cpu
    assert len(stderr) < 10, stderr[:5]
    assert len([r for r in gw.log_records()
                if r.get("msg", "").startswith("HTTP port: accept failed")]) >= 1

    # Recovery: the backlog is served, new connections on both ports, misses go upstream.
    h.wait_until(lambda: gw.http_get("/healthz", timeout=2)[0] == 200, timeout=10,
                 what="the HTTP port accepting again")
    resp, md, _ = h.describe(gw.grpc_target, arn("fd-cold-49"), timeout=5)
    assert dict(md)["x-cache"] in ("miss", "hit")
    assert gw.http_get("/readyz")[0] == 200
    assert load.metric(gw, "process_max_fds") == FD_LIMIT
    ch.close()


def test_grpc_listener_lost_to_fd_exhaustion_makes_the_gateway_not_alive(gateway, fake_aws):
    """gRPC core 1.51 stops accepting on the gRPC port for good after accept() fails with
    EMFILE. The gateway cannot restart that listener: it says so (one log line), fails its
    liveness probe so Kubernetes restarts it, and keeps serving the connections it has."""
    fake_aws.add_job(HOT)
    gw = gateway(preexec_fn=fd_limit(FD_LIMIT, FD_LIMIT))
    gw.wait_readyz()
    ch = grpc.insecure_channel(gw.grpc_target)
    h.describe(gw.grpc_target, HOT, channel=ch)
    socks = flood(gw.grpc_port, gw)
    try:
        rec = gw.wait_for_log(lambda r: r.get("msg", "").startswith(
            "gRPC port stopped accepting"), timeout=10)
    finally:
        for s in socks:
            s.close()
    h.wait_until(lambda: load.open_fds(gw.pid) < FD_LIMIT - 5, timeout=150,
                 what="the flood's connections closed")
    status, _, body = gw.http_get("/healthz", timeout=5)
    ready = gw.http_get("/readyz", timeout=5)[0]
    load.record("gRPC listener lost to EMFILE", "log %r; then /healthz %d %r, /readyz %d" % (
        rec["grpc_message"], status, body.decode().strip()[:60], ready))
    assert status == 503 and b"restart" in body
    assert ready == 503
    # The connection made before still answers, and says it is not serving.
    resp, _, _ = h.describe(gw.grpc_target, HOT, channel=ch)
    assert resp.batch_inference_job.batch_inference_job_arn == HOT
    ch.close()
    assert gw.running()


def test_soft_fd_limit_is_raised_to_the_hard_limit(gateway, fake_aws):
    """A soft limit of 64 under a hard one of 4096 (a container runtime's usual 1024/524288,
    scaled down): the gateway raises its own soft limit, so 300 connections on the gRPC port
    are accepted and the port keeps listening."""
    fake_aws.add_job(HOT)
    gw = gateway(preexec_fn=fd_limit(64, 4096))
    with open("/proc/%d/limits" % gw.pid) as f:
        line = [l for l in f if l.startswith("Max open files")][0]
    assert line.split()[3:5] == ["4096", "4096"], line
    rec = gw.wait_for_log(lambda r: r.get("msg") == "personalize-gateway started")
    assert rec["max_open_files"] == 4096
    socks = [socket.create_connection(("127.0.0.1", gw.grpc_port), timeout=5) for _ in range(300)]
    try:
        h.wait_until(lambda: load.open_fds(gw.pid) > 300, timeout=10, what="300 accepted")
        resp, _, _ = h.describe(gw.grpc_target, HOT, timeout=5)  # a new connection still works
    finally:
        for s in socks:
            s.close()
    assert resp.batch_inference_job.batch_inference_job_arn == HOT
    assert gw.http_get("/healthz")[0] == 200
    assert not [r for r in gw.log_records() if r.get("msg", "").startswith("gRPC port stopped")]
