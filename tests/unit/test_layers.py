"""The layers, read from the source: nasloop/ imports nothing from services/, module-level
imports form no circle, and store keys are built in nasloop/layout.py only."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("nasloop", "services")
LAYOUT = "nasloop.layout"
# The store's top-level prefixes and the names layout makes (nasloop/layout.py).
KEY_ROOTS = ("runs", "adapters", "models", "corpora", "novelty", "evaluations")
NAME_PREFIXES = ("nasloop-cycle-",)


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def sources(root: Path = ROOT) -> dict[str, ast.Module]:
    """Every module of nasloop/ and services/ (generated stubs included), parsed."""
    out = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            out[module_name(path, root)] = ast.parse(path.read_text(encoding="utf-8"), str(path))
    return out


def _is_type_checking(node: ast.stmt) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _module_level(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Statements run at import: the module's own, and those in its top-level if/try blocks
    (not under ``if TYPE_CHECKING``), not those inside functions or classes' methods."""
    for node in body:
        if isinstance(node, ast.If):
            if not _is_type_checking(node):
                yield from _module_level(node.body)
            yield from _module_level(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody):
                yield from _module_level(block)
            for handler in node.handlers:
                yield from _module_level(handler.body)
        elif isinstance(node, ast.ClassDef):
            yield from _module_level(node.body)
        else:
            yield node


def _targets(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """The modules an import statement names (``from a import b``: ``a.b`` and ``a``)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:
        base = module.split(".")
        base = base if is_package else base[:-1]
        base = base[: len(base) - node.level + 1]
        source = ".".join([*base, node.module] if node.module else base)
    else:
        source = node.module or ""
    return [source, *(f"{source}.{alias.name}" for alias in node.names)]


def imports(modules: dict[str, ast.Module], module_level: bool) -> dict[str, set[str]]:
    """Each module's imports of modules among ``modules``."""
    packages = {m for m in modules if any(n.startswith(m + ".") for n in modules)}
    graph: dict[str, set[str]] = {}
    for name, tree in modules.items():
        nodes = _module_level(tree.body) if module_level else ast.walk(tree)
        graph[name] = {
            t
            for node in nodes
            for t in _targets(node, name, name in packages)
            if t in modules and t != name
        }
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def services_imports(modules: dict[str, ast.Module]) -> list[str]:
    """``module: target`` for every import of services/ by a module of nasloop/ (anywhere)."""
    out = []
    for name, tree in modules.items():
        if name.split(".")[0] != "nasloop":
            continue
        for node in ast.walk(tree):
            for t in _targets(node, name, False):
                if t.split(".")[0] == "services":
                    out.append(f"{name}: {t}")
    return sorted(set(out))


def _docstrings(tree: ast.Module) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                out.add(id(body[0].value))
    return out


def _names_a_key(text: str) -> bool:
    return text.startswith(tuple(f"{r}/" for r in KEY_ROOTS) + NAME_PREFIXES)


def keys_built_outside_layout(modules: dict[str, ast.Module]) -> list[str]:
    """Where a store key or a layout name is spelled outside nasloop/layout.py: an f-string or
    string starting ``runs/``, ``adapters/``, ... (not a docstring, not a message whose text
    merely mentions one), or ``join_key`` of a literal root."""
    out = []
    for name, tree in modules.items():
        if name == LAYOUT or name.endswith("_pb2") or name.endswith("_pb2_grpc"):
            continue
        docs = _docstrings(tree)
        for node in ast.walk(tree):
            where = f"{name}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.JoinedStr) and node.values:
                first = node.values[0]
                if isinstance(first, ast.Constant) and _names_a_key(str(first.value)):
                    out.append(where)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                if id(node) not in docs and _names_a_key(node.value) and " " not in node.value:
                    out.append(where)
            elif isinstance(node, ast.Call) and node.args:
                func = node.func
                called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                arg = node.args[0]
                if (
                    called == "join_key"
                    and isinstance(arg, ast.Constant)
                    and str(arg.value).strip("/") in KEY_ROOTS
                ):
                    out.append(where)
    return sorted(set(out))


@pytest.fixture(scope="module")
def modules() -> dict[str, ast.Module]:
    return sources()


def test_nasloop_imports_nothing_from_services(modules: dict[str, ast.Module]) -> None:
    assert services_imports(modules) == []


def test_no_import_circles_at_module_level(modules: dict[str, ast.Module]) -> None:
    assert cycles(imports(modules, module_level=True)) == []


def test_no_import_circles_through_imports_in_functions(modules: dict[str, ast.Module]) -> None:
    """Not even through an import inside a function (nasloop.artifacts -> nasloop.store ->
    nasloop.config -> nasloop.artifacts was one, until the servable ranks moved to nasloop.lora)."""
    assert cycles(imports(modules, module_level=False)) == []


def test_store_keys_and_names_come_from_layout(modules: dict[str, ast.Module]) -> None:
    assert keys_built_outside_layout(modules) == []


# -- each check can fail ---------------------------------------------------------------------
def _tree(tmp_path: Path, files: dict[str, str]) -> dict[str, ast.Module]:
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for package in PACKAGES:
        (tmp_path / package).mkdir(exist_ok=True)
        (tmp_path / package / "__init__.py").touch()
    return sources(tmp_path)


def test_a_services_import_in_nasloop_is_found(tmp_path: Path) -> None:
    modules = _tree(
        tmp_path,
        {
            "nasloop/a.py": "def f():\n    from services.x import y\n",
            "services/x.py": "y = 1\n",
        },
    )
    assert services_imports(modules) == ["nasloop.a: services.x", "nasloop.a: services.x.y"]


def test_a_circle_is_found_and_type_checking_or_function_imports_are_not(
    tmp_path: Path,
) -> None:
    modules = _tree(
        tmp_path,
        {
            "nasloop/a.py": "from nasloop import b\n",
            "nasloop/b.py": "import nasloop.c\n",
            "nasloop/c.py": "from . import a\n",
            "nasloop/d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from nasloop import e\n",
            "nasloop/e.py": "def f():\n    from nasloop import d\n",
        },
    )
    assert cycles(imports(modules, module_level=True)) == [["nasloop.a", "nasloop.b", "nasloop.c"]]
    assert cycles(imports(modules, module_level=False)) == [
        ["nasloop.a", "nasloop.b", "nasloop.c"],
        ["nasloop.d", "nasloop.e"],
    ]


def test_a_key_built_outside_layout_is_found(tmp_path: Path) -> None:
    modules = _tree(
        tmp_path,
        {
            "services/k.py": '"""Keys: runs/<run>/spec.yaml."""\n'
            'def f(run, n):\n    return f"adapters/{run}/{n}"\n',
            "services/j.py": 'from nasloop.store import join_key\nP = join_key("models", "x")\n',
            "services/m.py": 'P = "corpora/"\nQ = "no corpora/<name> in the store"\n',
            "nasloop/layout.py": 'def run_prefix(run):\n    return f"runs/{run}"\n',
        },
    )
    assert keys_built_outside_layout(modules) == ["services.j:2", "services.k:3", "services.m:1"]
