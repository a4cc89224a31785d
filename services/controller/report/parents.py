"""How often a child beats its parent (``search.strategy`` ``archive``): pure functions.

A candidate whose prompt carried a parent has the parent's id in ``parent_id`` (``""``: no
parent). The parent is a valid candidate of an earlier cycle of the same run, looked up by id
among the run's records. A child beats its parent when it is valid and its accuracy is above
the parent's; a child whose parent is not among the records (none should be) does not.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from nasloop.records import CandidateRecord


@dataclass(frozen=True)
class ParentTally:
    """The candidates with a parent among some records."""

    children: int = 0  # candidates whose prompt carried a parent
    valid: int = 0  # of those, valid
    beat: int = 0  # of those, more accurate than their parent
    unknown: int = 0  # of those, whose parent is not among the run's records

    @property
    def rate(self) -> float:
        """The share of children that beat their parent (0 without children)."""
        return self.beat / self.children if self.children else 0.0


def has_parents(records: Iterable[CandidateRecord]) -> bool:
    return any(r.parent_id for r in records)


def by_id(records: Iterable[CandidateRecord]) -> dict[str, CandidateRecord]:
    """The run's records by id: where the parents are looked up."""
    return {r.id: r for r in records}


def beats(child: CandidateRecord, parent: CandidateRecord | None) -> bool:
    return parent is not None and child.valid and child.accuracy > parent.accuracy


def tally(
    records: Iterable[CandidateRecord], run_records: Mapping[str, CandidateRecord]
) -> ParentTally:
    """The children among ``records`` and how many beat their parent in ``run_records``."""
    children = [r for r in records if r.parent_id]
    parents = [run_records.get(r.parent_id) for r in children]
    return ParentTally(
        children=len(children),
        valid=sum(r.valid for r in children),
        beat=sum(beats(r, p) for r, p in zip(children, parents, strict=True)),
        unknown=sum(p is None for p in parents),
    )
