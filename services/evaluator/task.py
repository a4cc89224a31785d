"""What one candidate run is asked to do: the resolved protocol and the task sent to a sandbox.

Both cross process boundaries (into a local sandbox worker, into a Kubernetes pod) as JSON, so
they hold only plain values.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

Mode = Literal["validate", "evaluate"]


@dataclass(frozen=True)
class Protocol:
    """A fully resolved evaluation protocol (every field set)."""

    name: str
    dataset: str
    epochs: int
    batch_size: int
    lr: float
    momentum: float
    dropout: float
    seed: int
    train_subset: int
    test_subset: int
    failure_floor: float
    time_limit_s: float
    max_parameters: int
    device: str
    hyperparameters: dict[str, float] = field(default_factory=dict)
    dataset_source: str = ""
    # LEMUR's transforms (services.evaluator.lemur.Transform); 0/False = none.
    input_size: int = 0
    random_resized_crop: bool = False
    horizontal_flip: bool = False

    def prm(self) -> dict[str, float]:
        """The ``prm`` dict a candidate's ``Net`` receives (LEMUR: values in [0, 1] + batch)."""
        return {
            **self.hyperparameters,
            "lr": self.lr,
            "momentum": self.momentum,
            "dropout": self.dropout,
            "batch": self.batch_size,
        }

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first field out of range."""
        checks = [
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.epochs <= 100, "epochs must be <= 100"),
            (1 <= self.batch_size <= 4096, "batch_size must be in [1, 4096]"),
            (math.isfinite(self.lr) and 0 < self.lr <= 10, "lr must be in (0, 10]"),
            (0 <= self.momentum <= 1, "momentum must be in [0, 1]"),
            (0 <= self.dropout < 1, "dropout must be in [0, 1)"),
            (0 <= self.failure_floor < 1, "failure_floor must be in [0, 1)"),
            (0 < self.time_limit_s <= 24 * 3600, "time_limit_s must be in (0, 86400]"),
            (self.max_parameters >= 1, "max_parameters must be >= 1"),
            (self.device in ("cpu", "cuda"), "device must be 'cpu' or 'cuda'"),
            (0 <= self.seed < 2**63, "seed must be in [0, 2^63)"),
            (0 <= self.input_size <= 1024, "input_size must be in [0, 1024]"),
        ]
        for ok, why in checks:
            if not ok:
                raise ValueError(why)
        for k, v in self.hyperparameters.items():
            if not k.isidentifier():
                raise ValueError(f"hyperparameter name {k!r} is not an identifier")
            if not (math.isfinite(v) and 0 <= v <= 1):
                raise ValueError(f"hyperparameter {k!r} must be in [0, 1], got {v}")


@dataclass(frozen=True)
class Task:
    """One candidate to run in a sandbox: its code, the protocol and how far to go."""

    candidate_id: str
    code: str
    protocol: Protocol
    mode: Mode = "evaluate"
    # Torch threads inside the sandbox.
    threads: int = 1

    def wall_limit_s(self, probe_limit_s: float) -> float:
        return (
            min(self.protocol.time_limit_s, probe_limit_s)
            if self.mode == "validate"
            else (self.protocol.time_limit_s)
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | bytes) -> Task:
        raw: dict[str, Any] = json.loads(text)
        proto = Protocol(**raw.pop("protocol"))
        if raw.get("mode") not in ("validate", "evaluate"):
            raise ValueError(f"unknown mode {raw.get('mode')!r}")
        return cls(protocol=proto, **raw)

    def with_mode(self, mode: Mode) -> Task:
        return replace(self, mode=mode)
