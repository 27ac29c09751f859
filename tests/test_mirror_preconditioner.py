"""The cosine-transform preconditioner for mirrored boundaries (Ng, Chan and Tang 1999) and the hybrid α choice.

References: dense eigenvalues of doubly symmetric stencils, the dense Tikhonov solution, and the
dense discrepancy equation solved by bisection on the SVD.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.optimize as sopt

from structops import Conv
from structops.data import anisotropic_gaussian_stencil, gaussian_stencil, phantom
from structops.solvers import choose_alpha, cosine_eigvals, split_preconditioner, tikhonov
from structops.solvers.preconditioners import symmetric_part

LAPLACE = np.array([0.0, -1.0, 0.0, -1.0, 4.0, -1.0, 0.0, -1.0, 0.0])


def test_symmetric_part_is_the_mean_of_the_mirror_images(rng):
    w = rng.standard_normal((3, 4))
    padded = np.pad(w, [(0, 0), (0, 1)])
    want = (padded + padded[::-1] + padded[:, ::-1] + padded[::-1, ::-1]) / 4
    np.testing.assert_allclose(symmetric_part(w), want, rtol=1e-15)


@pytest.mark.parametrize("bc", ["symmetric", "reflect"])
def test_cosine_eigvals_are_exact_for_a_doubly_symmetric_stencil(bc, rng):
    k = Conv((6, 7), (3, 5), bc=bc)
    w = rng.uniform(size=(3, 5))
    w = symmetric_part(w)
    lam = cosine_eigvals(k, w.ravel())
    dense = np.linalg.eigvals(k.matrix(w.ravel())).real
    np.testing.assert_allclose(np.sort(lam.ravel()), np.sort(dense), atol=1e-12)


@pytest.mark.parametrize("bc", ["symmetric", pytest.param("reflect", marks=pytest.mark.slow)])
def test_dct_preconditioned_lsqr_reaches_the_dense_solution(bc, rng):
    k = Conv((14, 15), (5, 5), bc=bc)
    theta = anisotropic_gaussian_stencil(5, (1.5, 0.6), 30).ravel()
    lap = Conv((14, 15), (3, 3), bc=bc).op(LAPLACE)
    b = rng.standard_normal((14, 15))
    K, Ld = k.matrix(theta), lap.todense()
    want = np.linalg.solve(K.T @ K + 1e-2 * Ld.T @ Ld, K.T @ b.ravel())
    for solver in ("lsqr", "cgls", "cg"):
        res = tikhonov(
            k, theta, b, alpha=1e-2, L=lap, solver=solver, preconditioner="dct", rtol=1e-11, full_output=True
        )
        assert res.method == f"{solver}+dct"
        np.testing.assert_allclose(res.x.ravel(), want, atol=1e-7 * np.abs(want).max())


def test_dct_split_preconditioner_is_the_inverse_square_root_of_the_model(rng):
    k = Conv((8, 9), (3, 3), bc="symmetric")
    theta = anisotropic_gaussian_stencil(3, (1.0, 0.5), 30).ravel()
    P = split_preconditioner(k, theta, alpha=0.1, kind="dct").todense()
    C = Conv((8, 9), (3, 3), bc="symmetric").matrix(symmetric_part(theta.reshape(3, 3)).ravel())
    want = np.linalg.inv(C.T @ C + 0.1 * np.eye(72))
    np.testing.assert_allclose(P @ P, want, atol=1e-10)
    np.testing.assert_allclose(P, P.T, atol=1e-12)


@pytest.mark.slow
def test_auto_uses_the_cosine_model_for_a_rotated_gaussian_and_not_for_a_diagonal_line(rng):
    n = 32
    k = Conv((n, n), (7, 7), bc="symmetric")
    x = phantom(n)
    gauss = anisotropic_gaussian_stencil(7, (2.0, 0.7), 30).ravel()
    b = k.apply(gauss, x) + 0.01 * rng.standard_normal((n, n))
    runs = {
        p: tikhonov(k, gauss, b, alpha=1e-3, solver="lsqr", preconditioner=p, full_output=True) for p in (None, "auto")
    }
    assert runs["auto"].method == "lsqr+dct"
    assert runs["auto"].iterations < 0.8 * runs[None].iterations
    line = (np.eye(7) / 7).ravel()
    lap = Conv((n, n), (3, 3), bc="symmetric").op(LAPLACE)
    b = k.apply(line, x) + 0.01 * rng.standard_normal((n, n))
    auto = tikhonov(k, line, b, alpha=2e-3, L=lap, full_output=True)
    plain = tikhonov(k, line, b, alpha=2e-3, L=lap, preconditioner=None, full_output=True)
    assert auto.method == "lsqr" and auto.iterations <= plain.iterations


def dense_discrepancy_alpha(K: np.ndarray, b: np.ndarray, target: float) -> float:
    U, s, _ = np.linalg.svd(K)
    c = U.T @ b

    def residual(t):
        a = np.exp(t)
        return np.sqrt(np.sum((a / (s**2 + a) * c) ** 2)) - target

    return float(np.exp(sopt.brentq(residual, -60, 20, xtol=1e-12)))


def test_hybrid_discrepancy_matches_the_dense_root(rng):
    n = 20
    k = Conv((n, n), (5, 5), bc="symmetric")
    theta = (np.eye(5) / 5).ravel()
    b = k.apply(theta, phantom(n)) + 0.02 * rng.standard_normal((n, n))
    choice = choose_alpha(k, theta, b, method="discrepancy", noise=0.02)
    assert not choice.exact and choice.iterations > 0
    want = dense_discrepancy_alpha(k.matrix(theta), b.ravel(), choice.target)
    assert choice.alpha == pytest.approx(want, rel=1e-3)
    K = k.matrix(theta)
    x = np.linalg.solve(K.T @ K + choice.alpha * np.eye(n * n), K.T @ b.ravel())
    assert np.linalg.norm(K @ x - b.ravel()) / choice.target == pytest.approx(1.0, rel=1e-3)


@pytest.mark.slow
def test_iterative_discrepancy_widens_its_grid_instead_of_claiming_no_alpha(rng):
    n = 16
    k = Conv((n, n), (5, 5), bc="symmetric")
    theta = gaussian_stencil(5, 1.0).ravel() + 0.02 * np.eye(5).ravel()
    lap = Conv((n, n), (3, 3), bc="symmetric").op(LAPLACE)
    b = k.apply(theta, phantom(n)) + 0.2 * rng.standard_normal((n, n))
    choice = choose_alpha(k, theta, b, L=lap, method="discrepancy", noise=0.2, alphas=[1e-6, 1e-5, 1e-4])
    assert choice.alphas.max() > 1e-4  # widened
    x = tikhonov(k, theta, b, alpha=choice.alpha, L=lap, rtol=1e-10)
    ratio = np.linalg.norm(k.apply(theta, x) - b) / choice.target
    assert 0.9 < ratio < 1.15
