"""Issue 12, item 5: many clients. 2,000 distinct gRPC connections (each its own HTTP/2 and TCP
connection, from 4 worker processes of real grpcio clients) poll DescribeBatchInferenceJob for
a minute against one gateway with Redis and the AWS fake: mostly cached ARNs, every tenth call
an ARN still running with a 3 s TTL, so a steady trickle of cache misses goes upstream.

Asserted: all the connections are open on the gateway at once (its established sockets on the
gRPC port, matched one to one with the workers' sockets, and process_open_fds), the same ones
from before the polling to after it (none dropped and reopened); every call is OK; every
connection is answered in the first and in the last quarter of the window; afterwards the
gateway's connections and file descriptors go back to where they were, a fresh client is
served, and the gateway exits 0 on SIGTERM (under ASan: with no report). Latency is printed,
never asserted (two shared cores).

PGW_MANY_CLIENTS_SECONDS (default 60), PGW_MANY_CLIENTS_CONNECTIONS (2000) and
PGW_MANY_CLIENTS_INTERVAL_S (1.0, each connection's time between calls) shorten or change the
run; CI runs the defaults. The test raises its soft RLIMIT_NOFILE to the hard limit (the
gateway and the workers inherit it; the gateway raises its own soft limit to the hard one
anyway, service/main.c)."""

import os
import time

import many_clients as mc
import pgw_harness as h
import pgw_load as load

CONNECTIONS = int(os.environ.get("PGW_MANY_CLIENTS_CONNECTIONS", "2000"))
SECONDS = float(os.environ.get("PGW_MANY_CLIENTS_SECONDS", "60"))
INTERVAL_S = float(os.environ.get("PGW_MANY_CLIENTS_INTERVAL_S", "1.0"))
PROCESSES = 4
# Calls each connection must have had answered in the window's first and in its last quarter:
# 2 of the quarter's ~15 slots at the defaults; 1 when a shortened run leaves a quarter only a
# few slots (a call that waited past its slot pushes the next one out of a 2 s quarter).
MIN_CALLS_PER_QUARTER = 2 if SECONDS / 4 >= 4 * INTERVAL_S else 1
ARN = "arn:aws:personalize:us-east-1:123456789012:batch-inference-job/many-%s"
HOT = [ARN % ("hot-%d" % i) for i in range(20)]
RUNNING = [ARN % ("running-%d" % i) for i in range(100)]


def test_two_thousand_connections_polling_for_a_minute(gateway, fake_aws, redis_server, tmp_path):
    soft, hard = mc.raise_fd_limit(CONNECTIONS + 4096)
    # The gateway needs one descriptor per connection and a few hundred of its own.
    assert soft >= CONNECTIONS + 512, "RLIMIT_NOFILE hard limit %d is too low for %d " \
        "connections" % (hard, CONNECTIONS)
    for arn in HOT:
        fake_aws.add_job(arn, status="ACTIVE")
    for arn in RUNNING:
        fake_aws.add_job(arn, status="IN PROGRESS")
    gw = gateway(extra_args=["--redis-url", redis_server.url, "--cache-ttl-running-s", "3",
                             "--log-level", "warn"])
    gw.wait_readyz()
    with h.grpc_channel(gw.grpc_target) as ch:
        for arn in HOT + RUNNING:
            h.describe(gw.grpc_target, arn, channel=ch)
    port = gw.grpc_port
    h.wait_until(lambda: not mc.server_connections(gw.pid, port), timeout=10,
                 what="the warm-up connection to close")

    def fds_not_upstream():
        # Upstream keep-alive connections to the fake come and go with the misses: not counted.
        table = mc.tcp_table()
        return mc.open_fds(gw.pid) - mc.sockets_to(gw.pid, fake_aws.port, table)

    baseline = fds_not_upstream()
    rss_idle = load.rss_bytes(gw.pid)
    workers = mc.Workers(gw.grpc_target, CONNECTIONS, {"hot": HOT, "running": RUNNING},
                         str(tmp_path / "workers"), processes=PROCESSES)
    try:
        workers.start()
        # Each channel is its own TCP connection: the gateway's sockets on its gRPC port are the
        # workers' sockets to it, one to one.
        table = mc.tcp_table()
        opened = mc.server_connections(gw.pid, port, table)
        per_worker = [mc.client_connections(pid, port, table) for pid in workers.pids]
        assert [len(s) for s in per_worker] == workers.shares
        assert set().union(*per_worker) == opened and len(opened) == CONNECTIONS
        open_fds_metric = h.metric(gw, "process_open_fds")
        assert open_fds_metric >= baseline + CONNECTIONS, (open_fds_metric, baseline)
        rss_connected = load.rss_bytes(gw.pid)
        cpu0 = load.cpu_seconds(gw.pid)

        t0 = workers.go(SECONDS, INTERVAL_S)
        samples = []  # (s since t0, connections open on the gateway, how many not in `opened`)
        while time.monotonic() < t0 + SECONDS:
            time.sleep(min(2.0, max(0.0, t0 + SECONDS - time.monotonic())))
            now = mc.server_connections(gw.pid, port)
            samples.append((round(time.monotonic() - t0, 1), len(now), len(now - opened)))
        results = workers.wait_done()
        cpu = load.cpu_seconds(gw.pid) - cpu0
        rss_polled = load.rss_bytes(gw.pid)
        still_open = mc.server_connections(gw.pid, port)

        conns = results["conns"]
        calls = sum(len(c["ok"]) + len(c["errors"]) for c in conns)
        lat = results["latencies_ms"]
        load.record("many_clients", (
            "%d connections, %d calls in %.0f s (%.0f/s), x-cache %s; %s; gateway CPU %.1f s "
            "(%.0f us/call), RSS idle %.1f MiB, connected %.1f MiB, after polling %.1f MiB "
            "(%.1f KiB per connection under ASan); connecting took %s s per worker") % (
                len(conns), calls, SECONDS, calls / SECONDS, results["x_cache"],
                mc.latency_summary(lat), cpu, 1e6 * cpu / max(calls, 1), rss_idle / 2**20,
                rss_connected / 2**20, rss_polled / 2**20,
                (rss_polled - rss_idle) / CONNECTIONS / 1024, workers.connect_s))
        load.record("many_clients", "gateway connections sampled (s, open, new): %s" % samples)

        assert len(conns) == CONNECTIONS
        errors = [(i, e) for i, c in enumerate(conns) for e in c["errors"]]
        assert not errors, "%d calls failed, e.g. %s" % (len(errors), errors[:10])
        quarter = SECONDS / 4
        starved = [(i, sum(1 for t in c["ok"] if t < quarter),
                    sum(1 for t in c["ok"] if t >= SECONDS - quarter))
                   for i, c in enumerate(conns)]
        starved = [s for s in starved if min(s[1], s[2]) < MIN_CALLS_PER_QUARTER]
        assert not starved, "%d connections had fewer than %d calls answered in the first or " \
            "last %.0f s (connection, first, last): %s" % (
                len(starved), MIN_CALLS_PER_QUARTER, quarter, starved[:20])
        # Mostly cache hits, and some misses really went upstream.
        assert results["x_cache"].get("hit", 0) > calls / 2, results["x_cache"]
        assert results["x_cache"].get("miss", 0) > 0, results["x_cache"]
        # Every connection stayed open on the gateway the whole time: none dropped, none new.
        assert samples and all(n == CONNECTIONS and new == 0 for _, n, new in samples), samples
        assert still_open == opened
    except BaseException:
        workers.kill()
        raise
    workers.close()

    # Closed by the clients: the gateway lets go of every connection and descriptor.
    h.wait_until(lambda: not mc.server_connections(gw.pid, port), timeout=30,
                 what="the gateway to close its side of %d connections" % CONNECTIONS)
    h.wait_until(lambda: fds_not_upstream() <= baseline, timeout=30,
                 what="the gateway's fds back to %d (now %d)" % (baseline, fds_not_upstream()))
    resp, md, _ = h.describe(gw.grpc_target, HOT[0])
    assert resp.batch_inference_job.batch_inference_job_arn == HOT[0]
    assert dict(md).get("x-cache") == "hit"
    fake_aws.assert_no_signature_failures()
    assert gw.stop() == 0
    assert not gw.sanitizer_findings()
