"""Issue 10: `GET /v1/batch-inference-jobs/{ARN}?watch=true` as server-sent events, read by real
curl (-N: no buffering), as a shell script would."""

import json
import signal
import subprocess
import threading
import time
import urllib.parse

import pgw_harness as h

PREFIX = "arn:aws:personalize:us-east-1:123456789012:batch-inference-job/"
WATCH_ARGS = ["--watch-poll-interval-s", "1"]


class Curl:
    """curl -N on a watch URL; its stdout is read line by line by a thread."""

    def __init__(self, gw, arn, extra=()):
        url = "%s/v1/batch-inference-jobs/%s?watch=true" % (
            gw.http_url, urllib.parse.quote(arn, safe=""))
        self.proc = subprocess.Popen(["curl", "-N", "-sS", "-i", *extra, url],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL)
        self.lines = []
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self):
        for raw in self.proc.stdout:
            self.lines.append(raw.decode().rstrip("\r\n"))

    def wait(self, timeout=15):
        code = self.proc.wait(timeout=timeout)
        self._t.join(5)
        return code

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()  # our own child, by its Popen handle
            self.proc.wait(5)

    def status(self):
        return int(self.lines[0].split()[1]) if self.lines else None

    def header(self, name):
        for line in self.lines[1:]:
            if not line:
                break
            k, _, v = line.partition(":")
            if k.strip().lower() == name:
                return v.strip()
        return None

    def body_lines(self):
        return self.lines[self.lines.index("") + 1:] if "" in self.lines else []

    def events(self):
        """[(event name, parsed data)] in order; comments skipped."""
        out, name = [], "message"
        for line in self.body_lines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                out.append((name, json.loads(line[5:].strip())))
                name = "message"
        return out

    def statuses(self):
        return [data["batchInferenceJob"]["status"] for name, data in self.events()
                if name == "message"]


def watch_gauges(gw):
    m = h.scrape_metrics(gw)
    return (m.get(("pgw_watch_streams", frozenset()), 0), m.get(("pgw_watch_arns", frozenset()), 0))


def test_curl_sees_each_change_then_the_response_ends(gateway, fake_aws):
    arn = PREFIX + "sse"
    fake_aws.add_job(arn, status="PENDING")
    # A short inactivity limit: the stream outlives it (heartbeat comments every half of it).
    gw = gateway(extra_args=WATCH_ARGS + ["--http-request-timeout-ms", "1000"])
    curl = Curl(gw, arn)
    try:
        h.wait_until(lambda: curl.statuses() == ["PENDING"], timeout=10, what="first event")
        assert curl.status() == 200
        assert curl.header("content-type") == "text/event-stream"
        assert curl.header("transfer-encoding") == "chunked"
        time.sleep(2.5)
        assert curl.proc.poll() is None
        assert any(line.startswith(":") for line in curl.body_lines())  # heartbeats
        assert curl.statuses() == ["PENDING"]
        fake_aws.set_job_status(arn, "IN PROGRESS")
        h.wait_until(lambda: len(curl.statuses()) == 2, timeout=10, what="second event")
        fake_aws.set_job_status(arn, "ACTIVE")
        assert curl.wait(10) == 0  # the response ended: chunked terminator, curl exits 0
    finally:
        curl.stop()
    assert curl.statuses() == ["PENDING", "IN PROGRESS", "ACTIVE"]
    # Each event is the proto3 JSON a plain GET answers.
    status, _, body = gw.http_get("/v1/batch-inference-jobs/" + urllib.parse.quote(arn, safe=""))
    assert status == 200
    assert curl.events()[-1][1] == json.loads(body)
    h.wait_until(lambda: watch_gauges(gw) == (0, 0), timeout=5, what="no stream left")
    assert h.metric(gw, "pgw_watch_messages_total", frontend="http_sse") == 3


def test_errors_before_the_first_event_are_the_plain_get_answers(gateway, fake_aws):
    gw = gateway(extra_args=WATCH_ARGS)
    for arn, want in (("not-an-arn", 400), (PREFIX + "nobody", 404)):
        path = "/v1/batch-inference-jobs/" + urllib.parse.quote(arn, safe="")
        plain_status, _, plain_body = gw.http_get(path)
        status, headers, body = gw.http_get(path + "?watch=true")
        assert (status, plain_status) == (want, want)
        assert headers["content-type"] == "application/json"
        got, plain = json.loads(body), json.loads(plain_body)
        assert got["code"] == plain["code"]
        if want == 400:
            assert got == plain
    status, _, body = gw.http_get("/v1/batch-inference-jobs/%s?watch=maybe" % (PREFIX + "x"))
    assert status == 400 and b"watch" in body
    assert watch_gauges(gw) == (0, 0)


def test_client_disconnect_detaches_the_watcher(gateway, fake_aws):
    arn = PREFIX + "sse-leaves"
    fake_aws.add_job(arn, status="IN PROGRESS")
    gw = gateway(extra_args=WATCH_ARGS)
    curl = Curl(gw, arn, extra=["--max-time", "2"])
    try:
        h.wait_until(lambda: curl.statuses() == ["IN PROGRESS"], timeout=10, what="first event")
        assert watch_gauges(gw) == (1, 1)
        assert curl.wait(10) == 28  # curl's "operation timed out": it hung up
    finally:
        curl.stop()
    h.wait_until(lambda: watch_gauges(gw) == (0, 0), timeout=3, what="the watcher detached")
    calls = fake_aws.stats()["personalize"]["per_arn"].get(arn, 0)
    time.sleep(2.5)
    assert fake_aws.stats()["personalize"]["per_arn"].get(arn, 0) == calls  # no poll loop left


def test_job_gone_and_shutdown_end_the_stream_with_an_error_event(gateway, fake_aws):
    gone, stays = PREFIX + "sse-gone", PREFIX + "sse-stays"
    fake_aws.add_job(gone, status="IN PROGRESS")
    fake_aws.add_job(stays, status="IN PROGRESS")
    gw = gateway(extra_args=WATCH_ARGS + ["--shutdown-grace-ms", "5000"])
    a, b = Curl(gw, gone), Curl(gw, stays)
    try:
        h.wait_until(lambda: a.statuses() and b.statuses(), timeout=10, what="first events")
        fake_aws.remove_job(gone)
        assert a.wait(10) == 0
        assert [n for n, _ in a.events()] == ["message", "error"]
        assert a.events()[-1][1]["code"] == "NOT_FOUND"
        gw.signal(signal.SIGTERM)
        assert b.wait(10) == 0
        assert b.events()[-1] == ("error", {"code": "UNAVAILABLE",
                                            "message": "the gateway is shutting down: reconnect"})
        assert gw.stop(timeout=15) == 0
    finally:
        a.stop()
        b.stop()
