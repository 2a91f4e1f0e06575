"""The upstream connection pool (issue 9): --upstream-max-connections bounds the connections
per host, they are reused across calls, and HTTP/2 is used where the endpoint offers it.

HTTP/2 is tested against a real TLS endpoint that speaks it: Debian's nghttpx (nghttp2-proxy)
with a certificate made by openssl at test time, in front of the fake Personalize (plain
HTTP/1.1 behind it). nghttpx's access log names the protocol of every request it answered and
the client port it came from, so it shows what went over h2 and on how many connections.
"""

import concurrent.futures
import os
import shutil
import subprocess

import grpc
import pytest

import pgw_harness as h
import pgw_tls as tls

NGHTTPX = "/usr/sbin/nghttpx"
ARN = "arn:aws:personalize:us-east-1:123456789012:batch-inference-job/pool-%d"


def metric(gw, name, labels=None):
    _, _, body = gw.http_get("/metrics")
    total = 0.0
    for line in body.decode().splitlines():
        if not (line.startswith(name + "{") or line.startswith(name + " ")):
            continue
        if labels and labels not in line:
            continue
        total += float(line.rsplit(" ", 1)[1])
    return total


def concurrent_lookups(gw, arns, timeout=20):
    """All of `arns` at once on one channel; returns the list of status code names."""
    ch = grpc.insecure_channel(gw.grpc_target)
    try:
        stub, request = h.describe_stub(ch)
        futures = [stub.future(request(batch_inference_job_arn=a), timeout=timeout) for a in arns]
        codes = []
        for f in futures:
            try:
                f.result()
                codes.append("OK")
            except grpc.RpcError as e:
                codes.append(e.code().name)
        return codes
    finally:
        ch.close()


def test_http1_connections_are_bounded_per_host_and_reused(gateway, fake_aws):
    n = 40
    for i in range(n):
        fake_aws.add_job(ARN % i, status="ACTIVE")
    gw = gateway(extra_args=["--upstream-max-connections", "4"])
    gw.wait_readyz()
    # Slower than the connect timeout (3 s) for the last of the queued transfers: waiting for
    # a pooled connection is not connecting.
    fake_aws.set_latency(400)
    fake_aws.reset_stats()
    assert concurrent_lookups(gw, [ARN % i for i in range(n)]) == ["OK"] * n
    st = fake_aws.stats()
    assert st["personalize"]["requests"] == n
    assert st["max_in_flight"] <= 4  # HTTP/1.1: one request per connection at a time
    assert metric(gw, "pgw_upstream_connections_opened_total") == 4
    assert metric(gw, "pgw_upstream_responses_by_protocol_total", 'protocol="http/1.1"') == n
    fake_aws.assert_no_signature_failures()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return tls.make_pki(str(tmp_path_factory.mktemp("pki")))


class Nghttpx:
    """nghttpx terminating TLS (h2 and http/1.1 offered by ALPN) in front of a plain backend."""

    def __init__(self, workdir, pki, backend_port, max_streams=100):
        self.port = h.free_port()
        self.access_log = os.path.join(workdir, "nghttpx-access.log")
        self.error_log = os.path.join(workdir, "nghttpx-error.log")
        cmd = [NGHTTPX, "--conf=/dev/null", "--single-thread", "--no-ocsp",
               "--frontend=127.0.0.1,%d" % self.port,
               "--backend=127.0.0.1,%d" % backend_port,
               "--frontend-http2-max-concurrent-streams=%d" % max_streams,
               "--accesslog-file=" + self.access_log,
               "--accesslog-format=$alpn $protocol_version $remote_port $status $path",
               "--errorlog-file=" + self.error_log,
               os.path.join(pki, "server.key"), os.path.join(pki, "server.pem")]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        try:
            h.wait_until(lambda: self.proc.poll() is None and h.port_open("127.0.0.1", self.port),
                         timeout=10, what="nghttpx to listen")
        except BaseException:
            self.stop()
            raise

    @property
    def url(self):
        return "https://127.0.0.1:%d" % self.port

    def requests(self):
        """(alpn, protocol version, client port, status) of every request answered so far."""
        try:
            with open(self.access_log) as f:
                return [tuple(line.split()[:4]) for line in f if line.strip()]
        except FileNotFoundError:
            return []

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def h2_endpoint(tmp_path, pki, fake_aws):
    if not os.access(NGHTTPX, os.X_OK):
        pytest.skip("nghttpx (Debian nghttp2-proxy) is not installed")
    ng = Nghttpx(str(tmp_path), pki, fake_aws.port)
    try:
        yield ng
    finally:
        ng.stop()


def test_http2_multiplexed_on_a_bounded_reused_pool(gateway, fake_aws, h2_endpoint, pki):
    n = 150
    arns = [ARN % i for i in range(2 * n)]
    for a in arns:
        fake_aws.add_job(a, status="ACTIVE")
    gw = gateway(env={"AWS_ENDPOINT_URL_PERSONALIZE": h2_endpoint.url},
                 extra_args=["--upstream-ca-file", os.path.join(pki, "ca.pem"),
                             "--upstream-max-connections", "2"])
    gw.wait_readyz()
    fake_aws.set_latency(300)
    assert concurrent_lookups(gw, arns[:n]) == ["OK"] * n
    first = h2_endpoint.requests()
    assert len(first) == n
    # Every request went over HTTP/2 (ALPN h2), multiplexed: 150 concurrent requests on at
    # most the 2 connections allowed (nghttpx allows 100 streams per connection).
    assert {(alpn, version) for alpn, version, _, _ in first} == {("h2", "HTTP/2")}
    assert {status for _, _, _, status in first} == {"200"}
    ports = {port for _, _, port, _ in first}
    assert len(ports) == 2
    assert metric(gw, "pgw_upstream_responses_by_protocol_total", 'protocol="h2"') == n
    assert metric(gw, "pgw_upstream_connections_opened_total") == 2

    # A second burst reuses the pooled connections: no new one is opened.
    assert concurrent_lookups(gw, arns[n:]) == ["OK"] * n
    second = h2_endpoint.requests()[n:]
    assert len(second) == n
    assert {port for _, _, port, _ in second} <= ports
    assert metric(gw, "pgw_upstream_connections_opened_total") == 2
    fake_aws.assert_no_signature_failures()
