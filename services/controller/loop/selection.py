"""Which candidates become training pairs (the spec's selection policy).

The paper's policy: novel candidates with accuracy ≥ ``min_accuracy``; when there are fewer than
``top_up_to`` of them, the best novel ones with accuracy ≥ ``top_up_min_accuracy`` fill up to
``top_up_to``; ``max_per_cycle`` (0 = none) caps the total. Every record gets its reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from nasloop.records import CandidateRecord


def select(records: Sequence[CandidateRecord], policy: Any) -> list[CandidateRecord]:
    """Mark each record selected or not, with why; return the selected ones, best first."""
    eligible: list[CandidateRecord] = []
    for r in records:
        r.selected = False
        if r.evaluation is None:
            r.selection_reason = "not evaluated"
        elif not r.valid:
            r.selection_reason = f"invalid: {r.evaluation.status}"
        elif r.novelty is None or not r.novelty.novel:
            near = r.novelty.nearest_id if r.novelty else ""
            sim = r.novelty.max_similarity if r.novelty else 0.0
            r.selection_reason = f"not novel: {sim:.2f} similar to {near}" if near else "not novel"
        else:
            eligible.append(r)
    eligible.sort(key=lambda r: (-r.accuracy, r.index))
    chosen = [r for r in eligible if r.accuracy >= policy.min_accuracy]
    for r in chosen:
        r.selection_reason = f"novel, accuracy ≥ {policy.min_accuracy:g}"
    if len(chosen) < policy.top_up_to:
        extra = [
            r for r in eligible
            if policy.top_up_min_accuracy <= r.accuracy < policy.min_accuracy
        ][: policy.top_up_to - len(chosen)]  # fmt: skip
        for r in extra:
            r.selection_reason = f"top-up: novel, accuracy ≥ {policy.top_up_min_accuracy:g}"
        chosen += extra
    if policy.max_per_cycle and len(chosen) > policy.max_per_cycle:
        for r in chosen[policy.max_per_cycle :]:
            r.selection_reason = f"cap: {policy.max_per_cycle} pairs per cycle"
        chosen = chosen[: policy.max_per_cycle]
    for r in chosen:
        r.selected = True
    for r in eligible:
        if not r.selected and not r.selection_reason.startswith("cap"):
            r.selection_reason = "novel, accuracy below the thresholds"
    return chosen
