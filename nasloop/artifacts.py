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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from nasloop import hub, layout
from nasloop.lora import LoraSettings
from nasloop.messages import message_from
from nasloop.rpc.errors import DataLoss, FailedPrecondition, NotFound, Unavailable
from nasloop.store import IntegrityError, ObjectNotFound, ObjectStore, StoreError
from nasloop.store.base import MANIFEST, join_key, sha256_hex
from nasloop.v1 import common_pb2, trainer_pb2

ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")
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
    manifest_sha = store.manifest_sha256(prefix) if layout.is_store_model(prefix) else None
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


# An adapter's serving name: the generator's and the trainer's rule.
ADAPTER_NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")


@dataclass(frozen=True)
class AdapterMeta:
    """A LoRA adapter: where it is in the store and its manifest's ``meta``, typed (what it was
    trained on, from what, and how). The one in-process shape of an adapter in every service.

    The trainer writes the meta when it publishes and returns the adapter; the generator (is it
    servable on this base model?) and the trainer (can a job continue from it?) read it through
    :func:`verify_adapter`. ``name``, ``prefix``, ``sha256`` and ``rank`` say where it is and
    are not in the meta. On the wire it is an ``AdapterRef`` (:meth:`to_ref`, :meth:`from_ref`).
    Unknown meta keys are ignored, missing optional ones take their defaults; a manifest that
    is not an adapter's raises ``ValueError``.
    """

    base_model: str = ""
    base_model_sha256: str = ""
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
    # Where it is (not in the meta).
    name: str = ""  # the generator's serving name
    prefix: str = ""  # in the store
    sha256: str = ""  # of its manifest.json: its identity
    rank: int = 0  # lora.r unless set (the generator takes it from adapter_config.json)

    KIND = "lora-adapter"
    _PLACE = ("name", "prefix", "sha256", "rank")

    def __post_init__(self) -> None:
        if not self.rank and self.lora is not None:
            object.__setattr__(self, "rank", self.lora.r)

    def to_meta(self) -> dict[str, Any]:
        """The manifest's ``meta``."""
        meta = asdict(self)
        for k in self._PLACE:
            del meta[k]
        meta["kind"] = self.KIND
        if self.lora is not None:
            meta["lora"]["target_modules"] = list(self.lora.target_modules)
        return meta

    @classmethod
    def from_manifest(
        cls, manifest: dict[str, Any], *, prefix: str = "", sha256: str = ""
    ) -> AdapterMeta:
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
                prefix=prefix,
                sha256=sha256,
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"malformed adapter meta: {e}") from None

    def to_ref(self) -> common_pb2.AdapterRef:
        """The adapter as the services exchange it."""
        return message_from(common_pb2.AdapterRef, self)

    @classmethod
    def from_ref(cls, ref: common_pb2.AdapterRef) -> AdapterMeta:
        """What an ``AdapterRef`` says of the adapter (the rest of its meta is in the store)."""
        return cls(
            base_model=ref.base_model,
            base_model_sha256=ref.base_model_sha256,
            parent_sha256=ref.parent_sha256,
            run=ref.run,
            cycle=ref.cycle,
            name=ref.name,
            prefix=ref.prefix,
            sha256=ref.sha256,
            rank=ref.rank,
        )


def job_adapter(job: trainer_pb2.Job) -> AdapterMeta:
    """The adapter a succeeded training job published, as the ``Job`` tells it."""
    return replace(
        AdapterMeta.from_ref(job.adapter),
        job_id=job.id,
        data_sha256=job.data_sha256,
        data_key=job.spec.training_pairs.key,
        parent_prefix=job.spec.parent.prefix.strip("/"),
    )


def adapter_manifest(
    store: ObjectStore, prefix: str, what: str = "adapter"
) -> tuple[dict[str, Any], str]:
    """:func:`read_manifest` for a service: a missing, corrupt or unreachable manifest raises
    NotFound, DataLoss or Unavailable (``what`` names the adapter in the message)."""
    try:
        return read_manifest(store, prefix)
    except ObjectNotFound:
        raise NotFound(f"no {what} at {prefix}/ in the store") from None
    except IntegrityError as e:
        raise DataLoss(f"{what} at {prefix}/: {e}") from None
    except StoreError as e:  # the store is unreachable: worth a retry
        raise Unavailable(f"{what} at {prefix}/: {e}") from None


def verify_adapter(
    store: ObjectStore, prefix: str, base: BaseModel, sha256: str = "", what: str = "adapter"
) -> tuple[AdapterMeta, dict[str, Any]]:
    """The LoRA adapter at ``prefix`` and its manifest (read once), if it was trained on
    ``base`` and, when ``sha256`` is given, its manifest has that hash.

    The generator's check before it serves an adapter and the trainer's before a job continues
    from one. Raises FailedPrecondition (another adapter, not an adapter, another base model)
    or :func:`adapter_manifest`'s errors; ``what`` names the adapter in the messages."""
    manifest, manifest_sha = adapter_manifest(store, prefix, what)
    if sha256 and sha256 != manifest_sha:
        raise FailedPrecondition(
            f"{what} at {prefix}/ has manifest {manifest_sha[:12]}…, "
            f"not the requested {sha256[:12]}…"
        )
    try:
        meta = AdapterMeta.from_manifest(manifest, prefix=prefix, sha256=manifest_sha)
    except ValueError as e:
        raise FailedPrecondition(
            f"{what} at {prefix}/ is not a servable LoRA adapter: {e}"
        ) from None
    if meta.base_model_sha256 != base.sha256:
        raise FailedPrecondition(
            f"{what} at {prefix}/ was trained on base model {meta.base_model!r} "
            f"({meta.base_model_sha256[:12]}…), not on {base.ref!r} ({base.sha256[:12]}…)"
        )
    return meta, manifest
