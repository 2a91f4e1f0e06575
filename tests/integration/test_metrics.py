"""GET /metrics, parsed by the Prometheus client library's own text parser.

Known traffic goes through both HTTP paths; the counters must move by exactly the expected
amounts, and the exposition must follow the format (types, units, histograms)."""

import json
import urllib.parse

from prometheus_client.parser import text_string_to_metric_families

import pgw_harness as h

ARN = "arn:aws:personalize:us-east-1:123456789012:batch-inference-job/metrics"
MISSING = "arn:aws:personalize:us-east-1:123456789012:batch-inference-job/missing"
BAD = "arn:aws:personalize:us-east-1.evil.example:123456789012:batch-inference-job/x"
TARGET = "AmazonPersonalize.DescribeBatchInferenceJob"
AMZ_JSON = "application/x-amz-json-1.1"



def scrape(gw):
    """{(sample name, frozenset(labels)): value} and {family name: type}."""
    status, headers, body = gw.http_get("/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    samples, types = {}, {}
    for fam in text_string_to_metric_families(body.decode()):
        types[fam.name] = fam.type
        for s in fam.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples, types


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0.0)


def req(samples, frontend, code):
    return value(samples, "pgw_requests_total", method="DescribeBatchInferenceJob",
                 frontend=frontend, code=code)


def rest(gw, arn):
    return gw.http_get("/v1/batch-inference-jobs/" + urllib.parse.quote(arn, safe=""))[0]


def aws(gw, arn):
    return h.http_request("POST", gw.http_url + "/", body=json.dumps({"batchInferenceJobArn": arn}),
                          headers={"X-Amz-Target": TARGET, "Content-Type": AMZ_JSON})[0]


def test_exposition_format_and_families(gateway, fake_aws):
    gw = gateway()
    samples, types = scrape(gw)
    expected = {
        "pgw_build_info": "gauge",
        "pgw_requests": "counter",
        "pgw_request_duration_seconds": "histogram",
        "pgw_in_flight_requests": "gauge",
        "pgw_cache_requests": "counter",
        "pgw_coalesced_waiters": "counter",
        "pgw_upstream_requests": "counter",
        "pgw_upstream_request_duration_seconds": "histogram",
        "pgw_upstream_retries": "counter",
        "pgw_redis_errors": "counter",
        "pgw_redis_breaker_state": "gauge",
    }
    for name, typ in expected.items():
        assert types.get(name) == typ, (name, types.get(name))
    build = [k for k in samples if k[0] == "pgw_build_info"]
    assert len(build) == 1 and samples[build[0]] == 1
    assert dict(build[0][1])["version"]


def test_counters_move_by_the_expected_amounts(gateway, fake_aws):
    fake_aws.add_job(ARN)
    gw = gateway()
    before, _ = scrape(gw)

    assert rest(gw, ARN) == 200       # miss -> upstream ok
    assert rest(gw, ARN) == 200       # L1 hit
    assert aws(gw, ARN) == 200        # L1 hit
    assert rest(gw, MISSING) == 404   # upstream not found
    assert aws(gw, BAD) == 400        # rejected locally
    assert rest(gw, BAD) == 400
    fake_aws.fail_next(n=1, status=500, type="InternalFailure")
    assert rest(gw, ARN + "2") == 404  # one 500, a retry, then not found

    after, _ = scrape(gw)

    def delta(fn, *a, **kw):
        return fn(after, *a, **kw) - fn(before, *a, **kw)

    assert delta(req, "http_rest", "OK") == 2
    assert delta(req, "http_aws", "OK") == 1
    assert delta(req, "http_rest", "NOT_FOUND") == 2
    assert delta(req, "http_aws", "INVALID_ARGUMENT") == 1
    assert delta(req, "http_rest", "INVALID_ARGUMENT") == 1
    assert delta(req, "grpc", "OK") == 0
    total_rest = sum(v for (n, l), v in after.items() if n == "pgw_requests_total"
                     and dict(l)["frontend"] == "http_rest") - \
        sum(v for (n, l), v in before.items() if n == "pgw_requests_total"
            and dict(l)["frontend"] == "http_rest")
    assert total_rest == 5
    # The latency histogram counted the same calls.
    assert delta(value, "pgw_request_duration_seconds_count", frontend="http_rest") == 5
    assert delta(value, "pgw_request_duration_seconds_count", frontend="http_aws") == 2
    assert delta(value, "pgw_request_duration_seconds_bucket", frontend="http_rest", le="+Inf") == 5
    assert value(after, "pgw_in_flight_requests", frontend="http_rest") == 0
    assert value(after, "pgw_in_flight_requests", frontend="http_aws") == 0


def test_upstream_cache_and_retry_metrics(gateway, fake_aws):
    fake_aws.add_job(ARN)
    gw = gateway()
    before, _ = scrape(gw)
    assert rest(gw, ARN) == 200      # L1 miss, upstream ok
    assert rest(gw, ARN) == 200      # L1 hit
    assert aws(gw, ARN) == 200       # L1 hit
    assert rest(gw, MISSING) == 404  # upstream not_found
    fake_aws.fail_next(n=1, status=500, type="InternalFailure")
    assert rest(gw, ARN + "2") == 404  # upstream server_error, a retry, then not_found
    after, _ = scrape(gw)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("pgw_upstream_requests_total", outcome="ok") == 1
    assert delta("pgw_upstream_requests_total", outcome="not_found") == 2
    assert delta("pgw_upstream_requests_total", outcome="server_error") == 1
    assert delta("pgw_upstream_retries_total") == 1
    assert delta("pgw_upstream_request_duration_seconds_count") == 4
    assert delta("pgw_cache_requests_total", tier="l1", result="hit") == 2
    assert delta("pgw_cache_requests_total", tier="l1", result="miss") >= 3
    assert fake_aws.stats()["personalize"]["requests"] == 4
