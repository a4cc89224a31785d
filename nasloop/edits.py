"""Edits of a parent network as unified diffs: made with difflib, applied with whatthepatch.

``diff`` mode answers are a unified diff of the parent (file names ``a/net.py`` and
``b/net.py``, see ``prompts.DIFF_HEADER``). Applying is strict: every context and removed line
must stand where the hunk header says, and nothing is repaired, so a diff that does not apply
is a failed answer, recorded as such.
"""

from __future__ import annotations

import difflib

import whatthepatch
from whatthepatch.exceptions import WhatThePatchException

from nasloop.prompts import DIFF_HEADER

CONTEXT_LINES = 3


class DiffError(ValueError):
    """The answer is not one unified diff that applies to the parent."""


def _lines(code: str) -> list[str]:
    return code.strip("\n").split("\n")


def make_diff(parent: str, child: str) -> str:
    """The unified diff that turns ``parent`` into ``child`` (both compared without their
    leading and trailing blank lines); empty if they are the same."""
    old, new = DIFF_HEADER[0].removeprefix("--- "), DIFF_HEADER[1].removeprefix("+++ ")
    lines = difflib.unified_diff(
        _lines(parent), _lines(child), old, new, n=CONTEXT_LINES, lineterm=""
    )
    return "\n".join(lines) + "\n" if parent.strip("\n") != child.strip("\n") else ""


def apply_diff(parent: str, diff: str) -> str:
    """``parent`` with ``diff`` applied, or :class:`DiffError` saying why it does not apply."""
    try:
        patches = list(whatthepatch.parse_patch(diff))
    except WhatThePatchException as e:
        raise DiffError(f"not a unified diff: {e}") from None
    patches = [p for p in patches if p.changes]
    if len(patches) != 1:
        raise DiffError(f"expected a diff of one file with changes, found {len(patches)}")
    try:
        lines = whatthepatch.apply_diff(patches[0], _lines(parent))
    except WhatThePatchException as e:
        raise DiffError(f"does not apply to the parent: {e}") from None
    if lines is None:
        raise DiffError("does not apply to the parent")
    return "\n".join(lines) + "\n"
