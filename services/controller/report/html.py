"""The report's blocks as one self-contained HTML page: CSS inline, plots embedded as base64
PNG data URIs, code highlighted by Pygments. Its Content-Security-Policy admits nothing from
outside the page (no scripts, images only as ``data:``), so it opens offline and loads nothing.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from html import escape
from pathlib import Path

from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name

from services.controller.report.document import Block, Code, Figure, Heading, Paragraph, Table

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
CSS = """
body { font: 15px/1.45 system-ui, sans-serif; color: #1b1f24; max-width: 1100px;
       margin: 2em auto; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #d0d7de; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #d0d7de; padding: 0.25em 0.6em; text-align: left; }
th { background: #f6f8fa; }
figure { margin: 1em 0; } figure img { max-width: 100%; }
figcaption { color: #57606a; font-size: 0.9em; }
pre { background: #f6f8fa; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
.figures { display: grid; grid-template-columns: repeat(auto-fit, minmax(480px, 1fr));
           gap: 0 1.5em; }
"""
_FORMATTER = HtmlFormatter(cssclass="hl")


def _code(block: Code) -> str:
    try:
        lexer = get_lexer_by_name(block.language)
    except ValueError:  # an unknown language: plain text
        return f"<pre>{escape(block.text)}</pre>"
    return highlight(block.text, lexer, _FORMATTER)


def _figure(block: Figure, folder: Path) -> str:
    data = base64.b64encode((folder / block.file).read_bytes()).decode()
    return (
        f'<figure><img alt="{escape(block.caption)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{escape(block.caption)}</figcaption></figure>"
    )


def _table(block: Table) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in block.header)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in block.rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def block_html(block: Block, folder: Path) -> str:
    match block:
        case Heading(text, level):
            return f"<h{level}>{escape(text)}</h{level}>"
        case Paragraph(text):
            return f"<p>{escape(text)}</p>"
        case Table():
            return _table(block)
        case Code():
            return _code(block)
        case Figure():
            return _figure(block, folder)
    raise TypeError(f"not a report block: {block!r}")


def to_html(blocks: Sequence[Block], title: str, folder: Path) -> str:
    """The page; ``folder`` holds the figures' PNG files (read and embedded)."""
    parts: list[str] = []
    figures: list[str] = []
    for block in blocks:  # consecutive figures share a grid
        if isinstance(block, Figure):
            figures.append(block_html(block, folder))
            continue
        if figures:
            parts.append(f'<div class="figures">{"".join(figures)}</div>')
            figures = []
        parts.append(block_html(block, folder))
    if figures:
        parts.append(f'<div class="figures">{"".join(figures)}</div>')
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        f"<title>{escape(title)}</title>"
        f"<style>{CSS}{_FORMATTER.get_style_defs('.hl')}</style></head>\n<body>\n"
        + "\n".join(parts)
        + "\n</body></html>\n"
    )
