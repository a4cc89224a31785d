"""The object-store interface every nasloop part uses (DESIGN.md, "Object store").

Keys are ``/``-separated relative paths such as ``runs/r1/spec.yaml``. Multi-file artifacts
(an adapter, a snapshot) are written files first and ``manifest.json`` last; readers trust only
what a manifest lists, and verify each file's SHA-256 against it.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"


class StoreError(RuntimeError):
    """An object-store operation failed (after any retries)."""


class ObjectNotFound(StoreError, KeyError):
    """The key does not exist."""

    def __str__(self) -> str:  # KeyError would print the repr of the argument
        return str(self.args[0]) if self.args else "object not found"


class InvalidKey(StoreError, ValueError):
    """The key is not a clean relative path."""


class IntegrityError(StoreError):
    """Stored bytes do not match the manifest that lists them."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    sha256: str


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_key(key: str) -> str:
    """Return ``key`` if it is a clean relative key, else raise :class:`InvalidKey`."""
    if not isinstance(key, str) or not key:
        raise InvalidKey("object key must be a non-empty string")
    if key.startswith("/") or "\\" in key or any(ord(c) < 32 for c in key):
        raise InvalidKey(f"invalid object key {key!r}")
    parts = key.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise InvalidKey(f"invalid object key {key!r}: empty, '.' or '..' segment")
    return key


def check_prefix(prefix: str) -> str:
    """Return ``prefix`` if it is ``""`` or starts a clean key; else raise :class:`InvalidKey`.

    A prefix is a plain string prefix, as in S3: ``runs/r1/`` and ``runs/r`` are both fine.
    """
    if prefix:
        check_key(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix


def join_key(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p.strip("/"))


class ObjectStore(ABC):
    """Backend-neutral object store. Implementations: local directory, S3 (minio SDK)."""

    url: str

    # -- primitives each backend implements --------------------------------------------------
    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> ObjectInfo:
        """Write ``data`` at ``key`` atomically (readers see the old or the new object)."""

    @abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """Read the object; raise :class:`ObjectNotFound` if it does not exist."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """All keys under ``prefix`` (recursive), sorted."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; a missing key is not an error."""

    # -- optional: appendable objects (a local directory has them; S3 does not) --------------
    supports_append: bool = False

    def append_bytes(self, key: str, data: bytes) -> None:
        """Append ``data`` to the object at ``key`` (created if missing), durably.

        Only where :attr:`supports_append` is true. A crash may leave a torn tail, never a
        corrupt middle: callers that append records must tolerate a partial last record.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot append to objects")

    # -- conveniences built on the primitives ------------------------------------------------
    def put_file(self, key: str, path: str | Path) -> ObjectInfo:
        return self.put_bytes(key, Path(path).read_bytes())

    def get_file(self, key: str, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.part")
        tmp.write_bytes(self.get_bytes(key))
        tmp.replace(path)
        return path

    def put_json(self, key: str, obj: Any) -> ObjectInfo:
        return self.put_bytes(key, json.dumps(obj, indent=2, sort_keys=True).encode())

    def get_json(self, key: str) -> Any:
        return json.loads(self.get_bytes(key))

    def delete_prefix(self, prefix: str) -> int:
        keys = self.list(prefix)
        for k in keys:
            self.delete(k)
        return len(keys)

    # -- multi-file artifacts ----------------------------------------------------------------
    def put_artifact(
        self,
        prefix: str,
        files: Mapping[str, bytes | Path],
        meta: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Write each file under ``prefix``, then ``prefix/manifest.json`` listing them.

        The manifest holds ``files`` ({name: {sha256, size}}), ``created`` and ``meta``.
        Until the manifest lands, the artifact does not exist for readers.
        """
        if MANIFEST in files:
            raise InvalidKey(f"{MANIFEST} is reserved for the artifact's manifest")
        listing: dict[str, dict[str, Any]] = {}
        for name, content in files.items():
            data = content.read_bytes() if isinstance(content, Path) else content
            info = self.put_bytes(join_key(prefix, check_key(name)), data)
            listing[name] = {"sha256": info.sha256, "size": info.size}
        manifest = {
            "files": listing,
            "created": datetime.now(UTC).isoformat(),
            "meta": dict(meta or {}),
        }
        self.put_json(join_key(prefix, MANIFEST), manifest)
        return manifest

    def get_manifest(self, prefix: str) -> dict[str, Any] | None:
        """The artifact's manifest, or ``None`` when no complete artifact is at ``prefix``."""
        try:
            return self.get_json(join_key(prefix, MANIFEST))
        except ObjectNotFound:
            return None

    def manifest_sha256(self, prefix: str) -> str | None:
        """SHA-256 of the artifact's manifest.json: the artifact's content identity."""
        try:
            return sha256_hex(self.get_bytes(join_key(prefix, MANIFEST)))
        except ObjectNotFound:
            return None

    def get_artifact_file(
        self, prefix: str, name: str, manifest: Mapping[str, Any] | None = None
    ) -> bytes:
        """Read one file of an artifact and verify it against the manifest."""
        manifest = manifest if manifest is not None else self.get_manifest(prefix)
        if manifest is None:
            raise ObjectNotFound(f"no artifact at {prefix!r} (no manifest)")
        entry = manifest.get("files", {}).get(name)
        if entry is None:
            raise ObjectNotFound(f"artifact {prefix!r} has no file {name!r}")
        data = self.get_bytes(join_key(prefix, name))
        if len(data) != entry["size"] or sha256_hex(data) != entry["sha256"]:
            raise IntegrityError(f"{join_key(prefix, name)} does not match its manifest")
        return data
