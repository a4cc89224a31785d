"""A run's report (``nasloop report R``), from its records alone.

What it reads: ``runs/<run>/spec.yaml`` and ``state.json``; for every finished cycle (one with
a ``summary.json``) the summary and ``candidates.jsonl``; the adapters' manifests
(``adapters/<run>/<n>/manifest.json``); and ``runs/<run>/baseline/candidates.jsonl`` when the
baseline was run. The per-cycle counts are recomputed from the candidate records with the
spec's selection threshold (so summaries written before a field existed still report it); the
times and adapters come from the summaries. A run still going shows its finished cycles.

What it writes, into one folder: ``report.md``, a self-contained ``report.html`` and every
plot as a PNG (``plots``). The blocks of the document are in ``document``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from nasloop import layout
from nasloop.artifacts import AdapterMeta, read_manifest
from nasloop.records import CandidateRecord, loads_records
from nasloop.store import ObjectNotFound, ObjectStore, StoreError
from services.controller.loop import state as st
from services.controller.loop.archive import Archive
from services.controller.loop.summary import CycleSummary, load_summaries, summarize
from services.controller.report.document import (
    Block,
    Code,
    Figure,
    Heading,
    Paragraph,
    Table,
    markdown_table,
    to_markdown,
)
from services.controller.report.parents import ParentTally, by_id, has_parents, tally
from services.controller.report.pareto import candidate_points, pareto_front, run_hypervolume
from services.controller.report.stats import (
    Interval,
    bootstrap_mean_difference,
    newcombe_difference,
    wilson,
)
from services.controller.runspec import load_spec

COLUMNS = (
    "cycle", "gen", "valid", "stopped at (top 3)", "mean acc", "best acc", "distinct", "novel",
    "sel", "gen+eval s", "novelty s", "train s", "other s", "total s",
)  # fmt: skip
TOP = 5  # best architectures shown
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
LEVEL = 0.95


def _stopped(s: CycleSummary) -> str:
    top = sorted(s.stopped.items(), key=lambda kv: -kv[1])[:3]
    return ", ".join(f"{key.split('/')[1].removeprefix('STATUS_').lower()} {n}" for key, n in top)


def row(s: CycleSummary) -> list[str]:
    sec = s.seconds
    other = sum(sec.values()) - sec.get("generate", 0) - sec.get("novelty", 0)
    other -= sec.get("fine_tune", 0)
    return [
        str(s.cycle),
        str(s.generated),
        f"{100 * s.valid_rate:.1f} %",
        _stopped(s) or "-",
        f"{s.mean_accuracy:.3f}" if s.valid else "-",
        f"{s.best_accuracy:.3f}" if s.valid else "-",
        str(s.distinct),
        str(s.novel),
        str(s.selected),
        f"{sec.get('generate', 0):.0f}",
        f"{sec.get('novelty', 0):.1f}",
        f"{sec.get('fine_tune', 0):.0f}",
        f"{other:.1f}",
        f"{s.wall_seconds:.0f}",
    ]


def table(summaries: Sequence[CycleSummary]) -> str:
    """A Markdown table, one row per completed cycle."""
    return markdown_table(COLUMNS, [row(s) for s in summaries])


# -- what the report holds -----------------------------------------------------------------
@dataclass
class Comparison:
    """The baseline (base model, no adapter) against the last finished cycle: same prompts,
    same seeds. Differences are last cycle minus baseline."""

    baseline: CycleSummary
    last: CycleSummary
    valid_rate: Interval | None  # Newcombe's hybrid score interval
    mean_accuracy: Interval | None  # percentile bootstrap, BOOTSTRAP_RESAMPLES, fixed seed


@dataclass
class RunReport:
    run: str
    state: st.RunState
    spec_yaml: str
    base_model: str
    threshold: float
    cycles: list[CycleSummary]  # finished cycles; counts from the records
    records: dict[int, list[CandidateRecord]] = field(default_factory=dict)
    adapters: dict[int, AdapterMeta] = field(default_factory=dict)  # by the cycle that trained it
    comparison: Comparison | None = None
    max_parameters: int = 1  # the protocol's limit: the hypervolume's reference point
    objectives: list[str] = field(default_factory=lambda: ["accuracy"])  # the archive's elites
    baseline: list[CandidateRecord] | None = None  # the baseline's records, when it was run

    def archive(self) -> Archive:
        """The run's final archive: every valid candidate of its finished cycles (not the
        baseline's), each cell's elite by the spec's ``selection.objectives``."""
        every = [c for _, rs in sorted(self.records.items()) for c in rs]
        return Archive.from_records(every, objectives=self.objectives)

    def best(self, n: int = TOP) -> list[CandidateRecord]:
        """The ``n`` most accurate valid candidates, one per distinct code."""
        seen: set[str] = set()
        out: list[CandidateRecord] = []
        ranked = sorted(
            (r for rs in self.records.values() for r in rs if r.valid),
            key=lambda r: (-r.accuracy, r.cycle, r.index),
        )
        for r in ranked:
            if r.code not in seen:
                seen.add(r.code)
                out.append(r)
            if len(out) == n:
                break
        return out


def _records(store: ObjectStore, key: str) -> list[CandidateRecord] | None:
    try:
        return loads_records(store.get_bytes(key))
    except ObjectNotFound:
        return None


def _recount(
    stored: CycleSummary, records: list[CandidateRecord] | None, threshold: float
) -> CycleSummary:
    """The stored summary with its counts recomputed from the records at ``threshold``."""
    if records is None:
        return stored
    progress = st.CycleProgress(
        cycle=stored.cycle, started=stored.started, finished=stored.finished,
        seconds=stored.seconds, generated_with=stored.generated_with, adapter=stored.adapter,
        training=stored.training, wall_seconds=stored.wall_seconds,
        service_seconds=stored.service_seconds,
    )  # fmt: skip
    return summarize(records, progress, stored.run, threshold)


def _adapter(store: ObjectStore, run: str, cycle: int) -> AdapterMeta | None:
    try:
        manifest, _ = read_manifest(store, layout.adapter_prefix(run, cycle))
        return AdapterMeta.from_manifest(manifest)
    except (StoreError, ValueError):
        return None


def compare(
    baseline: Sequence[CandidateRecord], last: CycleSummary, records: Sequence[CandidateRecord]
) -> Comparison:
    """The baseline section's numbers."""
    base = summarize(baseline, st.CycleProgress(cycle=0), last.run, last.threshold)
    valid_rate = rate_difference(last.valid, last.generated, base.valid, base.generated)
    return Comparison(base, last, valid_rate, mean_accuracy_difference(records, baseline))


def rate_difference(successes_a: int, n_a: int, successes_b: int, n_b: int) -> Interval | None:
    """``successes_a / n_a - successes_b / n_b`` with Newcombe's interval; None when a side
    has no candidates."""
    if not n_a or not n_b:
        return None
    return newcombe_difference(successes_a, n_a, successes_b, n_b, LEVEL)


def mean_accuracy_difference(
    a: Sequence[CandidateRecord], b: Sequence[CandidateRecord]
) -> Interval | None:
    """Mean accuracy of ``a``'s valid candidates minus ``b``'s, with the report's bootstrap
    interval; None when a side has no valid candidate."""
    ours = [r.accuracy for r in a if r.valid]
    theirs = [r.accuracy for r in b if r.valid]
    if not ours or not theirs:
        return None
    return bootstrap_mean_difference(ours, theirs, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, LEVEL)


def load_report(store: ObjectStore, run: str) -> RunReport:
    """Everything the report shows, read from the store. Raises ``ObjectNotFound`` when there
    is no such run."""
    run = layout.check_run_name(run)
    state = st.load_run_state(store, run)
    if state is None:
        raise ObjectNotFound(f"no run named {run!r}")
    spec_yaml = store.get_bytes(layout.spec_key(run)).decode()
    spec = load_spec(spec_yaml=spec_yaml)
    threshold = spec.selection.min_accuracy
    report = RunReport(run, state, spec_yaml, spec.base_model, threshold, cycles=[])
    report.max_parameters = spec.protocol.max_parameters
    report.objectives = spec.selection.objectives
    for stored in load_summaries(store, run, max(state.cycle, state.cycles_done)):
        records = _records(store, layout.candidates_key(run, stored.cycle))
        report.cycles.append(_recount(stored, records, threshold))
        report.records[stored.cycle] = records or []
        meta = _adapter(store, run, stored.cycle)
        if meta is not None:
            report.adapters[stored.cycle] = meta
    baseline = report.baseline = _records(store, layout.baseline_candidates_key(run))
    if baseline is not None and report.cycles:
        last = report.cycles[-1]
        report.comparison = compare(baseline, last, report.records[last.cycle])
    return report


# -- the document --------------------------------------------------------------------------
def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def _signed_points(x: float) -> str:
    return f"{100 * x:+.1f}"


def interval_text(i: Interval | None) -> str:
    """``+12.5 [+3.1, +21.0]``: a difference and its interval in points; ``-`` for none."""
    if i is None:
        return "-"
    return f"{_signed_points(i.estimate)} [{_signed_points(i.low)}, {_signed_points(i.high)}]"


def headline(r: RunReport) -> list[Block]:
    done = len(r.cycles)
    state = r.state.state
    lines = [f"Run {r.run}: {state}, {done} finished cycle{'s' * (done != 1)}."]
    if r.state.active:
        lines.append(
            f"The run is still running (cycle {r.state.cycle}, step {r.state.phase or '-'}): "
            "only its finished cycles are shown."
        )
    elif r.state.error:
        lines.append(f"Error: {r.state.error}")
    lines.append(f"Base model {r.base_model}; selection threshold (good accuracy) {r.threshold:g}.")
    blocks: list[Block] = [Heading(f"nasloop report: {r.run}", 1), Paragraph(" ".join(lines))]
    if r.cycles:
        blocks.append(Table(COLUMNS, [row(s) for s in r.cycles]))
    else:
        blocks.append(Paragraph("No cycle has finished yet."))
    return blocks


def best_section(r: RunReport) -> list[Block]:
    best = r.best()
    blocks: list[Block] = [Heading(f"Best architectures (top {TOP} by accuracy)")]
    if not best:
        return [*blocks, Paragraph("No valid candidate yet.")]
    rows = []
    for rank, c in enumerate(best, 1):
        nov = c.novelty
        nearest, similarity = ("-" if nov is None else "none near"), "-"
        if nov is not None and nov.nearest_id:
            nearest = f"{nov.nearest_id} ({nov.nearest_namespace})"
            similarity = f"{nov.max_similarity:.3f}"
        rows.append([
            str(rank), c.id, f"{c.accuracy:.4f}",
            f"{c.evaluation.parameter_count:,}" if c.evaluation else "-", str(c.cycle),
            c.adapter_name or "base model", nearest, similarity,
            ("novel" if nov.novel else "not novel") if nov else "-",
        ])  # fmt: skip
    header = ("#", "candidate", "accuracy", "parameters", "cycle", "adapter",
              "nearest network", "similarity", "novelty")  # fmt: skip
    blocks.append(Table(header, rows))
    blocks.append(
        Paragraph(
            "Nearest network: the most similar indexed network (seed corpus or this run) that "
            'the MinHash index found; "none near" when no indexed network shares a band '
            "with it (the LSH index reports only neighbours near the novelty threshold)."
        )
    )
    for rank, c in enumerate(best, 1):
        blocks += [Heading(f"{rank}. {c.id}: accuracy {c.accuracy:.4f}", 3), Code(c.code)]
    return blocks


def baseline_section(r: RunReport) -> list[Block]:
    blocks: list[Block] = [Heading("Baseline: the base model without an adapter")]
    c = r.comparison
    if c is None:
        return [*blocks, Paragraph("The baseline was not run (no baseline records).")]
    b, last = c.baseline, c.last

    def distinct_rate(s: CycleSummary) -> float:
        return s.distinct / s.generated if s.generated else 0.0

    rows = [
        ["generated", str(b.generated), str(last.generated), "-"],
        ["valid rate", _pct(b.valid_rate), _pct(last.valid_rate), interval_text(c.valid_rate)],
        ["mean accuracy (valid)", f"{b.mean_accuracy:.3f}" if b.valid else "-",
         f"{last.mean_accuracy:.3f}" if last.valid else "-", interval_text(c.mean_accuracy)],
        ["distinct rate", _pct(distinct_rate(b)), _pct(distinct_rate(last)),
         _signed_points(distinct_rate(last) - distinct_rate(b))],
        [f"share ≥ {r.threshold:g} (valid)", _pct(b.share_above_threshold),
         _pct(last.share_above_threshold),
         _signed_points(last.share_above_threshold - b.share_above_threshold)],
    ]  # fmt: skip
    header = ("", "baseline", f"cycle {last.cycle}", "difference, points (95 % CI)")
    blocks += [
        Paragraph(
            f"The base model with no adapter answered cycle {last.cycle}'s prompts with the "
            "same seeds, evaluated the same way. Differences are cycle minus baseline, in "
            "percentage points (accuracy: hundredths)."
        ),
        Table(header, rows),
        Paragraph(verdict("Valid rate", c.valid_rate, "Newcombe's hybrid score interval")),
        Paragraph(
            verdict(
                "Mean accuracy of valid candidates",
                c.mean_accuracy,
                f"percentile bootstrap, {BOOTSTRAP_RESAMPLES:,} resamples, seed {BOOTSTRAP_SEED}",
            )
        ),
    ]
    return blocks


def pareto_section(r: RunReport) -> list[Block]:
    """The hypervolume of each cycle's (accuracy, parameters) front, and the baseline's."""
    sides = [(str(s.cycle), r.records.get(s.cycle, [])) for s in r.cycles]
    if r.baseline is not None:
        sides.append(("baseline", r.baseline))
    rows = []
    for label, records in sides:
        points = candidate_points(records)
        rows.append([
            label, str(len(points)), str(len(pareto_front(points))),
            f"{run_hypervolume(points, r.max_parameters):.3f}" if points else "-",
        ])  # fmt: skip
    return [
        Heading("Pareto front: accuracy against parameters"),
        Paragraph(
            "Each cycle's valid candidates, accuracy (higher is better) against parameters "
            "(fewer is better). Hypervolume: the share of the box accuracy 0 to 1 by parameters "
            f"1 to protocol.max_parameters ({r.max_parameters:,}), on a log10 scale of "
            "parameters, that the candidates dominate (reference point: accuracy 0, "
            f"{r.max_parameters:,} parameters; 0 to 1, higher is better)."
        ),
        Table(("cycle", "valid", "on the front", "hypervolume"), rows),
    ]


def share_text(successes: int, n: int) -> str:
    """``12/40 (30.0 % [17.9, 45.6])``: a share with its 95 % Wilson interval; ``-`` for n 0."""
    if not n:
        return "-"
    i = wilson(successes, n, LEVEL)
    return f"{successes}/{n} ({_pct(i.estimate)} [{100 * i.low:.1f}, {100 * i.high:.1f}])"


def parents_section(r: RunReport) -> list[Block]:
    """How often a child beats its parent, per cycle; nothing when no candidate had a parent."""
    sides = [(str(s.cycle), r.records.get(s.cycle, [])) for s in r.cycles]
    every = [c for _, rs in sides for c in rs]
    if r.baseline is not None:
        sides.append(("baseline", r.baseline))
    if not any(has_parents(rs) for _, rs in sides):
        return []
    run_records = by_id(every)
    tallies = [(label, tally(rs, run_records)) for label, rs in sides]
    tallies.insert(len(r.cycles), ("run", tally(every, run_records)))

    def cells(t: ParentTally) -> list[str]:
        return [str(t.children), str(t.valid), share_text(t.beat, t.children)]

    rows = [[label, *cells(t)] for label, t in tallies]
    unknown = sum(t.unknown for label, t in tallies if label != "run")
    return [
        Heading("Children against their parents"),
        Paragraph(
            "Candidates whose prompt carried a parent (a valid candidate of an earlier cycle), "
            "how many of them were valid and how many beat their parent (valid and more "
            "accurate than it), as a share of the candidates with a parent with its 95 % "
            'Wilson interval. The "run" row: every finished cycle together.'
            + (
                f" {unknown} candidate{'s' * (unknown != 1)} named a parent that is not among "
                "the run's records: counted as not beating it."
                if unknown
                else ""
            )
        ),
        Table(("cycle", "with a parent", "valid", "beat their parent (95 % CI)"), rows),
    ]


def verdict(what: str, i: Interval | None, method: str) -> str:
    """One sentence: the difference, its 95 % interval (``method``) and whether it is
    significant."""
    if i is None:
        return f"{what}: no comparison (a side has no candidates to compare)."
    outcome = "significant at 95 %" if i.significant else "not significant"
    return (
        f"{what}: difference {_signed_points(i.estimate)} points, 95 % CI "
        f"[{_signed_points(i.low)}, {_signed_points(i.high)}] ({method}): {outcome}."
    )


def versions_section(r: RunReport) -> list[Block]:
    first = next((s.adapter or s.generated_with for s in r.cycles if s.adapter), None)
    base_sha = first.base_model_sha256 if first else ""
    blocks: list[Block] = [
        Heading("Models and adapters"),
        Paragraph(f"Base model: {r.base_model}" + (f" (sha256 {base_sha})" if base_sha else "")),
    ]
    rows = []
    for s in r.cycles:
        gen = s.generated_with
        trained = s.adapter
        meta = r.adapters.get(s.cycle)
        rows.append([
            str(s.cycle),
            f"{gen.name} ({gen.sha256[:12]})" if gen else "base model",
            trained.name if trained else "-",
            trained.sha256[:12] if trained else "-",
            (trained.parent_sha256[:12] or "base model") if trained else "-",
            str(meta.lora.r) if meta and meta.lora else "-",
            str(s.training.get("pairs", "-")),
            f"{s.training['final_loss']:.4f}" if "final_loss" in s.training else "-",
        ])  # fmt: skip
    header = ("cycle", "generated with", "adapter trained", "sha256", "parent sha256",
              "LoRA r", "pairs", "final loss")  # fmt: skip
    blocks.append(Table(header, rows))
    return blocks


def document(r: RunReport, figures: Sequence[Figure]) -> list[Block]:
    """The report's blocks, in order."""
    plots: list[Block] = [Heading("Plots"), *figures] if figures else []
    return [
        *headline(r),
        *plots,
        *best_section(r),
        *pareto_section(r),
        *parents_section(r),
        *baseline_section(r),
        *versions_section(r),
        Heading("Run spec"),
        Code(r.spec_yaml, "yaml"),
    ]


# -- writing -------------------------------------------------------------------------------
def default_folder(store: ObjectStore, run: str) -> Path:
    """``reports/<run>/`` beside a local store's directory (``.nasloop/reports/<run>/`` for the
    default ``.nasloop/store``); ``.nasloop/reports/<run>/`` for a remote store."""
    root = getattr(store, "root", None)
    base = Path(root).parent if root is not None else Path(".nasloop")
    return base / "reports" / run


def write_report(r: RunReport, folder: Path) -> Path:
    """Write the report into ``folder``: report.md, report.html and the plots' PNG files;
    returns the path of ``report.html``."""
    from services.controller.report.plots import write_archive, write_pareto, write_plots

    folder.mkdir(parents=True, exist_ok=True)
    baseline_mean = None
    if r.comparison is not None and r.comparison.baseline.valid:
        baseline_mean = r.comparison.baseline.mean_accuracy
    figures = write_plots(r.cycles, folder, baseline_mean)
    figures += write_pareto(
        [(f"cycle {n}", candidate_points(rs)) for n, rs in sorted(r.records.items())],
        None if r.baseline is None else candidate_points(r.baseline),
        r.max_parameters,
        folder,
    )
    figures += write_archive(r.archive(), folder)
    return write_document(document(r, figures), f"nasloop report: {r.run}", folder)


def write_document(blocks: list[Block], title: str, folder: Path) -> Path:
    """``report.md`` and ``report.html`` of ``blocks`` in ``folder``; the HTML page's path."""
    from services.controller.report.html import to_html

    (folder / "report.md").write_text(to_markdown(blocks))
    html = folder / "report.html"
    html.write_text(to_html(blocks, title, folder))
    return html


def announce(store: ObjectStore, run: str, out: TextIO | None = None) -> Path | None:
    """Write the report to its default folder and say where it is (the end of ``nasloop run``);
    a failure to write it is reported, never raised."""
    out = out or sys.stderr
    try:
        html = write_report(load_report(store, run), default_folder(store, run))
    except (ImportError, OSError, StoreError) as e:
        print(f"no report for run {run}: {e}", file=out)
        return None
    print(f"report: {html} (and report.md, the plots beside it)", file=out)
    return html
