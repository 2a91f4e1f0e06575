"""Issue 10: WatchBatchInferenceJob on one replica, with real grpcio clients, the AWS fake moving
the job along (its /__control/jobs/status), and a 1 s poll interval.

What a stream says (exactly the transitions, then OK; a terminal job once; NOT_FOUND;
INVALID_ARGUMENT without an upstream call), what it costs (hundreds of watchers, one poll per
interval), what it survives (upstream 500s) and how it ends (deadline, cancel, the
--watch-max-streams bound, SIGTERM)."""

import concurrent.futures
import signal
import time

import grpc
import pytest

import pgw_harness as h

PREFIX = "arn:aws:personalize:us-east-1:123456789012:batch-inference-job/"
WATCH_ARGS = ["--watch-poll-interval-s", "1"]


def upstream_calls(fake, arn):
    return fake.stats()["personalize"]["per_arn"].get(arn, 0)


def watch_gauges(gw):
    m = h.scrape_metrics(gw)
    return (m.get(("pgw_watch_streams", frozenset()), 0), m.get(("pgw_watch_arns", frozenset()), 0))


def test_pending_in_progress_active_gives_exactly_three_messages_then_ok(gateway, fake_aws):
    arn = PREFIX + "transitions"
    fake_aws.add_job(arn, status="PENDING")
    gw = gateway(extra_args=WATCH_ARGS)
    with grpc.insecure_channel(gw.grpc_target) as ch:
        w = h.WatchStream(ch, arn, timeout=30)
        assert w.wait_messages(1) == ["PENDING"]
        # Polls run meanwhile and see the same job: never a duplicate.
        h.wait_until(lambda: upstream_calls(fake_aws, arn) >= 3, timeout=10, what="two polls")
        assert w.statuses() == ["PENDING"]
        fake_aws.set_job_status(arn, "IN PROGRESS")
        assert w.wait_messages(2) == ["PENDING", "IN PROGRESS"]
        h.wait_until(lambda: upstream_calls(fake_aws, arn) >= 6, timeout=10, what="more polls")
        fake_aws.set_job_status(arn, "ACTIVE")
        assert w.wait_done(10) == grpc.StatusCode.OK
    assert w.statuses() == ["PENDING", "IN PROGRESS", "ACTIVE"]
    jobs = [job for _, job in w.jobs]
    assert all(j.batch_inference_job_arn == arn for j in jobs)
    # Each message carries the job's own last-updated time, which moved with each change.
    times = [j.last_updated_date_time.ToNanoseconds() for j in jobs]
    assert times[0] < times[1] < times[2]
    h.wait_until(lambda: watch_gauges(gw) == (0, 0), timeout=5, what="watch gauges back to 0")
    assert h.metric(gw, "pgw_watch_messages_total", frontend="grpc") == 3
    assert h.metric(gw, "pgw_watch_streams_ended_total", frontend="grpc", code="OK") == 1
    fake_aws.assert_no_signature_failures()


def test_terminal_job_gives_one_message_then_ok(gateway, fake_aws):
    arn = PREFIX + "already-done"
    fake_aws.add_job(arn, status="CREATE FAILED")
    gw = gateway(extra_args=WATCH_ARGS)
    with grpc.insecure_channel(gw.grpc_target) as ch:
        w = h.WatchStream(ch, arn, timeout=10)
        assert w.wait_done(5) == grpc.StatusCode.OK
        assert w.statuses() == ["CREATE FAILED"]
        # The first message is what Describe answers: here from the cache Describe filled.
        resp, _, _ = h.describe(gw.grpc_target, arn)
        assert w.jobs[0][1] == resp.batch_inference_job
    assert watch_gauges(gw) == (0, 0)


def test_unknown_arn_is_not_found_and_malformed_is_invalid_argument_without_upstream(
        gateway, fake_aws):
    gw = gateway(extra_args=WATCH_ARGS)
    with grpc.insecure_channel(gw.grpc_target) as ch:
        missing = h.WatchStream(ch, PREFIX + "no-such-job", timeout=10)
        assert missing.wait_done(5) == grpc.StatusCode.NOT_FOUND
        assert missing.jobs == []
        assert "ResourceNotFoundException" in missing.details
        fake_aws.reset_stats()
        for bad in ("arn:aws:personalize:us-east-1:123456789012:batch-inference-job/",
                    "not-an-arn", PREFIX + "x" * 300, ""):
            w = h.WatchStream(ch, bad, timeout=10)
            assert w.wait_done(5) == grpc.StatusCode.INVALID_ARGUMENT, bad
            assert w.jobs == []
    assert fake_aws.stats()["personalize"]["requests"] == 0
    assert watch_gauges(gw) == (0, 0)


def test_job_that_becomes_unknown_ends_the_stream_not_found(gateway, fake_aws):
    arn = PREFIX + "vanishes"
    fake_aws.add_job(arn, status="IN PROGRESS")
    gw = gateway(extra_args=WATCH_ARGS)
    with grpc.insecure_channel(gw.grpc_target) as ch:
        w = h.WatchStream(ch, arn, timeout=30)
        assert w.wait_messages(1) == ["IN PROGRESS"]
        fake_aws.remove_job(arn)
        assert w.wait_done(10) == grpc.StatusCode.NOT_FOUND
        assert w.statuses() == ["IN PROGRESS"]
    h.wait_until(lambda: watch_gauges(gw) == (0, 0), timeout=5, what="watch gauges back to 0")


def test_hundreds_of_watchers_cost_one_poll_per_interval_and_all_see_each_change(
        gateway, fake_aws):
    arn = PREFIX + "crowd"
    fake_aws.add_job(arn, status="PENDING")
    gw = gateway(extra_args=WATCH_ARGS)
    n = 300
    channels = [grpc.insecure_channel(gw.grpc_target) for _ in range(4)]
    try:
        watchers = [h.WatchStream(channels[i % 4], arn, timeout=60) for i in range(n)]
        for w in watchers:
            assert w.wait_messages(1) == ["PENDING"]
        assert watch_gauges(gw) == (n, 1)
        # A window of whole intervals: one poll each, whatever the number of watchers.
        start_calls, start = upstream_calls(fake_aws, arn), time.monotonic()
        time.sleep(5)
        calls = upstream_calls(fake_aws, arn) - start_calls
        elapsed = time.monotonic() - start
        assert calls <= int(elapsed) + 1, (calls, elapsed)
        assert calls >= int(elapsed) - 1, (calls, elapsed)
        fake_aws.set_job_status(arn, "IN PROGRESS")
        for w in watchers:
            assert w.wait_messages(2) == ["PENDING", "IN PROGRESS"]
        fake_aws.set_job_status(arn, "ACTIVE")
        for w in watchers:
            assert w.wait_done(10) == grpc.StatusCode.OK
            assert w.statuses() == ["PENDING", "IN PROGRESS", "ACTIVE"]
    finally:
        for ch in channels:
            ch.close()
    h.wait_until(lambda: watch_gauges(gw) == (0, 0), timeout=5, what="watch gauges back to 0")
    assert h.metric(gw, "pgw_watch_messages_total", frontend="grpc") == 3 * n


def test_upstream_500s_keep_the_stream_open_and_later_changes_arrive(gateway, fake_aws):
    arn = PREFIX + "flaky"
    fake_aws.add_job(arn, status="PENDING")
    gw = gateway(extra_args=WATCH_ARGS + ["--upstream-max-attempts", "2"])
    with grpc.insecure_channel(gw.grpc_target) as ch:
        w = h.WatchStream(ch, arn, timeout=60)
        assert w.wait_messages(1) == ["PENDING"]
        fake_aws.fail(arn=arn, status=500, type="InternalFailure", message="injected")
        fake_aws.set_job_status(arn, "IN PROGRESS")  # hidden behind the failures
        failed_before = fake_aws.stats()["personalize"]["responses_by_status"].get("500", 0)
        h.wait_until(
            lambda: fake_aws.stats()["personalize"]["responses_by_status"].get("500", 0)
            >= failed_before + 4, timeout=15, what="several failed polls")
        time.sleep(1)
        assert not w.done.is_set(), (w.code, w.details)
        assert w.statuses() == ["PENDING"]
        fake_aws.clear_failures()
        # Backoff is at most four intervals.
        assert w.wait_messages(2, timeout=10) == ["PENDING", "IN PROGRESS"]
        fake_aws.set_job_status(arn, "ACTIVE")
        assert w.wait_done(10) == grpc.StatusCode.OK
    assert w.statuses() == ["PENDING", "IN PROGRESS", "ACTIVE"]


def test_deadline_and_cancel_end_streams_promptly_and_the_poll_loop_stops(gateway, fake_aws):
    arn = PREFIX + "leaving"
    fake_aws.add_job(arn, status="IN PROGRESS")
    gw = gateway(extra_args=WATCH_ARGS)
    with grpc.insecure_channel(gw.grpc_target) as ch:
        short = h.WatchStream(ch, arn, timeout=2.5)
        cancelled = h.WatchStream(ch, arn, timeout=60)
        short.wait_messages(1)
        cancelled.wait_messages(1)
        assert watch_gauges(gw) == (2, 1)
        assert short.wait_done(5) == grpc.StatusCode.DEADLINE_EXCEEDED
        # The server noticed the deadline too: its watcher left.
        h.wait_until(lambda: watch_gauges(gw) == (1, 1), timeout=2, what="one stream left")
        cancelled.cancel()
        assert cancelled.wait_done(2) == grpc.StatusCode.CANCELLED
        h.wait_until(lambda: watch_gauges(gw) == (0, 0), timeout=2, what="no watcher left")
    # No watcher: no poll.
    calls = upstream_calls(fake_aws, arn)
    time.sleep(3)
    assert upstream_calls(fake_aws, arn) == calls
    assert h.metric(gw, "pgw_watch_streams_ended_total", frontend="grpc", code="CANCELLED") == 2


def test_watch_max_streams_reached_is_resource_exhausted(gateway, fake_aws):
    arns = [PREFIX + "bounded-%d" % i for i in range(3)]
    for arn in arns:
        fake_aws.add_job(arn, status="PENDING")
    gw = gateway(extra_args=WATCH_ARGS + ["--watch-max-streams", "2"])
    with grpc.insecure_channel(gw.grpc_target) as ch:
        a, b = h.WatchStream(ch, arns[0], timeout=30), h.WatchStream(ch, arns[1], timeout=30)
        a.wait_messages(1)
        b.wait_messages(1)
        third = h.WatchStream(ch, arns[2], timeout=30)
        assert third.wait_done(5) == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "--watch-max-streams" in third.details
        status, _, body = gw.http_get("/v1/batch-inference-jobs/%s?watch=true" % arns[2])
        assert status == 429, body
        # The Describe checks come first: a malformed ARN is still INVALID_ARGUMENT, and a job
        # already done needs no slot (one message, then OK).
        bad = h.WatchStream(ch, "not-an-arn", timeout=30)
        assert bad.wait_done(5) == grpc.StatusCode.INVALID_ARGUMENT
        done_arn = PREFIX + "bounded-done"
        fake_aws.add_job(done_arn, status="ACTIVE")
        done = h.WatchStream(ch, done_arn, timeout=30)
        assert done.wait_done(5) == grpc.StatusCode.OK
        assert done.statuses() == ["ACTIVE"]
        a.cancel()
        a.wait_done(5)
        h.wait_until(lambda: watch_gauges(gw)[0] == 1, timeout=2, what="a slot given back")
        again = h.WatchStream(ch, arns[2], timeout=30)
        assert again.wait_messages(1) == ["PENDING"]
        again.cancel()
        b.cancel()
    assert h.metric(gw, "pgw_rejected_total", reason="watch_max_streams") == 2


def test_sigterm_with_open_streams_ends_them_unavailable_and_exits_0(gateway, fake_aws):
    arn = PREFIX + "shutdown"
    fake_aws.add_job(arn, status="IN PROGRESS")
    gw = gateway(extra_args=WATCH_ARGS + ["--shutdown-grace-ms", "5000"])
    ch = grpc.insecure_channel(gw.grpc_target)
    try:
        watchers = [h.WatchStream(ch, arn, timeout=60) for _ in range(5)]
        for w in watchers:
            w.wait_messages(1)
        _, hp = h.protos()
        health = ch.unary_stream("/grpc.health.v1.Health/Watch",
                                 request_serializer=hp.HealthCheckRequest.SerializeToString,
                                 response_deserializer=hp.HealthCheckResponse.FromString)
        health_stream = health(hp.HealthCheckRequest(service=""), timeout=30)
        assert next(health_stream).status == hp.HealthCheckResponse.SERVING
        gw.signal(signal.SIGTERM)
        # Readiness flips for the probes ...
        assert next(health_stream).status == hp.HealthCheckResponse.NOT_SERVING
        # ... and the watch streams end UNAVAILABLE: their clients reconnect elsewhere.
        for w in watchers:
            assert w.wait_done(5) == grpc.StatusCode.UNAVAILABLE, w.details
            assert "shutting down" in w.details
            assert w.statuses() == ["IN PROGRESS"]
        assert gw.stop(timeout=15) == 0
    finally:
        ch.close()
