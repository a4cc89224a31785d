"""services/controller/report/stats.py against published values and synthetic data."""

from __future__ import annotations

import numpy as np
import pytest

from services.controller.report.stats import (
    bootstrap_mean_difference,
    newcombe_difference,
    wilson,
    z_value,
)


def test_z_value() -> None:
    assert z_value(0.95) == pytest.approx(1.959964, abs=1e-6)
    with pytest.raises(ValueError):
        z_value(1.0)


def test_wilson_matches_newcombe_1998_single_proportions() -> None:
    # Newcombe (1998), "Two-sided confidence intervals for the single proportion", method 3.
    w = wilson(81, 263)
    assert (round(w.low, 4), round(w.high, 4)) == (0.2553, 0.3662)
    w = wilson(0, 20)
    assert (round(w.low, 4), round(w.high, 4)) == (0.0, 0.1611)


@pytest.mark.parametrize(
    ("a", "n_a", "b", "n_b", "low", "high"),
    [  # Newcombe (1998), Statistics in Medicine 17:873-890, Table II, method 10
        (56, 70, 48, 80, 0.0524, 0.3339),
        (9, 10, 3, 10, 0.1705, 0.8090),
        (6, 7, 2, 7, 0.0582, 0.8062),
        (5, 56, 0, 29, -0.0381, 0.1926),
        (0, 10, 0, 20, -0.1611, 0.2775),
        (10, 10, 0, 20, 0.6791, 1.0000),
    ],
)
def test_newcombe_matches_the_published_examples(
    a: int, n_a: int, b: int, n_b: int, low: float, high: float
) -> None:
    d = newcombe_difference(a, n_a, b, n_b)
    assert d.estimate == pytest.approx(a / n_a - b / n_b)
    assert (round(d.low, 4), round(d.high, 4)) == (low, high)


def test_significance_is_whether_the_interval_excludes_zero() -> None:
    assert newcombe_difference(56, 70, 48, 80).significant
    assert not newcombe_difference(5, 56, 0, 29).significant
    assert newcombe_difference(0, 20, 10, 10).significant  # negative side


def test_bad_counts_are_refused() -> None:
    with pytest.raises(ValueError):
        wilson(1, 0)
    with pytest.raises(ValueError):
        newcombe_difference(11, 10, 1, 10)
    with pytest.raises(ValueError):
        bootstrap_mean_difference([], [1.0])


def test_bootstrap_is_deterministic_with_its_seed() -> None:
    a, b = [0.8, 0.9, 0.7, 0.85, 0.95], [0.5, 0.6, 0.55, 0.7]
    first = bootstrap_mean_difference(a, b, resamples=2000, seed=7)
    assert first == bootstrap_mean_difference(a, b, resamples=2000, seed=7)
    assert first != bootstrap_mean_difference(a, b, resamples=2000, seed=8)
    assert first.estimate == pytest.approx(np.mean(a) - np.mean(b))
    assert first.low < first.estimate < first.high and first.significant


def test_bootstrap_covers_the_true_difference_on_synthetic_data() -> None:
    rng = np.random.default_rng(2026)
    covered = 0
    for trial in range(100):
        a = rng.normal(0.70, 0.1, size=60)
        b = rng.normal(0.65, 0.1, size=50)
        ci = bootstrap_mean_difference(a, b, resamples=1000, seed=trial)
        covered += ci.low <= 0.05 <= ci.high
    assert 88 <= covered <= 100  # nominal 95 %


def test_bootstrap_of_identical_samples_is_not_significant() -> None:
    same = [0.6, 0.7, 0.8, 0.65, 0.75] * 4
    ci = bootstrap_mean_difference(same, same)
    assert ci.estimate == 0 and not ci.significant
