"""Issue 12, item 2: Redis faults under steady load: SIGKILLed, SIGSTOPped, answering slower
than --redis-timeout-ms.

The gateway runs with Redis as its only cache tier (--l1-max-entries 0), so every call asks
Redis, and AWS (the fake) answers: a Redis problem must never fail a call AWS can answer.
Each test keeps four callers busy (2 s deadlines) through the fault and after it, then
asserts on every call: all OK (so none ran into its deadline), the slowest bounded, the cache
tier used again afterwards."""

import signal
import time

import pytest

import pgw_harness as h
import pgw_load as load

ARNS = ["arn:aws:personalize:us-east-1:123456789012:batch-inference-job/redis-fault-%d" % i
        for i in range(20)]


@pytest.fixture
def warm(gateway, fake_aws, redis_server):
    for a in ARNS:
        fake_aws.add_job(a, status="ACTIVE")
    gw = gateway(["--redis-url", redis_server.url, "--l1-max-entries", "0",
                  "--redis-timeout-ms", "50"])
    gw.wait_readyz()
    for a in ARNS:
        h.describe(gw.grpc_target, a)
    h.wait_until(lambda: all(redis_server.client().exists(
        b"pgw:v1:bij:" + a.encode()) for a in ARNS), timeout=10, what="every ARN in Redis")
    return gw


def redis_hits(gw):
    return load.metric(gw, 'pgw_cache_requests_total{tier="redis",result="hit"}')


def until_redis_hits_again(gw, ld, since, timeout=30):
    """Seconds after `since` (load clock) until the load's calls are answered by Redis again."""
    def hit_again():
        return [c for c in ld.window(since) if c.cache == "hit"]
    h.wait_until(hit_again, timeout=timeout, interval=0.1, what="Redis hits again")
    return min(c.start for c in ld.window(since) if c.cache == "hit") - since


def test_redis_sigkilled_under_load(warm, redis_server, fake_aws):
    gw = warm
    with load.SteadyLoad(gw.grpc_target, ARNS, threads=4, timeout=2) as ld:
        time.sleep(1.0)
        t_kill = ld.now()
        redis_server.stop(sig=signal.SIGKILL)
        time.sleep(2.5)
        t_start = ld.now()
        redis_server.start()  # same port, empty (no persistence)
        recovered = until_redis_hits_again(gw, ld, t_start)
        time.sleep(0.5)
    calls = ld.calls
    outage = ld.window(t_kill, t_start)
    load.record("redis SIGKILL", "%s; during the 2.5 s outage %s; Redis hits again %.1f s after "
                "its restart" % (load.summary(calls), load.summary(outage), recovered))
    assert load.codes(calls) == {"OK": len(calls)}, load.summary(calls)
    assert load.slowest(calls) < 2
    assert len(outage) > 20 and load.caches(outage).get("miss", 0) > 0  # AWS answered instead
    assert gw.running()


def test_redis_sigstopped_under_load(warm, redis_server, fake_aws):
    """A stopped Redis keeps its connections open and answers nothing: every command waits
    for --redis-timeout-ms, then the breaker opens and calls stop waiting on it."""
    gw = warm
    with load.SteadyLoad(gw.grpc_target, ARNS, threads=4, timeout=2) as ld:
        time.sleep(1.0)
        t_stop = ld.now()
        redis_server.proc.send_signal(signal.SIGSTOP)
        try:
            time.sleep(2.5)
        finally:
            t_cont = ld.now()
            redis_server.proc.send_signal(signal.SIGCONT)
        recovered = until_redis_hits_again(gw, ld, t_cont)
        time.sleep(0.5)
    calls = ld.calls
    outage = ld.window(t_stop, t_cont)
    timeouts = load.metric(gw, 'pgw_redis_errors_total{kind="timeout"}')
    skipped = load.metric(gw, 'pgw_redis_errors_total{kind="breaker_open"}')
    load.record("redis SIGSTOP", "%s; during the 2.5 s stop %s; %d Redis timeouts, %d skipped by "
                "the open breaker; hits again %.1f s after SIGCONT" % (
                    load.summary(calls), load.summary(outage), timeouts, skipped, recovered))
    assert load.codes(calls) == {"OK": len(calls)}, load.summary(calls)
    assert load.slowest(calls) < 2
    # The breaker bounds the waiting: far fewer timeouts than calls during the stop.
    assert timeouts >= 1 and skipped > timeouts, (timeouts, skipped)
    assert load.percentile(outage, 50) < 0.05  # most calls did not wait on Redis at all
    assert gw.running()


def test_redis_slower_than_its_timeout(warm, redis_server, fake_aws):
    """Redis stalls in bursts (SIGSTOP 150 ms, SIGCONT 150 ms, for 3 s): its answers come
    later than --redis-timeout-ms (50 ms), so they count as misses and AWS answers."""
    gw = warm
    before = redis_hits(gw)
    with load.SteadyLoad(gw.grpc_target, ARNS, threads=4, timeout=2) as ld:
        time.sleep(0.5)
        t0 = ld.now()
        try:
            while ld.now() - t0 < 3.0:
                redis_server.proc.send_signal(signal.SIGSTOP)
                time.sleep(0.15)
                redis_server.proc.send_signal(signal.SIGCONT)
                time.sleep(0.15)
        finally:
            redis_server.proc.send_signal(signal.SIGCONT)
        t1 = ld.now()
        recovered = until_redis_hits_again(gw, ld, t1)
        time.sleep(0.5)
    calls = ld.calls
    slow = ld.window(t0, t1)
    timeouts = load.metric(gw, 'pgw_redis_errors_total{kind="timeout"}')
    load.record("redis slow (SIGSTOP bursts)", "%s; during 3 s of stalls %s; %d Redis timeouts; "
                "hits again %.1f s after" % (load.summary(calls), load.summary(slow), timeouts,
                                             recovered))
    assert load.codes(calls) == {"OK": len(calls)}, load.summary(calls)
    assert load.slowest(calls) < 2
    assert timeouts >= 1
    assert redis_hits(gw) > before
    assert gw.running()
