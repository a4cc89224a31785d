"""An S3 endpoint that checks every signature: moto's server with its authentication on, behind a
gate that checks presigned URLs.

moto, with ``INITIAL_NO_AUTH_ACTION_COUNT`` set, verifies the SigV4 ``Authorization`` header of
each request against the IAM users it knows (the endpoint creates one, with an access key, in
its first three, unauthenticated, requests). It does not verify query-string signatures: a
presigned URL's request has no ``Authorization`` header and moto answers it with a server
error. So every request passes a gate on loopback first. A presigned request is checked there as
S3 checks it (AWS Signature Version 4, query-string form: the signature over the method, path,
query and ``Host`` header with the user's secret key, the credential scope, and
``X-Amz-Date`` + ``X-Amz-Expires`` against the clock); a request that fails is answered 403
``AccessDenied``, one that passes is signed again in the header form and forwarded, so moto
authenticates it too. Requests that carry an ``Authorization`` header go to moto unchanged.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.client
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, quote, urlsplit

from s3server import running_s3_server

REGION = "us-east-1"
ALLOW_ALL = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
)


@dataclass(frozen=True)
class SignedS3:
    """The gate's endpoint (``host:port``) and the one user's credentials."""

    endpoint: str
    access_key: str
    secret_key: str
    region: str = REGION


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def _signing_key(secret: str, day: str, region: str, service: str) -> bytes:
    k = _hmac(("AWS4" + secret).encode(), day)
    return _hmac(_hmac(_hmac(k, region), service), "aws4_request")


def query_signature_error(
    method: str, target: str, host: str, secret_key: str, access_key: str, now: datetime
) -> str | None:
    """Why a presigned request is refused (None: it is valid), as S3 checks one."""
    url = urlsplit(target)
    params = parse_qsl(url.query, keep_blank_values=True)
    q = dict(params)
    if q.get("X-Amz-Algorithm") != "AWS4-HMAC-SHA256":
        return "unsupported algorithm"
    try:
        key_id, day, region, service, terminator = q["X-Amz-Credential"].split("/")
        signed_at = datetime.strptime(q["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        expires = int(q["X-Amz-Expires"])
        signed_headers = q["X-Amz-SignedHeaders"].split(";")
        signature = q["X-Amz-Signature"]
    except (KeyError, ValueError):
        return "malformed query authentication"
    if key_id != access_key:
        return "unknown access key"
    if terminator != "aws4_request" or day != q["X-Amz-Date"][:8]:
        return "bad credential scope"
    if not 1 <= expires <= 7 * 24 * 3600:
        return "bad expiry"
    if not signed_at.timestamp() - 900 <= now.timestamp() <= signed_at.timestamp() + expires:
        return "request has expired"
    if signed_headers != ["host"]:
        return "only the host header may be signed"
    query = "&".join(
        f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}"
        for k, v in sorted(params)
        if k != "X-Amz-Signature"
    )
    canonical = "\n".join(
        [method, url.path or "/", query, f"host:{host}", "", "host", "UNSIGNED-PAYLOAD"]
    )
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", q["X-Amz-Date"], scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    want = hmac.new(
        _signing_key(secret_key, day, region, service), to_sign.encode(), hashlib.sha256
    ).hexdigest()
    if not hmac.compare_digest(want, signature):
        return "signature does not match"
    return None


def _resign(
    method: str, target: str, host: str, body: bytes, creds: SignedS3
) -> tuple[str, dict[str, str]]:
    """Header-form SigV4 for the request without its query authentication (botocore's signer)."""
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    url = urlsplit(target)
    kept = parse_qsl(url.query, keep_blank_values=True)
    kept = [(k, v) for k, v in kept if not k.startswith("X-Amz-")]
    query = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in kept)
    path = url.path + (f"?{query}" if query else "")
    req = AWSRequest(method, f"http://{host}{path}", data=body)
    S3SigV4Auth(Credentials(creds.access_key, creds.secret_key), "s3", creds.region).add_auth(req)
    return path, {**dict(req.headers.items()), "Host": host}


def _gate(upstream: str, creds: SignedS3) -> type[BaseHTTPRequestHandler]:
    class Gate(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k: v for k, v in self.headers.items()}
            target = self.path
            if "X-Amz-Signature=" in self.path and "Authorization" not in self.headers:
                why = query_signature_error(
                    self.command,
                    self.path,
                    self.headers.get("Host", ""),
                    creds.secret_key,
                    creds.access_key,
                    datetime.now(UTC),
                )
                if why is not None:
                    self._answer(403, f"<Error><Code>AccessDenied</Code><Message>{why}</Message>")
                    return
                target, signed = _resign(self.command, self.path, self.headers["Host"], body, creds)
                headers.update(signed)
            conn = http.client.HTTPConnection(upstream, timeout=60)
            try:
                conn.request(self.command, target, body=body or None, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
            finally:
                conn.close()

        def _answer(self, status: int, message: str) -> None:
            data = f"<?xml version='1.0'?>{message}</Error>".encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = _handle

    return Gate


def _iam_user(endpoint: str) -> tuple[str, str]:
    """An IAM user allowed everything, and its access key (moto's three unauthenticated calls)."""
    import boto3

    iam = boto3.client(
        "iam",
        endpoint_url=f"http://{endpoint}",
        region_name=REGION,
        aws_access_key_id="bootstrap",
        aws_secret_access_key="bootstrap",
    )
    iam.create_user(UserName="nasloop-test")
    iam.put_user_policy(UserName="nasloop-test", PolicyName="all", PolicyDocument=ALLOW_ALL)
    key = iam.create_access_key(UserName="nasloop-test")["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


@contextlib.contextmanager
def running_signed_s3() -> Iterator[SignedS3]:
    """moto with authentication on, behind the presigned-URL gate; yields the gate's endpoint."""
    with running_s3_server(env={"INITIAL_NO_AUTH_ACTION_COUNT": "3"}) as upstream:
        access, secret = _iam_user(upstream)
        creds = SignedS3("", access, secret)
        server = ThreadingHTTPServer(("127.0.0.1", 0), _gate(upstream, creds))
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield SignedS3(f"127.0.0.1:{server.server_address[1]}", access, secret)
        finally:
            server.shutdown()
            server.server_close()
            thread.join()
