"""The upstream over real TLS (certificates made by openssl at test time): peer verification is
always on, and connections are reused across calls."""

import os

import grpc
import pytest

import pgw_harness as h
import pgw_tls as tls

ARN = "arn:aws:personalize:us-east-1:123456789012:batch-inference-job/tls-%d"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return tls.make_pki(str(tmp_path_factory.mktemp("pki")))


@pytest.fixture
def tls_fake(tmp_path, pki):
    fake = h.FakeAws(str(tmp_path / "fake_tls"),
                     tls=(os.path.join(pki, "server.pem"), os.path.join(pki, "server.key")))
    try:
        yield fake
    finally:
        fake.stop()


def test_https_upstream_verified_with_the_configured_ca(gateway, tls_fake, pki):
    for i in range(10):
        tls_fake.add_job(ARN % i)
    gw = gateway(fake=tls_fake, env={"AWS_ENDPOINT_URL_PERSONALIZE": tls_fake.https_url},
                 extra_args=["--upstream-ca-file", os.path.join(pki, "ca.pem")])
    tls_fake.reset_stats()
    for i in range(10):
        resp, _, _ = h.describe(gw.grpc_target, ARN % i)
        assert resp.batch_inference_job.batch_inference_job_arn == ARN % i
    st = tls_fake.stats()
    assert st["personalize"]["requests"] == 10
    assert st["tls_connections"] == 1  # keep-alive: one TLS connection for ten calls
    tls_fake.assert_no_signature_failures()


def test_https_upstream_with_an_unknown_ca_is_refused(gateway, tls_fake):
    tls_fake.add_job(ARN % 1)
    # The system trust store does not know the test CA: the handshake must fail.
    gw = gateway(fake=tls_fake, env={"AWS_ENDPOINT_URL_PERSONALIZE": tls_fake.https_url},
                 extra_args=["--upstream-max-attempts", "1"])
    with pytest.raises(grpc.RpcError) as e:
        h.describe(gw.grpc_target, ARN % 1)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "certificate" in e.value.details().lower() or "SSL" in e.value.details()
    assert tls_fake.stats()["personalize"]["requests"] == 0


def test_plain_http_upstream_reuses_connections(gateway, fake_aws):
    for i in range(10):
        fake_aws.add_job(ARN % i)
    gw = gateway()
    fake_aws.reset_stats()
    for i in range(10):
        h.describe(gw.grpc_target, ARN % i)
    # One connection for the gateway's ten calls, one for this stats request.
    assert fake_aws.stats()["connections"] == 2
