"""``cg``'s own loop, its one-pass normal operator and the circulant preconditioner applied in place (issue 24).

References: dense matrices built from the operators column by column and solved by
``numpy.linalg``; ``scipy.sparse.linalg.cg`` (same start, same stopping test) for the plain loop's
iteration count; the float64 dense preconditioner from ``numpy.fft`` and the circulant's eigenvalues.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse.linalg as spla

from structops import Conv
from structops.data import gaussian_stencil, phantom
from structops.solvers import Deblurrer, circulant_eigvals
from structops.solvers._filters import as_regularizer
from structops.solvers._krylov import NormalOperator, RealSymbolMultiplier, build_model, edge_cg, normal_cg
from structops.testing import default_rtol

LAPLACE = np.array([0.0, -1.0, 0.0, -1.0, 4.0, -1.0, 0.0, -1.0, 0.0])


def blur(n: int, rng, dtype=np.float64):
    k = Conv((n, n), (5, 5))
    theta = (gaussian_stencil(5, 1.2).ravel() + 1e-3 * rng.standard_normal(25)).astype(dtype)  # not separable
    return k, theta


def dense(op) -> np.ndarray:
    return np.stack([op.matvec(e) for e in np.eye(op.shape[1], dtype=op.dtype)], axis=1)


@pytest.mark.parametrize("with_l", [False, True])
def test_normal_operator_is_the_dense_normal_matrix(with_l, rng, close):
    n = 7
    k, theta = blur(n, rng)
    L = Conv((n, n), (3, 3)).op(LAPLACE) if with_l else None
    A = NormalOperator(k.op(theta), 0.3, L)
    Kd = dense(k.op(theta))
    Ld = np.eye(n * n) if L is None else dense(L)
    reference = Kd.T @ Kd + 0.3 * Ld.T @ Ld
    close(dense(A), reference, np.float64, n * n)
    x = rng.standard_normal(n * n)
    x0 = x.copy()
    close(A.H @ x, reference @ x, np.float64, n * n)
    np.testing.assert_array_equal(x, x0)  # the input is not updated in place


def test_plain_loop_is_scipy_cg(rng):
    """Without a preconditioner the loop is scipy's: same iterations, same iterate, and the solution solves A x = b."""
    n = 16
    k, theta = blur(n, rng)
    A = NormalOperator(k.op(theta), 1e-3)
    rhs = rng.standard_normal(n * n)
    x, iterations, converged = normal_cg(A, rhs, None, 1e-8, 500)
    count = [0]
    xs, info = spla.cg(A, rhs, rtol=1e-8, maxiter=500, callback=lambda _: count.__setitem__(0, count[0] + 1))
    assert converged and info == 0 and abs(iterations - count[0]) <= 1  # rounding may move the last step
    Ad = dense(A)
    assert np.linalg.norm(Ad @ x - rhs) < 1.01e-8 * np.linalg.norm(rhs)
    exact = np.linalg.solve(Ad, rhs)
    for y in (x, xs):
        assert np.linalg.norm(y - exact) <= 1e-8 * np.linalg.cond(Ad) * np.linalg.norm(exact)


def test_loop_edges(rng):
    n = 8
    k, theta = blur(n, rng)
    A = NormalOperator(k.op(theta), 1e-4)
    x, iterations, converged = normal_cg(A, np.zeros(n * n), None, 1e-6, 10)
    assert iterations == 0 and converged and not x.any()
    x, iterations, converged = normal_cg(A, rng.standard_normal(n * n), None, 1e-12, 3)
    assert iterations == 3 and not converged


def test_float32_fft_preconditioner_is_symmetric_positive_definite(rng, close):
    """The float64 operator with float32 FFTs: the circulant (CᵀC + αI)⁻¹ to float32 accuracy, SPD as cg needs."""
    n = 12
    k, theta = blur(n, rng)
    model = build_model(k, theta, as_regularizer(None, k), "chan")
    M = model.applier(1e-3, 1.0, np.float64, fft_dtype=np.float32)
    assert isinstance(M, RealSymbolMultiplier) and M.dtype == np.float64 and M.half.dtype == np.float32
    x = rng.standard_normal(n * n)
    assert (M @ x).dtype == np.float64
    lam = circulant_eigvals(k, theta, "chan")
    h = 1.0 / (np.abs(lam) ** 2 + 1e-3)
    reference = np.stack([np.fft.ifft2(h * np.fft.fft2(e.reshape(n, n))).real.ravel() for e in np.eye(n * n)], axis=1)
    Md = dense(M)
    close(Md, reference, np.float32, n * n)
    # symmetric and positive definite to float32 accuracy: the eigenvalues of the symmetric part are
    # those of the reference, min h > 0, up to the float32 rounding of the products
    tol = default_rtol(np.float32, n * n) * float(h.max())
    assert np.abs(Md - Md.T).max() <= tol
    assert np.linalg.eigvalsh((Md + Md.T) / 2).min() >= float(h.min()) - tol > 0


@pytest.mark.parametrize("fft_dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kind", ["chan", "strang"])
def test_preconditioned_loop_solves_the_system(kind, fft_dtype, rng):
    """PCG (in-place float64 FFTs, or float32 ones): fewer iterations than plain CG, the same solution within rtol."""
    n = 24
    k, theta = blur(n, rng)
    b = k.apply(theta, phantom(n)) + 0.01 * rng.standard_normal((n, n))
    K = k.op(theta)
    A = NormalOperator(K, 1e-4)
    rhs = K.H @ b.ravel()
    model = build_model(k, theta, as_regularizer(None, k), kind)
    M = model.applier(1e-4, 1.0, np.float64, fft_dtype=fft_dtype)
    rtol = 1e-7
    x, iterations, converged = normal_cg(A, rhs, M, rtol, 2000)
    plain = normal_cg(A, rhs, None, rtol, 2000)
    assert converged and plain[2] and iterations < plain[1]
    count = [0]
    spla.cg(A, rhs, rtol=rtol, maxiter=2000, M=M, callback=lambda _: count.__setitem__(0, count[0] + 1))
    assert abs(iterations - count[0]) <= max(2, count[0] // 50)  # scipy's loop with the same M
    # each true residual is about rtol·‖rhs‖, so the solutions differ by at most 2·rtol·cond(A)·‖x‖,
    # cond(A) ≤ (‖K‖² + α)/α with ‖K‖ ≤ Σ|θ|
    for y in (x, plain[0]):
        assert np.linalg.norm(A @ y - rhs) <= 1.01 * rtol * np.linalg.norm(rhs)
    cond = (np.abs(theta).sum() ** 2 + 1e-4) / 1e-4
    assert np.linalg.norm(x - plain[0]) <= 2.02 * rtol * cond * np.linalg.norm(plain[0])


def test_in_place_product_equals_the_dense_one_on_both_fft_paths(rng, close, monkeypatch):
    """``apply`` into a buffer: numpy.fft with a per-thread spectrum (one worker), scipy.fft (several)."""
    k, theta = blur(10, rng)
    model = build_model(k, theta, as_regularizer(None, k), "chan")
    M = model.applier(1e-3, 1.0, np.float64)
    lam = circulant_eigvals(k, theta, "chan")
    x = rng.standard_normal(100)
    reference = np.fft.ifft2(np.fft.fft2(x.reshape(10, 10)) / (np.abs(lam) ** 2 + 1e-3)).real.ravel()
    out = np.full(100, np.nan)
    assert M.apply(x, out) is out
    close(out, reference, np.float64, 100)
    close(M.apply(2 * x, np.empty(100)), 2 * reference, np.float64, 100)  # the spectrum is overwritten, not added to
    monkeypatch.setattr("structops.solvers._krylov.workers", lambda: 2)
    close(M.apply(x, np.empty(100)), reference, np.float64, 100)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tikhonov_cg_matches_the_dense_solution(dtype, rng):
    n = 16
    k, theta = blur(n, rng, dtype)
    b = (k.apply(theta, phantom(n).astype(dtype)) + 0.01 * rng.standard_normal((n, n))).astype(dtype)
    it = Deblurrer(k, theta, solver="cg", preconditioner="chan", rtol=1e-6).solve(b, 1e-3, full_output=True)
    assert it.method == "cg+chan" and it.converged and it.x.dtype == dtype
    Kd = dense(k.op(theta.astype(np.float64)))
    exact = np.linalg.solve(Kd.T @ Kd + 1e-3 * np.eye(n * n), Kd.T @ b.ravel().astype(np.float64))
    # rtol 1e-6 on the normal equations, cond(KᵀK + αI) ≤ (1 + α)/α
    tol = 1e-6 * (1 + 1e-3) / 1e-3 + 1e3 * default_rtol(dtype, n * n)
    assert np.linalg.norm(it.x.ravel() - exact) <= tol * np.linalg.norm(exact)


@pytest.mark.parametrize(
    "grid, stencil",
    [((256,), (5,)), ((8, 64), (1, 3)), ((64, 8), (3, 1)), ((128, 128), (3, 3)), ((192, 128), (4, 3))],
)
def test_edge_normal_is_the_normal_operator(grid, stencil, rng, close):
    """Periodic symbol + exact edge strips = KᵀK z (the dense matrix where small, else the stencil pair)."""
    k = Conv(grid, stencil)
    theta = rng.standard_normal(int(np.prod(stencil)))
    model = build_model(k, theta, as_regularizer(None, k), "chan")
    band = model.band
    assert band is not None
    z = rng.standard_normal(grid)
    w = np.fft.irfftn(np.fft.rfftn(z) * band.k2, s=grid, axes=tuple(range(len(grid))))
    band.fix(z, w)
    K = k.op(theta)
    N = int(np.prod(grid))
    reference = dense(K).T @ (dense(K) @ z.ravel()) if N <= 600 else K.H @ (K @ z.ravel())
    close(w.ravel(), reference, np.float64, N)


def test_edge_normal_only_where_it_applies(rng):
    theta = rng.standard_normal(9)
    small, reflect = Conv((64, 64), (3, 3)), Conv((128, 128), (3, 3), bc="reflect")
    assert build_model(small, theta, as_regularizer(None, small), "chan").band is None  # strips too wide
    assert build_model(small, theta, as_regularizer(None, small), "strang").band is not None  # one FFT pair
    sixty = Conv((60, 60), (3, 3))
    assert build_model(sixty, theta, as_regularizer(None, sixty), "strang").band is None
    big = Conv((128, 128), (3, 3))
    lap = Conv((128, 128), (3, 3)).op(LAPLACE)
    assert build_model(big, theta, as_regularizer(lap, big), "chan").band is None  # L ≠ I
    assert build_model(reflect, theta, as_regularizer(None, reflect), "dct").band is None
    M = build_model(big, theta, as_regularizer(None, big), "chan").applier(1e-3, 0.5, np.float64)
    assert M.band is None  # lsqr's split preconditioner


@pytest.mark.parametrize("kind", ["chan", "strang"])
def test_edge_cg_is_preconditioned_cg(kind, rng):
    """edge_cg: the generic loop's iterations and a solution within the rtol bound; tikhonov takes it."""
    n = 128
    k = Conv((n, n), (3, 3))
    theta = np.array([0.05, 0.1, 0.04, 0.12, 0.4, 0.1, 0.06, 0.1, 0.03])
    b = k.apply(theta, phantom(n)) + 0.01 * rng.standard_normal((n, n))
    K = k.op(theta)
    alpha, rtol = 1e-3, 1e-8
    A = NormalOperator(K, alpha)
    rhs = K.H @ b.ravel()
    model = build_model(k, theta, as_regularizer(None, k), kind)
    M = model.applier(alpha, 1.0, np.float64)
    x, iterations, converged = edge_cg(A, model.band, M, alpha, rhs, rtol, 1000)
    xg, ig, okg = normal_cg(A, rhs, M, rtol, 1000)
    assert converged and okg and abs(iterations - ig) <= max(2, ig // 50)
    assert np.linalg.norm(rhs - A @ x) < rtol * np.linalg.norm(rhs)  # the true residual, not the recurrence's
    cond = (np.abs(theta).sum() ** 2 + alpha) / alpha  # ‖K‖ ≤ Σ|θ|
    assert np.linalg.norm(x - xg) <= 2 * rtol * cond * np.linalg.norm(xg)

    def same_loop(res) -> None:  # its dot products may sum in another order (one BLAS thread inside tikhonov)
        assert res.converged and abs(res.iterations - iterations) <= max(2, iterations // 50)
        assert np.linalg.norm(res.x.ravel() - x) <= 2 * rtol * cond * np.linalg.norm(x)

    same_loop(Deblurrer(k, theta, solver="cg", preconditioner=kind, rtol=rtol).solve(b, alpha, full_output=True))
    if kind == "strang":  # "auto" takes Strang's circulant for cg where its edge form applies
        auto = Deblurrer(k, theta, solver="cg", rtol=rtol).solve(b, alpha, full_output=True)
        assert auto.method == "cg+strang"
        same_loop(auto)
