"""Exact and certified spectra through the diagonalisation interface (issue 17).

References: ``numpy.linalg.svd``/``eigvals`` of the matrix built entry by entry
(``test_conv.reference_matrix``), and, for the 256² Gaussian blur, the dense 1-D Toeplitz
factor (``cond(K) = cond(T)²``).
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment

import structops
from structops.data import gaussian_stencil
from structops.solvers import (
    CosineMultiplier,
    Diagonalized,
    FourierMultiplier,
    KroneckerMultiplier,
    certified_norm_bound,
    cond,
    eigvals,
    implicit_step,
    inverse,
    project_spectral_norm,
    route,
    spectral_norm,
    svdvals,
)
from structops.testing import adjoint_test, default_rtol

from ._helpers import atol_for, examples
from .test_conv import reference_matrix

BCS = ("zero", "periodic", "reflect", "symmetric", "replicate")


def reference(kernel, theta) -> np.ndarray:
    """The dense matrix of a convolution family, entry by entry from its full stencil."""
    conv = kernel if isinstance(kernel, structops.Conv) else kernel.conv
    w = np.asarray(theta) if kernel is conv else kernel.weights(theta)
    return reference_matrix(w, conv.grid, conv.stencil, conv.bc, conv.in_channels, conv.out_channels, conv.stride)


def dense_svdvals(M: np.ndarray) -> np.ndarray:
    return np.linalg.svd(M, compute_uv=False)


def assert_same_eigenvalues(got: np.ndarray, want: np.ndarray, atol: float) -> None:
    got, want = np.asarray(got).ravel().astype(complex), np.asarray(want).ravel().astype(complex)
    cost = np.abs(got[:, None] - want[None, :])
    rows, cols = linear_sum_assignment(cost)
    assert got.size == want.size and cost[rows, cols].max() <= atol


# ----------------------------------------------------------------- exact routes
EXACT = {
    "conv-periodic-1d-rect": (structops.Conv(9, 4, bc="periodic", in_channels=2, out_channels=3), "fourier"),
    "conv-periodic-2d-wide": (structops.Conv((5, 6), (3, 3), bc="periodic", in_channels=3, out_channels=2), "fourier"),
    "conv-periodic-3d": (structops.Conv((3, 4, 5), (3, 1, 3), bc="periodic", in_channels=2, out_channels=2), "fourier"),
    "symmetric-periodic": (structops.SymmetricConv((6, 7), (3, 3), bc="periodic", in_channels=2), "fourier"),
    "symmetric-dct2": (structops.SymmetricConv((6, 7), (3, 5), bc="symmetric"), "cosine"),
    "symmetric-dct2-3d": (structops.SymmetricConv((3, 4, 5), (3, 3, 1), bc="symmetric"), "cosine"),
    "mmatrix-periodic": (structops.MMatrixConv((5, 6), (3, 3), bc="periodic", channels=2), "fourier"),
    "softplus-periodic": (structops.Softplus(structops.Conv((6, 5), (3, 3), bc="periodic")), "fourier"),
    "softplus-mmatrix": (structops.Softplus(structops.MMatrixConv((6, 6), (3, 3), bc="periodic")), "fourier"),
    "separable-periodic-rank2": (structops.SeparableConv((6, 5), (3, 3), bc="periodic", rank=2), "fourier"),
    **{f"separable-{bc}": (structops.SeparableConv((7, 6), (3, 5), bc=bc), "kronecker") for bc in BCS},
    **{f"separable-3d-{bc}": (structops.SeparableConv((4, 3, 5), (3, 3, 3), bc=bc), "kronecker") for bc in BCS[:1]},
}


@pytest.mark.parametrize("case", list(EXACT), ids=list(EXACT))
def test_svdvals_exact_routes_match_dense_svd(case, rng):
    kernel, expected = EXACT[case]
    theta = kernel.random_theta(rng)
    assert route(kernel, theta, "svdvals", dense_limit=0).name == expected
    got = svdvals(kernel, theta, dense_limit=0)
    want = dense_svdvals(
        reference(kernel, theta) if not isinstance(kernel, structops.Softplus) else kernel.matrix(theta)
    )
    assert got.shape == want.shape and np.all(np.diff(got) <= 0)
    np.testing.assert_allclose(got, want, rtol=0, atol=atol_for(want, size=want.size))
    for func, truth in ((spectral_norm, want[0]), (cond, want[0] / want[-1])):
        est = func(kernel, theta, dense_limit=0, full_output=True)
        assert est.exact and est.certified and est.method == expected and est.iterations == 0
        if func is spectral_norm or want[-1] > 1e-8 * want[0]:
            assert est.value == pytest.approx(truth, rel=1e-8)
        else:  # singular (an M-matrix with periodic boundaries: constants in its null space)
            assert est.value > 1e12


@pytest.mark.parametrize("bc", [bc for bc in BCS if bc != "periodic"])  # periodic: the FFT comes first
@pytest.mark.parametrize("grid", [(7, 6), (4, 3, 5)], ids=["2d", "3d"])
def test_rank_one_conv_takes_the_kronecker_route_for_every_bc(grid, bc, rng):
    f = [rng.standard_normal(3) for _ in grid]
    w = f[0]
    for fa in f[1:]:
        w = np.multiply.outer(w, fa)
    kernel = structops.Conv(grid, (3,) * len(grid), bc=bc)
    D = kernel.diagonalize(w.ravel())
    assert isinstance(D, KroneckerMultiplier) and route(kernel, w.ravel(), "cond").name == "kronecker"
    M = reference_matrix(w, grid, w.shape, bc)
    s = dense_svdvals(M)
    assert D.residual <= default_rtol(np.float64, w.size) * np.linalg.norm(w)
    np.testing.assert_allclose(D.todense(), M, atol=atol_for(M))
    np.testing.assert_allclose(svdvals(kernel, w.ravel()), s, atol=atol_for(s))
    # eigenvalues of a non-normal matrix: round-off grows like the square root of eps (defective pairs)
    assert_same_eigenvalues(eigvals(kernel, w.ravel()), np.linalg.eigvals(M), atol=np.sqrt(atol_for(s)))
    adjoint_test(D, rng=rng)
    # solves through the singular bases: K⁻¹ = V S⁻¹ Uᵀ, (hKᵀK + I)⁻¹ = V (h S² + 1)⁻¹ Vᵀ
    pinv = np.linalg.pinv(M, rcond=1e-12)
    kept = s[s > 1e-12 * s[0]]
    got = inverse(kernel, w.ravel(), rcond=1e-12).todense()
    np.testing.assert_allclose(got, pinv, atol=atol_for(pinv, cond=kept[0] / kept[-1]))
    step = implicit_step(kernel, w.ravel(), 0.3).todense()
    np.testing.assert_allclose(step, np.linalg.inv(0.3 * M.T @ M + np.eye(M.shape[0])), atol=atol_for(step))
    with pytest.raises(ValueError, match="`alpha` must be 0"):
        inverse(kernel, w.ravel(), alpha=0.5)


def test_weyl_bounds_when_the_stencil_is_rank_one_only_to_round_off(rng):
    u, v = rng.standard_normal(5), rng.standard_normal(5)
    w = np.outer(u, v) + 1e-15 * rng.standard_normal((5, 5))
    kernel = structops.Conv((12, 10), (5, 5))
    D = kernel.diagonalize(w.ravel())
    assert isinstance(D, KroneckerMultiplier) and D.residual > 0
    s = dense_svdvals(reference_matrix(w, kernel.grid, (5, 5), "zero"))
    est = spectral_norm(kernel, w.ravel(), full_output=True)
    assert est.method == "kronecker" and est.lower <= s[0] <= est.upper and est.upper - est.lower <= 2.1 * D.residual
    c = cond(kernel, w.ravel(), full_output=True)
    rt = default_rtol(np.float64, s.size) * s[0] / s[-1]  # the dense condition number's own round-off
    assert c.lower <= s[0] / s[-1] * (1 + rt) and s[0] / s[-1] <= c.upper * (1 + rt)
    # a stencil that is not rank 1 is no Kronecker product
    assert kernel.diagonalize(rng.standard_normal(25)) is None


def test_mirror_transforms_dct1_is_not_unitary(rng):
    kernel = structops.SymmetricConv((6, 5), (3, 3), bc="reflect")
    theta = kernel.random_theta(rng)
    D = kernel.diagonalize(theta)
    assert isinstance(D, CosineMultiplier) and D.similarity and not D.unitary
    assert route(kernel, theta, "svdvals").name == "dense"  # its blocks are eigenvalues, not singular values
    assert route(kernel, theta, "eigvals").name == "cosine"
    with pytest.raises(ValueError, match="not unitary"):
        D.singular_values()
    s = dense_svdvals(reference(kernel, theta))
    np.testing.assert_allclose(svdvals(kernel, theta), s, atol=atol_for(s))
    with pytest.raises(ValueError, match="computes every singular value only through"):
        svdvals(kernel, theta, dense_limit=0)


def test_svdvals_refuses_fast_and_names_the_estimates():
    kernel = structops.Conv((256, 256), (9, 9))
    theta = np.random.default_rng(0).standard_normal(81)
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"spectral_norm .*cond"):
        svdvals(kernel, theta)
    assert time.perf_counter() - start < 1.0
    assert route(kernel, theta, "svdvals").name == "none"
    assert route(kernel, theta, "spectral_norm").name == "certified"


def test_softplus_of_a_periodic_conv_keeps_the_fast_path(rng):
    kernel = structops.Softplus(structops.Conv((8, 8), (3, 3), bc="periodic"))
    phi = rng.standard_normal(9)
    M = kernel.matrix(phi)
    assert isinstance(kernel.diagonalize(phi), structops.solvers.FourierMultiplier)
    assert route(kernel, phi, "inverse").name == "fourier"
    with pytest.warns(DeprecationWarning, match="is_circulant is deprecated"):
        assert structops.solvers.is_circulant(kernel)
    want = np.linalg.inv(M + 0.1 * np.eye(64))
    kappa = np.linalg.cond(M + 0.1 * np.eye(64))
    np.testing.assert_allclose(inverse(kernel, phi, alpha=0.1).todense(), want, atol=atol_for(want, cond=kappa))
    est = cond(kernel, phi, dense_limit=0, full_output=True)
    assert est.method == "fourier"
    assert est.value == pytest.approx(np.linalg.cond(M), rel=default_rtol(np.float64, 64) * np.linalg.cond(M))


# ------------------------------------------------------------- the interface
def test_fourier_singular_values_count_the_mirrored_half(rng):
    for grid in [(6, 5), (5, 6), (4,), (1, 7)]:
        kernel = structops.Conv(grid, (3,) * len(grid), bc="periodic", in_channels=2, out_channels=3)
        theta = rng.standard_normal(kernel.nparams)
        D = kernel.diagonalize(theta)
        assert isinstance(D, FourierMultiplier) and D.blocks.shape[len(grid) - 1] == grid[-1] // 2 + 1
        s = dense_svdvals(reference(kernel, theta))
        np.testing.assert_allclose(D.singular_values(), s, atol=atol_for(s))
        square = structops.Conv(grid, (3,) * len(grid), bc="periodic", in_channels=2, out_channels=2)
        D1 = square.diagonalize(rng.standard_normal(square.nparams))
        half = FourierMultiplier(D1.blocks, D1.grid, dtype=np.float64)  # without the full symbol: mirrored
        np.testing.assert_allclose(half.eigenvalues(), D1.eigenvalues(), atol=atol_for(D1.eigenvalues()))
        assert half.same_basis(D) and not half.same_basis(
            structops.SymmetricConv(8, 3, bc="symmetric").diagonalize([2.0, 1.0])
        )


def test_with_blocks_builds_functions_of_the_operator(rng):
    kernel = structops.Conv((6, 6), (3, 3), bc="periodic", in_channels=2, out_channels=2)
    theta = rng.standard_normal(kernel.nparams)
    D = kernel.diagonalize(theta)
    M = reference(kernel, theta)
    square = D.with_blocks(D.blocks @ D.blocks)
    np.testing.assert_allclose(square.todense(), M @ M, atol=atol_for(M @ M, cond=np.linalg.norm(M, 2) ** 2))
    assert isinstance(square, Diagonalized) and square.same_basis(D)
    with pytest.raises(ValueError, match="`blocks` must have shape"):
        D.with_blocks(D.blocks[:1])


def test_kronecker_multiplier_of_rectangle_factors_refused_and_reports():
    with pytest.raises(ValueError, match=r"`factors\[1\]` must be a square"):
        KroneckerMultiplier([np.eye(2), np.ones((2, 3))])
    T = np.array([[2.0, 1.0], [0.5, 3.0]])
    K = KroneckerMultiplier([T, 2 * T])
    assert "kron" in repr(K) and K.same_basis(KroneckerMultiplier([T, 2 * T])) and not K.same_basis(K.H)
    np.testing.assert_allclose(K.H.todense(), np.kron(T, 2 * T).T)
    np.testing.assert_allclose(K.with_blocks(1 / K.blocks, swap=True).todense(), np.linalg.inv(np.kron(T, 2 * T)))


def test_user_family_opts_in_by_overriding_diagonalize(rng):
    class Scaled(structops.Dense):
        """c·I on a periodic 1-D grid of 8: the FFT multiplier of the constant c (a user's own family)."""

        def __init__(self) -> None:
            super().__init__(8, 8)

        def diagonalize(self, theta):
            theta = self.validate_theta(theta)
            c = theta.reshape(8, 8)[0, 0]
            return FourierMultiplier(np.full((5, 1, 1), c + 0j), (8,), dtype=theta.dtype)

    kernel = Scaled()
    theta = 3.0 * np.eye(8).ravel()
    assert route(kernel, theta, "inverse").name == "fourier"
    np.testing.assert_allclose(inverse(kernel, theta).todense(), np.eye(8) / 3)
    np.testing.assert_allclose(svdvals(kernel, theta, dense_limit=0), np.full(8, 3.0))


# --------------------------------------------------- the 256² Gaussian blur
@pytest.mark.parametrize("family", ["conv", "separable"])
def test_gaussian_blur_cond_is_exact_through_kronecker(family):
    g = gaussian_stencil(9, 2.0)
    f = g.sum(axis=1)  # the 1-D Gaussian: g = f ⊗ f
    T = reference_matrix(f, (256,), (9,), "zero")
    truth = np.linalg.cond(T) ** 2
    if family == "conv":
        kernel, theta = structops.Conv((256, 256), (9, 9)), g.ravel()
    else:
        kernel, theta = structops.SeparableConv((256, 256), (9, 9)), np.concatenate([f, g.sum(axis=0)])
    start = time.perf_counter()
    est = cond(kernel, theta, full_output=True)
    elapsed = time.perf_counter() - start
    assert est.method == "kronecker" and est.exact and est.certified
    assert abs(est.value / truth - 1) <= 1e-5 and est.lower <= truth * (1 + 1e-5) and truth <= est.upper * (1 + 1e-5)
    assert elapsed < 5.0  # about 0.1 s; generous for a loaded CI machine


# ------------------------------------------------------------ certified bounds
def _certified_case(seed: int, grid: int, stencil: int, cin: int, cout: int, stride: int):
    kernel = structops.Conv((grid, grid), (stencil, stencil), in_channels=cin, out_channels=cout, stride=stride)
    theta = np.random.default_rng(seed).standard_normal(kernel.nparams)
    return kernel, theta


@settings(max_examples=examples(8), deadline=None)
@given(
    seed=st.integers(0, 2**16),
    grid=st.sampled_from([32, 33, 40]),
    stencil=st.sampled_from([2, 3, 4, 5]),
    cin=st.integers(1, 2),
    cout=st.integers(1, 2),
    stride=st.sampled_from([1, 1, 2]),
)
def test_certified_norm_contains_the_truth_and_is_tight(seed, grid, stencil, cin, cout, stride):
    kernel, theta = _certified_case(seed, grid, stencil, cin, cout, stride)
    truth = dense_svdvals(reference(kernel, theta))[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", structops.solvers.EstimateWarning)
        est = spectral_norm(kernel, theta, dense_limit=0, full_output=True)
    assert est.method == "certified" and est.certified and not est.exact
    rt = default_rtol(np.float64, kernel.nparams)
    assert est.lower <= truth * (1 + rt) and truth <= est.upper
    assert est.upper / est.lower <= 1.02
    # spectral_norm tightens a bracket wider than TIGHTEN by verified positive definiteness;
    # certified_norm_bound (the projection's bound) keeps the symbol's certificate: never tighter
    assert est.upper <= certified_norm_bound(kernel, theta, dense_limit=0) * (1 + rt)


@pytest.mark.parametrize("seed", range(3))
def test_certified_cond_is_two_sided_for_a_symmetric_stencil(seed):
    kernel = structops.SymmetricConv((32, 32), (3, 3))
    rng = np.random.default_rng(seed)
    theta = np.concatenate([[8.0], rng.uniform(-1, 1, 3)])  # diagonally dominant: a positive symbol
    s = dense_svdvals(reference(kernel, theta))
    est = cond(kernel, theta, dense_limit=0, maxiter=60, full_output=True)
    assert est.method == "certified" and est.certified
    assert est.lower <= s[0] / s[-1] <= est.upper < np.inf
    assert est.upper / est.lower < 1.5


def test_certified_cond_of_a_general_stencil_says_its_value_is_a_lower_bound():
    kernel, theta = _certified_case(0, 32, 3, 1, 1, 1)
    s = dense_svdvals(reference(kernel, theta))
    with pytest.warns(structops.solvers.EstimateWarning, match=r"lies in .*certified.*and a lower bound"):
        est = cond(kernel, theta, dense_limit=0, maxiter=20, full_output=True)
    assert est.certified and not est.converged and est.lower <= s[0] / s[-1] <= est.upper


def test_certified_norm_of_the_256_blur_is_fast_and_tight():
    g = 0.5 * (gaussian_stencil(9, 2.0) + gaussian_stencil(9, 1.0))  # rank 2: no Kronecker route
    kernel = structops.Conv((256, 256), (9, 9))
    start = time.perf_counter()
    est = spectral_norm(kernel, g.ravel(), full_output=True)
    elapsed = time.perf_counter() - start
    assert est.method == "certified" and est.upper / est.lower <= 1.02
    assert est.upper >= 1.0 - default_rtol(np.float64, g.size)
    assert elapsed < 10.0  # about 1 s on one thread; generous for a loaded CI machine


# ---------------------------------------------------------------- projection
PROJECTED = {
    "periodic": structops.Conv((12, 12), (3, 3), bc="periodic"),
    "periodic-channels": structops.Conv((8, 8), (3, 3), bc="periodic", in_channels=2, out_channels=3),
    "zero": structops.Conv((16, 16), (5, 5)),
    "zero-stride": structops.Conv((16, 16), (3, 3), in_channels=2, out_channels=2, stride=2),
    "symmetric-periodic": structops.SymmetricConv((12, 12), (3, 3), bc="periodic"),
    "symmetric-dct2": structops.SymmetricConv((12, 12), (3, 3), bc="symmetric"),
    "mmatrix": structops.MMatrixConv((10, 10), (3, 3), bc="periodic"),
    "dense": structops.Dense(6, 7),
}


@pytest.mark.parametrize("case", list(PROJECTED), ids=list(PROJECTED))
@pytest.mark.parametrize("factor", [0.3, 0.9])
def test_projection_is_certified_identity_when_feasible_and_never_farther(case, factor, rng):
    kernel = PROJECTED[case]
    theta = kernel.random_theta(rng)
    M = kernel.matrix(theta)
    norm = np.linalg.norm(M, 2)
    np.testing.assert_array_equal(
        project_spectral_norm(kernel, theta, 1.01 * certified_norm_bound(kernel, theta)), theta
    )
    bound = factor * norm
    proj = project_spectral_norm(kernel, theta, bound)
    assert proj.dtype == theta.dtype and proj.shape == theta.shape
    assert np.linalg.norm(kernel.matrix(proj), 2) <= bound * (1 + default_rtol(np.float64, max(M.shape)))
    assert certified_norm_bound(kernel, proj) <= bound
    plain = theta * bound / certified_norm_bound(kernel, theta)
    assert np.linalg.norm(proj - theta) <= np.linalg.norm(plain - theta) * (1 + 1e-9)


def test_projection_clips_better_than_rescaling_for_a_peaked_symbol():
    kernel = structops.Conv((16, 16), (3, 3), bc="periodic")
    theta = np.zeros(9)
    theta[4], theta[3] = 1.0, 0.9  # |λ| peaks at one frequency
    proj = project_spectral_norm(kernel, theta, 1.2)
    plain = theta * 1.2 / spectral_norm(kernel, theta)
    assert np.linalg.norm(proj - theta) < 0.9 * np.linalg.norm(plain - theta)


def test_projection_refuses_nonlinear_families_and_bad_bounds(rng):
    with pytest.raises(ValueError, match="linear in theta"):
        project_spectral_norm(structops.Softplus(structops.Conv(8, 3, bc="periodic")), np.zeros(3), 1.0)
    with pytest.raises(ValueError, match="`bound` must be > 0"):
        project_spectral_norm(structops.Conv(8, 3, bc="periodic"), np.ones(3), 0.0)
    # replicate padding has a certificate (verified positive definiteness): the projection rescales under it
    kernel = structops.Conv((16, 16), (3, 3), bc="replicate")
    theta = project_spectral_norm(kernel, 3.0 * rng.standard_normal(9), 1.0, dense_limit=0)
    assert np.linalg.norm(kernel.matrix(theta), 2) <= 1.0


def test_route_says_why():
    r = route(structops.Conv((8, 8), (3, 3)), np.ones(9), "inverse")
    assert r.name == "kronecker" and r.exact and "KroneckerMultiplier" in r.reason
    r = route(structops.Conv((8, 8), (3, 3)), np.arange(9.0), "inverse")
    assert r.name == "none" and "diagonalize returned None" in r.reason and not r.exact
    with pytest.raises(ValueError, match="`func` must be one of"):
        route(structops.Conv(8, 3), np.ones(3), "solve")
