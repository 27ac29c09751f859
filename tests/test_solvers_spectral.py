"""Exact FFT solves and spectral quantities of periodic convolutions against dense numpy.linalg references."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest

import structops
from structops.solvers import cond, eigvals, implicit_step, inverse, spectral_norm
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
    inverse(kernel, theta)
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
        ({"alpha": np.nan}, ValueError, "`alpha` must be finite"),
        ({"alpha": "1"}, TypeError, "`alpha` must be a real number"),
        ({"alpha": -1.0, "normal": True}, ValueError, "`alpha` must be >= 0"),
        ({"rcond": 1.0}, ValueError, r"`rcond` must be None or a relative cutoff in \[0, 1\)"),
        ({"rcond": -0.1}, ValueError, "`rcond` must be >= 0"),
    ],
)
def test_inverse_validates_options(kwargs, error, match):
    kernel = structops.Conv(6, 3, bc="periodic")
    with pytest.raises(error, match=match):
        inverse(kernel, np.array([0.0, 1.0, 0.0]), **kwargs)


@pytest.mark.parametrize(
    "kernel",
    [structops.Conv(6, 3), structops.Conv(6, 3, bc="periodic", stride=2), structops.Dense(3, 3)],
    ids=repr,
)
def test_inverse_needs_a_periodic_conv(kernel):
    with pytest.raises(ValueError, match="bc='periodic', stride=1"):
        inverse(kernel, np.ones(kernel.nparams))
    with pytest.raises(ValueError, match="bc='periodic', stride=1"):
        implicit_step(kernel, np.ones(kernel.nparams), 0.1)


def test_inverse_rejects_non_kernels_and_bad_steps():
    with pytest.raises(TypeError, match="`kernel` must be a structops kernel family"):
        inverse(np.eye(3), np.ones(3))
    kernel = structops.Conv(6, 3, bc="periodic")
    with pytest.raises(ValueError, match="`h` must be >= 0"):
        implicit_step(kernel, np.ones(3), -0.1)
    with pytest.raises(ValueError, match="length nparams = 3"):
        inverse(kernel, np.ones(4))


def test_implicit_step_is_a_contraction(rng):
    kernel = structops.Conv((8, 8), (3, 3), bc="periodic", in_channels=2, out_channels=2)
    step = implicit_step(kernel, rng.standard_normal(kernel.nparams), 3.0)
    ev = np.linalg.eigvalsh(step.todense())
    assert ev.min() > 0 and ev.max() <= 1 + 1e-12


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
    with pytest.raises(ValueError, match="`k` must be None"):
        eigvals(structops.Conv(4, 3, bc="periodic"), np.ones(3), k=2)
