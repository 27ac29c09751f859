"""The lecture notes' simple families against references built entry by entry from their definitions.

Every family (Dense, Diagonal, Antisymmetric, MMatrix, a user-pattern LinearKernel with and
without offset, Softplus(MMatrix)) is checked for: dense agreement, ``Q``/``q`` agreement,
``apply`` in both directions, ``op`` products and adjoint, ``jac`` against a reference
Jacobian, dot tests, Taylor tests, per-example gradients, dtypes and empty batches.
"""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from structops import Antisymmetric, Dense, Diagonal, LinearKernel, MMatrix, Softplus
from structops.testing import adjoint_test, check_kernel, default_rtol, taylor_test

from ._helpers import atol_for, examples

# ----------------------------------------------------------------------------------------
# references, written from the definitions with explicit loops (never calling the library)


def dense_ref(theta, rows, cols):
    K = np.zeros((rows, cols))
    for j in range(cols):
        for i in range(rows):
            K[i, j] = theta[i + j * rows]  # vec stacks the columns
    return K


def diagonal_ref(theta, n):
    K = np.zeros((n, n))
    for i in range(n):
        K[i, i] = theta[i]
    return K


def antisymmetric_ref(theta, n):
    K = np.zeros((n, n))
    k = 0
    for i in range(n):  # strict upper triangle, row by row
        for j in range(i + 1, n):
            K[i, j] = theta[k]
            K[j, i] = -theta[k]
            k += 1
    assert k == len(theta)
    return K


def mmatrix_ref(theta, n):
    K = np.zeros((n, n))
    k = 0
    for i in range(n):  # row by row, columns in order, skipping the diagonal
        for j in range(n):
            if j == i:
                continue
            K[i, j] = -theta[k]
            K[i, i] += theta[k]
            k += 1
    assert k == len(theta)
    return K


def linear_ref(theta, Q, q, rows, cols):
    Qd = Q.toarray() if sp.issparse(Q) else np.asarray(Q)
    K = np.zeros((rows, cols))
    for i in range(rows):
        for j in range(cols):
            K[i, j] = sum(Qd[i + j * rows, k] * theta[k] for k in range(Qd.shape[1]))
            if q is not None:
                K[i, j] += q[i + j * rows]
    return K


def softplus_ref(phi):
    return np.array([np.log1p(np.exp(t)) for t in phi])


def sigmoid_ref(phi):
    return np.array([1.0 / (1.0 + np.exp(-t)) for t in phi])


def user_pattern(rows, cols, p, seed=7):
    """A sparse Q with a user-defined pattern: some parameters shared by several entries."""
    gen = np.random.default_rng(seed)
    Q = sp.random(rows * cols, p, density=0.35, random_state=gen, data_rvs=gen.standard_normal)
    return sp.csr_array(Q)


class Case(NamedTuple):
    name: str
    make: Callable[[], object]
    ref: Callable[[np.ndarray], np.ndarray]  # theta (float64) -> dense K
    linear: bool = True


def _cases() -> list[Case]:
    cases = []
    for r, c in [(1, 1), (1, 4), (4, 1), (3, 5), (4, 4)]:
        cases.append(Case(f"Dense({r},{c})", lambda r=r, c=c: Dense(r, c), lambda t, r=r, c=c: dense_ref(t, r, c)))
    for n in (1, 2, 5):
        cases.append(Case(f"Diagonal({n})", lambda n=n: Diagonal(n), lambda t, n=n: diagonal_ref(t, n)))
    for n in (1, 2, 3, 6):
        cases.append(Case(f"Antisymmetric({n})", lambda n=n: Antisymmetric(n), lambda t, n=n: antisymmetric_ref(t, n)))
    for n in (1, 2, 3, 5):
        cases.append(Case(f"MMatrix({n})", lambda n=n: MMatrix(n), lambda t, n=n: mmatrix_ref(t, n)))
    Q1 = user_pattern(3, 4, 5)
    cases.append(Case("LinearKernel(3x4)", lambda: LinearKernel(Q1, (3, 4)), lambda t: linear_ref(t, Q1, None, 3, 4)))
    Q2 = user_pattern(4, 4, 3, seed=11)
    q2 = np.random.default_rng(3).standard_normal(16)
    q2[::3] = 0.0
    cases.append(
        Case("LinearKernel(4x4, q)", lambda: LinearKernel(Q2, (4, 4), q=q2), lambda t: linear_ref(t, Q2, q2, 4, 4))
    )
    Q3 = user_pattern(1, 3, 2, seed=5)
    q3 = np.array([0.5, 0.0, -1.0])
    cases.append(
        Case("LinearKernel(1x3, q)", lambda: LinearKernel(Q3, (1, 3), q=q3), lambda t: linear_ref(t, Q3, q3, 1, 3))
    )
    for n in (1, 3):
        cases.append(
            Case(
                f"Softplus(MMatrix({n}))",
                lambda n=n: Softplus(MMatrix(n)),
                lambda t, n=n: mmatrix_ref(softplus_ref(t), n),
                linear=False,
            )
        )
    return cases


CASES = _cases()
LINEAR_CASES = [c for c in CASES if c.linear]
BATCHES = (0, 1, 4)


def case_ids(c: Case) -> str:
    return c.name


@pytest.fixture(params=CASES, ids=case_ids)
def case(request) -> Case:
    return request.param


def reference_Q(case: Case, p: int) -> tuple[np.ndarray, np.ndarray]:
    """Q and q entry by entry: column k is vec(K(e_k)) - vec(K(0)) of the reference."""
    K0 = case.ref(np.zeros(p))
    rows, cols = K0.shape
    Q = np.zeros((rows * cols, p))
    q = np.zeros(rows * cols)
    for j in range(cols):
        for i in range(rows):
            q[i + j * rows] = K0[i, j]
    for k in range(p):
        e = np.zeros(p)
        e[k] = 1.0
        Kk = case.ref(e)
        for j in range(cols):
            for i in range(rows):
                Q[i + j * rows, k] = Kk[i, j] - K0[i, j]
    return Q, q


def reference_jacobian(case: Case, theta: np.ndarray, X: np.ndarray, transpose: bool) -> np.ndarray:
    """Jacobian of theta -> (K x_i)_i (or (K^T x_i)_i), flattened C-order, from the reference."""
    p = theta.size
    theta = theta.astype(np.float64)
    X = X.astype(np.float64)
    cols = []
    for k in range(p):
        if case.linear:
            Q, _ = reference_Q(case, p)
            dK = np.zeros(case.ref(np.zeros(p)).shape)
            rows_, cols_ = dK.shape
            for j in range(cols_):
                for i in range(rows_):
                    dK[i, j] = Q[i + j * rows_, k]
        else:  # Softplus(MMatrix): chain rule through the entrywise softplus
            e = np.zeros(p)
            e[k] = 1.0
            n = case.ref(np.zeros(p)).shape[0]
            dK = mmatrix_ref(e, n) * sigmoid_ref(theta)[k]
        out = X @ dK if transpose else X @ dK.T
        cols.append(out.ravel())
    K0 = case.ref(np.zeros(p))
    nout = X.shape[0] * (K0.shape[1] if transpose else K0.shape[0])
    return np.stack(cols, 1) if cols else np.zeros((nout, 0))


def draw_theta(kernel, rng, dtype):
    return kernel.random_theta(rng, dtype)


# ----------------------------------------------------------------------------------------
# dense agreement, Q, apply, op


def test_matrix_matches_entrywise_reference(case, dtype, rng, close):
    k = case.make()
    theta = draw_theta(k, rng, dtype)
    M = k.matrix(theta)
    assert M.dtype == dtype
    assert M.shape == k.shape
    close(M, case.ref(theta.astype(np.float64)), dtype, k.nparams)


@pytest.mark.parametrize("case", LINEAR_CASES, ids=case_ids)
def test_Q_and_q_match_entrywise_reference(case):
    k = case.make()
    Qref, qref = reference_Q(case, k.nparams)
    assert sp.issparse(k.Q)
    assert k.Q.shape == (k.shape[0] * k.shape[1], k.nparams)
    # exact for the built-in families; the reference's K(e_k) - K(0) rounds once with an offset
    atol = 4 * np.finfo(np.float64).eps * (1 + np.abs(Qref).max(initial=0))
    np.testing.assert_allclose(k.Q.toarray(), Qref, rtol=0, atol=atol)
    q = np.zeros(k.shape[0] * k.shape[1]) if k.q is None else np.asarray(k.q)
    np.testing.assert_array_equal(q, qref)


@pytest.mark.parametrize("case", LINEAR_CASES, ids=case_ids)
def test_vec_of_matrix_is_Q_theta_plus_q(case, rng):
    k = case.make()
    theta = draw_theta(k, rng, np.float64)
    vec = k.matrix(theta).ravel(order="F")
    q = 0 if k.q is None else k.q
    np.testing.assert_allclose(vec, k.Q @ theta + q, rtol=0, atol=default_rtol(np.float64, k.nparams))


def test_nonlinear_family_has_no_Q(rng):
    with pytest.raises(TypeError, match="not affine"):
        _ = Softplus(MMatrix(3)).Q


@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("transpose", [False, True], ids=["K", "KT"])
def test_apply_matches_reference(case, dtype, n, transpose, rng, close):
    k = case.make()
    theta = draw_theta(k, rng, dtype)
    K = case.ref(theta.astype(np.float64))
    in_size = K.shape[0] if transpose else K.shape[1]
    X = rng.standard_normal((n, in_size)).astype(dtype)
    Y = k.apply(theta, X, transpose=transpose)
    expected = X.astype(np.float64) @ (K if transpose else K.T)
    assert Y.dtype == dtype
    assert Y.shape == expected.shape == (n, K.shape[1] if transpose else K.shape[0])
    close(Y, expected, dtype, in_size)


def test_op_products_match_reference(case, dtype, rng, close):
    k = case.make()
    theta = draw_theta(k, rng, dtype)
    K = case.ref(theta.astype(np.float64))
    m, N = K.shape
    op = k.op(theta)
    assert op.shape == (m, N) and op.dtype == dtype
    x, y = rng.standard_normal(N).astype(dtype), rng.standard_normal(m).astype(dtype)
    X, Y = rng.standard_normal((N, 3)).astype(dtype), rng.standard_normal((m, 2)).astype(dtype)
    size = max(m, N)
    for got, want in [
        (op.matvec(x), K @ x),
        (op @ x, K @ x),
        (op.matmat(X), K @ X),
        (op @ X, K @ X),
        (op.rmatvec(y), K.T @ y),
        (op.rmatmat(Y), K.T @ Y),
        (op.H @ y, K.T @ y),
        (op.H.matmat(Y), K.T @ Y),
        (op.T @ y, K.T @ y),
        (op.H.H @ x, K @ x),
    ]:
        assert np.asarray(got).dtype == dtype
        close(got, want, dtype, size)
    np.testing.assert_allclose(op.todense(), K, rtol=0, atol=default_rtol(dtype, size) * (1 + np.abs(K).max()))
    # complex vectors are split into real and imaginary parts
    z = (rng.standard_normal(N) + 1j * rng.standard_normal(N)).astype(np.complex128)
    close(op.matvec(z), K @ z, dtype, size)


def test_op_adjoint(case, dtype, rng):
    k = case.make()
    op = k.op(draw_theta(k, rng, dtype))
    assert adjoint_test(op, rng=rng).passed
    assert adjoint_test(op.H, rng=rng).passed


# ----------------------------------------------------------------------------------------
# the Jacobian


@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("transpose", [False, True], ids=["K", "KT"])
def test_jac_matches_reference(case, dtype, n, transpose, rng, close):
    k = case.make()
    theta = draw_theta(k, rng, dtype)
    m, N = k.shape
    X = rng.standard_normal((n, m if transpose else N)).astype(dtype)
    J = k.jac(theta, X, transpose=transpose)
    out = N if transpose else m
    assert J.shape == (n * out, k.nparams)
    Jref = reference_jacobian(case, theta, X, transpose).reshape(n * out, k.nparams)
    Jd = np.zeros((n * out, k.nparams), dtype=dtype)
    for j, e in enumerate(np.eye(k.nparams, dtype=dtype)):
        Jd[:, j] = J.matvec(e)
    close(Jd, Jref, dtype, k.nparams)
    w = rng.standard_normal(n * out).astype(dtype)
    g = J.rmatvec(w)
    assert g.shape == (k.nparams,) and g.dtype == dtype
    close(g, Jref.T @ w.astype(np.float64), dtype, n * out)
    # pylops reshapes J @ v to (n, *out_shape) and J.H @ W takes that shape back
    if k.nparams:
        v = rng.standard_normal(k.nparams).astype(dtype)
        np.testing.assert_array_equal(np.asarray(J @ v).ravel(), J.matvec(v))
        np.testing.assert_array_equal(J.H @ w.reshape(n, out), g)


@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("transpose", [False, True], ids=["K", "KT"])
def test_jac_adjoint(case, dtype, n, transpose, rng):
    k = case.make()
    theta = draw_theta(k, rng, dtype)
    X = rng.standard_normal((n, k.shape[0] if transpose else k.shape[1])).astype(dtype)
    J = k.jac(theta, X, transpose=transpose)
    assert adjoint_test(J, rng=rng).passed
    assert adjoint_test(J.H, rng=rng).passed


@pytest.mark.parametrize("transpose", [False, True], ids=["K", "KT"])
def test_jac_taylor(case, dtype, transpose, rng):
    k = case.make()
    if not k.nparams:
        pytest.skip("no parameters")
    theta = draw_theta(k, rng, dtype)
    X = rng.standard_normal((3, k.shape[0] if transpose else k.shape[1])).astype(dtype)
    J = k.jac(theta, X, transpose=transpose)
    v = (draw_theta(k, rng, dtype) - draw_theta(k, rng, dtype)).astype(dtype)
    res = taylor_test(lambda t: k.apply(t, X, transpose=transpose), J, theta, v, h0=0.25, nsteps=10)
    assert res.passed, str(res)
    # first order: E0 falls as O(h) wherever it is above round-off
    informative = (res.E0[:-1] > res.floor[:-1]) & (res.E0[1:] > res.floor[1:])
    assert informative.sum() >= 3
    np.testing.assert_allclose(res.order0[informative], 1.0, atol=0.2 if case.linear else 0.35)
    if case.linear:
        assert res.regime == "roundoff", str(res)
    elif dtype == np.float64:
        assert res.regime == "quadratic", str(res)
        informative1 = (res.E1[:-1] > res.floor[:-1]) & (res.E1[1:] > res.floor[1:])
        assert np.median(res.order1[informative1][-3:]) == pytest.approx(2.0, abs=0.25)


@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("transpose", [False, True], ids=["K", "KT"])
def test_per_example_gradients_sum_to_reduced(case, dtype, n, transpose, rng, close):
    k = case.make()
    theta = draw_theta(k, rng, dtype)
    out, inp = (k.shape[1], k.shape[0]) if transpose else (k.shape[0], k.shape[1])
    X = rng.standard_normal((n, inp)).astype(dtype)
    W = rng.standard_normal((n, out)).astype(dtype)
    J = k.jac(theta, X, transpose=transpose)
    per = J.per_example(W)
    assert per.shape == (n, k.nparams)
    assert per.dtype == dtype
    close(per.sum(axis=0), J.rmatvec(W.ravel()), dtype, max(n, 1) * out)
    # row i is the gradient of example i alone
    for i in range(n):
        Ji = k.jac(theta, X[i : i + 1], transpose=transpose)
        close(per[i], Ji.rmatvec(W[i]), dtype, out)
    # same result from a flat w
    np.testing.assert_array_equal(J.per_example(W.ravel()), per)


def test_float32_stays_float32_everywhere(case, rng):
    k = case.make()
    theta = draw_theta(k, rng, np.float32)
    X = rng.standard_normal((2, k.shape[1])).astype(np.float32)
    J = k.jac(theta, X)
    outputs = [
        k.matrix(theta),
        k.apply(theta, X),
        k.apply(theta, rng.standard_normal((2, k.shape[0])).astype(np.float32), transpose=True),
        k.op(theta) @ X[0],
        k.op(theta).H @ np.ones(k.shape[0], np.float32),
        J.matvec(np.ones(k.nparams, np.float32)),
        J.rmatvec(np.ones(J.shape[0], np.float32)),
        J.per_example(np.ones(J.shape[0], np.float32)),
    ]
    assert [o.dtype for o in outputs] == [np.dtype(np.float32)] * len(outputs)


def test_empty_batch_shapes(case, dtype, rng):
    k = case.make()
    theta = draw_theta(k, rng, dtype)
    X = np.zeros((0, k.shape[1]), dtype=dtype)
    assert k.apply(theta, X).shape == (0, k.shape[0])
    assert k.apply(theta, np.zeros((0, k.shape[0]), dtype), transpose=True).shape == (0, k.shape[1])
    J = k.jac(theta, X)
    assert J.shape == (0, k.nparams)
    g = J.rmatvec(np.zeros(0, dtype))
    assert g.shape == (k.nparams,) and g.dtype == dtype and not g.any()
    assert J.per_example(np.zeros(0, dtype)).shape == (0, k.nparams)
    assert J.matvec(np.ones(k.nparams, dtype)).shape == (0,)


def test_check_kernel_passes(case, dtype):
    for nexamples in (0, 1, 3):
        report = check_kernel(case.make(), dtype=dtype, nexamples=nexamples, rng=1)
        assert report.passed, str(report)
        assert report.dtype == np.dtype(dtype).name


# ----------------------------------------------------------------------------------------
# the lecture notes' examples


def test_seed_mmatrix_3x3_and_its_Q():
    t1, t2, t3, t4, t5, t6 = theta = np.array([0.3, 1.7, 2.0, 0.1, 4.0, 0.5])
    seed_K = np.array(
        [
            [t1 + t2, -t1, -t2],
            [-t3, t3 + t4, -t4],
            [-t5, -t6, t5 + t6],
        ]
    )
    k = MMatrix(3)
    assert k.nparams == 6
    np.testing.assert_array_equal(k.matrix(theta), seed_K)
    seed_Q = np.array(
        [
            [1, 1, 0, 0, 0, 0],
            [0, 0, -1, 0, 0, 0],
            [0, 0, 0, 0, -1, 0],
            [-1, 0, 0, 0, 0, 0],
            [0, 0, 1, 1, 0, 0],
            [0, 0, 0, 0, 0, -1],
            [0, -1, 0, 0, 0, 0],
            [0, 0, 0, -1, 0, 0],
            [0, 0, 0, 0, 1, 1],
        ]
    )
    assert k.Q.shape == (9, 6)
    np.testing.assert_array_equal(k.Q.toarray(), seed_Q)
    assert k.q is None
    # the lecture notes' derivative formulas: J v = mat(Q v), J^T w = Q^T w
    v, w = np.arange(1.0, 7.0), np.arange(9.0)
    x = np.array([1.0, -2.0, 0.5])
    J = k.jac(theta, x[None, :])
    np.testing.assert_allclose(J.matvec(v), (seed_Q @ v).reshape(3, 3, order="F") @ x)
    np.testing.assert_allclose(J.rmatvec(w[:3]), seed_Q.T @ np.outer(w[:3], x).ravel(order="F"))


def test_seed_antisymmetric_3x3():
    t1, t2, t3 = theta = np.array([1.5, -2.0, 0.25])
    seed_K = np.array([[0, t1, t2], [-t1, 0, t3], [-t2, -t3, 0]])
    k = Antisymmetric(3)
    assert k.nparams == 3
    np.testing.assert_array_equal(k.matrix(theta), seed_K)


def test_seed_mnist_dense_builds_nothing():
    tracemalloc.start()
    start = time.perf_counter()
    k = Dense(784, 784)
    p = k.nparams
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert p == 614656 == 28**2 * 28**2
    assert k.shape == (784, 784)
    assert "Q" not in vars(k) and "_pattern" not in vars(k)
    assert peak < 100_000, f"construction allocated {peak} bytes"
    assert elapsed < 0.1


def test_dense_Q_is_identity():
    Q = Dense(3, 2).Q
    assert sp.issparse(Q)
    np.testing.assert_array_equal(Q.toarray(), np.eye(6))


def test_dense_apply_large_without_building_Q(rng):
    k = Dense(784, 784)
    theta = rng.standard_normal(k.nparams).astype(np.float32)
    X = rng.standard_normal((2, 784)).astype(np.float32)
    Y = k.apply(theta, X)
    np.testing.assert_allclose(Y, X @ theta.reshape(784, 784, order="F").T, rtol=1e-4, atol=1e-3)
    assert "Q" not in vars(k)


# ----------------------------------------------------------------------------------------
# structural properties


@pytest.mark.parametrize("n", [2, 3, 8, 17])
def test_antisymmetric_eigenvalues_are_imaginary(n, dtype, rng):
    k = Antisymmetric(n)
    K = k.matrix(draw_theta(k, rng, dtype))
    np.testing.assert_array_equal(K, -K.T)
    lam = np.linalg.eigvals(K.astype(np.float64))
    assert np.abs(lam.real).max() <= default_rtol(dtype, n) * np.linalg.norm(K, 2)
    assert np.abs(lam.imag).max() > 0


@pytest.mark.parametrize("n", [1, 2, 3, 8])
def test_mmatrix_rows_sum_to_zero_and_offdiagonals_nonpositive(n, dtype, rng):
    k = MMatrix(n)
    theta = rng.exponential(size=k.nparams).astype(dtype)
    theta[::3] = 0  # zero couplings are allowed
    K = k.matrix(theta).astype(np.float64)
    np.testing.assert_allclose(K.sum(axis=1), 0, atol=default_rtol(dtype, n) * (1 + np.abs(K).max()))
    off = K[~np.eye(n, dtype=bool)]
    assert (off <= 0).all()
    assert (np.diag(K) >= 0).all()
    np.testing.assert_allclose(np.diag(K), -off.reshape(n, n - 1).sum(1) if n > 1 else [0.0], rtol=1e-6)
    lo, hi = k.bounds
    assert (lo == 0).all() and np.isinf(hi).all() and lo.shape == (k.nparams,)


def test_mmatrix_random_theta_is_feasible(rng):
    k = MMatrix(5)
    assert (k.random_theta(rng) >= 0).all()


def test_diagonal_operator_is_self_adjoint(dtype, rng):
    op = Diagonal(6).op(rng.standard_normal(6).astype(dtype))
    np.testing.assert_array_equal(op.todense(), op.H.todense())


def test_softplus_to_theta_and_positivity(rng):
    k = Softplus(MMatrix(3))
    phi = rng.standard_normal(6) * 5
    np.testing.assert_allclose(k.to_theta(phi), softplus_ref(phi), rtol=0, atol=atol_for(softplus_ref(phi)))
    assert (k.to_theta(phi) > 0).all()
    want = MMatrix(3).matrix(softplus_ref(phi))
    np.testing.assert_allclose(k.matrix(phi), want, rtol=0, atol=atol_for(want))
    assert k.to_theta(phi.astype(np.float32)).dtype == np.float32


def test_softplus_large_arguments_do_not_overflow(dtype):
    k = Softplus(MMatrix(2))
    phi = np.array([80.0, -80.0], dtype=dtype)
    M = k.matrix(phi)
    assert np.isfinite(M).all()
    np.testing.assert_allclose(M[0], [80.0, -80.0], rtol=default_rtol(dtype))


# ----------------------------------------------------------------------------------------
# property-based


FAMILIES = {
    "dense": (lambda r, c: Dense(r, c), lambda t, r, c: dense_ref(t, r, c)),
    "diagonal": (lambda r, c: Diagonal(r), lambda t, r, c: diagonal_ref(t, r)),
    "antisymmetric": (lambda r, c: Antisymmetric(r), lambda t, r, c: antisymmetric_ref(t, r)),
    "mmatrix": (lambda r, c: MMatrix(r), lambda t, r, c: mmatrix_ref(t, r)),
    "softplus": (lambda r, c: Softplus(MMatrix(r)), lambda t, r, c: mmatrix_ref(softplus_ref(t), r)),
}


@settings(max_examples=examples(40), deadline=None)
@given(
    family=st.sampled_from(sorted(FAMILIES)),
    rows=st.integers(1, 6),
    cols=st.integers(1, 6),
    n=st.integers(0, 5),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**32 - 1),
    transpose=st.booleans(),
)
def test_property_apply_jac_and_adjoints(family, rows, cols, n, dtype, seed, transpose):
    make, ref = FAMILIES[family]
    k = make(rows, cols)
    rng = np.random.default_rng(seed)
    theta = k.random_theta(rng, dtype) * dtype(rng.uniform(0.1, 10))
    K = ref(theta.astype(np.float64), rows, cols)
    m, N = K.shape
    X = rng.standard_normal((n, m if transpose else N)).astype(dtype)
    Y = k.apply(theta, X, transpose=transpose)
    want = X.astype(np.float64) @ (K if transpose else K.T)
    assert Y.dtype == dtype and Y.shape == want.shape
    tol = default_rtol(dtype, max(m, N))
    scale = np.abs(X).sum(1, keepdims=True) * np.abs(K).max() + np.finfo(np.float64).tiny
    assert (np.abs(Y - want) <= tol * scale).all()
    assert adjoint_test(k.op(theta), rng=rng).passed
    J = k.jac(theta, X, transpose=transpose)
    assert adjoint_test(J, rng=rng).passed
    w = rng.standard_normal(J.shape[0]).astype(dtype)
    per = J.per_example(w)
    assert per.shape == (n, k.nparams) and per.dtype == dtype
    red = J.rmatvec(w).astype(np.float64)
    assert np.linalg.norm(per.sum(0) - red) <= tol * (np.abs(per).sum() + 1e-30)


@settings(max_examples=examples(15), deadline=None)
@given(
    family=st.sampled_from(["dense", "antisymmetric", "mmatrix", "softplus"]),
    size=st.integers(2, 5),
    seed=st.integers(0, 2**32 - 1),
)
def test_property_taylor(family, size, seed):
    make, _ = FAMILIES[family]
    k = make(size, size + 1)
    rng = np.random.default_rng(seed)
    theta = k.random_theta(rng)
    X = rng.standard_normal((2, k.shape[1]))
    v = k.random_theta(rng) - k.random_theta(rng)
    res = taylor_test(lambda t: k.apply(t, X), k.jac(theta, X), theta, v, h0=0.25)
    assert res.passed, str(res)
    assert res.regime == ("roundoff" if k.linear else "quadratic"), str(res)


def test_operator_takes_sparse_columns():
    import scipy.sparse as sp

    from structops import Conv

    k = Conv((4, 4), 3)
    theta = np.arange(9.0)
    np.testing.assert_allclose(
        k.op(theta) @ sp.eye_array(16, format="csr"), k.matrix(theta), rtol=0, atol=atol_for(k.matrix(theta))
    )
