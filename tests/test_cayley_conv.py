"""structops.CayleyConv against the dense Cayley formula built independently in the test.

The reference is ``numpy.linalg.solve(I + A, I - A)`` with ``A = R - R^T`` and ``R`` the periodic
convolution assembled entry by entry (test_conv.reference_matrix); its Jacobian is the dense
``-(I + A)^{-1} A(v) (I + K)``.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import structops
from structops import CayleyConv
from structops.testing import check_kernel, default_rtol, taylor_test

from ._helpers import atol_for, examples
from .test_antisymmetric_conv import CASES  # the generator's geometries
from .test_conv import reference_matrix
from .test_symmetric_conv import rel


@pytest.fixture(params=list(CASES), ids=list(CASES))
def case(request):
    return CASES[request.param]


def generator(theta, grid, stencil, channels) -> np.ndarray:
    R = reference_matrix(theta, grid, stencil, "periodic", channels, channels)
    return R - R.T


def reference(theta, grid, stencil, channels) -> np.ndarray:
    A = generator(theta, grid, stencil, channels)
    eye = np.eye(A.shape[0])
    return np.linalg.solve(eye + A, eye - A)


def test_matrix_is_the_dense_cayley_formula(case, dtype, rng):
    grid, stencil, c = case
    k = CayleyConv(grid, stencil, channels=c)
    theta = k.random_theta(rng, dtype)
    K = k.matrix(theta)
    assert K.dtype == dtype and K.shape == (c * int(np.prod(grid)),) * 2
    assert rel(K, reference(theta, grid, stencil, c)) <= default_rtol(dtype, K.shape[0])


def test_is_orthogonal_to_roundoff(case, dtype, rng):
    grid, stencil, c = case
    k = CayleyConv(grid, stencil, channels=c)
    theta = 3 * k.random_theta(rng, dtype)  # far from the identity
    K = k.matrix(theta).astype(np.float64)
    eye = np.eye(K.shape[0])
    tol = 20 * np.finfo(dtype).eps
    assert np.abs(K.T @ K - eye).max() <= tol
    assert np.abs(K @ K.T - eye).max() <= tol
    KtK = k.apply(theta, k.apply(theta, eye.astype(dtype)), transpose=True).reshape(eye.shape)
    np.testing.assert_allclose(KtK, eye, atol=tol)


def test_norm_preserved_on_a_large_grid():
    k = CayleyConv((256, 256), 3, channels=3)  # K would be 196,608 x 196,608
    theta = k.random_theta(0, np.float32)
    X = np.random.default_rng(1).standard_normal((2, *k.in_shape)).astype(np.float32)
    Y = k.apply(theta, X)
    assert Y.dtype == np.float32
    np.testing.assert_allclose(
        np.linalg.norm(Y.reshape(2, -1), axis=1), np.linalg.norm(X.reshape(2, -1), axis=1), rtol=1e-5
    )


def test_spectral_norm_is_one_and_eigvals_lie_on_the_unit_circle(rng):
    k = CayleyConv((6, 5), (3, 3), channels=2)
    theta = 2 * k.random_theta(rng)
    tol = default_rtol(np.float64, k.shape[0])
    assert structops.solvers.spectral_norm(k, theta) == pytest.approx(1.0, abs=tol)
    assert structops.solvers.cond(k, theta) == pytest.approx(1.0, abs=tol)
    ev = structops.solvers.eigvals(k, theta)
    assert ev.shape == (6, 5, 2)
    np.testing.assert_allclose(np.abs(ev), 1.0, atol=tol)
    dense = np.linalg.eigvals(reference(theta, k.grid, k.stencil, 2))
    np.testing.assert_allclose(np.sort(np.angle(ev.ravel())), np.sort(np.angle(dense)), atol=1e-10)


def test_fourier_blocks_are_unitary_and_those_of_the_dense_matrix(rng):
    k = CayleyConv((4, 5), (3, 2), channels=2)
    theta = k.random_theta(rng)
    S = k.diagonalize(theta).full_blocks()
    np.testing.assert_allclose(np.conj(np.swapaxes(S, -1, -2)) @ S, np.broadcast_to(np.eye(2), S.shape), atol=1e-14)
    x = rng.standard_normal(k.in_shape)
    yf = np.einsum("...oc,c...->o...", S, np.fft.fftn(x, axes=(1, 2)))
    np.testing.assert_allclose(np.fft.ifftn(yf, axes=(1, 2)).real, k.apply(theta, x), atol=1e-13)


@pytest.mark.parametrize("transpose", [False, True], ids=["K", "KT"])
def test_jacobian_is_the_dense_formula(case, transpose, rng):
    grid, stencil, c = case
    k = CayleyConv(grid, stencil, channels=c)
    theta, v = k.random_theta(rng), k.random_theta(rng)
    X = rng.standard_normal((3, k.shape[0]))
    A, K = generator(theta, grid, stencil, c), reference(theta, grid, stencil, c)
    Av, eye = generator(v, grid, stencil, c), np.eye(K.shape[0])
    dK = -np.linalg.solve(eye + A, Av @ (eye + K))
    dM = dK.T if transpose else dK
    tol = atol_for(X, size=K.shape[0], cond=np.linalg.cond(eye + A))
    np.testing.assert_allclose((k.jac(theta, X, transpose) @ v).ravel(), (X @ dM.T).ravel(), atol=tol)


@pytest.mark.parametrize("transpose", [False, True], ids=["K", "KT"])
def test_gradient_and_product_in_chunks_are_the_dense_formula(case, transpose, rng, monkeypatch):
    """J^T w (the spectral gradient, summed) and K x with the examples in chunks of two against the dense formulas."""
    from structops.kernels.conv import cayley

    grid, stencil, c = case
    k = CayleyConv(grid, stencil, channels=c)
    half = int(np.prod(grid[:-1])) * (grid[-1] // 2 + 1)
    monkeypatch.setattr(cayley, "CHUNK_BYTES", 2 * 16 * c * half)  # two examples a chunk (8 in the Gram's)
    theta = k.random_theta(rng)
    X, W = rng.standard_normal((5, k.shape[0])), rng.standard_normal((5, k.shape[0]))
    A, K = generator(theta, grid, stencil, c), reference(theta, grid, stencil, c)
    eye = np.eye(K.shape[0])
    M = K.T if transpose else K
    tol = atol_for(X, size=K.shape[0], cond=np.linalg.cond(eye + A))
    np.testing.assert_allclose(k.apply(theta, X, transpose=transpose).reshape(5, -1), X @ M.T, atol=tol)
    # column j of the dense Jacobian: the derivative along the j-th unit vector of theta
    cols = []
    for j in range(k.nparams):
        dK = -np.linalg.solve(eye + A, generator(np.eye(k.nparams)[j], grid, stencil, c) @ (eye + K))
        cols.append((X @ (dK if transpose else dK.T)).ravel())
    expected = np.stack(cols, axis=1).T @ W.ravel()
    np.testing.assert_allclose(k.jac(theta, X, transpose).H @ W.ravel(), expected, atol=tol * np.abs(W).sum())


@pytest.mark.parametrize("transpose", [False, True], ids=["K", "KT"])
def test_jacobian_taylor_order_two(case, dtype, transpose, rng):
    grid, stencil, c = case
    k = CayleyConv(grid, stencil, channels=c)
    theta, v = k.random_theta(rng, dtype), k.random_theta(rng, dtype)
    X = rng.standard_normal((3, *k.in_shape)).astype(dtype)
    J = k.jac(theta, X, transpose)
    res = taylor_test(lambda t: k.apply(t, X, transpose=transpose), J, theta, v, h0=0.25, nsteps=10)
    assert res.passed, str(res)
    if dtype == np.float64 and int(np.prod(grid)) > 1:
        assert res.regime == "quadratic", str(res)
        informative = (res.E1[:-1] > res.floor[:-1]) & (res.E1[1:] > res.floor[1:])
        assert np.median(res.order1[informative][-3:]) == pytest.approx(2.0, abs=0.25)


def test_check_kernel_passes(case, dtype):
    grid, stencil, c = case
    report = check_kernel(CayleyConv(grid, stencil, channels=c), dtype=dtype)
    assert report.passed, str(report)


def test_has_no_Q():
    k = CayleyConv((4, 4), 3)
    assert not k.linear
    with pytest.raises(TypeError, match="not affine"):
        _ = k.Q


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        (((4, 4, 4, 4), 3), {}, ValueError, "`grid`"),
        (((6, 6), (3,)), {}, ValueError, "`stencil`"),
        (((6, 6), 0), {}, ValueError, "`stencil`"),
        (((6, 6), 3), {"channels": 0}, ValueError, "`channels`"),
        (((6, 6), 3), {"channels": "2"}, TypeError, "`channels`"),
        (((6, 6), 3), {"bc": "zero"}, TypeError, "bc"),
    ],
)
def test_bad_input_names_the_argument(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        CayleyConv(*args, **kwargs)


def test_bad_theta_names_theta():
    k = CayleyConv((6, 6), 3)
    with pytest.raises(ValueError, match="`theta`"):
        k.apply(np.zeros(4), np.zeros((1, 1, 6, 6)))
    with pytest.raises(ValueError, match="`theta`"):
        k.op(np.full(9, np.inf))


# ------------------------------------------------------------------------ properties
@st.composite
def cayley_kernels(draw):
    ndim = draw(st.integers(1, 2))
    grid = tuple(draw(st.integers(1, 6)) for _ in range(ndim))
    stencil = tuple(draw(st.integers(1, 4)) for _ in range(ndim))
    channels = draw(st.integers(1, 2))
    # one channel, periodic, stencils along axes of at most 2 points only: C is symmetric, A = 0 and K = I
    # exactly, and the Jacobian (zero) is only the round-off of C v - C^T v (see AntisymmetricConv)
    assume(channels > 1 or any(g > 2 and s > 1 for g, s in zip(grid, stencil)))
    return CayleyConv(grid, stencil, channels=channels)


@settings(max_examples=examples(15), deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(k=cayley_kernels(), seed=st.integers(0, 2**16), scale=st.floats(0.01, 10.0))
def test_property_cayley_conv_is_orthogonal_and_its_formula(k, seed, scale):
    rng = np.random.default_rng(seed)
    theta = scale * k.random_theta(rng)
    K = k.matrix(theta)
    kappa = np.linalg.cond(np.eye(K.shape[0]) + generator(theta, k.grid, k.stencil, k.channels))  # of the solve
    assert np.abs(K.T @ K - np.eye(K.shape[0])).max() <= default_rtol(np.float64, K.shape[0]) * kappa
    assert rel(K, reference(theta, k.grid, k.stencil, k.channels)) <= default_rtol(np.float64, K.shape[0])
    for dtype in (np.float32, np.float64):
        report = check_kernel(k, dtype=dtype, rng=seed)
        assert report.passed, str(report)


def test_diagonalize_is_the_fourier_multiplier_of_unitary_blocks(rng):
    k = CayleyConv((6, 5), 3, channels=2)
    theta = k.random_theta(rng)
    D = k.diagonalize(theta)
    assert D.transform == "fft" and D.unitary and D.similarity
    np.testing.assert_allclose(D.todense(), k.matrix(theta), atol=atol_for(k.matrix(theta)))
    np.testing.assert_allclose(D.singular_values(), 1.0, atol=default_rtol(np.float64, k.shape[0]))
    assert structops.solvers.route(k, theta, "spectral_norm").name == "fourier"
    Kinv = structops.solvers.inverse(k, theta)  # K^{-1} = K^T, from the conjugate-transposed blocks
    np.testing.assert_allclose(Kinv.todense(), k.matrix(theta).T, atol=atol_for(k.matrix(theta)))


def test_empty_batch(dtype):
    k = CayleyConv((5, 4), 3, channels=2)
    theta = k.random_theta(0, dtype)
    X = np.zeros((0, *k.in_shape), dtype=dtype)
    assert k.apply(theta, X).shape == (0, *k.out_shape)
    assert k.apply(theta, X, transpose=True).dtype == dtype
    assert (k.jac(theta, X).H @ np.zeros(0, dtype=dtype)).shape == (k.nparams,)
    assert check_kernel(k, dtype=dtype, nexamples=0).passed
