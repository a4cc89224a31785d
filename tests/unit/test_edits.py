"""Diff answers: made from a parent and a child, applied strictly (nasloop/edits.py)."""

from __future__ import annotations

import pytest
from candidates import GOOD_NET

from nasloop import prompts
from nasloop.edits import DiffError, apply_diff, make_diff

CHILD = GOOD_NET.replace("nn.ReLU()", "nn.GELU()", 1)


def test_a_diff_applies_to_its_parent() -> None:
    assert CHILD != GOOD_NET
    diff = make_diff(GOOD_NET, CHILD)
    assert diff.startswith("--- a/net.py\n+++ b/net.py\n@@ ")
    assert apply_diff(GOOD_NET, diff) == CHILD.strip("\n") + "\n"
    # the answer format round-trips: rendered in a diff block, extracted, applied
    answer = "Here it is:\n" + prompts.render_diff(diff) + "\ndone"
    extracted = prompts.extract_diff(answer)
    assert extracted is not None and apply_diff(GOOD_NET, extracted) == CHILD.strip("\n") + "\n"


def test_no_change_is_an_empty_diff() -> None:
    assert make_diff(GOOD_NET, "\n" + GOOD_NET + "\n\n") == ""


@pytest.mark.parametrize(
    "diff, why",
    [
        ("", "found 0"),
        ("not a diff at all\n", "found 0"),
        # right lines, wrong place: nothing is moved to where it would fit
        (make_diff(GOOD_NET, CHILD).replace("@@ -", "@@ -1", 1), "does not apply"),
        # a context line that is not in the parent
        (make_diff("a\nb\nc\n", "a\nB\nc\n"), "does not apply"),
        ("--- a/net.py\n+++ b/net.py\n", "found 0"),  # headers without a hunk
    ],
)
def test_a_diff_that_does_not_apply_is_refused(diff: str, why: str) -> None:
    with pytest.raises(DiffError, match=why):
        apply_diff(GOOD_NET, diff)


def test_a_diff_answer_trains_on_its_diff() -> None:
    from nasloop.records import CandidateRecord, RecordError, TrainingPair

    diff = make_diff(GOOD_NET, CHILD)
    record = CandidateRecord(
        id="r-c2-0", run="r", cycle=2, index=0, prompt="p", code=CHILD, mode="diff", diff=diff
    )
    pair = TrainingPair.from_record(record)
    assert pair.completion == prompts.render_diff(diff) and pair.prompt == "p"
    assert CandidateRecord.from_json(record.to_json()) == record
    full = CandidateRecord(
        id="r-c2-1", run="r", cycle=2, index=1, prompt="p", code=CHILD, mode="full"
    )
    assert TrainingPair.from_record(full).completion == prompts.render_answer(CHILD)
    with pytest.raises(RecordError, match="without its diff"):
        TrainingPair.from_record(
            CandidateRecord(id="x", run="r", cycle=2, index=2, prompt="p", code=CHILD, mode="diff")
        )
