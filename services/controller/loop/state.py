"""What a run has durably done, in the store, so that a killed run resumes where it stopped.

``runs/<run>/state.json`` says where the run is (its state, the cycle and phase, the adapter the
next cycle generates with); ``runs/<run>/cycles/<n>/progress.json`` says which of the cycle's
steps are done and what they produced. Each is rewritten whole (an atomic put) after the step
it describes has made its own results durable, so on resume a step marked done is done.
Per-candidate results are durable one by one, as ``cycles/<n>/evaluated/<index>.json``.
The baseline (after the last cycle) keeps the same files under ``runs/<run>/baseline/``: it is
"cycle" ``layout.BASELINE`` here, with its own steps. The step names ``progress.json`` records
are those of loop/cycle.py's ``CYCLE_STEPS`` and loop/baseline.py's ``BASELINE_STEPS``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from nasloop import layout
from nasloop.artifacts import AdapterMeta
from nasloop.layout import evaluated_key, evaluated_prefix, progress_key
from nasloop.records import CandidateRecord, loads_records
from nasloop.store import ObjectNotFound, ObjectStore

RUN_STATES = ("pending", "running", "stopping", "stopped", "succeeded", "failed")
ACTIVE = ("pending", "running", "stopping")


def now() -> str:
    return datetime.now(UTC).isoformat()


# An adapter in state.json, progress.json and summary.json: these fields of its AdapterMeta (its
# run is the file's run; the rest of its meta is in its manifest).
ADAPTER_KEYS = (
    "name", "prefix", "sha256", "cycle", "rank", "base_model", "base_model_sha256", "parent_sha256"
)  # fmt: skip


def adapter_to_dict(adapter: AdapterMeta) -> dict[str, Any]:
    return {k: getattr(adapter, k) for k in ADAPTER_KEYS}


def adapter_from_dict(data: Any, run: str) -> AdapterMeta | None:
    if not isinstance(data, dict):
        return None
    return AdapterMeta(run=run, **{k: data[k] for k in ADAPTER_KEYS if k in data})


def to_json(obj: Any) -> bytes:
    """A run's, a cycle's or a summary's dataclass as stored, its adapters as ``ADAPTER_KEYS``."""
    data = asdict(obj)
    for f in fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, AdapterMeta):
            data[f.name] = adapter_to_dict(value)
    return json.dumps(data, indent=1, sort_keys=True).encode()


@dataclass
class RunState:
    name: str
    state: str = "pending"
    cycle: int = 0  # the cycle in progress, or the last one once the run has ended
    phase: str = ""
    cycles_done: int = 0
    adapter: AdapterMeta | None = None  # what the next cycle generates with
    error: str = ""
    created: str = field(default_factory=now)
    updated: str = field(default_factory=now)
    cycle_job: str = ""
    baseline_done: bool = False  # the baseline's records and summary are written

    @property
    def active(self) -> bool:
        return self.state in ACTIVE


@dataclass
class PlannedPrompt:
    """One distinct prompt of a cycle's plan (search.strategy "archive", loop/plan.py): its
    text as rendered, and the parent it shows ("" and no code: the task alone)."""

    text: str
    parent_id: str = ""
    parent_code: str = ""  # what a "diff" answer is applied to
    mode: str = ""  # "full" or "diff"; "" = no parent


@dataclass
class CycleProgress:
    cycle: int
    started: str = field(default_factory=now)
    finished: str = ""
    done: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # per step, summed over attempts
    prompt: str = ""
    prompt_sha256: str = ""
    seed: int = 0
    # The plan (search.strategy "archive"): answer i gets prompts[plan[i]], a prompt's sha256
    # naming it; saved with ``prompt`` before any answer. Empty: every answer gets ``prompt``.
    plan: list[str] = field(default_factory=list)
    prompts: dict[str, PlannedPrompt] = field(default_factory=dict)
    generated_with: AdapterMeta | None = None
    adapter: AdapterMeta | None = None  # trained at the end of this cycle
    training: dict[str, Any] = field(default_factory=dict)  # the job's metrics
    # Controller accounting: wall time of the cycle's attempts and the part spent inside
    # service calls, and the phases' sum when run back to back (for the overlap ratio).
    wall_seconds: float = 0.0
    service_seconds: float = 0.0
    generation_seconds: float = 0.0  # Generate streams in flight (inside the generate step)
    evaluation_seconds: float = 0.0  # Evaluate streams in flight (inside the generate step)

    def is_done(self, step: str) -> bool:
        return step in self.done

    def prompt_of(self, index: int) -> PlannedPrompt:
        """What answer ``index`` is asked: its planned prompt, or the cycle's one prompt."""
        return self.prompts[self.plan[index]] if self.plan else PlannedPrompt(self.prompt)


def load_run_state(store: ObjectStore, run: str) -> RunState | None:
    try:
        data = json.loads(store.get_bytes(layout.state_key(run)))
    except ObjectNotFound:
        return None
    known = set(RunState.__dataclass_fields__)
    data = {k: v for k, v in data.items() if k in known}
    data["adapter"] = adapter_from_dict(data.get("adapter"), run)
    return RunState(**data)


def save_run_state(store: ObjectStore, state: RunState) -> None:
    state.updated = now()
    store.put_bytes(layout.state_key(state.name), to_json(state))


def load_progress(store: ObjectStore, run: str, cycle: int) -> CycleProgress | None:
    try:
        return progress_from_json(store.get_bytes(progress_key(run, cycle)), run)
    except ObjectNotFound:
        return None


def progress_from_json(raw: bytes, run: str = "") -> CycleProgress:
    """A cycle's progress as stored (``run``: its adapters' run)."""
    data = json.loads(raw)
    known = set(CycleProgress.__dataclass_fields__)
    data = {k: v for k, v in data.items() if k in known}
    data["generated_with"] = adapter_from_dict(data.get("generated_with"), run)
    data["adapter"] = adapter_from_dict(data.get("adapter"), run)
    data["prompts"] = {k: PlannedPrompt(**v) for k, v in data.get("prompts", {}).items()}
    return CycleProgress(**data)


def save_progress(store: ObjectStore, run: str, progress: CycleProgress) -> None:
    store.put_bytes(progress_key(run, progress.cycle), to_json(progress))


def save_evaluated(store: ObjectStore, record: CandidateRecord) -> None:
    """One candidate's result, durable on its own (a killed cycle keeps it)."""
    key = evaluated_key(record.run, record.cycle, record.index)
    store.put_bytes(key, record.to_json().encode())


def load_evaluated(store: ObjectStore, run: str, cycle: int) -> dict[int, CandidateRecord]:
    out: dict[int, CandidateRecord] = {}
    for key in store.list(evaluated_prefix(run, cycle)):
        record = CandidateRecord.from_json(store.get_bytes(key).decode())
        out[record.index] = record
    return out


def load_candidates(store: ObjectStore, run: str, cycle: int) -> list[CandidateRecord]:
    """The cycle's final records (empty until its select step is done)."""
    try:
        return loads_records(store.get_bytes(layout.candidates_key(run, cycle)))
    except ObjectNotFound:
        return []


def list_runs(store: ObjectStore) -> list[str]:
    names = set()
    for key in store.list(f"{layout.RUNS}/"):
        parts = key.split("/")
        if len(parts) == 3 and parts[2] == "state.json":
            names.add(parts[1])
    return sorted(names)
