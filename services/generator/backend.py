"""What the generator needs from an inference engine: one interface, two implementations.

``vllm_backend`` (the default: vLLM's async engine, LoRA registered at runtime) and
``hf_backend`` (transformers + peft, where vLLM is not installed). Both take token ids, so the
prompt the model sees is exactly the one the service rendered and measured.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class Sampling:
    """Decoding settings of one answer (defaults already applied)."""

    temperature: float
    top_p: float
    top_k: int  # 0 = disabled
    max_tokens: int
    seed: int
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class LoadedAdapter:
    """An adapter registered in the backend; ``slot`` is its backend id (one per load)."""

    name: str
    slot: int
    path: Path


@dataclass(frozen=True)
class Request:
    """One answer to produce: ``id`` names it inside the engine while it runs, the prompt is
    token ids (as the service rendered and measured it), ``adapter`` None is the base model."""

    id: str
    prompt_ids: list[int]
    sampling: Sampling
    adapter: LoadedAdapter | None = None


@dataclass
class Completion:
    text: str
    completion_tokens: int
    finish_reason: str  # "stop", "length" or "abort"


@dataclass(frozen=True)
class EngineInfo:
    backend: str
    max_context: int
    dtype: str
    device: str
    extra: dict[str, str] = field(default_factory=dict)


class AdapterRejected(Exception):
    """The engine refused an adapter (rank, target modules, unreadable files)."""


class EngineFailed(Exception):
    """The engine is dead: nothing more can be served by this process."""


class Backend(Protocol):
    """An inference engine. ``start`` and ``close`` run once; the rest may run concurrently.

    Every coroutine runs on the service's one event loop.
    """

    info: EngineInfo

    async def start(self) -> None: ...

    async def generate(self, request: Request) -> Completion:
        """One answer; cancelling the awaiting task aborts it inside the engine."""
        ...

    async def add_adapter(self, adapter: LoadedAdapter) -> None:
        """Register (and load) an adapter; raises :class:`AdapterRejected`."""
        ...

    async def remove_adapter(self, adapter: LoadedAdapter) -> None: ...

    def close(self) -> None: ...
