"""structops.AntisymmetricConv against references built independently in the test.

The reference is ``R - R^T`` with ``R`` the convolution assembled entry by entry from its
definition (test_conv.reference_matrix); the spectrum is checked against numpy.linalg.eigvals
of that dense matrix.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import structops
from structops import AntisymmetricConv, Conv
from structops.testing import check_kernel, default_rtol, taylor_test

from ._helpers import atol_for, examples
from .test_conv import reference_matrix
from .test_symmetric_conv import rel

BCS = ("zero", "periodic")
CASES = {
    "1d-3": ((7,), (3,), 1),
    "1d-even-ch2": ((6,), (4,), 2),
    "1d-size1": ((1,), (1,), 1),
    "2d-3x3": ((5, 6), (3, 3), 1),
    "2d-3x2-ch3": ((4, 5), (3, 2), 3),
    "3d": ((3, 3, 4), (3, 1, 3), 2),
}


@pytest.fixture(params=list(CASES), ids=list(CASES))
def case(request):
    return CASES[request.param]


@pytest.fixture(params=BCS)
def bc(request):
    return request.param


def reference(theta, grid, stencil, bc, channels) -> np.ndarray:
    R = reference_matrix(theta, grid, stencil, bc, channels, channels)
    return R - R.T


def test_matrix_is_the_entrywise_reference(case, bc, dtype, rng):
    grid, stencil, c = case
    k = AntisymmetricConv(grid, stencil, bc=bc, channels=c)
    theta = k.random_theta(rng, dtype)
    K = k.matrix(theta)
    assert K.dtype == dtype
    assert rel(K, reference(theta, grid, stencil, bc, c)) <= default_rtol(dtype, K.shape[0])


def test_matrix_is_conv_minus_its_transpose_and_exactly_antisymmetric(case, bc, rng):
    grid, stencil, c = case
    k = AntisymmetricConv(grid, stencil, bc=bc, channels=c)
    theta = k.random_theta(rng)
    C = Conv(grid, stencil, bc=bc, in_channels=c, out_channels=c).matrix(theta)
    K = k.matrix(theta)
    np.testing.assert_allclose(K, C - C.T, rtol=0, atol=atol_for(C))
    np.testing.assert_array_equal(K, -K.T)
    np.testing.assert_array_equal(np.diag(K), 0.0)


def test_apply_transpose_is_negation_and_x_is_orthogonal_to_Kx(case, bc, dtype, rng):
    grid, stencil, c = case
    k = AntisymmetricConv(grid, stencil, bc=bc, channels=c)
    theta = k.random_theta(rng, dtype)
    X = rng.standard_normal((4, *k.in_shape)).astype(dtype)
    Y = k.apply(theta, X)
    assert Y.dtype == dtype and Y.shape == X.shape
    np.testing.assert_allclose(k.apply(theta, X, transpose=True), -Y, rtol=default_rtol(dtype), atol=0)
    # <x, K x> = 0 for an antisymmetric K: the flow dy/dt = K y conserves the norm
    inner = np.sum(X.astype(np.float64) * Y, axis=tuple(range(1, X.ndim)))
    assert np.abs(inner).max() <= default_rtol(dtype, X[0].size) * np.linalg.norm(X) * np.linalg.norm(Y)


def test_Q_is_sparse_and_gives_vec_K(case, bc, rng):
    grid, stencil, c = case
    k = AntisymmetricConv(grid, stencil, bc=bc, channels=c)
    theta = k.random_theta(rng)
    Q = k.Q
    assert Q.shape == (k.shape[0] * k.shape[1], k.nparams)
    assert Q.nnz <= 2 * k.conv.Q.nnz
    np.testing.assert_allclose(Q @ theta, k.matrix(theta).ravel(order="F"), atol=1e-12)
    assert k.q is None


@pytest.mark.parametrize("channels", [1, 3])
def test_periodic_eigvals_are_every_eigenvalue_and_purely_imaginary(channels, rng):
    k = AntisymmetricConv((5, 6), (3, 3), bc="periodic", channels=channels)
    theta = k.random_theta(rng)
    ev = structops.solvers.eigvals(k, theta)
    assert ev.shape == ((5, 6) if channels == 1 else (5, 6, channels))
    assert np.abs(ev.real).max() <= atol_for(ev, size=k.shape[0])  # eigenvalues of skew-Hermitian blocks
    assert np.abs(k.eigvals(theta).real).max() == 0.0  # the family's own: exactly imaginary
    dense = np.linalg.eigvals(reference(theta, k.grid, k.stencil, "periodic", channels))
    np.testing.assert_allclose(np.sort(ev.imag.ravel()), np.sort(dense.imag), atol=atol_for(dense))


def test_fourier_blocks_are_skew_hermitian_and_block_diagonalise_K(rng):
    k = AntisymmetricConv((4, 5), (3, 2), bc="periodic", channels=2)
    theta = k.random_theta(rng)
    S = k.diagonalize(theta).full_blocks()
    np.testing.assert_allclose(S, -np.conj(np.swapaxes(S, -1, -2)), atol=atol_for(S, size=theta.size))
    x = rng.standard_normal(k.in_shape)
    xf = np.fft.fftn(x, axes=(1, 2))
    yf = np.einsum("...oc,c...->o...", S, xf)
    y = k.apply(theta, x)
    np.testing.assert_allclose(np.fft.ifftn(yf, axes=(1, 2)).real, y, atol=atol_for(y, size=k.shape[0]))


def test_zero_bc_eigenvalues_are_purely_imaginary(rng):
    k = AntisymmetricConv((6, 5), 3, channels=2)
    ev = structops.solvers.eigvals(k, k.random_theta(rng), k=8)
    # Arnoldi's eigenvalues of a normal matrix: accurate to eps times the norm, the size and its restarts
    assert np.abs(ev.real).max() <= atol_for(ev, size=k.shape[0]) * np.sqrt(k.shape[0])


@pytest.mark.parametrize("bc", ["reflect", "symmetric", "replicate", "valid", "circular"])
def test_other_boundaries_are_refused_naming_bc(bc):
    with pytest.raises(ValueError, match=r"`bc` must be one of \('zero', 'periodic'\).*not a convolution"):
        AntisymmetricConv((6, 6), 3, bc=bc)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"grid": (4, 4, 4, 4), "stencil": 3}, ValueError, "`grid`"),
        ({"grid": (6, 6), "stencil": (3,)}, ValueError, "`stencil`"),
        ({"grid": (6, 6), "stencil": 0}, ValueError, "`stencil`"),
        ({"grid": (6, 6), "stencil": 3, "channels": 0}, ValueError, "`channels`"),
        ({"grid": (6, 6), "stencil": 3, "channels": 1.5}, TypeError, "`channels`"),
    ],
)
def test_bad_geometry_names_the_argument(kwargs, error, match):
    with pytest.raises(error, match=match):
        AntisymmetricConv(**kwargs)


def test_bad_theta_names_theta():
    k = AntisymmetricConv((6, 6), 3, channels=2)
    with pytest.raises(ValueError, match="`theta`"):
        k.apply(np.zeros(5), np.zeros((1, 2, 6, 6)))
    with pytest.raises(ValueError, match="`theta`"):
        k.matrix(np.full(k.nparams, np.nan))


@pytest.mark.parametrize("transpose", [False, True], ids=["K", "KT"])
def test_jacobian_is_exact_taylor(case, bc, dtype, transpose, rng):
    grid, stencil, c = case
    k = AntisymmetricConv(grid, stencil, bc=bc, channels=c)
    theta, v = k.random_theta(rng, dtype), k.random_theta(rng, dtype)
    X = rng.standard_normal((3, *k.in_shape)).astype(dtype)
    res = taylor_test(lambda t: k.apply(t, X, transpose=transpose), k.jac(theta, X, transpose), theta, v, h0=0.25)
    assert res.passed and res.regime == "roundoff", str(res)


def test_check_kernel_passes(case, bc, dtype):
    grid, stencil, c = case
    report = check_kernel(AntisymmetricConv(grid, stencil, bc=bc, channels=c), dtype=dtype)
    assert report.passed, str(report)


def test_large_grid_never_densifies():
    k = AntisymmetricConv((512, 512), 3, channels=2, bc="periodic")  # K would be 524,288 x 524,288
    theta = k.random_theta(0, np.float32)
    X = np.ones((1, *k.in_shape), dtype=np.float32)
    Y = k.apply(theta, X)
    # a constant image: C x and C^T x are the channel mix of the stencil sums and its transpose
    mix = theta.reshape(2, 2, 9).sum(axis=-1)
    np.testing.assert_allclose(Y[0, :, 7, 11], (mix - mix.T).sum(axis=1), rtol=1e-5)
    g = k.jac(theta, X).H @ np.ones(X.size, dtype=np.float32)
    assert g.shape == (k.nparams,) and g.dtype == np.float32


# ------------------------------------------------------------------------ properties
@st.composite
def antisymmetric_kernels(draw):
    ndim = draw(st.integers(1, 2))
    grid = tuple(draw(st.integers(1, 6)) for _ in range(ndim))
    stencil = tuple(draw(st.integers(1, 4)) for _ in range(ndim))
    bc, channels = draw(st.sampled_from(BCS)), draw(st.integers(1, 2))
    # one channel, stencils along axes of at most 2 points only: C can be symmetric and K = 0, whose
    # computed form is only the round-off of C x - C^T x (no relative accuracy to check)
    assume(channels > 1 or any(g > 2 and s > 1 for g, s in zip(grid, stencil)))
    return AntisymmetricConv(grid, stencil, bc=bc, channels=channels)


@settings(max_examples=examples(15), deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(k=antisymmetric_kernels(), seed=st.integers(0, 2**16))
def test_property_antisymmetric_conv_is_its_reference_and_antisymmetric(k, seed):
    rng = np.random.default_rng(seed)
    theta = k.random_theta(rng)
    K = k.matrix(theta)
    R = reference(theta, k.grid, k.stencil, k.bc, k.channels)
    assert rel(K, R) <= default_rtol(np.float64, max(R.shape))
    np.testing.assert_array_equal(K, -K.T)
    for dtype in (np.float32, np.float64):
        report = check_kernel(k, dtype=dtype, rng=seed)
        assert report.passed, str(report)


def test_diagonalize_periodic_only(rng):
    k = AntisymmetricConv((6, 5), 3, bc="periodic", channels=2)
    theta = k.random_theta(rng)
    D = k.diagonalize(theta)
    assert D.transform == "fft" and D.similarity
    np.testing.assert_allclose(D.todense(), k.matrix(theta), atol=atol_for(k.matrix(theta)))
    assert structops.solvers.route(k, theta, "eigvals").name == "fourier"
    assert AntisymmetricConv((6, 5), 3, channels=2).diagonalize(theta) is None


def test_empty_batch(bc, dtype):
    k = AntisymmetricConv((5, 4), 3, bc=bc, channels=2)
    theta = k.random_theta(0, dtype)
    X = np.zeros((0, *k.in_shape), dtype=dtype)
    assert k.apply(theta, X).shape == (0, *k.out_shape)
    assert (k.jac(theta, X).H @ np.zeros(0, dtype=dtype)).shape == (k.nparams,)
    assert check_kernel(k, dtype=dtype, nexamples=0).passed
