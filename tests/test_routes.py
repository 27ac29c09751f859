"""structops.solvers.route: a strategy per route, the kernel's stencil hook, and docs/contract.md's worked examples.

The route objects are checked against dense references (numpy.linalg on ``kernel.matrix``);
the worked examples of docs/contract.md (a user's Fourier family and a user's new transform,
the Walsh--Hadamard one) run here as they are written, so the page cannot drift from the code.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import structops
from structops.data import gaussian_stencil
from structops.solvers import route
from structops.solvers._routes import (
    CertifiedRoute,
    DenseRoute,
    IterativeRoute,
    NoRoute,
    TransformRoute,
)
from structops.testing import default_rtol

CONTRACT = Path(__file__).resolve().parents[1] / "docs" / "contract.md"


def test_the_contract_examples_run_as_written():
    """Every python block of docs/contract.md, in order, in one namespace (they build on each other)."""
    blocks = re.findall(r"```python\n(.*?)```", CONTRACT.read_text(encoding="utf-8"), re.S)
    assert any("class HadamardMultiplier(Diagonalized)" in b for b in blocks)
    namespace: dict = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"docs/contract.md python block {i}", "exec"), namespace)
    # the new transform reached every solver through the route, never by its name
    D = namespace["k"].diagonalize(namespace["theta"])
    assert type(D).__name__ == "HadamardMultiplier"


CASES = {
    "fourier": (structops.Conv((6, 6), (3, 3), bc="periodic"), TransformRoute),
    "cosine": (structops.SymmetricConv((6, 5), (3, 3), bc="symmetric"), TransformRoute),
    "kronecker": (structops.SeparableConv((6, 5), (3, 3)), TransformRoute),
    "dense": (structops.Conv((6, 5), (3, 3), bc="zero", out_channels=2), DenseRoute),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_route_object_computes_what_the_dense_matrix_gives(name, rng):
    kernel, cls = CASES[name]
    theta = rng.standard_normal(kernel.nparams)
    M = kernel.matrix(theta)
    sv = np.linalg.svd(M, compute_uv=False)
    tol = default_rtol(np.float64, M.shape[0]) * 10
    r = route(kernel, theta, "svdvals")
    assert type(r) is cls and r.name == name and r.exact and str(kernel.__class__.__name__) in r.reason
    np.testing.assert_allclose(r.svdvals(), sv, rtol=tol, atol=tol * sv[0])
    est = route(kernel, theta, "spectral_norm").spectral_norm(maxiter=50, tol=1e-8)
    assert est.method == name and abs(est.value - sv[0]) <= tol * sv[0]
    est = route(kernel, theta, "cond").cond(maxiter=50, tol=1e-8)
    assert abs(est.value / (sv[0] / sv[-1]) - 1) <= tol * sv[0] / sv[-1]
    assert abs(route(kernel, theta, "project_spectral_norm").norm_bound() / sv[0] - 1) <= 100 * tol


def test_certified_iterative_and_none_routes():
    g = 0.5 * (gaussian_stencil(5, 2.0) + gaussian_stencil(5, 1.0))  # rank 2: no Kronecker transform
    kernel = structops.Conv((40, 40), (5, 5))
    r = route(kernel, g.ravel(), "spectral_norm", dense_limit=0)
    assert isinstance(r, CertifiedRoute) and r.name == "certified" and not r.exact
    est = r.spectral_norm(maxiter=100, tol=1e-8)
    truth = np.linalg.norm(kernel.matrix(g.ravel()), 2)
    assert est.lower <= truth * (1 + 1e-12) and truth <= est.upper * (1 + 1e-12)
    assert r.projection_grid() == r.embedding.multiplier.grid
    rest = route(kernel, g.ravel(), "spectral_norm", dense_limit=0, embedding=False)
    assert isinstance(rest, IterativeRoute) and rest.name == "estimate"
    none = route(kernel, g.ravel(), "inverse")
    assert isinstance(none, NoRoute) and none.name == "none"
    with pytest.raises(ValueError, match="`inverse` needs a kernel diagonalised by a fast transform"):
        none.inverse(alpha=0.0, normal=False, rcond=None)
    with pytest.raises(ValueError, match="`svdvals` computes every singular value only"):
        route(kernel, g.ravel(), "svdvals", dense_limit=0).svdvals()


def test_tikhonov_and_choose_alpha_routes_follow_L(rng):
    kernel = structops.Conv((8, 8), (3, 3), bc="periodic")
    theta = rng.standard_normal(9)
    lap = structops.Conv((8, 8), (3, 3), bc="periodic")
    L = lap.op(np.array([0.0, -1, 0, -1, 4, -1, 0, -1, 0]))
    r = route(kernel, theta, "tikhonov", L=L)
    assert r.exact and r.name == "fourier"
    M, Lm = kernel.matrix(theta), L.todense()
    b = rng.standard_normal(64)
    x = r.tikhonov(0.1) @ b
    ref = np.linalg.solve(M.T @ M + 0.1 * Lm.T @ Lm, M.T @ b)
    assert np.linalg.norm(x - ref) <= default_rtol(np.float64, 64) * 100 * np.linalg.norm(ref)
    other = structops.Conv((8, 8), (3, 3), bc="zero").op(np.ones(9))  # another structure
    r = route(kernel, theta, "choose_alpha", L=other)
    assert isinstance(r, IterativeRoute) and r.name == "iterative" and "not diagonalised by the basis" in r.reason
    with pytest.raises(ValueError, match="share one diagonalisation"):
        r.tikhonov(0.1)
    spec = route(kernel, theta, "choose_alpha").filter_spectrum(b)
    assert np.isclose(np.sum(spec.weights * spec.c2), b @ b)  # Parseval through the multiplicities


def test_preconditioners_and_projection_reach_the_stencil_through_the_kernel_hook(rng):
    conv = structops.Conv((6, 7), (3, 3))
    theta = rng.standard_normal(9)
    view = conv.as_convolution()
    assert view.conv is conv and np.array_equal(view.weights(theta), theta.reshape(1, 1, 3, 3))
    sym = structops.SymmetricConv((6, 7), (3, 3))
    phi = rng.standard_normal(sym.nparams)
    view = sym.as_convolution()
    w = view.weights(phi)
    assert view.conv is sym.conv and np.allclose(w, sym.weights(phi))
    assert np.allclose(view.solve(w), phi, atol=1e-10)  # the least-squares inverse of the symmetric map
    sep = structops.SeparableConv((6, 7), (3, 3))
    assert sep.as_convolution().solve is None  # not linear: no projection back, but a stencil for preconditioners
    assert structops.Dense(3, 3).as_convolution() is None
    assert structops.Softplus(conv).as_convolution() is None


def test_no_solver_compares_route_names_outside_the_selection():
    """The solvers dispatch on the route object; only _routes.py names routes (issue 23)."""
    solvers = Path(structops.solvers.__file__).parent
    names = "fourier|cosine|kronecker|dense|certified|estimate|iterative|none"
    pattern = re.compile(rf"""(\.name\s*(==|!=|in)\s*[("'])|(["']({names})["']\s*(==|!=|in))""")
    for path in solvers.glob("*.py"):
        if path.name == "_routes.py":
            continue
        hits = [line for line in path.read_text(encoding="utf-8").splitlines() if pattern.search(line)]
        assert not hits, (path.name, hits)
