"""The static stages: extracted → parsed → policy.

The policy check is a courtesy that turns clearly forbidden constructs into an early, readable
error. It is not the security boundary (the sandbox is): obfuscated code can always get past an
AST check, and the sandbox must hold when it does. It therefore refuses only what is clearly an
attack — process, network and file access, interpreter internals, exec/eval/compile/__import__ —
and lets constructs common in real model code pass (``setattr``/``getattr`` on ``self``,
``self.__class__.__name__``, ``type(self)``, ``self.__dict__`` as LEMUR's ConvNeXt prints its
configuration with it). It also refuses code that carries more literal data than model code
needs (:data:`MAX_LITERAL_BYTES`): a label table in the source scores without learning.
"""

from __future__ import annotations

import ast
import time

from nasloop.v1 import common_pb2 as common
from services.evaluator import literals
from services.evaluator.report import Report

# Literal data a candidate's source may carry (strings, bytes and numbers, after folding simple
# expressions; services.evaluator.literals). Data in the source is not learning: a table from
# test inputs to labels scores without training. docs/benchmarks.md measures that no seed-corpus
# network, LEMUR-style network or valid candidate of a run comes near it.
MAX_LITERAL_BYTES = 2048

FORBIDDEN_MODULES = frozenset(
    {
        "builtins", "code", "codeop", "ctypes", "gc", "importlib", "inspect", "io", "marshal",
        "mmap", "multiprocessing", "os", "pathlib", "pickle", "pty", "resource", "shutil",
        "signal", "socket", "ssl", "subprocess", "sys", "tempfile", "threading", "_thread",
        "urllib", "http", "requests", "asyncio", "concurrent", "select", "selectors", "fcntl",
        "posix", "shelve", "sqlite3", "webbrowser", "zipimport", "runpy", "atexit", "nasloop",
        "services",
    }
)  # fmt: skip
FORBIDDEN_CALLS = frozenset(
    {"eval", "exec", "compile", "__import__", "open", "globals", "locals", "vars",
     "breakpoint", "input", "exit", "quit"}
)  # fmt: skip
# Attribute names that reach interpreter internals or the process.
FORBIDDEN_ATTRIBUTES = frozenset(
    {"__subclasses__", "__globals__", "__builtins__", "__code__", "__closure__", "__bases__",
     "__mro__", "__getattribute__", "__reduce__", "__reduce_ex__",
     "f_globals", "f_locals", "f_back", "gi_frame", "system", "popen", "fork"}
)  # fmt: skip


def _violation(tree: ast.AST) -> str | None:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in FORBIDDEN_MODULES:
                    return f"line {node.lineno}: import of {alias.name!r} is not allowed"
        elif isinstance(node, ast.ImportFrom):
            root = (node.module or "").split(".")[0]
            if node.level or root in FORBIDDEN_MODULES:
                return f"line {node.lineno}: import from {node.module or '.'!r} is not allowed"
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in FORBIDDEN_CALLS:
                return f"line {node.lineno}: call of {node.func.id}() is not allowed"
        elif isinstance(node, ast.Attribute) and node.attr in FORBIDDEN_ATTRIBUTES:
            return f"line {node.lineno}: attribute {node.attr!r} is not allowed"
        elif isinstance(node, ast.Name) and node.id in ("__builtins__", "__loader__", "__spec__"):
            return f"line {node.lineno}: name {node.id!r} is not allowed"
        elif isinstance(node, ast.Global | ast.Nonlocal) and any(
            n.startswith("__") for n in node.names
        ):
            return f"line {node.lineno}: global dunder names are not allowed"
    return None


def _too_much_data(tree: ast.AST, limit: int) -> str | None:
    data = literals.measure(tree)
    if data.total <= limit:
        return None
    return (
        f"line {data.largest_line}: the code carries {data.total} bytes of literal data "
        f"(strings, bytes, numbers), more than the {limit} allowed; the largest literal, "
        f"{data.largest} bytes, starts on this line"
    )


def static_check(
    code: str, max_code_bytes: int, max_literal_bytes: int = MAX_LITERAL_BYTES
) -> Report:
    """Run the static stages; the report's status is OK when all of them passed."""
    report = Report()
    t0 = time.perf_counter()
    if not code.strip():
        return report.fail(common.STATUS_NO_CODE, "no code was extracted from the answer")
    if len(code.encode("utf-8", "surrogatepass")) > max_code_bytes:
        report.passed(common.STAGE_EXTRACTED, time.perf_counter() - t0)
        return report.fail(
            common.STATUS_SYNTAX_ERROR, f"code is larger than {max_code_bytes} bytes"
        )
    report.passed(common.STAGE_EXTRACTED, time.perf_counter() - t0)
    t0 = time.perf_counter()
    try:
        tree = ast.parse(code, filename="<candidate>")
    except SyntaxError as e:
        return report.fail(common.STATUS_SYNTAX_ERROR, f"line {e.lineno}: {e.msg}")
    except (ValueError, RecursionError, MemoryError) as e:  # null bytes, absurd nesting
        return report.fail(common.STATUS_SYNTAX_ERROR, f"unparseable code: {e}")
    report.passed(common.STAGE_PARSED, time.perf_counter() - t0)
    t0 = time.perf_counter()
    why = _violation(tree) or _too_much_data(tree, max_literal_bytes)
    if why is not None:
        return report.fail(common.STATUS_FORBIDDEN_CONSTRUCT, why)
    report.passed(common.STAGE_POLICY, time.perf_counter() - t0)
    report.status = common.STATUS_OK
    return report
