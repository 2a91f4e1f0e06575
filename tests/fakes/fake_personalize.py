#!/usr/bin/python3
"""Fake AWS endpoints for the personalize-gateway integration tests.

One loopback HTTP/1.1 server (keep-alive, one daemon thread per connection) that plays:

* Amazon Personalize, JSON 1.1: ``POST /`` with
  ``X-Amz-Target: AmazonPersonalize.DescribeBatchInferenceJob``. Every request's SigV4
  signature is re-computed with botocore (independently of the gateway's C signer) against
  the accepted credential sets; failures answer like AWS and are recorded.
* AWS STS (query protocol): ``POST /`` form-encoded ``Action=AssumeRoleWithWebIdentity``
  (unsigned) and ``Action=AssumeRole`` (SigV4, service ``sts``), XML answers like AWS.
* Container credentials (ECS / EKS Pod Identity): ``GET <configurable path>``.
* EC2 IMDSv2: ``PUT /latest/api/token`` then ``GET /latest/meta-data/iam/security-credentials/``.

Temporary credentials issued by STS, the container endpoint and IMDS become accepted
credentials of the fake Personalize, so a whole credential chain can be tested end to end.

Tests drive it through a plain JSON control API under ``/__control/`` (unsigned); see
``tests/integration/pgw_harness.py`` for the client side. Secrets are never printed.

Run: /usr/bin/python3 tests/fakes/fake_personalize.py --port 0 --port-file F [--fixtures DIR]
Credentials come from --access-key/--secret-key/--session-token or, to keep them out of
the process list, env FAKE_AWS_ACCESS_KEY_ID / FAKE_AWS_SECRET_ACCESS_KEY /
FAKE_AWS_SESSION_TOKEN.
"""

import argparse
import base64
import copy
import datetime
import hashlib
import hmac
import http.server
import json
import os
import re
import secrets
import socket
import string
import struct
import sys
import threading
import time
import urllib.parse
import uuid
from xml.sax.saxutils import escape as xml_escape

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.compat import HTTPHeaders
from botocore.credentials import Credentials

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_FIXTURES = os.path.normpath(os.path.join(HERE, "..", "fixtures"))
OWN_FIXTURES = os.path.join(HERE, "fixtures")

MAX_BODY = 1 << 20
AMZ_DATE_FMT = "%Y%m%dT%H%M%SZ"
JSON_11 = "application/x-amz-json-1.1"
PERSONALIZE_TARGET = "AmazonPersonalize.DescribeBatchInferenceJob"
STS_NS = "https://sts.amazonaws.com/doc/2011-06-15/"
# The service model's pattern for Arn, plus its 256 character limit.
ARN_RE = re.compile(r"^arn:([a-z\d-]+):personalize:([a-z0-9-]*):(\d*):.+$")
AUTH_RE = re.compile(
    r"^AWS4-HMAC-SHA256\s+Credential=([^,\s]+),\s*SignedHeaders=([^,\s]+),"
    r"\s*Signature=([0-9a-f]{64})\s*$"
)
REGION_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
MAX_RECORDED_FAILURES = 1000
STS_AUTH_CODES = {
    "InvalidSignatureException": "SignatureDoesNotMatch",
    "UnrecognizedClientException": "InvalidClientTokenId",
    "ExpiredTokenException": "ExpiredToken",
    "MissingAuthenticationTokenException": "MissingAuthenticationToken",
    "IncompleteSignatureException": "IncompleteSignature",
}

SIG_MISMATCH_MSG = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. Consult the service "
    "documentation for details."
)
INVALID_TOKEN_MSG = "The security token included in the request is invalid."
EXPIRED_TOKEN_MSG = "The security token included in the request is expired"


def _iso8601(epoch):
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )


def _random_akid():
    alphabet = string.ascii_uppercase + string.digits
    return "ASIA" + "".join(secrets.choice(alphabet) for _ in range(16))


def _random_secret():
    return base64.b64encode(secrets.token_bytes(30)).decode()


def _random_token():
    # Real session tokens are long opaque base64 strings; length matters for header sizes.
    return base64.b64encode(secrets.token_bytes(300)).decode()


def _token_digest(token):
    return hashlib.sha256(token.encode()).hexdigest()


class AwsError(Exception):
    """An answer in AWS's error shape; `reason` is the detail recorded for tests."""

    def __init__(self, status, code, message, reason=None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.reason = reason or message


class _ClaimedHeadersSigner(SigV4Auth):
    """botocore's SigV4 with the request's own signed-header list and timestamp.

    botocore normally chooses which headers to sign; a verifier must canonicalise exactly
    the headers the client said it signed, so headers_to_sign is the only override. All
    canonicalisation, hashing and key derivation is botocore's.
    """

    def __init__(self, credentials, service, region, claimed):
        super().__init__(credentials, service, region)
        self._claimed = claimed

    def headers_to_sign(self, request):
        header_map = HTTPHeaders()
        for name, values in self._claimed:
            for value in values:
                header_map[name] = value
        return header_map


class State:
    """Everything the fake knows; one lock guards it all (requests are short)."""

    def __init__(self, initial_creds, fixture_dirs):
        self.lock = threading.Lock()
        self.initial_creds = initial_creds
        self.fixture_dirs = fixture_dirs
        self.reset()

    # Called with or without the lock held by the caller's choice: only from reset paths.
    def reset(self):
        self.creds = {}
        for c in self.initial_creds:
            self.creds[c["access_key"]] = dict(c)
        self.jobs = {}
        self.latency = {}  # ("arn", arn) or ("service", name) -> ms
        self.rules = []
        self.clock_offset = 0.0
        self.skew_s = 300
        self.sts_cfg = {
            "ttl_s": None,
            "expected_web_identity_token": None,
            "expected_role_arn": None,
            "region": None,
        }
        self.container_cfg = {"path": "/v1/credentials", "token": None, "ttl_s": 3600}
        self.imds_cfg = {
            "role": "fake-instance-role",
            "ttl_s": 3600,
            "region": "us-east-1",
            "allow_v1": False,
        }
        self.imds_tokens = {}
        self.close_connections = False  # answer "Connection: close": no keep-alive reuse
        self.issued = []
        if not hasattr(self, "in_flight"):
            self.in_flight = 0  # live requests survive a reset; keep their count right
        self.reset_stats()

    def reset_stats(self):
        self.stats = {
            "total_requests": 0,
            "requests_by_service": {},
            "personalize": {
                "requests": 0,
                "per_arn": {},
                "answered": {},
                "per_access_key": {},
                "responses_by_status": {},
                "errors_by_type": {},
                "requests_with_token": 0,
            },
            "signature_failure_count": 0,
            "signature_failures": [],
            "injected_failures": 0,
            "max_in_flight": self.in_flight,
            "connections": 0,  # TCP connections accepted on the plain port: shows reuse
            "tls_connections": 0,  # and on the HTTPS port
            "last_request": None,
            "sts": {
                "AssumeRoleWithWebIdentity": 0,
                "AssumeRole": 0,
                "web_identity_tokens": [],
                "role_arns": [],
                "session_names": [],
            },
            "container": {"requests": 0, "auth_ok": 0, "auth_failed": 0},
            "imds": {
                "token_requests": 0,
                "role_requests": 0,
                "credential_requests": 0,
                "v1_rejected": 0,
                "bad_token": 0,
                "ttl_requested": [],
            },
        }
        self.tokens_seen = set()

    def now(self):
        return time.time() + self.clock_offset

    def snapshot(self):
        with self.lock:
            out = copy.deepcopy(self.stats)
            out["security_tokens_seen"] = len(self.tokens_seen)
            out["in_flight"] = self.in_flight
            out["issued"] = [
                {"source": i["source"], "access_key": i["access_key"],
                 "expiration": i["expiration"]}
                for i in self.issued
            ]
            out["jobs"] = sorted(self.jobs)
            out["clock_offset_s"] = self.clock_offset
            return out

    def record_sig_failure(self, service, err, access_key=None):
        with self.lock:
            self.stats["signature_failure_count"] += 1
            if len(self.stats["signature_failures"]) < MAX_RECORDED_FAILURES:
                self.stats["signature_failures"].append(
                    {
                        "service": service,
                        "code": err.code,
                        "status": err.status,
                        "reason": err.reason,
                        "access_key": access_key,
                        "time": time.time(),
                    }
                )

    def take_rule(self, service, arn):
        """Returns the failure spec that applies to this request (consuming one use) or None."""
        with self.lock:
            for rule in self.rules:
                if rule["service"] != service:
                    continue
                if rule["arn"] is not None and rule["arn"] != arn:
                    continue
                if rule["remaining"] is not None:
                    if rule["remaining"] <= 0:
                        continue
                    rule["remaining"] -= 1
                self.stats["injected_failures"] += 1
                return dict(rule["spec"])
            return None

    def latency_for(self, service, arn=None):
        with self.lock:
            if arn is not None and ("arn", arn) in self.latency:
                return self.latency[("arn", arn)]
            return self.latency.get(("service", service), 0)

    def issue(self, source, ttl_s):
        now = self.now()
        cred = {
            "access_key": _random_akid(),
            "secret_key": _random_secret(),
            "session_token": _random_token(),
            "expires_at": now + ttl_s,
            "services": None,
        }
        with self.lock:
            self.creds[cred["access_key"]] = cred
            self.issued.append(
                {
                    "source": source,
                    "access_key": cred["access_key"],
                    "secret_key": cred["secret_key"],
                    "session_token": cred["session_token"],
                    "expiration": _iso8601(cred["expires_at"]),
                    "expires_at": cred["expires_at"],
                }
            )
        return cred

    def load_fixture(self, name):
        fname = name if name.endswith(".json") else name + ".json"
        if os.path.isabs(fname):
            candidates = [fname]
        else:
            candidates = [os.path.join(d, fname) for d in self.fixture_dirs]
            candidates += [os.path.join(REPO_FIXTURES, fname), os.path.join(OWN_FIXTURES, fname)]
        for path in candidates:
            if os.path.isfile(path):
                with open(path, encoding="utf-8") as f:
                    return json.load(f)
        raise ValueError("fixture %r not found in %s" % (name, candidates))


def parse_credentials_spec(spec, now):
    if not isinstance(spec, dict) or not spec.get("access_key") or not spec.get("secret_key"):
        raise ValueError("each credential needs access_key and secret_key")
    expires_at = spec.get("expires_at")
    if spec.get("expires_in_s") is not None:
        expires_at = now + float(spec["expires_in_s"])
    services = spec.get("services")
    return {
        "access_key": str(spec["access_key"]),
        "secret_key": str(spec["secret_key"]),
        "session_token": spec.get("session_token") or None,
        "expires_at": float(expires_at) if expires_at is not None else None,
        "services": list(services) if services else None,
    }


def verify_sigv4(state, method, raw_path, headers, body, service, expected_region):
    """Checks a request's SigV4 Authorization header; returns the credential set or raises AwsError."""
    auth = headers.get("Authorization")
    if not auth:
        raise AwsError(403, "MissingAuthenticationTokenException", "Missing Authentication Token")
    m = AUTH_RE.match(auth.strip())
    if not m:
        raise AwsError(
            400,
            "IncompleteSignatureException",
            "Authorization header requires 'Credential', 'Signature' and 'SignedHeaders' "
            "parameters in AWS4-HMAC-SHA256 form.",
            "malformed Authorization header",
        )
    credential, signed_list, signature = m.group(1), m.group(2), m.group(3)
    parts = credential.split("/")
    if len(parts) != 5 or parts[4] != "aws4_request":
        raise AwsError(
            400, "IncompleteSignatureException", "Credential must have exactly 5 slash-delimited elements.",
            "credential scope malformed",
        )
    akid, scope_date, scope_region, scope_service = parts[0], parts[1], parts[2], parts[3]
    amz_date = headers.get("X-Amz-Date")
    if not amz_date:
        raise AwsError(
            400, "IncompleteSignatureException",
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
            "no X-Amz-Date header",
        )
    try:
        req_time = datetime.datetime.strptime(amz_date, AMZ_DATE_FMT).replace(
            tzinfo=datetime.timezone.utc).timestamp()
    except ValueError:
        raise AwsError(403, "InvalidSignatureException", "Invalid X-Amz-Date", "X-Amz-Date malformed")
    if scope_date != amz_date[:8]:
        raise AwsError(
            403, "InvalidSignatureException",
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: "
            "'%s' != '%s'" % (scope_date, amz_date[:8]),
            "scope date != X-Amz-Date date",
        )
    if scope_service != service:
        raise AwsError(
            403, "InvalidSignatureException",
            "Credential should be scoped to correct service: '%s'." % service,
            "scope service %r != %r" % (scope_service, service),
        )
    if not REGION_RE.match(scope_region):
        raise AwsError(
            403, "InvalidSignatureException", "Credential should be scoped to a valid region.",
            "scope region %r malformed" % scope_region,
        )
    if expected_region is not None and scope_region != expected_region:
        raise AwsError(
            403, "InvalidSignatureException",
            "Credential should be scoped to a valid region, not '%s'." % scope_region,
            "scope region %r != ARN region %r" % (scope_region, expected_region),
        )
    signed = signed_list.split(";")
    if signed != sorted(signed) or any(h != h.lower() or not h for h in signed):
        raise AwsError(403, "InvalidSignatureException", SIG_MISMATCH_MSG,
                       "SignedHeaders not sorted lowercase")
    for required in ("host", "x-amz-date"):
        if required not in signed:
            raise AwsError(
                403, "InvalidSignatureException",
                "'%s' must be a signed header." % required, "%s not signed" % required,
            )
    claimed = []
    for name in signed:
        values = headers.get_all(name)
        if not values:
            raise AwsError(403, "InvalidSignatureException", SIG_MISMATCH_MSG,
                           "signed header %s absent" % name)
        claimed.append((name, values))

    now = state.now()
    with state.lock:
        cred = state.creds.get(akid)
        cred = dict(cred) if cred else None
        skew = state.skew_s
    if cred is None or (cred["services"] and service not in cred["services"]):
        raise AwsError(403, "UnrecognizedClientException", INVALID_TOKEN_MSG, "unknown access key id")
    token = headers.get("X-Amz-Security-Token")
    if cred["session_token"]:
        if token is None or not hmac.compare_digest(token.encode(), cred["session_token"].encode()):
            raise AwsError(403, "UnrecognizedClientException", INVALID_TOKEN_MSG,
                           "session token missing or wrong")
        if "x-amz-security-token" not in signed:
            raise AwsError(403, "InvalidSignatureException", SIG_MISMATCH_MSG,
                           "x-amz-security-token not signed")
    elif token is not None:
        raise AwsError(403, "UnrecognizedClientException", INVALID_TOKEN_MSG,
                       "session token sent with long-term key")
    if cred["expires_at"] is not None and now >= cred["expires_at"]:
        raise AwsError(400, "ExpiredTokenException", EXPIRED_TOKEN_MSG, "credentials expired")
    if req_time < now - skew:
        raise AwsError(
            403, "InvalidSignatureException",
            "Signature expired: %s is now earlier than %s (%s - 5 min.)"
            % (amz_date, time.strftime(AMZ_DATE_FMT, time.gmtime(now - skew)),
               time.strftime(AMZ_DATE_FMT, time.gmtime(now))),
            "X-Amz-Date too old",
        )
    if req_time > now + skew:
        raise AwsError(
            403, "InvalidSignatureException",
            "Signature not yet current: %s is still later than %s (%s + 5 min.)"
            % (amz_date, time.strftime(AMZ_DATE_FMT, time.gmtime(now + skew)),
               time.strftime(AMZ_DATE_FMT, time.gmtime(now))),
            "X-Amz-Date in the future",
        )
    content_sha = headers.get("X-Amz-Content-SHA256")
    if content_sha is not None and content_sha != hashlib.sha256(body).hexdigest():
        raise AwsError(400, "XAmzContentSHA256Mismatch",
                       "The provided 'x-amz-content-sha256' header does not match what was computed.")

    request = AWSRequest(
        method=method, url="http://" + headers.get("Host", "") + raw_path, data=body,
        headers={name: values[-1] for name, values in claimed},
    )
    request.context["timestamp"] = amz_date
    signer = _ClaimedHeadersSigner(
        Credentials(cred["access_key"], cred["secret_key"], cred["session_token"]),
        service, scope_region, claimed,
    )
    canonical = signer.canonical_request(request)
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    if not hmac.compare_digest(expected, signature):
        raise AwsError(403, "InvalidSignatureException", SIG_MISMATCH_MSG, "signature mismatch")
    return cred


def sanitized_headers(headers):
    out = {}
    for name, value in headers.items():
        lname = name.lower()
        if lname == "authorization":
            m = AUTH_RE.match(value.strip())
            out[lname] = "<redacted>"
            if m:
                out["authorization-parsed"] = {
                    "credential": m.group(1), "signed_headers": m.group(2).split(";")
                }
        elif lname in ("x-amz-security-token", "x-aws-ec2-metadata-token"):
            out[lname] = "<redacted>"
        else:
            out[lname] = value
    return out


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without TCP_NODELAY, Nagle holds the body
    # back until the client ACKs the headers, which a delayed ACK makes 40 ms on a reused
    # keep-alive connection (real AWS endpoints answer without that stall).
    disable_nagle_algorithm = True
    server_version = "FakeAWS/1.0"
    sys_version = ""

    def setup(self):
        super().setup()
        st = self.server.state
        with st.lock:
            st.stats["tls_connections" if self.server.tls_context else "connections"] += 1

    def log_message(self, fmt, *args):
        # Only the request line and status are ever logged, and only with --verbose.
        if self.server.verbose:
            sys.stderr.write("fake_aws: %s\n" % (fmt % args))

    do_GET = do_POST = do_PUT = do_DELETE = lambda self: self._dispatch()

    # --- plumbing ------------------------------------------------------------------------------

    @property
    def state(self):
        return self.server.state

    def _read_body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            out = bytearray()
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline(65537)
                if len(out) > MAX_BODY:
                    raise ValueError("body too large")
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise ValueError("body too large")
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, status, body, content_type, headers=None, error_type=None, request_id=True):
        if isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if request_id:
            self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        if error_type:
            self.send_header("x-amzn-ErrorType", error_type)
        for k, v in (headers or {}).items():
            self.send_header(k, str(v))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, status, obj, content_type="application/json"):
        self._send(status, json.dumps(obj), content_type)

    def _send_aws_json_error(self, err):
        self._send(err.status, json.dumps({"__type": err.code, "message": err.message}), JSON_11,
                   error_type=err.code.split("#")[-1])

    def _send_sts_error(self, err):
        kind = "Sender" if err.status < 500 else "Receiver"
        rid = str(uuid.uuid4())
        body = (
            '<ErrorResponse xmlns="%s">\n  <Error>\n    <Type>%s</Type>\n    <Code>%s</Code>\n'
            "    <Message>%s</Message>\n  </Error>\n  <RequestId>%s</RequestId>\n</ErrorResponse>\n"
            % (STS_NS, kind, xml_escape(err.code), xml_escape(err.message), rid)
        )
        self._send(err.status, body, "text/xml", error_type=err.code)

    def _drop_connection(self, reset):
        self.close_connection = True
        try:
            if reset:
                # SO_LINGER 0 turns close() into a TCP RST.
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                           struct.pack("ii", 1, 0))
            else:
                self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _trickle(self, spec):
        """A well-formed 200 answer (the ARN's job, else an empty job) sent one byte every
        trickle_ms: a peer that keeps the connection alive yet never finishes in time. Stops
        when the client hangs up."""
        body = json.dumps(spec.get("body") or {"batchInferenceJob": {}}).encode()
        head = ("HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
                "x-amzn-RequestId: %s\r\n\r\n" % (JSON_11, len(body), uuid.uuid4())).encode()
        pause = float(spec.get("trickle_ms", 200)) / 1000.0
        self.close_connection = True
        try:
            for i in range(len(head) + len(body)):
                b = (head + body)[i:i + 1]
                self.wfile.write(b)
                self.wfile.flush()
                time.sleep(pause)
        except OSError:
            pass

    def _apply_injected(self, spec, kind):
        """Answers a request with an injected failure spec; `kind` picks the error body shape."""
        if spec.get("delay_ms"):
            time.sleep(spec["delay_ms"] / 1000.0)
        action = spec.get("action")
        if action in ("close", "reset"):
            self._drop_connection(action == "reset")
            return
        if action == "trickle":
            self._trickle(spec)
            return
        extra = spec.get("headers") or {}
        if "raw" in spec:
            self._send(int(spec.get("status", 500)), spec["raw"],
                       spec.get("content_type", JSON_11), extra,
                       request_id=not spec.get("omit_request_id"))
            return
        if "body" in spec:
            self._send(int(spec.get("status", 200)), json.dumps(spec["body"]),
                       spec.get("content_type", JSON_11), extra,
                       request_id=not spec.get("omit_request_id"))
            return
        err = AwsError(int(spec.get("status", 500)), spec.get("type", "InternalFailure"),
                       spec.get("message", "Injected failure"))
        if kind == "sts":
            self._send_sts_error(err)
        elif kind == "json11":
            body = json.dumps({"__type": err.code, "message": err.message})
            self._send(err.status, body, JSON_11, extra, error_type=err.code.split("#")[-1],
                       request_id=not spec.get("omit_request_id"))
        else:
            self._send(err.status, json.dumps({"Code": err.code, "Message": err.message}),
                       "application/json", extra)

    def _dispatch(self):
        path = urllib.parse.urlsplit(self.path).path
        try:
            body = self._read_body()
        except (ValueError, OSError):
            self.close_connection = True
            self._send(413, "request too large or malformed", "text/plain")
            return
        if path.startswith("/__control/"):
            self._control(path, body)
            return
        st = self.state
        with st.lock:
            st.in_flight += 1
            st.stats["total_requests"] += 1
            if st.in_flight > st.stats["max_in_flight"]:
                st.stats["max_in_flight"] = st.in_flight
            container_path = st.container_cfg["path"]
        try:
            ctype = (self.headers.get("Content-Type") or "").lower()
            if path.startswith("/latest/"):
                self._service("imds", self._imds, path, body)
            elif self.command == "GET" and path == container_path:
                self._service("container", self._container, path, body)
            elif self.command == "POST" and (
                self.headers.get("X-Amz-Target") or ctype.startswith("application/x-amz-json")
            ):
                self._service("personalize", self._personalize, path, body)
            elif self.command in ("POST", "GET") and (
                ctype.startswith("application/x-www-form-urlencoded") or "Action=" in self.path
            ):
                self._service("sts", self._sts, path, body)
            else:
                self._send(404, json.dumps({"message": "no fake at %s %s" % (self.command, path)}),
                           "application/json")
        finally:
            with st.lock:
                st.in_flight -= 1

    def _service(self, name, fn, path, body):
        with self.state.lock:
            by = self.state.stats["requests_by_service"]
            by[name] = by.get(name, 0) + 1
        fn(path, body)

    # --- Personalize ----------------------------------------------------------------------------

    def _personalize(self, path, body):
        st = self.state
        arn = None
        parsed = None
        try:
            parsed = json.loads(body.decode("utf-8")) if body else None
            if isinstance(parsed, dict) and isinstance(parsed.get("batchInferenceJobArn"), str):
                arn = parsed["batchInferenceJobArn"]
        except (ValueError, UnicodeDecodeError):
            parsed = None
        token = self.headers.get("X-Amz-Security-Token")
        with st.lock:
            ps = st.stats["personalize"]
            ps["requests"] += 1
            if arn is not None:
                ps["per_arn"][arn] = ps["per_arn"].get(arn, 0) + 1
            st.stats["last_request"] = {
                "service": "personalize",
                "method": self.command,
                "path": self.path,
                "headers": sanitized_headers(self.headers),
                "had_token": token is not None,
                "arn": arn,
                "body": body.decode("utf-8", "replace")[:4096],
            }
            if token is not None:
                ps["requests_with_token"] += 1
                st.tokens_seen.add(_token_digest(token))
        delay = st.latency_for("personalize", arn)
        if delay:
            time.sleep(delay / 1000.0)

        status = None
        try:
            arn_match = ARN_RE.match(arn) if arn else None
            region = arn_match.group(2) if arn_match and arn_match.group(2) else None
            try:
                cred = verify_sigv4(st, self.command, self.path, self.headers, body,
                                    "personalize", region)
            except AwsError as err:
                m = AUTH_RE.match((self.headers.get("Authorization") or "").strip())
                st.record_sig_failure("personalize", err, m.group(1).split("/")[0] if m else None)
                raise
            with st.lock:
                pk = st.stats["personalize"]["per_access_key"]
                pk[cred["access_key"]] = pk.get(cred["access_key"], 0) + 1
            spec = st.take_rule("personalize", arn)
            if spec is not None:
                status = spec.get("status", "injected")
                self._apply_injected(spec, "json11")
                return
            target = self.headers.get("X-Amz-Target")
            if target != PERSONALIZE_TARGET:
                raise AwsError(400, "com.amazon.coral.service#UnknownOperationException",
                               "Unknown operation %r" % target)
            if self.headers.get("Content-Type", "").split(";")[0].strip().lower() != JSON_11:
                raise AwsError(400, "com.amazon.coral.service#SerializationException",
                               "Content-Type must be %s" % JSON_11)
            if not isinstance(parsed, dict):
                raise AwsError(400, "com.amazon.coral.service#SerializationException",
                               "Request body is not a JSON object")
            if arn is None:
                raise AwsError(400, "com.amazonaws.personalize#InvalidInputException",
                               "1 validation error detected: Value null at 'batchInferenceJobArn' "
                               "failed to satisfy constraint: Member must not be null")
            if len(arn) > 256 or not arn_match:
                raise AwsError(400, "com.amazonaws.personalize#InvalidInputException",
                               "1 validation error detected: Value '%s' at 'batchInferenceJobArn' "
                               "failed to satisfy constraint: Member must satisfy regular "
                               "expression pattern: arn:([a-z\\d-]+):personalize:.*:.*:.+" % arn)
            with st.lock:
                job = copy.deepcopy(st.jobs.get(arn))
            if job is None:
                raise AwsError(400, "com.amazonaws.personalize#ResourceNotFoundException",
                               "Could not find batch inference job arn = %s" % arn)
            status = 200
            with st.lock:
                close = st.close_connections
            self._send(200, json.dumps(job), JSON_11,
                       {"Connection": "close"} if close else None)
            with st.lock:
                # The status each ARN was last answered with, and when it was first answered
                # so: the moment a poll saw a change (bench/watch_bench.py measures from it).
                inner = job.get("batchInferenceJob") if isinstance(job, dict) else None
                now_status = inner.get("status") if isinstance(inner, dict) else None
                answered = st.stats["personalize"]["answered"]
                if answered.get(arn, {}).get("status") != now_status:
                    answered[arn] = {"status": now_status, "first_at": time.time()}
        except AwsError as err:
            status = err.status
            with st.lock:
                eb = st.stats["personalize"]["errors_by_type"]
                short = err.code.split("#")[-1]
                eb[short] = eb.get(short, 0) + 1
            self._send_aws_json_error(err)
        finally:
            with st.lock:
                rb = st.stats["personalize"]["responses_by_status"]
                rb[str(status)] = rb.get(str(status), 0) + 1

    # --- STS ------------------------------------------------------------------------------------

    def _sts(self, path, body):
        st = self.state
        params = {}
        for k, v in urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query):
            params[k] = v
        try:
            for k, v in urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=True):
                params[k] = v
        except UnicodeDecodeError:
            pass
        action = params.get("Action")
        delay = st.latency_for("sts")
        if delay:
            time.sleep(delay / 1000.0)
        try:
            if action == "AssumeRole":
                with st.lock:
                    region = st.sts_cfg["region"]
                try:
                    verify_sigv4(st, self.command, self.path, self.headers, body, "sts", region)
                except AwsError as err:
                    m = AUTH_RE.match((self.headers.get("Authorization") or "").strip())
                    st.record_sig_failure("sts", err, m.group(1).split("/")[0] if m else None)
                    # STS (query protocol) names the same failures differently.
                    err.code = STS_AUTH_CODES.get(err.code, err.code)
                    raise
            elif action != "AssumeRoleWithWebIdentity":
                raise AwsError(400, "InvalidAction", "Could not find operation %s" % action)
            with st.lock:
                ss = st.stats["sts"]
                ss[action] += 1
                if action == "AssumeRoleWithWebIdentity":
                    ss["web_identity_tokens"].append(params.get("WebIdentityToken"))
                ss["role_arns"].append(params.get("RoleArn"))
                ss["session_names"].append(params.get("RoleSessionName"))
                cfg = dict(st.sts_cfg)
            spec = st.take_rule("sts", None)
            if spec is not None:
                self._apply_injected(spec, "sts")
                return
            for p in ("RoleArn", "RoleSessionName") + (
                ("WebIdentityToken",) if action == "AssumeRoleWithWebIdentity" else ()
            ):
                if not params.get(p):
                    raise AwsError(400, "ValidationError",
                                   "1 validation error detected: Value null at '%s' failed to "
                                   "satisfy constraint: Member must not be null" % p)
            if action == "AssumeRoleWithWebIdentity" and cfg["expected_web_identity_token"] is not None:
                if params["WebIdentityToken"] != cfg["expected_web_identity_token"]:
                    raise AwsError(400, "InvalidIdentityToken", "Couldn't retrieve verification key "
                                   "from your identity provider, please reference "
                                   "AssumeRoleWithWebIdentity documentation for requirements")
            if cfg["expected_role_arn"] is not None and params["RoleArn"] != cfg["expected_role_arn"]:
                raise AwsError(403, "AccessDenied", "Not authorized to perform sts:%s" % action)
            ttl = cfg["ttl_s"] or int(params.get("DurationSeconds") or 3600)
            cred = st.issue("sts:" + action, ttl)
            role = params["RoleArn"].split("/")[-1]
            session = params["RoleSessionName"]
            result_extra = ""
            if action == "AssumeRoleWithWebIdentity":
                result_extra = (
                    "    <SubjectFromWebIdentityToken>system:serviceaccount:default:pgw"
                    "</SubjectFromWebIdentityToken>\n    <Audience>sts.amazonaws.com</Audience>\n"
                    "    <Provider>arn:aws:iam::123456789012:oidc-provider/fake</Provider>\n"
                )
            rid = str(uuid.uuid4())
            xml = (
                '<{a}Response xmlns="{ns}">\n  <{a}Result>\n{extra}'
                "    <AssumedRoleUser>\n      <Arn>arn:aws:sts::123456789012:assumed-role/{role}/{sess}</Arn>\n"
                "      <AssumedRoleId>AROAFAKEFAKEFAKEFAKE:{sess}</AssumedRoleId>\n    </AssumedRoleUser>\n"
                "    <Credentials>\n      <AccessKeyId>{akid}</AccessKeyId>\n"
                "      <SecretAccessKey>{secret}</SecretAccessKey>\n"
                "      <SessionToken>{token}</SessionToken>\n"
                "      <Expiration>{exp}</Expiration>\n    </Credentials>\n"
                "  </{a}Result>\n  <ResponseMetadata>\n    <RequestId>{rid}</RequestId>\n"
                "  </ResponseMetadata>\n</{a}Response>\n"
            ).format(
                a=action, ns=STS_NS, extra=result_extra, role=xml_escape(role),
                sess=xml_escape(session), akid=cred["access_key"],
                secret=xml_escape(cred["secret_key"]), token=xml_escape(cred["session_token"]),
                exp=_iso8601(cred["expires_at"]), rid=rid,
            )
            self._send(200, xml, "text/xml")
        except AwsError as err:
            self._send_sts_error(err)

    # --- container credentials ------------------------------------------------------------------

    def _container(self, path, body):
        st = self.state
        delay = st.latency_for("container")
        if delay:
            time.sleep(delay / 1000.0)
        with st.lock:
            cfg = dict(st.container_cfg)
            st.stats["container"]["requests"] += 1
        auth = self.headers.get("Authorization")
        if cfg["token"] is not None and (
            auth is None or not hmac.compare_digest(auth.encode(), cfg["token"].encode())
        ):
            with st.lock:
                st.stats["container"]["auth_failed"] += 1
            self._send_json(401, {"Code": "AccessDenied",
                                  "Message": "Invalid or missing authorization token"})
            return
        with st.lock:
            st.stats["container"]["auth_ok"] += 1
        spec = st.take_rule("container", None)
        if spec is not None:
            self._apply_injected(spec, "plain")
            return
        cred = st.issue("container", cfg["ttl_s"])
        self._send_json(200, {
            "AccessKeyId": cred["access_key"],
            "SecretAccessKey": cred["secret_key"],
            "Token": cred["session_token"],
            "Expiration": _iso8601(cred["expires_at"]),
            "RoleArn": "arn:aws:iam::123456789012:role/fake-container-role",
            "AccountId": "123456789012",
        })

    # --- IMDSv2 ---------------------------------------------------------------------------------

    def _imds(self, path, body):
        st = self.state
        delay = st.latency_for("imds")
        if delay:
            time.sleep(delay / 1000.0)
        with st.lock:
            cfg = dict(st.imds_cfg)
        spec = st.take_rule("imds", None)
        if spec is not None:
            self._apply_injected(spec, "plain")
            return
        if path == "/latest/api/token":
            if self.command != "PUT":
                self._send(405, "", "text/plain", request_id=False)
                return
            with st.lock:
                st.stats["imds"]["token_requests"] += 1
            if self.headers.get("X-Forwarded-For"):
                self._send(403, "", "text/plain", request_id=False)
                return
            ttl_raw = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds")
            try:
                ttl = int(ttl_raw)
            except (TypeError, ValueError):
                ttl = 0
            if not 1 <= ttl <= 21600:
                self._send(400, "", "text/plain", request_id=False)
                return
            token = base64.urlsafe_b64encode(secrets.token_bytes(42)).decode()
            with st.lock:
                st.stats["imds"]["ttl_requested"].append(ttl)
                st.imds_tokens[token] = st.now() + ttl
            self._send(200, token, "text/plain",
                       {"X-aws-ec2-metadata-token-ttl-seconds": ttl}, request_id=False)
            return
        if self.command != "GET":
            self._send(405, "", "text/plain", request_id=False)
            return
        token = self.headers.get("X-aws-ec2-metadata-token")
        with st.lock:
            if token is None:
                ok = cfg["allow_v1"]
                if not ok:
                    st.stats["imds"]["v1_rejected"] += 1
            else:
                exp = st.imds_tokens.get(token)
                ok = exp is not None and st.now() < exp
                if not ok:
                    st.stats["imds"]["bad_token"] += 1
        if not ok:
            self._send(401, "", "text/plain", request_id=False)
            return
        prefix = "/latest/meta-data/iam/security-credentials/"
        if path == prefix:
            with st.lock:
                st.stats["imds"]["role_requests"] += 1
            self._send(200, cfg["role"], "text/plain", request_id=False)
        elif path == prefix + cfg["role"]:
            with st.lock:
                st.stats["imds"]["credential_requests"] += 1
            cred = st.issue("imds", cfg["ttl_s"])
            self._send(200, json.dumps({
                "Code": "Success",
                "LastUpdated": _iso8601(st.now()),
                "Type": "AWS-HMAC",
                "AccessKeyId": cred["access_key"],
                "SecretAccessKey": cred["secret_key"],
                "Token": cred["session_token"],
                "Expiration": _iso8601(cred["expires_at"]),
            }), "text/plain", request_id=False)
        elif path == "/latest/meta-data/placement/region":
            self._send(200, cfg["region"], "text/plain", request_id=False)
        elif path == "/latest/dynamic/instance-identity/document":
            self._send(200, json.dumps({"region": cfg["region"], "accountId": "123456789012"}),
                       "application/json", request_id=False)
        else:
            self._send(404, "", "text/plain", request_id=False)

    # --- control API ----------------------------------------------------------------------------

    def _control(self, path, body):
        st = self.state
        try:
            payload = json.loads(body.decode("utf-8")) if body.strip() else {}
            if not isinstance(payload, dict):
                raise ValueError("control payload must be a JSON object")
            result = self._control_route(st, self.command, path[len("/__control/"):], payload)
            self._send_json(200, result if result is not None else {"ok": True})
        except (ValueError, KeyError, TypeError) as exc:
            self._send_json(400, {"error": str(exc)})

    def _control_route(self, st, method, route, p):
        if route == "ping":
            return {"ok": True}
        if route == "stats" and method == "GET":
            return st.snapshot()
        if method != "POST" and route != "issued" and route != "jobs":
            raise ValueError("use POST for /__control/%s" % route)
        if route == "reset":
            with st.lock:
                st.reset()
            return None
        if route == "reset_stats":
            with st.lock:
                st.reset_stats()
            return None
        if route == "jobs" and method == "GET":
            with st.lock:
                return {"jobs": sorted(st.jobs)}
        if route == "jobs":
            arn = p["arn"]
            if "body" in p:
                job = copy.deepcopy(p["body"])
            elif "job" in p:
                job = {"batchInferenceJob": copy.deepcopy(p["job"])}
            else:
                job = st.load_fixture(p.get("fixture", "job_full"))
            inner = job.get("batchInferenceJob") if isinstance(job, dict) else None
            if isinstance(inner, dict):
                if p.get("keep_arn") is not True:
                    inner["batchInferenceJobArn"] = arn
                if p.get("status") is not None:
                    inner["status"] = p["status"]
                for k, v in (p.get("overrides") or {}).items():
                    if v is None:
                        inner.pop(k, None)
                    else:
                        inner[k] = v
            with st.lock:
                st.jobs[arn] = job
            return {"ok": True, "job": job}
        if route == "jobs/status":
            # A job moving on at run time, as AWS would show it: a new status and (unless
            # given) a last-updated time of now. Watches see exactly these transitions.
            arn = p["arn"]
            with st.lock:
                job = st.jobs.get(arn)
                inner = job.get("batchInferenceJob") if isinstance(job, dict) else None
                if not isinstance(inner, dict):
                    raise ValueError("no job registered for %r" % arn)
                if p.get("status") is not None:
                    inner["status"] = p["status"]
                updated = p.get("last_updated")
                inner["lastUpdatedDateTime"] = float(updated) if updated is not None else round(
                    st.now(), 3)
                return {"ok": True, "job": copy.deepcopy(job)}
        if route == "jobs/delete":
            with st.lock:
                st.jobs.pop(p["arn"], None)
            return None
        if route == "credentials":
            now = st.now()
            creds = [parse_credentials_spec(c, now) for c in p.get("credentials", [])]
            with st.lock:
                if p.get("replace", True):
                    st.creds = {}
                for c in creds:
                    st.creds[c["access_key"]] = c
            return {"ok": True, "accepted": [c["access_key"] for c in creds]}
        if route == "credentials/expire":
            with st.lock:
                c = st.creds.get(p["access_key"])
                if c is None:
                    raise ValueError("unknown access key")
                c["expires_at"] = st.now() - 1
            return None
        if route == "credentials/remove":
            with st.lock:
                st.creds.pop(p["access_key"], None)
            return None
        if route == "latency":
            ms = float(p.get("ms", 0))
            key = ("arn", p["arn"]) if p.get("arn") else ("service", p.get("service", "personalize"))
            with st.lock:
                if ms > 0:
                    st.latency[key] = ms
                else:
                    st.latency.pop(key, None)
            return None
        if route == "fail":
            spec = dict(p)
            rule = {
                "service": spec.pop("service", "personalize"),
                "arn": spec.pop("arn", None),
                "remaining": spec.pop("count", None),
                "spec": spec,
            }
            if rule["arn"] is None and rule["remaining"] is None:
                rule["remaining"] = 1
            if rule["remaining"] is not None:
                rule["remaining"] = int(rule["remaining"])
            with st.lock:
                st.rules.append(rule)
            return None
        if route == "fail/clear":
            with st.lock:
                st.rules = []
            return None
        if route == "connections":
            with st.lock:
                st.close_connections = bool(p.get("close", False))
            return None
        if route == "clock":
            with st.lock:
                st.clock_offset = float(p.get("offset_s", 0))
                if "skew_s" in p:
                    st.skew_s = float(p["skew_s"])
            return None
        if route in ("sts", "container", "imds"):
            cfg = {"sts": st.sts_cfg, "container": st.container_cfg, "imds": st.imds_cfg}[route]
            with st.lock:
                for k, v in p.items():
                    if k not in cfg:
                        raise ValueError("unknown %s setting %r" % (route, k))
                    cfg[k] = v
                return dict(cfg)
        if route == "issued":
            with st.lock:
                return {"issued": copy.deepcopy(st.issued)}
        raise ValueError("unknown control route %r" % route)


class FakeServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024

    def __init__(self, addr, state, verbose, tls_context=None):
        self.state = state
        self.verbose = verbose
        self.tls_context = tls_context
        super().__init__(addr, Handler)

    def get_request(self):
        sock, addr = super().get_request()
        if self.tls_context is not None:
            # The handshake runs in the connection's own thread (on first read), so a slow or
            # failing client never stalls the accept loop.
            sock = self.tls_context.wrap_socket(sock, server_side=True,
                                                do_handshake_on_connect=False)
        return sock, addr

    def handle_error(self, request, client_address):
        # Clients that hang up mid-request are normal in failure tests; stay quiet.
        if self.verbose:
            super().handle_error(request, client_address)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file")
    ap.add_argument("--fixtures", action="append", default=[])
    ap.add_argument("--access-key", default=os.environ.get("FAKE_AWS_ACCESS_KEY_ID"))
    ap.add_argument("--secret-key", default=os.environ.get("FAKE_AWS_SECRET_ACCESS_KEY"))
    ap.add_argument("--session-token", default=os.environ.get("FAKE_AWS_SESSION_TOKEN"))
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--tls-cert", help="also serve HTTPS with this PEM certificate chain")
    ap.add_argument("--tls-key", help="the private key of --tls-cert")
    ap.add_argument("--tls-port-file", help="where to write the HTTPS port")
    args = ap.parse_args()
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        ap.error("the fake only listens on loopback")

    initial = []
    if args.access_key and args.secret_key:
        initial.append(parse_credentials_spec(
            {"access_key": args.access_key, "secret_key": args.secret_key,
             "session_token": args.session_token}, time.time()))
    state = State(initial, [os.path.abspath(d) for d in args.fixtures])

    # Many slow requests at once means many threads; keep their stacks small.
    threading.stack_size(512 * 1024)
    server = FakeServer((args.host, args.port), state, args.verbose)
    port = server.server_address[1]
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % port)
        os.replace(tmp, args.port_file)
    print("fake_aws listening on %s:%d" % (args.host, port), flush=True)
    if args.tls_cert:
        # A second listener on the same state: HTTPS for the upstream TLS tests, while the
        # control API stays on the plain port.
        import ssl

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
        tls_server = FakeServer((args.host, 0), state, args.verbose, ctx)
        tls_port = tls_server.server_address[1]
        if args.tls_port_file:
            tmp = args.tls_port_file + ".tmp"
            with open(tmp, "w") as f:
                f.write("%d\n" % tls_port)
            os.replace(tmp, args.tls_port_file)
        threading.Thread(target=tls_server.serve_forever, kwargs={"poll_interval": 0.2},
                         daemon=True).start()
    import signal

    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
