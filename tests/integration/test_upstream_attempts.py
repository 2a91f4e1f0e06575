"""Every request that leaves the gateway is an attempt (issue 12): an upstream that closes a
kept-alive connection without answering must not get a fourth request for a three-attempt
call because curl silently re-sent one on a fresh connection."""

import re

import grpc
import pytest

import pgw_harness as h

WARM = "arn:aws:personalize:us-east-1:123456789012:batch-inference-job/warm"
DEAD = "arn:aws:personalize:us-east-1:123456789012:batch-inference-job/closes-without-answer"


def metric(gw, name):
    """Sum of every series of a counter on /metrics."""
    _, _, body = gw.http_get("/metrics")
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.parametrize("attempts", [3, 1])
def test_dead_keepalive_connection_counts_every_request(gateway, fake_aws, attempts):
    fake_aws.add_job(WARM, status="ACTIVE")
    gw = gateway(extra_args=["--upstream-max-attempts", str(attempts)])
    gw.wait_readyz()
    # A successful call leaves a kept-alive connection in the gateway's pool ...
    h.describe(gw.grpc_target, WARM)
    # ... then the upstream starts reading requests and closing without an answer.
    fake_aws.fail(arn=DEAD, action="close")
    sent_before = metric(gw, "pgw_upstream_requests_total")
    with pytest.raises(grpc.RpcError) as e:
        h.describe(gw.grpc_target, DEAD, timeout=20)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    received = fake_aws.stats()["personalize"]["per_arn"].get(DEAD, 0)
    # The bound holds as the upstream sees it, and it was reached: the first attempt went out
    # on the reused connection, and curl's silent re-send on a fresh one counted as one.
    assert received == attempts
    m = re.search(r"after (\d+) attempt", e.value.details())
    assert m and int(m.group(1)) == attempts, e.value.details()
    # The gateway's own count of attempts agrees with the upstream's.
    assert metric(gw, "pgw_upstream_requests_total") - sent_before == received
