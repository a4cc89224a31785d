"""Issue 22, item 1: the evaluator's descriptors of a valid candidate (multiply-adds of one
forward pass, depth, layer families), measured in the first score process of a real confined
evaluation; a network that breaks the counter keeps its status and goes without them."""

from __future__ import annotations

import os
from dataclasses import replace as dc_replace

import numpy as np
import pytest
from candidates import GOOD_FEATURES, GOOD_NET, protocol, replace, sandbox_data

from nasloop.v1 import common_pb2 as common
from services.evaluator import (
    report as wire,
)
from services.evaluator import (
    seccomp_filter,
)
from services.evaluator.confine import Limits, run_confined
from services.evaluator.datasets import SandboxData
from services.evaluator.task import Task

PROTOCOL = protocol(dataset="tiny", batch_size=16, seed=3, time_limit_s=60, max_parameters=100_000)
UID = 65534 if os.geteuid() == 0 else None
# One Conv2d(3, 8, 3) and one Linear at a 3x32x32 input, 10 classes.
SMALL_NET = replace(
    GOOD_FEATURES,
    "self.features = nn.Sequential(nn.Conv2d(in_shape[1], 8, 3), nn.ReLU())\n"
    "        self.head = nn.Linear(8 * 30 * 30, out_shape[0])",
)
# Conv: 8 x 30 x 30 outputs of 3 x 3 x 3 multiply-adds each; linear: 7200 inputs x 10 outputs.
SMALL_MACS = 8 * 30 * 30 * 27 + 7200 * 10
FORWARD = "        return self.head(torch.flatten(self.features(x), 1))"
# A forward that works everywhere except under a torch dispatch mode (the counter is one).
BREAKS_COUNTER = replace(
    FORWARD,
    "        from torch.utils._python_dispatch import _get_current_dispatch_mode\n"
    "        if _get_current_dispatch_mode() is not None:\n"
    "            raise RuntimeError('no counting')\n" + FORWARD,
)


@pytest.fixture(scope="module")
def data() -> SandboxData:
    return sandbox_data(768, 300, seed=4)


def run(code: str, data: SandboxData) -> wire.Report:
    limits = Limits(
        wall_s=60.0, cpu_s=60.0, memory_bytes=1 << 30, file_bytes=1 << 20, open_files=64,
        uid=UID, gid=UID, seccomp=seccomp_filter.available(), output_tail_bytes=4096,
    )  # fmt: skip
    return run_confined(Task("t", code, dc_replace(PROTOCOL)), data, limits)


def test_a_small_network_gets_its_macs_depth_and_families(data: SandboxData) -> None:
    r = run(SMALL_NET, data)
    assert r.status == common.STATUS_OK, r.message
    assert (r.macs, r.depth, r.layer_families) == (
        SMALL_MACS,
        2,
        ["activation", "conv", "linear"],
    )
    e = r.evaluation(0)
    assert (e.macs, e.depth, e.layer_families) == (SMALL_MACS, 2, r.layer_families)


def test_a_network_that_breaks_the_counter_keeps_its_status_and_accuracy(
    data: SandboxData,
) -> None:
    plain, broken = run(GOOD_NET, data), run(BREAKS_COUNTER, data)
    assert plain.status == broken.status == common.STATUS_OK, broken.message
    assert plain.macs > 0 and plain.depth == 5
    assert plain.layer_families == ["activation", "conv", "linear", "norm", "pooling"]
    assert (broken.macs, broken.depth, broken.layer_families) == (0, 0, [])
    assert plain.outputs is not None and broken.outputs is not None
    np.testing.assert_array_equal(plain.outputs, broken.outputs)


def test_the_descriptors_cross_the_wire_and_a_bad_one_is_left_out() -> None:
    r = wire.Report(status=common.STATUS_OK, macs=7, depth=2, layer_families=["conv", "linear"])
    back = wire.decode(wire.encode(r))
    assert (back.macs, back.depth, back.layer_families) == (7, 2, ["conv", "linear"])
    r.layer_families = ["not-a-family"]
    back = wire.decode(wire.encode(r))
    assert (back.status, back.macs, back.layer_families) == (common.STATUS_OK, 0, [])
    with pytest.raises(wire.ReportError):
        wire.decode_descriptors(b'{"macs": -1}')
