"""What a candidate's training may consume, counted where it trains.

* :class:`EpochStream` is what ``learn()`` receives: each batch of the epoch once, in a single
  pass; iterating it again yields nothing. ``len()``, ``batch_size``, ``dataset`` (its length
  only) and the other DataLoader attributes that LEMUR code reads still work.
* :class:`TrainingMeter` counts, through torch's global hooks, the training samples every module
  with tensors of its own sees (normalised by how often one forward pass calls it, measured on
  the probe) and the optimizer updates every parameter receives. Kept batches replayed, a second
  optimizer over the same parameters, or extra data passed through the network exceed what one
  pass allows.
* :func:`tensor_elements` counts every tensor of the module tree (parameters, buffers and plain
  tensor attributes), not what the candidate's own ``parameters()`` chooses to return.
* :func:`state_fingerprint` lets the harness detect a network that changes while it is scored.

All of this runs in the candidate's process: it stops the ways a network trains on more than it
was given by accident or by plain code, not a candidate that rewrites torch's internals (the
README says what that leaves).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.nn.modules import module as nn_module
from torch.optim import optimizer as optim_module

Batch = tuple[torch.Tensor, torch.Tensor]


class _Lengths:
    """Stands for ``DataLoader.dataset``: its length, not its items."""

    def __init__(self, n: int) -> None:
        self._n = n

    def __len__(self) -> int:
        return self._n


class EpochStream:
    """A single-pass stream of one epoch's batches, shaped like the DataLoader LEMUR passes."""

    def __init__(self, batches: Iterator[Batch], num_batches: int, num_samples: int, bs: int):
        self._batches = batches
        self._num_batches = num_batches
        self._started = False
        self.batch_size = bs
        self.dataset = _Lengths(num_samples)
        self.drop_last = False
        self.num_workers = 0
        self.pin_memory = False
        self.samples = 0  # handed out so far
        self.batches = 0
        self._kept: list[Batch] | None = None
        self._keep_samples = 0

    def keep(self, sink: list[Batch], samples: int) -> None:
        """Append the batches handed out to ``sink`` until it holds ``samples`` samples."""
        self._kept, self._keep_samples = sink, samples

    def __len__(self) -> int:
        return self._num_batches

    def __iter__(self) -> Iterator[Batch]:
        if self._started:
            return iter(())
        self._started = True
        return self._once()

    def _once(self) -> Iterator[Batch]:
        for x, y in self._batches:
            self.samples += len(y)
            self.batches += 1
            if self._kept is not None and sum(len(b[1]) for b in self._kept) < self._keep_samples:
                self._kept.append((x, y))
            yield x, y


def _first_dim(args: tuple[Any, ...]) -> int:
    for a in args:
        if isinstance(a, torch.Tensor):
            return int(a.shape[0]) if a.dim() else 1
    return 0


def _has_state(m: nn.Module) -> bool:
    d = m.__dict__
    return bool(d.get("_parameters")) or bool(d.get("_buffers"))


class TrainingMeter:
    """Counts samples per module and updates per parameter while installed."""

    def __init__(self) -> None:
        self.phase = "off"  # "probe": measure reuse; "train": count against the budget
        self.probe_samples: dict[int, int] = {}
        self.probe_batch = 0
        self.seen: dict[int, int] = {}
        self.names: dict[int, str] = {}
        self.updates: dict[int, int] = {}
        self._handles: list[Any] = []

    def install(self) -> None:
        self._handles = [
            nn_module.register_module_forward_pre_hook(self._on_forward),
            optim_module.register_optimizer_step_pre_hook(self._on_step),
        ]

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def intact(self) -> bool:
        """Both hooks are still registered (a candidate may have cleared torch's hook tables)."""
        if len(self._handles) != 2:
            return False
        fwd, step = self._handles
        return (
            nn_module._global_forward_pre_hooks.get(fwd.id) == self._on_forward
            and optim_module._global_optimizer_pre_hooks.get(step.id) == self._on_step
        )

    def _on_forward(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        if self.phase == "off" or not _has_state(module):
            return
        n = _first_dim(args)
        key = id(module)
        if self.phase == "probe":
            self.probe_samples[key] = self.probe_samples.get(key, 0) + n
        elif module.training or torch.is_grad_enabled():
            self.seen[key] = self.seen.get(key, 0) + n
            self.names.setdefault(key, type(module).__name__)

    def _on_step(self, opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if self.phase != "train":
            return
        for group in opt.param_groups:
            for p in group["params"]:
                if isinstance(p, torch.Tensor) and p.grad is not None:
                    self.updates[id(p)] = self.updates.get(id(p), 0) + 1

    def reuse(self, key: int) -> float:
        """How many samples one forward pass of one input sends through this module."""
        if not self.probe_batch or key not in self.probe_samples:
            return 1.0  # a module the probe did not reach (an auxiliary head, a new module)
        return max(self.probe_samples[key] / self.probe_batch, 1.0)

    def trained_samples(self) -> int:
        """Samples per module divided by its reuse; the largest over all modules."""
        return int(max((n / self.reuse(k) for k, n in self.seen.items()), default=0))

    def max_updates(self) -> int:
        return max(self.updates.values(), default=0)

    def excess(self, samples: int, steps: int) -> str | None:
        """Why the training went beyond ``samples`` and ``steps``, or None."""
        for key, n in self.seen.items():
            if n > self.reuse(key) * samples:
                name = self.names.get(key, "a module")
                return (
                    f"{name} was trained on {n / self.reuse(key):,.0f} samples; "
                    f"the protocol gives {samples:,}"
                )
        if self.max_updates() > steps:
            return (
                f"a parameter received {self.max_updates():,} optimizer updates; "
                f"the protocol gives {steps:,} batches"
            )
        return None


def _tensors_of(module: nn.Module) -> Iterator[torch.Tensor]:
    d = module.__dict__
    yield from (t for t in d.get("_parameters", {}).values() if t is not None)
    yield from (t for t in d.get("_buffers", {}).values() if t is not None)
    for value in d.values():  # plain tensor attributes, and tensors in lists/tuples/dicts
        if isinstance(value, torch.Tensor):
            yield value
        elif isinstance(value, list | tuple):
            yield from (v for v in value if isinstance(v, torch.Tensor))
        elif isinstance(value, dict) and value is not d.get("_modules"):
            yield from (v for v in value.values() if isinstance(v, torch.Tensor))


def _modules(net: nn.Module) -> list[nn.Module]:
    """Every module of the tree through ``_modules`` (not an overridable ``modules()``)."""
    out, todo, seen = [], [net], set()
    while todo:
        m = todo.pop()
        if id(m) in seen or not isinstance(m, nn.Module):
            continue
        seen.add(id(m))
        out.append(m)
        todo.extend(v for v in m.__dict__.get("_modules", {}).values() if v is not None)
    return out


def tensor_elements(net: nn.Module) -> int:
    """Elements of every tensor the module tree holds; shared storage counted once; lazy
    (uninitialised) parameters count 0 until a forward pass materialises them."""
    sizes: dict[object, int] = {}
    for m in _modules(net):
        for t in _tensors_of(m):
            if nn.parameter.is_lazy(t):
                continue
            ptr = t.untyped_storage().data_ptr() if t.device.type != "meta" else 0
            key: object = (t.device.type, ptr) if ptr else ("id", id(t))
            n = t.untyped_storage().nbytes() // max(t.element_size(), 1) if ptr else t.numel()
            sizes[key] = max(sizes.get(key, 0), n, t.numel())
    return sum(sizes.values())


def state_fingerprint(net: nn.Module) -> list[tuple[int, int, int, float, float]]:
    """(identity, version, data pointer, sum, norm) of every parameter and buffer."""
    out = []
    for m in _modules(net):
        d = m.__dict__
        for t in (*d.get("_parameters", {}).values(), *d.get("_buffers", {}).values()):
            if t is None or nn.parameter.is_lazy(t) or t.device.type == "meta":
                continue
            v = t.detach()
            wide = v.to(torch.float64) if not v.is_floating_point() else v
            out.append(
                (
                    id(t),
                    t._version,
                    v.data_ptr(),
                    float(torch.sum(wide, dtype=torch.float64)),
                    float(torch.linalg.vector_norm(wide, dtype=torch.float64)),
                )
            )
    return out
