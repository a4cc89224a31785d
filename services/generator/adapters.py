"""The adapters the generator serves: fetched from the store, checked, named, reference-counted.

An adapter is fetched into the local cache under its manifest hash (verified file by file),
checked against the base model and the engine's limits, then registered with the backend under
a fresh slot. Replacing a name registers the new files under a new slot; requests already
running keep the old slot, which is removed from the engine when its last request finishes.
All methods run on the service's event loop, so the bookkeeping needs no locks.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from nasloop.artifacts import (
    ADAPTER_NAME,
    AdapterMeta,
    BaseModel,
    adapter_manifest,
    fetch_artifact,
    verify_adapter,
)
from nasloop.lora import unservable_targets
from nasloop.rpc import (
    AlreadyExists,
    DataLoss,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from nasloop.store import IntegrityError, ObjectNotFound, ObjectStore, StoreError
from nasloop.store.base import check_prefix
from nasloop.v1 import generator_pb2 as pb
from services.generator.backend import AdapterRejected, Backend, EngineFailed, LoadedAdapter


@dataclass
class _Slot:
    meta: AdapterMeta
    loaded: LoadedAdapter  # the engine's handle
    info: pb.AdapterInfo
    running: int = 0
    retired: bool = False


class AdapterRegistry:
    def __init__(
        self,
        store: ObjectStore,
        backend: Backend,
        base: BaseModel,
        cache: Path,
        max_rank: int,
        max_adapters: int,
        on_engine_failure: Callable[[EngineFailed], None] = lambda e: None,
    ) -> None:
        self.store = store
        self.backend = backend
        self.base = base
        self.cache = cache
        self.max_rank = max_rank
        self.max_adapters = max_adapters
        self.on_engine_failure = on_engine_failure
        self._by_name: dict[str, _Slot] = {}
        self._retired: list[_Slot] = []
        self._next_slot = 1
        self._lock = asyncio.Lock()  # one load/unload at a time

    # -- loading ----------------------------------------------------------------------------------
    async def load(self, request: pb.LoadAdapterRequest) -> pb.AdapterInfo:
        started = time.perf_counter()
        name = request.name
        if not ADAPTER_NAME.fullmatch(name):
            raise InvalidArgument(f"adapter name {name!r}: use 1-128 of [A-Za-z0-9._-]")
        try:
            prefix = check_prefix(request.prefix.strip("/"))
        except ValueError as e:
            raise InvalidArgument(f"adapter prefix {request.prefix!r}: {e}") from None
        async with self._lock:
            old = self._by_name.get(name)
            if old is not None and not request.replace:
                if await asyncio.to_thread(self._same, old, prefix, request.sha256):
                    return old.info  # a retried call (e.g. after its deadline) is not an error
                raise AlreadyExists(f"an adapter named {name!r} is loaded; set replace to swap it")
            if old is None and len(self._by_name) + len(self._retired) >= self.max_adapters:
                raise ResourceExhausted(
                    f"{self.max_adapters} adapters are loaded (generator.max_cpu_loras); "
                    "unload one first"
                )
            path, meta = await asyncio.to_thread(self._fetch, name, prefix, request.sha256)
            loaded = LoadedAdapter(name, self._next_slot, path)
            self._next_slot += 1
            try:
                await self.backend.add_adapter(loaded)
            except AdapterRejected as e:
                raise FailedPrecondition(f"adapter {prefix}/ rejected by the engine: {e}") from None
            except EngineFailed as e:
                self.on_engine_failure(e)
                raise Unavailable(f"the engine failed: {e}") from None
            loaded_at = Timestamp()
            loaded_at.GetCurrentTime()
            info = pb.AdapterInfo(
                name=name,
                ref=meta.to_ref(),
                local_path=str(path),
                loaded_at=loaded_at,
                load_seconds=time.perf_counter() - started,
            )
            self._by_name[name] = _Slot(meta, loaded, info)
            if old is not None:
                await self._retire(old)
            return info

    def _same(self, slot: _Slot, prefix: str, sha256: str) -> bool:
        """Would loading ``prefix`` (``sha256``) give the adapter ``slot`` already holds?"""
        if slot.meta.prefix != prefix or (sha256 and sha256 != slot.meta.sha256):
            return False
        return adapter_manifest(self.store, prefix)[1] == slot.meta.sha256

    def _fetch(self, name: str, prefix: str, sha256: str) -> tuple[Path, AdapterMeta]:
        """Fetch and check the adapter's files (runs in a worker thread)."""
        meta, manifest = verify_adapter(self.store, prefix, self.base, sha256)
        try:
            path = fetch_artifact(self.store, prefix, self.cache / meta.sha256, manifest)
        except (IntegrityError, ObjectNotFound) as e:
            raise DataLoss(f"adapter at {prefix}/ is corrupt in the store: {e}") from None
        except StoreError as e:
            raise Unavailable(f"adapter at {prefix}/: {e}") from None
        config = _adapter_config(path, prefix)
        _check_weights(path, prefix)
        rank = config.get("r")
        if not isinstance(rank, int) or rank < 1:
            raise DataLoss(f"adapter at {prefix}/: adapter_config.json has no rank")
        if rank > self.max_rank:
            raise FailedPrecondition(
                f"adapter at {prefix}/ has rank {rank}, above the engine's max_lora_rank "
                f"{self.max_rank}"
            )
        targets = config.get("target_modules") or []
        targets = [targets] if isinstance(targets, str) else list(targets)
        bad = unservable_targets(str(t) for t in targets)
        if bad or config.get("modules_to_save"):
            raise FailedPrecondition(
                f"adapter at {prefix}/ adapts {bad or config.get('modules_to_save')}: embedding "
                "and output-head adapters cannot be served"
            )
        return path, replace(meta, name=name, rank=rank)

    # -- unloading --------------------------------------------------------------------------------
    async def unload(self, name: str) -> None:
        async with self._lock:
            slot = self._by_name.pop(name, None)
            if slot is None:
                raise NotFound(f"no adapter named {name!r} is loaded")
            await self._retire(slot)

    async def _retire(self, slot: _Slot) -> None:
        slot.retired = True
        if slot.running == 0:
            await self._remove(slot.loaded)
        else:
            self._retired.append(slot)  # removed by release() when its last request ends

    async def _remove(self, loaded: LoadedAdapter) -> None:
        try:
            await self.backend.remove_adapter(loaded)
        except EngineFailed as e:
            self.on_engine_failure(e)
            raise Unavailable(f"the engine failed: {e}") from None

    # -- use by requests --------------------------------------------------------------------------
    def acquire(self, name: str) -> tuple[LoadedAdapter, pb.AdapterInfo] | None:
        """The adapter a request names, held until :meth:`release`; None for the base model."""
        if not name:
            return None
        slot = self._by_name.get(name)
        if slot is None:
            raise NotFound(f"no adapter named {name!r} is loaded (LoadAdapter first)")
        slot.running += 1
        return slot.loaded, slot.info

    async def release(self, loaded: LoadedAdapter) -> None:
        for slot in self._retired:
            if slot.loaded is loaded:
                slot.running -= 1
                if slot.running == 0:
                    self._retired.remove(slot)
                    await self._remove(loaded)
                return
        for slot in self._by_name.values():
            if slot.loaded is loaded:
                slot.running -= 1
                return

    def list(self) -> list[pb.AdapterInfo]:
        return [s.info for _, s in sorted(self._by_name.items())]


def _adapter_config(path: Path, prefix: str) -> dict[str, Any]:
    try:
        config = json.loads((path / "adapter_config.json").read_text())
    except (OSError, ValueError) as e:
        raise DataLoss(f"adapter at {prefix}/: unreadable adapter_config.json: {e}") from None
    if not isinstance(config, dict):
        raise DataLoss(f"adapter at {prefix}/: adapter_config.json is not an object")
    return config


def _check_weights(path: Path, prefix: str) -> None:
    """The weights file parses as safetensors (a corrupt file never reaches the engine)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path / "adapter_model.safetensors"), framework="pt") as f:
            if not list(f.keys()):
                raise ValueError("no tensors")
    except Exception as e:  # safetensors raises its own error types for garbage
        raise DataLoss(f"adapter at {prefix}/: adapter_model.safetensors: {e}") from None
