"""The shape of the code, read from its syntax trees: short functions, imports that point down.

* no function in ``structops/`` is over 80 lines of code (from the first statement after the
  docstring to the last line; the numba kernels, ``_numba*.py``, are excepted);
* the modules of ``structops`` import each other without a cycle, counting the imports inside
  functions (lazy imports) too: a lazy import hides a cycle from the interpreter, not from a
  reader. Imports under ``if TYPE_CHECKING:`` never run and are not counted, and a package
  importing its own submodules (its ``__init__``) is the usual layering.
"""

from __future__ import annotations

import ast
import pathlib

import structops

PACKAGE = pathlib.Path(structops.__file__).parent
MAX_CODE_LINES = 80


def _sources() -> dict[str, pathlib.Path]:
    """Every module of the package by dotted name (``structops.kernels`` for its ``__init__``)."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _code_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines from the first statement after the docstring to the end of the function."""
    body = node.body
    has_doc = (
        len(body) > 1 and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant)
    )
    first = body[0].end_lineno + 1 if has_doc else body[0].lineno
    return node.end_lineno - first + 1


def test_no_function_is_over_80_lines_of_code():
    long = []
    for name, path in _sources().items():
        if path.name.startswith("_numba"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _code_lines(node) > MAX_CODE_LINES:
                long.append(f"{name}.{node.name} (line {node.lineno}): {_code_lines(node)} code lines")
    assert not long, "functions over 80 code lines; split them into named steps:\n" + "\n".join(long)


def _imports(path: pathlib.Path, name: str) -> set[str]:
    """The structops modules ``path`` imports anywhere (functions included, ``TYPE_CHECKING`` not)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "structops")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.split(".")[0] == "structops":
                found.add(module)
                found.update(f"{module}.{a.name}" for a in node.names)  # `from . import x`: the submodule x
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


def _with_packages(module: str, importer: str) -> set[str]:
    """``module`` and the packages importing it runs first (``a.b`` for ``a.b.c``), but not the
    root package nor the importer's own packages (a package imports its submodules while it loads)."""
    parts = module.split(".")
    packages = {".".join(parts[:i]) for i in range(2, len(parts))}
    return {module} | {p for p in packages if not importer.startswith(p + ".")}


def _import_graph() -> dict[str, set[str]]:
    modules = _sources()
    graph = {}
    for name, path in modules.items():
        deps = {d for m in _imports(path, name) if m in modules for d in _with_packages(m, name)}
        # `from . import sibling` names the importer's own package, which is loading already
        graph[name] = {m for m in deps if m != name and not name.startswith(m + ".")}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
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
            connect(v)
    return sorted(found)


def _shortest_cycle(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """A shortest cycle through the first module of a strongly connected component (for the message)."""
    start, members = component[0], set(component)
    parent: dict[str, str] = {start: start}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(graph[v] & members):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [*reversed(path), start]
                if w not in parent:
                    parent[w] = v
                    following.append(w)
        frontier = following
    raise AssertionError(f"{component} is not strongly connected")  # pragma: no cover


def test_the_cycle_finder_sees_lazy_imports_and_ignores_type_checking(tmp_path):
    a = tmp_path / "a.py"
    a.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from structops import b\n")
    b = tmp_path / "b.py"
    b.write_text("def f():\n    from structops.kernels import a\n    return a\n")
    assert _imports(a, "structops.a") == set()
    assert _imports(b, "structops.b") == {"structops.kernels", "structops.kernels.a"}
    ring = {"x": {"y"}, "y": {"z"}, "z": {"x"}, "w": {"x"}}
    assert _cycles(ring) == [["x", "y", "z"]]
    assert _shortest_cycle(ring, ["x", "y", "z"]) == ["x", "y", "z", "x"]
    assert _cycles({"x": {"y"}, "y": set()}) == []


def test_no_import_cycle_counting_lazy_imports():
    graph = _import_graph()
    cycles = _cycles(graph)
    assert not cycles, "import cycles (lazy imports included), one per group of modules:\n" + "\n".join(
        " -> ".join(_shortest_cycle(graph, c)) + f"  (group: {', '.join(c)})" for c in cycles
    )
