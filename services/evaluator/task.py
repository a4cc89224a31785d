"""What one candidate run is asked to do: the task sent to a sandbox, with its resolved protocol
(nasloop.protocol.Protocol).

It crosses process boundaries (into a local sandbox worker, into a Kubernetes pod) as JSON, so
it holds only plain values.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from nasloop.protocol import Protocol

Mode = Literal["validate", "evaluate"]


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
