"""The per-cycle table of a run (``nasloop report R``), from its cycle summaries alone."""

from __future__ import annotations

from collections.abc import Sequence

from services.controller.summary import CycleSummary

COLUMNS = (
    "cycle", "gen", "valid", "stopped at (top 3)", "mean acc", "best acc", "distinct", "novel",
    "sel", "gen+eval s", "novelty s", "train s", "other s", "total s",
)  # fmt: skip


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
    rows = [list(COLUMNS), *(row(s) for s in summaries)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)
