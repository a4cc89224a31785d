"""Two runs side by side (``nasloop report A --against B``), from their records alone.

For every cycle both runs finished, and over those cycles together, it compares A with B
(differences are A minus B, with 95 % intervals):

- the valid rate (valid / generated): Newcombe's hybrid score interval;
- the mean accuracy of valid candidates: percentile bootstrap (the run report's settings);
- the novel good count (valid, novel, accuracy ≥ A's ``selection.min_accuracy``), compared as
  its share of the generated answers: Newcombe's interval;
- the hypervolume of the valid candidates' (accuracy, parameters) front (``pareto``: log10
  parameters, reference point accuracy 0 and A's ``protocol.max_parameters``, 0 to 1):
  percentile bootstrap, each run's valid candidates resampled and the hypervolume recomputed;
- when either run has candidates with a parent: the share of them that beat their parent
  (``parents``), each side with its Wilson interval, the difference with Newcombe's.

It names both runs, lists the fields where their specs differ (the setting being judged) and
says when their seeds differ (then the two runs did not answer the same prompts with the same
samples). It writes, into one folder, ``report.md``, ``report.html`` and one PNG per metric.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nasloop.records import CandidateRecord
from services.controller.loop import state as st
from services.controller.loop.summary import CycleSummary, summarize
from services.controller.report import document as doc
from services.controller.report.build import (
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    RunReport,
    interval_text,
    mean_accuracy_difference,
    rate_difference,
    share_text,
    verdict,
    write_document,
)
from services.controller.report.parents import ParentTally, by_id, has_parents, tally
from services.controller.report.pareto import (
    bootstrap_hypervolume_difference,
    candidate_points,
    run_hypervolume,
)
from services.controller.report.stats import Interval

RUN_ROW = "run"  # the label of the row over all compared cycles
NEWCOMBE = "Newcombe's hybrid score interval"
BOOTSTRAP = f"percentile bootstrap, {BOOTSTRAP_RESAMPLES:,} resamples, seed {BOOTSTRAP_SEED}"
BOOTSTRAP_HV = f"{BOOTSTRAP}, the valid candidates of each run resampled"


@dataclass(frozen=True)
class Row:
    """One cycle (or the run, ``label`` = ``run``) of both runs and their differences."""

    label: str
    a: CycleSummary
    b: CycleSummary
    valid_rate: Interval | None
    mean_accuracy: Interval | None
    novel_good: Interval | None  # difference of the novel good share of generated answers
    hypervolumes: tuple[float | None, float | None]  # A's and B's; None without valid ones
    hypervolume: Interval | None  # bootstrap interval of A's minus B's
    children: tuple[ParentTally, ParentTally]  # A's and B's candidates with a parent
    beats_parent: Interval | None  # difference of the share of children that beat their parent


@dataclass(frozen=True)
class Against:
    a: RunReport
    b: RunReport
    threshold: float  # A's selection.min_accuracy, applied to both runs
    max_parameters: int  # A's protocol.max_parameters: both runs' hypervolume reference
    rows: list[Row]  # one per cycle both finished, then the run
    spec_diff: list[tuple[str, str, str]]  # (dotted field, A's value, B's value)
    seeds: tuple[int, int]
    parents: bool = False  # some candidate of either run had a parent: child beats parent shown


def _flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, Mapping) and value:
        for key, inner in value.items():
            yield from _flatten(inner, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, value


def spec_differences(a_yaml: str, b_yaml: str) -> list[tuple[str, str, str]]:
    """The fields where two run specs differ, by dotted path (the runs' names left out);
    a field only one spec has shows ``-`` for the other."""
    a = dict(_flatten(yaml.safe_load(a_yaml)))
    b = dict(_flatten(yaml.safe_load(b_yaml)))
    missing = object()
    out = []
    for key in [*a, *(k for k in b if k not in a)]:
        va, vb = a.get(key, missing), b.get(key, missing)
        if key != "name" and va != vb:
            out.append((key, "-" if va is missing else str(va), "-" if vb is missing else str(vb)))
    return out


def _hypervolume(points: Sequence[tuple[float, int]], max_parameters: int) -> float | None:
    return run_hypervolume(points, max_parameters) if points else None


def compare_records(
    label: str,
    a: Sequence[CandidateRecord],
    b: Sequence[CandidateRecord],
    runs: tuple[str, str],
    threshold: float,
    max_parameters: int,
    run_records: tuple[Mapping[str, CandidateRecord], Mapping[str, CandidateRecord]] = ({}, {}),
) -> Row:
    """Both sides' counts at ``threshold``, hypervolumes at ``max_parameters``, children
    against their parents (looked up by id in ``run_records``) and the five differences."""
    sa = summarize(a, st.CycleProgress(cycle=0), runs[0], threshold)
    sb = summarize(b, st.CycleProgress(cycle=0), runs[1], threshold)
    pa, pb = candidate_points(a), candidate_points(b)
    hv = None
    if pa and pb:
        hv = bootstrap_hypervolume_difference(
            pa, pb, max_parameters, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED
        )
    ta, tb = tally(a, run_records[0]), tally(b, run_records[1])
    return Row(
        label,
        sa,
        sb,
        rate_difference(sa.valid, sa.generated, sb.valid, sb.generated),
        mean_accuracy_difference(a, b),
        rate_difference(sa.novel_good, sa.generated, sb.novel_good, sb.generated),
        (_hypervolume(pa, max_parameters), _hypervolume(pb, max_parameters)),
        hv,
        (ta, tb),
        rate_difference(ta.beat, ta.children, tb.beat, tb.children),
    )


def load_against(a: RunReport, b: RunReport) -> Against:
    """The comparison of two loaded runs (``build.load_report``)."""
    all_a, all_b = ([r for rs in run.records.values() for r in rs] for run in (a, b))
    limits = (a.threshold, a.max_parameters, (by_id(all_a), by_id(all_b)))
    runs, shared = (a.run, b.run), sorted(set(a.records) & set(b.records))
    rows = [compare_records(str(n), a.records[n], b.records[n], runs, *limits) for n in shared]
    if shared:
        every_a = [r for n in shared for r in a.records[n]]
        every_b = [r for n in shared for r in b.records[n]]
        rows.append(compare_records(RUN_ROW, every_a, every_b, runs, *limits))
    seeds = (_seed(a.spec_yaml), _seed(b.spec_yaml))
    diff = spec_differences(a.spec_yaml, b.spec_yaml)
    parents = has_parents(all_a) or has_parents(all_b)
    return Against(a, b, a.threshold, a.max_parameters, rows, diff, seeds, parents)


def _seed(spec_yaml: str) -> int:
    return int(yaml.safe_load(spec_yaml)["seed"])


# -- the document --------------------------------------------------------------------------
def _rate(successes: int, n: int) -> str:
    return f"{successes}/{n} ({100 * successes / n:.1f} %)" if n else "-"


def _mean(s: CycleSummary) -> str:
    return f"{s.mean_accuracy:.3f} (n={s.valid})" if s.valid else "-"


def _significance(i: Interval | None) -> str:
    if i is None:
        return "-"
    return "yes" if i.significant else "no"


# (title, short name, interval method, plot file)
METRICS: tuple[tuple[str, str, str, str], ...] = (
    ("Valid rate", "valid rate (valid / generated)", NEWCOMBE, "against-valid-rate.png"),
    ("Mean accuracy of valid candidates", "mean accuracy", BOOTSTRAP, "against-accuracy.png"),
    ("Novel good count", "novel good (share of generated)", NEWCOMBE, "against-novel-good.png"),
    ("Hypervolume of the (accuracy, parameters) front", "hypervolume", BOOTSTRAP_HV,
     "against-hypervolume.png"),
)  # fmt: skip
BEATS_PARENT = ("Child beats parent", "child beats parent (of children)", NEWCOMBE,
                "against-beats-parent.png")  # fmt: skip


def shown_metrics(c: Against) -> list[tuple[int, tuple[str, str, str, str]]]:
    """The metrics shown, with their index for :func:`_cells`: :data:`METRICS`, and
    :data:`BEATS_PARENT` when either run had a candidate with a parent."""
    return list(enumerate([*METRICS, BEATS_PARENT] if c.parents else METRICS))


def _cells(row: Row, metric: int) -> tuple[str, str, Interval | None]:
    """A's cell, B's cell and the difference for one of :func:`shown_metrics`."""
    if metric == 0:
        a, b = _rate(row.a.valid, row.a.generated), _rate(row.b.valid, row.b.generated)
        return a, b, row.valid_rate
    if metric == 1:
        return _mean(row.a), _mean(row.b), row.mean_accuracy
    if metric == 3:
        a_hv, b_hv = ("-" if hv is None else f"{hv:.3f}" for hv in row.hypervolumes)
        return a_hv, b_hv, row.hypervolume
    if metric == 4:
        a_t, b_t = (share_text(t.beat, t.children) for t in row.children)
        return a_t, b_t, row.beats_parent
    return (
        _rate(row.a.novel_good, row.a.generated),
        _rate(row.b.novel_good, row.b.generated),
        row.novel_good,
    )


def _intro(c: Against) -> list[doc.Block]:
    a, b = c.a, c.b
    compared = [row.label for row in c.rows if row.label != RUN_ROW]
    lines = [
        f"Run A: {a.run} ({a.state.state}, {len(a.cycles)} finished cycles). "
        f"Run B: {b.run} ({b.state.state}, {len(b.cycles)} finished cycles).",
        f"Compared: cycles {', '.join(compared)} (those both runs finished), each and over "
        f'them together (the "{RUN_ROW}" row).'
        if compared
        else "No cycle finished in both runs: nothing to compare.",
        "Differences are A minus B, in percentage points (accuracy: hundredths), with 95 % "
        "intervals; significant when the interval excludes 0.",
        f"Good accuracy: ≥ {c.threshold:g} (A's selection.min_accuracy), for both runs"
        + (f" (B's own is {b.threshold:g})." if b.threshold != c.threshold else "."),
        "Hypervolume: the share (0 to 1) of the box accuracy 0 to 1 by parameters 1 to "
        f"{c.max_parameters:,} (A's protocol.max_parameters; log10 scale of parameters) that "
        "the valid candidates dominate; reference point accuracy 0, "
        f"{c.max_parameters:,} parameters.",
    ]
    if c.parents:
        lines.append(
            "Child beats parent: of the candidates whose prompt carried a parent, the share "
            "that are valid and more accurate than it (the parent looked up among its run's "
            "records); each side with its 95 % Wilson interval, the difference with "
            f"{NEWCOMBE}; - where a run has no such candidate."
        )
    if c.seeds[0] == c.seeds[1]:
        seeds = f"Both runs have seed {c.seeds[0]}: the same prompts and sampling seeds."
    else:
        seeds = (
            f"The seeds differ (A: {c.seeds[0]}, B: {c.seeds[1]}): the runs did not answer "
            "with the same sampling seeds, so a difference mixes the setting with chance."
        )
    blocks: list[doc.Block] = [
        doc.Heading(f"nasloop report: {a.run} against {b.run}", 1),
        doc.Paragraph(" ".join(lines)),
        doc.Paragraph(seeds),
        doc.Heading("Where the specs differ"),
    ]
    if c.spec_diff:
        blocks.append(doc.Table(("field", f"A: {a.run}", f"B: {b.run}"), c.spec_diff))
    else:
        blocks.append(doc.Paragraph("The two specs are the same (apart from the runs' names)."))
    return blocks


def run_table(c: Against) -> doc.Table | None:
    """The run row of every metric (what ``nasloop report A --against B`` prints)."""
    total = next((row for row in c.rows if row.label == RUN_ROW), None)
    if total is None:
        return None
    rows = []
    for metric, (_, short, _, _) in shown_metrics(c):
        cell_a, cell_b, diff = _cells(total, metric)
        rows.append([short, cell_a, cell_b, interval_text(diff), _significance(diff)])
    header = ("over the run", f"A: {c.a.run}", f"B: {c.b.run}", "A - B (95 % CI)", "significant")
    return doc.Table(header, rows)


def metric_sections(c: Against) -> list[doc.Block]:
    blocks: list[doc.Block] = []
    total = next((row for row in c.rows if row.label == RUN_ROW), None)
    for metric, (title, _, method, _) in shown_metrics(c):
        rows = []
        for row in c.rows:
            cell_a, cell_b, diff = _cells(row, metric)
            rows.append([row.label, cell_a, cell_b, interval_text(diff), _significance(diff)])
        header = ("cycle", f"A: {c.a.run}", f"B: {c.b.run}", "A - B (95 % CI)", "significant")
        blocks += [doc.Heading(title), doc.Table(header, rows)]
        if total is not None:
            blocks.append(doc.Paragraph(verdict(f"{title}, over the run", _cells(total, metric)[2],
                                                method)))  # fmt: skip
    return blocks


def document(c: Against, figures: Sequence[doc.Figure]) -> list[doc.Block]:
    """The comparison's blocks, in order."""
    summary = run_table(c)
    overall: list[doc.Block] = [doc.Heading("Over the run"), summary] if summary else []
    plots: list[doc.Block] = [doc.Heading("Plots"), *figures] if figures else []
    return [
        *_intro(c),
        *overall,
        *plots,
        *metric_sections(c),
        doc.Heading(f"Run spec of A: {c.a.run}"),
        doc.Code(c.a.spec_yaml, "yaml"),
    ]


# -- writing -------------------------------------------------------------------------------
def folder_name(a: str, b: str) -> str:
    """``<A>-vs-<B>``: the default folder's name, beside the runs' own report folders."""
    return f"{a}-vs-{b}"


def write_against(c: Against, folder: Path) -> Path:
    """Write the comparison into ``folder``: report.md, report.html and a PNG per metric;
    returns the path of ``report.html``."""
    from services.controller.report.plots import write_difference_plots

    folder.mkdir(parents=True, exist_ok=True)
    figures = write_difference_plots(
        [row.label for row in c.rows],
        [
            (file, title, [_cells(row, m)[2] for row in c.rows])
            for m, (title, _, _, file) in shown_metrics(c)
        ],
        folder,
    )
    title = f"nasloop report: {c.a.run} against {c.b.run}"
    return write_document(document(c, figures), title, folder)
