"""Gradients of a Tikhonov solve (implicit differentiation) against central finite differences.

Three routes: the exact periodic one (FFT, with a Laplacian-like family ``L``), the exact
Kronecker zero-boundary one (``L = I``), and the iterative one (symmetric boundary, a
non-symmetric stencil, a family ``L``; lsqr forward, cg adjoint).
"""

from __future__ import annotations

import numpy as np
import pytest

from structops import Conv
from structops.solvers import tikhonov
from structops.solvers.implicit import tikhonov_vjp

LAPLACE = np.array([0.0, -1.0, 0.0, -1.0, 4.2, -1.0, 0.0, -1.0, 0.0])
GRID = (6, 7)


def case(route: str, rng):
    if route == "periodic":
        return Conv(GRID, (3, 3), bc="periodic"), rng.uniform(size=9) / 4.5, Conv(GRID, (3, 3), bc="periodic")
    if route == "kronecker":
        return Conv(GRID, (3, 3)), np.outer([0.2, 0.6, 0.2], [0.3, 0.5, 0.2]).ravel(), None
    return Conv(GRID, (3, 3), bc="symmetric"), rng.uniform(size=9) / 4.5, Conv(GRID, (3, 3), bc="symmetric")


@pytest.mark.parametrize("route", ["periodic", "kronecker", "iterative"])
def test_vjp_matches_central_differences(route, rng):
    k, theta, L_family = case(route, rng)
    phi = LAPLACE + 0.1 * rng.standard_normal(9)
    b, c, alpha = rng.standard_normal(GRID), rng.standard_normal(GRID).ravel(), 0.05

    def loss(theta, b, alpha, phi):
        L = None if L_family is None else L_family.op(phi)
        return c @ tikhonov(k, theta, b, alpha=alpha, L=L, rtol=1e-13, maxiter=20000).ravel()

    L = None if L_family is None else L_family.op(phi)
    x = tikhonov(k, theta, b, alpha=alpha, L=L, rtol=1e-13, maxiter=20000)
    g = tikhonov_vjp(k, theta, b, alpha, x, c, L_family=L_family, theta_L=phi if L_family else None, rtol=1e-13)
    h = 1e-6
    tol = dict(rel=1e-5, abs=1e-7)
    for i in (0, 4, 7):
        e = np.zeros(9)
        e[i] = h
        assert g.theta[i] == pytest.approx(
            (loss(theta + e, b, alpha, phi) - loss(theta - e, b, alpha, phi)) / (2 * h), **tol
        )
        if L_family is not None:
            fd = (loss(theta, b, alpha, phi + e) - loss(theta, b, alpha, phi - e)) / (2 * h)
            assert g.theta_L[i] == pytest.approx(fd, **tol)
    eb = np.zeros(GRID)
    eb[2, 3] = h
    assert g.b[2 * GRID[1] + 3] == pytest.approx(
        (loss(theta, b + eb, alpha, phi) - loss(theta, b - eb, alpha, phi)) / (2 * h), **tol
    )
    assert g.alpha == pytest.approx((loss(theta, b, alpha + h, phi) - loss(theta, b, alpha - h, phi)) / (2 * h), **tol)


@pytest.mark.parametrize("route", ["periodic", "iterative"])
def test_a_fixed_regulariser_gives_the_gradients_of_its_family(route, rng):
    """``L`` as a fixed operator: the gradients in θ, b and α are those with ``L`` as a family at the same φ."""
    torch = pytest.importorskip("torch")
    from structops.torch import tikhonov as torch_tikhonov

    k, theta, L_family = case(route, rng)
    phi = LAPLACE + 0.1 * rng.standard_normal(9)
    c = torch.tensor(rng.standard_normal(GRID))
    b0 = rng.standard_normal(GRID)
    grads = []
    for fixed in (False, True):
        th = torch.tensor(theta, requires_grad=True)
        b = torch.tensor(b0, requires_grad=True)
        a = torch.tensor(0.05, dtype=torch.float64, requires_grad=True)
        if fixed:
            x = torch_tikhonov(k, th, b, alpha=a, L=L_family.op(phi), rtol=1e-13)
        else:
            x = torch_tikhonov(k, th, b, alpha=a, L=L_family, theta_L=torch.tensor(phi), rtol=1e-13)
        (c * x.reshape(GRID)).sum().backward()
        grads.append([th.grad, b.grad, a.grad])
    for fixed, family in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(fixed, family, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("route", ["periodic", "kronecker", pytest.param("iterative", marks=pytest.mark.slow)])
def test_torch_tikhonov_passes_gradcheck(route, rng):
    torch = pytest.importorskip("torch")
    from structops.torch import tikhonov as torch_tikhonov

    k, theta, L_family = case(route, rng)
    th = torch.tensor(theta, requires_grad=True)
    b = torch.tensor(rng.standard_normal(GRID), requires_grad=True)
    a = torch.tensor(0.05, dtype=torch.float64, requires_grad=True)
    phi = torch.tensor(LAPLACE, requires_grad=L_family is not None)

    def f(th, b, a, phi):
        return (torch_tikhonov(k, th, b, alpha=a, L=L_family, theta_L=phi if L_family else None) ** 2).sum()

    assert torch.autograd.gradcheck(f, (th, b, a, phi), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_jax_tikhonov_gradient_matches_central_differences(rng):
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    from structops.jax import tikhonov as jax_tikhonov

    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        k, theta, L_family = case("periodic", rng)
        b = jnp.asarray(rng.standard_normal(GRID))

        def f(th, a, phi):
            return jnp.sum(jax_tikhonov(k, th, b, alpha=a, L=L_family, theta_L=phi) ** 2)

        th, phi = jnp.asarray(theta), jnp.asarray(LAPLACE)
        g_th, g_a, g_phi = jax.grad(f, argnums=(0, 1, 2))(th, 0.05, phi)
        h = 1e-6
        e = np.zeros(9)
        e[4] = h
        assert float(g_th[4]) == pytest.approx(float(f(th + e, 0.05, phi) - f(th - e, 0.05, phi)) / (2 * h), rel=1e-5)
        assert float(g_a) == pytest.approx(float(f(th, 0.05 + h, phi) - f(th, 0.05 - h, phi)) / (2 * h), rel=1e-5)
        assert float(g_phi[4]) == pytest.approx(float(f(th, 0.05, phi + e) - f(th, 0.05, phi - e)) / (2 * h), rel=1e-5)
    finally:
        jax.config.update("jax_enable_x64", previous)


@pytest.mark.slow
def test_learn_regularizer_example_runs(capsys):
    pytest.importorskip("torch")
    import runpy
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "learn_regularizer.py"
    module = runpy.run_path(str(path))
    module["main"](["--size", "16", "--steps", "2"])
    assert "mean gain on held-out images" in capsys.readouterr().out
