"""The report as a list of blocks (headings, paragraphs, tables, code, figures) and its
Markdown rendering; ``html`` renders the same blocks as one self-contained HTML page.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Table:
    header: Sequence[str]
    rows: Sequence[Sequence[str]]


@dataclass(frozen=True)
class Code:
    text: str
    language: str = "python"


@dataclass(frozen=True)
class Figure:
    """A plot: ``file`` is its PNG's name in the report folder."""

    file: str
    caption: str


Block = Heading | Paragraph | Table | Code | Figure


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table with aligned columns."""
    cells = [list(header), *([c.replace("|", "\\|") for c in r] for r in rows)]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in cells
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _fence(text: str) -> str:
    """A backtick fence longer than any run of backticks in ``text``."""
    longest, run = 0, 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    return "`" * max(3, longest + 1)


def block_markdown(block: Block) -> str:
    match block:
        case Heading(text, level):
            return f"{'#' * level} {text}"
        case Paragraph(text):
            return text
        case Table(header, rows):
            return markdown_table(header, rows)
        case Code(text, language):
            fence = _fence(text)
            return f"{fence}{language}\n{text.rstrip()}\n{fence}"
        case Figure(file, caption):
            return f"![{caption}]({file})"
    raise TypeError(f"not a report block: {block!r}")


def to_markdown(blocks: Sequence[Block]) -> str:
    return "\n\n".join(block_markdown(b) for b in blocks) + "\n"
