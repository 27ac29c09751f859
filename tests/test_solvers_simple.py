"""The operators as they are in scipy.sparse.linalg solvers and in pylops' algebra, against numpy."""

from __future__ import annotations

import numpy as np
import pylops
import pytest
import scipy.sparse.linalg as spla

from structops import Antisymmetric, Dense, Diagonal, MMatrix, Softplus
from structops.testing import adjoint_test

from ._helpers import atol_for


def rel_residual(A: np.ndarray, x: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(A @ x - b) / np.linalg.norm(b))


@pytest.mark.parametrize("n", [1, 5, 40])
def test_cg_on_positive_diagonal(n, dtype, rng):
    k = Diagonal(n)
    theta = rng.uniform(0.5, 3.0, n).astype(dtype)
    b = rng.standard_normal(n).astype(dtype)
    rtol = 1e-5 if dtype == np.float32 else 1e-10
    x, info = spla.cg(k.op(theta), b, rtol=rtol, atol=0)
    assert info == 0
    np.testing.assert_allclose(x, b.astype(np.float64) / theta, rtol=20 * rtol)
    assert rel_residual(np.diag(theta.astype(np.float64)), x, b) <= 2 * rtol


def test_cg_on_dense_normal_equations(rng):
    k = Dense(12, 8)
    theta = rng.standard_normal(k.nparams)
    A = k.op(theta)
    shift = pylops.Identity(8)
    N = A.H @ A + 0.5 * shift
    b = rng.standard_normal(8)
    x, info = spla.cg(N, b, rtol=1e-11, atol=0)
    assert info == 0
    M = k.matrix(theta)
    np.testing.assert_allclose(x, np.linalg.solve(M.T @ M + 0.5 * np.eye(8), b), rtol=1e-8)


@pytest.mark.parametrize("shift", [0.1, 2.0])
def test_gmres_on_antisymmetric_plus_shift(shift, rng):
    n = 30
    k = Antisymmetric(n)
    theta = rng.standard_normal(k.nparams)
    A = k.op(theta) + shift * pylops.Identity(n)
    b = rng.standard_normal(n)
    x, info = spla.gmres(A, b, rtol=1e-11, atol=0, restart=n, maxiter=10)
    assert info == 0
    M = k.matrix(theta) + shift * np.eye(n)
    assert rel_residual(M, x, b) <= 1e-10
    np.testing.assert_allclose(x, np.linalg.solve(M, b), rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("n", [3, 25])
def test_gmres_on_mmatrix_plus_shift(n, rng):
    k = MMatrix(n)
    theta = rng.uniform(0, 1, k.nparams)
    A = k.op(theta) + 0.3 * pylops.Identity(n)
    b = rng.standard_normal(n)
    x, info = spla.gmres(A, b, rtol=1e-11, atol=0, restart=n, maxiter=10)
    assert info == 0
    M = k.matrix(theta) + 0.3 * np.eye(n)
    assert rel_residual(M, x, b) <= 1e-10
    np.testing.assert_allclose(x, np.linalg.solve(M, b), rtol=1e-7, atol=1e-9)
    # an M-matrix plus a positive shift has a nonnegative inverse
    assert (np.linalg.inv(M) >= -1e-12).all()


def test_gmres_with_a_float32_operator(rng):
    k = MMatrix(10)
    theta = rng.uniform(0, 1, k.nparams).astype(np.float32)
    A = k.op(theta) + pylops.Identity(10, dtype=np.float32)
    b = rng.standard_normal(10).astype(np.float32)
    x, info = spla.gmres(A, b, rtol=1e-5, atol=0)
    assert info == 0
    M = k.matrix(theta).astype(np.float64) + np.eye(10)
    assert rel_residual(M, x, b) <= 1e-4


@pytest.mark.parametrize(("rows", "cols"), [(20, 6), (7, 7)])
def test_lsqr_on_dense(rows, cols, rng):
    k = Dense(rows, cols)
    theta = rng.standard_normal(k.nparams)
    b = rng.standard_normal(rows)
    out = spla.lsqr(k.op(theta), b, atol=1e-14, btol=1e-14, iter_lim=500)
    x, istop = out[0], out[1]
    assert istop in (1, 2)  # converged: exact solution or least-squares solution
    M = k.matrix(theta)
    x_ref = np.linalg.lstsq(M, b, rcond=None)[0]
    np.testing.assert_allclose(x, x_ref, rtol=1e-8, atol=1e-10)
    # the least-squares residual is orthogonal to the range of M
    np.testing.assert_allclose(M.T @ (M @ x - b), 0, atol=1e-9 * np.linalg.norm(M) * np.linalg.norm(b))


def test_lsmr_on_underdetermined_dense_gives_minimum_norm(rng):
    k = Dense(5, 12)
    theta = rng.standard_normal(k.nparams)
    b = rng.standard_normal(5)
    x, istop = spla.lsmr(k.op(theta), b, atol=1e-14, btol=1e-14, maxiter=500)[:2]
    assert istop in (1, 2)
    np.testing.assert_allclose(x, np.linalg.pinv(k.matrix(theta)) @ b, rtol=1e-8, atol=1e-10)


def test_minres_on_symmetric_indefinite(rng):
    n = 15
    k = Dense(n, n)
    theta = rng.standard_normal(k.nparams)
    A = k.op(theta)
    S = A + A.H  # symmetric, indefinite
    b = rng.standard_normal(n)
    x, info = spla.minres(S, b, rtol=1e-12)
    assert info == 0
    M = k.matrix(theta)
    np.testing.assert_allclose(x, np.linalg.solve(M + M.T, b), rtol=1e-6, atol=1e-8)


def test_eigs_on_mmatrix(rng):
    n = 20
    k = MMatrix(n)
    theta = rng.uniform(0, 1, k.nparams)
    vals = spla.eigs(k.op(theta), k=4, which="LM", return_eigenvectors=False, tol=1e-12)
    ref = np.linalg.eigvals(k.matrix(theta))
    ref = ref[np.argsort(-np.abs(ref))][:4]
    np.testing.assert_allclose(np.sort_complex(vals), np.sort_complex(ref), rtol=1e-8)
    # Gershgorin for a zero-row-sum M-matrix: every eigenvalue has a nonnegative real part
    assert (ref.real >= -1e-10).all()


def test_eigs_on_antisymmetric_are_imaginary(rng):
    n = 16
    k = Antisymmetric(n)
    theta = rng.standard_normal(k.nparams)
    vals = spla.eigs(k.op(theta), k=4, which="LM", return_eigenvectors=False, tol=1e-12)
    ref = np.linalg.eigvals(k.matrix(theta))
    np.testing.assert_allclose(vals.real, 0, atol=1e-9 * np.abs(ref).max())
    np.testing.assert_allclose(np.sort(np.abs(vals)), np.sort(np.abs(ref))[-4:], rtol=1e-8)


def test_eigsh_on_positive_diagonal(rng):
    theta = rng.uniform(0.5, 3.0, 30)
    vals = spla.eigsh(Diagonal(30).op(theta), k=3, which="LA", return_eigenvectors=False)
    np.testing.assert_allclose(np.sort(vals), np.sort(theta)[-3:], rtol=1e-10)


@pytest.mark.parametrize(("rows", "cols"), [(15, 9), (9, 15)])
def test_svds_on_dense(rows, cols, rng):
    k = Dense(rows, cols)
    theta = rng.standard_normal(k.nparams)
    s = spla.svds(k.op(theta), k=3, return_singular_vectors=False, tol=1e-12)
    ref = np.linalg.svd(k.matrix(theta), compute_uv=False)
    np.testing.assert_allclose(np.sort(s), np.sort(ref)[-3:], rtol=1e-8)


def test_svds_on_softplus_mmatrix(rng):
    k = Softplus(MMatrix(12))
    phi = rng.standard_normal(k.nparams)
    s = spla.svds(k.op(phi), k=2, return_singular_vectors=False, tol=1e-12)
    ref = np.linalg.svd(k.matrix(phi), compute_uv=False)
    np.testing.assert_allclose(np.sort(s), np.sort(ref)[-2:], rtol=1e-8)


# ----------------------------------------------------------------------------------------
# pylops algebra


def test_pylops_blockdiag_vstack_sum_product_adjoint(dtype, rng):
    n = 4
    ks = [Dense(3, n), Diagonal(n), Antisymmetric(n), MMatrix(n)]
    thetas = [k.random_theta(rng, dtype) for k in ks]
    ops = [k.op(t) for k, t in zip(ks, thetas)]
    Ms = [k.matrix(t).astype(np.float64) for k, t in zip(ks, thetas)]
    D, G, A, Mm = ops
    Dd, Gd, Ad, Md = Ms
    cases = [
        (pylops.BlockDiag(ops), _blockdiag(Ms)),
        (pylops.VStack([G, A, Mm]), np.vstack([Gd, Ad, Md])),
        (pylops.HStack([G, A]), np.hstack([Gd, Ad])),
        (G + A - Mm, Gd + Ad - Md),
        (D @ A @ Mm, Dd @ Ad @ Md),
        (A.H, Ad.T),
        ((D @ Mm).H, (Dd @ Md).T),
        (2.5 * A + pylops.Identity(n, dtype=dtype), 2.5 * Ad + np.eye(n)),
        (A.H @ A, Ad.T @ Ad),
    ]
    tol = 100 * np.finfo(dtype).eps
    for op, ref in cases:
        assert op.shape == ref.shape
        got = op.todense()
        np.testing.assert_allclose(got, ref, rtol=0, atol=tol * (1 + np.abs(ref).max()) * n)
        x = rng.standard_normal((op.shape[1], 2)).astype(dtype)
        np.testing.assert_allclose(op @ x, ref @ x, rtol=0, atol=tol * (1 + np.abs(ref).max()) * n * np.abs(x).max())
        assert adjoint_test(op, rng=rng).passed


def test_antisymmetric_adjoint_is_negation(rng):
    k = Antisymmetric(5)
    theta = rng.standard_normal(k.nparams)
    A = k.op(theta)
    x = rng.standard_normal(5)
    np.testing.assert_allclose(A.H @ x, -(A @ x), rtol=0, atol=atol_for(-(A @ x)))
    np.testing.assert_allclose((A + A.H).todense(), 0, rtol=0, atol=atol_for(A.todense()))


def _blockdiag(Ms):
    rows = sum(M.shape[0] for M in Ms)
    cols = sum(M.shape[1] for M in Ms)
    out = np.zeros((rows, cols))
    r = c = 0
    for M in Ms:
        out[r : r + M.shape[0], c : c + M.shape[1]] = M
        r += M.shape[0]
        c += M.shape[1]
    return out
