"""A job's inputs from the object store: the base model, the parent adapter, the pairs.

Checked when the job is started (so a bad request gets its gRPC status at once); fetched into
the local cache, verified against their manifests, when the job runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from nasloop.artifacts import AdapterMeta, BaseModel, LoraSettings
from nasloop.records import RecordError, loads_pairs
from nasloop.rpc import FailedPrecondition, InvalidArgument, NotFound
from nasloop.store import ObjectNotFound, ObjectStore
from nasloop.store.base import sha256_hex
from services.trainer.spec import TrainSpec


@dataclass(frozen=True)
class Parent:
    prefix: str
    sha256: str
    lora: LoraSettings | None


def resolve_parent(store: ObjectStore, spec: TrainSpec, base: BaseModel) -> Parent | None:
    if not spec.parent_prefix:
        return None
    manifest = store.get_manifest(spec.parent_prefix)
    if manifest is None:
        raise NotFound(f"parent adapter: no adapter at {spec.parent_prefix}/")
    sha = store.manifest_sha256(spec.parent_prefix) or ""
    if spec.parent_sha256 and spec.parent_sha256 != sha:
        raise FailedPrecondition(
            f"parent adapter at {spec.parent_prefix}/ has manifest {sha[:12]}…, "
            f"not the requested {spec.parent_sha256[:12]}…"
        )
    try:
        meta = AdapterMeta.from_manifest(manifest)
    except ValueError as e:
        raise FailedPrecondition(f"parent at {spec.parent_prefix}/: {e}") from None
    if meta.base_model_sha256 != base.sha256:
        raise FailedPrecondition(
            f"parent adapter at {spec.parent_prefix}/ was trained on base model "
            f"{meta.base_model!r} ({meta.base_model_sha256[:12]}…), not on "
            f"{base.ref!r} ({base.sha256[:12]}…)"
        )
    return Parent(spec.parent_prefix, sha, meta.lora)


def read_pairs(
    store: ObjectStore, spec: TrainSpec, max_bytes: int
) -> tuple[list[tuple[str, str]], str]:
    """The training pairs and the SHA-256 of their bytes."""
    try:
        data = store.get_bytes(spec.pairs_key)
    except ObjectNotFound:
        raise NotFound(f"training pairs: no object at {spec.pairs_key}") from None
    if len(data) > max_bytes:
        raise InvalidArgument(f"training pairs are larger than {max_bytes} bytes")
    sha = sha256_hex(data)
    if spec.pairs_sha256 and spec.pairs_sha256 != sha:
        raise FailedPrecondition(f"training pairs at {spec.pairs_key} do not match their sha256")
    try:
        pairs = [(p.prompt, p.completion) for p in loads_pairs(data)]
    except RecordError as e:
        raise InvalidArgument(f"training pairs {e}") from None
    if not pairs:
        raise InvalidArgument(f"training pairs at {spec.pairs_key} are empty")
    return pairs, sha
