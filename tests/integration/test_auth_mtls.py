"""Issue 4, "who may call": mutual TLS on the gRPC port and the caller identity.

Certificates are made at test time with openssl (pgw_tls.make_pki): a CA the gateway trusts,
the gateway's own certificate, clients with a SPIFFE URI SAN, a DNS SAN only or a CN only, and
a client with the allowed identity signed by a CA the gateway does not trust."""

import json
import os

import grpc
import pytest

import pgw_harness as h
import pgw_tls as tls

ARN = "arn:aws:personalize:us-east-1:123456789012:batch-inference-job/mtls-1"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return tls.make_pki(str(tmp_path_factory.mktemp("pki")))


def audit_lines(gw):
    return [r for r in gw.log_records() if r.get("log") == "audit"]


def test_allowed_client_succeeds(gateway, fake_aws, pki):
    fake_aws.add_job(ARN)
    gw = gateway(tls.tls_args(pki))
    resp, md, _ = tls.describe(gw.grpc_target, pki, "allowed", ARN)
    assert resp.batch_inference_job.batch_inference_job_arn == ARN
    assert dict(md).get("x-cache") == "miss"
    assert fake_aws.stats()["personalize"]["requests"] == 1


def test_untrusted_certificate_refused(gateway, fake_aws, pki):
    fake_aws.add_job(ARN)
    gw = gateway(tls.tls_args(pki))
    with pytest.raises(grpc.RpcError) as e:
        tls.describe(gw.grpc_target, pki, "untrusted", ARN)
    # The handshake fails: the client sees the transport go away, not an answer.
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert fake_aws.stats()["personalize"]["requests"] == 0
    # ... and the gateway keeps serving trusted callers.
    resp, _, _ = tls.describe(gw.grpc_target, pki, "allowed", ARN)
    assert resp.batch_inference_job.batch_inference_job_arn == ARN


def test_client_without_certificate_unauthenticated(gateway, fake_aws, pki):
    fake_aws.add_job(ARN)
    gw = gateway(tls.tls_args(pki))
    with pytest.raises(grpc.RpcError) as e:
        tls.describe(gw.grpc_target, pki, None, ARN)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "client certificate" in e.value.details()
    assert fake_aws.stats()["personalize"]["requests"] == 0
    # audit is on by default once authentication is configured
    rec = gw.wait_for_log(lambda r: r.get("log") == "audit")
    assert rec["decision"] == "unauthenticated"
    assert rec["code"] == "UNAUTHENTICATED"
    assert rec["identity"] is None
    assert rec["frontend"] == "grpc"


def test_plaintext_client_refused_on_tls_port(gateway, fake_aws, pki):
    gw = gateway(tls.tls_args(pki))
    with pytest.raises(grpc.RpcError) as e:
        h.describe(gw.grpc_target, ARN, timeout=3)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert fake_aws.stats()["personalize"]["requests"] == 0


def test_server_tls_without_client_ca(gateway, fake_aws, pki):
    """TLS only (no --tls-client-ca): any TLS client is served, anonymously."""
    fake_aws.add_job(ARN)
    gw = gateway(tls.tls_args(pki, client_ca=False))
    resp, _, _ = tls.describe(gw.grpc_target, pki, None, ARN)
    assert resp.batch_inference_job.batch_inference_job_arn == ARN


@pytest.mark.parametrize("client,identity", [
    ("allowed", tls.ALLOWED),
    ("other", tls.OTHER),
    ("dnsonly", tls.DNS_ONLY),
    ("cnonly", tls.CN_ONLY),
])
def test_identity_from_certificate(gateway, fake_aws, pki, client, identity):
    """URI SAN (SPIFFE ID), else DNS SAN, else CN: the debug call log names the identity."""
    fake_aws.add_job(ARN)
    gw = gateway(tls.tls_args(pki) + ["--log-level", "debug"])
    tls.describe(gw.grpc_target, pki, client, ARN)
    rec = gw.wait_for_log(lambda r: r.get("msg") == "call")
    assert rec["identity"] == identity
    assert rec["code"] == "OK"


def test_identity_header_mode(gateway, fake_aws):
    """Plain text behind a sidecar: the identity comes from the configured trusted header."""
    fake_aws.add_job(ARN)
    gw = gateway(["--identity-header", "X-Client-Identity", "--require-identity", "1",
                  "--log-level", "debug"])
    with pytest.raises(grpc.RpcError) as e:
        h.describe(gw.grpc_target, ARN)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED

    h.describe(gw.grpc_target, ARN, metadata=[("x-client-identity", "spiffe://mesh/ns/b/sa/c")])
    rec = gw.wait_for_log(lambda r: r.get("msg") == "call")
    assert rec["identity"] == "spiffe://mesh/ns/b/sa/c"

    # Two copies (a client's own next to the sidecar's) or an invalid value: no identity.
    for md in ([("x-client-identity", "spiffe://a"), ("x-client-identity", "spiffe://b")],
               [("x-client-identity", "two words")]):
        with pytest.raises(grpc.RpcError) as e:
            h.describe(gw.grpc_target, ARN, metadata=md)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert fake_aws.stats()["personalize"]["requests"] == 1

    # The HTTP side takes the identity from the same trusted header, under the same rules.
    import urllib.parse
    path = "/v1/batch-inference-jobs/" + urllib.parse.quote(ARN, safe="")
    status, _, body = gw.http_get(path)
    assert status == 401, body
    assert json.loads(body)["code"] == "UNAUTHENTICATED"
    status, _, body = gw.http_get(path, headers={"X-Client-Identity": "spiffe://mesh/ns/b/sa/c"})
    assert status == 200, body
    assert json.loads(body)["batchInferenceJob"]["batchInferenceJobArn"] == ARN


def test_plaintext_default_unchanged(gateway, fake_aws):
    """No security flags: plain text, no identity needed, no audit lines (as before)."""
    fake_aws.add_job(ARN)
    gw = gateway()
    h.describe(gw.grpc_target, ARN)
    assert audit_lines(gw) == []


def run_bad_config(gateway_binary, tmp_path, args):
    import subprocess

    env = h.gateway_env(None, str(tmp_path))
    p = subprocess.run([gateway_binary, "--grpc-addr", "127.0.0.1:0", "--http-addr", ""] + args,
                       env=env, capture_output=True, text=True, timeout=30)
    return p.returncode, p.stderr.strip()


def test_bad_tls_configuration_exits_2(gateway_binary, tmp_path, pki):
    p = lambda name: os.path.join(pki, name)  # noqa: E731
    cases = [
        (["--tls-cert", p("server.pem")], "--tls-cert"),
        (["--tls-client-ca", p("ca.pem")], "--tls-client-ca"),
        (["--tls-cert", p("server.pem"), "--tls-key", p("other.key")], "--tls-key"),
        (["--tls-cert", p("missing.pem"), "--tls-key", p("server.key")], "--tls-cert"),
        (["--tls-cert", p("ca.key"), "--tls-key", p("server.key")], "--tls-cert"),
        (tls.tls_args(pki)[:4] + ["--tls-client-ca", p("server.key")], "--tls-client-ca"),
        (tls.tls_args(pki) + ["--identity-header", "x-id"], "--identity-header"),
        (["--require-identity", "1"], "--require-identity"),
        (["--identity-header", "bad header"], "--identity-header"),
        (["--audit-log", "sometimes"], "--audit-log"),
    ]
    for args, flag in cases:
        rc, err = run_bad_config(gateway_binary, tmp_path, args)
        assert rc == 2, (args, rc, err)
        assert len(err.splitlines()) == 1, err
        assert flag in err, (args, err)
        # never the key material
        assert "PRIVATE KEY" not in err
