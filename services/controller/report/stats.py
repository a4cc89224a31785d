"""Confidence intervals for comparing two samples (the report's baseline section): pure functions.

- :func:`wilson` — the Wilson score interval of one proportion.
- :func:`newcombe_difference` — the difference of two independent proportions with Newcombe's
  hybrid score interval (Newcombe 1998, "Interval estimation for the difference between
  independent proportions", Statistics in Medicine 17: 873-890, method 10): built from the two
  Wilson intervals; it stays inside [-1, 1] and behaves at 0 % and 100 %, where Wald fails.
- :func:`bootstrap_mean_difference` — the difference of two means with a percentile bootstrap
  interval (independent resampling of each sample; a fixed seed makes it reproducible).

A difference is significant at the interval's level when the interval excludes 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from math import sqrt
from statistics import NormalDist

import numpy as np


@dataclass(frozen=True)
class Interval:
    """An estimate with its confidence interval at ``level``."""

    estimate: float
    low: float
    high: float
    level: float = 0.95

    @property
    def significant(self) -> bool:
        """The interval excludes 0 (for a difference: the two differ at this level)."""
        return self.low > 0 or self.high < 0


def z_value(level: float) -> float:
    """The two-sided normal quantile for a confidence ``level`` (1.95996... for 0.95)."""
    if not 0 < level < 1:
        raise ValueError(f"confidence level {level!r} is not in (0, 1)")
    return NormalDist().inv_cdf(0.5 + level / 2)


def wilson(successes: int, n: int, level: float = 0.95) -> Interval:
    """The proportion ``successes / n`` with its Wilson score interval."""
    if n <= 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n > 0, got {successes}/{n}")
    z = z_value(level)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half), level)


def newcombe_difference(
    successes_a: int, n_a: int, successes_b: int, n_b: int, level: float = 0.95
) -> Interval:
    """``p_a - p_b`` for two independent samples with Newcombe's hybrid score interval."""
    a = wilson(successes_a, n_a, level)
    b = wilson(successes_b, n_b, level)
    d = a.estimate - b.estimate
    low = d - sqrt((a.estimate - a.low) ** 2 + (b.high - b.estimate) ** 2)
    high = d + sqrt((a.high - a.estimate) ** 2 + (b.estimate - b.low) ** 2)
    return Interval(d, max(-1.0, low), min(1.0, high), level)


def bootstrap_mean_difference(
    a: Sequence[float],
    b: Sequence[float],
    resamples: int = 10_000,
    seed: int = 0,
    level: float = 0.95,
) -> Interval:
    """``mean(a) - mean(b)`` with a percentile bootstrap interval: each sample is resampled
    with replacement ``resamples`` times (numpy's PCG64 seeded with ``seed``)."""
    if not len(a) or not len(b):
        raise ValueError("both samples need at least one value")
    if resamples < 1:
        raise ValueError(f"resamples must be positive, got {resamples}")
    xa, xb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    rng = np.random.default_rng(seed)
    means_a = xa[rng.integers(0, len(xa), size=(resamples, len(xa)))].mean(axis=1)
    means_b = xb[rng.integers(0, len(xb), size=(resamples, len(xb)))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means_a - means_b, [tail, 100 - tail])
    return Interval(float(xa.mean() - xb.mean()), float(low), float(high), level)
