"""archive.png: the run's final archive as a heat map, log10(parameters) bins by depth bins,
each occupied cell coloured by its elite's accuracy with its entry count written in it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nasloop.records import CandidateRecord, Evaluation
from services.controller.loop.archive import Archive, Cells
from services.controller.report.plots import ARCHIVE_FILE, archive_map, write_archive


def rec(i: int, acc: float, params: int, depth: int, cycle: int = 1) -> CandidateRecord:
    return CandidateRecord(
        id=f"r-c{cycle}-{i}", run="r", cycle=cycle, index=i,
        evaluation=Evaluation(
            status="STATUS_OK", accuracy=acc, parameter_count=params, depth=depth
        ),
    )  # fmt: skip


RECORDS = [
    rec(0, 0.6, 20_000, 20), rec(1, 0.9, 25_000, 22, cycle=2), rec(2, 0.7, 30_000, 23),
    rec(3, 0.5, 200_000, 45), rec(4, 0.95, 50_000, 0),  # depth not measured: bin 0
    CandidateRecord(id="r-c1-5", run="r", cycle=1, index=5),  # not evaluated: left out
]  # fmt: skip


def test_cells_coloured_by_their_elite_and_labelled_with_their_count() -> None:
    archive = Archive.from_records(RECORDS)
    cells = Cells()
    assert cells.cell(archive.entries[0]) == (4, 3)  # log10 4.3 in [4.25, 4.5), depth [18, 24)
    fig = archive_map(archive)
    ax = fig.axes[0]
    grid = ax.images[0].get_array()
    assert isinstance(grid, np.ma.MaskedArray)
    assert grid.shape == (len(cells.depth_bins) + 1, len(cells.parameter_bins) + 1)
    filled = {(int(d), int(p)): float(grid[d, p]) for d, p in np.argwhere(~grid.mask)}
    # (depth bin, parameter bin): the three 20-30k, depth 20-23 nets share (3, 4), elite 0.9.
    assert filled == {(3, 4): 0.9, (6, 8): 0.5, (0, 5): 0.95}
    texts = {(t.get_position(), t.get_text()) for t in ax.texts}
    assert texts == {((4, 3), "3"), ((8, 6), "1"), ((5, 0), "1")}
    assert ax.get_title() == "Archive: 5 valid candidates in 3 cells (elite by accuracy)"
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[0] == "< 1 (not measured)" and labels[3] == "[18, 24)" and labels[-1] == "≥ 50"
    assert [t.get_text() for t in ax.get_xticklabels()][4] == "[4.25, 4.5)"


def test_written_for_a_non_empty_archive_only(tmp_path: Path) -> None:
    assert write_archive(Archive.from_records(RECORDS[5:]), tmp_path) == []
    assert not (tmp_path / ARCHIVE_FILE).exists()
    (figure,) = write_archive(Archive.from_records(RECORDS), tmp_path)
    assert figure.file == ARCHIVE_FILE
    assert (tmp_path / ARCHIVE_FILE).read_bytes().startswith(b"\x89PNG")
