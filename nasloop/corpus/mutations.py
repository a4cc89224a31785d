"""Parent -> child mutations of the seed grammar's networks (the bootstrap LM's edit pairs).

The grammar (:mod:`nasloop.corpus.grammar`) writes code straight from an rng and keeps no
structure object, so a mutation edits the code: it parses it with :mod:`ast` and rewrites the
source of the nodes it changes; the rest of the text, formatting included, stays as it was, so a
child's diff against its parent is as small as the change. The kinds (:data:`KINDS`):

* ``width``: every channel count (the integer literals >= 8 of the network's modules, save
  kernel sizes, strides, paddings, pooling sizes, head counts, depths and argument defaults)
  times one factor from 1/2 to 3/2 that keeps them all whole numbers, so the widths still agree;
* ``depth``: one entry of a depth table or one depth argument of a stage helper one more or one
  less, or one block of a module list repeated (at its output width, without its stride) or
  removed (where its input and output widths are the same and it does not downsample);
* ``block``: the class of one block call swapped for a block of another kind with the same
  signature, taken from a network the grammar draws from the same rng (with the helpers and
  imports it needs; the helpers that nothing uses any more are dropped);
* ``activation``: every use of the network's most used activation (module or functional) made
  another activation;
* ``norm``: every normalisation layer of the most used kind (BatchNorm, GroupNorm(g, c),
  GroupNorm(1, c)) made another of these kinds.

A child must differ from its parent, build, run a forward pass to ``(1, classes)`` logits (one
image of the task's input shape, CPU, eval mode; the grammar's code is ours, so it runs
in-process) and stay within the grammar's parameter and multiply-accumulate budget. A kind tries
up to :data:`TRIES` of its candidate edits in an order drawn from the rng; when none passes, the
mutation fails (None) and is dropped. Everything is deterministic in the rng.
"""

from __future__ import annotations

import ast
import itertools
import random
import re
import types
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction

from nasloop.corpus.build import IN_SHAPE, OUT_SHAPE
from nasloop.corpus.grammar import MAX_MACS, MAX_PARAMS, sample

KINDS = ("width", "depth", "block", "activation", "norm")
TRIES = 3  # candidate edits a kind checks before it gives up
DONORS = 3  # networks drawn for a block swap
WIDTH_FACTORS = tuple(Fraction(f) for f in ("1/2", "3/4", "5/4", "3/2"))

# activation -> (module class, functional, takes inplace=True as the grammar writes it)
_ACTIVATIONS = {
    "relu": ("ReLU", "relu", True),
    "gelu": ("GELU", "gelu", False),
    "silu": ("SiLU", "silu", False),
    "leaky_relu": ("LeakyReLU", "leaky_relu", True),
    "hardswish": ("Hardswish", "hardswish", False),
    "elu": ("ELU", "elu", False),
    "relu6": ("ReLU6", "relu6", True),
    "mish": ("Mish", "mish", False),
}
_SLOPE = "0.1"  # negative slope of a LeakyReLU a mutation writes
_NORMS = ("batch", "group", "layer")
_GROUPS = (2, 4, 8)
_NORM_TYPES = {"batch": "nn.BatchNorm2d"}  # the others are nn.GroupNorm
_TRAINING = {"supported_hyperparameters", "train_setup", "learn"}
_NOT_CHANNELS = {
    "kernel_size",
    "stride",
    "padding",
    "dilation",
    "reduction",
    "num_heads",
    "heads",
    "patch_size",
    "depth",
    "num_layers",
    "mlp_ratio",
    "expansion",
}
_POOLS = re.compile(r"(nn\.|F\.)?(adaptive_)?(Adaptive)?(Max|Avg|max_|avg_)[Pp]ool\w*|range")
_DEPTH_PARAMS = {"depth", "num_layers", "num_blocks", "blocks", "repeats"}
_DEPTH_TABLES = {"depths", "blocks", "repeats", "num_blocks"}
_IO = ["in_channels", "out_channels"]


@dataclass(frozen=True)
class Child:
    kind: str
    code: str
    parameters: int  # trainable
    macs: int  # multiply-accumulates of convolutions and linear layers, one image


def check(code: str) -> tuple[int, int]:
    """(trainable parameters, multiply-accumulates per image) of a *trusted* network, measured
    on one forward pass of one image of the task's input shape; raises where the code does not
    build, does not run or does not give ``(1, classes)`` logits. Torch's RNG is left as it was.
    """
    import torch
    from torch import nn

    module = types.ModuleType("child")
    exec(compile(code, "<child>", "exec"), module.__dict__)
    prm = {"lr": 0.01, "momentum": 0.9, "dropout": 0.2, "batch": IN_SHAPE[0]}
    macs = 0

    def count(m: nn.Module, _: object, out: torch.Tensor) -> None:
        nonlocal macs
        if isinstance(m, nn.Conv2d):
            macs += out.numel() * m.weight[0].numel()
        elif isinstance(m, nn.Linear):
            macs += out.numel() * m.in_features

    with torch.random.fork_rng(devices=[]), torch.no_grad():
        net = module.Net(IN_SHAPE, OUT_SHAPE, prm, torch.device("cpu")).eval()
        for m in net.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                m.register_forward_hook(count)
        out = net(torch.zeros(1, *IN_SHAPE[1:]))
    if tuple(out.shape) != (1, OUT_SHAPE[0]):
        raise ValueError(f"logits of shape {tuple(out.shape)}")
    return sum(p.numel() for p in net.parameters() if p.requires_grad), macs


def mutate(code: str, kind: str, rng: random.Random) -> Child | None:
    """A child of ``code`` by one mutation of ``kind``, or None where none of the kind's
    candidate edits gives a network that differs, runs and fits the grammar's budget."""
    candidates = (t for t in _EDITS[kind](_Source(code), rng) if t != code)
    for text in itertools.islice(candidates, TRIES):
        try:
            params, macs = check(text)
        except Exception:
            continue
        if 0 < params <= MAX_PARAMS and macs <= MAX_MACS:
            return Child(kind, text, params, macs)
    return None


def children(
    codes: Sequence[str],
    count: int,
    rng: random.Random,
    tally: dict[str, list[int]] | None = None,
) -> list[tuple[str, int, Child]]:
    """``count`` (parent, parent's trainable parameters, child) triples: the parents in shuffled
    rounds over ``codes``, each with a kind drawn from :data:`KINDS`; a failed mutation moves on
    to the next parent (at most ``4 * count`` tries, so fewer may come back). ``tally[kind]``
    counts [tried, succeeded]."""
    out: list[tuple[str, int, Child]] = []
    order: list[int] = []
    params: dict[int, int] = {}
    for _ in range(4 * count if codes else 0):
        if len(out) == count:
            break
        if not order:
            order = list(range(len(codes)))
            rng.shuffle(order)
        i = order.pop()
        kind = rng.choice(KINDS)
        if i not in params:
            try:
                params[i] = check(codes[i])[0]
            except Exception:
                params[i] = 0  # a parent that does not run is not mutated
        child = mutate(codes[i], kind, rng) if params[i] else None
        if tally is not None:
            tried = tally.setdefault(kind, [0, 0])
            tried[0] += 1
            tried[1] += child is not None
        if child is not None:
            out.append((codes[i], params[i], child))
    return out


# --- reading and rewriting source -----------------------------------------------------------


class _Source:
    """Parsed code with the byte offsets of its nodes, rewritten by (start, end, text) edits."""

    def __init__(self, code: str) -> None:
        self.code = code
        self.raw = code.encode()
        self.tree = ast.parse(code)
        self.lines = [0] + [m.end() for m in re.finditer(b"\n", self.raw)]
        self.defs: dict[str, ast.ClassDef | ast.FunctionDef] = {
            n.name: n for n in self.tree.body if isinstance(n, ast.ClassDef | ast.FunctionDef)
        }

    def span(self, node: ast.AST) -> tuple[int, int]:
        start = self.lines[node.lineno - 1] + node.col_offset  # type: ignore[attr-defined]
        end = self.lines[node.end_lineno - 1] + node.end_col_offset  # type: ignore[attr-defined]
        return start, end

    def text(self, node: ast.AST) -> str:
        start, end = self.span(node)
        return self.raw[start:end].decode()

    def line_start(self, node: ast.AST) -> int:
        return self.lines[node.lineno - 1]  # type: ignore[attr-defined]

    def edit(self, edits: Iterable[tuple[int, int, str]]) -> str:
        out, last = self.raw, len(self.raw) + 1
        for start, end, text in sorted(edits, key=lambda e: (e[0], e[1]), reverse=True):
            if end > last:
                raise ValueError("overlapping edits")
            out, last = out[:start] + text.encode() + out[end:], start
        return out.decode()

    def replace(self, node: ast.AST, text: str) -> tuple[int, int, str]:
        return (*self.span(node), text)

    def params(self, call: ast.Call) -> tuple[list[str], int] | None:
        """(parameter names, how many need an argument) of a helper ``call`` calls: a module
        level class (its ``__init__`` without self), function, or a ``self.`` method of Net."""
        fn: ast.AST | None = None
        method = isinstance(call.func, ast.Attribute)
        if isinstance(call.func, ast.Name):
            fn = self.defs.get(call.func.id)
            if isinstance(fn, ast.ClassDef):
                fn, method = next((f for f in fn.body if _is_def(f, "__init__")), None), True
        elif _dotted(call.func).startswith("self.") and "Net" in self.defs:
            name = _dotted(call.func).removeprefix("self.")
            fn = next((f for f in self.defs["Net"].body if _is_def(f, name)), None)
        if not isinstance(fn, ast.FunctionDef):
            return None
        names = [a.arg for a in fn.args.args][1 if method else 0 :]
        return names, len(names) - len(fn.args.defaults)

    def bind(self, call: ast.Call) -> dict[str, ast.expr] | None:
        """The arguments of a helper call by parameter name (None for other calls)."""
        sig = self.params(call)
        if sig is None or len(call.args) > len(sig[0]):
            return None
        if any(isinstance(a, ast.Starred) for a in call.args):
            return None
        bound = dict(zip(sig[0], call.args, strict=False))
        for kw in call.keywords:
            if kw.arg is None or kw.arg not in sig[0]:
                return None
            bound[kw.arg] = kw.value
        return bound

    def used_names(self, skip: ast.AST | None = None) -> set[str]:
        """Names loaded anywhere outside ``skip`` (a module-level def)."""
        return {
            n.id
            for top in self.tree.body
            if top is not skip
            for n in ast.walk(top)
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)
        }


def _is_def(node: ast.AST, name: str) -> bool:
    return isinstance(node, ast.FunctionDef) and node.name == name


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _int(node: ast.AST) -> int | None:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    return None


def _calls(tree: ast.AST) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)]


# --- the kinds ------------------------------------------------------------------------------


def _width(src: _Source, rng: random.Random) -> list[str]:
    found: list[tuple[ast.Constant, int]] = []

    def visit(node: ast.AST, skip: bool) -> None:
        if isinstance(node, ast.FunctionDef) and node.name in _TRAINING:
            return
        if isinstance(node, ast.arguments):  # defaults of parameters are not widths
            return
        if isinstance(node, ast.Constant):
            value = _int(node)
            if value is not None and value >= 8 and not skip:
                found.append((node, value))
            return
        if isinstance(node, ast.Call):
            name = _dotted(node.func)
            skip = skip or bool(_POOLS.fullmatch(name))
            visit(node.func, skip)
            for i, arg in enumerate(node.args):
                visit(arg, skip or (name == "nn.Conv2d" and i >= 2))
            for kw in node.keywords:
                visit(kw.value, skip or kw.arg in _NOT_CHANNELS)
            return
        for sub in ast.iter_child_nodes(node):
            visit(sub, skip)

    visit(src.tree, False)
    values = {v for _, v in found}
    factors = [f for f in WIDTH_FACTORS if values and all((v * f).denominator == 1 for v in values)]
    rng.shuffle(factors)
    return [src.edit(src.replace(n, str(int(v * f))) for n, v in found) for f in factors]


def _depth(src: _Source, rng: random.Random) -> list[str]:
    edits: list[tuple[int, int, str]] = []
    # depth tables and depth arguments of helpers: one more or one less
    numbers: list[ast.AST] = []
    for node in ast.walk(src.tree):
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id in _DEPTH_TABLES for t in node.targets)
            and isinstance(node.value, ast.Tuple | ast.List)
        ):
            numbers += node.value.elts
        elif isinstance(node, ast.Call) and (bound := src.bind(node)):
            numbers += [v for k, v in bound.items() if k in _DEPTH_PARAMS]
    for n in numbers:
        value = _int(n)
        if value is not None:
            edits += [src.replace(n, str(v)) for v in (value + 1, value - 1) if v >= 1]
    # blocks of a module list repeated or removed
    for node in ast.walk(src.tree):
        if isinstance(node, ast.List | ast.Tuple):
            items = node.elts
        elif isinstance(node, ast.Call) and _dotted(node.func) == "nn.Sequential":
            items = node.args
        else:
            continue
        for i, item in enumerate(items):
            if isinstance(item, ast.Call) and (bound := src.bind(item)) is not None:
                edits += _repeat_or_remove(src, items, i, item, bound)
    rng.shuffle(edits)
    return [src.edit([e]) for e in edits]


def _repeat_or_remove(
    src: _Source, items: list[ast.expr], i: int, call: ast.Call, bound: dict[str, ast.expr]
) -> list[tuple[int, int, str]]:
    names = src.params(call)[0]  # type: ignore[index]
    stride = bound.get("stride")
    if names[:2] == _IO and all(k in bound for k in _IO):
        width = src.text(bound["out_channels"])
        args = [width, width] + [
            f"{k}={src.text(v)}" for k, v in bound.items() if k not in (*_IO, "stride")
        ]
        copy = f"{src.text(call.func)}({', '.join(args)})"
        removable = src.text(bound["in_channels"]) == width and (
            stride is None or _int(stride) == 1
        )
    elif names[:1] == ["channels"]:
        copy, removable = src.text(call), True
    else:
        return []
    start, end = src.span(call)
    if i + 1 < len(items):
        after = src.span(items[i + 1])[0]
        out = [(after, after, copy + src.raw[end:after].decode())]
        cut = (start, after, "")
    elif i > 0:
        before = src.span(items[i - 1])[1]
        out = [(end, end, src.raw[before:start].decode() + copy)]
        cut = (before, end, "")
    else:
        return [(end, end, ", " + copy)]
    return [*out, cut] if removable else out


def _most_used(
    uses: dict[str, list[ast.Call]], kinds: Iterable[str], rng: random.Random
) -> tuple[str, list[str]]:
    """The kind the code uses most (ties: the first by name) and the other ``kinds`` to swap it
    for, in a random order."""
    old = max(sorted(uses), key=lambda k: len(uses[k]))
    targets = [k for k in kinds if k != old]
    rng.shuffle(targets)
    return old, targets


def _activation(src: _Source, rng: random.Random) -> list[str]:
    modules = {f"nn.{m}": a for a, (m, _, _) in _ACTIVATIONS.items()}
    functions = {f"F.{f}": a for a, (_, f, _) in _ACTIVATIONS.items()}
    uses: dict[str, list[ast.Call]] = {}
    for call in _calls(src.tree):
        act = modules.get(_dotted(call.func)) or functions.get(_dotted(call.func))
        if act:
            uses.setdefault(act, []).append(call)
    if not uses:
        return []
    old, targets = _most_used(uses, _ACTIVATIONS, rng)
    out = []
    for new in targets:
        module, function, inplace = _ACTIVATIONS[new]
        slope = [_SLOPE] if new == "leaky_relu" else []
        edits = []
        for call in uses[old]:
            if _dotted(call.func).startswith("nn."):
                was_inplace = any(k.arg == "inplace" for k in call.keywords)
                args = slope + (["inplace=True"] if inplace and was_inplace else [])
                edits.append(src.replace(call, f"nn.{module}({', '.join(args)})"))
            elif call.args:  # the name and the slope only: calls may nest in the input
                edits.append(src.replace(call.func, f"F.{function}"))
                end = src.span(call.args[0])[1]
                if len(call.args) > 1:
                    edits.append((end, src.span(call.args[-1])[1], ""))
                edits += [(end, end, f", {s}") for s in slope]
        out.append(src.edit(edits))
    return out


def _norm_kind(call: ast.Call) -> str | None:
    name = _dotted(call.func)
    if name == "nn.BatchNorm2d":
        return "batch"
    if name == "nn.GroupNorm" and len(call.args) == 2:
        return "layer" if _int(call.args[0]) == 1 else "group"
    return None


def _norm(src: _Source, rng: random.Random) -> list[str]:
    uses: dict[str, list[ast.Call]] = {}
    for call in _calls(src.tree):
        if (kind := _norm_kind(call)) and call.args:
            uses.setdefault(kind, []).append(call)
    if not uses:
        return []
    old, targets = _most_used(uses, _NORMS, rng)
    groups = rng.choice(_GROUPS)
    out = []
    for new in targets:
        edits = []
        for call in uses[old]:
            channels = src.text(call.args[0] if old == "batch" else call.args[1])
            if new == "batch":
                edits.append(src.replace(call, f"nn.BatchNorm2d({channels})"))
            else:
                g = 1 if new == "layer" else groups
                edits.append(src.replace(call, f"nn.GroupNorm({g}, {channels})"))
        was, now = (_NORM_TYPES.get(k, "nn.GroupNorm") for k in (old, new))
        if was != now:  # the type's name outside calls (isinstance) follows where no call is left
            calls = _calls(src.tree)
            if not any(_dotted(c.func) == was and c not in uses[old] for c in calls):
                funcs = {id(c.func) for c in calls}
                edits += [
                    src.replace(n, now)
                    for n in ast.walk(src.tree)
                    if isinstance(n, ast.Attribute) and _dotted(n) == was and id(n) not in funcs
                ]
        out.append(src.edit(edits))
    return out


def _signature(src: _Source, name: str) -> list[str] | None:
    """The parameters of a block class (after self): it takes in_channels and out_channels,
    or channels, first, and is not a conv-norm-act unit (no kernel_size)."""
    cls = src.defs.get(name)
    if not isinstance(cls, ast.ClassDef):
        return None
    init = next((f for f in cls.body if _is_def(f, "__init__")), None)
    if not isinstance(init, ast.FunctionDef):
        return None
    names = [a.arg for a in init.args.args[1:]]
    if "kernel_size" in names or not (names[:2] == _IO or names[:1] == ["channels"]):
        return None
    return names


def _block(src: _Source, rng: random.Random) -> Iterator[str]:
    sites = [
        c
        for c in _calls(src.tree)
        if isinstance(c.func, ast.Name) and _signature(src, c.func.id) is not None
    ]
    if not sites:
        return
    swaps = []
    for _ in range(DONORS):
        donor = _Source(sample(rng)[1])
        for name in sorted(donor.defs):
            names = _signature(donor, name)
            swaps += [(call, donor, name, names) for call in sites if names is not None]
    rng.shuffle(swaps)
    for swap in swaps:
        text = _swap(src, *swap)
        if text is not None:
            yield text


def _normal(text: str, name: str) -> str:
    return re.sub(rf"\b{name}\b", "_", text)


def _swap(src: _Source, call: ast.Call, donor: _Source, name: str, names: list[str]) -> str | None:
    """``src`` with ``call`` made a call of the donor's block class ``name`` (parameter names
    ``names``), or None where the call's arguments do not fit it or it is the same block."""
    old = call.func.id  # type: ignore[attr-defined]
    old_names = _signature(src, old) or []
    if len(call.args) > len(names) or names[: len(call.args)] != old_names[: len(call.args)]:
        return None
    given = set(names[: len(call.args)]) | {k.arg for k in call.keywords}
    required = donor.params(ast.Call(ast.Name(name), [], []))[1]  # type: ignore[index]
    if not given <= set(names) or not set(names[:required]) <= given:
        return None
    if _normal(donor.text(donor.defs[name]), name) == _normal(src.text(src.defs[old]), old):
        return None
    # the donor's helpers the class needs, in the donor's order, renamed where src differs
    need, todo = set(), [name]
    while todo:
        n = todo.pop()
        if n not in need:
            need.add(n)
            todo += [
                m.id
                for m in ast.walk(donor.defs[n])
                if isinstance(m, ast.Name) and m.id in donor.defs and m.id != n
            ]
    texts, rename = {}, {}
    for n in (d for d in donor.defs if d in need):
        text = donor.text(donor.defs[n])
        if n in src.defs and src.text(src.defs[n]) == text:
            continue
        texts[n] = text
        if n in src.defs:
            rename[n] = next(f"{n}{k}" for k in range(2, 99) if f"{n}{k}" not in src.defs)
    for n, new in rename.items():
        texts = {k: re.sub(rf"\b{n}\b", new, t) for k, t in texts.items()}
    # imports the inserted code uses and src does not bind
    bound = {
        (a.asname or a.name).split(".")[0]
        for n in src.tree.body
        if isinstance(n, ast.Import | ast.ImportFrom)
        for a in n.names
    }
    used = {m.id for t in texts.values() for m in ast.walk(ast.parse(t)) if isinstance(m, ast.Name)}
    imports = [
        donor.text(n)
        for n in donor.tree.body
        if isinstance(n, ast.Import | ast.ImportFrom)
        and any((a.asname or a.name).split(".")[0] in used - bound for a in n.names)
    ]
    net = src.defs["Net"]
    last_import = max(
        (n for n in src.tree.body if isinstance(n, ast.Import | ast.ImportFrom)),
        key=lambda n: n.end_lineno or 0,
    )
    edits = [
        src.replace(call.func, rename.get(name, name)),
        (src.line_start(net), src.line_start(net), "".join(t + "\n\n\n" for t in texts.values())),
    ]
    if imports:
        at = src.span(last_import)[1]
        edits.append((at, at, "".join("\n" + i for i in imports)))
    return _prune(src.edit(edits), src.used_names())


def _prune(code: str, used_before: set[str]) -> str:
    """``code`` without the module-level helpers that were used before and are not any more."""
    while True:
        src = _Source(code)
        body = src.tree.body
        gone = [
            i
            for i, n in enumerate(body[:-1])
            if isinstance(n, ast.ClassDef | ast.FunctionDef)
            and n.name in used_before
            and n.name not in src.used_names(skip=n)
        ]
        if not gone:
            return code
        i = gone[0]
        code = src.edit([(src.line_start(body[i]), src.line_start(body[i + 1]), "")])


_EDITS: dict[str, Callable[[_Source, random.Random], Iterable[str]]] = {
    "width": _width,
    "depth": _depth,
    "block": _block,
    "activation": _activation,
    "norm": _norm,
}
