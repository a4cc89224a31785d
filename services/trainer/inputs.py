"""A job's inputs from the object store: the base model, the parent adapter, the pairs.

Checked when the job is started (so a bad request gets its gRPC status at once); fetched into
the local cache, verified against their manifests, when the job runs.
"""

from __future__ import annotations

from nasloop.artifacts import AdapterMeta, BaseModel, verify_adapter
from nasloop.records import RecordError, TrainingPair, loads_pairs
from nasloop.rpc import FailedPrecondition, InvalidArgument, NotFound
from nasloop.store import ObjectNotFound, ObjectStore
from nasloop.store.base import sha256_hex
from services.trainer.spec import TrainSpec


def resolve_parent(store: ObjectStore, spec: TrainSpec, base: BaseModel) -> AdapterMeta | None:
    """The adapter the job continues from, checked (:func:`verify_adapter`); None for a fresh
    adapter."""
    if not spec.parent_prefix:
        return None
    parent, _ = verify_adapter(
        store, spec.parent_prefix, base, spec.parent_sha256, what="parent adapter"
    )
    return parent


def read_pairs(
    store: ObjectStore, spec: TrainSpec, max_bytes: int
) -> tuple[list[TrainingPair], str]:
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
        pairs = loads_pairs(data)
    except RecordError as e:
        raise InvalidArgument(f"training pairs {e}") from None
    if not pairs:
        raise InvalidArgument(f"training pairs at {spec.pairs_key} are empty")
    return pairs, sha
