"""Issue 10: watches across three gateway processes on one real redis-server.

One poll per interval for the whole fleet (the poll lease "pgw:v1:poll:<arn>"), every watcher on
every replica hears each change within 1 s of the poll that saw it (the fill notice on
"pgw:v1:fill"), the polling replica SIGKILLed hands over to another, and Redis gone leaves each
replica polling for its own watchers."""

import signal
import time

import grpc

import pgw_harness as h

PREFIX = "arn:aws:personalize:us-east-1:123456789012:batch-inference-job/"


def upstream_calls(fake, arn):
    return fake.stats()["personalize"]["per_arn"].get(arn, 0)


def fleet_of_three(gateway, redis_server, interval_s):
    args = ["--redis-url", redis_server.url, "--redis-timeout-ms", "1000",
            "--watch-poll-interval-s", str(interval_s)]
    gws = [gateway(extra_args=args) for _ in range(3)]
    r = redis_server.client()
    h.wait_until(lambda: r.pubsub_numsub("pgw:v1:fill")[0][1] >= 3, timeout=15,
                 what="three subscribers on pgw:v1:fill")
    return gws


def fetch_polls(gw):
    return h.metric(gw, "pgw_watch_polls_total", mode="fetch")


def open_watchers(gws, arn, per_replica):
    channels = [grpc.insecure_channel(gw.grpc_target) for gw in gws]
    watchers = [[h.WatchStream(ch, arn, timeout=90) for _ in range(per_replica)] for ch in channels]
    return channels, watchers


def test_one_poll_per_interval_for_the_fleet_and_every_watcher_hears_within_1s(
        gateway, fake_aws, redis_server):
    arn = PREFIX + "fleet-watch"
    fake_aws.add_job(arn, status="PENDING")
    # A long interval: the replicas that do not poll peek at Redis only every 3 s, so hearing of
    # a change within 1 s takes the notice.
    interval = 3
    gws = fleet_of_three(gateway, redis_server, interval)
    # Each replica's poll loop ticks from its first watcher on: open them 1.5 s apart, so the
    # replicas' peeks fall well after the poll (1.5 s and 3 s), out of the 1 s bound.
    channels = [grpc.insecure_channel(gw.grpc_target) for gw in gws]
    watchers = []
    for ch in channels:
        watchers.append([h.WatchStream(ch, arn, timeout=90) for _ in range(20)])
        for w in watchers[-1]:
            assert w.wait_messages(1) == ["PENDING"]
        time.sleep(1.5)
    everyone = [w for group in watchers for w in group]
    try:
        start_calls, start = upstream_calls(fake_aws, arn), time.monotonic()
        time.sleep(2 * interval)
        calls = upstream_calls(fake_aws, arn) - start_calls
        elapsed = time.monotonic() - start
        assert calls <= int(elapsed / interval) + 1, (calls, elapsed)
        # Exactly one replica polls AWS; the other two only look at the shared cache.
        polling = [gw for gw in gws if fetch_polls(gw) > 0]
        assert len(polling) == 1, [fetch_polls(gw) for gw in gws]
        for want in (["PENDING", "IN PROGRESS"], ["PENDING", "IN PROGRESS", "ACTIVE"]):
            fake_aws.set_job_status(arn, want[-1])
            for w in everyone:
                w.wait_messages(len(want), timeout=3 * interval)
                assert w.statuses() == want
            received = [w.jobs[len(want) - 1][0] for w in everyone]
            assert max(received) - min(received) <= 1.0, max(received) - min(received)
        for w in everyone:
            assert w.wait_done(5) == grpc.StatusCode.OK
    finally:
        for ch in channels:
            ch.close()
    fake_aws.assert_no_signature_failures()


def test_polling_replica_killed_another_takes_over(gateway, fake_aws, redis_server):
    arn = PREFIX + "fleet-takeover"
    fake_aws.add_job(arn, status="PENDING")
    gws = fleet_of_three(gateway, redis_server, 1)
    channels, watchers = open_watchers(gws, arn, 10)
    try:
        for group in watchers:
            for w in group:
                assert w.wait_messages(1) == ["PENDING"]
        h.wait_until(lambda: sum(fetch_polls(gw) > 0 for gw in gws) == 1, timeout=5,
                     what="one replica polling")
        holder = next(i for i, gw in enumerate(gws) if fetch_polls(gw) > 0)
        survivors = [i for i in range(3) if i != holder]
        assert redis_server.client().get("pgw:v1:poll:" + arn) is not None
        gws[holder].stop(sig=signal.SIGKILL)
        fake_aws.set_job_status(arn, "IN PROGRESS")
        # The lease lapses two intervals after its last renewal; the next to ask polls.
        for i in survivors:
            for w in watchers[i]:
                assert w.wait_messages(2, timeout=8) == ["PENDING", "IN PROGRESS"]
        changes = [h.metric(gws[i], "pgw_watch_poller_changes_total") for i in survivors]
        assert sorted(changes) == [0, 1], changes
        # Still one poll per interval for the fleet.
        start_calls, start = upstream_calls(fake_aws, arn), time.monotonic()
        time.sleep(3)
        calls = upstream_calls(fake_aws, arn) - start_calls
        assert calls <= int(time.monotonic() - start) + 1, calls
        fake_aws.set_job_status(arn, "ACTIVE")
        for i in survivors:
            for w in watchers[i]:
                assert w.wait_done(8) == grpc.StatusCode.OK
                assert w.statuses() == ["PENDING", "IN PROGRESS", "ACTIVE"]
    finally:
        for ch in channels:
            ch.close()


def test_redis_gone_each_replica_polls_for_its_own_watchers(gateway, fake_aws, redis_server):
    arn = PREFIX + "fleet-no-redis"
    fake_aws.add_job(arn, status="PENDING")
    gws = fleet_of_three(gateway, redis_server, 1)
    channels, watchers = open_watchers(gws, arn, 3)
    everyone = [w for group in watchers for w in group]
    try:
        for w in everyone:
            w.wait_messages(1)
        redis_server.stop(sig=signal.SIGKILL)
        h.wait_until(lambda: all(fetch_polls(gw) > 0 for gw in gws), timeout=10,
                     what="every replica polling for itself")
        fake_aws.set_job_status(arn, "ACTIVE")
        for w in everyone:
            assert w.wait_done(8) == grpc.StatusCode.OK
            assert w.statuses() == ["PENDING", "ACTIVE"]
    finally:
        for ch in channels:
            ch.close()
