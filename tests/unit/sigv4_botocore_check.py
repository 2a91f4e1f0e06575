"""Signs requests with Debian's botocore (SigV4Auth) for test_sigv4_botocore.c.

Input (file named by argv[1], or stdin): a JSON list of requests, each
  {"method", "host", "path", "query", "headers": [[name, value], ...], "body_hex",
   "access_key_id", "secret_access_key", "session_token" (or null), "region", "service",
   "amz_date": "YYYYMMDDTHHMMSSZ"}
Output (stdout): a JSON list, one object per request, in order:
  {"authorization", "x_amz_date", "x_amz_security_token" (or null),
   "canonical_request" (session token replaced by "<token>", for mismatch reports)}

How the request reaches botocore, and why:
- the path goes into the URL exactly as given: botocore takes urlsplit(url).path, removes dot
  segments and quotes it again (so an already-encoded "%20" becomes "%2520"), which is what
  the real client does with a prepared URL;
- the query goes in as `params`, a list of (name, value) pairs percent-decoded from the raw
  query: that is how botocore signs query parameters (it quotes them with the unreserved set and
  sorts them). Handing it the raw query in the URL instead would make it sign the pairs as
  written, without re-encoding;
- time is pinned by replacing botocore.auth.datetime, whose datetime.utcnow() add_auth calls
  (setting request.context['timestamp'] first does not work: add_auth overwrites it).
"""

import datetime
import json
import sys
import types
from urllib.parse import unquote

import botocore.auth
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials


class _PinnedDatetime(datetime.datetime):
    pinned = None

    @classmethod
    def utcnow(cls):
        return cls.pinned


botocore.auth.datetime = types.SimpleNamespace(datetime=_PinnedDatetime)


class _CapturingSigV4Auth(SigV4Auth):
    """Keeps the canonical request add_auth signed (recomputing it afterwards would include the
    Authorization header just added)."""

    last_canonical = ""

    def canonical_request(self, request):
        self.last_canonical = super().canonical_request(request)
        return self.last_canonical


def _params(query):
    pairs = []
    for piece in (query or "").split("&"):
        if not piece:
            continue
        name, _, value = piece.partition("=")
        pairs.append((unquote(name), unquote(value)))
    return pairs


def sign(spec):
    _PinnedDatetime.pinned = datetime.datetime.strptime(spec["amz_date"], "%Y%m%dT%H%M%SZ")
    req = AWSRequest(
        method=spec["method"],
        url="https://" + spec["host"] + spec["path"],
        data=bytes.fromhex(spec["body_hex"]),
        params=_params(spec["query"]),
    )
    for name, value in spec["headers"]:
        req.headers[name] = value  # HTTPHeaders appends: duplicates are kept in order
    token = spec.get("session_token") or None
    creds = Credentials(spec["access_key_id"], spec["secret_access_key"], token)
    auth = _CapturingSigV4Auth(creds, spec["service"], spec["region"])
    auth.add_auth(req)
    canonical = auth.last_canonical
    if token:
        canonical = canonical.replace(token, "<token>")
    return {
        "authorization": req.headers["Authorization"],
        "x_amz_date": req.headers.get("X-Amz-Date"),
        "x_amz_security_token": req.headers.get("X-Amz-Security-Token"),
        "canonical_request": canonical,
    }


def main():
    if len(sys.argv) > 1:
        with open(sys.argv[1], encoding="utf-8") as f:
            specs = json.load(f)
    else:
        specs = json.load(sys.stdin)
    json.dump([sign(s) for s in specs], sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
