"""Issue 12, item 2: upstream (AWS) faults: throttling and 500 bursts while entries are cached,
connections reset, closed without an answer, answers trickled slower than the deadline, and
the credential source failing during a refresh.

The fake Personalize injects each fault (tests/fakes/fake_personalize.py, fake.fail); calls to
healthy ARNs run alongside, so a fault on some ARNs must not slow or fail the others. Every
call must end before its deadline with a clear status, and the ARN must answer again once the
fault is lifted."""

import concurrent.futures
import secrets
import time

import grpc
import pytest

import pgw_harness as h
import pgw_load as load

PREFIX = "arn:aws:personalize:us-east-1:123456789012:batch-inference-job/"


def arn(name):
    return PREFIX + name


def call(gw, a, timeout, metadata=()):
    """One call; returns (code name, seconds, details, x-cache)."""
    t0 = time.monotonic()
    try:
        _, md, _ = h.describe(gw.grpc_target, a, timeout=timeout, metadata=metadata)
        return "OK", time.monotonic() - t0, "", dict(md).get("x-cache")
    except grpc.RpcError as e:
        return (e.code().name, time.monotonic() - t0, e.details() or "",
                dict(e.initial_metadata() or ()).get("x-cache"))


def many(gw, arns, timeout, threads=50):
    """Calls every ARN at once (threads callers); returns the list of call() results."""
    with grpc.insecure_channel(gw.grpc_target) as ch:
        stub, request = h.describe_stub(ch)
        grpc.channel_ready_future(ch).result(timeout=10)

        def one(a):
            t0 = time.monotonic()
            try:
                _, c = stub.with_call(request(batch_inference_job_arn=a), timeout=timeout)
                return "OK", time.monotonic() - t0, "", dict(c.initial_metadata()).get("x-cache")
            except grpc.RpcError as e:
                return (e.code().name, time.monotonic() - t0, e.details() or "",
                        dict(e.initial_metadata() or ()).get("x-cache"))

        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            return list(pool.map(one, arns))


# --- throttling and 500 bursts while entries are cached --------------------------------------

N_CACHED = 150  # more than the retry quota allows retries for: 500 / 5 = 100


@pytest.mark.parametrize("fault", [
    dict(status=400, type="ThrottlingException", message="Rate exceeded"),
    dict(status=500, type="InternalFailure", message="Injected 500"),
], ids=["throttling", "500"])
def test_burst_while_entries_are_cached_serves_stale_within_the_retry_quota(gateway, fake_aws,
                                                                         fault):
    arns = [arn("burst-%d" % i) for i in range(N_CACHED)]
    for a in arns:
        fake_aws.add_job(a, status="IN PROGRESS")
    gw = gateway(["--cache-ttl-running-s", "1", "--cache-jitter-pct", "0",
                  "--cache-stale-s", "120"])
    gw.wait_readyz()
    assert {r[0] for r in many(gw, arns, timeout=10)} == {"OK"}
    assert load.metric(gw, "pgw_upstream_retry_quota") == 500
    time.sleep(1.2)  # every entry is past its TTL now, still within its stale window

    fake_aws.reset_stats()
    fake_aws.fail(count=100000, **fault)
    retries0 = load.metric(gw, "pgw_upstream_retries_total")
    t0 = time.monotonic()
    results = many(gw, arns, timeout=10)
    took = time.monotonic() - t0
    sent = fake_aws.stats()["personalize"]["requests"]
    retries = load.metric(gw, "pgw_upstream_retries_total") - retries0
    quota = load.metric(gw, "pgw_upstream_retry_quota")
    stale = [r for r in results if r[3] == "stale"]
    load.record("upstream %s burst, %d entries cached" % (fault["type"], N_CACHED),
                "%d/%d answered stale, slowest %.1f s (all within %.1f s); AWS saw %d requests "
                "(%d first attempts + %d retries), quota left %d" % (
                    len(stale), len(results), max(r[1] for r in results), took, sent, N_CACHED,
                    retries, quota))
    # Every caller got its job, stale and saying so, before its deadline.
    assert [r[0] for r in results] == ["OK"] * N_CACHED, [r for r in results if r[0] != "OK"][:3]
    assert len(stale) == N_CACHED
    assert max(r[1] for r in results) < 10
    # The shared quota (capacity 500, 5 a retry) allowed 100 retries, not 2 per call.
    assert retries == 100 and sent == N_CACHED + 100, (retries, sent)
    assert quota == 0

    # Recovery: AWS answers again; fresh answers, and each success refunds the quota.
    fake_aws.clear_failures()
    results = many(gw, arns, timeout=10)
    assert {r[0] for r in results} == {"OK"} and {r[3] for r in results} == {"miss"}
    assert load.metric(gw, "pgw_upstream_retry_quota") == N_CACHED  # one token per success


# --- connections reset, closed without an answer, trickled --------------------------------------

@pytest.mark.parametrize("fault,args,deadline,want,cause", [
    (dict(action="reset"), [], 8, "UNAVAILABLE", "after 3 attempt"),
    (dict(action="close"), [], 8, "UNAVAILABLE", "after 3 attempt"),
    # one byte every 100 ms: an answer would take ~15 s; each attempt gives up at 500 ms
    (dict(action="trickle", trickle_ms=100), ["--upstream-timeout-ms", "500"], 8, "UNAVAILABLE",
     "after 3 attempt"),
    # the same trickle with the default 10 s attempt timeout: the caller's 1.5 s deadline ends it
    (dict(action="trickle", trickle_ms=100), [], 1.5, "DEADLINE_EXCEEDED", "deadline"),
], ids=["reset", "close_without_answer", "trickle_attempt_timeout", "trickle_past_deadline"])
def test_broken_upstream_connections_end_every_call_in_time(gateway, fake_aws, fault, args,
                                                            deadline, want, cause):
    bad = [arn("broken-%d" % i) for i in range(5)]
    good = [arn("healthy-%d" % i) for i in range(20)]
    for a in bad + good:
        fake_aws.add_job(a, status="ACTIVE")
    for a in bad:
        fake_aws.fail(arn=a, **fault)
    gw = gateway(args)
    gw.wait_readyz()
    # Healthy callers (no cache: every call goes upstream) alongside the broken ARNs.
    with load.SteadyLoad(gw.grpc_target, good, threads=2, timeout=5,
                         metadata=[("cache-control", "no-cache")]) as ld:
        results = many(gw, bad, timeout=deadline, threads=5)
    received = fake_aws.stats()["personalize"]["per_arn"]
    load.record("upstream %s" % fault.get("action"), "%s: %s in %.1f-%.1f s (deadline %.1f s), "
                "AWS saw %s requests per ARN; healthy ARNs meanwhile %s" % (
                    args or "default timeouts", {r[0] for r in results},
                    min(r[1] for r in results), max(r[1] for r in results), deadline,
                    sorted({received.get(a, 0) for a in bad}), load.summary(ld.calls)))
    for code, took, details, _ in results:
        assert code == want, (code, details)
        assert took < deadline + 0.5, took
        assert cause in details.lower(), details
    if fault["action"] != "trickle":
        assert {received.get(a, 0) for a in bad} == {3}  # the attempt bound, as AWS saw it
    else:  # (the fake counts a request once read: one given up on before that is not seen)
        assert max(received.get(a, 0) for a in bad) <= 3
    assert load.codes(ld.calls) == {"OK": len(ld.calls)}, load.summary(ld.calls)
    assert len(ld.calls) > 20

    fake_aws.clear_failures()
    assert {r[0] for r in many(gw, bad, timeout=5)} == {"OK"}  # recovery


def test_a_trickling_answer_does_not_hold_up_new_calls_to_the_same_host(gateway, fake_aws):
    """Regression: with curl's PIPEWAIT on plain http://, every new transfer to the host waited
    until a connection whose status line was still trickling in said it was HTTP/1.1 (curl
    could not know before): here that is 17 bytes at 300 ms, about 5 s. The trickling calls
    are in flight (AWS has read them) before the healthy calls start."""
    bad = [arn("slow-line-%d" % i) for i in range(3)]
    good = [arn("fast-%d" % i) for i in range(10)]
    for a in bad + good:
        fake_aws.add_job(a, status="ACTIVE")
    for a in bad:
        fake_aws.fail(arn=a, action="trickle", trickle_ms=300)
    gw = gateway()
    gw.wait_readyz()
    fake_aws.reset_stats()
    with concurrent.futures.ThreadPoolExecutor(len(bad)) as pool:
        slow = [pool.submit(call, gw, a, 8) for a in bad]
        h.wait_until(lambda: all(fake_aws.stats()["personalize"]["per_arn"].get(a, 0) >= 1
                                 for a in bad), timeout=5, what="AWS reading every slow request")
        results = many(gw, good, timeout=3, threads=5)
        still_trickling = not any(f.done() for f in slow)
        slow_results = [f.result() for f in slow]
    load.record("healthy calls while 3 answers trickle in", "%s, slowest %.2f s; the trickling "
                "calls %s" % ({r[0] for r in results}, max(r[1] for r in results),
                              sorted({r[0] for r in slow_results})))
    assert still_trickling  # the healthy calls below really ran beside them
    assert [r[0] for r in results] == ["OK"] * len(good), results
    assert {r[0] for r in slow_results} <= {"UNAVAILABLE", "DEADLINE_EXCEEDED"}, slow_results


def test_trickling_upstream_with_a_cached_entry_answers_stale_at_the_deadline(gateway, fake_aws):
    a = arn("trickle-stale")
    fake_aws.add_job(a, status="IN PROGRESS")
    gw = gateway(["--cache-ttl-running-s", "1", "--cache-jitter-pct", "0"])
    call(gw, a, 5)
    time.sleep(1.2)
    fake_aws.fail(arn=a, action="trickle", trickle_ms=100)
    code, took, details, cache = call(gw, a, 2)
    load.record("upstream trickle with a stale entry", "%s x-cache %s after %.2f s (deadline 2 s)"
                % (code, cache, took))
    assert (code, cache) == ("OK", "stale")
    assert took < 2


# --- the credential source failing during a refresh ---------------------------------------------

NO_ENV_KEYS = {"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None, "AWS_SESSION_TOKEN": None}


@pytest.mark.parametrize("fault", [
    dict(status=500, message="agent unavailable"),
    dict(action="reset"),
    dict(delay_ms=8000, status=500, message="agent too slow"),  # past the 5 s fetch timeout
], ids=["500", "reset", "slow"])
def test_credential_source_failing_during_a_refresh(gateway, fake_aws, fault):
    """EKS Pod Identity / ECS credentials. AWS answers ExpiredTokenException once, so the
    gateway refreshes at once while the container endpoint fails: callers keep the last good
    credentials (still valid), none fails for good, and the next refresh works again."""
    hot, cold = arn("cred-hot"), [arn("cred-cold-%d" % i) for i in range(10)]
    for a in [hot] + cold:
        fake_aws.add_job(a, status="ACTIVE")
    fake_aws.set_credentials([], replace=True)
    token = "pod-" + secrets.token_urlsafe(24)
    fake_aws.configure_container(token=token, ttl_s=3600)
    gw = gateway(env=dict(NO_ENV_KEYS,
                          AWS_CONTAINER_CREDENTIALS_FULL_URI=fake_aws.url + "/v1/credentials",
                          AWS_CONTAINER_AUTHORIZATION_TOKEN=token))
    gw.wait_readyz()
    call(gw, hot, 5)
    issued = len(fake_aws.issued_credentials())
    hits = load.SteadyLoad(gw.grpc_target, [hot], threads=1, timeout=2).start()
    misses = load.SteadyLoad(gw.grpc_target, cold, threads=2, timeout=2,
                             metadata=[("cache-control", "no-cache")]).start()
    try:
        time.sleep(0.5)
        t_fault = misses.now()
        fake_aws.fail(service="container", count=100, **fault)
        fake_aws.fail(count=1, status=400, type="ExpiredTokenException",
                      message="The security token included in the request is expired")
        gw.wait_for_log(lambda r: r.get("msg") == "AWS credentials fetch failed", timeout=15)
        t_failed = misses.now()
        time.sleep(1.0)
        fake_aws.clear_failures()
        t_clear = misses.now()
        time.sleep(1.0)
    finally:
        hits.stop()
        misses.stop()
    during = misses.window(t_fault, t_failed + 1.0)
    after = misses.window(t_failed + 0.1)
    failures = [r for r in gw.log_records() if r.get("msg") == "AWS credentials fetch failed"]
    kind = "slow" if "delay_ms" in fault else fault.get("action") or fault["status"]
    load.record("credential source %s during a refresh" % kind,
                "refresh failed after %.1f s (still_valid=%s); cache hits %s; upstream calls "
                "while it failed %s; after it %s" % (
                    t_failed - t_fault, failures[0]["still_valid"], load.summary(hits.calls),
                    load.summary(during), load.summary(after)))
    assert all(f["still_valid"] for f in failures), failures
    # Cache hits never wait for credentials: all OK within their 2 s deadline (a tighter bound
    # would be a timing assertion on a shared 2-core machine; the figures are recorded above).
    assert load.codes(hits.calls) == {"OK": len(hits.calls)}, load.summary(hits.calls)
    # Upstream calls: OK, or (only while a forced refresh hangs on a slow source) their
    # deadline, ended by the gateway with a status that says so.
    for c in misses.calls:
        assert c.code == "OK" or (c.code == "DEADLINE_EXCEEDED" and "delay_ms" in fault), c
        assert c.latency < 2.5, c
    # Once the refresh failed, the last good credentials sign every call.
    assert load.codes(after) == {"OK": len(after)}, load.summary(after)
    assert len(after) > 10
    if "delay_ms" not in fault:
        assert load.codes(misses.calls) == {"OK": len(misses.calls)}, load.summary(misses.calls)
    fake_aws.assert_no_signature_failures()
    # The source works again: the next forced refresh gets new credentials.
    fake_aws.fail(count=1, status=400, type="ExpiredTokenException", message="expired")
    assert call(gw, cold[0], 10, metadata=[("cache-control", "no-cache")])[0] == "OK"
    h.wait_until(lambda: len(fake_aws.issued_credentials()) > issued, timeout=10,
                 what="new credentials after the source recovered")
    h.secrets_never_logged(gw, [token] + [c["secret_key"] for c in fake_aws.issued_credentials()])
