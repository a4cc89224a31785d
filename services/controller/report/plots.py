"""The report's plots, one PNG per question, drawn with matplotlib's object API (Agg canvas;
no pyplot, so no global state and no display needed). Every plot has one bar or point per
finished cycle.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from functools import partial
from itertools import accumulate, pairwise
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

from nasloop.v1 import common_pb2 as common
from services.controller.loop.archive import Archive
from services.controller.loop.cycle import CYCLE_STEPS
from services.controller.loop.summary import CycleSummary
from services.controller.report.document import Figure as FigureBlock
from services.controller.report.pareto import pareto_front
from services.controller.report.stats import Interval

VALID_COLOR = "#2da44e"
# Colours of the stopped-at slices and of the steps (a qualitative palette without green).
PALETTE = (
    "#cf222e", "#fb8f44", "#d4a72c", "#8250df", "#0969da", "#bf3989", "#57606a", "#1b7c83",
    "#a0a0a0",
)  # fmt: skip
STEP_COLORS = ("#0969da", "#1b7c83", "#57606a", "#fb8f44", "#8250df", "#bf3989", "#d4a72c")
MAX_STOPPED_KINDS = 8  # more stage/status kinds than this: the rarest share one "other" slice
DPI = 110
PARETO_FILE = "pareto.png"
ARCHIVE_FILE = "archive.png"


def short(name: str) -> str:
    """``STAGE_IMPORTED`` → ``imported``; ``STATUS_INIT_EXCEPTION`` → ``init exception``."""
    for prefix in ("STAGE_", "STATUS_"):
        name = name.removeprefix(prefix)
    return name.lower().replace("_", " ")


def stopped_label(key: str) -> str:
    """A ``STAGE/STATUS`` key of :attr:`CycleSummary.stopped` as a legend label."""
    stage, _, status = key.partition("/")
    return f"{short(stage)}: {short(status)}"


def _stage_order(key: str) -> tuple[int, str]:
    stage = key.partition("/")[0]
    try:
        return common.Stage.Value(stage), key
    except ValueError:
        return -1, key


def _new(title: str, ylabel: str, cycles: Sequence[CycleSummary]) -> tuple[Figure, Axes]:
    fig = Figure(figsize=(6.4, 3.8), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(title)
    ax.set_xlabel("cycle")
    ax.set_ylabel(ylabel)
    ax.set_xticks([s.cycle for s in cycles])
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    return fig, ax


def _stopped(kind: str, s: CycleSummary) -> int:
    return s.stopped.get(kind, 0)


def validity(cycles: Sequence[CycleSummary], baseline_mean: float | None) -> Figure:
    fig, ax = _new("Valid rate and where the rest stopped", "% of generated answers", cycles)
    x = [s.cycle for s in cycles]
    totals = Counter[str]()
    for s in cycles:
        totals.update(s.stopped)
    kinds = sorted(totals, key=_stage_order)
    if len(kinds) > MAX_STOPPED_KINDS:
        keep = {k for k, _ in totals.most_common(MAX_STOPPED_KINDS - 1)}
        kinds = [k for k in kinds if k in keep]
    valid = [100 * s.valid_rate for s in cycles]
    bars = ax.bar(x, valid, color=VALID_COLOR, label="valid")
    ax.bar_label(bars, fmt="%.0f %%", label_type="center", color="white", fontsize=8)
    bottom = valid
    slices: list[tuple[str, Callable[[CycleSummary], int]]] = [
        (stopped_label(k), partial(_stopped, k)) for k in kinds
    ]
    if len(kinds) < len(totals):
        slices.append(("other", lambda s: sum(n for k, n in s.stopped.items() if k not in kinds)))
    for (label, count), color in zip(slices, PALETTE, strict=False):
        heights = [100 * count(s) / s.generated if s.generated else 0 for s in cycles]
        ax.bar(x, heights, bottom=bottom, color=color, label=label)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), title="stopped at")
    return fig


def accuracy(cycles: Sequence[CycleSummary], baseline_mean: float | None) -> Figure:
    fig, ax = _new("First-epoch accuracy of valid candidates", "accuracy", cycles)
    x = [s.cycle for s in cycles]
    ax.plot(x, [s.mean_accuracy for s in cycles], "o-", label="mean")
    ax.plot(x, [s.best_accuracy for s in cycles], "s-", label="best")
    threshold = cycles[-1].threshold
    ax.axhline(threshold, color="grey", ls="--", lw=1, label=f"threshold {threshold:g}")
    if baseline_mean is not None:
        ax.axhline(baseline_mean, color="black", ls=":", lw=1, label="baseline mean")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8, loc="lower right")
    return fig


def share_above(cycles: Sequence[CycleSummary], baseline_mean: float | None) -> Figure:
    threshold = cycles[-1].threshold
    fig, ax = _new(
        f"Valid candidates with accuracy ≥ {threshold:g}", "% of valid candidates", cycles
    )
    bars = ax.bar([s.cycle for s in cycles], [100 * s.share_above_threshold for s in cycles])
    ax.bar_label(bars, fmt="%.0f %%", fontsize=8)
    ax.set_ylim(0, 110)
    return fig


def novel_selected(cycles: Sequence[CycleSummary], baseline_mean: float | None) -> Figure:
    fig, ax = _new("Novel and selected candidates", "candidates", cycles)
    x = [s.cycle for s in cycles]
    novel = ax.bar([c - 0.2 for c in x], [s.novel for s in cycles], width=0.4, label="novel")
    chosen = ax.bar([c + 0.2 for c in x], [s.selected for s in cycles], width=0.4)
    chosen.set_label("selected (training pairs)")
    for bars in (novel, chosen):
        ax.bar_label(bars, fontsize=8)
    ax.margins(y=0.3)
    ax.legend(fontsize=8, loc="upper left", ncols=2)
    return fig


def distinct(cycles: Sequence[CycleSummary], baseline_mean: float | None) -> Figure:
    fig, ax = _new("Distinct answers (distinct codes / generated)", "% of generated", cycles)
    rates = [100 * s.distinct / s.generated if s.generated else 0 for s in cycles]
    ax.plot([s.cycle for s in cycles], rates, "o-")
    ax.set_ylim(0, 105)
    return fig


def novel_good(cycles: Sequence[CycleSummary], baseline_mean: float | None) -> Figure:
    threshold = cycles[-1].threshold
    fig, ax = _new(
        f"Novel good architectures (novel, accuracy ≥ {threshold:g}), cumulative",
        "architectures",
        cycles,
    )
    x = [s.cycle for s in cycles]
    total = list(accumulate(s.novel_good for s in cycles))
    ax.plot(x, total, "o-", color=VALID_COLOR)
    for cx, n in zip(x, total, strict=True):
        ax.annotate(str(n), (cx, n), textcoords="offset points", xytext=(0, 6), ha="center")
    ax.set_ylim(0, max(total, default=0) * 1.2 + 1)
    return fig


def time_per_step(cycles: Sequence[CycleSummary], baseline_mean: float | None) -> Figure:
    fig, ax = _new("Time per step", "seconds", cycles)
    x = [s.cycle for s in cycles]
    bottom = [0.0] * len(cycles)
    names = CYCLE_STEPS.names
    steps = [step for step in names if any(s.seconds.get(step) for s in cycles)]
    steps += sorted({k for s in cycles for k in s.seconds} - set(names))
    for step, color in zip(steps, STEP_COLORS + PALETTE, strict=False):
        heights = [s.seconds.get(step, 0.0) for s in cycles]
        ax.bar(x, heights, bottom=bottom, color=color, label=step.replace("_", "-"))
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), title="step")
    return fig


Plot = Callable[[Sequence[CycleSummary], float | None], Figure]
PLOTS: tuple[tuple[str, str, Plot], ...] = (
    ("validity.png", "Valid rate per cycle, and where the other answers stopped", validity),
    ("accuracy.png", "Mean and best first-epoch accuracy of the valid candidates", accuracy),
    ("share-above-threshold.png", "Share of valid candidates at or above the threshold",
     share_above),
    ("novel-selected.png", "Novel and selected candidates per cycle", novel_selected),
    ("distinct.png", "Distinct-answer rate: distinct extracted codes / generated", distinct),
    ("novel-good.png", "Cumulative count of novel good architectures", novel_good),
    ("time.png", "Seconds per step of each cycle (generation and evaluation overlap: one step)",
     time_per_step),
)  # fmt: skip


def write_plots(
    cycles: Sequence[CycleSummary], folder: Path, baseline_mean: float | None = None
) -> list[FigureBlock]:
    """Every plot as ``folder/<name>.png``; the figures for the report, in order."""
    if not cycles:
        return []
    out = []
    for file, caption, draw in PLOTS:
        draw(cycles, baseline_mean).savefig(folder / file, format="png")
        out.append(FigureBlock(file, caption))
    return out


def difference(title: str, labels: Sequence[str], diffs: Sequence[Interval | None]) -> Figure:
    """One metric of two runs: the difference A - B per cycle (and over the run) with its 95 %
    interval as an error bar; a point without one (a side had nothing to compare) is left out."""
    fig = Figure(figsize=(6.4, 3.8), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(f"{title}: A - B (95 % CI)")
    ax.set_xlabel("cycle")
    ax.set_ylabel("points (accuracy: hundredths)")
    ax.grid(axis="y", alpha=0.3)
    ax.axhline(0, color="grey", lw=1)
    shown = [(x, d) for x, d in enumerate(diffs) if d is not None]
    for x, d in shown:
        color = VALID_COLOR if d.significant else PALETTE[6]
        below, above = 100 * (d.estimate - d.low), 100 * (d.high - d.estimate)
        ax.errorbar(x, 100 * d.estimate, yerr=[[below], [above]], fmt="o", capsize=4, color=color)
    ax.set_xticks(range(len(labels)), list(labels))
    ax.set_xlim(-0.5, len(labels) - 0.5)
    return fig


def write_difference_plots(
    labels: Sequence[str],
    metrics: Sequence[tuple[str, str, Sequence[Interval | None]]],
    folder: Path,
) -> list[FigureBlock]:
    """One PNG per metric (its file name, title and differences by label); the figures."""
    if not labels:
        return []
    out = []
    for file, title, diffs in metrics:
        difference(title, labels, diffs).savefig(folder / file, format="png")
        caption = f"{title}: A - B per cycle and over the run (green: significant at 95 %)"
        out.append(FigureBlock(file, caption))
    return out


Points = Sequence[tuple[float, int]]  # (accuracy, parameters) of valid candidates


def _draw_front(
    ax: Axes, points: Points, max_parameters: int, color: str, marker: str, label: str, ls: str
) -> None:
    """A front as a staircase (from each point right to the next one's parameters, the last to
    the limit) with a marker on each of its points."""
    front = pareto_front(points)
    if not front:
        return
    xs, ys = [p for _, p in front], [a for a, _ in front]
    ax.step([*xs, max_parameters], [*ys, ys[-1]], where="post", color=color, ls=ls, label=label)
    ax.plot(xs, ys, ls="none", color=color, marker=marker, ms=4)


def pareto(
    cycles: Sequence[tuple[str, Points]], baseline: Points | None, max_parameters: int
) -> Figure:
    """Each cycle's (accuracy, parameters) front of valid candidates (a colour per cycle, its
    candidates as faint points) and the baseline's front (black, dashed)."""
    fig = Figure(figsize=(6.4, 4.2), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    ax.set_title("Pareto front per cycle: accuracy against parameters")
    ax.set_xlabel("parameters (log scale; fewer is better)")
    ax.set_ylabel("first-epoch accuracy")
    ax.set_xscale("log")
    ax.grid(alpha=0.3, which="both")
    ax.set_axisbelow(True)
    cmap = colormaps["viridis"]
    for i, (label, points) in enumerate(cycles):
        color = to_hex(cmap(i / max(1, len(cycles) - 1) * 0.9))
        if points:
            ax.scatter([p for _, p in points], [a for a, _ in points], s=8, color=color, alpha=0.25)
        _draw_front(ax, points, max_parameters, color, "o", label, "-")
    if baseline:
        _draw_front(ax, baseline, max_parameters, "black", "x", "baseline", "--")
    ax.axvline(max_parameters, color="grey", ls=":", lw=1, label="max_parameters")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), title="front")
    return fig


def write_pareto(
    cycles: Sequence[tuple[str, Points]],
    baseline: Points | None,
    max_parameters: int,
    folder: Path,
) -> list[FigureBlock]:
    """``folder/pareto.png`` (:func:`pareto`); its figure, none without a finished cycle."""
    if not cycles:
        return []
    pareto(cycles, baseline, max_parameters).savefig(folder / PARETO_FILE, format="png")
    caption = (
        "Each cycle's Pareto front of valid candidates (accuracy against parameters), "
        "and the baseline's"
    )
    return [FigureBlock(PARETO_FILE, caption)]


def _bin_labels(edges: Sequence[float], below: str) -> list[str]:
    """A label per bin of :class:`Cells` edges (bin k: from edge k-1 up to edge k): ``below``
    for bin 0, ``[a, b)`` between edges, ``≥ last`` for the last."""
    inner = [f"[{lo:g}, {hi:g})" for lo, hi in pairwise(edges)]
    return [below, *inner, f"≥ {edges[-1]:g}"]


def archive_map(archive: Archive) -> Figure:
    """The archive's map: a cell per (log10 parameters, depth) bin, coloured by its elite's
    accuracy, blank when empty, with its entry count written in it."""
    cells = archive.cells
    groups = archive.by_cell()
    shape = (len(cells.depth_bins) + 1, len(cells.parameter_bins) + 1)
    accuracy = np.ma.masked_all(shape)
    for (p, d), elite in zip(groups, archive.elites(), strict=True):
        accuracy[d, p] = elite.accuracy
    fig = Figure(figsize=(7.6, 4.4), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    cmap = colormaps["viridis"].with_extremes(bad="white")
    image = ax.imshow(accuracy, origin="lower", cmap=cmap, vmin=0, vmax=1, aspect="auto")
    for (p, d), group in groups.items():
        light = accuracy[d, p] > 0.6  # viridis turns yellow-green: dark text there
        ax.text(p, d, str(len(group)), ha="center", va="center", fontsize=8,
                color="black" if light else "white")  # fmt: skip
    x_labels = _bin_labels(cells.parameter_bins, f"< {cells.parameter_bins[0]:g}")
    first = cells.depth_bins[0]
    y_labels = _bin_labels(cells.depth_bins, f"< {first:g}" + " (not measured)" * (first == 1))
    ax.set_xticks(range(shape[1]), x_labels, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(shape[0]), y_labels, fontsize=7)
    ax.set_xticks(np.arange(shape[1] + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(shape[0] + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="#d0d7de", lw=0.5)
    ax.tick_params(which="minor", length=0)
    ax.set_xlabel("log10(parameters)")
    ax.set_ylabel("depth (modules with parameters)")
    ax.set_title(
        f"Archive: {len(archive.entries)} valid candidates in {len(groups)} cells "
        f"(elite by {', '.join(archive.objectives)})"
    )
    fig.colorbar(image, ax=ax, label="elite's accuracy", fraction=0.04)
    return fig


def write_archive(archive: Archive, folder: Path) -> list[FigureBlock]:
    """``folder/archive.png`` (:func:`archive_map`); its figure, none for an empty archive."""
    if not archive.entries:
        return []
    archive_map(archive).savefig(folder / ARCHIVE_FILE, format="png")
    caption = (
        "The run's archive (every valid candidate of its finished cycles) as a MAP-Elites map: "
        "log10(parameters) by depth, each cell coloured by its elite's accuracy and labelled "
        "with its number of candidates; blank cells are empty"
    )
    return [FigureBlock(ARCHIVE_FILE, caption)]
