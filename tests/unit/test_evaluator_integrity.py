"""Issue 11: one epoch means one, every tensor counts, the test inputs arrive late and shuffled,
LEMUR's networks get what they declare, and the trusted side survives what a sandbox sends.

In-process harness runs and forked, confined children (no bubblewrap; the adversarial suite
runs the same attacks through the strict sandbox).
"""

from __future__ import annotations

import ast
import os
import sys
from dataclasses import replace as dc_replace

import pytest
import torch
from adversarial.integrity import nested_frame
from candidates import GOOD_NET, protocol, replace, sandbox_data, with_prefix

from nasloop.v1 import common_pb2 as common
from services.evaluator import report as wire
from services.evaluator import seccomp_filter
from services.evaluator.accounting import EpochStream, tensor_elements
from services.evaluator.confine import Limits, _parse_frames, run_confined
from services.evaluator.datasets import SandboxData
from services.evaluator.frames import frame
from services.evaluator.harness import Harness, epoch_stream
from services.evaluator.task import Task

PROTOCOL = protocol(dataset="tiny", batch_size=8, seed=3, time_limit_s=30, max_parameters=100_000)
UID = 65534 if os.geteuid() == 0 else None
LEARN_LOOP = "for inputs, labels in train_data:"


@pytest.fixture(scope="module")
def data() -> SandboxData:
    return sandbox_data(64, 20, seed=1)


def task(code: str = GOOD_NET, **proto: object) -> Task:
    return Task("t", code, dc_replace(PROTOCOL, **proto))  # type: ignore[arg-type]


def limits() -> Limits:
    return Limits(
        wall_s=30.0, cpu_s=30.0, memory_bytes=1 << 30, file_bytes=1 << 20, open_files=64,
        uid=UID, gid=UID, seccomp=seccomp_filter.available(), output_tail_bytes=4096,
    )  # fmt: skip


def status(r: wire.Report) -> str:
    return common.Status.Name(r.status)


# --- one epoch means one ----------------------------------------------------------------------


def test_the_stream_is_one_pass_with_dataloader_attributes(data: SandboxData) -> None:
    s = epoch_stream(data, task(), 0)
    assert isinstance(s, EpochStream)
    assert (len(s), len(s.dataset), s.batch_size) == (8, 64, 8)
    first = [y.tolist() for _, y in s]
    assert len(first) == 8 and list(s) == []  # iterating again yields nothing
    assert (s.batches, s.samples) == (8, 64)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        # kept batches replayed: 8x the samples
        (replace(LEARN_LOOP, "kept = list(train_data)\n        for inputs, labels in kept * 8:"),
         "STATUS_PROTOCOL_VIOLATION"),
        # a second optimizer over the same parameters
        (replace("self.optimizer.step()",
                 "self.optimizer.step()\n"
                 "            self.other = getattr(self, 'other', None) or "
                 "torch.optim.SGD(self.parameters(), lr=0.01)\n"
                 "            self.other.step()"),
         "STATUS_PROTOCOL_VIOLATION"),
        # submodules called one by one, each sample once: honest
        (replace("loss = self.criteria[0](self(inputs), labels)",
                 "loss = self.criteria[0](self.head(torch.flatten(self.features(inputs), 1)), "
                 "labels)"),
         "STATUS_OK"),
        # iterating the epoch twice trains on it once
        (replace(LEARN_LOOP, "for _ in range(3):\n          for inputs, labels in train_data:"),
         "STATUS_OK"),
    ],
)  # fmt: skip
def test_training_beyond_one_pass_is_a_violation(
    data: SandboxData, change: str, expected: str
) -> None:
    r = Harness(task(change), data).run()
    assert status(r) == expected, r.message
    if expected == "STATUS_OK":
        assert r.trained_samples == 64 and r.optimizer_steps == 8


def test_a_network_that_changes_while_scored_is_a_violation(data: SandboxData) -> None:
    code = replace(
        "return self.head(torch.flatten(self.features(x), 1))",
        "if not self.training and x.shape[0] > 4:\n"
        "            self.features.train()\n"
        "        return self.head(torch.flatten(self.features(x), 1))",
    )
    r = Harness(task(code), data).run()
    assert status(r) == "STATUS_PROTOCOL_VIOLATION"
    assert "while the test inputs were scored" in r.message


def test_removing_the_counters_is_a_violation(data: SandboxData) -> None:
    clear = "import torch.optim.optimizer as _o\n        _o._global_optimizer_pre_hooks.clear()"
    code = replace(LEARN_LOOP, f"{clear}\n        {LEARN_LOOP}")
    r = Harness(task(code), data).run()
    assert status(r) == "STATUS_PROTOCOL_VIOLATION" and "counters" in r.message


def test_forged_counts_above_the_budget_are_caught_by_the_trusted_side(data: SandboxData) -> None:
    # The harness's own counter is rewritten from inside the candidate's process.
    code = with_prefix(
        "import services.evaluator.harness as _h\n"
        "_orig = _h.Harness._check_budget\n"
        "def _forge(self, samples, steps):\n"
        "    _orig(self, samples, steps)\n"
        "    self.report.trained_samples = 10 ** 9\n"
        "_h.Harness._check_budget = _forge"
    )
    r = run_confined(task(code), data, limits())
    assert status(r) == "STATUS_PROTOCOL_VIOLATION", r.message
    assert "trained_samples" in r.informative and "parameter_count" in r.informative


# --- the test inputs arrive after training, shuffled ------------------------------------------


def test_test_inputs_are_not_in_the_child_while_it_trains(data: SandboxData) -> None:
    code = replace(
        LEARN_LOOP,
        "_f = torch.serialization.sys._getframe()\n"
        "        while _f is not None:\n"
        "            for _v in list(_f.f_locals.values()):\n"
        "                if getattr(_v, 'test_x', None) is not None:\n"
        "                    print('LEAK', type(_v).__name__)\n"
        "            _f = _f.f_back\n        " + LEARN_LOOP,
    )
    r = run_confined(task(code), data, limits())
    assert status(r) == "STATUS_OK", r.message
    assert "LEAK" not in r.output_tail


def _seen_order(data: SandboxData) -> list[float]:
    code = replace(
        "return self.head(torch.flatten(self.features(x), 1))",
        "if not self.training and x.shape[0] > 4:\n"
        "            print('ORDER', [round(v, 5) for v in x[:, 0, 0, 0].tolist()])\n"
        "        return self.head(torch.flatten(self.features(x), 1))",
    )
    r = run_confined(task(code), data, limits())
    assert status(r) == "STATUS_OK", r.message
    line = next(ln for ln in r.output_tail.splitlines() if ln.startswith("ORDER"))
    return ast.literal_eval(line.split(" ", 1)[1])


def test_test_order_is_secret_and_restored(data: SandboxData) -> None:
    public = [round(v, 5) for v in data.test_x[:, 0, 0, 0].tolist()]
    a, b = _seen_order(data), _seen_order(data)
    assert sorted(a) == sorted(public) == sorted(b)
    assert a != public and a != b  # 1 in 20! to fail by chance
    # The outputs come back in the original order: they match an unshuffled in-process run.
    confined = run_confined(task(), data, limits())
    local = Harness(task(), data).run()
    assert confined.outputs is not None and local.outputs is not None
    assert torch.allclose(torch.from_numpy(confined.outputs), torch.from_numpy(local.outputs),
                          atol=1e-4)  # fmt: skip


# --- the parameter count ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        # a large tensor the candidate's own parameters() leaves out
        replace("self.head = nn.Linear(32, out_shape[0])",
                "self.head = nn.Linear(32, out_shape[0])\n"
                "        self.bank = [torch.zeros(200_000)]\n\n"
                "    def parameters(self, recurse=True):\n"
                "        return self.head.parameters()"),
        # a buffer
        replace("self.head = nn.Linear(32, out_shape[0])",
                "self.head = nn.Linear(32, out_shape[0])\n"
                "        self.register_buffer('memory', torch.zeros(200_000))"),
        # a lazy module, materialised by the probe
        replace("nn.Linear(32, out_shape[0])", "nn.Sequential(nn.LazyLinear(5000), "
                "nn.Linear(5000, out_shape[0]))"),
    ],
)  # fmt: skip
def test_every_tensor_counts(data: SandboxData, change: str) -> None:
    r = Harness(task(change), data).run()
    assert status(r) == "STATUS_PARAMETER_LIMIT", r.message
    assert r.parameter_count > 100_000


def test_shared_tensors_count_once() -> None:
    lin = torch.nn.Linear(10, 10)
    net = torch.nn.Sequential(lin, lin)
    assert tensor_elements(net) == 110
    with torch.device("meta"):
        big = torch.nn.Linear(100_000, 10_000)
    assert tensor_elements(big) == 1_000_010_000


# --- the trusted side decodes defensively -----------------------------------------------------


def _nested_report() -> bytes:
    header = b"[" * 30000 + b"]" * 30000
    return b"NLR1" + len(header).to_bytes(4, "big") + header


def test_a_deeply_nested_report_is_a_malformed_report() -> None:
    with pytest.raises(wire.ReportError):
        wire.decode(_nested_report())
    setup, progress, final = _parse_frames(frame(b"S", b"") + frame(b"R", _nested_report()))
    assert setup and progress is None and final is None


def test_a_child_that_sends_a_nested_report_gets_no_result(data: SandboxData) -> None:
    code = nested_frame()
    r = run_confined(task(code), data, limits())
    assert status(r) == "STATUS_NO_RESULT", r.message


def test_the_worker_is_not_dumpable() -> None:
    import ctypes

    from services.evaluator.worker import not_dumpable

    pid = os.fork()
    if pid == 0:
        not_dumpable()
        os._exit(ctypes.CDLL(None).prctl(3, 0, 0, 0, 0))  # PR_GET_DUMPABLE
    _, code = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(code) == 0


def test_the_sandbox_view_has_no_scikit_learn() -> None:
    from services.evaluator import view

    names = {p.name for p in view.allowed_entries()}
    assert {"torch", "numpy"} <= names
    assert not {"sklearn", "scipy", "vllm", "transformers", "minio"} & names
    assert not any(n.startswith("scikit_learn") for n in names)
    assert sys.prefix  # the view is resolved from this interpreter's installation


# --- the evaluator's side of the worker pipe --------------------------------------------------

# A stand-in worker (no torch): for every request it first writes an answer carrying another
# request's number — what a candidate that reached the pipe could forge — then its own, or,
# for candidate "garbage", a malformed one.
FAKE_WORKER = """
import json, sys
from services.evaluator import report as wire
from services.evaluator.frames import read_frame, write_frame
from services.evaluator.report import Report

write_frame(1, b"H", b"")
while (f := read_frame(0)) is not None:
    if f[0] != b"T":
        continue
    req = json.loads(f[1])
    seq, cid = req["seq"], json.loads(req["task"])["candidate_id"]
    forged = Report(status=1, message="forged").fail(1, "forged")
    write_frame(1, b"R", (seq + 1).to_bytes(8, "big") + wire.encode(forged))
    if cid == "garbage":
        write_frame(1, b"R", seq.to_bytes(8, "big") + b"NLR1" + b"[" * 100)
        continue
    write_frame(1, b"R", seq.to_bytes(8, "big") + wire.encode(Report().fail(1, "real " + cid)))
"""


def test_answers_to_other_requests_are_never_taken(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import threading

    from services.evaluator.sandbox import PROJECT_ROOT, SandboxWorker

    env = {"PYTHONPATH": str(PROJECT_ROOT), "PATH": os.environ.get("PATH", "")}
    w = SandboxWorker("fake", [sys.executable, "-c", FAKE_WORKER], env)
    w.start()
    try:
        never = threading.Event()
        for cid in ("a", "b"):
            t = Task(cid, GOOD_NET, PROTOCOL)
            r = w.run(t, tmp_path / "data.npz", limits(), never)
            assert r.message == f"real {cid}"  # not the forged one, not the previous one's
        r = w.run(Task("garbage", GOOD_NET, PROTOCOL), tmp_path / "data.npz", limits(), never)
        assert status(r) == "STATUS_NO_RESULT" and "unreadable" in r.message
        assert not w.alive()  # replaced before the next candidate
        r = w.run(Task("c", GOOD_NET, PROTOCOL), tmp_path / "data.npz", limits(), never)
        assert r.message == "real c"
    finally:
        w.close()
