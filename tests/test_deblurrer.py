"""Batched and reusable Tikhonov solves (Deblurrer), one dtype and alpha = 0 policy, advice that works.

References: a loop of single-image solves, and the dense normal equations built from
``kernel.matrix(theta)``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from structops import Conv, SymmetricConv
from structops.data import gaussian_stencil
from structops.kernels.diagonalized import KroneckerMultiplier
from structops.solvers import Deblurrer, IllConditionedWarning, choose_alpha, tikhonov

LAPLACE = np.array([0.0, -1.0, 0.0, -1.0, 4.0, -1.0, 0.0, -1.0, 0.0])


def skew_stencil(size: int = 5) -> np.ndarray:
    """A non-symmetric, non-separable blur (a Gaussian with a tail along one diagonal)."""
    w = gaussian_stencil(size, 1.0) + 0.5 * np.eye(size)[::-1] / size
    w[0, 1] += 0.05
    return w / w.sum()


def dense_tikhonov(k, theta, b, alpha, L=None):
    K = k.matrix(theta)
    LtL = np.eye(K.shape[1]) if L is None else L.todense().T @ L.todense()
    return np.linalg.solve(K.T @ K + alpha * LtL, K.T @ b.ravel())


ROUTES = {
    "fourier": (Conv((6, 7), 3, bc="periodic"), gaussian_stencil(3, 0.8).ravel(), "exact"),
    "cosine": (SymmetricConv((6, 7), 3, bc="symmetric"), np.array([0.4, 0.15, 0.1, 0.05]), "exact"),
    "kronecker": (Conv((6, 7), (3, 3)), gaussian_stencil(3, 1.0).ravel(), "exact"),
    "mirror-iterative": (Conv((6, 7), (5, 5), bc="symmetric"), skew_stencil().ravel(), "lsqr"),
}


@pytest.mark.parametrize("name", list(ROUTES))
def test_a_stack_is_the_loop_of_single_solves(name, rng):
    k, theta, method = ROUTES[name]
    B = rng.standard_normal((3, *k.out_shape[1:]))
    alphas = np.array([1e-2, 3e-2, 1e-1])
    res = tikhonov(k, theta, B, alpha=alphas, rtol=1e-10, full_output=True)
    assert res.x.shape == (3, *k.in_shape[1:]) and res.method.startswith(method)
    for i in range(3):
        single = tikhonov(k, theta, B[i], alpha=alphas[i], rtol=1e-10)
        want = dense_tikhonov(k, theta, B[i], alphas[i])
        np.testing.assert_allclose(res.x[i], single, rtol=1e-8, atol=1e-8 * np.abs(want).max())
        np.testing.assert_allclose(res.x[i].ravel(), want, atol=1e-6 * np.abs(want).max())
    one_alpha = tikhonov(k, theta, B, alpha=1e-2, rtol=1e-10)
    np.testing.assert_allclose(one_alpha[0], res.x[0], rtol=1e-8, atol=1e-10)
    assert res.residual_norm.shape == (3,) and res.iterations.shape == (3,)


def test_deblurrer_diagonalises_once(rng):
    k = Conv((8, 8), (3, 3))
    theta = gaussian_stencil(3, 1.0).ravel()
    calls = []
    original = k.diagonalize

    def counting(t):
        calls.append(1)
        return original(t)

    k.diagonalize = counting  # type: ignore[method-assign]
    d = Deblurrer(k, theta)
    B = rng.standard_normal((2, 8, 8))
    x1, x2 = d.solve(B[0], alpha=1e-2), d.solve(B[1], alpha=1e-3)
    choice = d.choose_alpha(B, method="gcv")
    assert len(calls) == 1 and d.exact
    np.testing.assert_allclose(x1.ravel(), dense_tikhonov(k, theta, B[0], 1e-2), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(x2.ravel(), dense_tikhonov(k, theta, B[1], 1e-3), rtol=1e-8, atol=1e-12)
    assert choice.alpha.shape == (2,)


@pytest.mark.parametrize("method", ["gcv", "discrepancy"])
def test_choose_alpha_of_a_stack_is_one_choice_per_image(method, rng):
    k = Conv((16, 16), 5, bc="periodic")
    theta = gaussian_stencil(5, 1.2).ravel()
    X = rng.uniform(size=(2, 16, 16))
    B = np.stack([k.apply(theta, x) for x in X]) + 0.02 * rng.standard_normal((2, 16, 16))
    noise = 0.02 if method == "discrepancy" else None
    both = choose_alpha(k, theta, B, method=method, noise=noise)
    for i in range(2):
        one = choose_alpha(k, theta, B[i], method=method, noise=noise)
        assert both.alpha[i] == pytest.approx(one.alpha, rel=1e-9)
        np.testing.assert_allclose(both.values[i][: one.values.size], one.values, rtol=1e-12)


def test_proportional_kronecker_factors_share_one_svd(rng):
    T = np.triu(rng.standard_normal((5, 5))) + 3 * np.eye(5)
    K = KroneckerMultiplier([T, -2.0 * T])
    np.testing.assert_allclose(K.todense(), np.kron(T, -2.0 * T), atol=1e-12)
    want = np.linalg.svd(np.kron(T, -2.0 * T), compute_uv=False)
    np.testing.assert_allclose(K.singular_values(), want, rtol=1e-12)
    assert K.left[1] is K.left[0]


# ------------------------------------------------------------------- policy
def test_alpha_zero_raises_alike_on_the_exact_and_iterative_routes():
    k = Conv((6, 6), 3, bc="periodic")  # the Laplacian: constants in its null space
    for solver in ("auto", "lsqr"):
        with pytest.raises(np.linalg.LinAlgError, match=r"`alpha` = 0.0: .*singular.*pass `alpha` > 0"):
            tikhonov(k, LAPLACE, np.ones((6, 6)), alpha=0.0, solver=solver)


@pytest.mark.parametrize("kernel", [Conv((16, 16), (7, 7), bc="periodic"), Conv((16, 16), (7, 7), bc="symmetric")])
def test_alpha_zero_warns_on_an_ill_conditioned_blur_on_every_route(kernel, rng):
    theta = gaussian_stencil(7, 1.5).ravel()
    b = rng.standard_normal((16, 16))
    for solver in ("auto", "lsqr", "cg"):
        with pytest.warns(IllConditionedWarning, match="alpha"), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # a ConvergenceWarning is no substitute
            warnings.simplefilter("always", IllConditionedWarning)
            try:
                tikhonov(kernel, theta, b, alpha=0.0, solver=solver, maxiter=5)
            except np.linalg.LinAlgError:
                warnings.warn("alpha raised", IllConditionedWarning, stacklevel=1)


def test_one_dtype_policy_for_b(rng):
    k, theta, _ = ROUTES["fourier"]
    b = rng.standard_normal((6, 7))
    with pytest.raises(TypeError, match=r"`b` has dtype float64 but the solve runs in float32"):
        tikhonov(k, theta.astype(np.float32), b, alpha=1e-2)
    with pytest.raises(TypeError, match="float16"):
        tikhonov(k, theta, b.astype(np.float16), alpha=1e-2)
    with pytest.raises(TypeError, match="float16"):
        choose_alpha(k, theta, b.astype(np.float16))
    with pytest.warns(UserWarning, match=r"integer dtype uint8.*b / 255"):
        x = tikhonov(k, theta, (255 * np.abs(b) / np.abs(b).max()).astype(np.uint8), alpha=1e-2)
    assert x.dtype == np.float64


def test_a_nan_error_names_where_it_is(rng):
    k, theta, _ = ROUTES["fourier"]
    b = rng.standard_normal((6, 7))
    b[2, 3] = np.nan
    with pytest.raises(ValueError, match=r"b\[2, 3\] = nan"):
        tikhonov(k, theta, b, alpha=1e-2)


def test_exact_refusal_advises_a_preconditioner_that_works_for_the_kernel(rng):
    k = Conv((12, 12), (5, 5), bc="symmetric")
    theta = skew_stencil().ravel()
    b = rng.standard_normal((12, 12))
    with pytest.raises(ValueError, match="preconditioner='dct'") as info:
        tikhonov(k, theta, b, alpha=1e-2, solver="exact")
    assert "'chan'" not in str(info.value)
    res = tikhonov(k, theta, b, alpha=1e-2, solver="lsqr", preconditioner="dct", rtol=1e-10, full_output=True)
    np.testing.assert_allclose(res.x.ravel(), dense_tikhonov(k, theta, b, 1e-2), atol=1e-7)


def test_alpha_per_image_must_match_the_stack(rng):
    k, theta, _ = ROUTES["fourier"]
    with pytest.raises(ValueError, match=r"`alpha` must be a number or one per image, shape \(2,\)"):
        tikhonov(k, theta, rng.standard_normal((2, 6, 7)), alpha=[1e-2, 1e-3, 1e-4])
    with pytest.raises(ValueError, match="`alpha` must be a finite number >= 0"):
        tikhonov(k, theta, rng.standard_normal((2, 6, 7)), alpha=[1e-2, -1.0])
