"""LoRA settings: an adapter's rank, scale, dropout and target modules, and what vLLM can serve.

The one home of the LoRA defaults, the servable ranks and the targets that cannot be served: the
run spec, the trainer (a job's settings) and the generator (a loaded adapter's config) check
against these.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from nasloop.v1 import common_pb2

# vLLM serves only these LoRA ranks (DESIGN.md, measured).
SERVABLE_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
# Embedding and output-head names that vLLM cannot serve as LoRA targets.
UNSERVABLE_TARGET = re.compile(r"(embed|lm_head|wte|wpe|output)", re.IGNORECASE)
# The attention and MLP projections of Llama-style models.
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
DEFAULT_RANK = 32
DEFAULT_DROPOUT = 0.05


def check_rank(r: int) -> int:
    """``r`` if vLLM can serve an adapter of that rank; ``ValueError`` otherwise."""
    if r not in SERVABLE_RANKS:
        ranks = ", ".join(map(str, SERVABLE_RANKS))
        raise ValueError(f"must be one of {ranks}: rank {r} is not servable by vLLM")
    return r


def unservable_targets(targets: Iterable[str]) -> list[str]:
    """The embedding and output-head names among ``targets`` (vLLM cannot serve them)."""
    return [t for t in targets if UNSERVABLE_TARGET.search(t)]


def check_targets(targets: Iterable[str]) -> tuple[str, ...]:
    """``targets`` if vLLM can serve adapters of all of them; ``ValueError`` otherwise."""
    targets = tuple(targets)
    bad = unservable_targets(targets)
    if bad:
        raise ValueError(f"{', '.join(bad)}: embedding and output-head targets cannot be served")
    return targets


@dataclass(frozen=True)
class LoraSettings:
    r: int
    alpha: float
    dropout: float
    target_modules: tuple[str, ...]

    def to_proto(self) -> common_pb2.LoraConfig:
        return common_pb2.LoraConfig(
            r=self.r, alpha=self.alpha, dropout=self.dropout, target_modules=self.target_modules
        )

    @classmethod
    def from_proto(cls, msg: common_pb2.LoraConfig) -> LoraSettings:
        """The message's settings, defaults filled in (rank 32, alpha = rank, dropout 0.05,
        the projections); an unservable rank or target raises ``ValueError``."""
        r = check_rank(msg.r or DEFAULT_RANK)
        return cls(
            r=r,
            alpha=msg.alpha or float(r),
            dropout=msg.dropout if msg.HasField("dropout") else DEFAULT_DROPOUT,
            target_modules=check_targets(msg.target_modules) or DEFAULT_TARGETS,
        )
