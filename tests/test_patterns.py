"""Sparse and Banded: theta fills a sparsity pattern in column-major (vec) order.

Every family is checked against a matrix built entry by entry in the test (loops over the
columns, then the rows), against ``Q`` built the same way, with ``check_kernel`` in float32 and
float64, with hypothesis over random patterns and bands, for O(nnz) memory, and on bad input.
"""

from __future__ import annotations

import tracemalloc
from typing import NamedTuple

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import structops
from structops import Banded, Dense, Sparse
from structops.testing import check_kernel, default_rtol

from ._helpers import atol_for, examples

# ----------------------------------------------------------------------------------------
# references, written from the definitions with explicit loops


def sparse_ref(theta, mask):
    """theta fills the True entries of ``mask`` column by column, each column top to bottom."""
    rows, cols = mask.shape
    K = np.zeros((rows, cols))
    k = 0
    for j in range(cols):
        for i in range(rows):
            if mask[i, j]:
                K[i, j] = theta[k]
                k += 1
    assert k == len(theta)
    return K


def band_mask(n, lower, upper):
    mask = np.zeros((n, n), dtype=bool)
    for i in range(n):
        for j in range(n):
            mask[i, j] = -upper <= i - j <= lower
    return mask


def Q_ref(mask):
    """Q entry by entry: parameter k sits at row r_k + c_k * m of vec (column-major)."""
    rows, cols = mask.shape
    Q = np.zeros((rows * cols, int(mask.sum())))
    k = 0
    for j in range(cols):
        for i in range(rows):
            if mask[i, j]:
                Q[i + j * rows, k] = 1.0
                k += 1
    return Q


class PatternCase(NamedTuple):
    name: str
    pattern: object  # what the user passes
    mask: np.ndarray  # the pattern as a boolean array, for the reference


def _cases() -> list[PatternCase]:
    gen = np.random.default_rng(1234)
    m1 = gen.random((4, 5)) < 0.4
    m1[0, 0] = True
    m2 = gen.random((7, 3)) < 0.5
    m2[-1, -1] = True
    # duplicates (summed) and an explicitly stored zero (not part of the pattern)
    coo = sp.coo_array((np.array([1.0, 2.0, 0.0, 3.0, -3.0, 5.0]), (np.array([0, 0, 1, 2, 2, 3]), [1, 1, 0, 2, 2, 0])))
    coo_mask = np.zeros((4, 3), dtype=bool)
    coo_mask[0, 1] = coo_mask[3, 0] = True  # (2, 2) sums to zero
    return [
        PatternCase("bool 4x5", m1, m1),
        PatternCase("int 7x3", m2.astype(int), m2),
        PatternCase("csr 7x3", sp.csr_array(m2), m2),
        PatternCase("csc_matrix 4x5", sp.csc_matrix(m1.astype(float)), m1),
        PatternCase("coo duplicates", coo, coo_mask),
        PatternCase("1x1", np.ones((1, 1), dtype=bool), np.ones((1, 1), dtype=bool)),
        PatternCase("row 1x6", np.array([[1, 0, 1, 1, 0, 1]], dtype=bool), np.array([[1, 0, 1, 1, 0, 1]], dtype=bool)),
        PatternCase("full 3x2", np.ones((3, 2), dtype=bool), np.ones((3, 2), dtype=bool)),
        PatternCase(
            "tridiagonal 6", sp.diags_array([1.0, 1.0, 1.0], offsets=[-1, 0, 1], shape=(6, 6)), band_mask(6, 1, 1)
        ),
    ]


CASES = _cases()


@pytest.fixture(params=CASES, ids=lambda c: c.name)
def case(request) -> PatternCase:
    return request.param


# ----------------------------------------------------------------------------------------
# Sparse


def test_sparse_matrix_matches_entrywise_reference(case, dtype, rng, close):
    k = Sparse(case.pattern)
    assert k.nparams == case.mask.sum()
    assert k.shape == case.mask.shape and k.in_shape == (case.mask.shape[1],)
    theta = rng.standard_normal(k.nparams).astype(dtype)
    M = k.matrix(theta)
    assert M.dtype == dtype
    close(M, sparse_ref(theta.astype(np.float64), case.mask), dtype, 1)


def test_sparse_Q_matches_entrywise_reference(case):
    k = Sparse(case.pattern)
    assert sp.issparse(k.Q) and k.q is None
    np.testing.assert_array_equal(k.Q.toarray(), Q_ref(case.mask))


def test_sparse_positions_are_column_major(case):
    k = Sparse(case.pattern)
    lin = k.rows + k.cols * k.shape[0]
    assert np.all(np.diff(lin) > 0)
    np.testing.assert_array_equal(k.pattern.toarray(), case.mask)
    with pytest.raises(ValueError, match="read-only"):
        k.rows[0] = 1


@pytest.mark.parametrize("transpose", [False, True], ids=["K", "KT"])
def test_sparse_apply_matches_reference(case, dtype, transpose, rng, close):
    k = Sparse(case.pattern)
    theta = rng.standard_normal(k.nparams).astype(dtype)
    K = sparse_ref(theta.astype(np.float64), case.mask)
    X = rng.standard_normal((3, K.shape[0] if transpose else K.shape[1])).astype(dtype)
    Y = k.apply(theta, X, transpose=transpose)
    assert Y.dtype == dtype
    close(Y, X.astype(np.float64) @ (K if transpose else K.T), dtype, max(K.shape))


def test_sparse_gradient_is_sum_of_products_on_the_pattern(case, dtype, rng, close):
    # (J^T W)_k = sum_i w_{i, r_k} x_{i, c_k}, written with loops
    k = Sparse(case.pattern)
    m, N = k.shape
    theta = rng.standard_normal(k.nparams).astype(dtype)
    X = rng.standard_normal((4, N)).astype(dtype)
    W = rng.standard_normal((4, m)).astype(dtype)
    want = np.zeros((4, k.nparams))
    p = 0
    for j in range(N):
        for i in range(m):
            if case.mask[i, j]:
                for a in range(4):
                    want[a, p] = float(W[a, i]) * float(X[a, j])
                p += 1
    J = k.jac(theta, X)
    close(J.per_example(W), want, dtype, 4)
    close(J.rmatvec(W.ravel()), want.sum(0), dtype, 4)


def test_sparse_check_kernel(case, dtype):
    report = check_kernel(Sparse(case.pattern), dtype=dtype, rng=3)
    assert report.passed, str(report)


def test_sparse_does_not_modify_the_callers_pattern():
    coo = sp.coo_array((np.array([1.0, 1.0]), (np.array([0, 0]), np.array([1, 1]))), shape=(2, 2))
    k = Sparse(coo)
    assert k.nparams == 1
    assert coo.nnz == 2  # the duplicates are still there


def test_sparse_large_pattern_stays_O_nnz(rng):
    # a 20000 x 20000 pattern with three nonzeros per row: dense K would need 3.2 GB
    n = 20_000
    pattern = sp.diags_array([np.ones(n - 1), np.ones(n), np.ones(n - 1)], offsets=[-1, 0, 1], format="csr")
    X = rng.standard_normal((2, n))
    tracemalloc.start()
    k = Sparse(pattern)
    theta = np.ones(k.nparams)
    Y = k.apply(theta, X)
    g = k.jac(theta, X).rmatvec(np.ones(2 * n))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 50e6, f"peak {peak / 1e6:.1f} MB"
    want = X.copy()
    want[:, 1:] += X[:, :-1]
    want[:, :-1] += X[:, 1:]
    np.testing.assert_allclose(Y, want, rtol=0, atol=default_rtol(np.float64, 3) * 4 * np.abs(X).max())
    assert g.shape == (3 * n - 2,)


# ----------------------------------------------------------------------------------------
# Banded


BANDS = [(1, 0, 0), (2, 1, 0), (3, 1, 1), (5, 1, 1), (5, 2, 0), (5, 0, 3), (4, 3, 3), (6, 2, 1)]


@pytest.mark.parametrize(("n", "lower", "upper"), BANDS)
def test_banded_matrix_matches_entrywise_reference(n, lower, upper, dtype, rng, close):
    k = Banded(n, lower, upper)
    mask = band_mask(n, lower, upper)
    p = n * (lower + upper + 1) - lower * (lower + 1) // 2 - upper * (upper + 1) // 2
    assert k.nparams == mask.sum() == p
    theta = rng.standard_normal(p).astype(dtype)
    M = k.matrix(theta)
    assert M.dtype == dtype and M.shape == (n, n)
    close(M, sparse_ref(theta.astype(np.float64), mask), dtype, 1)
    np.testing.assert_array_equal(k.Q.toarray(), Q_ref(mask))


@pytest.mark.parametrize(("n", "lower", "upper"), BANDS)
def test_banded_check_kernel(n, lower, upper, dtype):
    report = check_kernel(Banded(n, lower, upper), dtype=dtype, rng=5)
    assert report.passed, str(report)


@pytest.mark.parametrize("n", [2, 3, 10])
def test_tridiagonal_has_3n_minus_2_parameters(n):
    assert Banded(n, 1, 1).nparams == 3 * n - 2


def test_banded_theta_order_is_column_major_over_the_band():
    k = Banded(4, 1, 2)
    M = k.matrix(np.arange(1.0, k.nparams + 1))
    np.testing.assert_array_equal(
        M,
        [
            [1, 3, 6, 0],
            [2, 4, 7, 10],
            [0, 5, 8, 11],
            [0, 0, 9, 12],
        ],
    )
    np.testing.assert_array_equal(k.rows, [0, 1, 0, 1, 2, 0, 1, 2, 3, 1, 2, 3])
    np.testing.assert_array_equal(k.cols, [0, 0, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3])


@pytest.mark.parametrize("n", [1, 3, 5])
def test_full_band_is_dense_and_empty_band_is_diagonal(n, rng):
    theta = rng.standard_normal(n * n)
    # both fill K in vec order
    np.testing.assert_array_equal(Banded(n, n - 1, n - 1).matrix(theta), Dense(n, n).matrix(theta))
    np.testing.assert_array_equal(Banded(n, 0, 0).matrix(theta[:n]), np.diag(theta[:n]))


def test_banded_transpose_exchanges_lower_and_upper(rng):
    k, kt = Banded(6, 2, 1), Banded(6, 1, 2)
    theta = rng.standard_normal(k.nparams)
    M = k.matrix(theta)
    # the transpose is banded with the bandwidths exchanged: the same family, theta reordered
    position = {(int(r), int(c)): i for i, (r, c) in enumerate(zip(k.rows, k.cols))}
    perm = [position[(int(c), int(r))] for r, c in zip(kt.rows, kt.cols)]
    np.testing.assert_array_equal(kt.matrix(theta[perm]), M.T)


def test_large_banded_never_densifies(rng):
    n = 20_000
    X = rng.standard_normal((2, n))
    tracemalloc.start()
    k = Banded(n, 1, 1)
    theta = np.tile([-1.0, 2.0, -1.0], n)[1 : 3 * n - 1]  # column j: (K[j-1, j], K[j, j], K[j+1, j])
    Y = k.apply(theta, X)
    g = k.jac(theta, X).rmatvec(np.ones(2 * n))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 50e6, f"peak {peak / 1e6:.1f} MB"
    want = 2 * X
    want[:, 1:] -= X[:, :-1]
    want[:, :-1] -= X[:, 1:]
    np.testing.assert_allclose(Y, want, rtol=0, atol=default_rtol(np.float64, 3) * 4 * np.abs(X).max())
    # d/dK[r, c] of sum(W * Y) with W = 1 is sum_i x_{i, c}
    np.testing.assert_allclose(g, X.sum(0)[k.cols], rtol=0, atol=atol_for(X.sum(0)[k.cols]))


# ----------------------------------------------------------------------------------------
# properties


@settings(max_examples=examples(20), deadline=None)
@given(
    rows=st.integers(1, 6),
    cols=st.integers(1, 6),
    seed=st.integers(0, 2**16),
    density=st.floats(0.05, 1.0),
    fmt=st.sampled_from(["dense", "csr", "coo"]),
    dtype=st.sampled_from([np.float32, np.float64]),
)
def test_property_random_patterns(rows, cols, seed, density, fmt, dtype):
    gen = np.random.default_rng(seed)
    mask = gen.random((rows, cols)) < density
    mask[gen.integers(rows), gen.integers(cols)] = True
    pattern = {"dense": mask, "csr": sp.csr_array(mask), "coo": sp.coo_array(mask)}[fmt]
    k = Sparse(pattern)
    theta = gen.standard_normal(k.nparams).astype(dtype)
    np.testing.assert_allclose(k.matrix(theta), sparse_ref(theta.astype(np.float64), mask), rtol=0, atol=0)
    report = check_kernel(k, dtype=dtype, rng=seed)
    assert report.passed, str(report)


@settings(max_examples=examples(20), deadline=None)
@given(data=st.data(), n=st.integers(1, 8), dtype=st.sampled_from([np.float32, np.float64]))
def test_property_random_bands(data, n, dtype):
    lower = data.draw(st.integers(0, n - 1))
    upper = data.draw(st.integers(0, n - 1))
    k = Banded(n, lower, upper)
    mask = band_mask(n, lower, upper)
    theta = np.arange(1, k.nparams + 1, dtype=dtype)
    np.testing.assert_array_equal(k.matrix(theta), sparse_ref(theta, mask))
    assert k.Q.nnz == k.nparams
    report = check_kernel(k, dtype=dtype, rng=n)
    assert report.passed, str(report)


# ----------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize(
    ("pattern", "error", "match"),
    [
        (np.ones(4, dtype=bool), ValueError, r"`pattern` must be 2-D .* shape \(4,\)"),
        (np.ones((2, 2, 2), dtype=bool), ValueError, r"`pattern` must be 2-D .* shape \(2, 2, 2\)"),
        (sp.coo_array(np.ones(3)), ValueError, r"`pattern` must be 2-D"),
        (np.ones((0, 3), dtype=bool), ValueError, r"`pattern` must not be empty.*\(0, 3\)"),
        (np.zeros((2, 3), dtype=bool), ValueError, r"at least one nonzero.*\(2, 3\)"),
        (sp.csr_array((3, 3)), ValueError, r"at least one nonzero"),
        (np.array([["a", "b"]]), TypeError, r"`pattern` must be a boolean .* got dtype <U1"),
        (np.array([[1.0, np.nan]]), ValueError, r"`pattern` must be finite"),
        (sp.csr_array(np.array([[1.0 + 1j]])), TypeError, r"`pattern` must be a boolean or real sparse"),
    ],
)
def test_sparse_bad_pattern(pattern, error, match):
    with pytest.raises(error, match=match):
        Sparse(pattern)


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        ((4, -1, 0), ValueError, r"`lower` must lie in \[0, 3\], got -1"),
        ((4, 4, 0), ValueError, r"`lower` must lie in \[0, 3\], got 4"),
        ((4, 0, 7), ValueError, r"`upper` must lie in \[0, 3\], got 7"),
        ((4, 1.0, 1), TypeError, r"`lower` must be an integer in \[0, 3\], got 1.0"),
        ((4, 1, True), TypeError, r"`upper` must be an integer .* got True"),
        ((4, 1, "1"), TypeError, r"`upper` must be an integer .* got '1'"),
        ((0, 0, 0), ValueError, r"`n` must be an integer >= 1, got 0"),
        ((2.5, 0, 0), TypeError, r"`n` must be an integer, got 2.5"),
    ],
)
def test_banded_bad_input(args, error, match):
    with pytest.raises(error, match=match):
        Banded(*args)


def test_exported_from_the_package():
    assert structops.Sparse is Sparse and structops.Banded is Banded
    assert {"Sparse", "Banded"} <= set(structops.__all__)
    assert repr(Banded(4, 1, 2)) == "Banded(4, 1, 2)"
    assert repr(Sparse(np.eye(3, dtype=bool))) == "Sparse(shape=(3, 3), nnz=3)"
