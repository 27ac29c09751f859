"""Strang's and T. Chan's circulant preconditioners against their textbook definitions, and their effect on CG."""

from __future__ import annotations

import itertools

import numpy as np
import pylops
import pytest
import scipy.sparse.linalg as spla

import structops
from structops.data import gaussian_stencil
from structops.solvers import KINDS, circulant_eigvals, circulant_preconditioner
from structops.testing import adjoint_test, default_rtol

from ._helpers import atol_for


# ---------------------------------------------------------- textbook references
def toeplitz_entry(T: np.ndarray, grid: tuple[int, ...], k: tuple[int, ...]) -> float:
    """t_k of a (multilevel) Toeplitz matrix read from the dense matrix: T[i, m] with i - m = k."""
    i = tuple(max(kk, 0) for kk in k)
    m = tuple(max(-kk, 0) for kk in k)
    return T[np.ravel_multi_index(i, grid), np.ravel_multi_index(m, grid)]


def strang_column(T: np.ndarray, grid: tuple[int, ...]) -> np.ndarray:
    """Strang: c_k = t_k for k <= n//2, t_{k-n} otherwise (per level)."""
    c = np.zeros(grid)
    for k in itertools.product(*(range(n) for n in grid)):
        src = tuple(kk if kk <= n // 2 else kk - n for kk, n in zip(k, grid))
        c[k] = toeplitz_entry(T, grid, src)
    return c


def chan_column(T: np.ndarray, grid: tuple[int, ...]) -> np.ndarray:
    """T. Chan: c_k = ((n - k) t_k + k t_{k-n}) / n on each level."""
    c = np.zeros(grid)
    for k in itertools.product(*(range(n) for n in grid)):
        for choice in itertools.product((0, 1), repeat=len(grid)):
            src = tuple(kk - n * ch for kk, n, ch in zip(k, grid, choice))
            w = np.prod([(kk if ch else n - kk) / n for kk, n, ch in zip(k, grid, choice)])
            if w:
                c[k] += w * toeplitz_entry(T, grid, src)
    return c


def circulant_matrix(c: np.ndarray) -> np.ndarray:
    """Dense (multilevel) circulant with first column c: C[i, m] = c[(i - m) mod n]."""
    grid = c.shape
    idx = list(itertools.product(*(range(n) for n in grid)))
    C = np.empty((len(idx), len(idx)))
    for a, i in enumerate(idx):
        for b, m in enumerate(idx):
            C[a, b] = c[tuple((ii - mm) % n for ii, mm, n in zip(i, m, grid))]
    return C


def matrix_from_eigvals(lam: np.ndarray) -> np.ndarray:
    """F^{-1} diag(λ) F with the DFT matrix F written out (Kronecker product over levels)."""
    F = np.ones((1, 1))
    for n in lam.shape:
        j = np.arange(n)
        F = np.kron(F, np.exp(-2j * np.pi * np.outer(j, j) / n))
    return (np.conj(F).T @ np.diag(lam.ravel()) @ F) / lam.size


CASES = [
    ((8,), (3,)),
    ((9,), (5,)),
    ((6,), (4,)),
    ((4,), (7,)),
    ((5, 6), (3, 3)),
    ((6, 4), (5, 2)),
    ((3, 4, 3), (3, 1, 3)),
]


@pytest.mark.parametrize(("grid", "stencil"), CASES, ids=str)
@pytest.mark.parametrize(("kind", "column"), [("strang", strang_column), ("chan", chan_column)], ids=["strang", "chan"])
def test_circulant_matches_textbook_definition(grid, stencil, kind, column, dtype, rng):
    kernel = structops.Conv(grid, stencil)
    theta = rng.standard_normal(kernel.nparams)
    T = kernel.matrix(theta)
    C_ref = circulant_matrix(column(T, grid))
    lam = circulant_eigvals(kernel, theta.astype(dtype), kind)
    assert lam.shape == grid
    assert lam.dtype == (np.complex64 if dtype == np.float32 else np.complex128)
    tol = default_rtol(dtype, T.size) * np.abs(C_ref).max()
    np.testing.assert_allclose(matrix_from_eigvals(lam.astype(np.complex128)), C_ref, atol=tol, rtol=0)


def test_strang_of_a_short_stencil_is_the_periodic_convolution(rng):
    zero = structops.Conv((10, 12), (3, 5))
    periodic = structops.Conv((10, 12), (3, 5), bc="periodic")
    theta = rng.standard_normal(zero.nparams)
    np.testing.assert_allclose(
        circulant_eigvals(zero, theta, "strang"),
        periodic.eigvals(theta),
        rtol=0,
        atol=atol_for(periodic.eigvals(theta)),
    )


def test_chan_is_the_frobenius_optimal_circulant(rng):
    kernel = structops.Conv(9, 5)
    theta = rng.standard_normal(5)
    T = kernel.matrix(theta)
    C = matrix_from_eigvals(circulant_eigvals(kernel, theta, "chan")).real
    # optimality: C - T is orthogonal to every circulant basis matrix (cyclic shifts)
    for k in range(9):
        P = np.roll(np.eye(9), k, axis=0)
        assert abs(np.sum((C - T) * P)) < 1e-12
    strang = matrix_from_eigvals(circulant_eigvals(kernel, theta, "strang")).real
    assert np.linalg.norm(C - T) < np.linalg.norm(strang - T)


@pytest.mark.parametrize("kind", ["strang", "chan"])
@pytest.mark.parametrize(("grid", "stencil"), [((12,), (3,)), ((6, 5), (3, 3))], ids=str)
def test_preconditioner_operators_match_dense_inverses(grid, stencil, kind, dtype, rng):
    kernel = structops.Conv(grid, stencil)
    theta = rng.standard_normal(kernel.nparams)
    theta[kernel.nparams // 2] += np.abs(theta).sum() + 1  # a dominant centre: C is invertible
    C = matrix_from_eigvals(circulant_eigvals(kernel, theta, kind)).real
    n = C.shape[0]
    t = theta.astype(dtype)
    for op, ref in [
        (circulant_preconditioner(kernel, t, kind=kind), np.linalg.inv(C)),
        (circulant_preconditioner(kernel, t, kind=kind, alpha=0.4), np.linalg.inv(C + 0.4 * np.eye(n))),
        (
            circulant_preconditioner(kernel, t, kind=kind, alpha=0.1, normal=True),
            np.linalg.inv(C.T @ C + 0.1 * np.eye(n)),
        ),
    ]:
        assert op.dtype == dtype and op.shape == (n, n)
        tol = default_rtol(dtype, n) * np.linalg.cond(ref) * np.abs(ref).max() * 10
        np.testing.assert_allclose(op.todense(), ref, atol=tol, rtol=0)
        np.testing.assert_allclose(op.H.todense(), ref.T, atol=tol, rtol=0)
        adjoint_test(op, rng=rng)
    assert (circulant_preconditioner(kernel, t, kind="strang") @ np.ones(n, dtype=dtype)).dtype == dtype
    for kind in KINDS:  # the removed strang_/chan_preconditioner: deprecated aliases of circulant_preconditioner
        with pytest.warns(DeprecationWarning, match=rf"{kind}_preconditioner is deprecated.*kind='{kind}'"):
            old = getattr(structops.solvers, f"{kind}_preconditioner")(kernel, theta, alpha=0.1, normal=True)
        np.testing.assert_allclose(
            old.todense(), circulant_preconditioner(kernel, theta, kind=kind, alpha=0.1, normal=True).todense()
        )


def cg_count(A, b, **kwargs):
    count = [0]

    def callback(xk):
        count[0] += 1

    x, info = spla.cg(A, b, callback=callback, **kwargs)
    assert info == 0
    return x, count[0]


@pytest.mark.parametrize("kind", ["strang", "chan"])
def test_preconditioned_cg_on_toeplitz_normal_equations_needs_fewer_iterations(kind, rng):
    n, alpha = 300, 1e-4
    kernel = structops.Conv(n, 9)
    theta = gaussian_stencil(9, 1.5, ndim=1)
    T = kernel.op(theta)
    A = T.H @ T + alpha * pylops.Identity(n)
    b = T.H @ rng.standard_normal(n)
    x_plain, it_plain = cg_count(A, b, rtol=1e-10, maxiter=5000)
    M = circulant_preconditioner(kernel, theta, kind=kind, alpha=alpha, normal=True)
    x_prec, it_prec = cg_count(A, b, rtol=1e-10, maxiter=5000, M=M)
    assert it_prec < it_plain / 3, (it_prec, it_plain)
    Td = kernel.matrix(theta)
    x_ref = np.linalg.solve(Td.T @ Td + alpha * np.eye(n), b)
    cond = np.linalg.cond(Td.T @ Td + alpha * np.eye(n))
    for x in (x_plain, x_prec):
        assert np.linalg.norm(x - x_ref) <= 1e-10 * cond * np.linalg.norm(x_ref)


def test_preconditioned_solvers_on_a_2d_bttb_system(rng, dtype):
    grid, alpha = (40, 40), 1e-3
    kernel = structops.Conv(grid, (5, 5))
    theta = np.outer(gaussian_stencil(5, 1.0, ndim=1), gaussian_stencil(5, 1.0, ndim=1)).ravel().astype(dtype)
    T = kernel.op(theta)
    N = T.shape[1]
    A = T.H @ T + alpha * pylops.Identity(N, dtype=dtype)
    b = (T.H @ rng.standard_normal(N).astype(dtype)).astype(dtype)
    rtol = 1e-5 if dtype == np.float32 else 1e-9
    x_plain, it_plain = cg_count(A, b, rtol=rtol, maxiter=3000)
    M = circulant_preconditioner(kernel, theta, kind="chan", alpha=alpha, normal=True)
    x_prec, it_prec = cg_count(A, b, rtol=rtol, maxiter=3000, M=M)
    assert x_prec.dtype == dtype and M.dtype == dtype
    assert it_prec < it_plain, (it_prec, it_plain)
    # minres and gmres take the same M
    x_minres, info = spla.minres(A, b, rtol=rtol, M=M, maxiter=3000)
    assert info == 0
    x_gmres, info = spla.gmres(A, b, rtol=rtol, M=M, restart=50, maxiter=3000)
    assert info == 0 and x_gmres.dtype == dtype
    gap_tol = 50 * rtol / alpha
    for x in (x_prec, x_minres, x_gmres):
        assert np.linalg.norm(x - x_plain) <= gap_tol * np.linalg.norm(x_plain)


def test_gmres_on_a_nonsymmetric_toeplitz_system_with_circulant_preconditioner(rng):
    n = 400
    kernel = structops.Conv(n, 5)
    theta = np.array([0.3, -1.0, 2.5, -0.7, 0.1])  # nonsymmetric, diagonally dominant
    T = kernel.op(theta)
    b = rng.standard_normal(n)
    counts = {}
    for kind in (None, "strang", "chan"):
        M = None if kind is None else circulant_preconditioner(kernel, theta, kind=kind)
        its = []
        x, info = spla.gmres(T, b, rtol=1e-12, M=M, restart=n, callback=its.append, callback_type="pr_norm")
        assert info == 0
        x_ref = np.linalg.solve(kernel.matrix(theta), b)
        assert np.linalg.norm(x - x_ref) <= 1e-9 * np.linalg.norm(x_ref)
        counts[kind] = len(its)
    assert counts["strang"] < counts[None] and counts["chan"] < counts[None], counts


@pytest.mark.parametrize(
    "kernel",
    [
        structops.Conv(8, 3, bc="periodic"),
        structops.Conv(8, 3, bc="reflect"),
        structops.Conv(8, 3, in_channels=2),
        structops.Conv(8, 3, stride=2),
    ],
    ids=repr,
)
def test_preconditioner_needs_a_single_channel_zero_boundary_conv(kernel):
    with pytest.raises(ValueError, match="bc='zero'"):
        circulant_preconditioner(kernel, np.ones(kernel.nparams))


def test_preconditioner_validation():
    kernel = structops.Conv(8, 3)
    with pytest.raises(ValueError, match=r"`kind` must be one of \('strang', 'chan'\), got 'optimal'"):
        circulant_preconditioner(kernel, np.ones(3), kind="optimal")
    with pytest.raises(TypeError, match="`kernel` must be a structops kernel family"):
        circulant_eigvals("conv", np.ones(3))
    with pytest.raises(ValueError, match="`alpha` must be a finite number >= 0"):
        circulant_preconditioner(kernel, np.ones(3), alpha=-1.0, normal=True)
    lap = np.array([-1.0, 2.0, -1.0])  # Strang's circulant of the Laplacian is singular
    with pytest.raises(np.linalg.LinAlgError, match=r"Strang.s circulant approximation C .* smallest"):
        circulant_preconditioner(kernel, lap)
    circulant_preconditioner(kernel, lap, kind="chan")  # T. Chan's is not (2 - (7/8) 2 cos ξ > 0)
    circulant_preconditioner(kernel, lap, normal=True, alpha=1e-3)
    circulant_preconditioner(kernel, lap, rcond=1e-8)


def test_a_family_built_on_a_zero_boundary_conv_gets_the_preconditioner_of_its_stencil(rng):
    # SymmetricConv is a Conv of its weights: the same circulant approximation, from the same stencil
    from structops import SymmetricConv
    from structops.solvers import circulant_eigvals, circulant_preconditioner

    k = SymmetricConv((12, 10), 3)
    theta = np.array([4.0, -1.0, -1.0, -0.25])
    full = structops.Conv((12, 10), 3)
    w = k.weights(theta).ravel()
    for kind in ("strang", "chan"):
        np.testing.assert_allclose(
            circulant_eigvals(k, theta, kind),
            circulant_eigvals(full, w, kind),
            rtol=0,
            atol=atol_for(circulant_eigvals(full, w, kind)),
        )
    x = rng.standard_normal(120)
    np.testing.assert_allclose(
        circulant_preconditioner(k, theta) @ x,
        circulant_preconditioner(full, w) @ x,
        rtol=0,
        atol=atol_for(circulant_preconditioner(full, w) @ x),
    )
    with pytest.raises(ValueError, match="needs a Toeplitz/BTTB convolution"):
        circulant_eigvals(SymmetricConv((12, 10), 3, bc="periodic"), theta)
