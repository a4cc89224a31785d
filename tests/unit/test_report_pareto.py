"""The report's Pareto front and hypervolume (services/controller/report/pareto.py): hand-made
points with fronts and areas computed by hand, the reference point's effect, and the bootstrap
interval of a hypervolume difference (deterministic, around the estimate)."""

from __future__ import annotations

from math import log10

import pytest

from services.controller.report.pareto import (
    bootstrap_hypervolume_difference,
    hypervolume_2d,
    pareto_front,
    run_hypervolume,
)

# (accuracy ↑, cost ↓)
POINTS = [(0.5, 1.0), (0.8, 3.0), (0.9, 6.0), (0.7, 4.0), (0.4, 2.0), (0.9, 8.0)]


def test_front_drops_dominated_points_and_orders_by_cost() -> None:
    # (0.7, 4) is beaten by (0.8, 3); (0.4, 2) by (0.5, 1); (0.9, 8) by (0.9, 6).
    assert pareto_front(POINTS) == [(0.5, 1.0), (0.8, 3.0), (0.9, 6.0)]


def test_front_ties() -> None:
    assert pareto_front([(0.5, 2.0), (0.5, 2.0)]) == [(0.5, 2.0)]  # a duplicate once
    assert pareto_front([(0.5, 2.0), (0.6, 2.0)]) == [(0.6, 2.0)]  # same cost: the better
    assert pareto_front([(0.6, 3.0), (0.6, 2.0)]) == [(0.6, 2.0)]  # same accuracy: the cheaper
    assert pareto_front([]) == []


def test_hypervolume_by_hand() -> None:
    # Reference (0, 10): rectangles by accuracy band, each as wide as the cheapest point above:
    # 0.5 x (10 - 1) + (0.8 - 0.5) x (10 - 3) + (0.9 - 0.8) x (10 - 6) = 4.5 + 2.1 + 0.4.
    assert hypervolume_2d(pareto_front(POINTS), (0.0, 10.0)) == pytest.approx(7.0)
    assert hypervolume_2d(POINTS, (0.0, 10.0)) == pytest.approx(7.0)  # dominated add nothing
    assert hypervolume_2d([(0.5, 2.0)], (0.0, 4.0)) == pytest.approx(1.0)
    assert hypervolume_2d([], (0.0, 4.0)) == 0.0


def test_reference_point_moves_the_area() -> None:
    # A higher accuracy floor and a lower cost limit: 0.3 x 4 + 0.3 x (5 - 3) = 1.8 (the
    # point at cost 6 lies beyond the limit).
    assert hypervolume_2d(POINTS, (0.2, 5.0)) == pytest.approx(0.3 * 4 + 0.3 * 2)


def test_points_worse_than_the_reference_are_ignored() -> None:
    ref = (0.5, 5.0)
    assert hypervolume_2d([(0.4, 1.0), (0.9, 5.0), (0.9, 7.0), (0.5, 1.0)], ref) == 0.0
    assert hypervolume_2d([(0.4, 1.0), (0.7, 3.0), (0.9, 7.0)], ref) == pytest.approx(0.2 * 2)


def test_run_hypervolume_is_a_share_of_the_log_box() -> None:
    limit = 1_000_000  # log10: 6 decades
    assert run_hypervolume([(1.0, 1)], limit) == pytest.approx(1.0)
    assert run_hypervolume([(0.5, 1000)], limit) == pytest.approx(0.5 * 3 / 6)
    assert run_hypervolume([(0.9, limit), (0.0, 10)], limit) == 0.0
    both = run_hypervolume([(0.5, 1000), (0.8, 100_000)], limit)
    assert both == pytest.approx((0.5 * 3 + 0.3 * (6 - log10(100_000))) / 6)


def test_bootstrap_difference_is_seeded_and_brackets_the_estimate() -> None:
    a = [(0.9, 10_000), (0.8, 5_000), (0.6, 2_000), (0.95, 200_000)]
    b = [(0.7, 20_000), (0.5, 8_000), (0.9, 500_000)]
    first = bootstrap_hypervolume_difference(a, b, 1_000_000, resamples=2000, seed=3)
    again = bootstrap_hypervolume_difference(a, b, 1_000_000, resamples=2000, seed=3)
    assert first == again
    expected = run_hypervolume(a, 1_000_000) - run_hypervolume(b, 1_000_000)
    assert first.estimate == pytest.approx(expected)
    assert first.low <= first.high and first.low < expected + 1e-9
    same = bootstrap_hypervolume_difference(a, a, 1_000_000, resamples=500, seed=0)
    assert same.estimate == 0.0 and same.low <= 0.0 <= same.high
    with pytest.raises(ValueError):
        bootstrap_hypervolume_difference([], b, 1_000_000)
