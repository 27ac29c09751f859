"""structops.testing: the dot test, the Taylor test and check_kernel must catch wrong code."""

from __future__ import annotations

import re

import numpy as np
import pylops
import pytest
import scipy.sparse.linalg as spla

from structops import Antisymmetric, Dense, Diagonal, MMatrix, Softplus
from structops.testing import (
    AdjointTestError,
    CheckResult,
    KernelReport,
    adjoint_test,
    check_kernel,
    default_rtol,
    taylor_test,
)

# ----------------------------------------------------------------------------------------
# default_rtol


def test_default_rtol_scales_with_eps_and_size():
    assert default_rtol(np.float32) / default_rtol(np.float64) == pytest.approx(
        np.finfo(np.float32).eps / np.finfo(np.float64).eps
    )
    assert default_rtol(np.float64, 10**6) > default_rtol(np.float64, 10) > default_rtol(np.float64, 0) > 0
    assert default_rtol(np.complex128) == default_rtol(np.float64)
    assert default_rtol(np.int64) == default_rtol(np.float64)


# ----------------------------------------------------------------------------------------
# adjoint_test


class WrongAdjoint(pylops.LinearOperator):
    """A matrix whose rmatvec uses a perturbed transpose."""

    def __init__(self, A: np.ndarray, B: np.ndarray) -> None:
        self.A, self.B = A, B
        super().__init__(dtype=A.dtype, shape=A.shape)

    def _matvec(self, x):
        return self.A @ x

    def _rmatvec(self, y):
        return self.B.T @ y


def test_adjoint_test_passes_for_a_correct_adjoint(dtype, rng):
    A = rng.standard_normal((5, 3)).astype(dtype)
    res = adjoint_test(pylops.MatrixMult(A, dtype=dtype), rng=rng)
    assert res.passed
    assert res.error <= res.rtol == default_rtol(dtype, 5)
    assert res.lhs == pytest.approx(res.rhs, rel=1e-3)


def test_adjoint_test_detects_a_wrong_adjoint(dtype, rng):
    A = rng.standard_normal((4, 6)).astype(dtype)
    B = A.copy()
    B[1, 2] += 0.5
    op = WrongAdjoint(A, B)
    with pytest.raises(AdjointTestError) as info:
        adjoint_test(op, rng=1)
    res = adjoint_test(op, rng=1, raise_on_failure=False)
    assert not res.passed and res.error > res.rtol
    msg = str(info.value)
    assert repr(res.lhs) in msg and repr(res.rhs) in msg
    assert "(4, 6)" in msg
    # AdjointTestError is an AssertionError, so plain pytest reports it as a failed assertion
    assert isinstance(info.value, AssertionError)


def test_adjoint_test_detects_a_small_relative_error(rng):
    A = rng.standard_normal((30, 30))
    op = WrongAdjoint(A, A * (1 + 1e-6))
    assert not adjoint_test(op, rng=rng, raise_on_failure=False).passed
    assert adjoint_test(op, rng=rng, rtol=1e-4).passed  # an explicit tolerance is honoured


def test_adjoint_test_complex_operator(rng):
    A = rng.standard_normal((4, 3)) + 1j * rng.standard_normal((4, 3))
    assert adjoint_test(pylops.MatrixMult(A, dtype=np.complex128), rng=rng).passed
    # the transpose without conjugation is not the adjoint, and complex vectors reveal it
    bad = WrongAdjoint(A, A)
    assert not adjoint_test(bad, rng=rng, raise_on_failure=False).passed


def test_adjoint_test_accepts_scipy_operators_and_empty_shapes(rng):
    A = rng.standard_normal((3, 2))
    assert adjoint_test(spla.aslinearoperator(A), rng=rng).passed
    res = adjoint_test(pylops.MatrixMult(np.zeros((0, 3))), rng=rng)
    assert res.passed and res.error == 0


# ----------------------------------------------------------------------------------------
# taylor_test


def nonlinear(A):
    def f(t):
        return np.sin(A.astype(t.dtype) @ t) + (A.astype(t.dtype) @ t) ** 2

    def jac(t):
        z = A @ t.astype(np.float64)
        return (np.cos(z) + 2 * z)[:, None] * A

    return f, jac


@pytest.fixture
def problem(rng, dtype):
    A = rng.standard_normal((6, 4))
    theta = rng.standard_normal(4).astype(dtype)
    return A, theta


def test_taylor_quadratic_for_the_right_derivative(problem, dtype):
    A, theta = problem
    f, jac = nonlinear(A)
    res = taylor_test(f, lambda v: jac(theta) @ v, theta, rng=0)
    assert res.regime == "quadratic" and res.passed, str(res)
    assert res.h.shape == res.E0.shape == res.E1.shape == res.floor.shape == (10,)
    assert res.order0.shape == res.order1.shape == (9,)
    informative = (res.E1[:-1] > res.floor[:-1]) & (res.E1[1:] > res.floor[1:])
    assert np.median(res.order1[informative][-3:]) == pytest.approx(2, abs=0.2)
    assert "regime: quadratic" in str(res)


def test_taylor_roundoff_for_a_linear_function(problem, dtype):
    A, theta = problem
    res = taylor_test(lambda t: A.astype(t.dtype) @ t, lambda v: A @ v, theta, rng=0)
    assert res.regime == "roundoff" and res.passed, str(res)
    assert (res.E1 <= res.floor).all()
    np.testing.assert_allclose(res.order0, 1.0, atol=0.01)


@pytest.mark.parametrize(
    "wrong",
    [
        pytest.param(lambda J, v: 1.01 * (J @ v), id="scaled-1.01"),
        pytest.param(lambda J, v: J[:, :-1] @ v[:-1], id="missing-term"),
        pytest.param(lambda J, v: J @ v[::-1], id="permuted"),
        pytest.param(lambda J, v: 0 * v[:1] + np.zeros(J.shape[0]), id="zero"),
    ],
)
def test_taylor_fails_for_a_wrong_derivative(problem, dtype, wrong):
    A, theta = problem
    f, jac = nonlinear(A)
    J = jac(theta)
    res = taylor_test(f, lambda v: wrong(J, v), theta, rng=0)
    assert res.regime == "failed" and not res.passed, str(res)


def test_taylor_fails_for_a_wrong_derivative_of_a_linear_function(problem):
    A, theta = problem
    res = taylor_test(lambda t: A.astype(t.dtype) @ t, lambda v: 1.01 * (A @ v), theta, rng=0)
    assert not res.passed, str(res)


def test_taylor_accepts_a_linear_operator_and_zero_theta(dtype):
    k = Softplus(MMatrix(3))
    theta = np.zeros(6, dtype=dtype)
    X = np.random.default_rng(0).standard_normal((4, 3)).astype(dtype)
    res = taylor_test(lambda t: k.apply(t, X), k.jac(theta, X), theta, rng=0)
    assert res.passed, str(res)


def test_taylor_zero_function_is_roundoff():
    res = taylor_test(lambda t: np.zeros(3), lambda v: np.zeros(3), np.zeros(2), rng=0)
    assert res.regime == "roundoff" and res.passed


def test_taylor_nonfinite_values_fail():
    with np.errstate(over="ignore"):
        res = taylor_test(lambda t: np.exp(1e3 * t), lambda v: 1e3 * np.exp(1e3 * np.ones(1)) * v, np.ones(1), rng=0)
    assert not res.passed and "not finite" in res.message


def test_taylor_directional_zero_derivative_is_quadratic():
    # f(t) = |t|^2 at t = 0: E0 = O(h^2) and J = 0; the test must not call that a failure
    res = taylor_test(lambda t: np.array([t @ t]), lambda v: np.zeros(1), np.zeros(3), rng=0)
    assert res.passed, str(res)


def test_taylor_validates_its_arguments():
    f = np.sin
    with pytest.raises(ValueError, match="`v`"):
        taylor_test(f, np.cos, np.zeros(3), np.ones(2))
    with pytest.raises(TypeError, match="`v`"):
        taylor_test(f, np.cos, np.zeros(2), np.ones(2) * 1j)
    with pytest.raises(TypeError, match="`theta`"):
        taylor_test(f, np.cos, np.zeros(2) * 1j)
    with pytest.raises(ValueError, match="`nsteps`"):
        taylor_test(f, np.cos, np.zeros(2), nsteps=1)
    with pytest.raises(ValueError, match="`factor`"):
        taylor_test(f, np.cos, np.zeros(2), factor=2.0)
    with pytest.raises(ValueError, match="`h0`"):
        taylor_test(f, np.cos, np.zeros(2), h0=-1.0)


# ----------------------------------------------------------------------------------------
# check_kernel on deliberately broken families


class WrongGradient(Diagonal):
    """J^T w off by a factor: the dot test of the Jacobian must fail."""

    def _vjp(self, theta, x, w, transpose, per_example):
        return 1.1 * super()._vjp(theta, x, w, transpose, per_example)


class WrongTranspose(Dense):
    """apply(transpose=True) uses K instead of K^T (square case): dense and adjoint checks fail."""

    def _apply(self, theta, x, transpose):
        return super()._apply(theta, x, False)


class WrongDerivative(Softplus):
    """jvp and vjp consistently scaled: adjoint tests pass, only the Taylor test can see it."""

    def _jvp(self, theta, x, v, transpose):
        return 1.05 * super()._jvp(theta, x, v, transpose)

    def _vjp(self, theta, x, w, transpose, per_example):
        return 1.05 * super()._vjp(theta, x, w, transpose, per_example)


class WrongPerExample(Diagonal):
    """Per-example gradients that do not sum to the reduced one."""

    def _vjp(self, theta, x, w, transpose, per_example):
        g = super()._vjp(theta, x, w, transpose, per_example)
        return 2 * g if per_example else g


@pytest.mark.output
@pytest.mark.parametrize(
    ("kernel", "failing"),
    [
        (WrongGradient(4), "adjoint jac"),
        (WrongTranspose(3, 3), "apply(T) == Y M"),
        (WrongDerivative(MMatrix(3)), "taylor jac"),
        (WrongPerExample(3), "per-example sum"),
    ],
    ids=["gradient", "transpose", "derivative", "per-example"],
)
def test_check_kernel_detects_broken_families(kernel, failing, dtype):
    report = check_kernel(kernel, dtype=dtype, rng=0)
    assert not report.passed
    assert failing in [r.check for r in report.failures], str(report)
    assert report.worst().check == report.failures[0].check
    assert "FAIL" in str(report)


@pytest.mark.parametrize(
    "kernel", [Antisymmetric(1), MMatrix(1), Dense(1, 1), Softplus(Antisymmetric(1)), Dense(1, 5)], ids=repr
)
@pytest.mark.parametrize("nexamples", [0, 1])
def test_check_kernel_degenerate_sizes(kernel, nexamples, dtype):
    report = check_kernel(kernel, dtype=dtype, nexamples=nexamples)
    assert report.passed, str(report)


def test_check_kernel_reports_regimes_and_dtype():
    lin = check_kernel(MMatrix(3), dtype=np.float32)
    assert {r.note for r in lin.results if r.is_taylor} == {"roundoff"}
    assert lin.dtype == "float32" and lin.kernel == "MMatrix(3)"
    non = check_kernel(Softplus(MMatrix(3)))
    assert {r.note for r in non.results if r.is_taylor} == {"quadratic"}


def test_check_kernel_accepts_theta_and_validates():
    report = check_kernel(MMatrix(2), theta=[0.0, 3.0])
    assert report.passed
    with pytest.raises(ValueError, match=re.escape("theta[0]")):
        check_kernel(MMatrix(2), theta=[-1.0, 3.0])
    with pytest.raises(TypeError, match="`kernel`"):
        check_kernel(np.eye(3))
    with pytest.raises(TypeError, match="`dtype`"):
        check_kernel(MMatrix(2), dtype=np.float16)
    with pytest.raises(ValueError, match="`nexamples`"):
        check_kernel(MMatrix(2), nexamples=-1)


def test_report_worst_skips_taylor_rows():
    report = KernelReport("K", "float64")
    report.add("a", 1e-16, 1e-14)
    report.add("b", 5e-15, 1e-14)
    report.add("taylor jac", 1e-6, 1e-12, note="quadratic", passed=True)
    assert report.passed
    assert report.worst().check == "b"
    report.add("c", 1.0, 1e-14)
    assert report.worst().check == "c" and not report.passed
    assert CheckResult("x", 0.0, 0.0, True).ratio == 0.0
    assert CheckResult("x", 1.0, 0.0, False).ratio == np.inf


def test_taylor_test_refuses_directions_that_prove_nothing():
    t0 = np.array([0.3, -1.2])
    with pytest.raises(ValueError, match="`v` is zero"):
        taylor_test(np.sin, lambda v: 0 * v, t0, v=np.zeros(2))
    with pytest.raises(ValueError, match=r"`v` must be finite, but v\[1\] = nan"):
        taylor_test(np.sin, lambda v: np.cos(t0) * v, t0, v=np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match=r"`theta` must be finite, but theta\[0\] = inf"):
        taylor_test(np.sin, lambda v: v, np.array([np.inf, 1.0]))


def test_adjoint_test_takes_plain_matrices():
    import scipy.sparse as sp

    A = np.arange(6.0).reshape(2, 3)
    assert adjoint_test(A, rng=0).passed
    assert adjoint_test(sp.csr_array(A), rng=0).passed
