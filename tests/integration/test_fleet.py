"""Issue 9: three gateway processes on one real redis-server coordinate their upstream fetches.

A stampede of one cold ARN over the three costs AWS one call; distinct ARNs cost one each; the
replica holding a fetch lease is SIGKILLed mid-fetch and the others take over within the lease;
with Redis gone each replica coalesces on its own."""

import concurrent.futures
import signal
import time

import grpc
from prometheus_client.parser import text_string_to_metric_families

import pgw_harness as h

PREFIX = "arn:aws:personalize:us-east-1:123456789012:batch-inference-job/"


def upstream_calls(fake, arn):
    return fake.stats()["personalize"]["per_arn"].get(arn, 0)


def lease_counts(gw):
    """pgw_fleet_leases_total by outcome."""
    status, _, body = gw.http_get("/metrics")
    assert status == 200
    out = {}
    for fam in text_string_to_metric_families(body.decode()):
        if fam.name == "pgw_fleet_leases":
            for s in fam.samples:
                if s.name.endswith("_total"):
                    out[s.labels["outcome"]] = int(s.value)
    return out


def fleet_of_three(gateway, redis_server, extra=()):
    args = ["--redis-url", redis_server.url, "--redis-timeout-ms", "1000"] + list(extra)
    gws = [gateway(extra_args=args) for _ in range(3)]
    # Each replica subscribes to the notice channel once its Redis connection is up.
    r = redis_server.client()
    h.wait_until(lambda: r.pubsub_numsub("pgw:v1:fill")[0][1] >= 3, timeout=15,
                 what="three subscribers on pgw:v1:fill")
    return gws


def concurrent_describes(calls, timeout=20):
    """calls: list of (channel, arn). Runs them all at once; returns the list of grpc codes."""
    futures = []
    for channel, arn in calls:
        stub, req = h.describe_stub(channel)
        futures.append(stub.future(req(batch_inference_job_arn=arn), timeout=timeout))
    codes = []
    for f in futures:
        try:
            f.result()
            codes.append(grpc.StatusCode.OK)
        except grpc.RpcError as e:
            codes.append(e.code())
    return codes


def test_stampede_of_one_arn_over_three_replicas_costs_one_upstream_call(
        gateway, fake_aws, redis_server):
    arn = PREFIX + "stampede"
    fake_aws.add_job(arn, status="IN PROGRESS")
    fake_aws.set_latency(300, arn=arn)
    gws = fleet_of_three(gateway, redis_server)
    channels = [grpc.insecure_channel(gw.grpc_target) for gw in gws]
    try:
        codes = concurrent_describes([(channels[i % 3], arn) for i in range(300)])
    finally:
        for ch in channels:
            ch.close()
    assert codes == [grpc.StatusCode.OK] * 300
    assert upstream_calls(fake_aws, arn) == 1
    counts = [lease_counts(gw) for gw in gws]
    assert sum(c.get("won", 0) for c in counts) == 1, counts
    assert sum(c.get("waited", 0) for c in counts) == 2, counts
    assert sum(c.get("fallback", 0) for c in counts) == 0, counts
    fake_aws.assert_no_signature_failures()


def test_distinct_cold_arns_asked_on_every_replica_cost_one_call_each(
        gateway, fake_aws, redis_server):
    arns = [PREFIX + "distinct-%03d" % i for i in range(300)]
    for arn in arns:
        fake_aws.add_job(arn, status="ACTIVE")
    fake_aws.set_latency(100)
    gws = fleet_of_three(gateway, redis_server)
    channels = [grpc.insecure_channel(gw.grpc_target) for gw in gws]
    try:
        codes = concurrent_describes([(ch, arn) for arn in arns for ch in channels], timeout=30)
    finally:
        for ch in channels:
            ch.close()
    assert codes.count(grpc.StatusCode.OK) == 900, codes
    total = sum(upstream_calls(fake_aws, arn) for arn in arns)
    # One per ARN, give or take a Redis command that timed out under load (then that replica
    # fetches alone, by design): "about 300".
    assert 300 <= total <= 315, total
    assert all(upstream_calls(fake_aws, arn) >= 1 for arn in arns)


def test_lease_holder_killed_mid_fetch_others_take_over_within_the_lease(
        gateway, fake_aws, redis_server):
    arn = PREFIX + "holder-dies"
    fake_aws.add_job(arn, status="IN PROGRESS")
    latency_ms, lease_ms = 1500, 2000
    fake_aws.set_latency(latency_ms, arn=arn)
    gws = fleet_of_three(gateway, redis_server, extra=["--redis-lease-ms", str(lease_ms)])
    holder, others = gws[0], gws[1:]
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=8)
    try:
        first = pool.submit(h.describe, holder.grpc_target, arn, 20)
        h.wait_until(lambda: upstream_calls(fake_aws, arn) == 1, timeout=10,
                     what="the holder's upstream call")
        r = redis_server.client()
        assert r.get("pgw:v1:lease:" + arn) is not None
        waiting = [pool.submit(h.describe, gw.grpc_target, arn, 20) for gw in others for _ in range(5)]
        time.sleep(0.3)  # they are waiting on the lease now
        assert not any(f.done() for f in waiting)
        killed_at = time.monotonic()
        holder.stop(sig=signal.SIGKILL)
        for f in waiting:
            resp, initial, _ = f.result(timeout=20)
            assert resp.batch_inference_job.batch_inference_job_arn == arn
        took = time.monotonic() - killed_at
        # The lease runs out at most lease_ms after the kill; then one upstream call.
        assert took <= (lease_ms + latency_ms) / 1000.0 + 1.5, took
        try:
            first.result(timeout=20)
        except grpc.RpcError:
            pass  # its replica is dead
    finally:
        pool.shutdown(wait=True)
    assert upstream_calls(fake_aws, arn) == 2  # the dead holder's, and the take-over
    counts = [lease_counts(gw) for gw in others]
    assert sum(c.get("taken_over", 0) for c in counts) == 1, counts


def test_without_redis_each_replica_coalesces_on_its_own(gateway, fake_aws, redis_server):
    arn = PREFIX + "no-redis"
    fake_aws.add_job(arn, status="IN PROGRESS")
    fake_aws.set_latency(300, arn=arn)
    gws = fleet_of_three(gateway, redis_server)
    redis_server.stop(sig=signal.SIGKILL)
    time.sleep(0.5)  # the replicas see their connections drop
    channels = [grpc.insecure_channel(gw.grpc_target) for gw in gws]
    try:
        codes = concurrent_describes([(channels[i % 3], arn) for i in range(90)])
    finally:
        for ch in channels:
            ch.close()
    assert codes == [grpc.StatusCode.OK] * 90
    assert upstream_calls(fake_aws, arn) == 3  # one per replica
    for gw in gws:
        assert lease_counts(gw).get("won", 0) == 0
