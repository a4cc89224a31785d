"""How much literal data a candidate's source carries (issue 18: data in the source is not
learning).

Every string, bytes and numeric literal counts by the bytes it takes to write its value: a
string by its UTF-8 length, bytes by their length, a number by the characters of its shortest
form (``3`` is 1, ``0.001`` is 5, ``1e-05`` is 5). Simple expressions are folded first, so data
spelled as an expression counts by what it makes: lists, tuples, sets and dicts of literals
(and ``**`` unpacking of them), ``b'..' * n`` and ``[x] * n`` (the content times ``n``), string
and bytes concatenation, arithmetic and unary minus on numbers. Sizes are computed, never the
values themselves, so ``b'x' * 10**12`` is measured without building it. Names, calls and
comprehensions are not folded (their literal parts still count).
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass

# Folded numbers stay exact below this; larger results count as this many digits or more.
_BIG = 10**6


@dataclass(frozen=True)
class _Folded:
    """A folded expression: the bytes of data it holds, and its value when it is a number."""

    size: int
    number: int | float | None = None


@dataclass(frozen=True)
class LiteralData:
    """The source's literal data: the total, and where its largest folded expression starts."""

    total: int
    largest: int
    largest_line: int


def _number(value: int | float | complex) -> _Folded:
    if isinstance(value, int) and abs(value) >= _BIG:
        digits = max(1, int(abs(value).bit_length() * math.log10(2)) + 1)
        return _Folded(digits, value if value.bit_length() < 4096 else None)
    if isinstance(value, complex):
        return _Folded(len(repr(value)))
    return _Folded(len(repr(value).lstrip("-")), value)


def _constant(value: object) -> _Folded | None:
    if isinstance(value, bool) or value is None or value is Ellipsis:
        return _Folded(0)
    if isinstance(value, str):
        return _Folded(len(value.encode("utf-8", "surrogatepass")))
    if isinstance(value, bytes):
        return _Folded(len(value))
    if isinstance(value, int | float | complex):
        return _number(value)
    return None


def _repeat(seq: _Folded, times: _Folded) -> _Folded | None:
    """``seq * times`` where ``times`` is a number: the content ``times`` over."""
    n = times.number
    if not isinstance(n, int):
        return None
    return _Folded(seq.size * max(n, 0))


def _arith(op: ast.operator, a: int | float, b: int | float) -> int | float | None:
    """The value of a small arithmetic expression, or None where it would be costly or raise."""
    try:
        if isinstance(op, ast.Pow):
            exact = isinstance(a, int) and isinstance(b, int) and b > 0 and abs(a) > 1
            if exact and b * math.log2(abs(a)) > 4096:  # too big to build: its size only
                return None
            return a**b
        ops = {
            ast.Add: lambda: a + b,
            ast.Sub: lambda: a - b,
            ast.Mult: lambda: a * b,
            ast.Div: lambda: a / b,
            ast.FloorDiv: lambda: a // b,
            ast.Mod: lambda: a % b,
        }
        fn = ops.get(type(op))
        return fn() if fn is not None else None
    except (ArithmeticError, ValueError, TypeError):
        return None


def _binop(node: ast.BinOp, left: _Folded, right: _Folded) -> _Folded | None:
    op = node.op
    if isinstance(op, ast.Mult):
        if left.number is None and right.number is not None:
            return _repeat(left, right)
        if right.number is None and left.number is not None:
            return _repeat(right, left)
    if left.number is not None and right.number is not None:
        value = _arith(op, left.number, right.number)
        if value is None:
            if isinstance(op, ast.Pow) and isinstance(left.number, int):
                digits = int(abs(right.number) * math.log10(max(abs(left.number), 2))) + 1
                return _Folded(digits)
            return _Folded(left.size + right.size)
        return _number(value) if not isinstance(value, complex) else _Folded(len(repr(value)))
    if isinstance(op, ast.Add) and left.number is None and right.number is None:
        return _Folded(left.size + right.size)
    return None


def _elements(nodes: list[ast.expr]) -> _Folded | None:
    total = 0
    for n in nodes:
        inner = n.value if isinstance(n, ast.Starred) else n
        f = fold(inner)
        if f is None:
            return None
        total += f.size
    return _Folded(total)


def fold(node: ast.AST) -> _Folded | None:
    """The data ``node`` holds when it is a literal or a simple expression of literals; None
    when it is not foldable."""
    if isinstance(node, ast.Constant):
        return _constant(node.value)
    if isinstance(node, ast.List | ast.Tuple | ast.Set):
        return _elements(node.elts)
    if isinstance(node, ast.Dict):
        keys = [k for k in node.keys if k is not None]
        return _elements([*keys, *node.values])
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        inner = fold(node.operand)
        if inner is None or inner.number is None:
            return None
        return _Folded(inner.size, -inner.number if isinstance(node.op, ast.USub) else inner.number)
    if isinstance(node, ast.BinOp):
        left, right = fold(node.left), fold(node.right)
        if left is None or right is None:
            return None
        return _binop(node, left, right)
    return None


def measure(tree: ast.AST) -> LiteralData:
    """The literal data in ``tree``: each outermost foldable expression counted once."""
    total, largest, line = 0, 0, 0
    todo: list[ast.AST] = [tree]
    while todo:
        node = todo.pop()
        folded = fold(node) if isinstance(node, ast.expr) else None
        if folded is None:
            todo.extend(ast.iter_child_nodes(node))
            continue
        total += folded.size
        if folded.size > largest:
            largest, line = folded.size, getattr(node, "lineno", 0)
    return LiteralData(total, largest, line)
