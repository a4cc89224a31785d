"""The report's "child beats parent": per cycle in the run's report, and beside the other
metrics in ``--against``, only where some candidate had a parent."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nasloop import layout
from nasloop.records import CandidateRecord, Evaluation, NoveltyVerdict, dumps_lines
from nasloop.store import LocalStore
from services.controller.loop import state as st
from services.controller.loop.summary import save_summary, summarize
from services.controller.report import against
from services.controller.report import build as report
from services.controller.report.document import to_markdown
from services.controller.report.parents import ParentTally, by_id, tally
from services.controller.report.stats import newcombe_difference, wilson
from services.controller.runspec import dump_spec, load_spec


def rec(run: str, cycle: int, i: int, acc: float | None, parent: str = "") -> CandidateRecord:
    """A candidate (invalid where ``acc`` is None) whose prompt carried ``parent`` (an index
    of cycle 1, or "")."""
    ok = acc is not None
    return CandidateRecord(
        id=f"{run}-c{cycle}-{i}", run=run, cycle=cycle, index=i,
        code=f"class Net:  # {run} {cycle} {i}\n    pass\n",
        parent_id=parent and f"{run}-c1-{parent}", mode="full" if parent else "",
        evaluation=Evaluation(
            last_stage="STAGE_EVALUATED" if ok else "STAGE_IMPORTED",
            status="STATUS_OK" if ok else "STATUS_INIT_EXCEPTION", accuracy=acc or 0.0,
            parameter_count=1000,
        ),
        novelty=NoveltyVerdict(novel=ok, max_similarity=0.1),
    )  # fmt: skip


def cycles(run: str, with_parents: bool = True) -> dict[int, list[CandidateRecord]]:
    """Cycle 1: no parents (0.5, 0.7, 0.9). Cycle 2: five children (two beat 0.5's, one ties
    0.7's, one is invalid, one names a parent the run lacks) and one without a parent."""
    kids: list[tuple[float | None, str]] = [
        (0.6, "0"), (0.8, "0"), (0.7, "1"), (None, "2"), (0.99, "9"), (0.95, ""),
    ]  # fmt: skip
    return {
        1: [rec(run, 1, i, acc) for i, acc in enumerate([0.5, 0.7, 0.9])],
        2: [rec(run, 2, i, acc, p if with_parents else "") for i, (acc, p) in enumerate(kids)],
    }


def make_run(store: LocalStore, run: str, records: dict[int, list[CandidateRecord]]) -> None:
    spec = load_spec("local", overrides=["cycles=2"]).model_copy(update={"name": run})
    store.put_bytes(layout.spec_key(run), dump_spec(spec).encode())
    for n, rs in records.items():
        store.put_bytes(layout.candidates_key(run, n), dumps_lines(rs))
        save_summary(store, summarize(rs, st.CycleProgress(cycle=n), run))
    st.save_run_state(store, st.RunState(run, state="succeeded", cycle=2, cycles_done=2))


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    store = LocalStore(tmp_path / "store")
    make_run(store, "kids", cycles("kids"))
    make_run(store, "plain", cycles("plain", with_parents=False))
    # "few": only its first child beats its parent.
    few = cycles("few")
    few[2][1].evaluation = Evaluation(status="STATUS_OK", accuracy=0.4)
    make_run(store, "few", few)
    return store


def test_tally_looks_the_parents_up_by_id() -> None:
    rs = cycles("kids")
    every = by_id(rs[1] + rs[2])
    assert tally(rs[2], every) == ParentTally(children=5, valid=4, beat=2, unknown=1)
    assert tally(rs[2], every).rate == pytest.approx(2 / 5)
    assert tally(rs[1], every) == ParentTally() and ParentTally().rate == 0.0


def flat(md: str) -> str:
    """The Markdown with runs of spaces as one (table cells are padded)."""
    return re.sub(r" +", " ", md)


def share(k: int, n: int) -> str:
    i = wilson(k, n)
    return f"{k}/{n} ({100 * k / n:.1f} % [{100 * i.low:.1f}, {100 * i.high:.1f}])"


def test_the_report_shows_it_per_cycle_only_with_parents(store: LocalStore) -> None:
    md = flat(to_markdown(report.document(report.load_report(store, "kids"), [])))
    assert "## Children against their parents" in md
    assert "| 1 | 0 | 0 | - |" in md
    assert f"| 2 | 5 | 4 | {share(2, 5)} |" in md
    assert f"| run | 5 | 4 | {share(2, 5)} |" in md
    assert "1 candidate named a parent that is not among the run's records" in md
    plain = to_markdown(report.document(report.load_report(store, "plain"), []))
    assert "Children against their parents" not in plain


def test_against_adds_the_rate_when_either_run_has_parents(
    store: LocalStore, tmp_path: Path
) -> None:
    def load(a: str, b: str) -> against.Against:
        return against.load_against(report.load_report(store, a), report.load_report(store, b))

    plain = load("plain", "plain")
    assert not plain.parents and against.BEATS_PARENT not in dict(against.shown_metrics(plain))
    assert "child beats parent" not in to_markdown(against.document(plain, []))

    one_side = load("kids", "plain")
    assert one_side.parents and dict(against.shown_metrics(one_side))[4] == against.BEATS_PARENT
    total = one_side.rows[-1]
    assert total.children == (ParentTally(5, 4, 2, 1), ParentTally())
    assert total.beats_parent is None  # B has no children: no difference
    md = flat(to_markdown(against.document(one_side, [])))
    assert f"| child beats parent (of children) | {share(2, 5)} | - | - | - |" in md
    assert "Child beats parent: of the candidates whose prompt carried a parent" in md

    both = load("kids", "few")
    d = newcombe_difference(2, 5, 1, 5)
    assert both.rows[-1].beats_parent == d
    assert both.rows[0].beats_parent is None  # cycle 1: no children on either side
    md = flat(to_markdown(against.document(both, [])))
    assert f"| run | {share(2, 5)} | {share(1, 5)} | {report.interval_text(d)} | no |" in md
    against.write_against(both, tmp_path / "out")
    assert (tmp_path / "out" / against.BEATS_PARENT[3]).read_bytes().startswith(b"\x89PNG")
