"""Parent -> child mutations of the grammar's networks and the bootstrap LM's edit pairs.

Each kind changes the code and keeps it a valid candidate (the evaluator's in-process harness:
static checks and the forward probe); mutations and pairs are deterministic; a diff pair's
answer applies to its parent and gives the child; the plain pairs are byte for byte what they
were before the edit pairs existed.
"""

from __future__ import annotations

import ast
import hashlib
import random
import re

import pytest
import torch
from candidates import protocol

from nasloop.bootstrap import corpus_pairs
from nasloop.corpus import mutations
from nasloop.corpus.build import count_parameters
from nasloop.corpus.grammar import MAX_MACS, MAX_PARAMS, generate
from nasloop.edits import apply_diff, make_diff
from nasloop.prompts import extract, extract_diff
from nasloop.v1 import common_pb2 as common
from services.evaluator.datasets import SandboxData
from services.evaluator.harness import Harness
from services.evaluator.task import Task

PROTOCOL = protocol(dataset="tiny", batch_size=16, seed=3, time_limit_s=120)
# sha256 of repr(corpus_pairs(first 8 networks of grammar seed 0, seed=3)), computed with the
# code before edit pairs existed: the plain pairs must not change.
PLAIN_PAIRS_SHA256 = "a025007297ed73ba1d6e17510c4a65a359a17e20a4e73caeef2ddd34e8b61d1d"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def codes() -> list[str]:
    return [net.code for net in generate(16, seed=0)]


@pytest.fixture(scope="module")
def kids(codes: list[str]) -> dict[str, tuple[str, mutations.Child]]:
    """The first parent each kind mutates, with its child."""
    found: dict[str, tuple[str, mutations.Child]] = {}
    for kind in mutations.KINDS:
        for i, code in enumerate(codes):
            child = mutations.mutate(code, kind, random.Random(i))
            if child is not None:
                found[kind] = (code, child)
                break
    return found


def _called(code: str, pattern: str) -> list[str]:
    names = [ast.unparse(c.func) for c in ast.walk(ast.parse(code)) if isinstance(c, ast.Call)]
    return [n for n in names if re.fullmatch(pattern, n)]


def _defs(code: str) -> set[str]:
    return {n.name for n in ast.parse(code).body if isinstance(n, ast.ClassDef | ast.FunctionDef)}


def _int_literals(code: str) -> list[int]:
    nodes = ast.walk(ast.parse(code))
    return sorted(n.value for n in nodes if isinstance(n, ast.Constant) and type(n.value) is int)


@pytest.mark.parametrize("kind", mutations.KINDS)
def test_each_kind_changes_the_code_and_keeps_a_valid_candidate(kids, kind: str) -> None:  # type: ignore[no-untyped-def]
    parent, child = kids[kind]
    assert child.kind == kind and child.code != parent
    params, macs = mutations.check(child.code)
    assert (params, macs) == (child.parameters, child.macs)
    assert 0 < params <= MAX_PARAMS and 0 < macs <= MAX_MACS
    assert params == count_parameters(child.code, trainable_only=True)
    data = SandboxData(
        torch.randn(32, 3, 32, 32), torch.arange(32) % 10, torch.randn(16, 3, 32, 32), 10
    )
    r = Harness(Task(f"child-{kind}", child.code, PROTOCOL, "validate"), data).run()
    assert (r.status, r.last_stage) == (common.STATUS_OK, common.STAGE_FORWARD_PROBE), r.message


def test_what_each_kind_changes(kids) -> None:  # type: ignore[no-untyped-def]
    parent, child = kids["width"]
    old, new = _int_literals(parent), _int_literals(child.code)
    assert len(old) == len(new) and old != new and child.parameters != mutations.check(parent)[0]

    parent, child = kids["depth"]
    assert child.parameters != mutations.check(parent)[0]

    parent, child = kids["block"]
    assert _defs(child.code) - _defs(parent)  # the swapped-in block (and maybe its helpers)

    acts = "|".join(rf"nn\.{m}|F\.{f}" for m, f, _ in mutations._ACTIVATIONS.values())
    parent, child = kids["activation"]
    assert sorted(set(_called(parent, acts))) != sorted(set(_called(child.code, acts)))
    assert len(_called(parent, acts)) == len(_called(child.code, acts))

    norms = r"nn\.(BatchNorm2d|GroupNorm)"
    parent, child = kids["norm"]
    assert len(_called(parent, norms)) == len(_called(child.code, norms))
    assert parent.count("nn.BatchNorm2d(") != child.code.count("nn.BatchNorm2d(") or (
        parent.count("nn.GroupNorm(1,") != child.code.count("nn.GroupNorm(1,")
    )


def test_mutations_are_deterministic(codes: list[str]) -> None:
    for kind in mutations.KINDS:
        a = mutations.mutate(codes[3], kind, random.Random(9))
        assert a == mutations.mutate(codes[3], kind, random.Random(9))
    tally: dict[str, list[int]] = {}
    first = mutations.children(codes, 10, random.Random(1), tally)
    assert first == mutations.children(codes, 10, random.Random(1))
    assert len(first) == 10 and sum(t[1] for t in tally.values()) == 10
    assert all(0 < tried[1] <= tried[0] for tried in tally.values())
    assert first != mutations.children(codes, 10, random.Random(2))


def test_a_failing_mutation_or_parent_gives_none() -> None:
    flat = "import torch\n\n\ndef supported_hyperparameters():\n    return set()\n"
    assert mutations.mutate(flat, "block", random.Random(0)) is None
    assert mutations.children([flat], 3, random.Random(0)) == []


def test_diffs_apply_to_the_parent(codes: list[str]) -> None:
    for parent, _, child in mutations.children(codes, 10, random.Random(4)):
        assert apply_diff(parent, make_diff(parent, child.code)) == child.code


def test_plain_pairs_are_unchanged_and_come_first(codes: list[str]) -> None:
    plain = corpus_pairs(codes[:8], 3)
    assert hashlib.sha256(repr(plain).encode()).hexdigest() == PLAIN_PAIRS_SHA256
    assert corpus_pairs(codes[:8], 3, 0.25, 0.25)[:8] == plain


def test_edit_pairs(codes: list[str]) -> None:
    tally: dict[str, list[int]] = {}
    pairs = corpus_pairs(codes[:8], 3, 0.25, 0.25, tally)
    assert pairs == corpus_pairs(codes[:8], 3, 0.25, 0.25)
    edits = pairs[8:]
    assert len(edits) == 8 and sum(t[1] for t in tally.values()) == 8
    modes = []
    for prompt, answer in edits:
        head, rest = prompt.split("### Parent: accuracy ", 1)
        accuracy, params = re.match(r"(\d\.\d{4}), (\d+) parameters\n", rest).groups()  # type: ignore[union-attr]
        parent = extract(rest)[0]
        assert parent is not None
        parent_code = next(c for c in codes[:8] if c.strip() == parent.strip())  # a network
        assert int(params) == count_parameters(parent_code, trainable_only=True)
        assert 0.2 <= float(accuracy) <= 0.99
        budget = int(re.search(r"at most (\d+) parameters\n", head).group(1))  # type: ignore[union-attr]
        assert f"Goal: accuracy above {accuracy} with at most {budget} parameters." in prompt
        if prompt.endswith("### Diff:\n"):
            modes.append("diff")
            diff = extract_diff(answer)
            assert diff is not None
            child = apply_diff(parent_code, diff)
        else:
            assert prompt.endswith("### Code:\n")
            modes.append("full")
            child = extract(answer)[0]  # type: ignore[assignment]
        assert child.strip() != parent_code.strip()
        assert 0 < mutations.check(child)[0] <= budget
    assert set(modes) == {"full", "diff"}
    assert corpus_pairs(codes[:8], 3, 0.25, 0.0)[8:] != edits  # the shares choose the modes
