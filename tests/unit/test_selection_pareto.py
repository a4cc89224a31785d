"""selection.objectives: [accuracy] is the paper's selection unchanged; [accuracy, parameters]
and [accuracy, macs] pick by non-dominated fronts and crowding distance, within the same
thresholds and limits."""

from __future__ import annotations

import hashlib
import json
import random

import pytest

from nasloop.records import CandidateRecord, Evaluation, NoveltyVerdict
from services.controller.loop.selection import select
from services.controller.runspec import SelectionSection, SpecError, load_spec, spec_from_proto
from services.controller.runspec import spec_to_proto as to_proto

PARETO = "selection.objectives=[accuracy, parameters]"


def rec(
    i: int, acc: float, params: int, novel: bool = True, status: str = "STATUS_OK", macs: int = 0
) -> CandidateRecord:
    return CandidateRecord(
        id=f"c{i}", run="r", cycle=1, index=i,
        evaluation=Evaluation(status=status, accuracy=acc, parameter_count=params, macs=macs),
        novelty=NoveltyVerdict(novel=novel, max_similarity=0.9, nearest_id="x"),
    )  # fmt: skip


def policy(*overrides: str) -> SelectionSection:
    return load_spec("local", overrides=[PARETO, *overrides]).selection


def reasons(rs: list[CandidateRecord]) -> dict[int, str]:
    return {r.index: r.selection_reason for r in rs}


def test_fronts_in_order_extremes_first_with_their_reasons() -> None:
    rs = [
        rec(0, 0.95, 5000), rec(1, 0.90, 1000), rec(2, 0.85, 500),  # front 1
        rec(3, 0.90, 3000), rec(4, 0.85, 2000),  # front 2: each beaten by 1 (and 4 by 2)
        rec(5, 0.80, 4000),  # front 3
        rec(6, 0.99, 10, novel=False), rec(7, 0.99, 10, status="STATUS_TIMEOUT"),
    ]  # fmt: skip
    chosen = select(rs, policy("selection.top_up_to=0"))
    assert [r.index for r in chosen] == [0, 2, 1, 3, 4, 5]  # in front 1, 1 is the crowded one
    assert reasons(rs) == {
        0: "novel, accuracy ≥ 0.8, front 1 of 3",
        1: "novel, accuracy ≥ 0.8, front 1 of 3",
        2: "novel, accuracy ≥ 0.8, front 1 of 3",
        3: "novel, accuracy ≥ 0.8, front 2 of 3",
        4: "novel, accuracy ≥ 0.8, front 2 of 3",
        5: "novel, accuracy ≥ 0.8, front 3 of 3",
        6: "not novel: 0.90 similar to x",
        7: "invalid: STATUS_TIMEOUT",
    }
    assert [r.selected for r in rs] == [True] * 6 + [False] * 2


# One front of five (accuracy falls as parameters fall) and one behind it. Crowding distances:
# 0 and 4 are the extremes, then 2 (1.73), 1 (1.16), 3 (0.84).
FRONT = [(0.99, 10000), (0.98, 9000), (0.90, 5000), (0.85, 1200), (0.84, 1000), (0.83, 11000)]


@pytest.mark.parametrize(
    ("cap", "kept"), [(4, [0, 4, 2, 1]), (3, [0, 4, 2]), (2, [0, 4]), (6, [0, 4, 2, 1, 3, 5])]
)
def test_the_cap_cuts_the_last_front_that_does_not_fit_where_it_is_crowded(
    cap: int, kept: list[int]
) -> None:
    rs = [rec(i, a, p) for i, (a, p) in enumerate(FRONT)]
    chosen = select(rs, policy(f"selection.max_per_cycle={cap}"))
    assert [r.index for r in chosen] == kept
    why = reasons(rs)
    for i in range(6):
        if i in kept:
            assert why[i] == f"novel, accuracy ≥ 0.8, front {1 + (i == 5)} of 2"
        elif i < 5:
            assert why[i] == f"cap: {cap} pairs per cycle, crowded out in front 1 of 2"
        else:
            assert why[i] == f"cap: {cap} pairs per cycle, front 2 of 2"


def test_top_up_takes_the_top_up_pool_by_its_own_fronts() -> None:
    rs = [
        rec(0, 0.90, 1000), rec(1, 0.85, 500),  # above 0.8: both taken, 2 short of 4
        # top-up pool (0.3 ≤ accuracy < 0.8): front 1 is 10, 11, 13, 14 (extremes 11 and 13)
        rec(10, 0.70, 100), rec(11, 0.60, 50), rec(12, 0.50, 5000), rec(13, 0.75, 20000),
        rec(14, 0.65, 80),
        rec(20, 0.10, 1),  # below both thresholds
    ]  # fmt: skip
    chosen = select(rs, policy("selection.top_up_to=4"))
    assert [r.index for r in chosen] == [0, 1, 11, 13]
    assert reasons(rs) == {
        0: "novel, accuracy ≥ 0.8, front 1 of 1",
        1: "novel, accuracy ≥ 0.8, front 1 of 1",
        11: "top-up: novel, accuracy ≥ 0.3, top-up front 1 of 2",
        13: "top-up: novel, accuracy ≥ 0.3, top-up front 1 of 2",
        10: "top-up: 4 reached, crowded out in top-up front 1 of 2",
        14: "top-up: 4 reached, crowded out in top-up front 1 of 2",
        12: "top-up: 4 reached, top-up front 2 of 2",
        20: "novel, accuracy below the thresholds",
    }
    # No top-up when the first pool fills top_up_to; the cap reaches into the top-ups.
    select(rs, policy("selection.top_up_to=2"))
    assert reasons(rs)[11] == "novel, accuracy below the thresholds"
    chosen = select(rs, policy("selection.top_up_to=4", "selection.max_per_cycle=3"))
    assert [r.index for r in chosen] == [0, 1, 11]
    assert reasons(rs)[13] == "cap: 3 pairs per cycle, crowded out in top-up front 1 of 2"


def test_ties_go_by_index_whatever_the_order_given() -> None:
    rs = [rec(i, 0.9, 1000) for i in (5, 3, 9, 1)] + [rec(7, 0.95, 2000)]
    # One front; the extremes: 7, and the first and last of the four ties by index (1 and 9).
    chosen = select(rs, policy("selection.max_per_cycle=3"))
    assert [r.index for r in chosen] == [1, 7, 9]
    assert reasons(rs)[3] == "cap: 3 pairs per cycle, crowded out in front 1 of 1"
    before = reasons(rs)
    random.Random(0).shuffle(rs)
    assert [r.index for r in select(rs, policy("selection.max_per_cycle=3"))] == [1, 7, 9]
    assert reasons(rs) == before


# -- [accuracy] is today's selection -----------------------------------------------------------
POLICIES = [
    ("local", []),
    ("paper", []),
    ("local", ["selection.max_per_cycle=3"]),
    ("paper", ["selection.max_per_cycle=5"]),
    ("local", ["selection.top_up_to=0"]),
    ("local", ["selection.top_up_to=30", "selection.top_up_min_accuracy=0"]),
]


def varied(seed: int) -> list[CandidateRecord]:
    """60 records of every kind: not evaluated, invalid, not novel, tied accuracies."""
    rng = random.Random(seed)
    out = []
    for i in rng.sample(range(200), 60):
        status = rng.choice(["STATUS_OK"] * 5 + ["STATUS_INIT_EXCEPTION", "STATUS_TIMEOUT"])
        ev = (
            None
            if rng.random() < 0.05
            else Evaluation(
                status=status,
                accuracy=round(rng.random() * 20) / 20,
                parameter_count=rng.randrange(1000, 10**6),
            )
        )
        nv = (
            None
            if rng.random() < 0.05
            else NoveltyVerdict(
                novel=rng.random() < 0.8,
                max_similarity=rng.random(),
                nearest_id=rng.choice(["", "corpus-3"]),
            )
        )
        out.append(
            CandidateRecord(id=f"c{i}", run="r", cycle=1, index=i, evaluation=ev, novelty=nv)
        )
    return out


def test_accuracy_alone_selects_exactly_as_before() -> None:
    results = []
    for preset, overrides in POLICIES:
        p = load_spec(preset, overrides=overrides).selection
        assert p.objectives == ["accuracy"]  # the presets' default
        for seed in range(3):
            rs = varied(seed)
            chosen = select(rs, p)
            results.append(
                ([r.index for r in chosen], [(r.index, r.selected, r.selection_reason) for r in rs])
            )
    assert results[0][0] == [98, 113, 194, 126, 143, 114, 195, 0]
    assert results[6][0] == [98, 113, 194]
    # The same records through selection.py as it was before objectives (commit b5ea4d0).
    digest = hashlib.sha256(json.dumps(results, ensure_ascii=False).encode()).hexdigest()
    assert digest == "3274af63485217808b18f96d245c16bc58a3a1e6c551544312dd5f052397b281"


# -- [accuracy, macs] ----------------------------------------------------------------------------
MACS = "selection.objectives=[accuracy, macs]"


def test_macs_ranks_as_parameters_do_with_macs_in_their_place() -> None:
    # The parameters say the opposite of the macs: the fronts follow the macs.
    rs = [rec(i, a, 10**6 - p, macs=p) for i, (a, p) in enumerate(FRONT)]
    chosen = select(rs, policy(MACS, "selection.max_per_cycle=4"))
    assert [r.index for r in chosen] == [0, 4, 2, 1]
    assert reasons(rs)[3] == "cap: 4 pairs per cycle, crowded out in front 1 of 2"
    assert reasons(rs)[5] == "cap: 4 pairs per cycle, front 2 of 2"
    by_params = [rec(i, a, p, macs=10**6 - p) for i, (a, p) in enumerate(FRONT)]
    assert [r.index for r in select(by_params, policy("selection.max_per_cycle=4"))] == [0, 4, 2, 1]


def test_unmeasured_macs_count_as_the_pools_largest_and_say_so() -> None:
    rs = [
        rec(0, 0.95, 100, macs=5000), rec(1, 0.90, 100, macs=1000),
        rec(2, 0.90, 100),  # not measured: as if 5000, so 1 (0.90, 1000) dominates it
        rec(3, 0.99, 100),  # not measured: as if 5000, beside 0 (0.95, 5000) it still leads
    ]  # fmt: skip
    chosen = select(rs, policy(MACS, "selection.top_up_to=0"))
    assert [r.index for r in chosen] == [1, 3, 0, 2]
    assert reasons(rs) == {
        0: "novel, accuracy ≥ 0.8, front 2 of 3",
        1: "novel, accuracy ≥ 0.8, front 1 of 3",
        2: "novel, accuracy ≥ 0.8, front 3 of 3, macs not measured",
        3: "novel, accuracy ≥ 0.8, front 1 of 3, macs not measured",
    }
    # A record without macs never wins by them: at the same accuracy it is never better.
    chosen = select(rs, policy(MACS, "selection.top_up_to=0", "selection.max_per_cycle=2"))
    assert [r.index for r in chosen] == [1, 3]
    assert reasons(rs)[2] == "cap: 2 pairs per cycle, front 3 of 3, macs not measured"
    # No record of the pool has macs (records older than the field): by accuracy alone.
    old = [rec(i, a, p) for i, (a, p) in enumerate(FRONT)]
    assert [r.index for r in select(old, policy(MACS))] == [0, 1, 2, 3, 4, 5]
    assert reasons(old)[5] == "novel, accuracy ≥ 0.8, front 6 of 6, macs not measured"


# -- the run spec ------------------------------------------------------------------------------
def test_the_spec_accepts_the_three_forms_and_carries_them_in_the_proto() -> None:
    assert load_spec("paper").selection.objectives == ["accuracy"]
    for override, objectives in (
        (PARETO, ["accuracy", "parameters"]),
        (MACS, ["accuracy", "macs"]),
    ):
        s = load_spec("local", overrides=[override])
        assert s.selection.objectives == objectives
        assert list(to_proto(s).selection.objectives) == objectives
        assert load_spec(extra=spec_from_proto(to_proto(s))) == s
    y = load_spec(spec_yaml="selection: {objectives: [accuracy]}")
    assert y == load_spec() and load_spec(extra=spec_from_proto(to_proto(y))) == y


EXPECTED = "expected [accuracy], [accuracy, parameters] or [accuracy, macs]"
KNOWN = "known: accuracy, parameters, macs"


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("[accuracy, latency]", f"unknown objective 'latency'; {KNOWN}"),
        ("[latency]", f"unknown objective 'latency'; {KNOWN}"),
        ("[parameters]", f"{EXPECTED}, got ['parameters']"),
        ("[macs, accuracy]", EXPECTED),
        ("[accuracy, parameters, macs]", EXPECTED),
        ("[accuracy, accuracy]", EXPECTED),
        ("[]", f"{EXPECTED}, got []"),
        ("accuracy", "Input should be a valid list"),
    ],
)
def test_the_spec_refuses_other_objectives(value: str, why: str) -> None:
    with pytest.raises(SpecError) as e:
        load_spec("local", overrides=[f"selection.objectives={value}"])
    assert f"selection.objectives: {why}" in str(e.value)
