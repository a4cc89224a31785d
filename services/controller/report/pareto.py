"""The (accuracy ↑, parameters ↓) Pareto front of a set of candidates and its hypervolume:
pure functions, plain numpy, exact in two dimensions.

The report's hypervolume is measured on (accuracy, log10 parameters) with the reference point
(accuracy 0, parameters = the protocol's ``max_parameters``) and divided by
``log10(max_parameters)``: the share of the box accuracy [0, 1] by parameters [1,
max_parameters] (log scale) that the candidates dominate, 0 to 1. A candidate at accuracy 0 or
at the parameter limit adds nothing. See :func:`run_hypervolume`.

- :func:`pareto_front` — the non-dominated points, by increasing cost.
- :func:`hypervolume_2d` — the area dominated by points (maximise the first value, minimise
  the second) up to a reference point; points no better than the reference add nothing.
- :func:`bootstrap_hypervolume_difference` — ``hv(a) - hv(b)`` with a percentile bootstrap
  interval (each side's candidates resampled with replacement; seeded, deterministic).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from math import log10

import numpy as np
from numpy.typing import NDArray

from nasloop.records import CandidateRecord
from services.controller.report.stats import Interval

Point = tuple[float, float]  # (accuracy: higher is better, cost: lower is better)


def pareto_front(points: Iterable[Point]) -> list[Point]:
    """The points no other point dominates (at least as accurate and at most as costly, better
    in one), once each, by increasing cost (and so increasing accuracy)."""
    front: list[Point] = []
    # By cost, the more accurate first at equal cost: a point is on the front when it is more
    # accurate than every cheaper (or equally cheap) one kept before it.
    for acc, cost in sorted(set(points), key=lambda p: (p[1], -p[0])):
        if not front or acc > front[-1][0]:
            front.append((acc, cost))
    return front


def hypervolumes(
    accuracy: NDArray[np.float64], cost: NDArray[np.float64], ref: Point
) -> NDArray[np.float64]:
    """The hypervolume of each row of points (``accuracy`` and ``cost`` of shape (rows, n)):
    sorted by cost, each point's best accuracy so far (above the reference's) times the cost up
    to the next point (or the reference's cost)."""
    ref_acc, ref_cost = ref
    gain = np.clip(accuracy - ref_acc, 0.0, None)
    cost = np.minimum(cost, ref_cost)  # at or beyond the reference: no width
    order = np.argsort(cost, axis=1, kind="stable")
    cost = np.take_along_axis(cost, order, axis=1)
    best = np.maximum.accumulate(np.take_along_axis(gain, order, axis=1), axis=1)
    edges = np.concatenate([cost, np.full((cost.shape[0], 1), ref_cost)], axis=1)
    return (best * np.diff(edges, axis=1)).sum(axis=1)


def hypervolume_2d(points: Sequence[Point], ref: Point) -> float:
    """The area dominated by ``points`` (a front or any points) and bounded by ``ref``
    (accuracy, cost): points with accuracy ≤ ref's or cost ≥ ref's add nothing."""
    if not points:
        return 0.0
    xs = np.asarray(points, dtype=float)
    return float(hypervolumes(xs[None, :, 0], xs[None, :, 1], ref)[0])


# -- the report's objectives --------------------------------------------------------------------
def candidate_points(records: Iterable[CandidateRecord]) -> list[tuple[float, int]]:
    """(accuracy, parameters) of the valid candidates (parameters at least 1)."""
    return [
        (r.accuracy, max(1, r.evaluation.parameter_count))
        for r in records
        if r.valid and r.evaluation is not None
    ]


def _log_points(points: Sequence[tuple[float, int]]) -> NDArray[np.float64]:
    return np.asarray([(acc, log10(p)) for acc, p in points], dtype=float).reshape(-1, 2)


def _scale(max_parameters: int) -> float:
    return log10(max_parameters) if max_parameters > 1 else 1.0


def run_hypervolume(points: Sequence[tuple[float, int]], max_parameters: int) -> float:
    """The report's hypervolume of (accuracy, parameters) points: on (accuracy, log10
    parameters), reference (0, log10 max_parameters), divided by log10 max_parameters (0 to 1)."""
    xs = _log_points(points)
    ref = (0.0, log10(max(max_parameters, 1)))
    return hypervolume_2d([(a, c) for a, c in xs], ref) / _scale(max_parameters)


def bootstrap_hypervolume_difference(
    a: Sequence[tuple[float, int]],
    b: Sequence[tuple[float, int]],
    max_parameters: int,
    resamples: int = 10_000,
    seed: int = 0,
    level: float = 0.95,
) -> Interval:
    """``run_hypervolume(a) - run_hypervolume(b)`` with a percentile bootstrap interval: each
    side's points resampled with replacement ``resamples`` times (numpy's PCG64 seeded with
    ``seed``), the hypervolume recomputed for each resample. A resample holds only some of
    its sample's points, so its hypervolume is at most the sample's: each side's resampled
    hypervolumes lean low, which the difference partly cancels; the estimate can lie near an
    end of the interval."""
    if not len(a) or not len(b):
        raise ValueError("both samples need at least one point")
    if resamples < 1:
        raise ValueError(f"resamples must be positive, got {resamples}")
    ref = (0.0, log10(max(max_parameters, 1)))
    rng = np.random.default_rng(seed)
    sides = []
    for points in (a, b):
        xs = _log_points(points)
        idx = rng.integers(0, len(xs), size=(resamples, len(xs)))
        sides.append(hypervolumes(xs[idx, 0], xs[idx, 1], ref) / _scale(max_parameters))
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(sides[0] - sides[1], [tail, 100 - tail])
    estimate = run_hypervolume(a, max_parameters) - run_hypervolume(b, max_parameters)
    return Interval(estimate, float(low), float(high), level)
