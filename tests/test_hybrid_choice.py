"""The L-curve's α chosen in one Golub--Kahan run (hybrid regularisation, Chung, Nagy and O'Leary 2008).

Reference: the exact route's choice on a periodic blur (the L-curve of the full problem from its
FFT filter factors), computed by ``choose_alpha`` through the diagonalisation.
"""

from __future__ import annotations

import numpy as np
import pytest

from structops import Conv
from structops.data import gaussian_stencil, phantom
from structops.solvers import Deblurrer, choose_alpha, tikhonov
from structops.solvers._filters import spectrum
from structops.solvers._hybrid import golub_kahan_steps, hybrid_gcv


@pytest.mark.parametrize("noise", [0.01, 0.05])
def test_hybrid_lcurve_matches_the_exact_choice_and_stops_early(noise):
    n = 32
    k = Conv((n, n), (7, 7), bc="periodic")
    theta = gaussian_stencil(7, 1.5).ravel()
    b = k.apply(theta, phantom(n)) + noise * np.random.default_rng(0).standard_normal((n, n))
    exact = choose_alpha(k, theta, b, method="lcurve")
    assert exact.exact
    hybrid = Deblurrer(k, theta, solver="lsqr").choose_alpha(b, method="lcurve")  # no transform used
    assert not hybrid.exact
    # it stops once α_k and x_k settle, long before the Krylov space is the whole space
    assert 0 < hybrid.iterations < b.size // 8
    # Both maximise the same curvature: the hybrid on the projected problem, whose L-curve is the
    # full one wherever the Krylov solution x_k(α) has converged; its stopping rule (α_k and x_k
    # move by < 1e-4 in a step) leaves α within a small multiple of that, while the exact choice is
    # refined to 1e-6 in log α. So: α within 1 %, and the full problem's curvature at the hybrid α
    # within 1e-3 of its maximum (the criterion itself, not only its argument).
    assert abs(np.log(hybrid.alpha / exact.alpha)) < 1e-2
    s = spectrum(k.diagonalize(theta), None, b)
    assert s.curvature(hybrid.alpha) >= (1 - 1e-3) * s.curvature(exact.alpha)


def test_golub_kahan_steps_project_the_tikhonov_problem(rng):
    """Each step's x_k(α) is the Tikhonov solution on the Krylov space; the last step's is the full one."""
    k = Conv((6, 5), (3, 3))
    theta = gaussian_stencil(3, 0.8).ravel()
    K, b, alpha = k.matrix(theta), rng.standard_normal(30), 1e-2
    steps = list(golub_kahan_steps(k.op(theta), b, maxiter=100))
    assert steps[-1].last and not any(s.last for s in steps[:-1]) and steps[-1].k <= 30
    for step in (steps[2], steps[-1]):
        V = np.asarray(step.V).T  # an orthonormal basis of the Krylov space K_k(KᵀK, Kᵀb)
        np.testing.assert_allclose(V.T @ V, np.eye(step.k), atol=1e-12)
        y = np.linalg.solve(V.T @ (K.T @ K + alpha * np.eye(30)) @ V, V.T @ K.T @ b)  # Galerkin on that space
        np.testing.assert_allclose(step.solution(alpha), V @ y, rtol=1e-9, atol=1e-12)
        # the projected residual is the full one: ‖K x_k − b‖² = Σ(α c_i/(s_i² + α))² + off
        rho2 = np.sum((alpha * step.c / (step.s**2 + alpha)) ** 2) + step.off
        assert rho2 == pytest.approx(np.linalg.norm(K @ step.solution(alpha) - b) ** 2, rel=1e-9)
    full = np.linalg.solve(K.T @ K + alpha * np.eye(30), K.T @ b)
    np.testing.assert_allclose(steps[-1].solution(alpha), full, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("bc", ["zero", pytest.param("symmetric", marks=pytest.mark.slow)])
def test_hybrid_gcv_matches_the_exact_gcv_choice(bc):
    """GCV from 1 + 4 Golub-Kahan runs against the full problem's GCV through its diagonalisation.

    The zero boundary's reference is the Kronecker SVD route, the mirrored one's the DCT route: the
    exact GCV function of the full problem, minimised to 1e-6 in log α.
    """
    n = 32
    k = Conv((n, n), (7, 7), bc=bc)
    theta = gaussian_stencil(7, 1.5).ravel()
    b = k.apply(theta, phantom(n)) + 0.01 * np.random.default_rng(0).standard_normal((n, n))
    exact = choose_alpha(k, theta, b, method="gcv")
    assert exact.exact
    hybrid = Deblurrer(k, theta, solver="lsqr").choose_alpha(b, method="gcv")  # no transform used
    assert not hybrid.exact and hybrid.iterations > 0
    # Hutchinson's estimate of the trace (4 probes of 1024 entries) moves the minimiser a little:
    # α within 10 %, and the full problem's GCV at the hybrid α within 1 % of its minimum
    assert abs(np.log(hybrid.alpha / exact.alpha)) < 0.1
    s = spectrum(k.diagonalize(theta), None, b)
    assert s.gcv(hybrid.alpha) <= (1 + 1e-2) * s.gcv(exact.alpha)
    # the image at the chosen α against the exact GCV image (the Krylov x_k(α) is tested above)
    x_exact = tikhonov(k, theta, b, alpha=exact.alpha)
    x_hybrid = tikhonov(k, theta, b, alpha=hybrid.alpha)
    assert np.linalg.norm(x_hybrid - x_exact) <= 2e-2 * np.linalg.norm(x_exact)


def test_hybrid_gcv_reports_when_alpha_has_not_settled():
    k = Conv((16, 16), (5, 5))
    theta = gaussian_stencil(5, 1.2).ravel()
    b = k.apply(theta, phantom(16)) + 0.01 * np.random.default_rng(1).standard_normal((16, 16))
    short = hybrid_gcv(k.op(theta), b.ravel(), maxiter=3)
    assert not short.converged and short.iterations == 5 * 3  # the data's run and 4 probes, 3 steps each
