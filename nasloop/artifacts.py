"""Base models and LoRA adapters as store artifacts: their identity and a verified local cache.

The trainer and the generator both resolve a base model (``models/<name>`` in the store, or a
local Hugging Face directory) and fetch artifacts into a local cache; this is the one place
that does it. An artifact's identity is the SHA-256 of its ``manifest.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nasloop import hub
from nasloop.rpc.errors import FailedPrecondition, NotFound
from nasloop.store import IntegrityError, ObjectNotFound, ObjectStore
from nasloop.store.base import MANIFEST, join_key, sha256_hex
from nasloop.v1 import common_pb2

ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")
# vLLM serves only these LoRA ranks (DESIGN.md, measured).
SERVABLE_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
# Embedding and output-head names that vLLM cannot serve as LoRA targets.
UNSERVABLE_TARGET = re.compile(r"(embed|lm_head|wte|wpe|output)", re.IGNORECASE)
_COMPLETE = ".complete"
_FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,254}")  # one plain file, no directories


@dataclass(frozen=True)
class BaseModel:
    """Where a base model comes from and its identity (recorded in every adapter)."""

    ref: str
    store_prefix: str  # "" for a local path
    local_path: str  # "" for a store model
    sha256: str


def resolve_base(store: ObjectStore, ref: str) -> BaseModel:
    """``models/<name>`` in the store, a local directory in Hugging Face format, or a Hugging
    Face id (``org/name[@revision]``)."""
    prefix = ref.strip("/")
    manifest_sha = store.manifest_sha256(prefix) if prefix.startswith("models/") else None
    if manifest_sha is not None:
        return BaseModel(ref, prefix, "", manifest_sha)
    path = Path(ref).expanduser()
    if (path / "config.json").is_file():
        # A directory's identity: its config and the names and sizes of its files.
        h = hashlib.sha256((path / "config.json").read_bytes())
        for f in sorted(p for p in path.iterdir() if p.is_file()):
            h.update(f"{f.name}:{f.stat().st_size}".encode())
        return BaseModel(ref, "", str(path.resolve()), h.hexdigest())
    if hub.is_hub_id(ref):  # a Hugging Face id, through the cache in HF_HOME
        snapshot = hub.resolve(ref)
        return BaseModel(ref, "", str(snapshot.path), snapshot.sha256)
    raise NotFound(f"base model {ref!r}: no manifest at {prefix}/ in the store and no local model")


def read_manifest(store: ObjectStore, prefix: str) -> tuple[dict[str, Any], str]:
    """The artifact's manifest and its SHA-256 (one read, so the two agree).

    Raises ``ObjectNotFound`` (no complete artifact) or ``IntegrityError`` (not a manifest)."""
    try:
        raw = store.get_bytes(join_key(prefix, MANIFEST))
    except ObjectNotFound:
        raise ObjectNotFound(f"no artifact at {prefix}/ (no {MANIFEST})") from None
    try:
        manifest = json.loads(raw)
    except ValueError as e:
        raise IntegrityError(f"{prefix}/{MANIFEST} is not JSON: {e}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise IntegrityError(f"{prefix}/{MANIFEST} is not an artifact manifest")
    return manifest, sha256_hex(raw)


def fetch_artifact(
    store: ObjectStore, prefix: str, dest: Path, manifest: dict[str, Any] | None = None
) -> Path:
    """Copy a complete artifact into ``dest`` (once), verifying each file against its manifest.

    The files land in a sibling directory that is renamed into place when all are verified, so
    ``dest`` is either complete or absent, even after a crash or beside a concurrent fetch.
    """
    if (dest / _COMPLETE).exists():
        return dest
    if manifest is None:
        manifest, _ = read_manifest(store, prefix)
    for name in manifest["files"]:
        if not isinstance(name, str) or not _FILE_NAME.fullmatch(name) or name == MANIFEST:
            raise IntegrityError(f"{prefix}/{MANIFEST} lists a bad file name {name!r}")
    part = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    shutil.rmtree(part, ignore_errors=True)
    part.mkdir(parents=True)
    try:
        for name in manifest["files"]:
            try:
                data = store.get_artifact_file(prefix, name, manifest)
            except (KeyError, TypeError) as e:  # a manifest entry without sha256/size
                raise IntegrityError(f"{prefix}/{MANIFEST}: bad entry for {name}: {e}") from None
            (part / name).write_bytes(data)
        (part / _COMPLETE).write_text(json.dumps(manifest))
        try:
            part.rename(dest)
        except OSError:  # another fetch finished first (or a stale incomplete dest)
            if not (dest / _COMPLETE).exists():
                shutil.rmtree(dest, ignore_errors=True)
                part.rename(dest)
    finally:
        shutil.rmtree(part, ignore_errors=True)
    return dest


def local_model_dir(store: ObjectStore, base: BaseModel, cache: Path) -> Path:
    """A local directory holding the base model (fetched into ``cache`` when from the store)."""
    if base.local_path:
        return Path(base.local_path)
    try:
        return fetch_artifact(store, base.store_prefix, cache / "models" / base.sha256)
    except IntegrityError as e:
        raise FailedPrecondition(f"base model {base.ref!r} is corrupt in the store: {e}") from None


@dataclass(frozen=True)
class LoraSettings:
    r: int
    alpha: float
    dropout: float
    target_modules: tuple[str, ...]


@dataclass(frozen=True)
class AdapterMeta:
    """An adapter's manifest ``meta``, typed: what it was trained on, from what, and how.

    Written by the trainer when it publishes; read by the generator (is it servable on this base
    model?) and by the trainer (can a job continue from it?). Unknown keys are ignored, missing
    optional ones take their defaults; a manifest that is not an adapter's raises ``ValueError``.
    """

    base_model: str
    base_model_sha256: str
    lora: LoraSettings | None = None
    job_id: str = ""
    parent_sha256: str = ""
    parent_prefix: str = ""
    data_sha256: str = ""
    data_key: str = ""
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    run: str = ""
    cycle: int = 0

    KIND = "lora-adapter"

    def to_meta(self) -> dict[str, Any]:
        meta = asdict(self)
        meta["kind"] = self.KIND
        if self.lora is not None:
            meta["lora"]["target_modules"] = list(self.lora.target_modules)
        return meta

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> AdapterMeta:
        meta = manifest.get("meta")
        if not isinstance(meta, dict) or meta.get("kind") != cls.KIND:
            raise ValueError("the manifest is not a LoRA adapter's (meta.kind)")
        missing = [f for f in ADAPTER_FILES if f not in manifest.get("files", {})]
        if missing:
            raise ValueError(f"the adapter lacks {', '.join(missing)}")
        lora = meta.get("lora")
        try:
            settings = None
            if isinstance(lora, dict) and lora:
                settings = LoraSettings(
                    int(lora["r"]),
                    float(lora["alpha"]),
                    float(lora.get("dropout", 0.0)),
                    tuple(str(t) for t in lora.get("target_modules", ())),
                )
            return cls(
                base_model=str(meta.get("base_model", "")),
                base_model_sha256=str(meta.get("base_model_sha256", "")),
                lora=settings,
                job_id=str(meta.get("job_id", "")),
                parent_sha256=str(meta.get("parent_sha256", "")),
                parent_prefix=str(meta.get("parent_prefix", "")),
                data_sha256=str(meta.get("data_sha256", "")),
                data_key=str(meta.get("data_key", "")),
                training=dict(meta.get("training") or {}),
                metrics=dict(meta.get("metrics") or {}),
                run=str(meta.get("run", "")),
                cycle=max(0, int(meta.get("cycle") or 0)),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"malformed adapter meta: {e}") from None

    def ref(self, name: str, prefix: str, sha256: str, rank: int = 0) -> common_pb2.AdapterRef:
        """The adapter as the services exchange it (``rank`` from its config when known)."""
        return common_pb2.AdapterRef(
            name=name,
            prefix=prefix,
            sha256=sha256,
            base_model=self.base_model,
            rank=rank or (self.lora.r if self.lora else 0),
            run=self.run,
            cycle=self.cycle,
            base_model_sha256=self.base_model_sha256,
            parent_sha256=self.parent_sha256,
        )
