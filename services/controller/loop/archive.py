"""The run's archive: every valid candidate with its descriptors, and a MAP-Elites map of them.

An :class:`Entry` is a valid candidate with what the evaluator measured of it: accuracy,
parameters, multiply-adds of one forward pass, depth (modules with parameters of their own) and
layer families (0 / empty in older records). :class:`Cells` puts an entry in a cell of the
map: log10(parameters) by depth, each binned by its edges (bin ``k`` holds values from edge
``k-1`` up to edge ``k``; bin 0 what is below the first edge, where no parameters or no depth
measured fall). A cell's elite is its best entry by the objectives; parents are sampled
uniformly over the occupied cells' elites (MAP-Elites).

The archive is not stored on its own: :func:`load_archive` rebuilds it from the durable records
of the run's finished cycles, so a resumed run rebuilds the same archive and samples the same
parents. :meth:`Archive.to_json` is a snapshot for the report (``layout.archive_key``).
"""

from __future__ import annotations

import json
import math
import random
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from nasloop import layout
from nasloop.records import CandidateRecord
from nasloop.store import ObjectStore
from services.controller.loop.state import load_candidates

# What a cell's elite is chosen by: accuracy, then (near ties) at most one cost.
ARCHIVE_OBJECTIVES = (("accuracy",), ("accuracy", "parameters"), ("accuracy", "macs"))
NEAR_TIE = 1e-9  # accuracies this close are equal when a cost is among the objectives

Cell = tuple[int, int]  # (parameter bin, depth bin)


@dataclass(frozen=True)
class Entry:
    """One valid candidate with its descriptors."""

    id: str
    cycle: int
    index: int
    code: str
    accuracy: float
    parameters: int
    macs: int
    depth: int
    families: tuple[str, ...]

    @classmethod
    def from_record(cls, r: CandidateRecord) -> Entry:
        e = r.evaluation
        if e is None or not e.valid:
            raise ValueError(f"candidate {r.id} is not valid")
        return cls(
            r.id, r.cycle, r.index, r.code, e.accuracy, e.parameter_count, e.macs, e.depth,
            tuple(e.layer_families),
        )  # fmt: skip


def _increasing(edges: Sequence[float]) -> bool:
    return all(a < b for a, b in pairwise(edges))


@dataclass(frozen=True)
class Cells:
    """The map's grid. Defaults from the ``local`` preset's digits networks: 10^3.9 to 10^5.8
    parameters (deciles 10^4.3 to 10^5.2, so quarter decades there), depth 9 to 59 (median 27).
    Depth's first edge is 1, so bin 0 is "depth not measured"."""

    parameter_bins: tuple[float, ...] = (3.0, 3.5, 4.0, 4.25, 4.5, 4.75, 5.0, 5.25, 5.5, 6.0, 7.0)
    depth_bins: tuple[int, ...] = (1, 12, 18, 24, 30, 40, 50)

    def __post_init__(self) -> None:
        if not _increasing(self.parameter_bins) or not _increasing(self.depth_bins):
            raise ValueError("cell edges must be strictly increasing")

    def cell(self, entry: Entry) -> Cell:
        size = math.log10(entry.parameters) if entry.parameters > 0 else -math.inf
        return bisect_right(self.parameter_bins, size), bisect_right(self.depth_bins, entry.depth)


DEFAULT_CELLS = Cells()


def _check_objectives(objectives: Sequence[str]) -> tuple[str, ...]:
    if tuple(objectives) not in ARCHIVE_OBJECTIVES:
        raise ValueError(
            f"archive objectives {list(objectives)}: use [accuracy], [accuracy, parameters] "
            "or [accuracy, macs]"
        )
    return tuple(objectives)


@dataclass
class Archive:
    """Every valid candidate of the run so far, in (cycle, index) order, and its map."""

    entries: list[Entry] = field(default_factory=list)
    cells: Cells = DEFAULT_CELLS
    objectives: tuple[str, ...] = ("accuracy",)

    @classmethod
    def from_records(
        cls,
        records: Iterable[CandidateRecord],
        cells: Cells = DEFAULT_CELLS,
        objectives: Sequence[str] = ("accuracy",),
    ) -> Archive:
        """The archive of the valid ones among ``records`` (the others are left out)."""
        entries = sorted(
            (Entry.from_record(r) for r in records if r.valid),
            key=lambda e: (e.cycle, e.index, e.id),
        )
        return cls(entries, cells, _check_objectives(objectives))

    def _tie_key(self, e: Entry) -> tuple[int | str, ...]:
        """Among (near-)equal accuracies: fewer of the cost objective, then parameters, then id."""
        costs = [getattr(e, o) for o in self.objectives[1:]]
        return (*costs, e.parameters, e.id)

    def _best(self, group: list[Entry]) -> Entry:
        top = max(e.accuracy for e in group)
        slack = NEAR_TIE if len(self.objectives) > 1 else 0.0
        return min((e for e in group if e.accuracy >= top - slack), key=self._tie_key)

    def by_cell(self) -> dict[Cell, list[Entry]]:
        """Each occupied cell's entries, in cell order."""
        groups: dict[Cell, list[Entry]] = {}
        for e in self.entries:
            groups.setdefault(self.cells.cell(e), []).append(e)
        return dict(sorted(groups.items()))

    def elites(self) -> list[Entry]:
        """One elite per occupied cell, in cell order."""
        return [self._best(group) for group in self.by_cell().values()]

    def sample_parents(self, count: int, seed: int) -> list[Entry]:
        """``count`` parents, each an occupied cell's elite chosen uniformly (with replacement);
        the same for the same archive, count and seed. ``[]`` when the archive is empty."""
        if count < 0:
            raise ValueError(f"count {count} < 0")
        elites = self.elites()
        if not elites:
            return []
        rng = random.Random(seed)
        return [rng.choice(elites) for _ in range(count)]

    def to_json(self) -> dict[str, Any]:
        """A snapshot: the grid's edges, the objectives, the entry count and each occupied cell
        with its elite and its own entry count."""
        cells = [
            {
                "cell": list(cell),
                "entries": len(group),
                "elite": (e := self._best(group)).id,
                "cycle": e.cycle,
                "accuracy": e.accuracy,
                "parameters": e.parameters,
                "macs": e.macs,
                "depth": e.depth,
            }
            for cell, group in self.by_cell().items()
        ]
        return {
            "parameter_bins": list(self.cells.parameter_bins),
            "depth_bins": list(self.cells.depth_bins),
            "objectives": list(self.objectives),
            "entries": len(self.entries),
            "cells": cells,
        }


def load_archive(
    store: ObjectStore,
    run: str,
    before_cycle: int,
    cells: Cells = DEFAULT_CELLS,
    objectives: Sequence[str] = ("accuracy",),
) -> Archive:
    """The archive of the run's cycles 1 .. ``before_cycle`` - 1 (not the baseline), from their
    final records in the store: what cycle ``before_cycle`` samples its parents from."""
    layout.check_cycle(before_cycle)
    records = [r for c in range(1, before_cycle) for r in load_candidates(store, run, c)]
    return Archive.from_records(records, cells, objectives)


def save_snapshot(store: ObjectStore, run: str, cycle: int, archive: Archive) -> str:
    """``archive.to_json()`` at ``layout.archive_key(run, cycle)``; returns the key."""
    key = layout.archive_key(run, cycle)
    store.put_bytes(key, json.dumps(archive.to_json(), indent=1, sort_keys=True).encode())
    return key
