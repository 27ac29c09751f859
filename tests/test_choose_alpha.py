"""choose_alpha: GCV, discrepancy principle and L-curve, against dense references at small sizes."""

from __future__ import annotations

import numpy as np
import pytest

from structops import Conv, SymmetricConv
from structops.data import gaussian_stencil, phantom
from structops.solvers._filters import Regularizer, TikhonovSpectrum, exact_solver
from structops.solvers.regularization import TAU, choose_alpha

LAPLACE_3x3 = np.array([0.0, -1.0, 0.0, -1.0, 4.0, -1.0, 0.0, -1.0, 0.0])


class Dense:
    """Every criterion from dense matrices: x_α = solve(KᵀK + αLᵀL, Kᵀb)."""

    def __init__(self, K, L, b):
        self.K, self.b = K, b.ravel()
        self.L = np.eye(K.shape[1]) if L is None else L
        self.m = K.shape[0]

    def solution(self, alpha):
        return np.linalg.solve(self.K.T @ self.K + alpha * self.L.T @ self.L, self.K.T @ self.b)

    def residual(self, alpha):
        return float(np.linalg.norm(self.K @ self.solution(alpha) - self.b))

    def seminorm(self, alpha):
        return float(np.linalg.norm(self.L @ self.solution(alpha)))

    def gcv(self, alpha):
        A = self.K @ np.linalg.solve(self.K.T @ self.K + alpha * self.L.T @ self.L, self.K.T)
        return (self.residual(alpha) ** 2 / self.m) / (1 - np.trace(A) / self.m) ** 2

    def curvature(self, alpha, h=1e-3):
        """Curvature of (log ρ², log η²) in t = log α by central differences."""
        t = np.log(alpha) + h * np.array([-1.0, 0.0, 1.0])
        P = np.array([2 * np.log(self.residual(np.exp(s))) for s in t])
        E = np.array([2 * np.log(self.seminorm(np.exp(s))) for s in t])
        p1, e1 = (P[2] - P[0]) / (2 * h), (E[2] - E[0]) / (2 * h)
        p2, e2 = (P[2] - 2 * P[1] + P[0]) / h**2, (E[2] - 2 * E[1] + E[0]) / h**2
        return (p1 * e2 - p2 * e1) / (p1**2 + e1**2) ** 1.5


def case(name, rng):
    """(kernel, theta, L operator, dense reference, noise) on an 8×9 grid with 1 % noise."""
    grid = (8, 9)
    img = phantom(9)[:8]
    if name == "periodic-laplacian":
        k, theta = Conv(grid, 3, bc="periodic"), gaussian_stencil(3, 0.9).ravel()
        L = Conv(grid, 3, bc="periodic").op(LAPLACE_3x3)
    elif name == "periodic":
        k, theta, L = Conv(grid, 3, bc="periodic"), gaussian_stencil(3, 0.9).ravel(), None
    elif name == "cosine-laplacian":
        k, theta = SymmetricConv(grid, 3, bc="symmetric"), np.array([0.4, 0.15, 0.1, 0.05])
        L = SymmetricConv(grid, 3, bc="symmetric").op(np.array([4.0, -1.0, -1.0, 0.0]))
    else:  # a zero-boundary separable blur: the Kronecker route
        k, theta, L = Conv(grid, (3, 3)), gaussian_stencil(3, 0.9).ravel(), None
    b = k.apply(theta, img) + 0.01 * rng.standard_normal(grid)
    return k, theta, b, L, Dense(k.matrix(theta), None if L is None else L.todense(), b)


CASES = ["periodic-laplacian", "periodic", "cosine-laplacian", "kronecker"]


@pytest.mark.parametrize("name", CASES)
def test_gcv_curve_matches_the_dense_gcv_function(name, rng):
    k, theta, b, L, dense = case(name, rng)
    c = choose_alpha(k, theta, b, method="gcv", L=L)
    assert c.exact and c.method == "gcv" and c.alphas.shape == c.values.shape
    for i in range(0, c.alphas.size, 7):
        assert c.values[i] == pytest.approx(dense.gcv(c.alphas[i]), rel=1e-7)


@pytest.mark.parametrize("name", CASES)
def test_gcv_alpha_is_the_minimiser_of_the_dense_gcv_function(name, rng):
    k, theta, b, L, dense = case(name, rng)
    alpha = choose_alpha(k, theta, b, L=L).alpha
    best = dense.gcv(alpha)
    grid_min = min(dense.gcv(a) for a in np.logspace(np.log10(alpha) - 2, np.log10(alpha) + 2, 41))
    assert best <= grid_min * (1 + 1e-9)
    assert best <= dense.gcv(alpha * 1.01) and best <= dense.gcv(alpha / 1.01)


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("tau", [1.0, TAU, 1.1])
def test_discrepancy_alpha_solves_the_dense_discrepancy_equation(name, tau, rng):
    k, theta, b, L, dense = case(name, rng)
    c = choose_alpha(k, theta, b, method="discrepancy", L=L, noise=0.01, tau=tau)
    target = tau * 0.01 * np.sqrt(b.size)
    assert c.target == pytest.approx(target)
    assert dense.residual(c.alpha) == pytest.approx(target, rel=1e-8)
    for i in range(0, c.alphas.size, 9):
        assert c.values[i] == pytest.approx(dense.residual(c.alphas[i]), rel=1e-7)


@pytest.mark.parametrize("name", CASES)
def test_lcurve_curvature_matches_finite_differences_and_alpha_is_its_maximiser(name, rng):
    k, theta, b, L, dense = case(name, rng)
    c = choose_alpha(k, theta, b, method="lcurve", L=L)
    i = int(np.argmax(c.values))
    for j in {max(i - 3, 0), i, min(i + 3, c.alphas.size - 1)}:
        assert c.values[j] == pytest.approx(dense.curvature(c.alphas[j]), rel=1e-3, abs=1e-4)
    assert dense.curvature(c.alpha) >= c.values.max() - 1e-6


def test_spectrum_from_a_dense_svd_gives_the_dense_criteria(rng):
    # the criteria maths against plain arrays: K = U diag(s) Vᵀ of a random matrix, L = I
    K = rng.standard_normal((12, 12)) @ np.diag(np.logspace(0, -4, 12))
    U, s, _ = np.linalg.svd(K)
    b = rng.standard_normal(12)
    spec = TikhonovSpectrum(s**2, np.ones(12), (U.T @ b) ** 2, np.ones(12), rows=12)
    dense = Dense(K, None, b)
    for alpha in (1e-6, 1e-3, 0.1):
        assert spec.residual_norm2(alpha) == pytest.approx(dense.residual(alpha) ** 2, rel=1e-8)
        assert spec.seminorm2(alpha) == pytest.approx(dense.seminorm(alpha) ** 2, rel=1e-8)
        assert spec.gcv(alpha) == pytest.approx(dense.gcv(alpha), rel=1e-8)
        assert spec.curvature(alpha) == pytest.approx(dense.curvature(alpha), rel=1e-3, abs=1e-5)


def test_float32_data_gives_the_float64_choice(rng):
    k, theta, b, _, _ = case("periodic", rng)
    a64 = choose_alpha(k, theta, b).alpha
    a32 = choose_alpha(k, theta.astype(np.float32), b.astype(np.float32)).alpha
    assert a32 == pytest.approx(a64, rel=1e-3)


# --------------------------------------------------------------- the fallback
def test_iterative_fallback_for_a_kernel_without_transform(rng):
    k = Conv((8, 8), 3)  # a zero-boundary stencil of rank 3: no fast transform
    theta = np.array([0.05, 0.1, 0.0, 0.2, 0.4, 0.1, 0.0, 0.1, 0.05])
    b = k.apply(theta, phantom(8)) + 0.01 * rng.standard_normal((8, 8))
    dense = Dense(k.matrix(theta), None, b)
    alphas = np.logspace(-5, 0, 6)
    dp = choose_alpha(k, theta, b, method="discrepancy", noise=0.01, alphas=alphas, rtol=1e-10)
    assert not dp.exact
    np.testing.assert_allclose(dp.values, [dense.residual(a) for a in alphas], rtol=1e-5)
    assert dense.residual(dp.alpha) == pytest.approx(TAU * 0.01 * 8, rel=0.1)  # interpolated between grid points
    gcv = choose_alpha(k, theta, b, alphas=alphas, probes=8, rtol=1e-10)
    want = np.array([dense.gcv(a) for a in alphas])
    assert gcv.alpha in alphas and dense.gcv(gcv.alpha) <= 1.5 * want.min()
    lc = choose_alpha(k, theta, b, method="lcurve", alphas=alphas, rtol=1e-10)
    assert lc.alpha == alphas[int(np.argmax(lc.values))]


# ------------------------------------------------------------------ bad input
def test_discrepancy_needs_noise(rng):
    k, theta, b, _, _ = case("periodic", rng)
    with pytest.raises(ValueError, match=r"`noise`.*needed by method='discrepancy'"):
        choose_alpha(k, theta, b, method="discrepancy")
    with pytest.raises(ValueError, match="`noise` must be"):
        choose_alpha(k, theta, b, method="discrepancy", noise=-0.1)
    with pytest.raises(ValueError, match="`noise` gives a target residual"):
        choose_alpha(k, theta, b, method="discrepancy", noise=10.0)


def test_bad_method_tau_alphas_b_and_L(rng):
    k, theta, b, _, _ = case("periodic", rng)
    with pytest.raises(ValueError, match="`method` must be one of"):
        choose_alpha(k, theta, b, method="quasi-optimality")
    with pytest.raises(ValueError, match="`tau` must be a finite number >= 1"):
        choose_alpha(k, theta, b, method="discrepancy", noise=0.01, tau=0.9)
    with pytest.raises(ValueError, match="`alphas` must hold at least 3"):
        choose_alpha(k, theta, b, alphas=[1e-3, 0.0, 1.0])
    with pytest.raises(ValueError, match="`b` must have the shape"):
        choose_alpha(k, theta, b[:, :-1])
    with pytest.raises(ValueError, match="an L of another grid"):
        choose_alpha(k, theta, b, L=Conv((8, 8), 3, bc="periodic").op(LAPLACE_3x3))


# --------------------------------------------------------- the camera problem
def test_camera_discrepancy_is_within_half_a_db_of_the_best_alpha():
    """The issue's test: 512² camera, 9×9 Gaussian (σ = 2), zero boundary, 1 % noise (skips without scikit-image)."""
    data = pytest.importorskip("skimage.data")
    x = data.camera().astype(np.float64) / 255
    k = Conv(x.shape, (9, 9))
    theta = gaussian_stencil(9, 2.0).ravel()
    b = k.apply(theta, x) + 0.01 * np.random.default_rng(0).standard_normal(x.shape)
    D = k.diagonalize(theta)

    def psnr(alpha):
        z = exact_solver(D, Regularizer(None), alpha) @ b.ravel()
        return 10 * np.log10(1 / np.mean((z - x.ravel()) ** 2))

    best = max(psnr(a) for a in np.logspace(-4, -1, 13))
    dp = choose_alpha(k, theta, b, method="discrepancy", noise=0.01)
    assert dp.exact and psnr(dp.alpha) >= best - 0.5
    gcv = choose_alpha(k, theta, b)
    i = int(np.argmin(gcv.values))
    assert gcv.alphas[i - 1] <= gcv.alpha <= gcv.alphas[i + 1] and gcv.values.min() >= 0
