"""Learning parameters of affine families from examples with lsqr/lsmr on the Jacobian."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.sparse as sp

import structops
from structops.solvers import LearnResult, learn_stencil


def affine_kernel() -> structops.LinearKernel:
    """A 4×3 family with an offset q: 2 parameters spread over several entries."""
    rng = np.random.default_rng(7)
    Q = sp.random(12, 2, density=0.6, random_state=rng, format="csr") + sp.csr_array(
        (np.ones(2), ([0, 5], [0, 1])), shape=(12, 2)
    )
    return structops.LinearKernel(Q, (4, 3), q=rng.standard_normal(12))


KERNELS = {
    "conv-zero-1d": lambda: structops.Conv(16, 5),
    "conv-periodic-2d": lambda: structops.Conv((8, 7), (3, 3), bc="periodic"),
    "conv-reflect-2d-even": lambda: structops.Conv((8, 8), (4, 2), bc="reflect"),
    "conv-replicate-channels": lambda: structops.Conv((9, 6), (3, 3), bc="replicate", in_channels=2, out_channels=3),
    "conv-valid-stride": lambda: structops.Conv((11, 10), (3, 3), bc="valid", stride=2, in_channels=2),
    "conv-zero-3d-stride": lambda: structops.Conv((6, 5, 4), (3, 3, 1), stride=(2, 1, 1), out_channels=2),
    "dense": lambda: structops.Dense(5, 4),
    "diagonal": lambda: structops.Diagonal(6),
    "antisymmetric": lambda: structops.Antisymmetric(5),
    "mmatrix": lambda: structops.MMatrix(4),
    "linear-affine": affine_kernel,
    "chain-avgpool-conv": lambda: structops.Chain(
        structops.AvgPool((8, 8), 2, channels=2),
        structops.Conv((8, 8), (3, 3), bc="reflect", in_channels=2, out_channels=2),
    ),
}


def examples(kernel, n, dtype, rng):
    return rng.standard_normal((n, *kernel.in_shape)).astype(dtype)


def dense_jacobian(kernel, X) -> np.ndarray:
    J = kernel.jac(np.zeros(kernel.nparams), X.astype(np.float64))
    return J.matmat(np.eye(kernel.nparams))


@pytest.mark.parametrize("name", list(KERNELS))
@pytest.mark.parametrize("solver", ["lsqr", "lsmr"])
def test_noise_free_data_recover_theta_exactly(name, solver, dtype, rng):
    kernel = KERNELS[name]()
    theta = kernel.random_theta(rng).astype(np.float64)
    n = max(3, int(np.ceil(2 * kernel.nparams / kernel.shape[0])))
    X = examples(kernel, n, dtype, rng)
    Y = kernel.apply(theta.astype(dtype), X)
    fit = learn_stencil(kernel, X, Y, solver=solver)
    assert isinstance(fit, LearnResult)
    assert fit.converged and fit.solver == solver
    assert fit.theta.dtype == dtype and fit.theta.shape == (kernel.nparams,)
    condJ = np.linalg.cond(dense_jacobian(kernel, X))
    tol = 1000 * np.finfo(dtype).eps * condJ
    assert np.linalg.norm(fit.theta - theta) <= tol * np.linalg.norm(theta)
    assert fit.relative_residual <= 1000 * np.finfo(dtype).eps


@pytest.mark.parametrize("name", ["conv-zero-1d", "conv-replicate-channels", "dense", "linear-affine"])
def test_noisy_data_stay_within_the_least_squares_bound(name, rng):
    kernel = KERNELS[name]()
    theta = kernel.random_theta(rng)
    X = examples(kernel, max(4, 4 * kernel.nparams // kernel.shape[0]), np.float64, rng)
    Y = kernel.apply(theta, X)
    noise = 1e-3 * rng.standard_normal(Y.shape)
    fit = learn_stencil(kernel, X, Y + noise)
    J = dense_jacobian(kernel, X)
    smin = np.linalg.svd(J, compute_uv=False).min()
    # ||θ̂ - θ|| = ||J⁺ e|| <= ||e|| / σ_min(J)
    assert np.linalg.norm(fit.theta - theta) <= np.linalg.norm(noise) / smin * (1 + 1e-6)
    # and it is the dense least-squares solution
    offset = kernel.apply(np.zeros(kernel.nparams), X).ravel()
    ref = np.linalg.lstsq(J, (Y + noise).ravel() - offset, rcond=None)[0]
    np.testing.assert_allclose(fit.theta, ref, rtol=0, atol=1e-8 * np.linalg.norm(ref))


@pytest.mark.parametrize("solver", ["lsqr", "lsmr"])
def test_damping_is_tikhonov(solver, rng):
    kernel = structops.Conv((10, 10), (3, 3), bc="periodic")
    theta = rng.standard_normal(9)
    X = rng.standard_normal((2, 1, 10, 10))
    Y = kernel.apply(theta, X) + 0.1 * rng.standard_normal((2, 1, 10, 10))
    fit = learn_stencil(kernel, X, Y, damp=3.0, solver=solver)
    J = dense_jacobian(kernel, X)
    ref = np.linalg.solve(J.T @ J + 9.0 * np.eye(9), J.T @ Y.ravel())
    np.testing.assert_allclose(fit.theta, ref, rtol=1e-9, atol=1e-12)
    assert np.linalg.norm(fit.theta) < np.linalg.norm(learn_stencil(kernel, X, Y).theta)


def test_transposed_model_is_learned(rng):
    kernel = structops.Conv((8, 8), (3, 3), in_channels=2, out_channels=3, stride=2)
    theta = rng.standard_normal(kernel.nparams)
    Yin = rng.standard_normal((6, *kernel.out_shape))
    Xout = kernel.apply(theta, Yin, transpose=True)
    fit = learn_stencil(kernel, Yin, Xout, transpose=True)
    np.testing.assert_allclose(fit.theta, theta, atol=1e-9)


def test_learn_validation(rng):
    kernel = structops.Conv(8, 3)
    X = rng.standard_normal((2, 1, 8))
    Y = kernel.apply(np.ones(3), X)
    with pytest.raises(TypeError, match="not affine"):
        learn_stencil(structops.Softplus(structops.MMatrix(3)), rng.standard_normal((2, 3)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"`solver` must be one of \('lsqr', 'lsmr'\), got 'cg'"):
        learn_stencil(kernel, X, Y, solver="cg")
    with pytest.raises(ValueError, match="`damp` must be >= 0"):
        learn_stencil(kernel, X, Y, damp=-1.0)
    with pytest.raises(ValueError, match="`Y` must hold examples"):
        learn_stencil(kernel, X, Y[:, :, :5])
    with pytest.raises(ValueError, match="same number of examples, got 2 and 1"):
        learn_stencil(kernel, X, Y[:1])
    with pytest.raises(TypeError, match="`Y` has dtype float64 but the computation runs in float32"):
        learn_stencil(kernel, X.astype(np.float32), Y)
    with pytest.raises(TypeError, match="`kernel` must be a structops kernel family"):
        learn_stencil(np.eye(3), X, Y)


def test_learn_stencil_needs_examples():
    from structops import Conv
    from structops.solvers import learn_stencil

    with pytest.raises(ValueError, match="hold no examples"):
        learn_stencil(Conv(8, 3), np.zeros((0, 8)), np.zeros((0, 8)))


@pytest.mark.parametrize("damp", [0.0, 0.5])
def test_bounded_family_is_fitted_within_its_bounds(damp, rng):
    # an M-matrix needs theta >= 0: the unconstrained least-squares fit of noisy data with a
    # zero coupling goes negative, the bounded one stays feasible and matches a reference
    from scipy.optimize import lsq_linear

    from structops import MMatrix
    from structops.solvers import learn_stencil

    k = MMatrix(3)
    theta = np.array([1.0, 0.0, 2.0, 0.0, 0.5, 3.0])
    X = rng.standard_normal((6, 3))
    Y = k.apply(theta, X).reshape(6, -1) + 0.3 * rng.standard_normal((6, 3))
    fit = learn_stencil(k, X, Y, damp=damp)
    assert fit.converged
    assert (fit.theta >= 0).all()
    # reference: the dense Jacobian from Q, with the damping rows stacked below
    A = k.jac(np.zeros(6), X).todense()
    rhs = Y.ravel()
    if damp:
        A, rhs = np.vstack([A, damp * np.eye(6)]), np.concatenate([rhs, np.zeros(6)])
    ref = lsq_linear(A, rhs, bounds=(0, np.inf), method="bvls").x
    np.testing.assert_allclose(fit.theta, ref, atol=1e-6)
    free = np.linalg.lstsq(A, rhs, rcond=None)[0]
    # lsq_linear exactly when the unconstrained fit leaves the bounds (it does without damping)
    assert fit.solver == ("lsq_linear" if (free < 0).any() else "lsqr")
    assert damp or (free < 0).any(), "the data should push the unconstrained fit out of the bounds"


def test_learn_stencil_names_X_as_the_source_of_the_precision():
    from structops import Conv
    from structops.solvers import learn_stencil

    X = np.ones((2, 8))
    message = r"`Y` has dtype float32 but the computation runs in float64 \(the dtype of `X`\)"
    with pytest.raises(TypeError, match=message):
        learn_stencil(Conv(8, 3), X, X.astype(np.float32))


# ------------------------------------------------------------------ constraint="psf"
def line_psf(size: int) -> np.ndarray:
    """A diagonal motion blur with a side lobe: non-negative, sums to one, mostly zeros."""
    psf = np.eye(size)[::-1].copy()
    psf[size // 2, size // 2 - 1] = 0.5
    return (psf / psf.sum()).ravel()


def psf_problem(rng, noise: float, size: int = 5, grid: int = 16, n: int = 3):
    k = structops.Conv((grid, grid), (size, size), bc="zero")
    true = line_psf(size)
    X = rng.random((n, 1, grid, grid))
    Y = k.apply(true, X) + noise * rng.standard_normal((n, 1, grid, grid))
    return k, true, X, Y


@pytest.mark.parametrize("noise", [0.0, 0.05])
def test_psf_fit_satisfies_the_kkt_conditions_of_the_dense_problem(noise, rng):
    k, _, X, Y = psf_problem(rng, noise)
    fit = learn_stencil(k, X, Y, constraint="psf")
    assert fit.converged and fit.solver == "nnls" and fit.istop == 0 and fit.iterations >= 1
    theta = fit.theta
    assert theta.min() >= 0 and abs(theta.sum() - 1) <= 10 * k.nparams * np.finfo(float).eps
    # KKT of min ½||Jθ - y||² on the simplex, with J built column by column
    J = dense_jacobian(k, X)
    grad = J.T @ (J @ theta - Y.ravel())
    free = theta > 0
    scale = np.linalg.norm(J, 2) ** 2 + np.abs(J.T @ Y.ravel()).max()
    tol = 1e3 * np.finfo(float).eps * scale
    mu = -grad[free].mean()
    np.testing.assert_allclose(grad[free], -mu, rtol=0, atol=tol)  # stationary on the free set
    assert (grad[~free] >= -mu - tol).all()  # and no zero wants to grow


def test_psf_fit_matches_a_general_qp_solver(rng):
    from scipy.optimize import minimize

    k, _, X, Y = psf_problem(rng, 0.1, size=3)
    J, y = dense_jacobian(k, X), Y.ravel()
    ref = minimize(
        lambda t: 0.5 * np.sum((J @ t - y) ** 2),
        np.full(9, 1 / 9),
        jac=lambda t: J.T @ (J @ t - y),
        method="SLSQP",
        bounds=[(0, None)] * 9,
        constraints=[{"type": "eq", "fun": lambda t: t.sum() - 1, "jac": lambda t: np.ones_like(t)}],
        options={"ftol": 1e-15, "maxiter": 500},
    )
    assert ref.success
    fit = learn_stencil(k, X, Y, constraint="psf")
    np.testing.assert_allclose(fit.theta, ref.x, atol=1e-6)
    assert fit.residual_norm <= np.linalg.norm(J @ ref.x - y) * (1 + 1e-9)


def test_psf_fit_recovers_a_psf_from_clean_pairs(dtype, rng):
    k, true, X, Y = psf_problem(rng, 0.0)
    fit = learn_stencil(k, X.astype(dtype), Y.astype(dtype), constraint="psf")
    assert fit.theta.dtype == dtype
    cond = np.linalg.cond(dense_jacobian(k, X))
    np.testing.assert_allclose(fit.theta, true, rtol=0, atol=100 * np.finfo(dtype).eps * cond)


@pytest.mark.parametrize("seed", range(4))
def test_psf_fit_on_noisy_pairs_is_no_worse_than_the_unconstrained_fit(seed):
    rng = np.random.default_rng(seed)
    k, true, X, Y = psf_problem(rng, 0.05, size=7, grid=24)
    psf = learn_stencil(k, X, Y, constraint="psf")
    free = learn_stencil(k, X, Y)
    J = dense_jacobian(k, X)
    # guaranteed: the J-metric projection onto the simplex (which holds the true PSF) is non-expansive
    assert np.linalg.norm(J @ (psf.theta - true)) <= np.linalg.norm(J @ (free.theta - true)) * (1 + 1e-9)
    # and in theta itself: the constraint removes the noise that leaves the simplex
    assert np.linalg.norm(psf.theta - true) <= np.linalg.norm(free.theta - true)


def test_psf_fit_with_damping_minimises_the_damped_objective(rng):
    k, _, X, Y = psf_problem(rng, 0.05, size=3)
    J, y, d = dense_jacobian(k, X), Y.ravel(), 2.0
    fit = learn_stencil(k, X, Y, constraint="psf", damp=d)
    objective = lambda t: np.sum((J @ t - y) ** 2) + d**2 * np.sum(t**2)  # noqa: E731
    # no feasible point nearby does better (random moves along the simplex)
    for _ in range(50):
        step = rng.standard_normal(9)
        step -= step.mean()
        trial = fit.theta + 1e-3 * step
        if trial.min() >= 0:
            assert objective(trial) >= objective(fit.theta) - 1e-12


def test_psf_constraint_is_validated(rng):
    k, _, X, Y = psf_problem(rng, 0.0, size=3)
    with pytest.raises(ValueError, match=r"`constraint` must be one of \(None, 'psf'\), got 'simplex'"):
        learn_stencil(k, X, Y, constraint="simplex")
    with pytest.raises(ValueError, match="maxiter"):
        learn_stencil(k, X, Y, constraint="psf", maxiter=0)


def test_itn_is_a_deprecated_alias_of_iterations(rng):
    k, _, X, Y = psf_problem(rng, 0.05, size=3)
    for fit in (learn_stencil(k, X, Y), learn_stencil(k, X, Y, constraint="psf")):
        with pytest.warns(DeprecationWarning, match="LearnResult.iterations"):
            assert fit.itn == fit.iterations
    assert "itn" not in {f.name for f in dataclasses.fields(LearnResult)}
