"""A cycle's summary: counts, rates and times from its records (``cycles/<n>/summary.json``)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from nasloop import layout
from nasloop.artifacts import AdapterMeta
from nasloop.records import CandidateRecord
from nasloop.store import ObjectNotFound, ObjectStore
from nasloop.v1 import common_pb2 as common
from nasloop.v1 import controller_pb2 as pb
from services.controller.loop.plan import DIFF_FAILURES
from services.controller.loop.state import CycleProgress, adapter_from_dict, to_json

SHARE_THRESHOLD = 0.40  # the paper's "good" accuracy (controller.proto: share_above_040)


@dataclass
class CycleSummary:
    run: str
    cycle: int
    generated: int = 0
    valid: int = 0
    novel: int = 0
    selected: int = 0
    distinct: int = 0  # distinct extracted codes among the answers
    valid_rate: float = 0.0
    mean_accuracy: float = 0.0  # over valid candidates
    best_accuracy: float = 0.0
    share_above_040: float = 0.0  # of valid candidates
    threshold: float = SHARE_THRESHOLD  # the spec's selection.min_accuracy ("good")
    share_above_threshold: float = 0.0  # of valid candidates, accuracy ≥ threshold
    novel_good: int = 0  # novel candidates with accuracy ≥ threshold
    stopped: dict[str, int] = field(default_factory=dict)  # "STAGE/STATUS" → count, invalid ones
    seconds: dict[str, float] = field(default_factory=dict)  # per step
    wall_seconds: float = 0.0
    service_seconds: float = 0.0
    training: dict[str, Any] = field(default_factory=dict)
    adapter: AdapterMeta | None = None
    generated_with: AdapterMeta | None = None
    started: str = ""
    finished: str = ""

    def to_proto(self) -> pb.CycleSummary:
        out = pb.CycleSummary(
            run=self.run,
            cycle=self.cycle,
            phase=pb.CYCLE_PHASE_DONE,
            generated=self.generated,
            valid=self.valid,
            novel=self.novel,
            selected=self.selected,
            valid_rate=self.valid_rate,
            mean_accuracy=self.mean_accuracy,
            best_accuracy=self.best_accuracy,
            share_above_040=self.share_above_040,
            seconds=self.wall_seconds,
            candidates=common.ObjectRef(key=layout.candidates_key(self.run, self.cycle)),
            distinct=self.distinct,
            step_seconds=self.seconds,
            service_seconds=self.service_seconds,
            training_pairs=int(self.training.get("pairs") or 0),
            final_loss=float(self.training.get("final_loss") or 0.0),
            selection_threshold=self.threshold,
            share_above_threshold=self.share_above_threshold,
            novel_good=self.novel_good,
        )
        for key, count in sorted(self.stopped.items()):
            stage, _, status = key.partition("/")
            status = status.partition(" ")[0]  # "STATUS_NO_CODE (no_diff)": the status
            out.stopped.add(
                stage=common.Stage.Value(stage), status=common.Status.Value(status), count=count
            )
        if self.adapter is not None:
            out.adapter.CopyFrom(self.adapter.to_ref())
        if self.generated_with is not None:
            out.generated_with.CopyFrom(self.generated_with.to_ref())
        for name, when in (("started", self.started), ("finished", self.finished)):
            if when:
                ts = Timestamp()
                ts.FromDatetime(datetime.fromisoformat(when))
                getattr(out, name).CopyFrom(ts)
        return out


def _stopped_at(r: CandidateRecord) -> str:
    """Where an invalid candidate stopped, ``STAGE/STATUS``; a diff answer without code (no
    diff block, or one that does not apply: loop/plan.py) says why after its status."""
    if r.evaluation is None:
        return "STAGE_UNSPECIFIED/STATUS_UNSPECIFIED"
    key = f"{r.evaluation.last_stage}/{r.evaluation.status}"
    if r.evaluation.status == "STATUS_NO_CODE" and r.extraction in DIFF_FAILURES:
        key += f" ({r.extraction})"
    return key


def summarize(
    records: Sequence[CandidateRecord],
    progress: CycleProgress,
    run: str,
    threshold: float = SHARE_THRESHOLD,
) -> CycleSummary:
    """The cycle's summary from its records; ``threshold`` is the accuracy that counts as good
    (the run spec's ``selection.min_accuracy``)."""
    valid = [r for r in records if r.valid]
    novel = [r for r in valid if r.novelty is not None and r.novelty.novel]
    accuracies = [r.accuracy for r in valid]
    stopped = Counter(_stopped_at(r) for r in records if not r.valid)
    return CycleSummary(
        run=run,
        cycle=progress.cycle,
        generated=len(records),
        valid=len(valid),
        novel=len(novel),
        selected=sum(1 for r in records if r.selected),
        distinct=len({r.code for r in records if r.code.strip()}),
        valid_rate=len(valid) / len(records) if records else 0.0,
        mean_accuracy=sum(accuracies) / len(accuracies) if accuracies else 0.0,
        best_accuracy=max(accuracies, default=0.0),
        share_above_040=(
            sum(a > SHARE_THRESHOLD for a in accuracies) / len(accuracies) if accuracies else 0.0
        ),
        threshold=threshold,
        share_above_threshold=(
            sum(a >= threshold for a in accuracies) / len(accuracies) if accuracies else 0.0
        ),
        novel_good=sum(1 for r in novel if r.accuracy >= threshold),
        stopped=dict(stopped),
        seconds=dict(progress.seconds),
        wall_seconds=progress.wall_seconds,
        service_seconds=progress.service_seconds,
        training=dict(progress.training),
        adapter=progress.adapter,
        generated_with=progress.generated_with,
        started=progress.started,
        finished=progress.finished,
    )


def save_summary(store: ObjectStore, summary: CycleSummary) -> None:
    key = layout.summary_key(summary.run, summary.cycle)
    store.put_bytes(key, to_json(summary))


def load_summary(store: ObjectStore, run: str, cycle: int) -> CycleSummary | None:
    try:
        data = json.loads(store.get_bytes(layout.summary_key(run, cycle)))
    except ObjectNotFound:
        return None
    known = set(CycleSummary.__dataclass_fields__)
    data = {k: v for k, v in data.items() if k in known}
    for k in ("adapter", "generated_with"):
        data[k] = adapter_from_dict(data.get(k), run)
    return CycleSummary(**data)


def load_summaries(store: ObjectStore, run: str, last: int, first: int = 1) -> list[CycleSummary]:
    """The summaries of cycles ``first`` to ``last`` that are in the store, in order."""
    found = (load_summary(store, run, n) for n in range(first, last + 1))
    return [s for s in found if s is not None]
