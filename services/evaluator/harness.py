"""The candidate's side of an evaluation: import → instantiate → forward probe → train → predict.

Runs inside the sandbox, in a child that serves exactly one candidate. It never sees test labels:
it returns the network's outputs on the test inputs and the evaluator scores them. Nothing is
repaired; the first failure ends the run with its status.
"""

from __future__ import annotations

import math
import resource
import time
import types
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from nasloop.v1 import common_pb2 as common
from services.evaluator import lemur
from services.evaluator.accounting import (
    EpochStream,
    TrainingMeter,
    state_fingerprint,
    tensor_elements,
)
from services.evaluator.datasets import SandboxData
from services.evaluator.report import Report, short
from services.evaluator.task import Task

Progress = Callable[[Report], None]
TestInputs = Callable[[], torch.Tensor]
REQUIRED_METHODS = ("train_setup", "learn", "forward")
PROBE_BATCH = 4
EVAL_BATCH = 256


class _Stop(Exception):
    """Ends the run; the report already holds the failure."""


def _classify(exc: BaseException, default: int) -> int:
    """Map an exception raised by candidate code to a status."""
    if isinstance(exc, MemoryError):
        return common.STATUS_OUT_OF_MEMORY
    text = str(exc)
    if type(exc).__name__ == "OutOfMemoryError" or "CUDA out of memory" in text:
        return common.STATUS_CUDA_OUT_OF_MEMORY
    if isinstance(exc, RuntimeError) and (
        "can't allocate memory" in text or "not enough memory" in text
    ):
        return common.STATUS_OUT_OF_MEMORY
    return default


def _describe(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"SystemExit({exc.code!r}) raised by the candidate"
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        where = (
            "; torchvision is installed only where it runs beside torch (the GPU images)"
            if exc.name.split(".")[0] == "torchvision"
            else ""
        )
        return (
            f"missing module {exc.name!r}: the sandbox provides torch, numpy and the "
            f"standard library{where}"
        )
    return f"{type(exc).__name__}: {short(str(exc))}" if str(exc) else type(exc).__name__


class _LossRecorder:
    """Wraps a loss function to record the loss values the candidate's learn() computes."""

    def __init__(self, fn: Any, sink: list[torch.Tensor]) -> None:
        self._fn, self._sink = fn, sink

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        out = self._fn(*args, **kwargs)
        if isinstance(out, torch.Tensor) and out.numel() == 1:
            self._sink.append(out.detach().reshape(()))
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fn, name)


def _record_losses(net: nn.Module, sink: list[torch.Tensor]) -> None:
    crit = getattr(net, "criteria", None)
    if isinstance(crit, tuple | list):
        wrapped = [_LossRecorder(c, sink) if callable(c) else c for c in crit]
        object.__setattr__(net, "criteria", type(crit)(wrapped))
    elif callable(crit):
        object.__setattr__(net, "criteria", _LossRecorder(crit, sink))


def train_size(data: SandboxData, task: Task) -> int:
    p = task.protocol
    return len(data.train_x) if not p.train_subset else min(p.train_subset, len(data.train_x))


def transform(task: Task) -> lemur.Transform:
    p = task.protocol
    return lemur.Transform(p.input_size, p.random_resized_crop, p.horizontal_flip)


def batches(data: SandboxData, task: Task, epoch: int) -> Iterator[tuple[torch.Tensor, ...]]:
    """One epoch of shuffled (inputs, labels) batches, reproducible from the protocol's seed,
    through the protocol's transforms."""
    p = task.protocol
    n = train_size(data, task)
    g = torch.Generator().manual_seed(p.seed + epoch)
    order = torch.randperm(n, generator=g).to(data.train_x.device)
    tf = transform(task)
    aug = torch.Generator().manual_seed(p.seed + epoch + 7919)
    for i in range(0, n, p.batch_size):
        idx = order[i : i + p.batch_size]
        x = data.train_x[idx]
        yield (tf.train(x, aug) if tf.active else x), data.train_y[idx]


def epoch_stream(data: SandboxData, task: Task, epoch: int) -> EpochStream:
    n, bs = train_size(data, task), task.protocol.batch_size
    return EpochStream(batches(data, task, epoch), math.ceil(n / bs), n, bs)


class Harness:
    """``test_inputs`` hands over the test inputs once training is over (in the sandbox they
    arrive from the trusted parent, in a secret order); without it ``data.test_x`` is used."""

    def __init__(
        self,
        task: Task,
        data: SandboxData,
        progress: Progress | None = None,
        test_inputs: TestInputs | None = None,
    ) -> None:
        self.task, self.data = task, data
        self.progress = progress or (lambda r: None)
        self.test_inputs = test_inputs
        self.report = Report()
        self.device = torch.device(task.protocol.device)
        self.meter = TrainingMeter()
        self.prm: dict[str, float] = task.protocol.prm()
        self.transform = transform(task)

    def _stage(self, stage: int, fn: Callable[[], Any], status: int) -> Any:
        """Run one stage; record it as passed or fail the report with ``status``."""
        t0 = time.perf_counter()
        try:
            out = fn()
        except _Stop:
            raise
        except BaseException as e:  # SystemExit, KeyboardInterrupt: candidate failures too
            self.report.fail(_classify(e, status), _describe(e))
            raise _Stop from None
        self.report.passed(stage, time.perf_counter() - t0)
        self.progress(self.report)
        return out

    def _fail(self, status: int, message: str) -> None:
        self.report.fail(status, message)
        raise _Stop

    def run(self) -> Report:
        # The static stages ran in the evaluator; record them as passed.
        self.report.last_stage = common.STAGE_POLICY
        self.meter.install()
        try:
            module = self._stage(common.STAGE_IMPORTED, self._import, common.STATUS_IMPORT_ERROR)
            net = self._stage(
                common.STAGE_INSTANTIATED, lambda: self._build(module), common.STATUS_INIT_EXCEPTION
            )
            self._stage(
                common.STAGE_FORWARD_PROBE,
                lambda: self._probe(net),
                common.STATUS_FORWARD_EXCEPTION,
            )
            if self.task.mode == "validate":
                self.report.status = common.STATUS_OK
                return self.report
            self._stage(
                common.STAGE_TRAINED, lambda: self._train(net), common.STATUS_TRAIN_EXCEPTION
            )
            self._predict(net)
            self.report.status = common.STATUS_OK
        except _Stop:
            pass
        finally:
            self.meter.remove()
            self.report.peak_memory_bytes = (
                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            )
        return self.report

    def _import(self) -> types.ModuleType:
        module = types.ModuleType("candidate")
        exec(compile(self.task.code, "<candidate>", "exec"), module.__dict__)
        hp = getattr(module, "supported_hyperparameters", None)
        net_cls = getattr(module, "Net", None)
        if not callable(hp):
            self._fail(common.STATUS_MISSING_ENTRY_POINT, "no supported_hyperparameters() function")
        if not (isinstance(net_cls, type) and issubclass(net_cls, nn.Module)):
            self._fail(common.STATUS_MISSING_ENTRY_POINT, "no class Net(nn.Module)")
        missing = [m for m in REQUIRED_METHODS if not callable(getattr(net_cls, m, None))]
        if missing:
            self._fail(common.STATUS_MISSING_ENTRY_POINT, f"Net lacks {', '.join(missing)}")
        try:
            declared = lemur.declared_names(hp())
        except ValueError as e:
            self._fail(common.STATUS_MISSING_ENTRY_POINT, str(e))
        self.prm = lemur.resolve_prm(declared, self.task.protocol.prm())
        self.report.hyperparameters = {k: float(v) for k, v in self.prm.items()}
        return module

    def _build(self, module: types.ModuleType) -> nn.Module:
        p = self.task.protocol
        torch.manual_seed(p.seed)
        c, h, w = self.data.train_x.shape[1:]
        in_shape = (p.batch_size, c, *self.transform.out_hw((h, w)))
        out_shape = (int(self.data.num_classes),)
        net = module.Net(in_shape, out_shape, dict(self.prm), self.device)
        if not isinstance(net, nn.Module):
            self._fail(common.STATUS_INIT_EXCEPTION, "Net(...) did not return an nn.Module")
        self._check_parameters(net)
        return net.to(self.device)

    def _check_parameters(self, net: nn.Module) -> None:
        # Every tensor of the tree, frozen ones too (a network frozen when counted could
        # unfreeze later), whatever the candidate's own parameters() returns.
        count = tensor_elements(net)
        self.report.parameter_count = max(self.report.parameter_count, int(count))
        limit = self.task.protocol.max_parameters
        if count > limit:
            self._fail(common.STATUS_PARAMETER_LIMIT, f"{count:,} parameters, limit {limit:,}")

    def _probe(self, net: nn.Module) -> None:
        x = self.transform.test(self.data.train_x[: min(PROBE_BATCH, len(self.data.train_x))])
        net.eval()
        self.meter.phase, self.meter.probe_batch = "probe", len(x)
        try:
            with torch.no_grad():
                out = net(x)
        finally:
            self.meter.phase = "off"
        self._check_parameters(net)  # lazy modules are materialised now
        want = (len(x), int(self.data.num_classes))
        if not isinstance(out, torch.Tensor):
            self._fail(common.STATUS_WRONG_OUTPUT_SHAPE, f"forward returned {type(out).__name__}")
        if tuple(out.shape) != want:
            self._fail(
                common.STATUS_WRONG_OUTPUT_SHAPE,
                f"output shape {tuple(out.shape)}, expected {want}",
            )

    def _train(self, net: nn.Module) -> None:
        t0 = time.perf_counter()
        net.train()
        net.train_setup(dict(self.prm))
        losses: list[torch.Tensor] = []
        _record_losses(net, losses)
        samples = steps = 0
        self.meter.phase = "train"
        try:
            for epoch in range(self.task.protocol.epochs):
                losses.clear()
                net.train()
                stream = epoch_stream(self.data, self.task, epoch)
                samples, steps = samples + stream.dataset.__len__(), steps + len(stream)
                net.learn(stream)
        finally:
            self.meter.phase = "off"
        self._check_budget(samples, steps)
        if losses:
            values = torch.stack([v.float().cpu() for v in losses])
            loss = float(values.mean())
            finite = bool(torch.isfinite(values).all())
        else:  # the candidate's learn() did not use self.criteria: measure the loss ourselves
            loss, finite = self._own_loss(net)
        self.report.loss = loss if math.isfinite(loss) else 0.0
        self.report.train_seconds = time.perf_counter() - t0
        self._check_parameters(net)  # the network may have grown while training
        if not finite:
            self._fail(common.STATUS_NON_FINITE_LOSS, f"training loss is not finite ({loss})")

    def _check_budget(self, samples: int, steps: int) -> None:
        """One pass means one: no more samples per module, no more updates per parameter."""
        self.report.trained_samples = self.meter.trained_samples()
        self.report.optimizer_steps = self.meter.max_updates()
        if not self.meter.intact():
            self._fail(common.STATUS_PROTOCOL_VIOLATION, "the training counters were removed")
        why = self.meter.excess(samples, steps)
        if why is not None:
            self._fail(common.STATUS_PROTOCOL_VIOLATION, why)

    def _own_loss(self, net: nn.Module) -> tuple[float, bool]:
        net.eval()
        total, count = 0.0, 0
        with torch.no_grad():
            for x, y in batches(self.data, self.task, 0):
                total += float(nn.functional.cross_entropy(net(x), y, reduction="sum"))
                count += len(y)
                if count >= 1024:
                    break
        loss = total / max(count, 1)
        return loss, math.isfinite(loss)

    def _test_x(self) -> torch.Tensor:
        if self.test_inputs is not None:
            return self.test_inputs().to(self.device)
        p = self.task.protocol
        return self.data.test_x if not p.test_subset else self.data.test_x[: p.test_subset]

    def _predict(self, net: nn.Module) -> None:
        t0 = time.perf_counter()
        test_x = self._test_x()
        outs = []
        try:
            net.eval()
            before = state_fingerprint(net)
            with torch.inference_mode():
                for i in range(0, len(test_x), EVAL_BATCH):
                    out = net(self.transform.test(test_x[i : i + EVAL_BATCH]))
                    if not isinstance(out, torch.Tensor) or out.dim() != 2:
                        self._fail(common.STATUS_EVAL_EXCEPTION, "forward gave no 2-D tensor")
                    outs.append(out.detach().float().cpu())
            outputs = torch.cat(outs)
            changed = state_fingerprint(net) != before
        except _Stop:
            raise
        except BaseException as e:
            self._fail(_classify(e, common.STATUS_EVAL_EXCEPTION), _describe(e))
        if changed:
            self._fail(
                common.STATUS_PROTOCOL_VIOLATION,
                "parameters or buffers changed while the test inputs were scored",
            )
        if tuple(outputs.shape) != (len(test_x), int(self.data.num_classes)):
            self._fail(common.STATUS_EVAL_EXCEPTION, f"test outputs shape {tuple(outputs.shape)}")
        if not bool(torch.isfinite(outputs).all()):
            self._fail(common.STATUS_EVAL_EXCEPTION, "test outputs are not finite")
        self.report.outputs = outputs.numpy()
        self.report.eval_seconds = time.perf_counter() - t0
