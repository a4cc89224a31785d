"""The candidate's side of an evaluation, in three phases.

* *build*: import → instantiate → forward probe (on a synthetic batch) → ``train_setup``; no
  training or test data exists in the process yet;
* *train*: ``learn()`` gets the training batches one by one as it asks for them (in the sandbox
  they come over a pipe from the trusted parent, which times each request); afterwards the
  model's ``state_dict`` is exported as safetensors bytes (:mod:`services.evaluator.statefile`);
* *score*: :class:`Scorer`, in a fresh process, builds the architecture again, loads only that
  exported state and returns the network's outputs on the test inputs it is handed; the first
  score process then runs the reference training step the epoch check is calibrated on
  (:meth:`Scorer.reference`).

It never sees test labels: the evaluator scores the outputs. Nothing is repaired; the first
failure ends the run with its status. :meth:`Harness.run` runs all three phases in this one
process (tests, benchmarks); the sandbox (:mod:`services.evaluator.confine`) runs the train
phases and each score chunk in separate confined processes.
"""

from __future__ import annotations

import contextlib
import io
import math
import resource
import time
import types
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from nasloop.v1 import common_pb2 as common
from services.evaluator import lemur, statefile
from services.evaluator.accounting import (
    Batch,
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


def batches(data: SandboxData, task: Task, epoch: int) -> Iterator[Batch]:
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


@dataclass(frozen=True)
class Geometry:
    """What the build phase knows of the data: shapes and sizes, no values."""

    image_shape: tuple[int, int, int]  # (C, H, W) as stored
    num_classes: int
    train_size: int

    @classmethod
    def of(cls, data: SandboxData, task: Task) -> Geometry:
        c, h, w = (int(d) for d in data.train_x.shape[1:])
        return cls((c, h, w), int(data.num_classes), train_size(data, task))


Batches = Callable[[int], EpochStream]


class Harness:
    """``data`` is the sandbox data (in-process runs) or only its :class:`Geometry` (the train
    process, which gets its batches from ``stream``). ``test_inputs`` hands over the test
    inputs for an in-process run; without it ``data.test_x`` is used."""

    def __init__(
        self,
        task: Task,
        data: SandboxData | Geometry,
        progress: Progress | None = None,
        test_inputs: TestInputs | None = None,
        stream: Batches | None = None,
    ) -> None:
        self.task = task
        self.data = data if isinstance(data, SandboxData) else None
        self.geometry = data if isinstance(data, Geometry) else Geometry.of(data, task)
        self.progress = progress or (lambda r: None)
        self.test_inputs = test_inputs
        self.stream = stream or self._local_stream
        self.report = Report()
        self.device = torch.device(task.protocol.device)
        self.meter = TrainingMeter()
        self.prm: dict[str, float] = task.protocol.prm()
        self.transform = transform(task)
        self.state: bytes | None = None  # the exported state, after training

    def _local_stream(self, epoch: int) -> EpochStream:
        assert self.data is not None
        return epoch_stream(self.data, self.task, epoch)

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
        """Build, train and export here; in an in-process run, score here too."""
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
            self._export(net)
            if self.data is not None:  # in-process: score the exported state here
                self._score_here()
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
        module = import_candidate(self.task, self._fail)
        hp = module.supported_hyperparameters
        try:
            declared = lemur.declared_names(hp())
        except ValueError as e:
            self._fail(common.STATUS_MISSING_ENTRY_POINT, str(e))
        self.prm = lemur.resolve_prm(declared, self.task.protocol.prm())
        self.report.hyperparameters = {k: float(v) for k, v in self.prm.items()}
        return module

    def _build(self, module: types.ModuleType) -> nn.Module:
        net = instantiate(module, self.task, self.geometry, self.prm, self.device)
        if not isinstance(net, nn.Module):
            self._fail(common.STATUS_INIT_EXCEPTION, "Net(...) did not return an nn.Module")
        self._check_parameters(net)
        return net.to(self.device)

    def _check_parameters(self, net: nn.Module) -> None:
        # Every tensor of the tree, frozen ones too (a network frozen when counted could
        # unfreeze later), whatever the candidate's own parameters() returns. An early refusal:
        # the limit that holds is counted on the exported state (_export).
        count = tensor_elements(net)
        self.report.parameter_count = max(self.report.parameter_count, int(count))
        limit = self.task.protocol.max_parameters
        if count > limit:
            self._fail(common.STATUS_PARAMETER_LIMIT, f"{count:,} parameters, limit {limit:,}")

    def _probe(self, net: nn.Module) -> None:
        x = probe_input(self.task, self.geometry).to(self.device)
        net.eval()
        self.meter.phase, self.meter.probe_batch = "probe", len(x)
        try:
            with torch.no_grad():
                out = net(x)
        finally:
            self.meter.phase = "off"
        self._check_parameters(net)  # lazy modules are materialised now
        want = (len(x), self.geometry.num_classes)
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
        candidate: Any = net  # its own methods
        candidate.train_setup(dict(self.prm))
        losses: list[torch.Tensor] = []
        _record_losses(net, losses)
        samples = steps = 0
        kept: list[Batch] = []  # the first samples, for the loss when learn() ignores criteria
        self.meter.phase = "train"
        try:
            for epoch in range(self.task.protocol.epochs):
                losses.clear()
                net.train()
                stream = self.stream(epoch)
                stream.keep(kept, OWN_LOSS_SAMPLES)
                samples, steps = samples + stream.dataset.__len__(), steps + len(stream)
                candidate.learn(stream)
        finally:
            self.meter.phase = "off"
        self._check_budget(samples, steps)
        if losses:
            values = torch.stack([v.float().cpu() for v in losses])
            loss = float(values.mean())
            finite = bool(torch.isfinite(values).all())
        else:  # the candidate's learn() did not use self.criteria: measure the loss ourselves
            loss, finite = self._own_loss(net, kept)
        self.report.loss = loss if math.isfinite(loss) else 0.0
        self.report.train_seconds = time.perf_counter() - t0
        self._check_parameters(net)  # the network may have grown while training
        if not finite:
            self._fail(common.STATUS_NON_FINITE_LOSS, f"training loss is not finite ({loss})")

    def _check_budget(self, samples: int, steps: int) -> None:
        """The in-process meter: a diagnostic and a first refusal of plain replays (the verdict
        that holds is the trusted parent's, :mod:`services.evaluator.epoch`)."""
        self.report.trained_samples = self.meter.trained_samples()
        self.report.optimizer_steps = self.meter.max_updates()
        if not self.meter.intact():
            self._fail(common.STATUS_PROTOCOL_VIOLATION, "the training counters were removed")
        why = self.meter.excess(samples, steps)
        if why is not None:
            self._fail(common.STATUS_PROTOCOL_VIOLATION, why)

    def _own_loss(self, net: nn.Module, kept: list[Batch]) -> tuple[float, bool]:
        net.eval()
        total, count = 0.0, 0
        with torch.no_grad():
            for x, y in kept:
                total += float(nn.functional.cross_entropy(net(x), y, reduction="sum"))
                count += len(y)
        loss = total / max(count, 1)
        return loss, math.isfinite(loss)

    def _export(self, net: nn.Module) -> None:
        """The model's ``state_dict`` as safetensors: all a score process will get of it."""
        try:
            self.state = statefile.encode(statefile.from_state_dict(net.state_dict()))
        except BaseException as e:
            self._fail(_classify(e, common.STATUS_TRAIN_EXCEPTION), f"export: {_describe(e)}")

    def _test_x(self) -> torch.Tensor:
        if self.test_inputs is not None:
            return self.test_inputs()
        assert self.data is not None
        p = self.task.protocol
        return self.data.test_x if not p.test_subset else self.data.test_x[: p.test_subset]

    def _score_here(self) -> None:
        assert self.state is not None
        try:
            entries = statefile.parse(self.state, self.task.protocol.max_parameters)
        except statefile.StateError as e:
            self._fail(common.STATUS_PARAMETER_LIMIT, str(e))
        self.report.parameter_count = statefile.elements(entries)
        scored = Scorer(self.task, self.geometry).run(statefile.encode(entries), self._test_x())
        if scored.status != common.STATUS_OK:
            self._fail(scored.status, scored.message)
        self.report.outputs = scored.outputs
        self.report.eval_seconds = scored.eval_seconds


OWN_LOSS_SAMPLES = 1024


def import_candidate(task: Task, fail: Callable[[int, str], None]) -> types.ModuleType:
    """Execute the candidate's source as module ``candidate`` and check its entry points."""
    module = types.ModuleType("candidate")
    exec(compile(task.code, "<candidate>", "exec"), module.__dict__)
    hp = getattr(module, "supported_hyperparameters", None)
    net_cls = getattr(module, "Net", None)
    if not callable(hp):
        fail(common.STATUS_MISSING_ENTRY_POINT, "no supported_hyperparameters() function")
    if not (isinstance(net_cls, type) and issubclass(net_cls, nn.Module)):
        fail(common.STATUS_MISSING_ENTRY_POINT, "no class Net(nn.Module)")
    missing = [m for m in REQUIRED_METHODS if not callable(getattr(net_cls, m, None))]
    if missing:
        fail(common.STATUS_MISSING_ENTRY_POINT, f"Net lacks {', '.join(missing)}")
    return module


def instantiate(
    module: types.ModuleType,
    task: Task,
    geometry: Geometry,
    prm: dict[str, float],
    device: torch.device,
) -> Any:
    p = task.protocol
    torch.manual_seed(p.seed)
    c, h, w = geometry.image_shape
    in_shape = (p.batch_size, c, *transform(task).out_hw((h, w)))
    return module.Net(in_shape, (geometry.num_classes,), dict(prm), device)


def probe_input(task: Task, geometry: Geometry) -> torch.Tensor:
    """A synthetic, normalised-looking batch of the test transform's shape: the build phase
    holds no data."""
    c, h, w = geometry.image_shape
    g = torch.Generator().manual_seed(task.protocol.seed)
    return torch.randn(PROBE_BATCH, c, *transform(task).out_hw((h, w)), generator=g)


class VersionedState(OrderedDict[str, object]):
    """A state dict with the per-module ``version`` that ``state_dict()`` records beside the
    tensors (``_metadata``, where ``load_state_dict`` looks for it)."""

    _metadata: dict[str, dict[str, int]]


def with_versions(tensors: dict[str, object], net: nn.Module) -> VersionedState:
    """``tensors`` with the versions of ``net``'s modules, which some modules' loading requires
    (torchvision's MNASNet refuses a state without them). Safetensors carries no such metadata;
    the versions are the freshly built architecture's (a class attribute), nothing trained."""
    state = VersionedState(tensors)
    modules = net.named_modules(remove_duplicate=False)  # a shared module: each of its names
    state._metadata = {name: {"version": m._version} for name, m in modules}
    return state


class Scorer:
    """The score phase: the architecture built again, the exported state loaded, the network's
    outputs on the inputs it is handed. Runs in a fresh process per chunk of test inputs (in the
    sandbox), so no state of the candidate's carries from one chunk to the next."""

    def __init__(self, task: Task, geometry: Geometry) -> None:
        self.task, self.geometry = task, geometry
        self.report = Report()
        self.device = torch.device(task.protocol.device)
        self.transform = transform(task)
        self.prm: dict[str, float] = {}
        self.net: nn.Module | None = None  # after load()
        self.inputs: torch.Tensor | None = None  # the test inputs scored

    def _fail(self, status: int, message: str) -> None:
        self.report.fail(status, message)
        raise _Stop

    def load(self, state: bytes) -> nn.Module:
        """Build the network and load ``state`` (canonical safetensors from the trusted side)."""
        try:
            module = import_candidate(self.task, self._fail)
            self.prm = lemur.resolve_prm(
                lemur.declared_names(module.supported_hyperparameters()),
                self.task.protocol.prm(),
            )
            net = instantiate(module, self.task, self.geometry, self.prm, self.device)
            if not isinstance(net, nn.Module):
                self._fail(common.STATUS_EVAL_EXCEPTION, "Net(...) did not return an nn.Module")
            # Lazy modules take their shapes from the state (torch's own load hook).
            tensors = statefile.to_state_dict(statefile.parse(state, 1 << 62))
            net.load_state_dict(with_versions(tensors, net), strict=True)
            return net.to(self.device)
        except _Stop:
            raise
        except BaseException as e:
            self._fail(_classify(e, common.STATUS_EVAL_EXCEPTION), f"score: {_describe(e)}")
        raise AssertionError("unreachable")

    def run(self, state: bytes, test_x: torch.Tensor | Callable[[], torch.Tensor]) -> Report:
        t0 = time.perf_counter()
        try:
            self.net = net = self.load(state)
            self.inputs = x = test_x() if callable(test_x) else test_x
            self.report.outputs = self._predict(net, x.to(self.device))
            self.report.status = common.STATUS_OK
        except _Stop:
            pass
        self.report.eval_seconds = time.perf_counter() - t0
        return self.report

    def _predict(self, net: nn.Module, test_x: torch.Tensor) -> Any:
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
            outputs = torch.cat(outs) if outs else torch.empty(0, self.geometry.num_classes)
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
        if tuple(outputs.shape) != (len(test_x), self.geometry.num_classes):
            self._fail(common.STATUS_EVAL_EXCEPTION, f"test outputs shape {tuple(outputs.shape)}")
        if not bool(torch.isfinite(outputs).all()):
            self._fail(common.STATUS_EVAL_EXCEPTION, "test outputs are not finite")
        return outputs.numpy()

    def reference(self, mark: Callable[[], None], steps: int) -> None:
        """The trusted reference for the epoch check (:mod:`services.evaluator.epoch`), run
        after the outputs have left: ``train_setup``, then ``steps`` of LEMUR's training step on
        a batch of the protocol's size (test inputs, made-up labels), ``mark()`` before the
        first and after each. This process never held training data, so nothing the network
        kept can be replayed here. An exception propagates (no mark follows it)."""
        assert self.net is not None and self.inputs is not None
        net, bs = self.net, self.task.protocol.batch_size
        pick = torch.arange(bs) % len(self.inputs)
        x = self.transform.test(self.inputs[pick].to(self.device))
        y = (torch.arange(bs) % self.geometry.num_classes).to(self.device)
        candidate: Any = net  # its own methods
        candidate.train_setup(dict(self.prm))
        net.train()
        criterion, optimizer = _criterion(net), getattr(net, "optimizer", None)
        mark()
        for _ in range(steps):
            _training_step(net, criterion, optimizer, x, y)
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            mark()

    def descriptors(self) -> tuple[int, int, list[str]]:
        """:func:`descriptors` of the network in eval mode on the first test input (the
        protocol's input shape, batch 1); run after the reference step, so it times nothing
        the epoch check relies on."""
        assert self.net is not None and self.inputs is not None
        self.net.eval()
        return descriptors(self.net, self.transform.test(self.inputs[:1].to(self.device)))


# The family of each file torch.nn defines its layers in (harness.family).
_FILE_FAMILIES = {
    "conv": "conv", "linear": "linear", "batchnorm": "norm", "normalization": "norm",
    "instancenorm": "norm", "activation": "activation", "pooling": "pooling",
    "dropout": "dropout",
}  # fmt: skip


def family(m: nn.Module) -> str | None:
    """The family (report.FAMILIES) of one module: ``MultiheadAttention`` is ``attention``; a
    module with children (a container, the candidate's own block) has none; a leaf is named by
    the torch.nn file its nearest torch.nn class comes from (``conv``, ``norm``, ...), else
    ``other`` (``Identity``, ``Flatten``, the candidate's own leaves)."""
    if isinstance(m, nn.MultiheadAttention):
        return "attention"
    if next(m.children(), None) is not None:
        return None
    if isinstance(m, nn.Identity):
        return "other"
    for cls in type(m).__mro__:
        if cls.__module__.startswith("torch.nn.modules."):
            return _FILE_FAMILIES.get(cls.__module__.rpartition(".")[2], "other")
    return "other"


def descriptors(net: nn.Module, x: torch.Tensor) -> tuple[int, int, list[str]]:
    """(macs, depth, families) of one forward pass of ``net`` on ``x``, without gradients:

    * macs: multiply-adds, torch's ``FlopCounterMode`` total halved (torch counts each
      multiply-add of a matmul or convolution as 2 FLOPs; biases, activations, norms and
      pooling are not counted);
    * depth: the number of distinct modules the pass called that hold parameters of their own
      (``parameters(recurse=False)``): each conv, linear, affine norm, ...;
    * families: the sorted set of :func:`family` of the modules the pass called.

    What the candidate's code prints meanwhile is dropped. An exception propagates."""
    called: dict[int, nn.Module] = {}

    def seen(m: nn.Module, args: object) -> None:
        called[id(m)] = m

    handles = [m.register_forward_pre_hook(seen) for m in net.modules()]
    counter = FlopCounterMode(display=False)
    sink = io.StringIO()
    try:
        out, err = contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink)
        with out, err, torch.no_grad(), counter:
            net(x)
    finally:
        for h in handles:
            h.remove()
    mods = called.values()
    depth = sum(next(m.parameters(recurse=False), None) is not None for m in mods)
    families = sorted({f for m in mods if (f := family(m)) is not None})
    return int(counter.get_total_flops()) // 2, depth, families


def _criterion(net: nn.Module) -> Callable[..., torch.Tensor]:
    """The loss LEMUR's training loop uses: ``criteria[0]`` (or ``criteria`` itself)."""
    crit: Any = getattr(net, "criteria", None)
    if isinstance(crit, tuple | list) and crit:
        crit = crit[0]
    fn: Callable[..., torch.Tensor] = crit if callable(crit) else nn.functional.cross_entropy
    return fn


def _training_step(
    net: nn.Module, criterion: Callable[..., torch.Tensor], optimizer: Any, x: Any, y: Any
) -> None:
    """LEMUR's training step: zero_grad, forward, the loss, backward, gradient clipping, the
    optimizer's step. The loss is the criterion on every ``(batch, classes)`` tensor the forward
    returns (a tensor, or a tuple, list or dict of them: auxiliary heads); where there is none,
    or the criterion fails on it, the mean of every output tensor."""
    if callable(getattr(optimizer, "zero_grad", None)):
        optimizer.zero_grad()
    else:
        for p in net.parameters():
            p.grad = None
    out = net(x)
    parts = (
        out.values() if isinstance(out, dict) else [out] if isinstance(out, torch.Tensor) else out
    )
    outs = [o for o in parts if isinstance(o, torch.Tensor) and o.is_floating_point()]
    logits = [o for o in outs if o.dim() == 2 and len(o) == len(y)]
    try:
        loss = sum((criterion(o, y) for o in logits), torch.zeros((), device=y.device))
    except Exception:
        logits = []
    if not logits:
        loss = sum((o.mean() for o in outs), torch.zeros((), device=y.device))
    loss.backward()
    nn.utils.clip_grad_norm_(net.parameters(), 3)
    if callable(getattr(optimizer, "step", None)):
        optimizer.step()
