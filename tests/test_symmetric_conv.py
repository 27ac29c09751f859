"""structops.SymmetricConv against references built independently in the test.

The reference matrix is assembled entry by entry from the convolution's definition

    z_i = sum_j w_j x_{i + c - j},   c = s // 2 per axis,

with each boundary's index rule written out here (zero: skip, periodic: mod, reflect: mirror
without repeating the edge, symmetric: mirror repeating the edge, replicate: clip; valid: no
padding), and the full stencil written out here from the family's definition: tap ``j`` is
theta at the absolute offsets ``|j - c|`` (or, isotropic, at those offsets sorted).
``reference_matrix`` (the builder of test_conv.py, for stencils given as an array) is shared
with test_mmatrix_conv.py and test_dct_solvers.py.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import numpy as np
import pylops
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import structops
from structops import Conv, SymmetricConv
from structops.testing import check_kernel, default_rtol

from ._helpers import atol_for, examples
from .test_conv import reference_matrix as conv_reference

BCS = ("zero", "periodic", "reflect", "symmetric", "replicate", "valid")


# ----------------------------------------------------------------------------- reference
def reference_matrix(stencils, grid, bc: str, stride=1) -> np.ndarray:
    """Dense K for full stencils of shape ``(cout, cin, *stencil)``, entry by entry, in float64.

    The entry-by-entry builder of test_conv.py (its ``bc_index`` writes out every boundary's
    index rule, ``symmetric`` included), for stencils given as an array.
    """
    stencils = np.asarray(stencils, dtype=np.float64)
    cout, cin = stencils.shape[:2]
    return conv_reference(stencils.ravel(), tuple(grid), stencils.shape[2:], bc, cin, cout, stride)


def reference_stencils(theta, stencil, cin, cout, symmetry) -> np.ndarray:
    """Full stencils from theta, by the family's definition (first orthant in C-order)."""
    centre = [s // 2 for s in stencil]
    orthant = list(itertools.product(*(range(c + 1) for c in centre)))
    keys = [o for o in orthant if list(o) == sorted(o)] if symmetry == "isotropic" else orthant
    p1 = len(keys)
    theta = np.asarray(theta, dtype=np.float64).reshape(cout, cin, p1)
    w = np.zeros((cout, cin, *stencil))
    for o, c in itertools.product(range(cout), range(cin)):
        for j in itertools.product(*(range(s) for s in stencil)):
            off = tuple(abs(ja - ca) for ja, ca in zip(j, centre))
            key = tuple(sorted(off)) if symmetry == "isotropic" else off
            w[(o, c, *j)] = theta[o, c, keys.index(key)]
    return w


def rel(actual, desired) -> float:
    actual, desired = np.asarray(actual, dtype=np.float64), np.asarray(desired, dtype=np.float64)
    scale = max(np.linalg.norm(desired), np.linalg.norm(actual), np.finfo(np.float64).tiny)
    return float(np.linalg.norm(actual - desired) / scale)


# ------------------------------------------------------------------------------ cases
class Case(NamedTuple):
    grid: tuple[int, ...]
    stencil: tuple[int, ...]
    cin: int
    cout: int
    stride: tuple[int, ...]
    symmetry: str

    def kernel(self, bc: str) -> SymmetricConv:
        return SymmetricConv(self.grid, self.stencil, bc=bc, in_channels=self.cin, out_channels=self.cout,
                             stride=self.stride, symmetry=self.symmetry)  # fmt: skip


# every stencil fits its grid (s <= grid), so every bc accepts every case
CASES = {
    "1d": Case((7,), (3,), 1, 1, (1,), "double"),
    "1d-5-ch-stride2": Case((6,), (5,), 2, 3, (2,), "double"),
    "1d-size1": Case((1,), (1,), 1, 2, (1,), "double"),
    "2d-3x5": Case((5, 6), (3, 5), 1, 1, (1, 1), "double"),
    "2d-iso-ch": Case((4, 5), (3, 3), 2, 2, (1, 2), "isotropic"),
    "2d-iso-5x5": Case((5, 6), (5, 5), 1, 1, (1, 1), "isotropic"),
    "2d-size1-axis": Case((1, 6), (1, 3), 1, 1, (1, 1), "double"),
    "3d": Case((3, 3, 4), (3, 3, 1), 1, 2, (1, 1, 2), "double"),
    "3d-iso": Case((3, 4, 3), (3, 3, 3), 1, 1, (1, 1, 1), "isotropic"),
}


@pytest.fixture(params=list(CASES), ids=list(CASES))
def case(request) -> Case:
    return CASES[request.param]


# ------------------------------------------------------------------------ parameters
@pytest.mark.parametrize(
    ("stencil", "symmetry", "p"),
    [
        ((3, 3), "double", 4),
        ((5, 5), "double", 9),
        ((3, 5), "double", 6),
        ((5,), "double", 3),
        ((3, 3, 3), "double", 8),
        ((3, 3), "isotropic", 3),
        ((5, 5), "isotropic", 6),
        ((3, 3, 3), "isotropic", 4),
        ((1, 1), "isotropic", 1),
    ],
)
def test_nparams_counts_the_first_orthant(stencil, symmetry, p):
    grid = tuple(max(s, 2) for s in stencil)
    assert SymmetricConv(grid, stencil, symmetry=symmetry).nparams == p
    assert SymmetricConv(grid, stencil, symmetry=symmetry, in_channels=2, out_channels=3).nparams == 6 * p


def test_theta_is_the_first_orthant_in_c_order(rng):
    k = SymmetricConv((6, 6), (5, 3))
    theta = rng.standard_normal(k.nparams)
    w = k.weights(theta)[0, 0]
    assert np.array_equal(w[2:, 1:].ravel(), theta)
    # centre, the neighbour along axis 1, the neighbour along axis 0, the corner (3x3)
    w3 = SymmetricConv((4, 4), (3, 3)).weights(np.array([1.0, 2.0, 3.0, 4.0]))[0, 0]
    assert np.array_equal(w3, [[4, 3, 4], [2, 1, 2], [4, 3, 4]])
    iso = SymmetricConv((6, 6), (5, 5), symmetry="isotropic").weights(np.arange(1.0, 7.0))[0, 0]
    # offsets (0,0) (0,1) (0,2) (1,1) (1,2) (2,2)
    assert iso[2, 2] == 1 and iso[2, 3] == iso[3, 2] == 2 and iso[2, 4] == iso[0, 2] == 3
    assert iso[3, 3] == 4 and iso[3, 4] == iso[4, 1] == 5 and iso[4, 4] == iso[0, 0] == 6


def test_stencils_are_mirror_symmetric(case, rng):
    k = case.kernel("zero")
    theta = rng.standard_normal(k.nparams)
    w = k.weights(theta)
    for axis in range(2, w.ndim):
        assert np.array_equal(w, np.flip(w, axis=axis))
    if case.symmetry == "isotropic":
        for perm in itertools.permutations(range(2, w.ndim)):
            assert np.array_equal(w, np.transpose(w, (0, 1, *perm)))
    assert np.array_equal(w, reference_stencils(theta, case.stencil, case.cin, case.cout, case.symmetry))


# ------------------------------------------------------------------------ references
@pytest.mark.parametrize("bc", BCS)
def test_matrix_matches_entrywise_reference(case, bc, dtype, rng):
    k = case.kernel(bc)
    theta = rng.standard_normal(k.nparams).astype(dtype)
    R = reference_matrix(reference_stencils(theta, case.stencil, case.cin, case.cout, case.symmetry),
                         case.grid, bc, case.stride)  # fmt: skip
    M = k.matrix(theta)
    assert M.dtype == dtype
    assert rel(M, R) <= default_rtol(dtype, max(R.shape))
    X = rng.standard_normal((3, *k.in_shape)).astype(dtype)
    assert rel(k.apply(theta, X).reshape(3, -1), X.reshape(3, -1) @ R.T) <= default_rtol(dtype, max(R.shape))


@pytest.mark.parametrize("bc", BCS)
def test_check_kernel_passes(case, bc, dtype):
    report = check_kernel(case.kernel(bc), dtype=dtype, rng=1)
    assert report.passed, str(report)


def test_Q_is_sparse_conv_Q_times_P(rng):
    k = SymmetricConv((5, 4), (3, 3), in_channels=2)
    assert sp.issparse(k.Q)
    assert (k.Q != sp.csc_array(k.conv.Q @ k.P)).nnz == 0
    theta = rng.standard_normal(k.nparams)
    assert rel(k.Q @ theta, k.matrix(theta).ravel(order="F")) <= default_rtol(np.float64, 100)


def test_gradient_sums_mirrored_taps(rng):
    """J^T w of the family is P^T times the full stencil's gradient (the chain rule)."""
    k = SymmetricConv((6, 5), (3, 3))
    theta, X = rng.standard_normal(k.nparams), rng.standard_normal((4, 1, 6, 5))
    W = rng.standard_normal((4, 1, 6, 5))
    g = k.jac(theta, X).H @ W.ravel()
    g_full = k.conv.jac(k.weights(theta).ravel(), X).H @ W.ravel()
    assert rel(g, k.P.T @ g_full) <= default_rtol(np.float64, 1000)


# ------------------------------------------------------------------------- symmetry
@pytest.mark.parametrize("bc", ("zero", "periodic", "symmetric"))
@pytest.mark.parametrize(("grid", "stencil", "symmetry"), [((7,), (5,), "double"), ((4, 5), (3, 5), "double"),
                                                           ((5, 5), (3, 3), "isotropic"),
                                                           ((3, 2, 3), (3, 3, 3), "double")])  # fmt: skip
def test_single_channel_matrix_is_symmetric(bc, grid, stencil, symmetry, rng):
    k = SymmetricConv(grid, stencil, bc=bc, symmetry=symmetry)
    M = k.matrix(rng.standard_normal(k.nparams))
    assert np.array_equal(M, M.T)


def test_reflect_matrix_is_not_symmetric():
    """Whole-sample mirror folds the mirrored tap onto the second sample: K[0, 1] = 2 w_1, K[1, 0] = w_1."""
    M = SymmetricConv(5, 3, bc="reflect").matrix(np.array([2.0, -1.0]))
    assert M[0, 1] == -2.0 and M[1, 0] == -1.0


@pytest.mark.parametrize("bc", ("zero", "periodic", "symmetric"))
def test_cg_and_minres_solve_symmetric_systems(bc, rng):
    k = SymmetricConv((12, 10), (3, 3), bc=bc)
    theta = np.array([4.0, -1.0, -1.0, 0.0])  # the 5-point Laplacian: positive semidefinite
    A = k.op(theta) + 0.5 * pylops.Identity(120)  # K + I/2: positive definite
    b = rng.standard_normal(120)
    x, info = spla.cg(A, b, rtol=1e-10, maxiter=500)
    assert info == 0
    M = k.matrix(theta) + 0.5 * np.eye(120)
    assert rel(x, np.linalg.solve(M, b)) <= 1e-8
    indefinite = np.array([0.5, -1.0, 0.3, 0.2])
    y, info = spla.minres(k.op(indefinite), b, rtol=1e-12, maxiter=2000)
    Mi = k.matrix(indefinite)
    assert info == 0
    assert np.linalg.norm(Mi @ y - b) <= 1e-6 * np.linalg.norm(b)


@pytest.mark.parametrize("grid", [(8,), (6, 5), (3, 4, 2)])
def test_periodic_eigenvalues_are_real_and_exact(grid, dtype, rng):
    k = SymmetricConv(grid, (3,) * len(grid), bc="periodic")
    theta = rng.standard_normal(k.nparams).astype(dtype)
    lam = k.eigvals(theta)
    assert lam.shape == grid and not np.iscomplexobj(lam) and lam.dtype == dtype
    assert np.array_equal(structops.solvers.eigvals(k, theta), lam)
    dense = np.linalg.eigvalsh(k.matrix(theta).astype(np.float64))
    assert rel(np.sort(lam.ravel()), dense) <= default_rtol(dtype, lam.size)


def test_periodic_solvers_go_through_the_symbol(rng):
    k = SymmetricConv((6, 6), (3, 3), bc="periodic")
    theta = k.random_theta(rng)
    M = k.matrix(theta)
    A, B = M + 3 * np.eye(36), 0.2 * M.T @ M + np.eye(36)
    tol = default_rtol(np.float64, 36)
    assert rel(structops.solvers.inverse(k, theta, alpha=3.0).todense(), np.linalg.inv(A)) <= tol * np.linalg.cond(A)
    step = structops.solvers.implicit_step(k, theta, 0.2).todense()
    assert rel(step, np.linalg.inv(B)) <= tol * np.linalg.cond(B)


def test_dct_type():
    assert SymmetricConv(6, 3, bc="reflect").dct_type == 1
    assert SymmetricConv(6, 3, bc="symmetric").dct_type == 2
    assert SymmetricConv(6, 3, bc="periodic").dct_type is None
    assert SymmetricConv(6, 3, bc="symmetric", in_channels=2).dct_type is None
    assert SymmetricConv(6, 3, bc="symmetric", stride=2).dct_type is None


# ------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        (((6, 6), (4, 3)), {}, ValueError, r"`stencil` must have odd sizes.*\(4, 3\).*no centre"),
        (((6,), (2,)), {}, ValueError, r"odd sizes"),
        (((6, 6), (3, 5)), {"symmetry": "isotropic"}, ValueError, r"equal sizes.*isotropic.*\(3, 5\)"),
        (((6, 6), 3), {"symmetry": "radial"}, ValueError, r"`symmetry` must be one of .*'radial'"),
        (((6, 6), 3), {"bc": "mirror"}, ValueError, r"`bc` must be one of .*'mirror'"),
        (((2, 2, 2, 2), 1), {}, ValueError, r"`grid` must have 1, 2 or 3 axes"),
        (((6, 6), (3, 3, 3)), {}, ValueError, r"`stencil` must have 2 entries"),
        (((6, 6), 3), {"in_channels": 0}, ValueError, r"in_channels"),
        (((6, 6), 3), {"out_channels": 1.5}, TypeError, r"out_channels"),
        (((2,), 5), {"bc": "reflect"}, ValueError, r"too large for bc='reflect'"),
        (((1,), 5), {"bc": "symmetric"}, ValueError, r"too large for bc='symmetric'"),
    ],
)
def test_bad_input_names_the_argument(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        SymmetricConv(*args, **kwargs)


def test_eigvals_needs_periodic_or_mirror():
    with pytest.raises(ValueError, match="periodic"):
        SymmetricConv(6, 3).eigvals(np.ones(2))


# ------------------------------------------------------------------------ properties
PROPERTY_BCS = ("zero", "periodic", "reflect", "replicate", "symmetric")


@st.composite
def symmetric_kernels(draw):
    ndim = draw(st.integers(1, 2))
    grid = tuple(draw(st.integers(1, 6)) for _ in range(ndim))
    bc = draw(st.sampled_from(PROPERTY_BCS))
    reach = [g - 1 if bc == "reflect" else g for g in grid]  # the largest s // 2 the bc takes
    symmetry = draw(st.sampled_from(("double", "isotropic")))
    if symmetry == "isotropic":
        half = draw(st.integers(0, min(min(reach), 2)))
        stencil = (2 * half + 1,) * ndim
    else:
        stencil = tuple(2 * draw(st.integers(0, min(r, 2))) + 1 for r in reach)
    cin, cout = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    stride = tuple(draw(st.integers(1, 2)) for _ in grid)
    return SymmetricConv(grid, stencil, bc=bc, in_channels=cin, out_channels=cout, stride=stride, symmetry=symmetry)


@settings(max_examples=examples(15), deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(k=symmetric_kernels(), seed=st.integers(0, 2**16))
def test_property_symmetric_conv_is_its_entrywise_matrix(k, seed):
    rng = np.random.default_rng(seed)
    theta = rng.standard_normal(k.nparams)
    stencils = reference_stencils(theta, k.stencil, k.in_channels, k.out_channels, k.symmetry)
    R = reference_matrix(stencils, k.grid, k.bc, k.stride)
    assert rel(k.matrix(theta), R) <= default_rtol(np.float64, max(R.shape))
    # the same convolution as a Conv of the full stencil
    conv = Conv(k.grid, k.stencil, bc=k.bc, in_channels=k.in_channels, out_channels=k.out_channels, stride=k.stride)
    X = rng.standard_normal((2, *k.in_shape))
    assert rel(k.apply(theta, X), conv.apply(stencils.ravel(), X)) <= default_rtol(np.float64, max(R.shape))
    if (
        k.in_channels == k.out_channels == 1
        and all(s == 1 for s in k.stride)
        and k.bc in ("zero", "periodic", "symmetric")
    ):
        assert np.allclose(R, R.T, rtol=0, atol=atol_for(R))
    for dtype in (np.float32, np.float64):
        report = check_kernel(k, dtype=dtype, rng=seed)
        assert report.passed, str(report)
