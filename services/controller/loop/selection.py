"""Which candidates become training pairs (the spec's selection policy).

The paper's policy: novel candidates with accuracy ≥ ``min_accuracy``; when there are fewer than
``top_up_to`` of them, the best novel ones with accuracy ≥ ``top_up_min_accuracy`` fill up to
``top_up_to``; ``max_per_cycle`` (0 = none) caps the total. Every record gets its reason.

"Best" follows ``objectives``. ``[accuracy]``: by accuracy, ties by candidate index (the
paper's). ``[accuracy, parameters]`` / ``[accuracy, macs]`` (maximise accuracy, minimise the
evaluator's ``parameter_count`` / ``macs``): each pool (the novel ones ≥ ``min_accuracy``; the
top-up ones) is put in non-dominated fronts, taken front by front; inside a front by crowding
distance (NSGA-II: its extremes first, then the most isolated), ties by candidate index, so the
limits above cut the last front that does not fit where it is most crowded. Deterministic, so a
resumed run selects the same.

A record whose macs were not measured (0: the counter failed, or a record older than the
field) cannot win by them: it is ranked as if it had the largest macs measured in its pool (its
reason says ``macs not measured``); when no record of the pool has macs, they rank by accuracy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from nasloop.records import CandidateRecord
from services.controller.runspec import SelectionSection

# (the pool's word for a front, front from 1, number of fronts, whether macs is an objective)
Place = tuple[str, int, int, bool]


NOT_MEASURED = ", macs not measured"  # appended to the reason of a record ranked without macs


def _macs(r: CandidateRecord) -> int:
    return r.evaluation.macs if r.evaluation is not None else 0


def _cost(r: CandidateRecord, objective: str, largest_macs: int) -> float:
    """One objective as a value to minimise; unmeasured macs count as ``largest_macs``."""
    if objective == "accuracy":
        return -r.accuracy
    if objective == "macs":
        return float(_macs(r) or largest_macs)
    return float(r.evaluation.parameter_count if r.evaluation is not None else 0)


def _costs(pool: list[CandidateRecord], objectives: Sequence[str]) -> list[tuple[float, ...]]:
    """Each record's objectives as values to minimise."""
    largest = max((_macs(r) for r in pool), default=0)
    return [tuple(_cost(r, o, largest) for o in objectives) for r in pool]


def _dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return all(x <= y for x, y in zip(a, b, strict=True)) and a != b


def _fronts(costs: list[tuple[float, ...]]) -> list[list[int]]:
    """Non-dominated sorting (Deb's fast sort): positions in ``costs``, front by front."""
    beats: list[list[int]] = [[] for _ in costs]
    beaten_by = [0] * len(costs)
    for i, a in enumerate(costs):
        for j, b in enumerate(costs):
            if _dominates(a, b):
                beats[i].append(j)
                beaten_by[j] += 1
    fronts: list[list[int]] = []
    front = [i for i, n in enumerate(beaten_by) if n == 0]
    while front:
        fronts.append(front)
        after = []
        for i in front:
            for j in beats[i]:
                beaten_by[j] -= 1
                if beaten_by[j] == 0:
                    after.append(j)
        front = sorted(after)
    return fronts


def _crowding(front: list[int], costs: list[tuple[float, ...]]) -> dict[int, float]:
    """NSGA-II's crowding distance of each member of a front (extremes: infinite)."""
    dist = dict.fromkeys(front, 0.0)
    for k in range(len(costs[front[0]])):
        line = sorted(front, key=lambda i: (costs[i][k], i))
        dist[line[0]] = dist[line[-1]] = math.inf
        span = costs[line[-1]][k] - costs[line[0]][k]
        if span > 0:
            for prev, i, nxt in zip(line, line[1:], line[2:], strict=False):
                dist[i] += (costs[nxt][k] - costs[prev][k]) / span
    return dist


def _ranked(
    pool: list[CandidateRecord], objectives: Sequence[str], word: str = "front"
) -> tuple[list[CandidateRecord], dict[int, Place]]:
    """The pool best first, and each record's front by index (none with one objective)."""
    if len(objectives) == 1:
        return sorted(pool, key=lambda r: (-r.accuracy, r.index)), {}
    pool = sorted(pool, key=lambda r: r.index)
    costs = _costs(pool, objectives)
    fronts = _fronts(costs)
    order: list[CandidateRecord] = []
    places: dict[int, Place] = {}
    for n, front in enumerate(fronts, 1):
        dist = _crowding(front, costs)
        order += [pool[i] for i in sorted(front, key=lambda i: (-dist[i], i))]
        place = (word, n, len(fronts), "macs" in objectives)
        places.update({pool[i].index: place for i in front})
    return order, places


def _unmeasured(r: CandidateRecord, places: dict[int, Place]) -> str:
    return NOT_MEASURED if places[r.index][3] and not _macs(r) else ""


def _at(r: CandidateRecord, places: dict[int, Place]) -> str:
    """', front k of n' where the record has a front."""
    place = places.get(r.index)
    return f", {place[0]} {place[1]} of {place[2]}{_unmeasured(r, places)}" if place else ""


def _crowded(r: CandidateRecord, places: dict[int, Place]) -> str:
    word, k, n, _ = places[r.index]
    return f", crowded out in {word} {k} of {n}{_unmeasured(r, places)}"


def _left_out(
    left: Sequence[CandidateRecord],
    kept: Sequence[CandidateRecord],
    places: dict[int, Place],
    why: str,
) -> None:
    """Say why each of ``left`` was cut by a limit: its front, or crowded out of a kept one."""
    kept_places = {places.get(r.index) for r in kept}
    for r in left:
        crowded = r.index in places and places[r.index] in kept_places
        r.selection_reason = why + (_crowded(r, places) if crowded else _at(r, places))


def select(records: Sequence[CandidateRecord], policy: SelectionSection) -> list[CandidateRecord]:
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
            r.selection_reason = ""
            eligible.append(r)
    chosen, places = _ranked(
        [r for r in eligible if r.accuracy >= policy.min_accuracy], policy.objectives
    )
    for r in chosen:
        r.selection_reason = f"novel, accuracy ≥ {policy.min_accuracy:g}{_at(r, places)}"
    if len(chosen) < policy.top_up_to:
        pool, pool_places = _ranked(
            [r for r in eligible if policy.top_up_min_accuracy <= r.accuracy < policy.min_accuracy],
            policy.objectives,
            "top-up front",
        )
        need = policy.top_up_to - len(chosen)
        extra = pool[:need]
        places.update(pool_places)
        for r in extra:
            r.selection_reason = (
                f"top-up: novel, accuracy ≥ {policy.top_up_min_accuracy:g}{_at(r, places)}"
            )
        if pool_places:  # with one objective these keep the general reason below
            _left_out(pool[need:], extra, places, f"top-up: {policy.top_up_to} reached")
        chosen += extra
    if policy.max_per_cycle and len(chosen) > policy.max_per_cycle:
        cap = policy.max_per_cycle
        _left_out(chosen[cap:], chosen[:cap], places, f"cap: {cap} pairs per cycle")
        chosen = chosen[:cap]
    for r in chosen:
        r.selected = True
    for r in eligible:
        if not r.selection_reason:
            r.selection_reason = "novel, accuracy below the thresholds"
    return chosen
