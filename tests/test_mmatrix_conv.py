"""structops.MMatrixConv against references built independently in the test.

The full stencils are written out here from the definition (per channel: off-centre taps
``-theta`` in C-order skipping the centre, centre tap the sum of the channel's theta, the
off-diagonal channel blocks zero), and the matrix is assembled entry by entry with the index
rules of test_symmetric_conv.reference_matrix.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import structops
from structops import MMatrixConv, Softplus
from structops.testing import check_kernel, default_rtol

from ._helpers import atol_for, examples
from .test_symmetric_conv import reference_matrix, rel

BCS = ("zero", "periodic", "reflect", "symmetric", "replicate")


def reference_stencils(theta, stencil, channels) -> np.ndarray:
    """Full ``(channels, channels, *stencil)`` stencils from theta, by the definition."""
    S = int(np.prod(stencil))
    theta = np.asarray(theta, dtype=np.float64).reshape(channels, S - 1)
    centre = tuple(s // 2 for s in stencil)
    w = np.zeros((channels, channels, *stencil))
    for k in range(channels):
        t = 0
        for j in itertools.product(*(range(s) for s in stencil)):
            if j == centre:
                continue
            w[(k, k, *j)] = -theta[k, t]
            t += 1
        w[(k, k, *centre)] = theta[k].sum()
    return w


def interior_rows(grid, stencil) -> np.ndarray:
    """Flat indices of the pixels whose whole stencil lies inside the grid."""
    ranges = [range(s // 2, g - s // 2) for g, s in zip(grid, stencil)]
    return np.array([np.ravel_multi_index(i, grid) for i in itertools.product(*ranges)], dtype=int)


CASES = {
    "1d-3": ((7,), (3,), 1),
    "1d-5-ch2": ((6,), (5,), 2),
    "2d-3x3": ((5, 6), (3, 3), 1),
    "2d-3x5-ch3": ((4, 5), (3, 5), 3),
    "2d-size1-axis": ((1, 6), (1, 3), 1),
    "3d": ((3, 3, 4), (3, 1, 3), 2),
}


@pytest.fixture(params=list(CASES), ids=list(CASES))
def case(request):
    return CASES[request.param]


# ------------------------------------------------------------------------ parameters
def test_nparams():
    assert MMatrixConv((28, 28), (3, 3)).nparams == 8
    assert MMatrixConv((28, 28), (5, 5), channels=3).nparams == 72
    assert MMatrixConv(10, 3).nparams == 2


def test_bounds_and_random_theta_are_feasible(rng):
    k = MMatrixConv((6, 6), 3, channels=2)
    lower, upper = k.bounds
    assert np.array_equal(lower, np.zeros(16)) and np.all(upper == np.inf)
    theta = k.random_theta(rng)
    assert k.is_feasible(theta) and np.all(theta > 0)


# ------------------------------------------------------------------------ references
@pytest.mark.parametrize("bc", BCS)
def test_matrix_matches_entrywise_reference(case, bc, dtype, rng):
    grid, stencil, channels = case
    k = MMatrixConv(grid, stencil, bc=bc, channels=channels)
    theta = k.random_theta(rng, dtype)
    R = reference_matrix(reference_stencils(theta, stencil, channels), grid, bc)
    M = k.matrix(theta)
    assert M.dtype == dtype
    assert rel(M, R) <= default_rtol(dtype, max(R.shape))
    assert rel(k.weights(theta), reference_stencils(theta, stencil, channels)) <= default_rtol(dtype, 1)


def test_channels_do_not_mix(rng):
    k = MMatrixConv((4, 5), 3, channels=3)
    M = k.matrix(k.random_theta(rng))
    N = 20
    for a, b in itertools.product(range(3), repeat=2):
        if a != b:
            assert not M[a * N : (a + 1) * N, b * N : (b + 1) * N].any()


@pytest.mark.parametrize("bc", BCS)
def test_check_kernel_passes(case, bc, dtype):
    grid, stencil, channels = case
    report = check_kernel(MMatrixConv(grid, stencil, bc=bc, channels=channels), dtype=dtype, rng=2)
    assert report.passed, str(report)


@pytest.mark.parametrize("bc", ("zero", "periodic"))
def test_softplus_of_mmatrix_conv_passes_check_kernel(bc, dtype, rng):
    inner = MMatrixConv((5, 4), (3, 3), bc=bc, channels=2)
    k = Softplus(inner)
    report = check_kernel(k, dtype=dtype, theta=rng.standard_normal(k.nparams), rng=3)
    assert report.passed, str(report)
    phi = -rng.uniform(1, 3, k.nparams)  # negative phi: still a feasible M-matrix
    assert np.array_equal(k.matrix(phi), inner.matrix(np.logaddexp(0, phi)))


def test_Q_is_sparse_conv_Q_times_P(rng):
    k = MMatrixConv((5, 4), (3, 3), channels=2)
    assert sp.issparse(k.Q)
    theta = k.random_theta(rng)
    assert rel(k.Q @ theta, k.matrix(theta).ravel(order="F")) <= default_rtol(np.float64, 100)


# ------------------------------------------------------------------------- M-matrix
@pytest.mark.parametrize("bc", BCS)
@pytest.mark.parametrize(
    ("grid", "stencil"), [((9,), (3,)), ((6, 7), (3, 3)), ((6, 5), (5, 3)), ((4, 4, 5), (3, 3, 3))]
)
def test_rows_sum_to_zero_in_the_interior(bc, grid, stencil, rng):
    k = MMatrixConv(grid, stencil, bc=bc)
    M = k.matrix(k.random_theta(rng))
    sums = M.sum(axis=1)
    inner = interior_rows(grid, stencil)
    tol = atol_for(M)  # rows of |θ|-sized entries summing to zero
    assert inner.size and np.abs(sums[inner]).max() <= tol
    off = M - np.diag(np.diag(M))
    assert off.max() <= 0 and np.diag(M).min() >= 0
    if bc != "zero":  # every row reads only grid pixels: K 1 = 0 everywhere
        assert np.abs(sums).max() <= tol
    else:  # the border rows lose couplings: strictly dominant there
        assert np.all(sums >= -tol) and sums.max() > 0


@pytest.mark.parametrize(("grid", "stencil", "channels"), [((8,), (3,), 1), ((5, 6), (3, 3), 2), ((4, 5), (5, 3), 1)])
def test_zero_boundary_gives_a_nonsingular_m_matrix(grid, stencil, channels, rng):
    k = MMatrixConv(grid, stencil, channels=channels)
    theta = rng.uniform(0.1, 2.0, k.nparams)
    M = k.matrix(theta)
    inv = np.linalg.inv(M)
    assert inv.min() >= -atol_for(inv, cond=np.linalg.cond(M))
    assert np.linalg.eigvals(M).real.min() > 0


@pytest.mark.parametrize("grid", [(8,), (6, 5)])
def test_periodic_boundary_has_constants_in_the_null_space(grid, rng):
    k = MMatrixConv(grid, (3,) * len(grid), bc="periodic", channels=2)
    theta = k.random_theta(rng)
    ones = np.ones(k.shape[1])
    assert np.abs(k.op(theta) @ ones).max() <= atol_for(k.matrix(theta))
    lam = k.conv.diagonalize(k.weights(theta).ravel()).full_blocks()
    assert np.abs(lam[(0,) * len(grid)]).max() <= atol_for(lam)  # the zero frequency


@pytest.mark.parametrize("h", [0.01, 0.5, 10.0])
def test_periodic_implicit_euler_step_keeps_positivity(h, rng):
    """(I + hK)^{-1} = inverse(K, alpha=1/h) / h maps nonnegative images to nonnegative images."""
    k = MMatrixConv((8, 8), (3, 3), bc="periodic", channels=2)
    theta = k.random_theta(rng)
    step = structops.solvers.inverse(k, theta, alpha=1.0 / h)
    N = k.shape[1]
    dense = np.linalg.inv(np.eye(N) + h * k.matrix(theta))
    kappa = np.linalg.cond(np.eye(N) + h * k.matrix(theta))
    assert rel(step.todense() / h, dense) <= default_rtol(np.float64, N) * kappa
    images = rng.uniform(0, 1, (N, 20)) * (rng.uniform(size=(N, 20)) < 0.3)  # sparse nonnegative images
    out = (step @ images) / h
    assert out.min() >= -atol_for(out, size=N, cond=kappa)
    # mass is conserved (1ᵀK = 0 for a periodic stencil): the diffusion only moves it
    assert rel(out.sum(0), images.sum(0)) <= default_rtol(np.float64, N) * kappa


def test_implicit_step_is_the_normal_flow_which_need_not_keep_positivity(rng):
    """implicit_step is (h KᵀK + I)⁻¹ (the flow of ½‖Kx‖²): KᵀK has positive couplings, so it is no M-matrix."""
    k = MMatrixConv((6, 6), (3, 3), bc="periodic")
    theta = k.random_theta(0)
    M = k.matrix(theta)
    step = structops.solvers.implicit_step(k, theta, 0.01).todense()
    A = 0.01 * M.T @ M + np.eye(36)
    assert rel(step, np.linalg.inv(A)) <= default_rtol(np.float64, 36) * np.linalg.cond(A)
    assert step.min() < 0


@pytest.mark.parametrize("bc", ("periodic", "symmetric", "replicate"))
def test_single_pixel_is_zero(bc, rng):
    """Every coupling of a one-pixel grid reads the pixel itself: the centre cancels them, K = 0."""
    k = MMatrixConv((1, 1), (3, 3), bc=bc)
    theta = k.random_theta(rng)
    assert np.abs(k.matrix(theta)).max() <= default_rtol(np.float64, theta.size) * np.abs(theta).sum()


# ------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("entry", ["matrix", "op", "apply", "jac"])
def test_negative_theta_is_a_value_error_naming_theta(entry):
    k = MMatrixConv((4, 4), 3)
    theta = np.ones(8)
    theta[5] = -0.5
    X = np.ones((1, 1, 4, 4))
    call = {
        "matrix": lambda: k.matrix(theta),
        "op": lambda: k.op(theta),
        "apply": lambda: k.apply(theta, X),
        "jac": lambda: k.jac(theta, X),
    }[entry]
    with pytest.raises(ValueError, match=r"`theta` must be >= 0 .*theta\[5\] = -0.5.*Softplus"):
        call()


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        (((6, 6), (4, 3)), {}, ValueError, r"`stencil` must have odd sizes.*\(4, 3\).*centre"),
        (((6,), 2), {}, ValueError, r"odd sizes"),
        (((6, 6), 3), {"bc": "valid"}, ValueError, r"`bc` must not be 'valid'"),
        (((6, 6), 3), {"bc": "mirror"}, ValueError, r"`bc` must be one of .*'mirror'"),
        (((6, 6), 3), {"channels": 0}, ValueError, r"channels"),
        (((6, 6), 3), {"channels": 2.0}, TypeError, r"channels"),
        (((2, 2, 2, 2), 1), {}, ValueError, r"`grid` must have 1, 2 or 3 axes"),
        (((2,), 5), {"bc": "reflect"}, ValueError, r"too large for bc='reflect'"),
    ],
)
def test_bad_input_names_the_argument(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        MMatrixConv(*args, **kwargs)


# ------------------------------------------------------------------------ properties
@st.composite
def mmatrix_kernels(draw):
    ndim = draw(st.integers(1, 2))
    grid = tuple(draw(st.integers(1, 6)) for _ in range(ndim))
    bc = draw(st.sampled_from(BCS))
    # one pixel with a boundary that reads it back: K = 0 by cancellation (test_single_pixel_is_zero)
    assume(bc == "zero" or int(np.prod(grid)) > 1)
    reach = [g - 1 if bc == "reflect" else g for g in grid]
    stencil = tuple(2 * draw(st.integers(0, min(r, 2))) + 1 for r in reach)
    return MMatrixConv(grid, stencil, bc=bc, channels=draw(st.integers(1, 2)))


@settings(max_examples=examples(15), deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(k=mmatrix_kernels(), seed=st.integers(0, 2**16))
def test_property_mmatrix_conv_is_its_entrywise_m_matrix(k, seed):
    rng = np.random.default_rng(seed)
    theta = k.random_theta(rng)
    R = reference_matrix(reference_stencils(theta, k.stencil, k.channels), k.grid, k.bc)
    M = k.matrix(theta)
    assert rel(M, R) <= default_rtol(np.float64, max(R.shape))
    assert (M - np.diag(np.diag(M))).max() <= 0
    assert M.sum(axis=1).min() >= -atol_for(M)
    for dtype in (np.float32, np.float64):
        report = check_kernel(k, dtype=dtype, rng=seed)
        assert report.passed, str(report)
