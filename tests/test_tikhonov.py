"""Tikhonov with a regularisation operator L: exact per frequency, and lsqr/cgls/cg with split preconditioners.

Every solution is checked against the dense reference ``solve(KᵀK + α LᵀL, Kᵀb)`` built from
``kernel.matrix(theta)`` and ``L.todense()``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pylops
import pytest

from structops import Conv, SymmetricConv
from structops.data import gaussian_stencil
from structops.solvers import implicit_step, inverse
from structops.solvers.tikhonov import ConvergenceWarning, split_preconditioner, tikhonov

from ._helpers import atol_for

LAPLACE_3x3 = np.array([0.0, -1.0, 0.0, -1.0, 4.0, -1.0, 0.0, -1.0, 0.0])
LAPLACE_SYM = np.array([4.0, -1.0, -1.0, 0.0])  # SymmetricConv's first orthant: centre, axis-1, axis-0, corner


def dense_tikhonov(K: np.ndarray, L: np.ndarray | None, alpha: float, b: np.ndarray) -> np.ndarray:
    LtL = np.eye(K.shape[1]) if L is None else L.T @ L
    return np.linalg.solve(K.T @ K + alpha * LtL, K.T @ b.ravel())


def problem(name: str, grid=(6, 7)):
    """(kernel, theta, L operator or None, L dense or None) for the exact routes."""
    blur = gaussian_stencil(3, 0.8).ravel()
    if name == "periodic":
        k = Conv(grid, 3, bc="periodic")
        lap = Conv(grid, 3, bc="periodic").op(LAPLACE_3x3)
        return k, blur, lap, lap.todense()
    if name == "periodic-identity":
        return Conv(grid, 3, bc="periodic"), blur, None, None
    if name == "cosine":
        k = SymmetricConv(grid, 3, bc="symmetric")
        lap = SymmetricConv(grid, 3, bc="symmetric").op(LAPLACE_SYM)
        return k, np.array([0.4, 0.15, 0.1, 0.05]), lap, lap.todense()
    if name == "kronecker":
        return Conv(grid, (3, 3)), gaussian_stencil(3, 1.0).ravel(), None, None
    raise AssertionError(name)


EXACT = ["periodic", "periodic-identity", "cosine", "kronecker"]


@pytest.mark.parametrize("name", EXACT)
@pytest.mark.parametrize("alpha", [1e-3, 0.3])
def test_exact_solve_matches_the_dense_normal_equations(name, alpha, rng, dtype):
    k, theta, L, Ld = problem(name)
    theta = theta.astype(dtype)
    b = rng.standard_normal(k.out_shape).astype(dtype)
    res = tikhonov(k, theta, b, alpha=alpha, L=L, full_output=True)
    want = dense_tikhonov(k.matrix(theta.astype(np.float64)), Ld, alpha, b.astype(np.float64))
    assert res.method == "exact" and res.iterations == 0 and res.x.dtype == dtype
    assert res.x.shape == k.in_shape
    cond = 1 / alpha * 20
    tol = 50 * np.finfo(dtype).eps * cond
    np.testing.assert_allclose(res.x.ravel(), want, atol=tol * np.abs(want).max())
    assert res.residual_norm == pytest.approx(np.linalg.norm(k.matrix(theta) @ res.x.ravel() - b.ravel()), rel=1e-4)


@pytest.mark.parametrize("name", ["periodic", "cosine"])
def test_inverse_with_L_is_the_dense_inverse(name):
    k, theta, L, Ld = problem(name)
    K = k.matrix(theta)
    op = inverse(k, theta, normal=True, alpha=0.05, L=L)
    np.testing.assert_allclose(op.todense(), np.linalg.inv(K.T @ K + 0.05 * Ld.T @ Ld), atol=1e-10)


@pytest.mark.parametrize("name", ["periodic", "cosine"])
def test_implicit_step_with_L_is_the_dense_step(name):
    k, theta, L, Ld = problem(name)
    K = k.matrix(theta)
    op = implicit_step(k, theta, 0.3, L=L)
    want = np.linalg.inv(0.3 * (K.T @ K + Ld.T @ Ld) + np.eye(K.shape[1]))
    np.testing.assert_allclose(op.todense(), want, rtol=0, atol=atol_for(want))


def test_multichannel_periodic_exact_solve(rng):
    k = Conv((5, 6), 3, bc="periodic", in_channels=2, out_channels=3)
    theta = k.random_theta(rng)
    b = rng.standard_normal(k.out_shape)
    x = tikhonov(k, theta, b, alpha=0.1)
    np.testing.assert_allclose(x.ravel(), dense_tikhonov(k.matrix(theta), None, 0.1, b), atol=1e-10)


# ------------------------------------------------------------------ iterative
ZERO = Conv((12, 11), (5, 5))
ZERO_THETA = gaussian_stencil(5, 1.2).ravel()
ZERO_LAP = Conv((12, 11), 3).op(LAPLACE_3x3)


@pytest.mark.parametrize("solver", ["lsqr", "cgls", "cg"])
@pytest.mark.parametrize("preconditioner", [None, "strang", "chan"])
@pytest.mark.parametrize("with_L", [False, True], ids=["identity", "laplacian"])
def test_krylov_solvers_reach_the_dense_solution(solver, preconditioner, with_L, rng):
    L = ZERO_LAP if with_L else None
    b = rng.standard_normal((12, 11))
    alpha = 1e-2
    res = tikhonov(
        ZERO,
        ZERO_THETA,
        b,
        alpha=alpha,
        L=L,
        solver=solver,
        preconditioner=preconditioner,
        rtol=1e-10,
        full_output=True,
    )
    want = dense_tikhonov(ZERO.matrix(ZERO_THETA), ZERO_LAP.todense() if with_L else None, alpha, b)
    assert res.x.shape == (12, 11) and res.converged and res.iterations > 0
    assert res.method == solver + ("" if preconditioner is None else f"+{preconditioner}")
    np.testing.assert_allclose(res.x.ravel(), want, atol=1e-6 * np.abs(want).max())


@pytest.mark.parametrize("solver", ["lsqr", "cgls", "cg"])
def test_the_split_preconditioner_saves_iterations(solver, rng):
    k = Conv((48, 48), (9, 9))
    theta = gaussian_stencil(9, 2.0).ravel()
    b = k.apply(theta, rng.uniform(size=(48, 48))) + 0.01 * rng.standard_normal((48, 48))
    runs = {
        p: tikhonov(k, theta, b, alpha=1e-3, solver=solver, preconditioner=p, rtol=1e-8, full_output=True)
        for p in (None, "chan")
    }
    assert runs["chan"].iterations < 0.75 * runs[None].iterations  # fewer, not N-independent (benchmarks/README)
    np.testing.assert_allclose(runs["chan"].x, runs[None].x, atol=1e-4)


def test_split_preconditioner_squares_to_the_cg_preconditioner():
    P = split_preconditioner(ZERO, ZERO_THETA, alpha=1e-2, L=ZERO_LAP, kind="strang")
    M = split_preconditioner(ZERO, ZERO_THETA, alpha=1e-2, L=ZERO_LAP, kind="strang", power=1.0)
    Pd = P.todense()
    np.testing.assert_allclose(Pd, Pd.T, rtol=0, atol=atol_for(Pd.T))
    assert np.linalg.eigvalsh(Pd).min() > 0
    np.testing.assert_allclose(Pd @ Pd, M.todense(), atol=1e-10)


def test_auto_takes_the_exact_route_or_preconditioned_lsqr(rng):
    b = rng.standard_normal((12, 11))
    assert tikhonov(ZERO, ZERO_THETA, b, alpha=1e-2, full_output=True).method == "exact"  # Kronecker
    assert tikhonov(ZERO, ZERO_THETA, b, alpha=1e-2, L=ZERO_LAP, full_output=True).method == "lsqr+chan"
    k = Conv((12, 11), 3)  # not of rank 1: no transform
    theta = rng.standard_normal(9)
    assert tikhonov(k, theta, b, alpha=1e-2, full_output=True).method == "lsqr+chan"


def test_shapes_follow_b(rng):
    b = rng.standard_normal((12, 11))
    assert tikhonov(ZERO, ZERO_THETA, b, alpha=1e-2).shape == (12, 11)
    assert tikhonov(ZERO, ZERO_THETA, b[None], alpha=1e-2).shape == (1, 12, 11)
    assert tikhonov(ZERO, ZERO_THETA, b.ravel(), alpha=1e-2).shape == (132,)


def test_convergence_warning_at_maxiter(rng):
    with pytest.warns(ConvergenceWarning, match="maxiter=2"):
        res = tikhonov(ZERO, ZERO_THETA, rng.standard_normal(132), alpha=1e-6, solver="cg", maxiter=2, full_output=True)
    assert not res.converged


# ------------------------------------------------------------------ bad input
def test_negative_alpha_is_refused():
    with pytest.raises(ValueError, match="`alpha` must be a finite number >= 0"):
        tikhonov(ZERO, ZERO_THETA, np.zeros(132), alpha=-1.0)
    with pytest.raises(ValueError, match="`alpha` must be a finite number >= 0"):
        inverse(Conv(8, 3, bc="periodic"), np.ones(3), normal=True, alpha=-1.0, L=None)


def test_alpha_zero_with_a_singular_symbol_names_alpha():
    k = Conv((6, 6), 3, bc="periodic")  # the Laplacian: constants in its null space
    with pytest.raises(np.linalg.LinAlgError, match=r"`alpha` = 0.0: .*singular.*pass `alpha` > 0"):
        tikhonov(k, LAPLACE_3x3, np.ones((6, 6)), alpha=0.0)
    assert issubclass(np.linalg.LinAlgError, ValueError)


def test_common_null_space_of_K_and_L_is_refused():
    k = Conv((6, 6), 3, bc="periodic")
    L = k.op(LAPLACE_3x3)
    with pytest.raises(np.linalg.LinAlgError, match="common null space"):
        tikhonov(k, LAPLACE_3x3, np.ones((6, 6)), alpha=1.0, L=L)


def test_L_of_another_grid_is_refused():
    k, theta, _, _ = problem("periodic")
    other = Conv((5, 5), 3, bc="periodic").op(LAPLACE_3x3)
    for call in (
        lambda: tikhonov(k, theta, np.zeros((6, 7)), alpha=1.0, L=other),
        lambda: inverse(k, theta, normal=True, alpha=1.0, L=other),
    ):
        with pytest.raises(ValueError, match="an L of another grid"):
            call()


def test_L_of_another_structure_points_to_the_iterative_route():
    k, theta, _, _ = problem("periodic")
    zero_lap = Conv((6, 7), 3).op(LAPLACE_3x3)
    with pytest.raises(ValueError, match=r"another structure.*tikhonov\(.*solver='lsqr'"):
        inverse(k, theta, normal=True, alpha=1.0, L=zero_lap)
    with pytest.raises(ValueError, match="another structure"):
        tikhonov(k, theta, np.zeros((6, 7)), alpha=1.0, L=zero_lap, solver="exact")
    # the iterative route takes it
    x = tikhonov(k, theta, np.ones((6, 7)), alpha=1.0, L=zero_lap, rtol=1e-12)
    want = dense_tikhonov(k.matrix(theta), zero_lap.todense(), 1.0, np.ones((6, 7)))
    np.testing.assert_allclose(x.ravel(), want, atol=1e-8)


def test_L_must_be_an_operator():
    k, theta, _, _ = problem("periodic")
    with pytest.raises(TypeError, match=r"got the family .*L=family.op\(theta_L\)"):
        tikhonov(k, theta, np.zeros((6, 7)), alpha=1.0, L=Conv((6, 7), 3))
    with pytest.raises(TypeError, match="pylops LinearOperator"):
        tikhonov(k, theta, np.zeros((6, 7)), alpha=1.0, L=np.eye(42))


def test_b_of_the_wrong_shape_is_refused():
    k, theta, _, _ = problem("periodic")
    pattern = r"`b` must have the shape of one output.*\(1, 6, 7\).*\(6, 7\).*got shape \(7, 6\)"
    with pytest.raises(ValueError, match=pattern):
        tikhonov(k, theta, np.zeros((7, 6)), alpha=1.0)


def test_unknown_solver_and_preconditioner():
    with pytest.raises(ValueError, match="`solver` must be one of"):
        tikhonov(ZERO, ZERO_THETA, np.zeros(132), alpha=1.0, solver="gmres")
    with pytest.raises(ValueError, match="`preconditioner` must be None or one of"):
        tikhonov(ZERO, ZERO_THETA, np.zeros(132), alpha=1.0, solver="lsqr", preconditioner="jacobi")


def test_L_as_a_plain_pylops_operator_goes_iterative(rng):
    k, theta, _, _ = problem("periodic")
    D = pylops.FirstDerivative((6, 7), axis=0)
    b = rng.standard_normal((6, 7))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x = tikhonov(k, theta, b, alpha=0.5, L=D, rtol=1e-12)
    np.testing.assert_allclose(x.ravel(), dense_tikhonov(k.matrix(theta), D.todense(), 0.5, b), atol=1e-8)


def test_L_needs_the_normal_equations():
    k, theta, L, _ = problem("periodic")
    with pytest.raises(ValueError, match="pass normal=True"):
        inverse(k, theta, alpha=1.0, L=L)
