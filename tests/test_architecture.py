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

import pytest

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


# --- one way to do each thing (issue 23) ------------------------------------------------------

#: Imports of a leading-underscore name that stay until their owners rewrite the importing
#: modules: structops.torch (helper h21 switches it to structops.internal) and the Toeplitz
#: guards of the solvers (helpers h23c/h24b, who give the structure dispatch a kernel hook).
PRIVATE_IMPORTS_PENDING = {
    ("structops.solvers.regularization", "_toeplitz"),
    ("structops.solvers.tikhonov", "_require_toeplitz"),
}
#: The hooks of the kernel contract: modules outside the kernels reach them through structops.internal.
HOOKS = ("_prepare", "_apply", "_prepare_data", "_jvp", "_vjp", "_io_shapes")


def _private_imports(path: pathlib.Path, name: str) -> list[tuple[str, int]]:
    """The leading-underscore names ``path`` imports from another module (private modules are allowed)."""
    modules = _sources()
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.ImportFrom):
            continue
        base = package.split(".")[: len(package.split(".")) - (node.level - 1)] if node.level else []
        module = ".".join(base + ([node.module] if node.module else []))
        for alias in node.names:
            private = alias.name.startswith("_") and not alias.name.startswith("__")
            if private and f"{module}.{alias.name}" not in modules:  # a name, not a (private) module
                found.append((alias.name, node.lineno))
    return found


def test_no_module_imports_a_private_name_of_another():
    bad = []
    for name, path in _sources().items():
        for imported, line in _private_imports(path, name):
            if (name, imported) not in PRIVATE_IMPORTS_PENDING:
                bad.append(f"{name} (line {line}) imports {imported}")
    assert not bad, "private names imported across modules; expose them in structops.internal:\n" + "\n".join(bad)


def test_the_private_import_finder_sees_names_and_not_private_modules(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("from .kernels._base import _check_flag, as_kernel\nfrom . import _backend\n")
    assert _private_imports(path, "structops.m") == [("_check_flag", 1)]


def test_outside_the_kernels_the_hooks_are_called_through_structops_internal():
    bad = []
    for name, path in _sources().items():
        if name.startswith(("structops.kernels", "structops.internal", "structops.torch")):  # torch: h21
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr in HOOKS:
                bad.append(f"{name} (line {node.lineno}): .{node.attr}")
    assert not bad, "kernel hooks called from outside the kernels:\n" + "\n".join(bad)


def _route_comparisons() -> list[str]:
    """Comparisons of a route's name (``r.name == "dense"``) with route names, outside the selection."""
    from structops.solvers._routes import ROUTES

    def names(node: ast.AST) -> set[str]:
        elts = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [node]
        return {e.value for e in elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}

    found = []
    for name, path in _sources().items():
        if name == "structops.solvers._routes":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Compare):
                continue
            sides = [node.left, *node.comparators]
            about_route = any("route" in ast.unparse(s) or ast.unparse(s).endswith(".name") for s in sides)
            if about_route and any(names(s) & set(ROUTES) for s in sides):
                found.append(f"{name} (line {node.lineno}): {ast.unparse(node)}")
    return found


def test_no_string_comparison_against_route_names_outside_the_selection():
    found = _route_comparisons()
    if found:  # helper h23c replaces them by strategy objects (structure dispatch by type)
        pytest.xfail("solvers still branch on route names (issue 23, dispatch by type):\n" + "\n".join(found))


def _structure_calls() -> list[str]:
    """Calls of ``.diagonalize(...)`` in the solvers' public modules (not in the route's building blocks, ``_*.py``)."""
    found = []
    for name, path in _sources().items():
        if not name.startswith("structops.solvers") or name.rsplit(".", 1)[-1].startswith("_"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "diagonalize":
                found.append(f"{name} (line {node.lineno}): {ast.unparse(node)}")
    return found


def test_the_solvers_get_the_structure_through_the_route_selection():
    # dispatch by type: a solver asks route(kernel, theta, func) for its strategy, never the kernel directly
    found = _structure_calls()
    assert not found, "solvers calling kernel.diagonalize instead of structops.solvers.route:\n" + "\n".join(found)


def test_the_convolution_families_have_one_structure_api():
    # diagonalize is the way to the structure: no `circulant` property, `symbol` only as a deprecated alias
    import warnings

    import numpy as np

    from structops import kernels

    families = [getattr(kernels, n) for n in kernels.TOP_LEVEL if isinstance(getattr(kernels, n), type)]
    assert not [f.__name__ for f in families if hasattr(f, "circulant")]
    k = kernels.Conv((4, 4), 3, bc="periodic")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        np.testing.assert_array_equal(k.symbol(np.arange(9.0)), k.diagonalize(np.arange(9.0)).full_blocks())
    assert [w.category for w in caught] == [DeprecationWarning]


def _string_lists(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            values = {e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
            yield node, values


def test_the_list_of_families_exists_once():
    from structops import kernels
    from structops.families import family_names

    cli_names = set(family_names())
    classes = {name for name in kernels.TOP_LEVEL if isinstance(getattr(kernels, name), type)}
    copies = []
    for name, path in _sources().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        # a package of the kernels lists its own classes in its __all__; nothing else lists them
        exports = {
            id(node.value)
            for node in tree.body
            if name.startswith("structops.kernels")
            and isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)
        }
        for node, values in _string_lists(tree):
            if len(values & cli_names) >= 3 and name != "structops.families":
                copies.append(f"{name} (line {node.lineno}): family names {sorted(values & cli_names)}")
            if len(values & classes) >= 3 and id(node) not in exports:
                copies.append(f"{name} (line {node.lineno}): class names {sorted(values & classes)}")
    assert not copies, "lists of families outside structops/families.py and kernels/__init__.py:\n" + "\n".join(copies)


def _signature_lines(tree: ast.AST, constructors: bool) -> set[int]:
    """The lines of the public functions' signatures (``def f(...)`` up to its body), and with
    ``constructors`` those of ``__init__``: one API spelling its keywords alike is not copied logic."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef):
            continue
        if not node.name.startswith("_") or (constructors and node.name == "__init__"):
            lines.update(range(node.lineno, node.body[0].lineno))
    return lines


def _substantive(line: str) -> bool:
    """Whether a stripped line says something (not an import, a bracket or a docstring quote)."""
    return len(line) > 3 and not line.startswith(("import ", "from ", '"""', 'r"""'))


def _repeated_blocks(texts: dict[str, str], size: int = 6) -> list[str]:
    """Runs of ``size`` identical lines (stripped, blank lines skipped) found in two places."""
    seen: dict[tuple[str, ...], str] = {}
    found = []
    for name, text in texts.items():
        skip = _signature_lines(ast.parse(text), ".conv." in name or name.endswith(".conv"))
        lines = [(i, line.strip()) for i, line in enumerate(text.splitlines(), 1)]
        lines = [(i, line) for i, line in lines if line and i not in skip]
        for k in range(len(lines) - size + 1):
            window = tuple(line for _, line in lines[k : k + size])
            if sum(_substantive(line) for line in window) < size - 1:  # imports, brackets, quotes
                continue
            where = f"{name}:{lines[k][0]}"
            if window in seen:
                found.append(f"{seen[window]} ~ {where}")
            else:
                seen[window] = where
    return found


def test_the_duplicate_finder_sees_a_repeated_block_and_skips_signatures():
    block = "\n".join(f"x{i} = compute({i}, 'long enough')" for i in range(6))
    assert _repeated_blocks({"structops.a": block, "structops.b": "y = 1\n" + block}) == [
        "structops.a:1 ~ structops.b:2"
    ]
    signature = "def __init__(\n" + "".join(f"    self_{i}: int = {i},\n" for i in range(6)) + ") -> None:\n    pass\n"
    assert _repeated_blocks({"structops.kernels.conv.a": signature, "structops.kernels.conv.b": signature}) == []
    plain = {"structops.a": signature, "structops.b": signature}
    assert _repeated_blocks(plain)[:1] == ["structops.a:1 ~ structops.b:1"]
    public = signature.replace("__init__", "solve")
    assert _repeated_blocks({"structops.a": public, "structops.b": public}) == []
    private = signature.replace("__init__", "_solve")
    assert _repeated_blocks({"structops.a": private, "structops.b": private})[:1] == ["structops.a:1 ~ structops.b:1"]


#: Repeated blocks in modules other helpers own, until they land (none left).
REPEATS_PENDING: tuple[str, ...] = ()


def test_no_block_of_six_lines_is_repeated_in_the_package():
    texts = {
        name: path.read_text(encoding="utf-8")
        for name, path in _sources().items()
        if not path.name.startswith("_numba") and name not in REPEATS_PENDING
    }
    found = _repeated_blocks(texts)
    assert not found, "blocks of 6 or more lines repeated; share them:\n" + "\n".join(found)
