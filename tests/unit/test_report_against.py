"""`nasloop report A --against B`: two synthetic runs with known numbers, the interval of the
valid-rate difference computed here from the formulas, the specs' differences, the seeds, the
folder it writes and a missing run's error."""

from __future__ import annotations

from math import sqrt
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
from services.controller.runspec import dump_spec, load_spec

Z95 = 1.959963984540054  # the two-sided normal quantile at 95 %


def candidates(
    run: str, cycle: int, accuracies: list[float], invalid: int
) -> list[CandidateRecord]:
    """Valid, novel candidates with these accuracies, then ``invalid`` ones."""
    out = []
    for i, acc in enumerate([*accuracies, *[None] * invalid]):
        ok = acc is not None
        evaluation = Evaluation(
            last_stage="STAGE_EVALUATED" if ok else "STAGE_IMPORTED",
            status="STATUS_OK" if ok else "STATUS_INIT_EXCEPTION",
            accuracy=acc or 0.0,
        )
        out.append(
            CandidateRecord(
                id=f"{run}-c{cycle}-{i}", run=run, cycle=cycle, index=i,
                code=f"class Net:  # {run} {cycle} {i}\n    pass\n", evaluation=evaluation,
                novelty=NoveltyVerdict(novel=ok, max_similarity=0.1),
            )
        )  # fmt: skip
    return out


def make_run(
    store: LocalStore, run: str, cycles: dict[int, list[CandidateRecord]], *sets: str
) -> None:
    spec = load_spec("local", overrides=["cycles=2", "selection.min_accuracy=0.5", *sets])
    spec = spec.model_copy(update={"name": run})
    store.put_bytes(layout.spec_key(run), dump_spec(spec).encode())
    for n, records in cycles.items():
        store.put_bytes(layout.candidates_key(run, n), dumps_lines(records))
        progress = st.CycleProgress(cycle=n)
        save_summary(store, summarize(records, progress, run, spec.selection.min_accuracy))
    st.save_run_state(store, st.RunState(run, state="succeeded", cycle=2, cycles_done=len(cycles)))


# A: cycle 1 15 of 20 valid (10 at or above 0.5), cycle 2 18 of 20 (18 good).
# B: cycle 1 5 of 20 valid (2 good), cycle 2 10 of 20 (5 good); B has LoRA r 8.
A_CYCLES = {1: ([0.6] * 10 + [0.3] * 5, 5), 2: ([0.7] * 18, 2)}
B_CYCLES = {1: ([0.6] * 2 + [0.3] * 3, 15), 2: ([0.6] * 5 + [0.2] * 5, 10)}


def records(
    run: str, cycles: dict[int, tuple[list[float], int]]
) -> dict[int, list[CandidateRecord]]:
    return {n: candidates(run, n, acc, bad) for n, (acc, bad) in cycles.items()}


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    store = LocalStore(tmp_path / "store")
    make_run(store, "alpha", records("alpha", A_CYCLES))
    make_run(store, "beta", records("beta", B_CYCLES), "training.lora.r=8")
    make_run(store, "gamma", records("gamma", B_CYCLES), "seed=1")
    return store


def wilson(k: int, n: int) -> tuple[float, float]:
    p, z = k / n, Z95
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def newcombe(k1: int, n1: int, k2: int, n2: int) -> tuple[float, float, float]:
    (l1, u1), (l2, u2) = wilson(k1, n1), wilson(k2, n2)
    p1, p2 = k1 / n1, k2 / n2
    d = p1 - p2
    return d, d - sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)


def load(store: LocalStore, a: str, b: str) -> against.Against:
    return against.load_against(report.load_report(store, a), report.load_report(store, b))


def test_numbers_and_intervals(store: LocalStore) -> None:
    c = load(store, "alpha", "beta")
    assert [row.label for row in c.rows] == ["1", "2", "run"]
    first, _, total = c.rows
    d, low1, high1 = newcombe(15, 20, 5, 20)
    assert d == pytest.approx(0.5)
    assert first.valid_rate is not None and first.valid_rate.significant
    assert (first.valid_rate.low, first.valid_rate.high) == pytest.approx((low1, high1))
    d, low, high = newcombe(33, 40, 15, 40)  # over the run
    assert total.valid_rate is not None
    assert (total.valid_rate.estimate, total.valid_rate.low, total.valid_rate.high) == (
        pytest.approx((d, low, high))
    )
    assert (total.a.novel_good, total.b.novel_good) == (28, 7)
    assert total.novel_good is not None
    assert total.novel_good.estimate == pytest.approx((28 - 7) / 40)
    assert first.mean_accuracy is not None
    assert first.mean_accuracy.estimate == pytest.approx(0.5 - (1.2 + 0.9) / 5)
    md = to_markdown(against.document(c, []))
    assert (
        f"| 15/20 (75.0 %) | 5/20 (25.0 %)  | +50.0 [{100 * low1:+.1f}, {100 * high1:+.1f}]" in md
    )
    assert f"| 33/40 (82.5 %) | 15/40 (37.5 %) | +45.0 [{100 * low:+.1f}, {100 * high:+.1f}]" in md
    assert "Valid rate, over the run: difference +45.0 points" in md
    assert "| 28/40 (70.0 %) | 7/40 (17.5 %) | +52.5 " in md


def test_spec_differences_and_seeds(store: LocalStore) -> None:
    c = load(store, "alpha", "beta")
    assert c.spec_diff == [("training.lora.r", "16", "8")]
    md = to_markdown(against.document(c, []))
    assert "| training.lora.r | 16 " in md
    assert "Both runs have seed 0" in md
    other = load(store, "alpha", "gamma")
    assert [key for key, _, _ in other.spec_diff] == ["seed"]
    assert "The seeds differ (A: 0, B: 1)" in to_markdown(against.document(other, []))


def test_cli_writes_the_folder_and_refuses_a_missing_run(
    store: LocalStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from services.cli import main

    monkeypatch.setenv("NASLOOP_STORE__URL", f"file://{store.root}")
    assert main(["report", "alpha", "--against", "beta"]) == 0
    folder = tmp_path / "reports" / "alpha-vs-beta"
    assert "| valid rate (valid / generated)  | 33/40" in capsys.readouterr().out
    assert (folder / "report.md").read_text().startswith("# nasloop report: alpha against beta")
    for _, _, _, file in against.METRICS:
        assert (folder / file).read_bytes().startswith(b"\x89PNG")
        assert file in (folder / "report.md").read_text()
    assert (folder / "report.html").is_file()
    assert main(["report", "alpha", "--against", "nope"]) == 2
    assert capsys.readouterr().err == "nasloop: no run named 'nope'\n"


def test_hypervolume_difference(store: LocalStore) -> None:
    # No parameter counts in these records (1 at least): each side's hypervolume is its best
    # accuracy (the whole log box's width). Cycle 2: A's 18 at 0.7 against B's best 0.6, which
    # nearly every resample of B's 10 holds (all five 0.2s: 1 in 1024).
    c = load(store, "alpha", "beta")
    first, second, total = c.rows
    assert first.hypervolumes == pytest.approx((0.6, 0.6))
    assert second.hypervolumes == pytest.approx((0.7, 0.6))
    assert total.hypervolume is not None and second.hypervolume is not None
    assert (total.hypervolume.estimate, total.hypervolume.low) == pytest.approx((0.1, 0.1))
    assert second.hypervolume == load(store, "alpha", "beta").rows[1].hypervolume  # seeded
    md = to_markdown(against.document(c, []))
    assert "| hypervolume                     | 0.700 " in md
    assert "reference point accuracy 0, 1,000,000 parameters" in md
