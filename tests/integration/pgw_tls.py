"""Test certificates made at test time with the openssl CLI, and grpcio TLS channels.

make_pki(dir) builds, in a fresh directory:
  ca.pem / ca.key                 the client (and server) CA the gateway trusts
  server.pem / server.key         the gateway's certificate: DNS localhost, IP 127.0.0.1
  allowed.pem / allowed.key       client, URI SAN spiffe://test/ns/a/sa/allowed
  other.pem / other.key           client, URI SAN spiffe://test/ns/a/sa/other
  dnsonly.pem / dnsonly.key       client, DNS SAN poller.test.internal only
  cnonly.pem / cnonly.key         client, no SAN, CN cn-only-client
  untrusted.pem / untrusted.key   client signed by another CA, same URI SAN as `allowed`
The same recipe is written up in docs/security.md. Keys are EC P-256, valid one day.
"""

import os
import subprocess

import pgw_harness as h

ALLOWED = "spiffe://test/ns/a/sa/allowed"
OTHER = "spiffe://test/ns/a/sa/other"
DNS_ONLY = "poller.test.internal"
CN_ONLY = "cn-only-client"


def _openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _ca(d, name):
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", name + ".key", "-out", name + ".pem", "-days", "1",
             "-subj", "/CN=" + name,
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)


def _leaf(d, name, ca, cn, extensions):
    ext = os.path.join(d, name + ".ext")
    with open(ext, "w") as f:
        f.write("basicConstraints=critical,CA:FALSE\n")
        f.write("keyUsage=critical,digitalSignature\n")
        for line in extensions:
            f.write(line + "\n")
    _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=" + cn, cwd=d)
    _openssl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem", "-CAkey", ca + ".key",
             "-CAcreateserial", "-out", name + ".pem", "-days", "1", "-extfile", ext, cwd=d)


def make_pki(d):
    """Creates the files listed in the module docstring under d; returns d."""
    os.makedirs(d, exist_ok=True)
    _ca(d, "ca")
    _ca(d, "rogue-ca")
    _leaf(d, "server", "ca", "localhost",
          ["subjectAltName=DNS:localhost,IP:127.0.0.1", "extendedKeyUsage=serverAuth"])
    client = "extendedKeyUsage=clientAuth"
    _leaf(d, "allowed", "ca", "allowed", ["subjectAltName=URI:" + ALLOWED, client])
    _leaf(d, "other", "ca", "other", ["subjectAltName=URI:" + OTHER, client])
    _leaf(d, "dnsonly", "ca", "dnsonly", ["subjectAltName=DNS:" + DNS_ONLY, client])
    _leaf(d, "cnonly", "ca", CN_ONLY, [client])
    _leaf(d, "untrusted", "rogue-ca", "allowed", ["subjectAltName=URI:" + ALLOWED, client])
    return d


def make_server_cert(d, name, ca="ca"):
    """Another gateway certificate (name.pem / name.key, DNS localhost, IP 127.0.0.1) signed by
    ca: a rotation's new certificate, with a new key and serial."""
    _leaf(d, name, ca, "localhost",
          ["subjectAltName=DNS:localhost,IP:127.0.0.1", "extendedKeyUsage=serverAuth"])


def fingerprint(pem_path):
    """SHA-256 of a PEM certificate file's (first) certificate, DER-encoded, in hex."""
    import hashlib
    import ssl

    with open(pem_path) as f:
        return hashlib.sha256(ssl.PEM_cert_to_DER_cert(f.read())).hexdigest()


def served_fingerprint(port, d, client="allowed", timeout=5):
    """Opens one new TLS connection to 127.0.0.1:port (ALPN h2, presenting d/client.pem if
    given) and returns the SHA-256 of the certificate the server presented, DER, in hex. The
    server's certificate is only read, not verified: a rotation test asks which one it is."""
    import hashlib
    import socket
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    if client:
        ctx.load_cert_chain(os.path.join(d, client + ".pem"), os.path.join(d, client + ".key"))
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        with ctx.wrap_socket(s, server_hostname="localhost") as ts:
            return hashlib.sha256(ts.getpeercert(binary_form=True)).hexdigest()


def read(d, name):
    with open(os.path.join(d, name), "rb") as f:
        return f.read()


def tls_args(d, client_ca=True):
    """The gateway flags for TLS (and, with client_ca, mutual TLS) with the PKI in d."""
    args = ["--tls-cert", os.path.join(d, "server.pem"), "--tls-key", os.path.join(d, "server.key")]
    if client_ca:
        args += ["--tls-client-ca", os.path.join(d, "ca.pem")]
    return args


def channel(target, d, client=None):
    """A grpcio TLS channel trusting d/ca.pem, presenting client (e.g. "allowed") if given."""
    import grpc

    creds = grpc.ssl_channel_credentials(
        root_certificates=read(d, "ca.pem"),
        private_key=read(d, client + ".key") if client else None,
        certificate_chain=read(d, client + ".pem") if client else None)
    return grpc.secure_channel(target, creds,
                               options=(("grpc.ssl_target_name_override", "localhost"),))


def describe(target, d, client, arn, timeout=5, metadata=()):
    """h.describe over a fresh TLS channel (closed afterwards)."""
    ch = channel(target, d, client)
    try:
        return h.describe(target, arn, timeout=timeout, metadata=metadata, channel=ch)
    finally:
        ch.close()

