"""The kernel contract: one hook path, immutable operators, pylops/numpy conventions, a clean import graph."""

from __future__ import annotations

import ast
import pathlib

import numpy as np
import pylops
import pytest

import structops
from structops import Conv, Diagonal, MMatrix, ParametricKernel, Softplus, _backend
from structops.kernels.linear import PatternKernel
from structops.testing import check_kernel

from ._helpers import atol_for

PACKAGE = pathlib.Path(structops.__file__).parent


# ------------------------------------------------------------ fixed operators
@pytest.mark.parametrize("accel", ["numpy", "numba"])
@pytest.mark.parametrize("jac_method", ["direct", "fft"])
def test_jacobian_products_are_bitwise_identical_from_the_first_call(accel, jac_method, rng):
    # the review's case: Conv((32, 32), (5, 5)), 2 -> 2 channels; a Krylov solver assumes a fixed map
    previous = _backend.accelerator()
    _backend.set_accelerator(accel)
    try:
        k = Conv((32, 32), (5, 5), in_channels=2, out_channels=2, method="direct", jac_method=jac_method)
        theta = rng.standard_normal(k.nparams)
        X = rng.standard_normal((6, *k.in_shape))
        W = rng.standard_normal((6, *k.out_shape))
        v = rng.standard_normal(k.nparams)
        for transpose, data, cot in ((False, X, W), (True, W, X)):
            J = k.jac(theta, data, transpose=transpose)
            first = (J.H @ cot.ravel(), J @ v, J.per_example(cot))
            for _ in range(2):
                again = (J.H @ cot.ravel(), J @ v, J.per_example(cot))
                for a, b in zip(first, again):
                    np.testing.assert_array_equal(a, b)
    finally:
        _backend.set_accelerator("numpy" if previous == "numpy" else "numba")


def test_pattern_family_assembles_once_per_operator(monkeypatch, rng):
    calls = {"n": 0}
    real = PatternKernel._assemble

    def counted(self, theta, offset=True):
        calls["n"] += 1
        return real(self, theta, offset)

    monkeypatch.setattr(PatternKernel, "_assemble", counted)
    k = MMatrix(300)
    op = k.op(k.random_theta(0))
    assert calls["n"] == 1
    x = rng.standard_normal(300)
    for _ in range(10):
        op.matvec(x)
        op.rmatvec(x)
    op.H.matvec(x)
    assert calls["n"] == 1


# ---------------------------------------------------------- numpy's dtypes
@pytest.mark.parametrize(
    "kernel", [Conv((7,), (3,)), Diagonal(5), MMatrix(4), Softplus(Conv((6,), 3, bc="periodic"))], ids=repr
)
def test_complex_input_to_a_float32_operator_is_computed_like_numpy(kernel, rng):
    # numpy promotes (M.astype(float32) @ z is complex128); the operator computes in float64
    # from the float32 theta, so it agrees with K(theta) evaluated in float64 to float64 accuracy
    theta = kernel.random_theta(1, dtype=np.float32)
    M32 = kernel.matrix(theta.astype(np.float64))
    z = rng.standard_normal(kernel.shape[1]) + 1j * rng.standard_normal(kernel.shape[1])
    op = kernel.op(theta)
    expected = M32 @ z
    assert (kernel.matrix(theta) @ z).dtype == np.complex128
    for got in (op.matvec(z), op @ z, op.matmat(z[:, None])[:, 0]):
        assert got.dtype == expected.dtype == np.complex128
        np.testing.assert_allclose(got, expected, rtol=0, atol=atol_for(expected))
    w = rng.standard_normal(kernel.shape[0]) + 1j * rng.standard_normal(kernel.shape[0])
    np.testing.assert_allclose(op.rmatvec(w), M32.T @ w, rtol=0, atol=atol_for(M32.T @ w))


def test_operation_counters_match_pylops_own_operators():
    k = Conv((7,), (3,))
    ops = {"structops": k.op(np.arange(3.0)), "pylops": pylops.MatrixMult(np.eye(7))}
    counts = {}
    for name, op in ops.items():
        x, X = np.ones(7), np.ones((7, 2))
        op.matvec(x)
        op.matvec(x)
        op.rmatvec(x)
        _ = op @ x
        op.rmatmat(X)
        op.matmat(X)
        op.rmatmat(X)
        counts[name] = (op.matvec_count, op.rmatvec_count, op.matmat_count, op.rmatmat_count)
    assert counts["structops"] == counts["pylops"] == (3, 1, 1, 2)


def test_adjoint_is_the_same_class_with_the_flag_flipped(rng):
    k = Conv((6, 5), 3, in_channels=2, out_channels=3, stride=2)
    op = k.op(k.random_theta(0))
    adj = op.H
    assert type(adj) is type(op) and adj.transposed and not op.transposed
    assert adj.shape == op.shape[::-1] and adj.dims == op.dimsd and adj.dimsd == op.dims
    assert adj.H.transposed is False
    y = rng.standard_normal(op.shape[0])
    np.testing.assert_allclose(adj @ y, k.matrix(op.theta).T @ y, rtol=0, atol=atol_for(k.matrix(op.theta).T @ y))


# ------------------------------------------------------------- user-facing
def test_apply_takes_one_example(rng):
    k = Conv((16, 16), 3)
    theta = k.random_theta(0)
    x = rng.standard_normal((16, 16))
    one = k.apply(theta, x)
    assert one.shape == (16, 16)  # a grid-shaped image gives a grid-shaped result (tests/test_grid_shapes.py)
    np.testing.assert_allclose(one, k.apply(theta, x[None, None])[0, 0], rtol=0, atol=0)
    assert k.apply(theta, x[None]).shape == k.out_shape
    d = Diagonal(4)
    np.testing.assert_allclose(d.apply(np.arange(4.0), np.ones(4)), np.arange(4.0))


def test_a_family_is_not_an_operator():
    # the review's case: pylops.Identity(128) @ conv raised AttributeError: no attribute 'reshape'
    k = Conv((8,), 3)
    for product in (lambda: k @ np.eye(8), lambda: np.eye(8) @ k, lambda: pylops.Identity(8) @ k):
        with pytest.raises(TypeError, match=r"kernel family .*not an operator.*kernel\.op\(theta\)"):
            product()
    np.testing.assert_allclose((pylops.Identity(8) @ k.op(np.ones(3))).todense(), k.matrix(np.ones(3)))


def test_kernel_type_check_is_one_message():
    from structops.solvers import inverse, learn_stencil

    for call in (lambda: Softplus("x"), lambda: inverse("x", [1.0]), lambda: learn_stencil("x", None, None)):
        with pytest.raises(TypeError, match=r"`kernel` must be a structops kernel family \(a ParametricKernel"):
            call()


def test_feasibility_and_validation_are_public():
    k = MMatrix(3)
    assert k.is_feasible(np.ones(6)) and not k.is_feasible(-np.ones(6))
    assert Conv(5, 3).is_feasible(-np.ones(3))
    with pytest.raises(ValueError, match=r"`phi` must have length nparams = 6"):
        k.validate_theta(np.ones(5), "phi")
    with pytest.raises(ValueError, match=r"must be >= 0 for MMatrix\(3\)"):
        k.validate_theta(-np.ones(6))


# ------------------------------------------------------- writing a family
class Scaled(ParametricKernel):
    r"""The README's custom family: :math:`K(\theta) = \theta_0 I + \theta_1 S` with ``S`` the cyclic shift."""

    def __init__(self, n: int) -> None:
        super().__init__(2, (n,), (n,))

    @staticmethod
    def _shift(x, transpose):
        return np.roll(x, -1 if transpose else 1, axis=1)  # (S x)_i = x_{i-1}; S^T the other way

    def _apply(self, state, x, transpose):
        return state[0] * x + state[1] * self._shift(x, transpose)

    def _vjp(self, state, data, w, transpose, per_example):
        # d/dθ0 <w, y> = <w, x>, d/dθ1 <w, y> = <w, S x>, one row per example
        rows = np.stack([(w * data).sum(axis=1), (w * self._shift(data, transpose)).sum(axis=1)], axis=1)
        return rows if per_example else rows.sum(axis=0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_custom_family_written_against_the_hooks_passes_check_kernel(dtype):
    k = Scaled(6)
    M = k.matrix(np.array([2.0, 3.0]))
    expected = 2 * np.eye(6) + 3 * np.roll(np.eye(6), 1, axis=0)
    np.testing.assert_allclose(M, expected)
    report = check_kernel(k, dtype=dtype, rng=0)
    assert report.passed, str(report)


# ----------------------------------------------------------- import graph
def _module_name(path: pathlib.Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _top_level_imports(path: pathlib.Path, name: str) -> set[str]:
    """structops modules imported when ``path`` is imported (not inside functions or TYPE_CHECKING)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()

    def visit(nodes):
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, (ast.If, ast.Try)):
                visit(node.body)
                visit(getattr(node, "orelse", []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("structops"))
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - (node.level - 1)]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                if not mod.startswith("structops"):
                    continue
                found.add(mod)
                for alias in node.names:  # `from . import x` imports the submodule x
                    found.add(f"{mod}.{alias.name}")

    visit(tree.body)
    return found


def test_the_package_imports_have_no_cycle():
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        graph[name] = {m for m in _top_level_imports(path, name) if m in modules and m != name}
    # a package importing its own submodules (its __init__) is the usual layering; every other
    # edge must point down, so the graph without the package-to-child edges is acyclic
    edges = {n: {m for m in deps if not m.startswith(n + ".")} for n, deps in graph.items()}
    state: dict[str, int] = {}
    path: list[str] = []

    def dfs(node):
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycle = [*path[path.index(nxt) :], nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                dfs(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            dfs(node)


def test_validation_and_backend_sit_at_the_bottom():
    assert _top_level_imports(PACKAGE / "_integers.py", "structops._integers") == set()
    for name in ("_backend.py", "_validation.py"):
        imports = _top_level_imports(PACKAGE / name, f"structops.{name[:-3]}")
        bottom = ("structops._backend", "structops._integers")
        assert {m for m in imports if not m.startswith(bottom)} == set(), (name, imports)


def test_import_structops_does_not_import_train():
    import subprocess
    import sys

    code = (
        "import sys, structops; print('structops.train' in sys.modules); "
        "structops.train; print('structops.train' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True"]
