"""The seed architecture grammar: deterministic, distinct, policy-clean, valid and trainable.

Validation and training use the evaluator's in-process harness (the sandbox's own code path,
without the sandbox): all 1,000 networks pass the forward probe, and one network per family
trains for an epoch.
"""

from __future__ import annotations

import ast
import math
import random
import time
import types
from collections import Counter

import numpy as np
import pytest
import torch
from candidates import protocol
from torch import nn

from nasloop.corpus import grammar
from nasloop.fingerprint import TokenMode, minhash
from nasloop.v1 import common_pb2 as common
from services.evaluator.datasets import SandboxData
from services.evaluator.harness import Harness
from services.evaluator.policy import static_check
from services.evaluator.task import Task

COUNT = 1000
THRESHOLD = 0.85
MAX_CODE_BYTES = 256 * 1024
PROTOCOL = protocol(
    dataset="tiny", batch_size=16, seed=3, time_limit_s=120, max_parameters=5_000_000
)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def generated() -> tuple[list[grammar.SeedNet], float]:
    t0 = time.perf_counter()
    nets = grammar.generate(COUNT, seed=0)
    return nets, time.perf_counter() - t0


@pytest.fixture(scope="module")
def nets(generated: tuple[list[grammar.SeedNet], float]) -> list[grammar.SeedNet]:
    return generated[0]


@pytest.fixture(scope="module")
def data() -> SandboxData:
    g = torch.Generator().manual_seed(0)
    return SandboxData(
        torch.randn(64, 3, 32, 32, generator=g),
        torch.arange(64) % 10,
        torch.randn(16, 3, 32, 32, generator=g),
        10,
    )


def _sample(nets: list[grammar.SeedNet], k: int) -> list[grammar.SeedNet]:
    return random.Random(1).sample(nets, k)


def _validate(net: grammar.SeedNet, data: SandboxData) -> None:
    r = Harness(Task(net.id, net.code, PROTOCOL, "validate"), data).run()
    assert (r.status, r.last_stage) == (common.STATUS_OK, common.STAGE_FORWARD_PROBE), (
        net.id,
        net.family,
        r.message,
    )
    assert 0 < r.parameter_count <= 5_000_000, (net.id, r.parameter_count)


# --- determinism and the API ----------------------------------------------------------------


def test_generate_is_deterministic_by_seed() -> None:
    a, b = grammar.generate(40, seed=3), grammar.generate(40, seed=3)
    assert a == b
    assert [n.id for n in a] == [f"seed-{i:06d}" for i in range(40)]
    other = grammar.generate(40, seed=4)
    assert [n.code for n in other] != [n.code for n in a]
    assert grammar.generate(0) == []
    with pytest.raises(ValueError):
        grammar.generate(-1)


def test_sample_is_deterministic_by_rng() -> None:
    first = [grammar.sample(random.Random(7)) for _ in range(2)]
    assert first[0] == first[1]
    family, code = first[0]
    assert family in grammar.FAMILIES and "class Net(nn.Module)" in code


def test_generation_is_fast(generated: tuple[list[grammar.SeedNet], float]) -> None:
    nets, seconds = generated
    assert len(nets) == COUNT
    assert seconds < 60, f"{COUNT} networks took {seconds:.1f} s"


# --- distinctness and coverage --------------------------------------------------------------


def test_networks_are_pairwise_distinct(nets: list[grammar.SeedNet]) -> None:
    """Exhaustive MinHash comparison of all pairs: every estimate is below the threshold."""
    matrix = np.stack([minhash(n.code, TokenMode.CANONICAL, 7, 128) for n in nets])
    worst = 0.0
    for start in range(0, len(matrix), 100):
        block = matrix[start : start + 100]
        sims = (block[:, None, :] == matrix[None, :, :]).mean(axis=2)
        for i in range(len(block)):
            sims[i, start + i] = 0.0  # a network against itself
        worst = max(worst, float(sims.max()))
    assert worst < THRESHOLD, worst
    assert len({n.code for n in nets}) == len(nets)


def test_families_are_covered(nets: list[grammar.SeedNet]) -> None:
    counts = Counter(n.family for n in nets)
    assert set(counts) <= set(grammar.FAMILIES)
    assert len(counts) >= 8, counts
    assert len(counts) == len(grammar.FAMILIES), counts  # every family at this size
    assert max(counts.values()) <= 0.15 * len(nets), counts


def test_choices_are_covered(nets: list[grammar.SeedNet]) -> None:
    """The style and training choices the grammar promises all occur."""
    corpus = "\n".join(n.code for n in nets)
    for needle in [
        "nn.ReLU(",
        "nn.GELU(",
        "nn.SiLU(",
        "nn.LeakyReLU(",
        "nn.Hardswish(",
        "nn.ELU(",
        "nn.BatchNorm2d(",
        "nn.GroupNorm(1, ",
        "nn.MaxPool2d(",
        "nn.AvgPool2d(",
        "stride=2",
        "groups=",
        "torch.cat(",
        "nn.MultiheadAttention(",
        "torch.softmax(",
        "torch.sigmoid(",
        "nn.Dropout(",
        "torch.optim.SGD(",
        "torch.optim.Adam(",
        "torch.optim.AdamW(",
        "torch.optim.RMSprop(",
        "weight_decay=",
        "label_smoothing=",
        "clip_grad_norm_(",
        "nn.AdaptiveAvgPool2d(1)",
        "kernel_size=1)",
    ]:
        assert needle in corpus, needle
    assert any(".GroupNorm(" not in n.code and ".BatchNorm2d(" not in n.code for n in nets)


# --- static properties of every network -----------------------------------------------------


def test_every_network_passes_the_policy(nets: list[grammar.SeedNet]) -> None:
    for net in nets:
        report = static_check(net.code, MAX_CODE_BYTES)
        assert report.status == common.STATUS_OK, (net.id, report.message)


def _declared_and_used(code: str) -> tuple[set[str], set[str]]:
    tree = ast.parse(code)
    declared: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "supported_hyperparameters":
            ret = node.body[-1]
            assert isinstance(ret, ast.Return) and isinstance(ret.value, ast.Set)
            declared = {ast.literal_eval(e) for e in ret.value.elts}
    used = {
        node.slice.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Subscript)
        and isinstance(node.value, ast.Name)
        and node.value.id == "prm"
        and isinstance(node.slice, ast.Constant)
    }
    return declared, used


def test_supported_hyperparameters_are_exactly_those_used(nets: list[grammar.SeedNet]) -> None:
    seen: Counter[frozenset[str]] = Counter()
    for net in nets:
        declared, used = _declared_and_used(net.code)
        assert declared == used, (net.id, declared, used)
        assert "lr" in used and used <= {"lr", "momentum", "dropout"}, (net.id, used)
        seen[frozenset(used)] += 1
    assert len(seen) >= 3, seen  # with and without momentum / dropout


def test_code_reads_like_hand_written_modules(nets: list[grammar.SeedNet]) -> None:
    for net in nets:
        tree = ast.parse(net.code)
        names = [n.name for n in tree.body if isinstance(n, ast.ClassDef | ast.FunctionDef)]
        assert names[-1] == "Net" and "supported_hyperparameters" in names, net.id
        helpers = set(names) - {"Net", "supported_hyperparameters"}
        assert helpers, f"{net.id} has no helper block"
        net_cls = tree.body[-1]
        assert isinstance(net_cls, ast.ClassDef)
        methods = {f.name for f in net_cls.body if isinstance(f, ast.FunctionDef)}
        assert {"__init__", "forward", "train_setup", "learn"} <= methods, net.id
        assert max(len(line) for line in net.code.splitlines()) <= 100, net.id


# --- running them ---------------------------------------------------------------------------


def test_all_networks_validate(nets: list[grammar.SeedNet], data: SandboxData) -> None:
    for net in nets:
        _validate(net, data)


def _instantiate(code: str, in_shape: tuple[int, ...], classes: int) -> nn.Module:
    module = types.ModuleType("candidate")
    exec(compile(code, "<candidate>", "exec"), module.__dict__)
    torch.manual_seed(0)
    prm = {"lr": 0.01, "momentum": 0.9, "dropout": 0.2, "batch": in_shape[0]}
    return module.Net(in_shape, (classes,), prm, torch.device("cpu")).eval()


def test_any_input_channels_and_class_count(nets: list[grammar.SeedNet]) -> None:
    for net in _sample(nets, 40):
        for channels, classes in ((1, 100), (4, 2)):
            model = _instantiate(net.code, (2, channels, 32, 32), classes)
            with torch.no_grad():
                out = model(torch.randn(2, channels, 32, 32))
            assert out.shape == (2, classes), (net.id, net.family, channels)


def _macs(code: str) -> int:
    """Multiply-accumulates of convolutions and linear layers for one 3x32x32 image."""
    net = _instantiate(code, (1, 3, 32, 32), 10)
    total = 0

    def hook(m: nn.Module, _inputs: object, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(m, nn.Conv2d):
            total += out.numel() * (m.in_channels // m.groups) * math.prod(m.kernel_size)
        elif isinstance(m, nn.Linear):
            total += out.numel() * m.in_features

    handles = [m.register_forward_hook(hook) for m in net.modules()]
    with torch.no_grad():
        net(torch.randn(1, 3, 32, 32))
    for h in handles:
        h.remove()
    return total


def test_compute_stays_within_the_budget(nets: list[grammar.SeedNet]) -> None:
    macs = [_macs(net.code) for net in _sample(nets, 60)]
    assert max(macs) <= 1.2 * grammar.MAX_MACS, max(macs)
    assert float(np.median(macs)) <= 0.6 * grammar.MAX_MACS


def test_one_network_per_family_trains(nets: list[grammar.SeedNet], data: SandboxData) -> None:
    firsts: dict[str, grammar.SeedNet] = {}
    for net in nets:
        firsts.setdefault(net.family, net)
    assert len(firsts) >= 10
    for family, net in sorted(firsts.items()):
        r = Harness(Task(net.id, net.code, PROTOCOL, "evaluate"), data).run()
        assert (r.status, r.last_stage) == (common.STATUS_OK, common.STAGE_TRAINED), (
            family,
            net.id,
            r.message,
        )
        assert math.isfinite(r.loss) and 0 < r.loss < 20, (family, r.loss)
        assert r.outputs is not None and r.outputs.shape == (16, 10)
