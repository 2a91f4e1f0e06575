"""Issue 4, "who may call": the authorization policy, rate limits and the audit log.

Callers are identified by client certificates (mutual TLS, pgw_tls.make_pki). The checks run in
lookup, before any cache tier."""

import json
import os
import signal
import subprocess
import time

import grpc
import pytest

import pgw_harness as h
import pgw_tls as tls

ACCOUNT = "123456789012"
ARN = "arn:aws:personalize:us-east-1:%s:batch-inference-job/policy-1" % ACCOUNT


def arn_n(i):
    return "arn:aws:personalize:us-east-1:%s:batch-inference-job/rl-%d" % (ACCOUNT, i)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return tls.make_pki(str(tmp_path_factory.mktemp("pki")))


def write_policy(path, callers):
    """Rules letting each caller read every job of ACCOUNT; written atomically (rename)."""
    rules = [{"callers": [c], "arns": ["arn:aws:personalize:*:%s:batch-inference-job/*" % ACCOUNT]}
             for c in callers]
    tmp = str(path) + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"version": 1, "rules": rules}, f)
    os.replace(tmp, str(path))


def code_of(target, pki, client, arn, timeout=5):
    try:
        tls.describe(target, pki, client, arn, timeout=timeout)
        return grpc.StatusCode.OK
    except grpc.RpcError as e:
        return e.code()


def audit_lines(gw):
    return [r for r in gw.log_records() if r.get("log") == "audit"]


# --- loading and reloading (main.c and policy.c: no lookup needed) ------------------------------


def test_bad_policy_file_exits_2(gateway_binary, tmp_path):
    env = h.gateway_env(None, str(tmp_path))
    bad = tmp_path / "bad.json"
    for text in ('{"rules": [', '{"rules": [{"callers": ["a"], "arn": ["*"]}]}', None):
        if text is None:
            path = str(tmp_path / "missing.json")
        else:
            bad.write_text(text)
            path = str(bad)
        p = subprocess.run([gateway_binary, "--grpc-addr", "127.0.0.1:0", "--http-addr", "",
                            "--policy-file", path], env=env, capture_output=True, text=True,
                           timeout=30)
        assert p.returncode == 2, p.stderr
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and "--policy-file" in lines[0], p.stderr


def test_reload_on_sighup_and_on_change_and_bad_reload(gateway, tmp_path):
    policy = tmp_path / "policy.json"
    write_policy(policy, [tls.ALLOWED])
    gw = gateway(["--policy-file", str(policy), "--policy-poll-ms", "100"])
    gw.wait_for_log(lambda r: r.get("msg") == "authorization policy loaded" and r["rules"] == 1)

    write_policy(policy, [tls.ALLOWED, tls.OTHER])
    gw.wait_for_log(lambda r: r.get("msg") == "authorization policy reloaded" and r["rules"] == 2)

    policy.write_text('{"rules": [')
    rec = gw.wait_for_log(lambda r: "not reloaded" in r.get("msg", ""))
    assert rec["level"] == "error" and "invalid JSON" in rec["error"]

    write_policy(policy, [tls.OTHER])
    n = len([r for r in gw.log_records() if r.get("msg") == "authorization policy reloaded"])
    gw.signal(signal.SIGHUP)
    h.wait_until(lambda: len([r for r in gw.log_records()
                              if r.get("msg") == "authorization policy reloaded"]) > n,
                 what="reload after SIGHUP")
    assert gw.running()


# --- decisions (need lookup) --------------------------------------------------------------------


def test_outside_policy_denied_even_when_cached(gateway, fake_aws, pki, tmp_path):
    fake_aws.add_job(ARN)
    policy = tmp_path / "policy.json"
    write_policy(policy, [tls.ALLOWED])
    gw = gateway(tls.tls_args(pki) + ["--policy-file", str(policy)])

    _, md, _ = tls.describe(gw.grpc_target, pki, "allowed", ARN)
    assert dict(md).get("x-cache") == "miss"
    _, md, _ = tls.describe(gw.grpc_target, pki, "allowed", ARN)
    assert dict(md).get("x-cache") == "hit"  # it is in the cache now

    with pytest.raises(grpc.RpcError) as e:
        tls.describe(gw.grpc_target, pki, "other", ARN)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert tls.OTHER in e.value.details()        # names the caller...
    assert "batch-inference-job/*" not in e.value.details()  # ...never the policy
    assert fake_aws.stats()["personalize"]["requests"] == 1


def test_sighup_reload_changes_the_decision(gateway, fake_aws, pki, tmp_path):
    fake_aws.add_job(ARN)
    policy = tmp_path / "policy.json"
    write_policy(policy, [tls.ALLOWED])
    # Polling effectively off: only SIGHUP reloads.
    gw = gateway(tls.tls_args(pki) + ["--policy-file", str(policy),
                                      "--policy-poll-ms", "3600000"])
    assert code_of(gw.grpc_target, pki, "other", ARN) == grpc.StatusCode.PERMISSION_DENIED
    write_policy(policy, [tls.OTHER])
    assert code_of(gw.grpc_target, pki, "other", ARN) == grpc.StatusCode.PERMISSION_DENIED
    gw.signal(signal.SIGHUP)
    h.wait_until(lambda: code_of(gw.grpc_target, pki, "other", ARN) == grpc.StatusCode.OK,
                 timeout=10, what="other allowed after SIGHUP")
    assert code_of(gw.grpc_target, pki, "allowed", ARN) == grpc.StatusCode.PERMISSION_DENIED


def test_per_caller_rate_limit(gateway, fake_aws, pki):
    fake_aws.add_job(ARN)
    gw = gateway(tls.tls_args(pki) + ["--rate-limit-per-caller", "1",
                                      "--rate-limit-per-caller-burst", "3"])
    codes = [code_of(gw.grpc_target, pki, "allowed", ARN) for _ in range(8)]
    ok = codes.count(grpc.StatusCode.OK)
    limited = codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert 3 <= ok <= 4 and ok + limited == 8, codes  # the burst (+1 refilled at most)
    # the noisy caller's limit is its own
    assert code_of(gw.grpc_target, pki, "other", ARN) == grpc.StatusCode.OK
    # and it refills
    time.sleep(1.2)
    assert code_of(gw.grpc_target, pki, "allowed", ARN) == grpc.StatusCode.OK


def test_upstream_rate_limit_spares_cache_hits(gateway, fake_aws, pki):
    for i in range(3):
        fake_aws.add_job(arn_n(i))
    gw = gateway(tls.tls_args(pki) + ["--upstream-rate-limit", "1",
                                      "--upstream-rate-limit-burst", "1",
                                      "--upstream-rate-limit-max-wait-ms", "200"])
    assert code_of(gw.grpc_target, pki, "allowed", arn_n(0)) == grpc.StatusCode.OK
    # the next token is ~1 s away, more than the 200 ms a miss may wait
    assert code_of(gw.grpc_target, pki, "allowed", arn_n(1)) == grpc.StatusCode.UNAVAILABLE
    # hits never need a token
    for _ in range(5):
        assert code_of(gw.grpc_target, pki, "allowed", arn_n(0)) == grpc.StatusCode.OK
    time.sleep(1.1)
    assert code_of(gw.grpc_target, pki, "allowed", arn_n(2)) == grpc.StatusCode.OK
    assert fake_aws.stats()["personalize"]["requests"] == 2


def test_audit_lines(gateway, fake_aws, pki, tmp_path):
    fake_aws.add_job(ARN)
    policy = tmp_path / "policy.json"
    write_policy(policy, [tls.ALLOWED])
    gw = gateway(tls.tls_args(pki) + ["--policy-file", str(policy)])
    tls.describe(gw.grpc_target, pki, "allowed", ARN)
    tls.describe(gw.grpc_target, pki, "allowed", ARN)
    code_of(gw.grpc_target, pki, "other", ARN)
    code_of(gw.grpc_target, pki, None, ARN)
    h.wait_until(lambda: len(audit_lines(gw)) >= 4, what="4 audit lines")
    lines = audit_lines(gw)
    assert len(lines) == 4
    want = [(tls.ALLOWED, "allow", "miss", "OK"), (tls.ALLOWED, "allow", "hit", "OK"),
            (tls.OTHER, "deny", "none", "PERMISSION_DENIED"),
            (None, "unauthenticated", "none", "UNAUTHENTICATED")]
    got = [(r["identity"], r["decision"], r["cache"], r["code"]) for r in lines]
    assert sorted(got, key=str) == sorted(want, key=str)
    for r in lines:
        assert set(r) >= {"time", "identity", "arn", "decision", "cache", "aws_request_id",
                          "code", "latency_us"}
        if r["decision"] != "unauthenticated":
            assert r["arn"] == ARN
    miss = [r for r in lines if r["cache"] == "miss"][0]
    assert miss["aws_request_id"]  # the fake's x-amzn-RequestId
    h.secrets_never_logged(gw, [fake_aws.secret_key])
