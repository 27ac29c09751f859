"""Exact FFT solves and spectral quantities of periodic convolutions against dense numpy.linalg references."""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np
import pytest

import structops
from structops import solvers
from structops.solvers import EstimateWarning, SpectralEstimate, cond, eigvals, implicit_step, inverse, spectral_norm
from structops.testing import adjoint_test, default_rtol


class Case(NamedTuple):
    grid: tuple[int, ...]
    stencil: tuple[int, ...]
    cin: int = 1
    cout: int = 1


SQUARE = [
    Case((7,), (3,)),
    Case((8,), (4,)),  # even stencil and grid
    Case((1,), (3,)),  # size-1 grid: the stencil wraps onto one point
    Case((4, 5), (3, 3)),
    Case((3, 4, 2), (3, 3, 1)),
    Case((6,), (3,), 2, 2),
    Case((4, 3), (3, 2), 3, 3),
    Case((2, 3, 2), (3, 1, 2), 2, 2),
]
RECT = [Case((6,), (3,), 2, 3), Case((4, 3), (3, 3), 3, 2), Case((3, 2, 2), (1, 3, 3), 1, 2)]


def make(case: Case) -> structops.Conv:
    return structops.Conv(case.grid, case.stencil, bc="periodic", in_channels=case.cin, out_channels=case.cout)


def dominant_theta(kernel: structops.Conv, rng) -> np.ndarray:
    """A random stencil whose centre dominates: every block of the symbol is well-conditioned."""
    theta = rng.standard_normal((kernel.out_channels, kernel.in_channels, *kernel.stencil))
    centre = tuple(s // 2 for s in kernel.stencil)
    boost = np.abs(theta).sum() + 1.0
    for o in range(min(kernel.in_channels, kernel.out_channels)):
        theta[(o, o, *centre)] += boost
    return theta.ravel()


def dense_inverse(A: np.ndarray) -> np.ndarray:
    return np.linalg.solve(A, np.eye(A.shape[0]))


def check_operator(op, reference: np.ndarray, dtype, rng) -> None:
    """``op`` equals ``reference`` (float64) to a tolerance from eps and cond, with its adjoint and dtype."""
    assert op.dtype == dtype
    assert op.shape == reference.shape
    scale = np.linalg.cond(reference) if reference.shape[0] == reference.shape[1] else 1.0
    rtol = default_rtol(dtype, max(op.shape)) * max(scale, 1.0) * 10
    dense = op.todense()
    np.testing.assert_allclose(dense, reference, atol=rtol * np.abs(reference).max(), rtol=0)
    np.testing.assert_allclose(op.H.todense(), reference.T, atol=rtol * np.abs(reference).max(), rtol=0)
    x = rng.standard_normal(op.shape[1]).astype(dtype)
    y = op @ x
    assert y.dtype == dtype
    X = rng.standard_normal((op.shape[1], 3)).astype(dtype)
    Y = op.matmat(X)
    assert Y.dtype == dtype
    np.testing.assert_allclose(Y[:, 0], (op @ X[:, 0]), rtol=0, atol=rtol * max(np.abs(Y).max(), 1))
    assert op.matmat(np.zeros((op.shape[1], 0), dtype=dtype)).shape == (op.shape[0], 0)
    assert (op.H @ rng.standard_normal(op.shape[0]).astype(dtype)).dtype == dtype
    adjoint_test(op, rng=rng)


@pytest.mark.parametrize("case", SQUARE, ids=str)
def test_inverse_matches_dense_solve(case, dtype, rng):
    kernel = make(case)
    theta = dominant_theta(kernel, rng)
    M = kernel.matrix(theta)
    t = theta.astype(dtype)
    check_operator(inverse(kernel, t), dense_inverse(M), dtype, rng)
    check_operator(inverse(kernel, t, alpha=0.7), dense_inverse(M + 0.7 * np.eye(M.shape[0])), dtype, rng)


@pytest.mark.parametrize("case", SQUARE + RECT, ids=str)
def test_normal_inverse_and_implicit_step_match_dense(case, dtype, rng):
    kernel = make(case)
    theta = rng.standard_normal(kernel.nparams)
    M = kernel.matrix(theta)
    n = M.shape[1]
    t = theta.astype(dtype)
    check_operator(inverse(kernel, t, alpha=0.3, normal=True), dense_inverse(M.T @ M + 0.3 * np.eye(n)), dtype, rng)
    check_operator(implicit_step(kernel, t, 0.25), dense_inverse(0.25 * M.T @ M + np.eye(n)), dtype, rng)
    if case.cout >= case.cin:  # K^T K is invertible for a dominant stencil
        theta = dominant_theta(kernel, rng)
        M = kernel.matrix(theta)
        check_operator(inverse(kernel, theta.astype(dtype), normal=True), dense_inverse(M.T @ M), dtype, rng)


@pytest.mark.parametrize("case", RECT, ids=str)
def test_rectangular_inverse_is_least_squares_pseudo_inverse(case, dtype, rng):
    kernel = make(case)
    theta = dominant_theta(kernel, rng)
    M = kernel.matrix(theta)
    op = inverse(kernel, theta.astype(dtype))
    assert op.shape == (M.shape[1], M.shape[0])
    check_operator(op, np.linalg.pinv(M), dtype, rng)
    # minimum-norm least-squares solution, as numpy.linalg.lstsq
    y = rng.standard_normal(M.shape[0])
    x_ref = np.linalg.lstsq(M, y, rcond=None)[0]
    x = op @ y.astype(dtype)
    assert np.linalg.norm(x - x_ref) <= 100 * default_rtol(dtype, M.size) * np.linalg.norm(x_ref)
    with pytest.raises(ValueError, match="alpha"):
        inverse(kernel, theta, alpha=1.0)


def laplacian(kernel: structops.Conv) -> np.ndarray:
    """A periodic Laplacian per channel pair: zero row sums, so constants are in the null space."""
    theta = np.zeros((kernel.out_channels, kernel.in_channels, *kernel.stencil))
    centre = tuple(s // 2 for s in kernel.stencil)
    for axis, s in enumerate(kernel.stencil):
        for shift in (-1, 1):
            idx = list(centre)
            idx[axis] = (centre[axis] + shift) % s
            theta[(slice(None), slice(None), *idx)] -= 1.0
        theta[(slice(None), slice(None), *centre)] += 2.0
    return theta.ravel()


@pytest.mark.parametrize("case", [Case((8,), (3,)), Case((4, 6), (3, 3)), Case((5,), (3,), 2, 2)], ids=str)
def test_singular_symbol_raises_and_pseudo_inverse_matches_pinv(case, dtype):
    kernel = make(case)
    theta = laplacian(kernel).astype(dtype)
    label = "|λ|" if case.cin == 1 else "singular value"
    with pytest.raises(np.linalg.LinAlgError, match=rf"smallest {label} .*condition number"):
        inverse(kernel, theta)
    with pytest.raises(np.linalg.LinAlgError, match="singular or near-singular"):
        inverse(kernel, theta, normal=True)
    M = kernel.matrix(theta.astype(np.float64))
    rcond = 1e-4 if dtype == np.float32 else 1e-10
    rng = np.random.default_rng(0)
    check_operator(inverse(kernel, theta, rcond=rcond), np.linalg.pinv(M, rcond=rcond), dtype, rng)
    check_operator(inverse(kernel, theta, normal=True, rcond=rcond), np.linalg.pinv(M.T @ M, rcond=rcond), dtype, rng)
    # alpha > 0 regularises: no error
    check_operator(
        inverse(kernel, theta, alpha=0.5, normal=True), dense_inverse(M.T @ M + 0.5 * np.eye(M.shape[0])), dtype, rng
    )


def test_near_singular_symbol_raises_with_the_numbers():
    kernel = structops.Conv(16, 3, bc="periodic")
    theta = np.array([-1.0, 2.0 + 1e-14, -1.0])  # smallest |λ| = 1e-14, cond ~ 4e14
    with pytest.raises(np.linalg.LinAlgError, match=r"smallest \|λ\| 1\.0\d*e-14 .*condition number [34]\.\d+e\+14"):
        inverse(kernel, theta)
    # well-conditioned in float64 but not in float32
    theta = np.array([-1.0, 2.0 + 1e-5, -1.0])
    with pytest.warns(solvers.IllConditionedWarning, match=r"condition number 4\.000e\+05"):
        inverse(kernel, theta)  # computed, with a warning: cond 4e5 > eps^(-1/3)
    with pytest.raises(np.linalg.LinAlgError, match="float32"):
        inverse(kernel, theta.astype(np.float32))


def test_rank_deficient_rectangular_raises():
    kernel = structops.Conv(6, 3, bc="periodic", in_channels=1, out_channels=2)
    stencil = np.array([1.0, 2.0, 3.0])
    theta = np.concatenate([stencil, 2 * stencil])
    theta[:3] = [-1.0, 2.0, -1.0]
    theta[3:] = [1.0, -2.0, 1.0]  # both output channels vanish at frequency 0
    with pytest.raises(np.linalg.LinAlgError, match="singular value"):
        inverse(kernel, theta)
    M = kernel.matrix(theta)
    check_operator(
        inverse(kernel, theta, rcond=1e-10), np.linalg.pinv(M, rcond=1e-10), np.float64, np.random.default_rng(1)
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"alpha": np.nan}, ValueError, "`alpha` must be a finite number"),
        ({"alpha": "1"}, TypeError, "`alpha` must be a real number"),
        ({"alpha": -1.0, "normal": True}, ValueError, "`alpha` must be a finite number >= 0"),
        ({"rcond": 1.0}, ValueError, r"`rcond` must be None or a relative cutoff in \[0, 1\)"),
        ({"rcond": -0.1}, ValueError, "`rcond` must be a finite number >= 0"),
    ],
)
def test_inverse_validates_options(kwargs, error, match):
    kernel = structops.Conv(6, 3, bc="periodic")
    with pytest.raises(error, match=match):
        inverse(kernel, np.array([0.0, 1.0, 0.0]), **kwargs)


@pytest.mark.parametrize(
    "kernel",
    [structops.Conv(6, 3), structops.Dense(3, 3)],
    ids=repr,
)
def test_inverse_needs_a_periodic_conv(kernel):
    with pytest.raises(ValueError, match="bc='periodic', stride=1"):
        inverse(kernel, np.ones(kernel.nparams))
    with pytest.raises(ValueError, match="bc='periodic', stride=1"):
        implicit_step(kernel, np.ones(kernel.nparams), 0.1)


def test_inverse_of_a_strided_periodic_conv_is_its_pseudo_inverse(rng):
    """Stride 2 on a periodic grid: the polyphase blocks give the Moore-Penrose inverse of the wide K."""
    kernel = structops.Conv(6, 3, bc="periodic", stride=2)
    theta = rng.standard_normal(3)
    K = kernel.matrix(theta)
    P = inverse(kernel, theta).todense()
    want = np.linalg.pinv(K)
    assert np.linalg.norm(P - want) <= default_rtol(np.float64, 6) * np.linalg.cond(K) * np.linalg.norm(want)


def test_inverse_rejects_non_kernels_and_bad_steps():
    with pytest.raises(TypeError, match="`kernel` must be a structops kernel family"):
        inverse(np.eye(3), np.ones(3))
    kernel = structops.Conv(6, 3, bc="periodic")
    with pytest.raises(ValueError, match="`h` must be a finite number >= 0"):
        implicit_step(kernel, np.ones(3), -0.1)
    with pytest.raises(ValueError, match="length nparams = 3"):
        inverse(kernel, np.ones(4))


def test_implicit_step_is_a_contraction(rng):
    kernel = structops.Conv((8, 8), (3, 3), bc="periodic", in_channels=2, out_channels=2)
    step = implicit_step(kernel, rng.standard_normal(kernel.nparams), 3.0)
    ev = np.linalg.eigvalsh(step.todense())
    assert ev.min() > 0 and ev.max() <= 1 + default_rtol(np.float64, kernel.shape[0])


@pytest.mark.parametrize("case", SQUARE + RECT, ids=str)
def test_spectral_norm_and_cond_match_numpy(case, dtype, rng):
    kernel = make(case)
    theta = rng.standard_normal(kernel.nparams)
    M = kernel.matrix(theta)
    rtol = default_rtol(dtype, M.size)
    assert spectral_norm(kernel, theta.astype(dtype)) == pytest.approx(np.linalg.norm(M, 2), rel=rtol)
    expected = np.linalg.cond(M)
    assert cond(kernel, theta.astype(dtype)) == pytest.approx(expected, rel=rtol * expected)


def test_cond_of_a_singular_symbol_is_infinite():
    kernel = structops.Conv(8, 3, bc="periodic")
    assert cond(kernel, np.array([1.0, -1.0, 0.0])) == np.inf


@pytest.mark.parametrize("case", SQUARE, ids=str)
def test_periodic_eigvals_match_dense_eigenvalues(case, dtype, rng):
    kernel = make(case)
    theta = rng.standard_normal(kernel.nparams)
    ev = eigvals(kernel, theta.astype(dtype))
    expected_shape = kernel.grid if case.cin == 1 else (*kernel.grid, case.cin)
    assert ev.shape == expected_shape
    dense = np.linalg.eigvals(kernel.matrix(theta))
    # match the two multisets greedily (eigenvalues may be complex and repeated)
    remaining = list(dense)
    tol = default_rtol(dtype, dense.size) * np.abs(dense).max() * 100
    for lam in ev.ravel():
        j = int(np.argmin(np.abs(np.array(remaining) - lam)))
        assert abs(remaining[j] - lam) <= tol
        remaining.pop(j)


@pytest.mark.parametrize(
    "kernel", [structops.Dense(30, 30), structops.Conv((6, 6), (3, 3)), structops.Antisymmetric(20)], ids=repr
)
def test_estimates_for_other_kernels_match_dense(kernel, rng):
    theta = rng.standard_normal(kernel.nparams)
    M = kernel.matrix(theta)
    assert spectral_norm(kernel, theta) == pytest.approx(np.linalg.norm(M, 2), rel=1e-8)
    if not isinstance(kernel, structops.Antisymmetric):  # its n even: cond finite only generically
        assert cond(kernel, theta) == pytest.approx(np.linalg.cond(M), rel=1e-6)
    ev = eigvals(kernel, theta, k=4)
    dense = np.linalg.eigvals(M)
    top = np.sort(np.abs(dense))[::-1][:4]
    np.testing.assert_allclose(np.abs(ev), top, rtol=1e-8)


def test_estimates_for_tiny_operators_use_the_dense_matrix():
    kernel = structops.Dense(2, 3)
    theta = np.arange(1.0, 7.0)
    M = kernel.matrix(theta)
    assert spectral_norm(kernel, theta) == pytest.approx(np.linalg.norm(M, 2))
    assert cond(kernel, theta) == pytest.approx(np.linalg.cond(M))
    sq = structops.Diagonal(3)
    np.testing.assert_allclose(eigvals(sq, np.array([1.0, -3.0, 2.0]), k=2), [-3.0, 2.0])


def test_eigvals_validation():
    with pytest.raises(ValueError, match="square"):
        eigvals(structops.Dense(2, 3), np.ones(6))
    with pytest.raises(ValueError, match="`which` must be one of"):
        eigvals(structops.Dense(3, 3), np.ones(9), which="XX")
    # a fast transform gives every eigenvalue; with k, the k most extreme of them (no ARPACK)
    lap = np.array([-1.0, 2.0, -1.0])
    assert np.allclose(eigvals(structops.Conv(4, 3, bc="periodic"), lap, k=2), [4.0, 2.0])
    with pytest.raises(ValueError, match="`k` must be an integer >= 1"):
        eigvals(structops.Conv(4, 3, bc="periodic"), lap, k=0)


# ------------------------------------------- bounded estimates for kernels without a symbol
def gaussian_blur(n: int) -> tuple[structops.Conv, np.ndarray]:
    """A 9×9 blur with a replicated boundary on an n×n grid that no fast transform diagonalises.

    The mean of two Gaussians (σ = 2 and 1) is no outer product (rank 2), and a replicated
    boundary has no periodic embedding: the estimates take the Lanczos route. Severely
    ill-conditioned.
    """
    from structops.data import gaussian_stencil

    theta = 0.5 * (gaussian_stencil(9, 2.0) + gaussian_stencil(9, 1.0))
    return structops.Conv((n, n), (9, 9), bc="replicate"), theta.ravel()


def test_cond_of_a_small_zero_boundary_blur_matches_numpy():
    from structops.data import gaussian_stencil

    kernel, theta = structops.Conv((16, 16), (9, 9), bc="zero"), gaussian_stencil(9, 2.0).ravel()
    M = kernel.matrix(theta)
    expected = np.linalg.cond(M)  # about 2.26e7
    assert cond(kernel, theta) == pytest.approx(expected, rel=1e-6)
    est = cond(kernel, theta, full_output=True)
    assert isinstance(est, SpectralEstimate)
    # an outer-product stencil: the Kronecker route, exact with Weyl bounds from the round-off residual
    assert est.exact and est.converged and est.certified and est.method == "kronecker" and est.iterations == 0
    assert est.lower <= expected * (1 + 1e-9) and expected <= est.upper * (1 + 1e-9)
    assert est.upper / est.lower < 1 + 1e-6
    assert spectral_norm(kernel, theta) == pytest.approx(np.linalg.norm(M, 2), rel=default_rtol(np.float64, M.shape[0]))
    dense = cond(structops.Dense(256, 256), M.ravel(), full_output=True)
    assert dense.method == "dense" and dense.lower == dense.value == dense.upper == pytest.approx(expected, rel=1e-6)


def test_iterative_estimates_of_a_blur_bracket_the_dense_truth():
    kernel, theta = gaussian_blur(32)  # N = 1024, forced onto the iterative path
    s = np.linalg.svd(kernel.matrix(theta), compute_uv=False)
    # the Lanczos estimate itself (spectral_norm takes the verified route for a convolution, below)
    lanczos = solvers.route(kernel, theta, "spectral_norm", dense_limit=0, embedding=False)
    norm = lanczos.spectral_norm(maxiter=200, tol=1e-6)
    assert not norm.exact and norm.converged and norm.method == "golub-kahan-lanczos"
    assert 1 <= norm.iterations <= 200
    assert norm.value == pytest.approx(s[0], rel=1e-6)
    assert norm.lower <= s[0] <= norm.upper
    # spectral_norm: the same value, and a certified upper bound by verified positive definiteness, 0.05 % above
    with pytest.warns(EstimateWarning, match=r"spectral_norm: .*lies in \[.*both bounds certified"):
        verified = spectral_norm(kernel, theta, dense_limit=0, full_output=True)
    assert verified.certified and verified.method == "verified-cholesky"
    assert verified.value == pytest.approx(s[0], rel=1e-6)
    assert verified.lower <= s[0] <= verified.upper <= s[0] * 1.01
    # σ_min of a blur does not converge in 200 steps: a warning, a guaranteed lower bound, no error
    with pytest.warns(EstimateWarning, match=r"cond: the Lanczos estimate .* maxiter=200 .*lies in \["):
        est = cond(kernel, theta, dense_limit=0, full_output=True)
    assert not est.converged and est.iterations == 200
    assert est.lower <= s[0] / s[-1] <= est.upper
    assert est.value == pytest.approx(est.lower, rel=1e-9)  # not converged: σ̃_max/σ̃_min is the lower bound


def test_iterative_cond_converges_for_a_well_conditioned_operator(rng):
    kernel = structops.Conv((32, 32), (3, 3))
    theta = rng.standard_normal(9)
    theta[4] += 10.0  # a dominant centre
    expected = np.linalg.cond(kernel.matrix(theta))
    est = cond(kernel, theta, dense_limit=0, full_output=True)
    assert est.converged and est.iterations <= 200
    assert est.value == pytest.approx(expected, rel=1e-6)
    assert est.lower <= expected <= est.upper < np.inf


@pytest.mark.parametrize("kernel", [structops.Dense(40, 60), structops.Dense(60, 40)], ids=repr)
def test_iterative_estimates_of_rectangular_operators_exhaust_the_krylov_space(kernel, rng):
    theta = rng.standard_normal(kernel.nparams)
    M = kernel.matrix(theta)
    est = cond(kernel, theta, dense_limit=0, full_output=True)
    assert est.converged and est.iterations == 40  # min(shape) steps: the Ritz values are the singular values
    kappa = np.linalg.cond(M)
    rt = default_rtol(np.float64, max(M.shape)) * kappa  # Lanczos' and LAPACK's singular values agree to eps·κ
    assert est.value == pytest.approx(kappa, rel=rt)
    assert est.lower <= kappa * (1 + rt) and kappa <= est.upper * (1 + rt)
    assert spectral_norm(kernel, theta, dense_limit=0) == pytest.approx(np.linalg.norm(M, 2), rel=1e-10)


def test_iterative_cond_of_a_rank_deficient_operator_is_huge_not_an_error():
    kernel = structops.Dense(30, 30)
    theta = np.outer(np.arange(1.0, 31.0), np.ones(30)).ravel()  # rank 1
    est = cond(kernel, theta, dense_limit=0, full_output=True)
    assert est.converged and est.upper == np.inf and est.lower > 1e12


@pytest.mark.parametrize("func", [spectral_norm, cond], ids=lambda f: f.__name__)
def test_non_convergence_warns_with_bounds_instead_of_an_arpack_error(func):
    kernel, theta = gaussian_blur(32)
    with pytest.warns(EstimateWarning, match=rf"{func.__name__}: .*maxiter=2 steps; the true value lies in \["):
        value = func(kernel, theta, dense_limit=0, maxiter=2)
    assert isinstance(value, float) and np.isfinite(value)
    with pytest.warns(EstimateWarning):
        est = func(kernel, theta, dense_limit=0, maxiter=2, full_output=True)
    assert (est.iterations, est.converged, est.exact) == (2, False, False)
    assert est.lower <= est.value <= est.upper
    truth = np.linalg.svd(kernel.matrix(theta), compute_uv=False)
    truth = truth[0] if func is spectral_norm else truth[0] / truth[-1]
    assert est.lower <= truth <= est.upper


def test_iterative_estimates_keep_float32():
    kernel, theta = gaussian_blur(32)
    truth = np.linalg.norm(kernel.matrix(theta.astype(np.float32).astype(np.float64)), 2)
    est = solvers.route(kernel, theta, "spectral_norm", dense_limit=0, embedding=False).spectral_norm(
        maxiter=200, tol=1e-6
    )
    assert est.converged and est.value == pytest.approx(truth, rel=1e-5)  # the Lanczos estimate
    with pytest.warns(EstimateWarning, match="both bounds certified"):  # the verified route: a 0.05 % bracket
        est = spectral_norm(kernel, theta.astype(np.float32), dense_limit=0, full_output=True)
    assert est.method == "verified-cholesky" and est.lower <= truth <= est.upper
    assert est.value == pytest.approx(truth, rel=1e-5)


def test_eigvals_stops_at_maxiter_with_a_warning():
    kernel, theta = gaussian_blur(32)
    with pytest.warns(EstimateWarning, match=r"eigvals: ARPACK found \d+ of the k=4 eigenvalues"):
        ev = eigvals(kernel, theta, k=4, dense_limit=0, maxiter=1)
    assert ev.shape[0] < 4
    top = np.sort(np.abs(np.linalg.eigvals(kernel.matrix(theta))))[::-1]
    assert all(np.min(np.abs(top - abs(lam))) <= 1e-6 for lam in ev)
    with pytest.raises(ValueError, match=r"`k` must be < N - 1 = 1023 .*raise `dense_limit`"):
        eigvals(kernel, theta, k=1023, dense_limit=0)


def test_symbol_estimates_are_exact_with_full_output():
    kernel = structops.Conv(16, 3, bc="periodic")
    theta = np.array([-1.0, 4.0, -1.0])
    est = cond(kernel, theta, full_output=True)
    assert est == SpectralEstimate(3.0, 3.0, 3.0, True, "fourier", 0)
    assert spectral_norm(kernel, theta, full_output=True).value == 6.0
    with pytest.raises(AttributeError):
        est.value = 1.0  # frozen


@pytest.mark.parametrize("func", [spectral_norm, cond, eigvals], ids=lambda f: f.__name__)
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"maxiter": 0}, ValueError, "`maxiter` must be an integer >= 1, got 0"),
        ({"maxiter": 2.5}, TypeError, "`maxiter` must be an integer, got 2.5"),
        ({"tol": -1e-3}, ValueError, "`tol` must be a finite number >= 0"),
        ({"tol": 1.0}, ValueError, r"`tol` must be a relative accuracy in \[0, 1\), got 1.0"),
        ({"tol": np.nan}, ValueError, "`tol` must be a finite number"),
        ({"tol": "1e-6"}, TypeError, "`tol` must be a real number"),
        ({"dense_limit": -1}, ValueError, "`dense_limit` must be an integer >= 0"),
    ],
)
def test_estimates_validate_their_options(func, kwargs, error, match):
    kernel = structops.Conv((6, 6), (3, 3))
    with pytest.raises(error, match=match):
        func(kernel, np.ones(9), **kwargs)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_an_ill_conditioned_exact_inverse_warns_and_a_regularised_one_does_not(dtype):
    # the periodic Gaussian blur: invertible, but its inverse magnifies noise by cond(K) (the "-70 dB")
    from structops.data import gaussian_stencil
    from structops.solvers import IllConditionedWarning

    k = structops.Conv((32, 32), (9, 9), bc="periodic")
    theta = gaussian_stencil(9, 2.0).ravel().astype(dtype)  # the blur, sigma = 2
    lam = np.abs(np.fft.fft2(np.pad(theta.reshape(9, 9).astype(np.float64), ((0, 23), (0, 23)))))
    condition = lam.max() / lam.min()
    limit = 1 / (solvers.SINGULAR_FACTOR * np.finfo(dtype).eps)
    if condition > limit:
        with pytest.raises(np.linalg.LinAlgError, match="near-singular"):
            solvers.inverse(k, theta)
    else:
        assert condition > np.finfo(dtype).eps ** (-1 / 3)
        with pytest.warns(IllConditionedWarning, match=r"ill-conditioned: condition number .* use structops"):
            solvers.inverse(k, theta)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        solvers.inverse(k, theta, alpha=1e-2, normal=True)  # regularised: well conditioned, silent
