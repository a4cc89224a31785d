"""LEMUR compatibility (issue 11): LEMUR-style networks pass, prm has every declared name, the
transforms and the per-protocol parameter limit, the message for a missing torchvision."""

from __future__ import annotations

import importlib.util
from dataclasses import replace as dc_replace

import pytest
import torch
from candidates import protocol, sandbox_data
from lemur_nets import (
    ALEXNET_STYLE,
    EXTRA_HYPERPARAMETERS,
    NETS,
    TORCHVISION_OPS,
    WIDE_CLASSIC,
    lemur_outcomes,
)

from nasloop.config import EvaluatorConfig
from nasloop.protocol import PAPER_MAX_PARAMETERS
from nasloop.rpc import InvalidArgument
from nasloop.v1 import common_pb2 as common
from services.evaluator import lemur, protocols
from services.evaluator.datasets import SandboxData
from services.evaluator.harness import Harness, epoch_stream, with_versions
from services.evaluator.policy import static_check
from services.evaluator.task import Task

PROTOCOL = protocol(dataset="tiny", batch_size=8, seed=3, time_limit_s=60, max_parameters=100_000)
HAS_TORCHVISION = importlib.util.find_spec("torchvision") is not None


@pytest.fixture(scope="module")
def data() -> SandboxData:
    return sandbox_data(32, 8, seed=2)


def run(
    code: str, data: SandboxData, mode: str = "evaluate", **proto: object
) -> tuple[str, Harness]:
    task = Task("t", code, dc_replace(PROTOCOL, **proto), mode)  # type: ignore[arg-type]
    h = Harness(task, data)
    r = h.run()
    return common.Status.Name(r.status), h


def test_lemur_style_networks_pass(data: SandboxData) -> None:
    outcomes = lemur_outcomes(data)
    expected = "STATUS_IMPORT_ERROR" if not HAS_TORCHVISION else "STATUS_OK"
    assert outcomes == {n: expected if n == "torchvision_ops" else "STATUS_OK" for n in NETS}


def test_every_declared_hyperparameter_gets_a_value(data: SandboxData) -> None:
    status, h = run(EXTRA_HYPERPARAMETERS, data)
    assert status == "STATUS_OK", h.report.message
    hp = h.report.hyperparameters
    assert hp["alpha"] == lemur.FALLBACK and hp["weight_decay"] == lemur.DEFAULTS["weight_decay"]
    assert hp["lr"] == PROTOCOL.lr and hp["batch"] == PROTOCOL.batch_size


@pytest.mark.parametrize("value", ["'lr'", "42", "{'lr': 1}.items()", "{1, 2}"])
def test_a_malformed_declaration_is_a_missing_entry_point(data: SandboxData, value: str) -> None:
    code = EXTRA_HYPERPARAMETERS.replace("{'lr', 'momentum', 'weight_decay', 'alpha'}", value)
    status, h = run(code, data)
    assert status == "STATUS_MISSING_ENTRY_POINT" and "supported_hyperparameters" in (
        h.report.message
    )


def test_small_inputs_fail_where_lemur_would_resize(data: SandboxData) -> None:
    status, _ = run(ALEXNET_STYLE, data)
    assert status == "STATUS_FORWARD_EXCEPTION"


def test_the_parameter_limit_is_the_protocols(data: SandboxData) -> None:
    status, h = run(WIDE_CLASSIC, data, mode="validate")
    assert status == "STATUS_PARAMETER_LIMIT"
    assert h.report.parameter_count > 20_000_000


@pytest.mark.skipif(HAS_TORCHVISION, reason="torchvision is installed here")
def test_a_missing_torchvision_is_named(data: SandboxData) -> None:
    status, h = run(TORCHVISION_OPS, data)
    assert status == "STATUS_IMPORT_ERROR"
    assert "missing module 'torchvision'" in h.report.message
    assert "GPU images" in h.report.message


def test_policy_lets_common_model_code_pass() -> None:
    code = (
        "class A:\n"
        "    def f(self):\n"
        "        setattr(self, 'x', 1)\n"
        "        delattr(self, 'x')\n"
        "        return self.__class__.__name__, type(self).__name__, getattr(self, 'y', 0)\n"
    )
    assert static_check(code, 1 << 20).status == common.STATUS_OK
    for attack in ("().__class__.__bases__[0].__subclasses__()", "__import__('os')"):
        assert static_check(attack, 1 << 20).status == common.STATUS_FORBIDDEN_CONSTRUCT


# --- transforms -------------------------------------------------------------------------------


def test_transforms_resize_crop_and_flip() -> None:
    x = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).view(2, 3, 32, 32)
    t = lemur.Transform(64, crop=True, flip=True)
    a = t.train(x, torch.Generator().manual_seed(0))
    b = t.train(x, torch.Generator().manual_seed(0))
    assert a.shape == (2, 3, 64, 64) and torch.equal(a, b)  # seeded
    assert not torch.equal(a, t.train(x, torch.Generator().manual_seed(1)))
    assert t.test(x).shape == (2, 3, 64, 64)
    flipped = lemur.Transform(flip=True).train(x, torch.Generator().manual_seed(3))
    assert all(
        torch.equal(f, o) or torch.equal(f, o.flip(-1)) for f, o in zip(flipped, x, strict=True)
    )
    assert lemur.Transform().test(x) is x and not lemur.Transform().active


def test_the_stream_and_the_network_see_the_protocols_input_size(data: SandboxData) -> None:
    task = Task("t", ALEXNET_STYLE, dc_replace(PROTOCOL, input_size=64, horizontal_flip=True))
    shapes = {tuple(x.shape[1:]) for x, _ in epoch_stream(data, task, 0)}
    assert shapes == {(3, 64, 64)}


# --- protocols --------------------------------------------------------------------------------


def test_the_paper_preset_is_lemurs_default_transform() -> None:
    cfg = EvaluatorConfig()
    p = protocols.resolve(common.EvaluationProtocol(name="paper"), cfg)
    assert (p.dataset, p.input_size, p.random_resized_crop, p.horizontal_flip) == (
        "cifar10",
        256,
        False,  # norm_256_flip: Resize(256), CenterCrop(256), no random resized crop
        True,
    )
    assert p.max_parameters == PAPER_MAX_PARAMETERS > cfg.max_parameters
    q = protocols.resolve(
        common.EvaluationProtocol(name="paper", input_size=224, horizontal_flip=False), cfg
    )
    assert (q.input_size, q.random_resized_crop, q.horizontal_flip) == (224, False, False)


@pytest.mark.parametrize(("name", "limit"), [("", 20_000_001), ("paper", PAPER_MAX_PARAMETERS + 1)])
def test_a_request_cannot_raise_the_protocols_limit(name: str, limit: int) -> None:
    msg = common.EvaluationProtocol(name=name, max_parameters=limit)
    with pytest.raises(InvalidArgument, match="limit"):
        protocols.resolve(msg, EvaluatorConfig())


def test_input_size_is_bounded() -> None:
    with pytest.raises(InvalidArgument, match="input_size"):
        protocols.resolve(common.EvaluationProtocol(input_size=5000), EvaluatorConfig())


class _Checked(torch.nn.Linear):
    """Refuses a state without its version, as torchvision's MNASNet does."""

    _version = 2

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args) -> None:  # type: ignore[no-untyped-def]
        assert local_metadata.get("version") == 2, f"{prefix}: {local_metadata}"
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args)


def test_a_state_loads_with_the_versions_of_every_module_name() -> None:
    shared = _Checked(2, 2)
    net = torch.nn.ModuleDict({"a": shared, "b": shared, "c": _Checked(2, 3)})
    plain = {k: v.clone() for k, v in net.state_dict().items()}  # as safetensors: no metadata
    with pytest.raises(AssertionError):
        net.load_state_dict(plain)
    net.load_state_dict(with_versions(plain, net), strict=True)
