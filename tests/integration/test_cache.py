"""Issue 3: the cache tiers, against a real redis-server and the real gateway binary."""

import time

import grpc
import pytest

import pgw_harness as h

ARN = "arn:aws:personalize:us-east-1:123456789012:batch-inference-job/cached-1"
KEY = "pgw:v1:bij:" + ARN


def md(initial):
    return dict(initial)


def upstream_calls(fake, arn=ARN):
    return fake.stats()["personalize"]["per_arn"].get(arn, 0)


def test_repeated_lookups_hit_upstream_once_in_process_cache(gateway, fake_aws):
    fake_aws.add_job(ARN, status="ACTIVE")
    gw = gateway()
    _, first, _ = h.describe(gw.grpc_target, ARN)
    assert md(first)["x-cache"] == "miss"
    for _ in range(20):
        resp, initial, _ = h.describe(gw.grpc_target, ARN)
        assert resp.batch_inference_job.batch_inference_job_arn == ARN
        assert md(initial)["x-cache"] == "hit"
        assert int(md(initial)["age"]) >= 0
    assert upstream_calls(fake_aws) == 1


def test_redis_hits_and_ttls_by_status(gateway, fake_aws, redis_server):
    statuses = {"ACTIVE": 3600, "CREATE FAILED": 3600, "PENDING": 10, "IN PROGRESS": 10,
                "SOMETHING NEW": 10}
    arns = {}
    for i, st in enumerate(statuses):
        arns[st] = "arn:aws:personalize:us-east-1:123456789012:batch-inference-job/ttl-%d" % i
        fake_aws.add_job(arns[st], status=st)
    # L1 off so every answer after the first must come from Redis; no jitter so PTTL is exact.
    gw = gateway(extra_args=["--redis-url", redis_server.url, "--l1-max-entries", "0",
                             "--cache-jitter-pct", "0", "--cache-stale-s", "300"])
    r = redis_server.client()
    for st, ttl in statuses.items():
        h.describe(gw.grpc_target, arns[st])
        key = "pgw:v1:bij:" + arns[st]
        h.wait_until(lambda: r.exists(key), timeout=5, what="redis key for %s" % st)
        pttl = r.pttl(key)
        want = (ttl + 300) * 1000  # fresh TTL plus the stale window
        assert want - 3000 <= pttl <= want, (st, pttl, want)
        _, initial, _ = h.describe(gw.grpc_target, arns[st])
        assert md(initial)["x-cache"] == "hit"
    for st in statuses:
        assert upstream_calls(fake_aws, arns[st]) == 1


def test_ttl_jitter_spreads_expiry(gateway, fake_aws, redis_server):
    gw = gateway(extra_args=["--redis-url", redis_server.url, "--cache-jitter-pct", "10",
                             "--cache-stale-s", "0"])
    arns = ["arn:aws:personalize:us-east-1:123456789012:batch-inference-job/j-%d" % i
            for i in range(20)]
    for a in arns:
        fake_aws.add_job(a, status="ACTIVE")
        h.describe(gw.grpc_target, a)
    r = redis_server.client()
    h.wait_until(lambda: all(r.exists("pgw:v1:bij:" + a) for a in arns), timeout=5, what="keys")
    pttls = [r.pttl("pgw:v1:bij:" + a) for a in arns]
    assert all(3600000 * 0.9 - 5000 <= p <= 3600000 * 1.1 for p in pttls), pttls
    assert len(set(p // 1000 for p in pttls)) > 5  # not all expiring together


def test_negative_caching(gateway, fake_aws):
    missing = "arn:aws:personalize:us-east-1:123456789012:batch-inference-job/missing"
    gw = gateway(extra_args=["--cache-ttl-not-found-s", "1"])
    for i in range(5):
        with pytest.raises(grpc.RpcError) as e:
            h.describe(gw.grpc_target, missing)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
        details = e.value.details()
        # named once, with one request id: a cached answer once wrapped the message again
        assert details.count("ResourceNotFoundException") == 1, details
        assert details.count("request id") == 1, details
        assert details.endswith("(cached)") == (i > 0), details
    assert upstream_calls(fake_aws, missing) == 1
    time.sleep(1.3)
    with pytest.raises(grpc.RpcError):
        h.describe(gw.grpc_target, missing)
    assert upstream_calls(fake_aws, missing) == 2


def test_errors_other_than_not_found_are_never_cached(gateway, fake_aws):
    fake_aws.add_job(ARN)
    gw = gateway()
    fake_aws.fail(count=3, status=400, type="ThrottlingException", message="Rate exceeded")
    with pytest.raises(grpc.RpcError) as e:
        h.describe(gw.grpc_target, ARN, timeout=20)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    resp, initial, _ = h.describe(gw.grpc_target, ARN)
    assert md(initial)["x-cache"] == "miss"
    with pytest.raises(grpc.RpcError) as e:
        h.describe(gw.grpc_target, "arn:aws:personalize:bad")
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_entries_survive_a_gateway_restart(gateway, fake_aws, redis_server):
    fake_aws.add_job(ARN, status="ACTIVE")
    gw = gateway(extra_args=["--redis-url", redis_server.url])
    h.describe(gw.grpc_target, ARN)
    h.wait_until(lambda: redis_server.client().exists(KEY), timeout=5, what="redis key")
    assert gw.stop() == 0
    gw2 = gateway(extra_args=["--redis-url", redis_server.url])
    resp, initial, _ = h.describe(gw2.grpc_target, ARN)
    assert resp.batch_inference_job.batch_inference_job_arn == ARN
    assert md(initial)["x-cache"] == "hit"
    assert upstream_calls(fake_aws) == 1


def test_stampede_of_1000_costs_one_upstream_call(gateway, fake_aws, redis_server):
    fake_aws.add_job(ARN, status="IN PROGRESS")
    fake_aws.set_latency(500)
    gw = gateway(extra_args=["--redis-url", redis_server.url])
    with h.grpc_channel(gw.grpc_target) as ch:
        grpc.channel_ready_future(ch).result(timeout=5)
        stub, request = h.describe_stub(ch)
        req = request(batch_inference_job_arn=ARN)
        futures = [stub.future(req, timeout=30) for _ in range(1000)]
        results = [f.result() for f in futures]
    assert all(r.batch_inference_job.batch_inference_job_arn == ARN for r in results)
    assert upstream_calls(fake_aws) == 1


def test_waiters_share_errors_and_a_cancelled_waiter_does_not_cancel_the_fetch(gateway, fake_aws):
    fake_aws.add_job(ARN)
    fake_aws.set_latency(600)
    gw = gateway()
    with h.grpc_channel(gw.grpc_target) as ch:
        stub, request = h.describe_stub(ch)
        req = request(batch_inference_job_arn=ARN)
        first = stub.future(req, timeout=10)  # the leader
        time.sleep(0.1)
        others = [stub.future(req, timeout=10) for _ in range(10)]
        time.sleep(0.1)
        first.cancel()
        results = [f.result() for f in others]
    assert all(r.batch_inference_job.batch_inference_job_arn == ARN for r in results)
    assert upstream_calls(fake_aws) == 1


def test_redis_down_means_upstream_not_failure_and_recovers(gateway, fake_aws, redis_server):
    fake_aws.add_job(ARN, status="ACTIVE")
    gw = gateway(extra_args=["--redis-url", redis_server.url, "--l1-max-entries", "0"])
    h.describe(gw.grpc_target, ARN)
    _, initial, _ = h.describe(gw.grpc_target, ARN)
    assert md(initial)["x-cache"] == "hit"
    redis_server.stop()
    for _ in range(15):
        resp, initial, _ = h.describe(gw.grpc_target, ARN, timeout=5)
        assert resp.batch_inference_job.batch_inference_job_arn == ARN
        assert md(initial)["x-cache"] == "miss"
    during_outage = upstream_calls(fake_aws)
    assert during_outage >= 15
    redis_server.start()

    def redis_used_again():
        h.describe(gw.grpc_target, ARN, timeout=5)
        _, initial, _ = h.describe(gw.grpc_target, ARN, timeout=5)
        return md(initial)["x-cache"] == "hit"

    h.wait_until(redis_used_again, timeout=60, interval=0.5, what="Redis in use again")
    assert redis_server.client().exists(KEY)


def test_stale_answer_when_upstream_fails(gateway, fake_aws):
    fake_aws.add_job(ARN, status="PENDING")
    gw = gateway(extra_args=["--cache-ttl-running-s", "1", "--cache-jitter-pct", "0",
                             "--cache-stale-s", "60"])
    h.describe(gw.grpc_target, ARN)
    time.sleep(1.2)
    fake_aws.fail(arn=ARN, status=503, type="ServiceUnavailable")
    resp, initial, _ = h.describe(gw.grpc_target, ARN, timeout=20)
    assert resp.batch_inference_job.status == "PENDING"
    assert md(initial)["x-cache"] == "stale"
    assert int(md(initial)["age"]) >= 1
    fake_aws.clear_failures()
    _, initial, _ = h.describe(gw.grpc_target, ARN)
    assert md(initial)["x-cache"] == "miss"


def test_no_cache_goes_upstream_and_refreshes(gateway, fake_aws):
    fake_aws.add_job(ARN, status="PENDING")
    gw = gateway()
    h.describe(gw.grpc_target, ARN)
    fake_aws.add_job(ARN, status="ACTIVE")
    resp, _, _ = h.describe(gw.grpc_target, ARN)
    assert resp.batch_inference_job.status == "PENDING"  # cached
    resp, initial, _ = h.describe(gw.grpc_target, ARN, metadata=[("cache-control", "no-cache")])
    assert resp.batch_inference_job.status == "ACTIVE"
    assert md(initial)["x-cache"] == "miss"
    resp, initial, _ = h.describe(gw.grpc_target, ARN)
    assert resp.batch_inference_job.status == "ACTIVE"  # the refresh updated the cache
    assert md(initial)["x-cache"] == "hit"
    assert upstream_calls(fake_aws) == 2


@pytest.mark.parametrize("garbage", [b"not a cache entry", b"PGW1\x63" + b"\x00" * 60,
                                     b"\x0a\x03abc", b""])
def test_corrupted_or_foreign_value_is_a_miss(gateway, fake_aws, redis_server, garbage):
    fake_aws.add_job(ARN)
    redis_server.client().set(KEY, garbage)
    gw = gateway(extra_args=["--redis-url", redis_server.url, "--l1-max-entries", "0"])
    resp, initial, _ = h.describe(gw.grpc_target, ARN)
    assert resp.batch_inference_job.batch_inference_job_arn == ARN
    assert md(initial)["x-cache"] == "miss"
    assert upstream_calls(fake_aws) == 1
    # the good value replaced the garbage
    _, initial, _ = h.describe(gw.grpc_target, ARN)
    assert md(initial)["x-cache"] == "hit"


def test_redis_password_and_db(gateway, fake_aws, redis_factory):
    r = redis_factory(password="s3cret-redis-pass")
    r.start() if not h.port_open("127.0.0.1", r.port) else None
    fake_aws.add_job(ARN)
    url = "redis://:s3cret-redis-pass@127.0.0.1:%d/3" % r.port
    gw = gateway(extra_args=["--redis-url", url, "--l1-max-entries", "0"])
    h.describe(gw.grpc_target, ARN)
    c = r.client(db=3)
    h.wait_until(lambda: c.exists(KEY), timeout=5, what="key in db 3")
    _, initial, _ = h.describe(gw.grpc_target, ARN)
    assert md(initial)["x-cache"] == "hit"
    gw.stop()
    h.secrets_never_logged(gw, ["s3cret-redis-pass"])
