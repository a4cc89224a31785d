"""Object store on any S3-compatible endpoint (MinIO, AWS, moto) through the ``minio`` SDK."""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

import certifi
import urllib3
from minio import Minio
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError
from minio.helpers import check_bucket_name

import nasloop.store.base as base

log = logging.getLogger(__name__)

T = TypeVar("T")

SHA256_META = "sha256"  # stored as the x-amz-meta-sha256 header
_SHA256_HEADER = "x-amz-meta-" + SHA256_META
_PART_SIZE = 64 * 1024 * 1024  # objects up to this size go in one PUT

# S3 error codes that mean "try again later" rather than "this request is wrong".
TRANSIENT_S3_CODES = frozenset(
    {
        "InternalError",
        "ServiceUnavailable",
        "SlowDown",
        "RequestTimeout",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "OperationAborted",
    }
)
_MISSING_CODES = frozenset({"NoSuchKey", "NoSuchObject"})


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is worth retrying: a network failure, HTTP 5xx, or a throttling code."""
    if isinstance(exc, S3Error):
        status = getattr(exc.response, "status", 0) or 0
        return exc.code in TRANSIENT_S3_CODES or status >= 500
    if isinstance(exc, ServerError):
        return exc.status_code >= 500
    if isinstance(exc, InvalidResponseError):  # non-XML answer, e.g. a proxy's 502 page
        return (getattr(exc, "_code", 0) or 0) >= 500
    return isinstance(
        exc,
        urllib3.exceptions.MaxRetryError
        | urllib3.exceptions.ProtocolError
        | urllib3.exceptions.NewConnectionError
        | urllib3.exceptions.TimeoutError
        | ConnectionError
        | TimeoutError,
    )


class S3Store(base.ObjectStore):
    """Keys live in ``bucket`` under an optional ``prefix``; ``url`` is ``s3://bucket[/prefix]``.

    Every call is retried ``retries`` times on transient errors (see :func:`is_transient`),
    sleeping ``backoff_s``, then twice that, and so on. The HTTP client itself never retries
    and connects with a short timeout, so this loop is the only one that counts. With
    ``create_bucket`` the bucket is created on first use if it is missing.
    """

    def __init__(
        self,
        endpoint: str,
        bucket: str,
        prefix: str = "",
        *,
        access_key: str | None = None,
        secret_key: str | None = None,
        region: str | None = None,
        secure: bool = False,
        create_bucket: bool = True,
        retries: int = 5,
        backoff_s: float = 0.1,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 60.0,
    ) -> None:
        # Accept "http://host:port" / "https://host:port" too; the scheme then sets ``secure``.
        for scheme, tls in (("http://", False), ("https://", True)):
            if endpoint.startswith(scheme):
                endpoint, secure = endpoint[len(scheme) :].rstrip("/"), tls
        try:
            check_bucket_name(bucket, strict=True)
        except ValueError as e:
            raise base.StoreError(f"invalid S3 bucket name {bucket!r}: {e}") from None
        self.prefix = prefix.strip("/")
        if self.prefix:
            base.check_key(self.prefix)
        self.bucket = bucket
        self.endpoint = endpoint
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.retries = retries
        self.backoff_s = backoff_s
        self.create_bucket = create_bucket
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=connect_timeout_s, read=read_timeout_s),
            retries=False,  # our loop retries; urllib3 must not multiply the attempts
            maxsize=16,
            cert_reqs="CERT_REQUIRED",
            ca_certs=certifi.where(),
        )
        try:
            self.client = Minio(
                endpoint,
                access_key=access_key,
                secret_key=secret_key,
                region=region,
                secure=secure,
                http_client=http,
            )
        except ValueError as e:
            raise base.StoreError(f"invalid S3 endpoint {endpoint!r}: {e}") from None
        self._bucket_ready = False
        self._bucket_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"S3Store({self.url!r}, endpoint={self.endpoint!r})"

    # -- helpers ---------------------------------------------------------------------------------
    def _name(self, key: str) -> str:
        base.check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, op: str, key: str | None, fn: Callable[[], T]) -> T:
        """Run ``fn`` with retries and translate its errors into :class:`StoreError` ones."""
        what = f"{op} {key!r}" if key is not None else op
        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except (MinioException, urllib3.exceptions.HTTPError, OSError) as e:
                if isinstance(e, S3Error) and e.code in _MISSING_CODES:
                    raise base.ObjectNotFound(key or what) from None
                if isinstance(e, S3Error) and e.code == "NoSuchBucket":
                    raise base.StoreError(f"{what}: bucket {self.bucket!r} does not exist") from e
                if not is_transient(e):
                    raise base.StoreError(f"{what} failed: {_describe(e)}") from e
                if attempt == self.retries:
                    raise base.StoreError(
                        f"{what} failed after {attempt + 1} attempts "
                        f"against {self.endpoint}: {_describe(e)}"
                    ) from e
                log.warning(
                    "%s: transient error (%s), retry %d/%d in %.2fs",
                    what,
                    _describe(e),
                    attempt + 1,
                    self.retries,
                    delay,
                )
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    def _ensure_bucket(self) -> None:
        if self._bucket_ready:
            return
        with self._bucket_lock:
            if self._bucket_ready or not self.create_bucket:
                self._bucket_ready = True
                return

            def make() -> None:
                if self.client.bucket_exists(self.bucket):
                    return
                try:
                    self.client.make_bucket(self.bucket)
                except S3Error as e:  # another process may have won the race
                    if e.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise

            self._call(f"create bucket {self.bucket!r}", None, make)
            self._bucket_ready = True

    # -- primitives ------------------------------------------------------------------------------
    def put_bytes(self, key: str, data: bytes) -> base.ObjectInfo:
        name = self._name(key)
        self._ensure_bucket()
        digest = base.sha256_hex(data)

        def put() -> None:
            self.client.put_object(
                self.bucket,
                name,
                io.BytesIO(data),
                len(data),
                metadata={SHA256_META: digest},
                part_size=_PART_SIZE,
            )

        self._call("put", key, put)
        return base.ObjectInfo(key=key, size=len(data), sha256=digest)

    def get_bytes(self, key: str) -> bytes:
        name = self._name(key)
        self._ensure_bucket()

        def get() -> tuple[bytes, str | None]:
            response = self.client.get_object(self.bucket, name)
            try:
                return response.read(), response.headers.get(_SHA256_HEADER)
            finally:
                response.close()
                response.release_conn()

        data, expected = self._call("get", key, get)
        if expected and base.sha256_hex(data) != expected:
            raise base.IntegrityError(f"{key!r} does not match the sha256 stored with it")
        return data

    def exists(self, key: str) -> bool:
        name = self._name(key)
        self._ensure_bucket()
        try:
            self._call("stat", key, lambda: self.client.stat_object(self.bucket, name))
        except base.ObjectNotFound:
            return False
        return True

    def list(self, prefix: str = "") -> list[str]:
        base.check_prefix(prefix)
        self._ensure_bucket()
        full = f"{self.prefix}/{prefix}" if self.prefix else prefix
        strip = len(self.prefix) + 1 if self.prefix else 0

        def names() -> list[str]:
            objects = self.client.list_objects(self.bucket, prefix=full or None, recursive=True)
            return [o.object_name[strip:] for o in objects if o.object_name and not o.is_dir]

        return sorted(self._call("list", prefix, names))

    def delete(self, key: str) -> None:
        name = self._name(key)
        self._ensure_bucket()
        self._call("delete", key, lambda: self.client.remove_object(self.bucket, name))

    # -- presigned URLs (for pods that have no credentials) --------------------------------------
    def presigned_get_url(self, key: str, expires_s: float = 3600) -> str:
        """A URL that lets anyone GET ``key`` for ``expires_s`` seconds (1 s to 7 days)."""
        return self._presigned("GET", key, expires_s)

    def presigned_put_url(self, key: str, expires_s: float = 3600) -> str:
        """A URL that lets anyone PUT ``key`` for ``expires_s`` seconds (1 s to 7 days)."""
        return self._presigned("PUT", key, expires_s)

    def _presigned(self, method: str, key: str, expires_s: float) -> str:
        name = self._name(key)
        self._ensure_bucket()
        expires = timedelta(seconds=expires_s)
        return self._call(
            f"presign {method.lower()}",
            key,
            lambda: self.client.get_presigned_url(method, self.bucket, name, expires=expires),
        )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, S3Error):
        return f"S3 error {exc.code}: {exc.message}"
    return f"{type(exc).__name__}: {exc}"
