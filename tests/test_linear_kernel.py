"""LinearKernel: the generic affine model vec(K) = Q θ + q for user-defined sparsity patterns."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp

from structops import LinearKernel
from structops.testing import adjoint_test, check_kernel, default_rtol, taylor_test

from ._helpers import atol_for


def mat(vec, rows, cols):
    """The lecture notes' mat: the inverse of the column-stacking vec, written with loops."""
    K = np.zeros((rows, cols))
    for j in range(cols):
        for i in range(rows):
            K[i, j] = vec[i + j * rows]
    return K


def random_Q(rng, rows, cols, p, density=0.4):
    return sp.csr_array(sp.random(rows * cols, p, density=density, random_state=rng, data_rvs=rng.standard_normal))


@pytest.mark.parametrize("shape", [(1, 1), (2, 5), (5, 2), (4, 4)])
@pytest.mark.parametrize("with_q", [False, True], ids=["q=None", "q"])
def test_matrix_is_mat_of_Q_theta_plus_q(shape, with_q, dtype, rng, close):
    rows, cols = shape
    Q = random_Q(rng, rows, cols, 4)
    q = rng.standard_normal(rows * cols) if with_q else None
    k = LinearKernel(Q, shape, q=q)
    theta = rng.standard_normal(4).astype(dtype)
    want = mat(Q.toarray() @ theta.astype(np.float64) + (0 if q is None else q), rows, cols)
    M = k.matrix(theta)
    assert M.dtype == dtype and M.shape == shape
    close(M, want, dtype, 4)


@pytest.mark.parametrize("fmt", ["csr", "csc", "coo", "dense", "list"])
def test_Q_formats_give_the_same_family(fmt, rng):
    Qd = random_Q(rng, 3, 3, 2).toarray()
    Q = {
        "csr": sp.csr_array(Qd),
        "csc": sp.csc_matrix(Qd),
        "coo": sp.coo_array(Qd),
        "dense": Qd,
        "list": Qd.tolist(),
    }[fmt]
    k = LinearKernel(Q, (3, 3))
    theta = np.array([0.7, -1.3])
    np.testing.assert_array_equal(k.Q.toarray(), Qd)
    np.testing.assert_allclose(k.matrix(theta), mat(Qd @ theta, 3, 3), rtol=0, atol=atol_for(mat(Qd @ theta, 3, 3)))


def test_integer_Q_and_q_are_accepted():
    Q = np.array([[1, 0], [0, 1], [0, 1], [1, 0]])
    k = LinearKernel(Q, (2, 2), q=[0, 1, 0, 0])
    np.testing.assert_array_equal(k.matrix([2.0, 3.0]), [[2.0, 3.0], [4.0, 2.0]])


def test_duplicate_entries_are_summed():
    # coo with a repeated (row, col) means the sum, as in scipy
    Q = sp.coo_array((np.array([1.0, 2.0, 5.0]), (np.array([0, 0, 3]), np.array([0, 0, 0]))), shape=(4, 1))
    k = LinearKernel(Q, (2, 2))
    np.testing.assert_array_equal(k.matrix([1.0]), [[3.0, 0.0], [0.0, 5.0]])


def test_sparse_q_and_offset_only_entries(rng):
    # q is nonzero where Q has an empty row: those entries are constant
    Q = sp.csr_array(np.array([[1.0], [0.0], [0.0], [2.0]]))
    q = sp.csr_array(np.array([[0.0, 7.0, 0.0, 0.0]]))
    k = LinearKernel(Q, (2, 2), q=q)
    np.testing.assert_array_equal(k.matrix([1.5]), [[1.5, 0.0], [7.0, 3.0]])
    np.testing.assert_array_equal(k.q, [0.0, 7.0, 0.0, 0.0])
    # the Jacobian ignores the offset
    X = rng.standard_normal((3, 2))
    J = k.jac(np.array([1.5]), X)
    np.testing.assert_allclose(J.matvec(np.ones(1)), (X @ np.array([[1.0, 0.0], [0.0, 2.0]]).T).ravel())


def test_zero_parameters_offset_only():
    k = LinearKernel(sp.csr_array((4, 0)), (2, 2), q=np.arange(4.0))
    assert k.nparams == 0
    np.testing.assert_array_equal(k.matrix(np.zeros(0)), [[0.0, 2.0], [1.0, 3.0]])
    J = k.jac(np.zeros(0), np.ones((2, 2)))
    assert J.shape == (4, 0)
    assert J.per_example(np.ones(4)).shape == (2, 0)
    assert check_kernel(k).passed


@pytest.mark.parametrize("transpose", [False, True], ids=["K", "KT"])
def test_jacobian_follows_the_seed_formulas(transpose, dtype, rng, close):
    # J v = mat(Q v) x_i ;  J^T w = Q^T vec(sum_i w_i x_i^T)   (transposed: mat(Qv)^T x_i, Q^T vec(sum x_i w_i^T))
    rows, cols, p, n = 3, 4, 5, 6
    Q = random_Q(rng, rows, cols, p)
    q = rng.standard_normal(rows * cols)
    k = LinearKernel(Q, (rows, cols), q=q)
    theta = rng.standard_normal(p).astype(dtype)
    X = rng.standard_normal((n, rows if transpose else cols)).astype(dtype)
    J = k.jac(theta, X, transpose=transpose)
    v = rng.standard_normal(p).astype(dtype)
    Kv = mat(Q.toarray() @ v.astype(np.float64), rows, cols)
    Jv = X.astype(np.float64) @ (Kv if transpose else Kv.T)
    close(J.matvec(v), Jv.ravel(), dtype, p)
    W = rng.standard_normal((n, cols if transpose else rows)).astype(dtype)
    G = np.zeros((rows, cols))
    for i in range(n):
        G += np.outer(X[i], W[i]) if transpose else np.outer(W[i], X[i])
    close(J.rmatvec(W.ravel()), Q.T @ G.ravel(order="F"), dtype, n * rows * cols)
    assert adjoint_test(J, rng=rng).passed
    res = taylor_test(lambda t: k.apply(t, X, transpose=transpose), J, theta, v)
    assert res.regime == "roundoff", str(res)


@pytest.mark.parametrize("density", [0.05, 0.9], ids=["sparse", "dense-storage"])
def test_check_kernel_on_user_patterns(density, dtype, rng):
    Q = random_Q(rng, 6, 5, 7, density=density)
    k = LinearKernel(Q, (6, 5), q=rng.standard_normal(30))
    report = check_kernel(k, dtype=dtype, rng=rng)
    assert report.passed, str(report)


def test_large_banded_pattern_never_densifies(rng):
    # a 20000 x 20000 tridiagonal Toeplitz family: dense K would need 3.2 GB
    n = 20_000
    i = np.arange(n)
    r = np.concatenate([i[1:], i, i[:-1]])
    c = np.concatenate([i[:-1], i, i[1:]])
    par = np.concatenate([np.zeros(n - 1, int), np.ones(n, int), np.full(n - 1, 2)])
    # COO (or CSC) holds O(nnz) memory; the family must not convert it to a row-compressed form
    Q = sp.coo_array((np.ones(r.size), (r + c * n, par)), shape=(n * n, 3))
    tracemalloc.start()
    k = LinearKernel(Q, (n, n))
    theta = np.array([-1.0, 2.0, -1.0])
    X = rng.standard_normal((2, n))
    Y = k.apply(theta, X)
    g = k.jac(theta, X).rmatvec(np.ones(2 * n))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 50e6, f"peak {peak / 1e6:.1f} MB"
    want = 2 * X
    want[:, 1:] -= X[:, :-1]
    want[:, :-1] -= X[:, 1:]
    np.testing.assert_allclose(Y, want, rtol=0, atol=default_rtol(np.float64, 3) * 4 * np.abs(X).max())
    # gradient: sum over examples of sum_l w_{i, r_l} x_{i, c_l} per diagonal
    np.testing.assert_allclose(g, [X[:, :-1].sum(), X.sum(), X[:, 1:].sum()], rtol=1e-10)


def test_Q_and_q_are_returned_as_given(rng):
    Q = random_Q(rng, 2, 3, 4)
    q = rng.standard_normal(6)
    k = LinearKernel(Q, (2, 3), q=q)
    np.testing.assert_array_equal(k.Q.toarray(), Q.toarray())
    np.testing.assert_array_equal(k.q, q)
    assert k.shape == (2, 3) and k.in_shape == (3,) and k.out_shape == (2,) and k.nparams == 4
