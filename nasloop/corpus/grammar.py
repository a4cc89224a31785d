"""The seed architecture grammar: a generator of hand-written-looking CNNs in the candidate format.

Every network is a complete candidate module (DESIGN.md, "Candidate code"): ``import`` lines,
``supported_hyperparameters()`` returning exactly the ``prm`` names the code reads, helper
``nn.Module`` classes for its blocks, and ``class Net(nn.Module)`` with ``__init__(self, in_shape,
out_shape, prm, device)``, ``forward``, ``train_setup`` and ``learn``. Networks take any
``(B, C, H, W)`` input with H = W = 32 and any number of classes.

A network is drawn in three layers of choices:

* a **family** -- plain VGG-like stacks, basic / pre-activation / wide residual blocks,
  bottleneck and grouped (ResNeXt) blocks, depthwise-separable (MobileNet) and inverted-residual
  (MBConv) blocks, mixed-kernel depthwise convolutions, channel and spatial attention (SE, ECA,
  CBAM, SimAM), self-attention over spatial positions (non-local and transformer blocks), dense
  connections, Inception-like multi-branch blocks, SqueezeNet fire modules, ShuffleNet units,
  RepVGG multi-branch blocks, ConvNeXt blocks and small patch-embedding transformers;
* a **style** shared by the whole network -- activation, normalisation (BatchNorm, GroupNorm,
  GroupNorm(1, c) as a LayerNorm over channels, none), whether convolutions come from a
  conv-norm-act helper, modules or functional activations, keyword or positional arguments;
* the **assembly** -- stem, downsampling (max / avg pooling or strided convolutions), widths and
  depths under a compute budget (between ``MIN_MACS`` and ``MAX_MACS`` multiply-accumulates per
  32x32 image, a CPU training-time estimate ``_Cost.work`` of at most ``MAX_WORK``, at most
  ``MAX_PARAMS`` parameters: one epoch on 1,438 images takes seconds on one core), how the body
  is held (one ``nn.Sequential``, named stages, an ``nn.ModuleList``, a ``_make_stage`` helper or
  a width/depth table), the head (pooling + linear, MLP, 1x1-conv, avg+max, LayerNorm), weight
  initialisation, and ``train_setup`` / ``learn`` (SGD, Adam, AdamW, RMSprop, NAdam within sane
  learning rates, weight decay, label smoothing, gradient clipping, warm-up).

:func:`sample` draws one network from a ``random.Random``; :func:`generate` draws until it has
``count`` networks that the novelty fingerprint (``nasloop.fingerprint``, canonical tokens,
7-token shingles, 128 permutations) considers distinct: a draw whose estimated Jaccard similarity
to any accepted network is at least ``threshold`` (0.85, the novelty default) is rejected. Both
are deterministic in their seed.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from nasloop.fingerprint import TokenMode, minhash

MAX_MACS = 15_000_000  # multiply-accumulates of one forward pass on a 3x32x32 image
MIN_MACS = 1_000_000
MAX_WORK = 40_000_000  # training-time budget in dense-MAC equivalents (see _Cost.work)
SLOW_FACTOR = 14.0  # depthwise MACs are this much slower than dense ones (CPU, measured)
ELEM_FACTOR = 36.0  # one element of elementwise work costs this many dense MACs (measured)
MAX_PARAMS = 3_000_000
INPUT_SIZE = 32
LINE = 99  # the longest line the generated code aims for
# placeholder for the dropout probability, as long as 'prm["dropout"]' (or a local name)
DROP = "@@@DROPOUT@@@@"

FAMILIES = (
    "vgg",
    "resnet",
    "wideresnet",
    "bottleneck",
    "resnext",
    "se",
    "cbam",
    "mobilenet",
    "mbconv",
    "mixnet",
    "shufflenet",
    "repvgg",
    "densenet",
    "inception",
    "squeezenet",
    "convnext",
    "attention",
    "vit",
)


@dataclass(frozen=True)
class SeedNet:
    id: str
    family: str
    code: str


# --- public API -----------------------------------------------------------------------------


def sample(rng: random.Random) -> tuple[str, str]:
    """One network drawn from ``rng``: (family, code)."""
    family = rng.choice(FAMILIES)
    return family, _build(rng, family)


def generate(
    count: int,
    seed: int = 0,
    threshold: float = 0.85,
    max_draws: int | None = None,
) -> list[SeedNet]:
    """``count`` networks, pairwise below ``threshold`` estimated Jaccard similarity.

    Deterministic in ``seed``. Ids are ``seed-000000``, ``seed-000001``, ... in draw order.
    Raises RuntimeError when ``max_draws`` draws (default ``20 * count + 1000``) did not give
    ``count`` distinct networks.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    rng = random.Random(seed)
    gate = _DistinctGate(threshold)
    nets: list[SeedNet] = []
    limit = max_draws if max_draws is not None else 20 * count + 1000
    draws = 0
    while len(nets) < count:
        if draws >= limit:
            raise RuntimeError(f"only {len(nets)} distinct networks after {draws} draws")
        draws += 1
        family, code = sample(rng)
        if gate.add(minhash(code, TokenMode.CANONICAL, 7, 128)):
            nets.append(SeedNet(f"seed-{len(nets):06d}", family, code))
    return nets


class _DistinctGate:
    """Accepts fingerprints whose MinHash estimate to every accepted one is below a threshold.

    Candidates come from band buckets: with ``b`` bands of ``r`` rows, where ``b - 1`` is the
    number of hash values a fingerprint at the threshold may differ in, any pair at or above the
    threshold agrees on a whole band (pigeonhole), so no such pair is missed; each candidate is
    then compared on all hash values.
    """

    def __init__(self, threshold: float, num_perm: int = 128) -> None:
        self.threshold = threshold
        need = int(np.ceil(threshold * num_perm - 1e-9))  # equal values at the threshold
        self.bands = max(num_perm - need + 1, 1)
        self.rows = num_perm // self.bands
        self.buckets: dict[tuple[int, bytes], list[int]] = {}
        self.matrix = np.empty((0, num_perm), dtype=np.uint64)
        self.size = 0

    def add(self, hv: np.ndarray) -> bool:
        keys = [(b, hv[b * self.rows : (b + 1) * self.rows].tobytes()) for b in range(self.bands)]
        seen: set[int] = set()
        for key in keys:
            seen.update(self.buckets.get(key, ()))
        if seen:
            rows = self.matrix[sorted(seen)]
            if float((rows == hv).mean(axis=1).max()) >= self.threshold:
                return False
        if self.size == len(self.matrix):
            grown = np.empty((max(64, 2 * self.size), hv.shape[0]), dtype=np.uint64)
            grown[: self.size] = self.matrix[: self.size]
            self.matrix = grown
        self.matrix[self.size] = hv
        for key in keys:
            self.buckets.setdefault(key, []).append(self.size)
        self.size += 1
        return True


# --- writing code ---------------------------------------------------------------------------


def _split_args(text: str) -> list[str]:
    """The top-level comma-separated parts of ``text``."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    tail = text[start:].strip()
    if tail:
        parts.append(tail)
    return parts


def _outer_call(expr: str) -> int:
    """Index of the bracket matching the final ")" or "]" of ``expr``, else -1."""
    if not expr.endswith((")", "]")):
        return -1
    depth = 0
    for i in range(len(expr) - 1, -1, -1):
        depth += expr[i] in ")]}"
        depth -= expr[i] in "([{"
        if depth == 0:
            return i
    return -1


def _fit(indent: int, prefix: str, expr: str, suffix: str = "") -> list[str]:
    """A statement ``prefix + expr + suffix`` as lines no longer than LINE (ruff-format style)."""
    line = prefix + expr + suffix
    if indent + len(line) <= LINE:
        return [line]
    start = _outer_call(expr)
    if start < 0:
        return [line]
    head, close = expr[: start + 1], expr[-1]
    args = _split_args(expr[start + 1 : -1])
    if not args:
        return [line]
    joined = ", ".join(args)
    if indent + 4 + len(joined) <= LINE:
        return [prefix + head, "    " + joined, close + suffix]
    out = [prefix + head]
    comma = "," if len(args) > 1 else ""
    for arg in args:
        out.extend("    " + part for part in _fit(indent + 4, "", arg, comma))
    return [*out, close + suffix]


class _Code:
    """Lines of Python at a current indentation."""

    def __init__(self, depth: int = 0) -> None:
        self.lines: list[str] = []
        self.depth = depth

    def __call__(self, *lines: str) -> None:
        for line in lines:
            self.lines.append("    " * self.depth + line if line else "")

    def stmt(self, prefix: str, expr: str, suffix: str = "") -> None:
        self(*_fit(4 * self.depth, prefix, expr, suffix))

    @contextmanager
    def block(self, header: str) -> Iterator[None]:
        self(header)
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1

    @contextmanager
    def method(self, signature: str) -> Iterator[None]:
        """A method after what comes before it in a class: a blank line, ``def signature:``."""
        self("")
        with self.block(f"def {signature}:"):
            yield

    def extend(self, other: _Code) -> None:
        self.lines.extend(other.lines)

    def text(self) -> str:
        return "\n".join(self.lines)


def _call(fn: str, *args: str | None) -> str:
    return f"{fn}({', '.join(a for a in args if a)})"


def _seq(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else _call("nn.Sequential", *items)


def _half(k: str) -> str:
    return str(int(k) // 2) if k.isdigit() else f"{k} // 2"


def _pick(rng: random.Random, weights: dict[str, float]) -> str:
    keys = list(weights)
    return rng.choices(keys, weights=[weights[k] for k in keys])[0]


def _round(value: float, quant: int) -> int:
    return max(quant, round(value / quant) * quant)


# --- costs ----------------------------------------------------------------------------------


@dataclass
class _Cost:
    """What one 32x32 image costs a network: multiply-accumulates (``macs``, of which ``slow``
    are depthwise, several times slower per MAC on a CPU), elements written by elementwise
    work (``elems``: norms, activations, gates, concatenations) and parameters."""

    macs: float = 0.0
    params: float = 0.0
    slow: float = 0.0
    elems: float = 0.0

    def __iadd__(self, other: _Cost) -> _Cost:
        self.macs += other.macs
        self.params += other.params
        self.slow += other.slow
        self.elems += other.elems
        return self

    def __add__(self, other: _Cost) -> _Cost:
        out = _Cost(self.macs, self.params, self.slow, self.elems)
        out += other
        return out

    @property
    def work(self) -> float:
        """Training time in dense-MAC equivalents (CPU, measured ratios)."""
        return self.macs + SLOW_FACTOR * self.slow + ELEM_FACTOR * self.elems


def _conv(cin: int, cout: int, k: int, res: int, groups: int = 1) -> _Cost:
    """Cost of a k x k convolution producing a res x res map (+ its norm and activation)."""
    weights = cout * (cin // groups) * k * k
    macs = weights * res * res
    slow = macs if groups > 1 and groups == cin else 0
    return _Cost(macs, weights + 2 * cout, slow, 2 * cout * res * res)


def _linear(cin: int, cout: int, tokens: int = 1) -> _Cost:
    return _Cost(cin * cout * tokens, cin * cout + cout, 0, cout * tokens)


def _elems(count: float) -> _Cost:
    return _Cost(elems=count)


def _fits(cost: _Cost) -> bool:
    return MIN_MACS <= cost.macs <= MAX_MACS and cost.work <= MAX_WORK and cost.params <= MAX_PARAMS


# --- the style shared by a whole network ----------------------------------------------------

# activation: (in-place module or None, module, functional with X for the input)
_ACTS: dict[str, tuple[str | None, str, str]] = {
    "relu": ("nn.ReLU(inplace=True)", "nn.ReLU()", "F.relu(X)"),
    "gelu": (None, "nn.GELU()", "F.gelu(X)"),
    "silu": (None, "nn.SiLU()", "F.silu(X)"),
    "leaky_relu": ("nn.LeakyReLU(S, inplace=True)", "nn.LeakyReLU(S)", "F.leaky_relu(X, S)"),
    "hardswish": (None, "nn.Hardswish()", "F.hardswish(X)"),
    "elu": (None, "nn.ELU()", "F.elu(X)"),
    "relu6": ("nn.ReLU6(inplace=True)", "nn.ReLU6()", "F.relu6(X)"),
    "mish": (None, "nn.Mish()", "F.mish(X)"),
}
_ACT_WEIGHTS = {
    "relu": 3.0,
    "gelu": 1.5,
    "silu": 1.5,
    "leaky_relu": 1.0,
    "hardswish": 1.0,
    "elu": 1.0,
    "relu6": 0.7,
    "mish": 0.7,
}
_NONLINEARITY = {"relu": "relu", "relu6": "relu", "leaky_relu": "leaky_relu"}


class _ConvArgs(NamedTuple):
    """A convolution as the generated code names it: channels in and out, kernel, stride, groups."""

    cin: str
    cout: str
    k: str = "3"
    stride: str | None = None
    groups: str | None = None


class _Style:
    """Choices shared by all code of one network."""

    def __init__(
        self,
        rng: random.Random,
        acts: dict[str, float] | None = None,
        norms: dict[str, float] | None = None,
        units: float = 0.45,
    ) -> None:
        self.act = _pick(rng, acts or _ACT_WEIGHTS)
        self.slope = rng.choice(["0.1", "0.2", "0.05"])
        self.norm = _pick(rng, norms or {"batch": 8, "group": 1, "layer": 0.6, "none": 0.5})
        self.groups = rng.choice([2, 4, 8])
        self.functional = rng.random() < 0.35
        self.inplace = rng.random() < 0.6
        self.keywords = rng.random() < 0.5
        self.bn_momentum = rng.random() < 0.15
        self.unit: str | None = None
        self.unit_form = rng.choice(["sequential", "module", "function"])
        if rng.random() < units:
            names = {
                "sequential": ["ConvBNAct", "ConvNormAct", "ConvUnit"],
                "module": ["ConvNormAct", "ConvBNAct", "BasicConv", "ConvLayer"],
                "function": ["conv_bn_act", "conv_norm_act", "conv_unit"],
            }[self.unit_form]
            self.unit = rng.choice(names)
        self.norm_prefix = {"batch": "bn", "group": "gn", "layer": "norm", "none": ""}[self.norm]

    # activations
    def act_module(self, fresh: bool = True) -> str:
        inplace, plain, _ = _ACTS[self.act]
        text = inplace if (fresh and self.inplace and inplace) else plain
        return text.replace("S", self.slope) if self.act == "leaky_relu" else text

    def act_fn(self, x: str) -> str:
        return _ACTS[self.act][2].replace("S", self.slope).replace("X", x)

    @property
    def nonlinearity(self) -> str:
        return _NONLINEARITY.get(self.act, "relu")

    # normalisation and convolutions
    def norm_layer(self, c: str) -> str | None:
        if self.norm == "batch":
            return (
                f"nn.BatchNorm2d({c}, momentum=0.05)"
                if self.bn_momentum
                else f"nn.BatchNorm2d({c})"
            )
        if self.norm == "group":
            return f"nn.GroupNorm({self.groups}, {c})"
        if self.norm == "layer":
            return f"nn.GroupNorm(1, {c})"
        return None

    @property
    def norm_types(self) -> list[str]:
        return {"batch": ["nn.BatchNorm2d"], "none": []}.get(self.norm, ["nn.GroupNorm"])

    def conv(self, a: _ConvArgs, normed: bool = True) -> str:
        cin, cout, k, stride, groups = a
        pad = "0" if k == "1" else _half(k)
        args = [cin, cout]
        if self.keywords:
            args.append(f"kernel_size={k}")
            if stride:
                args.append(f"stride={stride}")
            if pad != "0":
                args.append(f"padding={pad}")
        else:
            args.append(k)
            if stride and pad != "0":
                args += [stride, pad]
            elif stride:
                args.append(f"stride={stride}")
            elif pad != "0":
                args.append(f"padding={pad}")
        if groups:
            args.append(f"groups={groups}")
        if normed and self.norm != "none":
            args.append("bias=False")
        return _call("nn.Conv2d", *args)

    def unit_call(self, a: _ConvArgs, act: bool = True) -> str:
        assert self.unit
        cin, cout, k, stride, groups = a
        kernel = None if k == "3" else (f"kernel_size={k}" if self.keywords else k)
        return _call(
            self.unit,
            cin,
            cout,
            kernel,
            f"stride={stride}" if stride else None,
            f"groups={groups}" if groups else None,
            None if act else "act=False",
        )

    def layers(self, a: _ConvArgs, act: bool = True) -> list[str]:
        """Module expressions of conv (+ norm) (+ activation), for an ``nn.Sequential``."""
        if self.unit:
            return [self.unit_call(a, act)]
        out = [self.conv(a)]
        norm = self.norm_layer(a.cout)
        if norm:
            out.append(norm)
        if act:
            out.append(self.act_module())
        return out

    def unit_source(self) -> str:
        """The conv-norm-act helper the network's blocks are written with."""
        assert self.unit
        sig = "in_channels, out_channels, kernel_size=3, stride=1, groups=1, act=True"
        conv = self.conv(
            _ConvArgs("in_channels", "out_channels", "kernel_size", "stride", "groups")
        )
        norm = self.norm_layer("out_channels")
        c = _Code()
        if self.unit_form == "function":
            with c.block(f"def {self.unit}({sig}):"):
                c.stmt("layers = ", "[" + ", ".join(x for x in (conv, norm) if x) + "]")
                with c.block("if act:"):
                    c(f"layers.append({self.act_module()})")
                c("return nn.Sequential(*layers)")
        elif self.unit_form == "sequential":
            with (
                c.block(f"class {self.unit}(nn.Sequential):"),
                c.block(f"def __init__(self, {sig}):"),
            ):
                c.stmt("layers = ", "[" + ", ".join(x for x in (conv, norm) if x) + "]")
                with c.block("if act:"):
                    c(f"layers.append({self.act_module()})")
                c("super().__init__(*layers)")
        else:
            with c.block(f"class {self.unit}(nn.Module):"):
                with c.block(f"def __init__(self, {sig}):"):
                    c("super().__init__()")
                    c.stmt("self.conv = ", conv)
                    c.stmt("self.norm = ", norm or "nn.Identity()")
                    if self.functional:
                        c("self.use_act = act")
                    else:
                        c(f"self.act = {self.act_module()} if act else nn.Identity()")
                with c.method("forward(self, x)"):
                    if self.functional:
                        c("x = self.norm(self.conv(x))")
                        c(f"return {self.act_fn('x')} if self.use_act else x")
                    else:
                        c("return self.act(self.norm(self.conv(x)))")
        return c.text()


class _Cls:
    """A helper ``nn.Module`` class being written: __init__ and forward bodies."""

    def __init__(self, style: _Style, name: str, base: str = "nn.Module") -> None:
        self.S = style
        self.name = name
        self.base = base
        self.init = _Code(2)
        self.fwd = _Code(2)
        self.needs_act = False
        self.doc: str | None = None

    def act(self, x: str) -> str:
        if self.S.functional:
            return self.S.act_fn(x)
        self.needs_act = True
        return f"self.act({x})"

    def unit(self, tag: str, a: _ConvArgs, act: bool = True) -> Callable[[str], str]:
        """Declare conv (+ norm) attributes; returns how forward applies them (+ activation)."""
        S = self.S
        conv_name = f"conv{tag}" if tag.isdigit() or not tag else tag
        if S.unit:
            self.init.stmt(f"self.{conv_name} = ", S.unit_call(a, act))
            return lambda x: f"self.{conv_name}({x})"
        self.init.stmt(f"self.{conv_name} = ", S.conv(a))
        norm = S.norm_layer(a.cout)
        norm_name = (
            f"{S.norm_prefix}{tag}" if tag.isdigit() or not tag else f"{tag}_{S.norm_prefix}"
        )
        if norm:
            self.init.stmt(f"self.{norm_name} = ", norm)

        def apply(x: str) -> str:
            y = f"self.{conv_name}({x})"
            if norm:
                y = f"self.{norm_name}({y})"
            return self.act(y) if act else y

        return apply

    def attend(self, attn: _Attention | None, x: str) -> None:
        """Apply ``attn`` (if any, on ``out_channels``) to ``x`` in forward."""
        if attn:
            self.init.stmt("self.attn = ", attn.ctor("out_channels"))
            self.fwd(f"{x} = self.attn({x})")

    def render(self, signature: str) -> str:
        c = _Code()
        with c.block(f"class {self.name}({self.base}):"):
            if self.doc:
                c(f'"""{self.doc}"""', "")
            with c.block(f"def __init__(self, {signature}):"):
                c("super().__init__()")
                c.extend(self.init)
                if self.needs_act:
                    c(f"self.act = {self.S.act_module()}")
            with c.method("forward(self, x)"):
                c.extend(self.fwd)
        return c.text()


# --- channel / spatial attention add-ons ----------------------------------------------------


class _Attention:
    """An attention module applied to a block's output: ``write`` gives its class (written into
    the network's helpers), ``ctor(channels)`` builds one."""

    name = ""
    takes_channels = True  # the module is built with its channel count

    def helpers(self) -> list[str]:
        c = _Code()
        self.write(c)
        return [c.text()]

    def write(self, c: _Code) -> None:
        """Write the module's class (and those it uses) into ``c``."""
        raise NotImplementedError

    def ctor(self, channels: str) -> str:
        return f"{self.name}({channels})" if self.takes_channels else f"{self.name}()"

    def cost(self, channels: int, res: int) -> _Cost:
        return _Cost()


class _SqueezeExcite(_Attention):
    def __init__(self, rng: random.Random, style: _Style, gate: str | None = None) -> None:
        self.S = style
        self.name = rng.choice(["SqueezeExcite", "SEModule", "SqueezeExcitation", "SELayer"])
        self.form = rng.choice(["linear", "conv", "conv_functional"])
        self.reduction = rng.choice([4, 8, 16])
        self.gate = gate or rng.choice(["sigmoid", "sigmoid", "hardsigmoid"])
        self.inner = rng.choice(["relu", "style"])
        self.doc = rng.random() < 0.5

    def write(self, c: _Code) -> None:
        inner = "nn.ReLU(inplace=True)" if self.inner == "relu" else self.S.act_module()
        gate_mod = "nn.Sigmoid()" if self.gate == "sigmoid" else "nn.Hardsigmoid()"
        gate_fn = "torch.sigmoid" if self.gate == "sigmoid" else "F.hardsigmoid"
        with c.block(f"class {self.name}(nn.Module):"):
            if self.doc:
                c('"""Squeeze-and-excitation: channel weights from globally pooled features."""')
                c("")
            with c.block(f"def __init__(self, channels, reduction={self.reduction}):"):
                c("super().__init__()")
                c("hidden = max(8, channels // reduction)")
                if self.form == "linear":
                    c.stmt(
                        "self.fc = ",
                        _call(
                            "nn.Sequential",
                            "nn.Linear(channels, hidden)",
                            inner,
                            "nn.Linear(hidden, channels)",
                            gate_mod,
                        ),
                    )
                else:
                    c("self.pool = nn.AdaptiveAvgPool2d(1)")
                    c("self.reduce = nn.Conv2d(channels, hidden, kernel_size=1)")
                    c("self.expand = nn.Conv2d(hidden, channels, kernel_size=1)")
                    if self.form == "conv":
                        c(f"self.act = {inner}", f"self.gate = {gate_mod}")
            with c.method("forward(self, x)"):
                if self.form == "linear":
                    c("b, c, _, _ = x.shape")
                    c("weights = self.fc(x.mean(dim=(2, 3))).view(b, c, 1, 1)")
                    c("return x * weights")
                elif self.form == "conv":
                    c("scale = self.gate(self.expand(self.act(self.reduce(self.pool(x)))))")
                    c("return x * scale")
                else:
                    c("s = self.reduce(self.pool(x))")
                    c(f"s = {'F.relu(s)' if self.inner == 'relu' else self.S.act_fn('s')}")
                    c(f"return x * {gate_fn}(self.expand(s))")

    def cost(self, channels: int, res: int) -> _Cost:
        hidden = max(8, channels // self.reduction)
        return (
            _linear(channels, hidden) + _linear(hidden, channels) + _elems(2 * channels * res * res)
        )


class _ECA(_Attention):
    def __init__(self, rng: random.Random) -> None:
        self.name = rng.choice(["ECA", "EfficientChannelAttention", "ECAModule"])
        self.k = rng.choice([3, 5])
        self.form = rng.choice(["pool", "mean"])

    def write(self, c: _Code) -> None:
        with c.block(f"class {self.name}(nn.Module):"):
            with c.block(f"def __init__(self, channels, kernel_size={self.k}):"):
                c("super().__init__()")
                if self.form == "pool":
                    c("self.pool = nn.AdaptiveAvgPool2d(1)")
                c.stmt(
                    "self.conv = ",
                    "nn.Conv1d(1, 1, kernel_size, padding=kernel_size // 2, bias=False)",
                )
            with c.method("forward(self, x)"):
                if self.form == "pool":
                    c("y = self.pool(x).squeeze(-1).transpose(-1, -2)")
                    c("y = self.conv(y).transpose(-1, -2).unsqueeze(-1)")
                else:
                    c("y = self.conv(x.mean(dim=(2, 3)).unsqueeze(1))")
                    c("y = y.squeeze(1)[:, :, None, None]")
                c("return x * torch.sigmoid(y)")

    def cost(self, channels: int, res: int) -> _Cost:
        return _Cost(0, self.k, 0, 2 * channels * res * res)


class _CBAM(_Attention):
    def __init__(self, rng: random.Random, style: _Style, parts: str | None = None) -> None:
        self.S = style
        self.parts = parts or rng.choice(["both", "both", "spatial"])
        self.takes_channels = self.parts == "both"
        self.name = {"both": rng.choice(["CBAM", "ConvAttention"]), "spatial": "SpatialGate"}[
            self.parts
        ]
        self.channel_name = rng.choice(["ChannelAttention", "ChannelGate"])
        self.spatial_name = (
            "SpatialGate"
            if self.parts == "spatial"
            else rng.choice(["SpatialAttention", "SpatialGate"])
        )
        self.reduction = rng.choice([4, 8])
        self.k = rng.choice([3, 5, 7])
        self.max_form = rng.choice(["amax", "max"])
        self.mlp_form = rng.choice(["conv", "linear"])

    def write(self, c: _Code) -> None:
        if self.parts == "both":
            with c.block(f"class {self.channel_name}(nn.Module):"):
                with c.block(f"def __init__(self, channels, reduction={self.reduction}):"):
                    c("super().__init__()")
                    c("hidden = max(8, channels // reduction)")
                    if self.mlp_form == "conv":
                        layers = [
                            "nn.Conv2d(channels, hidden, 1, bias=False)",
                            "nn.ReLU(inplace=True)",
                            "nn.Conv2d(hidden, channels, 1, bias=False)",
                        ]
                    else:
                        layers = [
                            "nn.Flatten()",
                            "nn.Linear(channels, hidden)",
                            "nn.ReLU(inplace=True)",
                            "nn.Linear(hidden, channels)",
                        ]
                    c.stmt("self.mlp = ", _call("nn.Sequential", *layers))
                with c.method("forward(self, x)"):
                    c("avg = self.mlp(F.adaptive_avg_pool2d(x, 1))")
                    c("peak = self.mlp(F.adaptive_max_pool2d(x, 1))")
                    if self.mlp_form == "conv":
                        c("return x * torch.sigmoid(avg + peak)")
                    else:
                        c("return x * torch.sigmoid(avg + peak)[:, :, None, None]")
            c("", "")
        with c.block(f"class {self.spatial_name}(nn.Module):"):
            with c.block(f"def __init__(self, kernel_size={self.k}):"):
                c("super().__init__()")
                c("self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)")
            with c.method("forward(self, x)"):
                if self.max_form == "amax":
                    c("avg = x.mean(dim=1, keepdim=True)")
                    c("peak = x.amax(dim=1, keepdim=True)")
                    c("pooled = torch.cat([avg, peak], dim=1)")
                else:
                    c("avg = torch.mean(x, dim=1, keepdim=True)")
                    c("peak, _ = torch.max(x, dim=1, keepdim=True)")
                    c("pooled = torch.cat([avg, peak], dim=1)")
                c("return x * torch.sigmoid(self.conv(pooled))")
        if self.parts == "both":
            c("", "")
            with c.block(f"class {self.name}(nn.Module):"):
                with c.block("def __init__(self, channels):"):
                    c("super().__init__()")
                    c(f"self.channel = {self.channel_name}(channels)")
                    c(f"self.spatial = {self.spatial_name}()")
                with c.method("forward(self, x)"):
                    c("return self.spatial(self.channel(x))")

    def cost(self, channels: int, res: int) -> _Cost:
        hidden = max(8, channels // self.reduction)
        return _Cost(
            2 * res * res * self.k * self.k, 2 * channels * hidden, 0, 8 * channels * res * res
        )


class _SimAM(_Attention):
    takes_channels = False

    def __init__(self, rng: random.Random) -> None:
        self.name = rng.choice(["SimAM", "EnergyAttention"])

    def write(self, c: _Code) -> None:
        with c.block(f"class {self.name}(nn.Module):"):
            c('"""Parameter-free attention: weights each activation by its distinctiveness."""', "")
            with c.block("def __init__(self, eps=1e-4):"):
                c("super().__init__()")
                c("self.eps = eps")
            with c.method("forward(self, x)"):
                c("n = max(x.shape[2] * x.shape[3] - 1, 1)")
                c("d = (x - x.mean(dim=(2, 3), keepdim=True)).pow(2)")
                c("v = d.sum(dim=(2, 3), keepdim=True) / n")
                c("energy = d / (4 * (v + self.eps)) + 0.5")
                c("return x * torch.sigmoid(energy)")

    def cost(self, channels: int, res: int) -> _Cost:
        return _elems(8 * channels * res * res)


def _channel_attention(rng: random.Random, style: _Style) -> _Attention:
    return _SqueezeExcite(rng, style) if rng.random() < 0.7 else _ECA(rng)


def _spatial_attention(rng: random.Random, style: _Style) -> _Attention:
    return _CBAM(rng, style) if rng.random() < 0.75 else _SimAM(rng)


# --- blocks with the (in_channels, out_channels, stride) signature ---------------------------


class _Kind:
    """A block class of a homogeneous network: ``ctor(in, out, stride)`` and its cost."""

    name = ""
    quant = 8  # widths are multiples of this
    max_depth = 3
    preact = False  # needs a final norm + activation before the head
    pool_ok = True  # may downsample with a pooling layer before a stride-1 block
    signature = "in_channels, out_channels, stride=1"
    attn: _Attention | None = None  # applied to the block's output

    def __init__(self, style: _Style) -> None:
        self.S = style
        self.positional_stride = style.keywords is False

    def helpers(self) -> list[str]:
        raise NotImplementedError

    def extra_args(self) -> list[str]:
        return []

    def ctor(self, cin: str, cout: str, stride: str | None) -> str:
        st = None
        if stride:
            st = stride if self.positional_stride else f"stride={stride}"
        return _call(self.name, cin, cout, st, *self.extra_args())

    def cost(self, cin: int, cout: int, stride: int, res: int) -> _Cost:
        raise NotImplementedError

    def _attended(self, cost: _Cost, cout: int, r: int) -> _Cost:
        """``cost`` plus the attention add-on's (if any) on the ``cout`` x r x r output."""
        if self.attn:
            cost += self.attn.cost(cout, r)
        return cost

    def _residual(self, cost: _Cost, cin: int, cout: int, stride: int, r: int) -> _Cost:
        """``cost`` plus the shortcut's projection (when the shape changes) and the add-on's."""
        if cin != cout or stride != 1:
            cost += _conv(cin, cout, 1, r)
        return self._attended(cost, cout, r)


def _attn_helpers(attn: _Attention | None) -> list[str]:
    return attn.helpers() if attn else []


class _Plain(_Kind):
    """VGG-like conv (+ conv) block."""

    def __init__(self, rng: random.Random, style: _Style, attn: _Attention | None = None) -> None:
        super().__init__(style)
        self.attn = attn
        self.convs = rng.choice([1, 1, 2])
        self.form = rng.choice(["module", "sequential", "function"])
        self.drop2d = rng.random() < 0.2
        self.name = (
            rng.choice(["conv_block", "make_block", "vgg_block"])
            if self.form == "function"
            else rng.choice(["ConvBlock", "VGGBlock", "PlainBlock", "DoubleConv"])
        )

    def helpers(self) -> list[str]:
        S = self.S
        if self.form == "module":
            c = _Cls(S, self.name)
            first = c.unit("1", _ConvArgs("in_channels", "out_channels", "3", "stride"))
            c.fwd.stmt("x = ", first("x"))
            if self.convs == 2:
                second = c.unit("2", _ConvArgs("out_channels", "out_channels"))
                c.fwd.stmt("x = ", second("x"))
            c.attend(self.attn, "x")
            if self.drop2d:
                c.init("self.dropout = nn.Dropout2d(0.1)")
                c.fwd("x = self.dropout(x)")
            c.fwd("return x")
            body = c.render(self.signature)
        else:
            items = S.layers(_ConvArgs("in_channels", "out_channels", "3", "stride"))
            if self.convs == 2:
                items += S.layers(_ConvArgs("out_channels", "out_channels"))
            if self.attn:
                items.append(self.attn.ctor("out_channels"))
            if self.drop2d:
                items.append("nn.Dropout2d(0.1)")
            c2 = _Code()
            if self.form == "function":
                with c2.block(f"def {self.name}({self.signature}):"):
                    c2.stmt("return ", _call("nn.Sequential", *items))
            else:
                with (
                    c2.block(f"class {self.name}(nn.Sequential):"),
                    c2.block(f"def __init__(self, {self.signature}):"),
                ):
                    c2.stmt("super().__init__", "(" + ", ".join(items) + ")")
            body = c2.text()
        return [*_attn_helpers(self.attn), body]

    def cost(self, cin: int, cout: int, stride: int, res: int) -> _Cost:
        r = res // stride
        cost = _conv(cin, cout, 3, r)
        if self.convs == 2:
            cost += _conv(cout, cout, 3, r)
        return self._attended(cost, cout, r)


def _shortcut(c: _Cls, rng_kind: str, S: _Style) -> None:
    """Declare ``self.shortcut`` (projection when the shape changes) in ``c``'s __init__."""
    init = c.init
    with init.block("if stride != 1 or in_channels != out_channels:"):
        if rng_kind == "avgconv":
            pool = "nn.AvgPool2d(kernel_size=stride, stride=stride)"
            items = [pool, *S.layers(_ConvArgs("in_channels", "out_channels", "1"), act=False)]
            init.stmt("self.shortcut = ", _call("nn.Sequential", *items))
        else:
            items = S.layers(_ConvArgs("in_channels", "out_channels", "1", "stride"), act=False)
            init.stmt("self.shortcut = ", _seq(items))
    with init.block("else:"):
        init("self.shortcut = nn.Identity()")


class _Basic(_Kind):
    """Two 3x3 convolutions with a shortcut: post- or pre-activation, optional attention."""

    def __init__(
        self,
        rng: random.Random,
        style: _Style,
        attn: _Attention | None = None,
        preact: bool | None = None,
        dropout: bool = False,
    ) -> None:
        super().__init__(style)
        self.attn = attn
        self.preact = (rng.random() < 0.3) if preact is None else preact
        if style.norm == "none":
            self.preact = False
        self.shortcut = rng.choice(["conv", "conv", "avgconv", "pad"])
        self.rezero = rng.random() < 0.1 and not self.preact
        self.dropout = dropout
        self.functional_dropout = rng.random() < 0.3
        if self.preact:
            self.name = rng.choice(["PreActBlock", "PreActResidual", "WideBlock"])
        else:
            self.name = rng.choice(["BasicBlock", "ResidualBlock", "ResBlock"])
        if dropout:
            self.signature += ", dropout=0.0"
        self.doc = rng.random() < 0.4

    def extra_args(self) -> list[str]:
        return [f"dropout={DROP}"] if self.dropout else []

    def _drop(self, c: _Cls, x: str) -> None:
        if not self.dropout:
            return
        if self.functional_dropout:
            c.init("self.drop_rate = dropout")
            c.fwd(f"{x} = F.dropout({x}, p=self.drop_rate, training=self.training)")
        else:
            c.init("self.dropout = nn.Dropout(dropout)")
            c.fwd(f"{x} = self.dropout({x})")

    def helpers(self) -> list[str]:
        S = self.S
        c = _Cls(S, self.name)
        if self.doc:
            c.doc = (
                "Pre-activation residual block: norm and activation before each convolution."
                if self.preact
                else "Two 3x3 convolutions with a shortcut connection."
            )
        if self.preact:
            norm1, norm2 = S.norm_layer("in_channels"), S.norm_layer("out_channels")
            assert norm1 and norm2
            c.init.stmt(f"self.{S.norm_prefix}1 = ", norm1)
            c.init.stmt(
                "self.conv1 = ", S.conv(_ConvArgs("in_channels", "out_channels", "3", "stride"))
            )
            c.init.stmt(f"self.{S.norm_prefix}2 = ", norm2)
            c.init.stmt(
                "self.conv2 = ",
                S.conv(_ConvArgs("out_channels", "out_channels", "3"), normed=False),
            )
            with c.init.block("if stride != 1 or in_channels != out_channels:"):
                c.init.stmt(
                    "self.shortcut = ",
                    S.conv(_ConvArgs("in_channels", "out_channels", "1", "stride"), normed=False),
                )
            with c.init.block("else:"):
                c.init("self.shortcut = None")
            c.fwd(f"out = {c.act(f'self.{S.norm_prefix}1(x)')}")
            c.fwd("shortcut = x if self.shortcut is None else self.shortcut(out)")
            c.fwd("out = self.conv1(out)")
            c.fwd(f"out = {c.act(f'self.{S.norm_prefix}2(out)')}")
            self._drop(c, "out")
            c.fwd("out = self.conv2(out)")
            c.attend(self.attn, "out")
            c.fwd("return out + shortcut")
            return [*_attn_helpers(self.attn), c.render(self.signature)]
        first = c.unit("1", _ConvArgs("in_channels", "out_channels", "3", "stride"))
        second = c.unit("2", _ConvArgs("out_channels", "out_channels"), act=False)
        c.fwd.stmt("out = ", first("x"))
        self._drop(c, "out")
        c.fwd.stmt("out = ", second("out"))
        c.attend(self.attn, "out")
        if self.rezero:
            c.init("self.alpha = nn.Parameter(torch.zeros(1))")
            c.fwd("out = self.alpha * out")
        if self.shortcut == "pad":
            c.init("self.stride = stride")
            c.init("self.extra_channels = out_channels - in_channels")
            c.fwd("shortcut = x[:, :, :: self.stride, :: self.stride]")
            with c.fwd.block("if self.extra_channels > 0:"):
                c.fwd("shortcut = F.pad(shortcut, (0, 0, 0, 0, 0, self.extra_channels))")
            c.fwd(f"return {c.act('out + shortcut')}")
        else:
            _shortcut(c, self.shortcut, S)
            c.fwd(f"return {c.act('out + self.shortcut(x)')}")
        return [*_attn_helpers(self.attn), c.render(self.signature)]

    def cost(self, cin: int, cout: int, stride: int, res: int) -> _Cost:
        r = res // stride
        cost = _conv(cin, cout, 3, r) + _conv(cout, cout, 3, r)
        return self._residual(cost, cin, cout, stride, r)


class _Bottleneck(_Kind):
    """1x1 reduce, 3x3 (grouped for ResNeXt), 1x1 expand, with a shortcut."""

    def __init__(
        self,
        rng: random.Random,
        style: _Style,
        groups: int = 1,
        attn: _Attention | None = None,
    ) -> None:
        super().__init__(style)
        self.attn = attn
        self.groups = groups
        self.expansion = rng.choice([2, 4])
        self.quant = 8 * self.expansion * (2 if groups > 1 else 1)
        self.shortcut = rng.choice(["conv", "avgconv"])
        self.expansion_attr = rng.random() < 0.5
        self.name = (
            rng.choice(["Bottleneck", "BottleneckBlock"])
            if groups == 1
            else rng.choice(["ResNeXtBlock", "GroupedBottleneck", "Bottleneck"])
        )
        if groups > 1:
            self.signature = f"in_channels, out_channels, stride=1, groups={groups}"
        if not self.expansion_attr:
            self.signature += f", expansion={self.expansion}"

    def helpers(self) -> list[str]:
        S = self.S
        c = _Cls(S, self.name)
        if self.expansion_attr:
            c.init(f"mid = out_channels // {self.name}.expansion")
        else:
            c.init("mid = out_channels // expansion")
        reduce = c.unit("1", _ConvArgs("in_channels", "mid", "1"))
        spatial = c.unit(
            "2", _ConvArgs("mid", "mid", "3", "stride", "groups" if self.groups > 1 else None)
        )
        expand = c.unit("3", _ConvArgs("mid", "out_channels", "1"), act=False)
        c.fwd.stmt("out = ", reduce("x"))
        c.fwd.stmt("out = ", spatial("out"))
        c.fwd.stmt("out = ", expand("out"))
        c.attend(self.attn, "out")
        _shortcut(c, self.shortcut, S)
        c.fwd(f"return {c.act('out + self.shortcut(x)')}")
        text = c.render(self.signature)
        if self.expansion_attr:
            head, _, rest = text.partition("\n")
            text = f"{head}\n    expansion = {self.expansion}\n\n{rest}"
        return [*_attn_helpers(self.attn), text]

    def cost(self, cin: int, cout: int, stride: int, res: int) -> _Cost:
        r = res // stride
        mid = cout // self.expansion
        cost = _conv(cin, mid, 1, res) + _conv(mid, mid, 3, r, self.groups) + _conv(mid, cout, 1, r)
        return self._residual(cost, cin, cout, stride, r)


class _DepthwiseSeparable(_Kind):
    """MobileNet-v1 block: depthwise k x k, pointwise 1x1; optional residual and attention."""

    def __init__(self, rng: random.Random, style: _Style, attn: _Attention | None = None) -> None:
        super().__init__(style)
        self.attn = attn
        self.k = rng.choice(["3", "3", "5"])
        self.mid_act = rng.random() < 0.75
        self.residual = rng.random() < 0.4
        self.name = rng.choice(["DepthwiseSeparable", "DWSeparableConv", "SeparableBlock"])

    def helpers(self) -> list[str]:
        c = _Cls(self.S, self.name)
        dw = c.unit(
            "depthwise",
            _ConvArgs("in_channels", "in_channels", self.k, "stride", "in_channels"),
            self.mid_act,
        )
        pw = c.unit("pointwise", _ConvArgs("in_channels", "out_channels", "1"))
        if self.residual:
            c.init("self.use_residual = stride == 1 and in_channels == out_channels")
        c.fwd.stmt("out = ", pw(dw("x")))
        c.attend(self.attn, "out")
        if self.residual:
            c.fwd("return x + out if self.use_residual else out")
        else:
            c.fwd("return out")
        return [*_attn_helpers(self.attn), c.render(self.signature)]

    def cost(self, cin: int, cout: int, stride: int, res: int) -> _Cost:
        r = res // stride
        k = int(self.k)
        return self._attended(_conv(cin, cin, k, r, cin) + _conv(cin, cout, 1, r), cout, r)


class _InvertedResidual(_Kind):
    """MobileNet-v2 / EfficientNet MBConv: expand, depthwise (or mixed kernels), SE, project."""

    def __init__(
        self, rng: random.Random, style: _Style, mixed: bool = False, se: bool | None = None
    ) -> None:
        super().__init__(style)
        self.expansion = rng.choice([2, 3, 4, 6])
        self.k = rng.choice(["3", "3", "5"])
        self.mixed = mixed
        self.kernels = rng.choice([(3, 5), (3, 5, 7), (3, 5, 7, 9)]) if mixed else ()
        use_se = (rng.random() < 0.5) if se is None else se
        self.se = _SqueezeExcite(rng, style) if use_se else None
        self.form = rng.choice(["sequential", "attrs"])
        self.name = rng.choice(["InvertedResidual", "MBConv", "MobileBlock"])
        self.mix_name = rng.choice(["MixedDepthwiseConv", "MixConv", "MultiKernelDepthwise"])
        self.max_depth = 3
        self.signature = f"in_channels, out_channels, stride=1, expansion={self.expansion}"

    def _mix_source(self) -> str:
        c = _Code()
        with c.block(f"class {self.mix_name}(nn.Module):"):
            c('"""Depthwise convolution with a different kernel size per channel group."""', "")
            ks = ", ".join(map(str, self.kernels))
            with c.block(f"def __init__(self, channels, stride=1, kernel_sizes=({ks})):"):
                c("super().__init__()")
                c("splits = [channels // len(kernel_sizes)] * len(kernel_sizes)")
                c("splits[0] += channels - sum(splits)")
                c("self.splits = splits")
                with c.block("self.convs = nn.ModuleList("):
                    c(
                        "nn.Conv2d(c, c, k, stride=stride, padding=k // 2, groups=c, bias=False)",
                        "for c, k in zip(splits, kernel_sizes)",
                    )
                c(")")
            with c.method("forward(self, x)"):
                c("parts = torch.split(x, self.splits, dim=1)")
                c("return torch.cat([conv(p) for conv, p in zip(self.convs, parts)], dim=1)")
        return c.text()

    def helpers(self) -> list[str]:
        S = self.S
        out = []
        if self.se:
            out += self.se.helpers()
        if self.mixed:
            out.append(self._mix_source())
        c = _Cls(S, self.name)
        c.init("hidden = in_channels * expansion")
        c.init("self.use_residual = stride == 1 and in_channels == out_channels")
        if self.mixed:
            dw_items = [f"{self.mix_name}(hidden, stride)"]
            norm = S.norm_layer("hidden")
            dw_items += ([norm] if norm else []) + [S.act_module()]
        else:
            dw_items = S.layers(_ConvArgs("hidden", "hidden", self.k, "stride", "hidden"))
        if self.form == "sequential":
            items = S.layers(_ConvArgs("in_channels", "hidden", "1")) + dw_items
            if self.se:
                items.append(self.se.ctor("hidden"))
            items += S.layers(_ConvArgs("hidden", "out_channels", "1"), act=False)
            c.init.stmt("self.block = ", _call("nn.Sequential", *items))
            c.fwd("out = self.block(x)")
        else:
            expand = c.unit("expand", _ConvArgs("in_channels", "hidden", "1"))
            c.init.stmt("self.depthwise = ", _seq(dw_items))
            if self.se:
                c.init.stmt("self.se = ", self.se.ctor("hidden"))
            project = c.unit("project", _ConvArgs("hidden", "out_channels", "1"), act=False)
            c.fwd.stmt("out = ", expand("x"))
            c.fwd("out = self.depthwise(out)")
            if self.se:
                c.fwd("out = self.se(out)")
            c.fwd.stmt("out = ", project("out"))
        with c.fwd.block("if self.use_residual:"):
            c.fwd("out = out + x")
        c.fwd("return out")
        out.append(c.render(self.signature))
        return out

    def cost(self, cin: int, cout: int, stride: int, res: int) -> _Cost:
        r = res // stride
        hidden = cin * self.expansion
        k = max(self.kernels) if self.mixed else int(self.k)
        kk = (sum(x * x for x in self.kernels) / len(self.kernels)) if self.mixed else k * k
        dw = hidden * kk * r * r
        cost = _conv(cin, hidden, 1, res) + _Cost(dw, hidden * kk, dw, 2 * hidden * r * r)
        if self.mixed:
            cost += _elems(2 * hidden * r * r)
        cost += _conv(hidden, cout, 1, r)
        if self.se:
            cost += self.se.cost(hidden, r)
        return cost


class _ShuffleUnit(_Kind):
    """ShuffleNet-v2 unit: split, depthwise branch, concat, channel shuffle."""

    quant = 16

    def __init__(self, rng: random.Random, style: _Style) -> None:
        super().__init__(style)
        self.name = rng.choice(["ShuffleUnit", "ShuffleBlock", "ShuffleV2Block"])
        self.shuffle_fn = rng.choice(["channel_shuffle", "shuffle_channels"])
        self.shuffle_form = rng.choice(["view", "permute"])
        self.split_form = rng.choice(["chunk", "slice"])
        self.pool_ok = False

    def helpers(self) -> list[str]:
        S = self.S
        f = _Code()
        with f.block(f"def {self.shuffle_fn}(x, groups):"):
            f("b, c, h, w = x.shape")
            if self.shuffle_form == "view":
                f("x = x.view(b, groups, c // groups, h, w).transpose(1, 2)")
            else:
                f("x = x.reshape(b, groups, c // groups, h, w).permute(0, 2, 1, 3, 4)")
            f("return x.reshape(b, c, h, w)")
        c = _Cls(S, self.name)
        c.init("branch = out_channels // 2")
        c.init("self.split = stride == 1 and in_channels == out_channels")
        with c.init.block("if self.split:"):
            c.init("self.left = nn.Identity()")
            c.init("branch_in = branch")
        with c.init.block("else:"):
            items = S.layers(
                _ConvArgs("in_channels", "in_channels", "3", "stride", "in_channels"), act=False
            )
            items += S.layers(_ConvArgs("in_channels", "branch", "1"))
            c.init.stmt("self.left = ", _call("nn.Sequential", *items))
            c.init("branch_in = in_channels")
        items = S.layers(_ConvArgs("branch_in", "branch", "1"))
        items += S.layers(_ConvArgs("branch", "branch", "3", "stride", "branch"), act=False)
        items += S.layers(_ConvArgs("branch", "branch", "1"))
        c.init.stmt("self.right = ", _call("nn.Sequential", *items))
        with c.fwd.block("if self.split:"):
            if self.split_form == "chunk":
                c.fwd("left, right = x.chunk(2, dim=1)")
            else:
                c.fwd("half = x.shape[1] // 2")
                c.fwd("left, right = x[:, :half], x[:, half:]")
            c.fwd("out = torch.cat([left, self.right(right)], dim=1)")
        with c.fwd.block("else:"):
            c.fwd("out = torch.cat([self.left(x), self.right(x)], dim=1)")
        c.fwd(f"return {self.shuffle_fn}(out, 2)")
        return [f.text(), c.render(self.signature)]

    def cost(self, cin: int, cout: int, stride: int, res: int) -> _Cost:
        r = res // stride
        b = cout // 2
        split = stride == 1 and cin == cout
        cost = _Cost()
        if not split:
            cost += _conv(cin, cin, 3, r, cin) + _conv(cin, b, 1, r)
        bin_ = b if split else cin
        cost += _conv(bin_, b, 1, res) + _conv(b, b, 3, r, b) + _conv(b, b, 1, r)
        cost += _elems(3 * cout * r * r)  # concatenation and shuffle
        return cost


class _RepVGG(_Kind):
    """RepVGG training-time block: 3x3 + 1x1 (+ identity norm) branches summed."""

    def __init__(self, rng: random.Random, style: _Style) -> None:
        super().__init__(style)
        self.name = rng.choice(["RepVGGBlock", "MultiBranchBlock", "RepBlock"])
        self.identity = rng.random() < 0.7

    def helpers(self) -> list[str]:
        S = self.S
        c = _Cls(S, self.name)
        dense = S.layers(_ConvArgs("in_channels", "out_channels", "3", "stride"), act=False)
        point = S.layers(_ConvArgs("in_channels", "out_channels", "1", "stride"), act=False)
        c.init.stmt("self.dense = ", _seq(dense))
        c.init.stmt("self.pointwise = ", _seq(point))
        if self.identity:
            norm = S.norm_layer("in_channels")
            assert norm
            with c.init.block("if stride == 1 and in_channels == out_channels:"):
                c.init.stmt("self.identity = ", norm)
            with c.init.block("else:"):
                c.init("self.identity = None")
        c.fwd("out = self.dense(x) + self.pointwise(x)")
        if self.identity:
            with c.fwd.block("if self.identity is not None:"):
                c.fwd("out = out + self.identity(x)")
        c.fwd(f"return {c.act('out')}")
        return [c.render(self.signature)]

    def cost(self, cin: int, cout: int, stride: int, res: int) -> _Cost:
        r = res // stride
        return _conv(cin, cout, 3, r) + _conv(cin, cout, 1, r)


# --- network assembly -----------------------------------------------------------------------


@dataclass
class _Stage:
    modules: list[str]
    uniform: tuple[int, int, int, int, str | None] | None = None  # cin, cout, depth, stride, pool


@dataclass
class _Plan:
    family: str
    style: _Style
    helpers: list[str]
    stem: list[str]
    stages: list[_Stage]
    channels: int  # entering the head
    cost: _Cost
    kind: _Kind | None = None
    final: list[str] = field(default_factory=list)  # norm / activation after the body
    head_hint: str = ""
    res: int = 1  # spatial size entering the head
    net_methods: str = ""  # extra Net methods (a _make_stage helper)


def _pool_expr(rng: random.Random, mode: str) -> str:
    if mode == "max":
        return rng.choice(
            [
                "nn.MaxPool2d(2)",
                "nn.MaxPool2d(kernel_size=2, stride=2)",
                "nn.MaxPool2d(3, stride=2, padding=1)",
            ]
        )
    return rng.choice(["nn.AvgPool2d(2)", "nn.AvgPool2d(kernel_size=2, stride=2)"])


def _stem(
    rng: random.Random, S: _Style, width: int, stride: int, form: str = ""
) -> tuple[list[str], _Cost]:
    """Stem modules mapping ``in_channels`` (the input's channels) to ``width``."""
    form = form or rng.choice(["single", "single", "double", "wide"])
    res = INPUT_SIZE // stride
    if form == "double":
        half = _round(width / 2, 8)
        items = S.layers(
            _ConvArgs("in_channels", str(half), "3", str(stride) if stride > 1 else None)
        )
        items += S.layers(_ConvArgs(str(half), str(width)))
        return items, _conv(3, half, 3, res) + _conv(half, width, 3, res)
    k = "5" if form == "wide" else "3"
    items = S.layers(_ConvArgs("in_channels", str(width), k, str(stride) if stride > 1 else None))
    return items, _conv(3, width, int(k), res)


def _homogeneous(
    rng: random.Random,
    family: str,
    S: _Style,
    kind: _Kind,
    extras: Callable[[int, int], tuple[list[str], _Cost]] | None = None,
    widths: Sequence[int] = (16, 24, 32, 48),
) -> _Plan:
    """A stem, 2-4 stages of ``kind`` blocks, downsampling by stride or pooling."""
    pool_mode = rng.choice(["stride", "stride", "max", "avg"]) if kind.pool_ok else "stride"
    for attempt in range(60):
        shrink = attempt // 15
        base = _round(rng.choice(widths[: max(1, len(widths) - shrink)]), kind.quant)
        stem_stride = rng.choice([1, 2, 2]) if attempt < 30 else 2
        n_stages = rng.choice([2, 3, 3, 4]) if stem_stride == 1 else rng.choice([2, 3, 3])
        growth = rng.choice([1.5, 2.0, 2.0])
        depths = [rng.randint(1, max(1, kind.max_depth - shrink)) for _ in range(n_stages)]
        stem_width = max(16, _round(base if rng.random() < 0.7 else base / 2, 8))
        stem, cost = _stem(rng, S, stem_width, stem_stride)
        res = INPUT_SIZE // stem_stride
        first_stride = 2 if (stem_stride == 1 and rng.random() < 0.3) else 1
        stages: list[_Stage] = []
        cin, width = stem_width, base
        for i, depth in enumerate(depths):
            if i > 0:
                width = _round(width * growth, kind.quant)
            stride = first_stride if i == 0 else 2
            pool = None
            if stride == 2 and pool_mode != "stride":
                pool, stride = _pool_expr(rng, pool_mode), 1
                res //= 2
            modules = [pool] if pool else []
            modules.append(kind.ctor(str(cin), str(width), str(stride) if stride > 1 else None))
            cost += kind.cost(cin, width, stride, res)
            res //= stride
            for _ in range(depth - 1):
                modules.append(kind.ctor(str(width), str(width), None))
                cost += kind.cost(width, width, 1, res)
            stages.append(
                _Stage(modules, (cin, width, depth, 2 if (pool or stride == 2) else 1, pool))
            )
            cin = width
        if extras:
            more, extra_cost = extras(cin, res)
            stages[-1].modules += more
            stages[-1].uniform = None
            cost += extra_cost
        if 2 <= res <= 8 and _fits(cost):
            break
    final: list[str] = []
    if kind.preact:
        norm = S.norm_layer(str(cin))
        final = [n for n in [norm] if n] + [S.act_module()]
    helpers = kind.helpers()
    return _Plan(family, S, helpers, stem, stages, cin, cost, kind, final, res=res)


# --- families with their own structure ------------------------------------------------------


def _densenet(rng: random.Random, S: _Style) -> _Plan:
    bottleneck = rng.random() < 0.6
    form = rng.choice(["cat_each", "collect"])
    layer_name = rng.choice(["DenseLayer", "DenseUnit"])
    block_name = rng.choice(["DenseBlock", "DenseStage"])
    trans_name = rng.choice(["Transition", "TransitionLayer"])
    trans_pool = rng.choice(
        ["nn.AvgPool2d(2)", "nn.AvgPool2d(kernel_size=2, stride=2)", "nn.MaxPool2d(2)"]
    )
    width = 4 if bottleneck else 1
    # DenseLayer
    c = _Cls(S, layer_name)
    sig = "in_channels, growth_rate"
    norm1 = S.norm_layer("in_channels")
    assert norm1
    c.init.stmt(f"self.{S.norm_prefix}1 = ", norm1)
    if bottleneck:
        sig += f", bottleneck={width}"
        c.init.stmt(
            "self.conv1 = ", S.conv(_ConvArgs("in_channels", "bottleneck * growth_rate", "1"))
        )
        c.init.stmt(f"self.{S.norm_prefix}2 = ", S.norm_layer("bottleneck * growth_rate") or "")
        c.init.stmt(
            "self.conv2 = ",
            S.conv(_ConvArgs("bottleneck * growth_rate", "growth_rate", "3"), normed=False),
        )
        c.fwd(f"out = self.conv1({c.act(f'self.{S.norm_prefix}1(x)')})")
        c.fwd(f"out = self.conv2({c.act(f'self.{S.norm_prefix}2(out)')})")
    else:
        c.init.stmt(
            "self.conv1 = ", S.conv(_ConvArgs("in_channels", "growth_rate", "3"), normed=False)
        )
        c.fwd(f"out = self.conv1({c.act(f'self.{S.norm_prefix}1(x)')})")
    if form == "cat_each":
        c.fwd("return torch.cat([x, out], dim=1)")
    else:
        c.fwd("return out")
    layer_src = c.render(sig)
    # DenseBlock
    b = _Code()
    if form == "cat_each":
        with (
            b.block(f"class {block_name}(nn.Sequential):"),
            b.block("def __init__(self, num_layers, in_channels, growth_rate):"),
        ):
            b.stmt(
                "super().__init__",
                f"(*[{layer_name}(in_channels + i * growth_rate, growth_rate) "
                "for i in range(num_layers)])",
            )
    else:
        with b.block(f"class {block_name}(nn.Module):"):
            with b.block("def __init__(self, num_layers, in_channels, growth_rate):"):
                b("super().__init__()")
                b.stmt(
                    "self.layers = ",
                    f"nn.ModuleList([{layer_name}(in_channels + i * growth_rate, growth_rate) "
                    "for i in range(num_layers)])",
                )
            with b.method("forward(self, x)"):
                b("features = [x]")
                with b.block("for layer in self.layers:"):
                    b("features.append(layer(torch.cat(features, dim=1)))")
                b("return torch.cat(features, dim=1)")
    # Transition
    t = _Code()
    norm = S.norm_layer("in_channels")
    with (
        t.block(f"class {trans_name}(nn.Sequential):"),
        t.block("def __init__(self, in_channels, out_channels):"),
    ):
        items = [
            norm or "",
            S.act_module(),
            S.conv(_ConvArgs("in_channels", "out_channels", "1"), normed=False),
            trans_pool,
        ]
        t.stmt("super().__init__", "(" + ", ".join(items) + ")")
    for attempt in range(40):
        growth = rng.choice([8, 16, 16, 24] if attempt < 20 else [8, 16])
        stem_stride = rng.choice([1, 2, 2]) if attempt < 20 else 2
        c0 = rng.choice([16, 24, 32])
        stem, cost = _stem(rng, S, c0, stem_stride, rng.choice(["single", "double"]))
        res = INPUT_SIZE // stem_stride
        blocks = rng.choice([2, 3]) if stem_stride == 2 else 3
        stages = []
        ch = c0
        for i in range(blocks):
            n = rng.randint(2, 5)
            mods = [f"{block_name}({n}, {ch}, {growth})"]
            for j in range(n):
                cin = ch + j * growth
                cost += _elems(3 * cin * res * res)  # norm + activation + concatenation
                if bottleneck:
                    cost += _conv(cin, width * growth, 1, res) + _conv(
                        width * growth, growth, 3, res
                    )
                else:
                    cost += _conv(cin, growth, 3, res)
            ch += n * growth
            if i < blocks - 1:
                out = _round(ch * rng.choice([0.5, 0.5, 1.0]), 8)
                mods.append(f"{trans_name}({ch}, {out})")
                cost += _conv(ch, out, 1, res)
                ch, res = out, res // 2
            stages.append(_Stage(mods))
        if 2 <= res <= 8 and _fits(cost):
            break
    final = [S.norm_layer(str(ch)) or "", S.act_module()]
    helpers = [layer_src, b.text(), t.text()]
    return _Plan("densenet", S, helpers, stem, stages, ch, cost, None, final, res=res)


def _inception(rng: random.Random, S: _Style) -> _Plan:
    name = rng.choice(["InceptionBlock", "InceptionModule", "MultiBranchBlock"])
    third = rng.choice(["5x5", "double3x3", "factorized"])
    pool_branch = rng.choice(["max", "avg", "none"])
    residual = rng.random() < 0.3
    reduction = rng.random() < 0.4
    # S.unit is required: the branches are written with the conv-norm-act helper
    if not S.unit:
        S.unit = rng.choice(["ConvBNAct", "BasicConv2d", "conv_bn"])
        S.unit_form = "function" if S.unit == "conv_bn" else rng.choice(["sequential", "module"])
    u = S.unit_call
    c = _Code()
    doc = rng.random() < 0.5
    if residual:
        sig = "channels, branch"
    else:
        sig = "in_channels, ch1x1, ch3x3_reduce, ch3x3, ch5x5_reduce, ch5x5"
        if pool_branch != "none":
            sig += ", pool_proj"
    src = "channels" if residual else "in_channels"
    with c.block(f"class {name}(nn.Module):"):
        if doc:
            c('"""Parallel branches with different receptive fields, concatenated."""', "")
        with c.block(f"def __init__(self, {sig}):"):
            c("super().__init__()")
            if residual:
                b1, b3r, b3, b5r, b5 = "branch", "branch", "branch", "branch // 2", "branch"
            else:
                b1, b3r, b3, b5r, b5 = "ch1x1", "ch3x3_reduce", "ch3x3", "ch5x5_reduce", "ch5x5"
            c.stmt("self.branch1 = ", u(_ConvArgs(src, b1, "1")))
            c.stmt(
                "self.branch2 = ",
                _call("nn.Sequential", u(_ConvArgs(src, b3r, "1")), u(_ConvArgs(b3r, b3))),
            )
            if third == "5x5":
                tail = [u(_ConvArgs(b5r, b5, "5"))]
            elif third == "double3x3":
                tail = [u(_ConvArgs(b5r, b5)), u(_ConvArgs(b5, b5))]
            else:
                tail = [
                    f"nn.Conv2d({b5r}, {b5}, kernel_size=(1, 3), padding=(0, 1))",
                    f"nn.Conv2d({b5}, {b5}, kernel_size=(3, 1), padding=(1, 0))",
                ]
                if S.norm_layer(b5):
                    tail.append(S.norm_layer(b5) or "")
                tail.append(S.act_module())
            c.stmt("self.branch3 = ", _call("nn.Sequential", u(_ConvArgs(src, b5r, "1")), *tail))
            branches = 3
            if pool_branch != "none" and not residual:
                pool = (
                    "nn.MaxPool2d(3, stride=1, padding=1)"
                    if pool_branch == "max"
                    else "nn.AvgPool2d(3, stride=1, padding=1)"
                )
                c.stmt(
                    "self.branch4 = ",
                    _call("nn.Sequential", pool, u(_ConvArgs(src, "pool_proj", "1"))),
                )
                branches = 4
            if residual:
                c.stmt(
                    "self.project = ",
                    S.conv(_ConvArgs("3 * branch", "channels", "1"), normed=False),
                )
                if not S.functional:
                    c(f"self.act = {S.act_module()}")
        with c.method("forward(self, x)"):
            outs = ", ".join(f"self.branch{i}(x)" for i in range(1, branches + 1))
            if residual:
                c.stmt("out = ", f"torch.cat([{outs}], dim=1)")
                merged = "x + self.project(out)"
                c(f"return {S.act_fn(merged) if S.functional else f'self.act({merged})'}")
            else:
                c.stmt("return ", f"torch.cat([{outs}], dim=1)")
    helpers = [c.text()]
    red_name = rng.choice(["ReductionBlock", "Downsample", "GridReduction"])
    if reduction:
        r = _Code()
        with r.block(f"class {red_name}(nn.Module):"):
            with r.block("def __init__(self, in_channels, conv_channels):"):
                r("super().__init__()")
                r.stmt("self.conv = ", u(_ConvArgs("in_channels", "conv_channels", "3", "2")))
                r("self.pool = nn.MaxPool2d(3, stride=2, padding=1)")
            with r.method("forward(self, x)"):
                r("return torch.cat([self.conv(x), self.pool(x)], dim=1)")
        helpers.append(r.text())
    for _attempt in range(40):
        stem_stride = rng.choice([1, 2, 2])
        c0 = rng.choice([16, 24, 32])
        stem, cost = _stem(rng, S, c0, stem_stride, rng.choice(["single", "double"]))
        res = INPUT_SIZE // stem_stride
        n_stages = rng.choice([2, 3])
        stages = []
        ch = c0
        for i in range(n_stages):
            mods = []
            if i > 0:
                if reduction:
                    extra = _round(ch * rng.choice([0.5, 1.0]), 8)
                    mods.append(f"{red_name}({ch}, {extra})")
                    cost += _conv(ch, extra, 3, res // 2)
                    ch += extra
                else:
                    mods.append(_pool_expr(rng, "max"))
                res //= 2
            for _ in range(rng.randint(1, 2)):
                if residual:
                    br = _round(ch / 4, 16)
                    mods.append(f"{name}({ch}, {br})")
                    cost += _conv(ch, br, 1, res) + _conv(ch, br, 1, res) + _conv(br, br, 3, res)
                    cost += _conv(ch, br // 2, 1, res)
                    cost += _conv(br // 2, br, 5 if third == "5x5" else 3, res)
                    if third == "double3x3":
                        cost += _conv(br, br, 3, res)
                    cost += _conv(3 * br, ch, 1, res)
                else:
                    scale = rng.choice([1.0, 1.5, 2.0])
                    n1 = _round(ch * scale / 4, 8)
                    n3r, n3 = _round(ch * scale / 4, 8), _round(ch * scale / 2, 8)
                    n5r, n5 = 8, _round(ch * scale / 8, 8)
                    pp = _round(ch * scale / 8, 8)
                    args = [ch, n1, n3r, n3, n5r, n5] + ([pp] if pool_branch != "none" else [])
                    mods.append(f"{name}({', '.join(map(str, args))})")
                    cost += _conv(ch, n1, 1, res) + _conv(ch, n3r, 1, res) + _conv(n3r, n3, 3, res)
                    cost += _conv(ch, n5r, 1, res)
                    cost += (
                        _conv(n5r, n5, 5, res)
                        if third == "5x5"
                        else _conv(n5r, n5, 3, res) + _conv(n5, n5, 3, res)
                    )
                    ch = n1 + n3 + n5
                    if pool_branch != "none":
                        cost += _conv(ch, pp, 1, res)
                        ch += pp
                    cost += _elems(2 * ch * res * res)
            stages.append(_Stage(mods))
        if 2 <= res <= 8 and _fits(cost):
            break
    return _Plan("inception", S, helpers, stem, stages, ch, cost, res=res)


def _squeezenet(rng: random.Random, S: _Style) -> _Plan:
    name = rng.choice(["Fire", "FireModule"])
    bypass = rng.random() < 0.4
    c = _Cls(S, name)
    squeeze = c.unit("squeeze", _ConvArgs("in_channels", "squeeze_channels", "1"))
    e1 = c.unit("expand1x1", _ConvArgs("squeeze_channels", "expand_channels", "1"))
    e3 = c.unit("expand3x3", _ConvArgs("squeeze_channels", "expand_channels", "3"))
    if bypass:
        c.init("self.bypass = in_channels == 2 * expand_channels")
    c.fwd.stmt("s = ", squeeze("x"))
    c.fwd.stmt("out = ", f"torch.cat([{e1('s')}, {e3('s')}], dim=1)")
    if bypass:
        c.fwd("return out + x if self.bypass else out")
    else:
        c.fwd("return out")
    helpers = [c.render("in_channels, squeeze_channels, expand_channels")]
    for _attempt in range(40):
        stem_stride = rng.choice([1, 2])
        c0 = rng.choice([16, 32, 48])
        stem, cost = _stem(rng, S, c0, stem_stride, "single")
        res = INPUT_SIZE // stem_stride
        stages = []
        ch = c0
        pool = _pool_expr(rng, rng.choice(["max", "max", "avg"]))
        n_stages = rng.choice([2, 3])
        for i in range(n_stages):
            mods = [pool] if (i > 0 or stem_stride == 1) else []
            if mods:
                res //= 2
            for _ in range(rng.randint(1, 3)):
                expand = _round(ch / 2 * rng.choice([1.0, 1.0, 1.5, 2.0]), 8)
                sq = _round(expand / 4, 8)
                mods.append(f"{name}({ch}, {sq}, {expand})")
                cost += (
                    _conv(ch, sq, 1, res) + _conv(sq, expand, 1, res) + _conv(sq, expand, 3, res)
                )
                ch = 2 * expand
            stages.append(_Stage(mods))
        if 2 <= res <= 8 and _fits(cost):
            break
    return _Plan("squeezenet", S, helpers, stem, stages, ch, cost, res=res)


def _convnext(rng: random.Random, S: _Style) -> _Plan:
    name = rng.choice(["ConvNeXtBlock", "ConvNextBlock", "DepthwiseMLPBlock"])
    down_name = rng.choice(["Downsample", "DownsampleLayer", "PatchMerging"])
    form = rng.choice(["conv", "linear"])
    k = rng.choice([5, 7, 7])
    scale = rng.choice(["1e-2", "0.1", "0.1", "1.0"])  # 1e-6 learns little in one epoch
    ratio = rng.choice([2, 3, 4])
    act = S.act_module(fresh=False)
    c = _Code()
    with c.block(f"class {name}(nn.Module):"):
        if rng.random() < 0.5:
            c('"""Depthwise 7x7-style convolution, channel norm, inverted MLP, layer scale."""', "")
        with c.block(f"def __init__(self, channels, expansion={ratio}, layer_scale={scale}):"):
            c("super().__init__()")
            c.stmt(
                "self.dwconv = ",
                f"nn.Conv2d(channels, channels, kernel_size={k}, padding={k // 2}, "
                "groups=channels)",
            )
            if form == "conv":
                c("self.norm = nn.GroupNorm(1, channels)")
                c("self.pwconv1 = nn.Conv2d(channels, expansion * channels, kernel_size=1)")
                c(f"self.act = {act}")
                c("self.pwconv2 = nn.Conv2d(expansion * channels, channels, kernel_size=1)")
                c("self.gamma = nn.Parameter(layer_scale * torch.ones(channels, 1, 1))")
            else:
                c("self.norm = nn.LayerNorm(channels)")
                c("self.fc1 = nn.Linear(channels, expansion * channels)")
                c(f"self.act = {act}")
                c("self.fc2 = nn.Linear(expansion * channels, channels)")
                c("self.gamma = nn.Parameter(torch.full((channels,), layer_scale))")
        with c.method("forward(self, x)"):
            if form == "conv":
                c("out = self.norm(self.dwconv(x))")
                c("out = self.pwconv2(self.act(self.pwconv1(out)))")
                c("return x + self.gamma * out")
            else:
                c("out = self.dwconv(x).permute(0, 2, 3, 1)")
                c("out = self.fc2(self.act(self.fc1(self.norm(out))))")
                c("return x + (self.gamma * out).permute(0, 3, 1, 2)")
    d = _Code()
    with (
        d.block(f"class {down_name}(nn.Sequential):"),
        d.block("def __init__(self, in_channels, out_channels):"),
    ):
        down = "nn.Conv2d(in_channels, out_channels, kernel_size=2, stride=2)"
        d.stmt("super().__init__", f"(nn.GroupNorm(1, in_channels), {down})")
    for _attempt in range(40):
        patch = rng.choice([2, 2, 4])
        c0 = rng.choice([24, 32, 48, 64])
        res = INPUT_SIZE // patch
        stem = [
            f"nn.Conv2d(in_channels, {c0}, kernel_size={patch}, stride={patch})",
            f"nn.GroupNorm(1, {c0})",
        ]
        cost = _conv(3, c0, patch, res)
        stages = []
        ch = c0
        n_stages = rng.choice([2, 3]) if patch == 2 else 2
        for i in range(n_stages):
            mods = []
            if i > 0:
                out = _round(ch * rng.choice([1.5, 2.0]), 8)
                mods.append(f"{down_name}({ch}, {out})")
                res //= 2
                cost += _conv(ch, out, 2, res)
                ch = out
            n = rng.randint(1, 3)
            mods += [f"{name}({ch})"] * n
            dw = ch * k * k * res * res
            cost += _Cost(
                n * (dw + 2 * ratio * ch * ch * res * res),
                n * 2 * ratio * ch * ch,
                n * dw,
                n * (4 + ratio) * ch * res * res,
            )
            stages.append(_Stage(mods))
        if 2 <= res <= 8 and _fits(cost):
            break
    final = [f"nn.GroupNorm(1, {ch})"] if rng.random() < 0.4 else []
    return _Plan(
        "convnext",
        S,
        [c.text(), d.text()],
        stem,
        stages,
        ch,
        cost,
        final=final,
        head_hint="layernorm" if not final and rng.random() < 0.6 else "",
        res=res,
    )


class _SelfAttention(_Attention):
    """Self-attention over spatial positions of a (B, C, H, W) map, residual."""

    def __init__(self, rng: random.Random, style: _Style, form: str | None = None) -> None:
        self.S = style
        self.form = form or rng.choice(["nonlocal", "mhsa", "manual"])
        self.heads = rng.choice([2, 4])
        self.ratio = rng.choice([2, 4])
        self.name = {
            "nonlocal": rng.choice(["NonLocalBlock", "SpatialSelfAttention", "SelfAttention2d"]),
            "mhsa": rng.choice(["TransformerBlock", "AttentionBlock", "MHSABlock"]),
            "manual": rng.choice(["MultiHeadSelfAttention", "GlobalAttention", "TokenMixer"]),
        }[self.form]
        self.pos = rng.random() < 0.5

    def write(self, c: _Code) -> None:
        act = self.S.act_module(fresh=False)
        with c.block(f"class {self.name}(nn.Module):"):
            if self.form == "nonlocal":
                with c.block("def __init__(self, channels, reduction=2):"):
                    c("super().__init__()")
                    c("inner = channels // reduction")
                    c("self.query = nn.Conv2d(channels, inner, kernel_size=1)")
                    c("self.key = nn.Conv2d(channels, inner, kernel_size=1)")
                    c("self.value = nn.Conv2d(channels, channels, kernel_size=1)")
                    c("self.gamma = nn.Parameter(torch.zeros(1))")
                with c.method("forward(self, x)"):
                    c("b, c, h, w = x.shape")
                    c("q = self.query(x).flatten(2).transpose(1, 2)")
                    c("k = self.key(x).flatten(2)")
                    c("attn = torch.softmax(torch.bmm(q, k) / k.shape[1] ** 0.5, dim=-1)")
                    c("v = self.value(x).flatten(2)")
                    c("out = torch.bmm(v, attn.transpose(1, 2)).reshape(b, c, h, w)")
                    c("return x + self.gamma * out")
            elif self.form == "mhsa":
                with c.block(
                    f"def __init__(self, channels, num_heads={self.heads}, mlp_ratio={self.ratio}):"
                ):
                    c("super().__init__()")
                    if self.pos:
                        c("self.pos = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)")
                    c("self.norm1 = nn.LayerNorm(channels)")
                    c("self.attn = nn.MultiheadAttention(channels, num_heads, batch_first=True)")
                    c("self.norm2 = nn.LayerNorm(channels)")
                    c.stmt(
                        "self.mlp = ",
                        _call(
                            "nn.Sequential",
                            "nn.Linear(channels, mlp_ratio * channels)",
                            act,
                            "nn.Linear(mlp_ratio * channels, channels)",
                        ),
                    )
                with c.method("forward(self, x)"):
                    c("b, c, h, w = x.shape")
                    if self.pos:
                        c("x = x + self.pos(x)")
                    c("tokens = x.flatten(2).transpose(1, 2)")
                    c("y = self.norm1(tokens)")
                    c("tokens = tokens + self.attn(y, y, y, need_weights=False)[0]")
                    c("tokens = tokens + self.mlp(self.norm2(tokens))")
                    c("return tokens.transpose(1, 2).reshape(b, c, h, w)")
            else:
                with c.block(f"def __init__(self, channels, num_heads={self.heads}):"):
                    c("super().__init__()")
                    c("self.num_heads = num_heads")
                    c("self.scale = (channels // num_heads) ** -0.5")
                    c(f"self.norm = {self.S.norm_layer('channels') or 'nn.GroupNorm(1, channels)'}")
                    c("self.qkv = nn.Conv2d(channels, 3 * channels, kernel_size=1)")
                    c("self.proj = nn.Conv2d(channels, channels, kernel_size=1)")
                with c.method("forward(self, x)"):
                    c("b, c, h, w = x.shape")
                    c.stmt(
                        "qkv = ",
                        "self.qkv(self.norm(x))"
                        ".reshape(b, 3, self.num_heads, c // self.num_heads, h * w)",
                    )
                    c("q, k, v = qkv.unbind(1)")
                    c("attn = (q.transpose(-2, -1) @ k * self.scale).softmax(dim=-1)")
                    c("out = (v @ attn.transpose(-2, -1)).reshape(b, c, h, w)")
                    c("return x + self.proj(out)")

    def cost(self, ch: int, res: int) -> _Cost:
        n = res * res
        if self.form == "nonlocal":
            return _Cost(2 * ch * ch * n + 2 * n * n * ch, 2 * ch * ch, 0, 2 * n * n + 4 * ch * n)
        if self.form == "mhsa":
            return _Cost(
                4 * ch * ch * n + 2 * n * n * ch + 2 * self.ratio * ch * ch * n,
                (4 + 2 * self.ratio) * ch * ch,
                0,
                2 * self.heads * n * n + (8 + self.ratio) * ch * n,
            )
        return _Cost(
            4 * ch * ch * n + 2 * n * n * ch, 4 * ch * ch, 0, 2 * self.heads * n * n + 6 * ch * n
        )


def _vit(rng: random.Random, S: _Style) -> tuple[_Plan, Callable[[_Code, _Code], None]]:
    """A patch-embedding transformer; returns the plan and a writer of its Net body."""
    name = rng.choice(["EncoderBlock", "TransformerLayer", "ViTBlock"])
    heads = rng.choice([2, 4])
    ratio = rng.choice([2, 3, 4])
    act = S.act_module(fresh=False) if rng.random() < 0.4 else "nn.GELU()"
    attn_form = rng.choice(["mha", "manual"])
    c = _Code()
    with c.block(f"class {name}(nn.Module):"):
        with c.block(
            f"def __init__(self, dim, num_heads={heads}, mlp_ratio={ratio}, dropout=0.0):"
        ):
            c("super().__init__()")
            c("self.norm1 = nn.LayerNorm(dim)")
            if attn_form == "mha":
                c.stmt(
                    "self.attn = ",
                    "nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)",
                )
            else:
                c("self.num_heads = num_heads")
                c("self.qkv = nn.Linear(dim, 3 * dim)")
                c("self.proj = nn.Linear(dim, dim)")
            c("self.norm2 = nn.LayerNorm(dim)")
            c.stmt(
                "self.mlp = ",
                _call(
                    "nn.Sequential",
                    "nn.Linear(dim, mlp_ratio * dim)",
                    act,
                    "nn.Dropout(dropout)",
                    "nn.Linear(mlp_ratio * dim, dim)",
                ),
            )
        if attn_form == "manual":
            with c.method("attention(self, x)"):
                c("b, n, d = x.shape")
                c("qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads)")
                c("q, k, v = qkv.permute(2, 0, 3, 1, 4)")
                c("scale = (d // self.num_heads) ** -0.5")
                c("weights = torch.softmax(q @ k.transpose(-2, -1) * scale, dim=-1)")
                c("return self.proj((weights @ v).transpose(1, 2).reshape(b, n, d))")
        with c.method("forward(self, x)"):
            if attn_form == "mha":
                c("y = self.norm1(x)", "x = x + self.attn(y, y, y, need_weights=False)[0]")
            else:
                c("x = x + self.attention(self.norm1(x))")
            c("return x + self.mlp(self.norm2(x))")
    for _attempt in range(40):
        patch = rng.choice([4, 4, 8])
        conv_stem = patch == 4 and rng.random() < 0.4
        dim = rng.choice([32, 48, 64, 96])
        dim = _round(dim, 8 * heads // 2)
        depth = rng.randint(2, 4)
        n = (INPUT_SIZE // patch) ** 2
        cost = _conv(3, dim, patch, INPUT_SIZE // patch)
        if conv_stem:
            cost = _conv(3, dim // 2, 3, 16) + _conv(dim // 2, dim, 3, 8)
        cost += _Cost(
            depth * (4 * dim * dim * n + 2 * n * n * dim + 2 * ratio * dim * dim * n),
            depth * (4 + 2 * ratio) * dim * dim,
            0,
            depth * (2 * heads * n * n + (8 + ratio) * dim * n),
        )
        if _fits(cost):
            break
    pos = rng.choice(["learned", "conv", "none"])
    pool = rng.choice(["mean", "cls"]) if pos != "conv" else "mean"
    embed_name = rng.choice(["self.patch_embed", "self.embed", "self.to_patches"])

    def write(init: _Code, fwd: _Code) -> None:
        if conv_stem:
            items = [
                *S.layers(_ConvArgs("in_channels", str(dim // 2), "3", "2")),
                f"nn.Conv2d({dim // 2}, {dim}, kernel_size=3, stride=2, padding=1)",
            ]
            init.stmt(f"{embed_name} = ", _call("nn.Sequential", *items))
        else:
            init.stmt(
                f"{embed_name} = ",
                f"nn.Conv2d(in_channels, {dim}, kernel_size={patch}, stride={patch})",
            )
        grid = f"in_shape[2] // {patch}, in_shape[3] // {patch}"
        if pos == "learned":
            init.stmt("self.pos_embed = ", f"nn.Parameter(torch.zeros(1, {dim}, {grid}))")
        elif pos == "conv":
            init.stmt(
                "self.pos_conv = ",
                f"nn.Conv2d({dim}, {dim}, kernel_size=3, padding=1, groups={dim})",
            )
        if pool == "cls":
            init.stmt("self.cls_token = ", f"nn.Parameter(torch.zeros(1, 1, {dim}))")
        blocks = ", ".join([f"{name}({dim}, dropout={DROP})"] * depth)
        init.stmt("self.blocks = ", f"nn.Sequential({blocks})")
        init.stmt("self.norm = ", f"nn.LayerNorm({dim})")
        init.stmt("self.head = ", f"nn.Linear({dim}, num_classes)")
        fwd(f"x = {embed_name}(x)")
        if pos == "learned":
            fwd("x = x + self.pos_embed")
        elif pos == "conv":
            fwd("x = x + self.pos_conv(x)")
        fwd("x = x.flatten(2).transpose(1, 2)")
        if pool == "cls":
            fwd("x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)")
        fwd("x = self.norm(self.blocks(x))")
        fwd("x = x[:, 0]" if pool == "cls" else "x = x.mean(dim=1)")
        fwd("return self.head(x)")

    plan = _Plan("vit", S, [c.text()], [], [], dim, cost)
    return plan, write


# --- heads, init, training ------------------------------------------------------------------


def _head(rng: random.Random, S: _Style, plan: _Plan, init: _Code, fwd: _Code) -> None:
    """The classifier on the body's output ``x`` (channels ``plan.channels``)."""
    c = plan.channels
    hint = plan.head_hint
    form = hint or _pick(
        rng,
        {
            "gap_linear": 3,
            "gap_functional": 2,
            "classifier": 2,
            "mlp": 1.5,
            "conv1x1": 1,
            "avgmax": 1,
            "grid": 0.7,
        },
    )
    dropout = rng.random() < 0.8
    flat = rng.choice(["torch.flatten(x, 1)", "x.flatten(1)", "x.view(x.size(0), -1)"])
    if form == "gap_linear":
        init("self.pool = nn.AdaptiveAvgPool2d(1)")
        _linear_head(init, fwd, dropout, "fc", str(c), ["x = self.pool(x)", f"x = {flat}"])
    elif form == "gap_functional":
        if dropout:
            init(f"self.drop_rate = {DROP}")
        init.stmt("self.linear = ", f"nn.Linear({c}, num_classes)")
        fwd(
            rng.choice(
                [
                    "x = F.adaptive_avg_pool2d(x, 1).flatten(1)",
                    "x = x.mean(dim=(2, 3))",
                    "x = torch.mean(x, dim=(2, 3))",
                ]
            )
        )
        if dropout:
            fwd("x = F.dropout(x, p=self.drop_rate, training=self.training)")
        fwd("return self.linear(x)")
    elif form in ("classifier", "mlp"):
        items = ["nn.AdaptiveAvgPool2d(1)", "nn.Flatten()"]
        if form == "mlp":
            hidden = _round(max(c, 64) * rng.choice([0.5, 1.0, 2.0]), 16)
            items += [f"nn.Linear({c}, {hidden})", S.act_module()]
            if dropout:
                items.append(f"nn.Dropout({DROP})")
            items.append(f"nn.Linear({hidden}, num_classes)")
        else:
            if dropout:
                items.append(f"nn.Dropout(p={DROP})")
            items.append(f"nn.Linear({c}, num_classes)")
        init.stmt("self.classifier = ", _call("nn.Sequential", *items))
        fwd("return self.classifier(x)")
    elif form == "conv1x1":
        items = [f"nn.Dropout({DROP})"] if dropout else []
        items += [
            f"nn.Conv2d({c}, num_classes, kernel_size=1)",
            "nn.AdaptiveAvgPool2d(1)",
            "nn.Flatten()",
        ]
        init.stmt("self.head = ", _call("nn.Sequential", *items))
        fwd("return self.head(x)")
    elif form == "avgmax":
        both = "torch.cat([F.adaptive_avg_pool2d(x, 1), F.adaptive_max_pool2d(x, 1)], dim=1)"
        _linear_head(init, fwd, dropout, "fc", f"2 * {c}", [f"x = {both}", f"x = {flat}"])
    elif form == "grid":
        init("self.pool = nn.AdaptiveAvgPool2d(2)")
        pooled = rng.choice(["x = torch.flatten(self.pool(x), 1)", "x = self.pool(x).flatten(1)"])
        _linear_head(init, fwd, dropout, "fc", f"{c} * 4", [pooled])
    else:  # layernorm
        init.stmt("self.norm = ", f"nn.LayerNorm({c})")
        _linear_head(init, fwd, dropout, "head", str(c), ["x = self.norm(x.mean(dim=(-2, -1)))"])


def _linear_head(
    init: _Code, fwd: _Code, dropout: bool, name: str, features: str, pooled: list[str]
) -> None:
    """A head's last part: forward runs ``pooled``, then the dropout module if any, then
    ``self.<name>``, a linear layer from ``features`` to the classes."""
    if dropout:
        init(f"self.dropout = nn.Dropout({DROP})")
    init.stmt(f"self.{name} = ", f"nn.Linear({features}, num_classes)")
    fwd(*pooled)
    if dropout:
        fwd("x = self.dropout(x)")
    fwd(f"return self.{name}(x)")


def _weight_init(rng: random.Random, S: _Style, family: str) -> list[str]:
    """Lines of a weight-initialisation loop over ``m`` (empty: the defaults)."""
    if rng.random() < 0.55:
        return []
    conv_init = rng.choice(
        [
            f'nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="{S.nonlinearity}")',
            f'nn.init.kaiming_uniform_(m.weight, nonlinearity="{S.nonlinearity}")',
            "nn.init.xavier_uniform_(m.weight)",
            "nn.init.orthogonal_(m.weight)",
        ]
    )
    linear_init = rng.choice(
        [
            "nn.init.xavier_normal_(m.weight)",
            "nn.init.trunc_normal_(m.weight, std=0.02)",
            "nn.init.xavier_uniform_(m.weight)",
        ]
    )
    norms = S.norm_types + (["nn.LayerNorm"] if family in ("vit", "convnext", "attention") else [])
    if family == "convnext" and "nn.GroupNorm" not in norms:
        norms.append("nn.GroupNorm")
    lines = ["if isinstance(m, nn.Conv2d):", f"    {conv_init}"]
    lines += ["    if m.bias is not None:", "        nn.init.zeros_(m.bias)"]
    if norms:
        types = norms[0] if len(norms) == 1 else f"({', '.join(norms)})"
        lines += [
            f"elif isinstance(m, {types}):",
            "    nn.init.ones_(m.weight)",
            "    nn.init.zeros_(m.bias)",
        ]
    lines += ["elif isinstance(m, nn.Linear):", f"    {linear_init}"]
    lines += ["    if m.bias is not None:", "        nn.init.zeros_(m.bias)"]
    return lines


def _train_setup(
    rng: random.Random, code: _Code, learn_state: dict[str, object], batch_norm: bool
) -> None:
    smoothing = rng.choice([None, None, "0.1", "0.05"])
    loss = (
        f"nn.CrossEntropyLoss(label_smoothing={smoothing})"
        if smoothing
        else "nn.CrossEntropyLoss()"
    )
    # SGD at the protocol's lr suits batch-normalised networks; without batch norm (group /
    # layer norm, none, transformers) an adaptive optimiser learns far more in one epoch.
    if batch_norm:
        opt = _pick(rng, {"sgd": 4, "adam": 1.5, "adamw": 1.5, "rmsprop": 0.8, "nadam": 0.5})
    else:
        opt = _pick(rng, {"sgd": 1, "adam": 2, "adamw": 2.5, "rmsprop": 0.5, "nadam": 0.7})
    with code.block("def train_setup(self, prm):"):
        code("self.to(self.device)")
        if rng.random() < 0.5:
            code.stmt("self.criteria = ", f"({loss}.to(self.device),)")
        else:
            code.stmt("self.criteria = ", f"({loss},)")
        params = "self.parameters()"
        if opt in ("adamw", "sgd") and rng.random() < 0.3:
            wd = "5e-4" if opt == "sgd" else rng.choice(["0.05", "0.01"])
            code("decay, no_decay = [], []")
            with code.block("for param in self.parameters():"):
                code("(no_decay if param.ndim <= 1 else decay).append(param)")
            params = (
                f'[{{"params": decay, "weight_decay": {wd}}}, '
                '{"params": no_decay, "weight_decay": 0.0}]'
            )
            wd_arg = None
        else:
            wd_arg = {
                "sgd": rng.choice([None, "weight_decay=5e-4", "weight_decay=1e-4"]),
                "adam": rng.choice([None, None, "weight_decay=1e-5"]),
                "adamw": rng.choice(["weight_decay=0.05", "weight_decay=0.01"]),
                "rmsprop": rng.choice([None, "weight_decay=1e-5"]),
                "nadam": None,
            }[opt]
        if opt == "sgd":
            nesterov = 'nesterov=prm["momentum"] > 0' if rng.random() < 0.25 else None
            code.stmt(
                "self.optimizer = ",
                _call(
                    "torch.optim.SGD",
                    params,
                    'lr=prm["lr"]',
                    'momentum=prm["momentum"]',
                    wd_arg,
                    nesterov,
                ),
            )
        else:
            lr_form = rng.choice(
                [
                    'lr = min(max(prm["lr"] * 0.1, 1e-4), 3e-3)',
                    'lr = max(1e-4, min(prm["lr"] / 5, 2e-3))',
                    'lr = prm["lr"] * 0.1 if prm["lr"] < 0.03 else 3e-3',
                ]
            )
            code(lr_form)
            fn = {"adam": "Adam", "adamw": "AdamW", "rmsprop": "RMSprop", "nadam": "NAdam"}[opt]
            extra: list[str | None] = [wd_arg]
            if opt in ("adam", "adamw", "nadam") and rng.random() < 0.35:
                extra.append('betas=(min(prm["momentum"], 0.95), 0.999)')
            if opt == "rmsprop":
                extra.append("alpha=0.9")
                if rng.random() < 0.5:
                    extra.append('momentum=prm["momentum"] * 0.5')
            code.stmt("self.optimizer = ", _call(f"torch.optim.{fn}", params, "lr=lr", *extra))
        if rng.random() < 0.2:
            warmup = rng.choice([10, 20, 30, 50])
            code.stmt(
                "self.scheduler = ",
                "torch.optim.lr_scheduler.LambdaLR("
                f"self.optimizer, lambda step: min(1.0, (step + 1) / {warmup}))",
            )
            learn_state["scheduler"] = True


def _learn(rng: random.Random, code: _Code, learn_state: dict[str, object]) -> None:
    hoist = rng.random() < 0.4
    clip = _pick(rng, {"none": 2, "norm": 2, "value": 0.6})
    running = rng.random() < 0.25
    with code.block("def learn(self, train_data):"):
        if rng.random() < 0.6:
            code("self.train()")
        if hoist:
            code("criterion = self.criteria[0]")
        if running:
            code("total_loss, batches = 0.0, 0")
        with code.block("for inputs, labels in train_data:"):
            if rng.random() < 0.5:
                code("inputs, labels = inputs.to(self.device), labels.to(self.device)")
            else:
                code("inputs = inputs.to(self.device)", "labels = labels.to(self.device)")
            code(
                "self.optimizer.zero_grad(set_to_none=True)"
                if rng.random() < 0.3
                else "self.optimizer.zero_grad()"
            )
            crit = "criterion" if hoist else "self.criteria[0]"
            call = "self(inputs)" if rng.random() < 0.7 else "self.forward(inputs)"
            if rng.random() < 0.5:
                code(f"outputs = {call}", f"loss = {crit}(outputs, labels)")
            else:
                code(f"loss = {crit}({call}, labels)")
            code("loss.backward()")
            if clip == "norm":
                norm = rng.choice(["1.0", "2.0", "3.0", "5.0"])
                code(f"nn.utils.clip_grad_norm_(self.parameters(), max_norm={norm})")
            elif clip == "value":
                value = rng.choice(["0.5", "1.0"])
                code(f"nn.utils.clip_grad_value_(self.parameters(), clip_value={value})")
            code("self.optimizer.step()")
            if learn_state.get("scheduler"):
                code("self.scheduler.step()")
            if running:
                code("total_loss += loss.item()", "batches += 1")
        if running:
            code("return total_loss / max(batches, 1)")


# --- the body layouts -----------------------------------------------------------------------


def _body(rng: random.Random, plan: _Plan, init: _Code, fwd: _Code) -> None:
    """Declare the stem and stages in ``init`` and apply them to ``x`` in ``fwd``."""
    S = plan.style
    kind = plan.kind
    uniform = kind is not None and all(s.uniform for s in plan.stages)
    layouts = {"flat": 2, "stages": 2.5, "modulelist": 1}
    if uniform:
        layouts.update({"make_stage": 2.0, "table": 1.5})
    layout = _pick(rng, layouts)
    stage_word = rng.choice(["stage", "layer", "block"])
    stem_attr = (
        rng.random() < 0.35
        and S.functional
        and not S.unit
        and len(plan.stem) == 3
        and layout != "flat"
    )
    # the stem
    if layout != "flat":
        if stem_attr:
            conv, norm = plan.stem[0], plan.stem[1]
            init.stmt("self.conv1 = ", conv)
            init.stmt(f"self.{S.norm_prefix}1 = ", norm)
            fwd(f"x = {S.act_fn(f'self.{S.norm_prefix}1(self.conv1(x))')}")
        else:
            init.stmt("self.stem = ", _seq(plan.stem))
            fwd("x = self.stem(x)")
    if layout == "flat":
        items = plan.stem + [m for s in plan.stages for m in s.modules] + plan.final
        init.stmt("self.features = ", _call("nn.Sequential", *items))
        fwd("x = self.features(x)")
    elif layout == "stages":
        for i, stage in enumerate(plan.stages, 1):
            init.stmt(f"self.{stage_word}{i} = ", _seq(stage.modules))
            fwd(f"x = self.{stage_word}{i}(x)")
    elif layout == "modulelist":
        mods = [m for s in plan.stages for m in s.modules]
        init.stmt("self.blocks = ", "nn.ModuleList([" + ", ".join(mods) + "])")
        with fwd.block("for block in self.blocks:"):
            fwd("x = block(x)")
    elif layout == "make_stage":
        assert kind is not None
        pooled = any(s.uniform and s.uniform[4] for s in plan.stages)
        pool = next((s.uniform[4] for s in plan.stages if s.uniform and s.uniform[4]), None)
        for i, stage in enumerate(plan.stages, 1):
            assert stage.uniform
            cin, cout, depth, stride, stage_pool = stage.uniform
            last = f"{'True' if stage_pool else 'False'}" if pooled else str(stride)
            name = "downsample" if pooled else "stride"
            drop = f", dropout={DROP}" if DROP in kind.ctor("a", "b", None) else ""
            init.stmt(
                f"self.{stage_word}{i} = ",
                f"self._make_stage({cin}, {cout}, {depth}, {name}={last}{drop})",
            )
            fwd(f"x = self.{stage_word}{i}(x)")
        plan.net_methods = _make_stage_source(kind, pooled, pool)
    else:  # table
        assert kind is not None
        pooled = any(s.uniform and s.uniform[4] for s in plan.stages)
        pool = next((s.uniform[4] for s in plan.stages if s.uniform and s.uniform[4]), None)
        widths = ", ".join(str(s.uniform[1]) for s in plan.stages if s.uniform) + (
            "," if len(plan.stages) == 1 else ""
        )
        depths = ", ".join(str(s.uniform[2]) for s in plan.stages if s.uniform) + (
            "," if len(plan.stages) == 1 else ""
        )
        strides = ", ".join(str(s.uniform[3]) for s in plan.stages if s.uniform) + (
            "," if len(plan.stages) == 1 else ""
        )
        init(f"widths = ({widths})", f"depths = ({depths})", f"strides = ({strides})")
        init("layers = []")
        first_in = plan.stages[0].uniform[0] if plan.stages[0].uniform else 0
        init(f"channels = {first_in}")
        with init.block("for width, depth, stride in zip(widths, depths, strides):"):
            if pooled:
                with init.block("if stride > 1:"):
                    init(f"layers.append({pool})")
                with init.block("for _ in range(depth):"):
                    init.stmt("", "layers.append(" + kind.ctor("channels", "width", None) + ")")
                    init("channels = width")
            else:
                with init.block("for i in range(depth):"):
                    init.stmt(
                        "",
                        "layers.append("
                        + kind.ctor("channels", "width", "stride if i == 0 else 1")
                        + ")",
                    )
                    init("channels = width")
        init("self.body = nn.Sequential(*layers)")
        fwd("x = self.body(x)")
    if plan.final and layout != "flat":
        init.stmt("self.final = ", _seq(plan.final))
        fwd("x = self.final(x)")


def _make_stage_source(kind: _Kind, pooled: bool, pool: str | None) -> str:
    """The Net method that builds one stage of ``kind`` blocks."""
    drop = ", dropout" if DROP in kind.ctor("a", "b", None) else ""
    c = _Code(1)
    if pooled:
        with c.block(f"def _make_stage(self, in_channels, out_channels, depth, downsample{drop}):"):
            c(f"layers = [{pool}] if downsample else []")
            with c.block("for i in range(depth):"):
                c.stmt(
                    "",
                    "layers.append("
                    + kind.ctor("in_channels if i == 0 else out_channels", "out_channels", None)
                    + ")",
                )
            c("return nn.Sequential(*layers)")
    else:
        with c.block(f"def _make_stage(self, in_channels, out_channels, depth, stride{drop}):"):
            c.stmt("layers = ", f"[{kind.ctor('in_channels', 'out_channels', 'stride')}]")
            with c.block("for _ in range(depth - 1):"):
                c.stmt("", "layers.append(" + kind.ctor("out_channels", "out_channels", None) + ")")
            c("return nn.Sequential(*layers)")
    return c.text().replace(DROP, "dropout")


# --- families -------------------------------------------------------------------------------


def _plan(rng: random.Random, family: str) -> tuple[_Plan, Callable[[_Code, _Code], None] | None]:
    norms_no_none = {"batch": 8, "group": 1, "layer": 0.6}
    if family == "vgg":
        S = _Style(rng)
        attn = _channel_attention(rng, S) if rng.random() < 0.1 else None
        return _homogeneous(rng, family, S, _Plain(rng, S, attn), widths=(16, 24, 32)), None
    if family == "resnet":
        S = _Style(rng, norms=norms_no_none if rng.random() < 0.9 else None)
        return _homogeneous(rng, family, S, _Basic(rng, S)), None
    if family == "wideresnet":
        S = _Style(rng, norms=norms_no_none)
        kind: _Kind = _Basic(rng, S, preact=True, dropout=True)
        return _homogeneous(rng, family, S, kind, widths=(16, 24, 32)), None
    if family in ("bottleneck", "resnext"):
        S = _Style(rng, norms=norms_no_none)
        groups = 1 if family == "bottleneck" else rng.choice([2, 4, 8])
        return _homogeneous(rng, family, S, _Bottleneck(rng, S, groups), widths=(32, 48, 64)), None
    if family == "se":
        S = _Style(rng, norms=norms_no_none)
        attn = _channel_attention(rng, S)
        choice = rng.choice(["basic", "bottleneck", "plain", "separable"])
        if choice == "basic":
            kind = _Basic(rng, S, attn)
        elif choice == "bottleneck":
            kind = _Bottleneck(rng, S, rng.choice([1, 1, 4]), attn)
        elif choice == "plain":
            kind = _Plain(rng, S, attn)
        else:
            kind = _DepthwiseSeparable(rng, S, attn)
        return _homogeneous(rng, family, S, kind), None
    if family == "cbam":
        S = _Style(rng, norms=norms_no_none)
        attn = _spatial_attention(rng, S)
        choice = rng.choice(["basic", "plain", "separable"])
        kind = {"basic": _Basic, "plain": _Plain, "separable": _DepthwiseSeparable}[choice](
            rng, S, attn
        )
        return _homogeneous(rng, family, S, kind), None
    if family == "mobilenet":
        S = _Style(rng)
        return _homogeneous(
            rng, family, S, _DepthwiseSeparable(rng, S), widths=(16, 32, 48, 64)
        ), None
    if family in ("mbconv", "mixnet"):
        acts = {"relu6": 2, "silu": 2, "hardswish": 2, "relu": 1, "gelu": 0.5}
        S = _Style(rng, acts=acts, norms=norms_no_none)
        kind = _InvertedResidual(rng, S, mixed=family == "mixnet")
        return _homogeneous(rng, family, S, kind, widths=(16, 24, 32)), None
    if family == "shufflenet":
        S = _Style(rng, norms=norms_no_none)
        return _homogeneous(rng, family, S, _ShuffleUnit(rng, S), widths=(16, 32, 48)), None
    if family == "repvgg":
        S = _Style(rng, norms=norms_no_none)
        return _homogeneous(rng, family, S, _RepVGG(rng, S), widths=(16, 24, 32)), None
    if family == "densenet":
        S = _Style(rng, norms=norms_no_none)
        return _densenet(rng, S), None
    if family == "inception":
        S = _Style(rng, units=1.0)
        return _inception(rng, S), None
    if family == "squeezenet":
        S = _Style(rng)
        return _squeezenet(rng, S), None
    if family == "convnext":
        S = _Style(rng, acts={"gelu": 4, "silu": 1, "relu": 0.5, "hardswish": 0.3, "mish": 0.3})
        return _convnext(rng, S), None
    if family == "attention":
        S = _Style(rng, norms=norms_no_none)
        self_attn = _SelfAttention(rng, S)
        base = _Basic(rng, S) if rng.random() < 0.6 else _Plain(rng, S)
        count = rng.choice([1, 1, 2])

        def extras(ch: int, res: int) -> tuple[list[str], _Cost]:
            cost = _Cost()
            for _ in range(count):
                cost += self_attn.cost(ch, res)
            return [self_attn.ctor(str(ch))] * count, cost

        plan = _homogeneous(rng, family, S, base, extras=extras, widths=(16, 24, 32))
        plan.helpers += self_attn.helpers()
        return plan, None
    if family == "vit":
        S = _Style(rng, acts={"gelu": 4, "silu": 1, "relu": 1})
        return _vit(rng, S)
    raise ValueError(f"unknown family {family!r}")


def _build(rng: random.Random, family: str) -> str:
    for _attempt in range(30):
        plan, writer = _plan(rng, family)
        if _fits(plan.cost):
            break
    S = plan.style
    init, fwd = _Code(2), _Code(2)
    init("super().__init__()")
    init("self.device = device")
    init(rng.choice(["in_channels = in_shape[1]", "in_channels = int(in_shape[1])"]))
    init(rng.choice(["num_classes = out_shape[0]", "num_classes = int(out_shape[0])"]))
    drop_local = rng.random() < 0.3
    if writer is not None:
        writer(init, fwd)
    else:
        _body(rng, plan, init, fwd)
        _head(rng, S, plan, init, fwd)
    init_lines = _weight_init(rng, S, family)
    init_method = rng.random() < 0.5
    if init_lines:
        if init_method:
            init("self.apply(self._init_weights)")
        else:
            with init.block("for m in self.modules():"):
                init(*init_lines)
    net = _Code()
    with net.block("class Net(nn.Module):"):
        with net.block("def __init__(self, in_shape, out_shape, prm, device):"):
            net.extend(init)
        net("")
        if plan.net_methods:
            net.lines.extend(plan.net_methods.split("\n"))
            net("")
        if init_lines and init_method:
            with net.block("def _init_weights(self, m):"):
                net(*init_lines)
            net("")
        with net.block("def forward(self, x):"):
            net.extend(fwd)
        net("")
        learn_state: dict[str, object] = {}
        batch_norm = S.norm == "batch" and family not in ("convnext", "vit")
        _train_setup(rng, net, learn_state, batch_norm)
        net("")
        _learn(rng, net, learn_state)
    body = net.text()
    helper_list = list(dict.fromkeys(plan.helpers))
    if S.unit and re.search(rf"\b{S.unit}\(", "\n".join([body, *helper_list])):
        helper_list.insert(0, S.unit_source())
    helpers = "\n\n\n".join(helper_list)
    text = f"{helpers}\n\n\n{body}\n" if helpers else f"{body}\n"
    drop_count = text.count(DROP)
    if drop_count:
        if drop_local and drop_count > 1:
            text = text.replace(DROP, "dropout")
            text = text.replace(
                "        self.device = device\n",
                '        self.device = device\n        dropout = prm["dropout"]\n',
                1,
            )
        else:
            text = text.replace(DROP, 'prm["dropout"]')
    # unused names
    if "in_channels" not in body.split("in_channels = ", 1)[-1]:
        text = re.sub(r"\n        in_channels = [^\n]*", "", text, count=1)
    if "num_classes" not in body.split("num_classes = ", 1)[-1]:
        text = re.sub(r"\n        num_classes = [^\n]*", "", text, count=1)
    used = sorted(set(re.findall(r'prm\["(\w+)"\]', text)))
    imports = ["import torch"]
    imports.append(rng.choice(["from torch import nn", "import torch.nn as nn"]))
    if re.search(r"\bF\.", text):
        imports.append(
            rng.choice(["import torch.nn.functional as F", "from torch.nn import functional as F"])
        )
    names = ", ".join(f'"{n}"' for n in used)
    hp = f"def supported_hyperparameters():\n    return {{{names}}}\n"
    return "\n".join(imports) + "\n\n\n" + hp + "\n\n" + text
