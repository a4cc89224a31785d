"""The archive (issue 22, item 1): valid candidates with their descriptors, a MAP-Elites map
over log10(parameters) by depth, its elites by the objectives, parents sampled from them
deterministically, and the same archive rebuilt from the store on resume."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any, cast

import pytest

from nasloop import layout
from nasloop.records import CandidateRecord, Evaluation
from nasloop.store.local import LocalStore
from services.controller.loop import state as st
from services.controller.loop import steps
from services.controller.loop.archive import Archive, Cells, Entry, load_archive, save_snapshot
from services.controller.loop.runner import Context

RUN = "r"


def rec(
    cycle: int,
    i: int,
    acc: float,
    params: int,
    depth: int = 20,
    macs: int = 0,
    status: str = "STATUS_OK",
) -> CandidateRecord:
    run_id = layout.candidate_id(RUN, cycle, i) if cycle else layout.baseline_candidate_id(RUN, i)
    return CandidateRecord(
        id=run_id, run=RUN, cycle=cycle, index=i, code=f"net {cycle}-{i}",
        evaluation=Evaluation(
            status=status, accuracy=acc, parameter_count=params, macs=macs, depth=depth,
            layer_families=["conv", "linear"],
        ),
    )  # fmt: skip


def ids(entries: list[Entry]) -> list[str]:
    return [e.id for e in entries]


def test_entries_are_the_valid_ones_in_cycle_index_order_with_their_descriptors() -> None:
    rs = [
        rec(2, 0, 0.9, 20_000), rec(1, 3, 0.8, 50_000, macs=7),
        rec(1, 1, 0.99, 20_000, status="STATUS_TIMEOUT"),
        CandidateRecord(id="none", run=RUN, cycle=1, index=2), rec(1, 0, 0.5, 10_000),
    ]  # fmt: skip
    archive = Archive.from_records(rs)
    assert ids(archive.entries) == ["r-c1-0", "r-c1-3", "r-c2-0"]
    assert archive.entries[1] == Entry(
        "r-c1-3", 1, 3, "net 1-3", 0.8, 50_000, 7, 20, ("conv", "linear")
    )


def test_cells_bin_log_parameters_and_depth_unmeasured_in_bin_0() -> None:
    cells = Cells()
    entry = Entry.from_record(rec(1, 0, 0.9, 10_000, depth=0))
    assert cells.cell(entry) == (3, 0)  # 10^4 is on the edge 4.0: the bin above it
    assert cells.cell(Entry.from_record(rec(1, 0, 0.9, 0, depth=9))) == (0, 1)
    assert cells.cell(Entry.from_record(rec(1, 0, 0.9, 60_000, depth=27))) == (6, 4)
    assert cells.cell(Entry.from_record(rec(1, 0, 0.9, 10**8, depth=99))) == (11, 7)
    small = Cells(parameter_bins=(4.0,), depth_bins=(10,))
    assert small.cell(entry) == (1, 0)
    with pytest.raises(ValueError):
        Cells(depth_bins=(4, 4))


def test_elites_one_per_cell_in_cell_order_by_the_objectives() -> None:
    rs = [
        rec(1, 0, 0.90, 20_000, macs=500),  # cell (4, 3)
        rec(1, 1, 0.95, 30_000, macs=900),  # (4, 3): best accuracy
        rec(1, 2, 0.95 - 1e-12, 18_000, macs=100),  # (4, 3): a near tie, fewer params and macs
        rec(1, 3, 0.70, 10**6, depth=45),  # (10, 6), alone
        rec(2, 0, 0.80, 2_000, depth=10),  # (1, 1)
        rec(2, 1, 0.80, 1_500, depth=10),  # (1, 1): an exact tie, fewer parameters
    ]
    assert ids(Archive.from_records(rs).elites()) == ["r-c2-1", "r-c1-1", "r-c1-3"]
    pareto = Archive.from_records(rs, objectives=["accuracy", "parameters"])
    assert ids(pareto.elites()) == ["r-c2-1", "r-c1-2", "r-c1-3"]
    by_macs = Archive.from_records(rs, objectives=("accuracy", "macs"))
    assert ids(by_macs.elites()) == ["r-c2-1", "r-c1-2", "r-c1-3"]
    # an exact tie in everything: the smaller id
    twins = [rec(1, 5, 0.9, 20_000), rec(1, 4, 0.9, 20_000)]
    assert ids(Archive.from_records(twins).elites()) == ["r-c1-4"]
    with pytest.raises(ValueError):
        Archive.from_records(rs, objectives=["parameters"])


def test_sample_parents_is_deterministic_and_uniform_over_elites() -> None:
    rs = [rec(1, i, 0.5 + i / 100, 2_000 * 3**i, depth=10 + 6 * i) for i in range(5)]
    rs += [rec(2, i, 0.4, 2_000 * 3**i, depth=10 + 6 * i) for i in range(5)]  # never elites
    archive = Archive.from_records(rs)
    elites = archive.elites()
    assert len(elites) == 5
    parents = archive.sample_parents(200, seed=7)
    assert parents == Archive.from_records(reversed(rs)).sample_parents(200, seed=7)
    assert parents != archive.sample_parents(200, seed=8)
    assert set(ids(parents)) == set(ids(elites))
    assert all(20 <= ids(parents).count(e.id) <= 60 for e in elites)  # about 40 each
    assert archive.sample_parents(0, seed=7) == []
    assert Archive.from_records([]).sample_parents(3, seed=7) == []
    assert Archive.from_records([rec(1, 0, 0.1, 0, status="STATUS_ERROR")]).elites() == []


def test_to_json_lists_the_occupied_cells_with_their_elites() -> None:
    rs = [rec(1, 0, 0.9, 20_000), rec(1, 1, 0.8, 21_000), rec(1, 2, 0.7, 10**6, depth=0)]
    snapshot = Archive.from_records(rs).to_json()
    assert json.loads(json.dumps(snapshot)) == snapshot
    assert snapshot["parameter_bins"] == list(Cells().parameter_bins)
    assert snapshot["depth_bins"] == list(Cells().depth_bins)
    assert snapshot["entries"] == 3
    assert [(c["cell"], c["elite"], c["entries"]) for c in snapshot["cells"]] == [
        ([4, 3], "r-c1-0", 2),
        ([10, 0], "r-c1-2", 1),
    ]
    assert snapshot["cells"][0]["accuracy"] == 0.9
    assert snapshot["cells"][0]["parameters"] == 20_000


def write_cycle(store: LocalStore, cycle: int, records: list[CandidateRecord]) -> None:
    """As the loop does: each evaluated record on its own, then the select step's final file."""
    for r in records:
        st.save_evaluated(store, r)
    ctx = cast(Context, SimpleNamespace(store=store, run=RUN, cycle=cycle))
    steps.save_records(ctx, steps.final_records(ctx))


def run_records() -> dict[int, list[CandidateRecord]]:
    def cycle(c: int) -> list[CandidateRecord]:
        return [
            rec(c, i, 0.5 + ((c * 7 + i * 13) % 50) / 100, 1_000 * (i + 2) ** 3, depth=8 + 4 * i)
            for i in range(8)
        ] + [rec(c, 8, 0.99, 5_000, status="STATUS_TIMEOUT")]

    return {c: cycle(c) for c in (0, 1, 2, 3)}


def test_load_archive_rebuilds_from_the_stores_records(tmp_path: Any) -> None:
    store = LocalStore(tmp_path / "store")
    records = run_records()
    for c, rs in records.items():
        write_cycle(store, c, rs)
    archive = load_archive(store, RUN, before_cycle=3)
    assert archive == Archive.from_records(records[1] + records[2])  # not the baseline, not 3
    assert len(archive.entries) == 16
    # a resumed run (a new process, another store object) rebuilds the same archive
    again = load_archive(LocalStore(tmp_path / "store"), RUN, before_cycle=3)
    assert again == archive
    assert again.sample_parents(12, seed=3) == archive.sample_parents(12, seed=3)
    assert load_archive(store, RUN, before_cycle=1) == Archive()
    assert load_archive(store, RUN, 3, objectives=["accuracy", "parameters"]) != archive
    with pytest.raises(layout.InvalidName):
        load_archive(store, RUN, before_cycle=0)
    key = save_snapshot(store, RUN, 3, archive)
    assert key == layout.archive_key(RUN, 3) == "runs/r/cycles/3/archive.json"
    assert json.loads(store.get_bytes(key)) == archive.to_json()
