"""A cycle's prompts, planned once when the cycle begins (the run spec's ``search`` section).

``plain`` (the paper's loop): one prompt, the task alone, for every answer. ``archive``: the
same, except that the last ``round(parent_share * n)`` answers get a prompt that shows a
parent, sampled from the archive of the run's earlier cycles (loop/archive.py) with the cycle's
seed; each distinct prompt is rendered once. An empty archive
(cycle 1, or no valid candidate yet) or a share that rounds to 0 plans as ``plain``. The plan is
saved in ``progress.json`` before any answer (loop/generate.py), so a resumed cycle asks the
same prompts with the same parents; answer i is sampled with seed ``progress.seed + i`` either
way.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from nasloop.edits import DiffError, apply_diff
from nasloop.prompts import extract_diff
from nasloop.records import CandidateRecord, sha256_text
from nasloop.v1 import common_pb2 as common
from services.controller.loop.archive import Archive, Entry
from services.controller.loop.state import CycleProgress, PlannedPrompt
from services.controller.runspec import RunSpec, task_spec

Render = Callable[[common.TaskSpec], str]  # the generator's RenderPrompt: a TaskSpec → its text
MODES = {"full": common.EDIT_MODE_FULL, "diff": common.EDIT_MODE_DIFF}
DIFF_FAILURES = ("no_diff", "diff_not_applied")  # a diff answer's extraction when it has no code


def parent_count(share: float, n: int) -> int:
    """How many of ``n`` answers get a parent: ``share * n`` rounded, halves up."""
    return math.floor(share * n + 0.5)


def with_parent(task: common.TaskSpec, parent: Entry, mode: str) -> common.TaskSpec:
    """``task`` with ``parent`` shown in it, to be improved on in edit ``mode``."""
    out = common.TaskSpec()
    out.CopyFrom(task)
    out.parent.CopyFrom(
        common.Parent(
            id=parent.id,
            code=parent.code,
            accuracy=parent.accuracy,
            parameters=parent.parameters,
            mode=MODES[mode],
        )
    )
    return out


def plan_prompts(
    progress: CycleProgress, spec: RunSpec, archive: Archive | None, render: Render
) -> None:
    """Fill ``progress`` with the cycle's prompt (the task alone) and, with the ``archive``
    strategy and a non-empty ``archive``, the plan: which answers see which parent."""
    task = task_spec(spec)
    progress.prompt = render(task)
    progress.prompt_sha256 = sha256_text(progress.prompt)
    n, search = spec.candidates_per_cycle, spec.search
    count = parent_count(search.parent_share, n)
    if search.strategy != "archive" or archive is None or not archive.entries or count == 0:
        return
    # The last ``count`` answers, the same parent's next to each other: the fewest Generate
    # calls (one per prompt and contiguous range of answers, loop/generate.py), so the
    # generator batches as many answers as it can.
    chosen = range(n - count, n)
    parents = sorted(archive.sample_parents(count, progress.seed), key=lambda e: e.id)
    plan = [progress.prompt_sha256] * n
    prompts = {progress.prompt_sha256: PlannedPrompt(progress.prompt)}
    rendered: dict[str, str] = {}  # parent id → its prompt's sha256
    for index, parent in zip(chosen, parents, strict=True):
        if parent.id not in rendered:
            text = render(with_parent(task, parent, search.mode))
            rendered[parent.id] = sha256_text(text)
            prompts[rendered[parent.id]] = PlannedPrompt(text, parent.id, parent.code, search.mode)
        plan[index] = rendered[parent.id]
    progress.plan = plan
    progress.prompts = {sha: p for sha, p in prompts.items() if sha in set(plan)}


def apply_edit(record: CandidateRecord, asked: PlannedPrompt) -> None:
    """Mark ``record`` with the parent its prompt showed; a ``diff`` answer's code becomes its
    diff applied to the parent. Its ``extraction`` then says how that went: ``diff`` (applied),
    ``no_diff`` (no ```diff block) or ``diff_not_applied`` (the diff kept, the code empty);
    a candidate without code stops at the evaluator's first stage, as one without a block."""
    if not asked.parent_id:
        return
    record.parent_id, record.mode = asked.parent_id, asked.mode
    if asked.mode != "diff":
        return
    diff = extract_diff(record.raw_text)
    record.code = ""
    if diff is None:
        record.extraction = DIFF_FAILURES[0]
        return
    record.diff = diff
    try:
        record.code = apply_diff(asked.parent_code, diff)
        record.extraction = "diff"
    except DiffError:
        record.extraction = DIFF_FAILURES[1]
