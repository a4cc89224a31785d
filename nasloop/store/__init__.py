"""Object store: one interface, a local-directory backend and an S3 backend (DESIGN.md)."""

from __future__ import annotations

from pathlib import Path

from nasloop.config import StoreConfig, TlsConfig
from nasloop.store.base import (
    MANIFEST,
    IntegrityError,
    InvalidKey,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    StoreError,
    check_key,
    check_prefix,
    join_key,
    sha256_hex,
)
from nasloop.store.local import LocalStore
from nasloop.store.remote import PermissionDenied, RemoteStore
from nasloop.store.s3 import S3Store

__all__ = [
    "MANIFEST",
    "IntegrityError",
    "InvalidKey",
    "LocalStore",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectStore",
    "PermissionDenied",
    "RemoteStore",
    "S3Store",
    "StoreError",
    "check_key",
    "check_prefix",
    "join_key",
    "open_store",
    "sha256_hex",
]


def open_store(cfg: StoreConfig, tls: TlsConfig | None = None) -> ObjectStore:
    """The store ``cfg.url`` names: ``file://<dir>`` (relative to the cwd), ``s3://bucket/...``,
    or ``controller://host:port`` (a cycle Job's view, through the controller; over TLS with
    ``tls`` enabled)."""
    url = cfg.url
    if url.startswith("file://"):
        path = url[len("file://") :]
        if not path:
            raise StoreError("file:// store url needs a directory: file://<dir>")
        return LocalStore(Path(path).expanduser().absolute())
    if url.startswith("s3://"):
        bucket, _, prefix = url[len("s3://") :].strip("/").partition("/")
        if not bucket:
            raise StoreError("s3 store url needs a bucket: s3://<bucket>[/<prefix>]")
        if not cfg.endpoint:
            raise StoreError(f"store url {url} needs store.endpoint (host:port of the S3 API)")
        return S3Store(
            cfg.endpoint,
            bucket,
            prefix,
            access_key=cfg.access_key.get_secret_value() if cfg.access_key else None,
            secret_key=cfg.secret_key.get_secret_value() if cfg.secret_key else None,
            region=cfg.region,
            secure=cfg.secure,
            create_bucket=cfg.create_bucket,
            retries=cfg.retries,
            backoff_s=cfg.backoff_s,
        )
    if url.startswith("controller://"):
        return RemoteStore(url[len("controller://") :].strip("/"), tls=tls)
    raise StoreError(
        f"unsupported store url {url!r}: use file://<dir>, s3://<bucket>[/<prefix>] or "
        "controller://<host>:<port>"
    )
