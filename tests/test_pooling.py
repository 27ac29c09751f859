"""AvgPool against dense matrices built entry by entry, its adjoint, torch, and bad input."""

from __future__ import annotations

import itertools
from typing import NamedTuple

import numpy as np
import pylops
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from structops.kernels.conv.pooling import AvgPool
from structops.testing import adjoint_test, default_rtol

from ._helpers import atol_for, examples

DTYPES = [np.float32, np.float64]


class Case(NamedTuple):
    grid: tuple[int, ...]
    window: tuple[int, ...]
    remainder: str = "error"


CASES = [
    Case((6,), (2,)),
    Case((6,), (3,)),
    Case((5,), (1,)),
    Case((6,), (6,)),
    Case((4, 6), (2, 3)),
    Case((4, 4), (2, 2)),
    Case((2, 6), (1, 3)),
    Case((1, 5), (1, 5)),
    Case((4, 2, 6), (2, 1, 3)),
    Case((2, 2, 2), (2, 2, 2)),
    Case((7,), (2,), "drop"),
    Case((5, 7), (2, 3), "drop"),
    Case((5, 3), (5, 2), "drop"),
    Case((5, 4, 7), (2, 2, 3), "drop"),
]
CHANNELS = [1, 2, 3]


def case_id(case: Case) -> str:
    return f"{'x'.join(map(str, case.grid))}-w{'x'.join(map(str, case.window))}-{case.remainder}"


@pytest.fixture
def rng():
    return np.random.default_rng(20240611)


def tol(dtype, size=1):
    return default_rtol(dtype, size)


def reference_matrix(grid, window, channels):
    """Pooling matrix from the definition, entry by entry: every (output, input) pair is visited.

    Entry ((c, j), (c', i)) is 1/|w| when c == c' and input cell i lies in window j, i.e.
    j_k * w_k <= i_k < (j_k + 1) * w_k on every axis; cells past the last full window lie in
    no window.
    """
    grid_out = tuple(g // w for g, w in zip(grid, window))
    size = float(np.prod(window))
    out_cells = list(itertools.product(range(channels), *(range(go) for go in grid_out)))
    in_cells = list(itertools.product(range(channels), *(range(g) for g in grid)))
    M = np.zeros((len(out_cells), len(in_cells)))
    for r, (c_out, *j) in enumerate(out_cells):
        for col, (c_in, *i) in enumerate(in_cells):
            inside = all(jk * wk <= ik < (jk + 1) * wk for ik, jk, wk in zip(i, j, window))
            if c_in == c_out and inside:
                M[r, col] = 1.0 / size
    return M


def loop_pool(x, grid, window):
    """Per-window means with explicit loops over examples, channels and output cells."""
    n, channels = x.shape[:2]
    grid_out = tuple(g // w for g, w in zip(grid, window))
    y = np.zeros((n, channels, *grid_out), dtype=np.float64)
    for e in range(n):
        for c in range(channels):
            for j in itertools.product(*(range(go) for go in grid_out)):
                block = tuple(slice(jk * wk, (jk + 1) * wk) for jk, wk in zip(j, window))
                y[(e, c, *j)] = x[(e, c, *block)].astype(np.float64).mean()
    return y


# --------------------------------------------------------------- dense agreement
@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_matrix_equals_entrywise_definition(case, channels):
    pool = AvgPool(case.grid, case.window, channels=channels, remainder=case.remainder)
    M = reference_matrix(case.grid, case.window, channels)
    assert pool.shape == M.shape
    assert pool.in_shape == pool.dims == (channels, *case.grid)
    assert pool.out_shape == pool.dimsd == (channels, *(g // w for g, w in zip(case.grid, case.window)))
    np.testing.assert_array_equal(pool.matrix(), M)
    S = pool.tosparse()
    assert sp.issparse(S)
    np.testing.assert_array_equal(S.toarray(), M)
    # one stored entry per input cell that lies in a window, nothing else
    assert S.nnz == np.count_nonzero(M)
    np.testing.assert_allclose(pool.matmat(np.eye(M.shape[1])), M, rtol=0, atol=atol_for(M))
    np.testing.assert_allclose(pool.rmatmat(np.eye(M.shape[0])), M.T, rtol=0, atol=atol_for(M.T))
    np.testing.assert_allclose(pool.H.todense(), M.T, rtol=0, atol=atol_for(M.T))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_apply_matches_dense_matrix_in_both_directions(case, channels, dtype, rng):
    pool = AvgPool(case.grid, case.window, channels=channels, remainder=case.remainder)
    M = reference_matrix(case.grid, case.window, channels)
    n = 4
    X = rng.standard_normal((n, *pool.in_shape)).astype(dtype)
    Y = rng.standard_normal((n, *pool.out_shape)).astype(dtype)
    Z = pool.apply(X)
    assert Z.shape == (n, *pool.out_shape) and Z.dtype == dtype
    ref = X.reshape(n, -1).astype(np.float64) @ M.T
    np.testing.assert_allclose(Z.reshape(n, -1), ref, rtol=tol(dtype, M.shape[1]), atol=tol(dtype))
    # same map from flat rows and from the pylops interface
    np.testing.assert_array_equal(pool.apply(X.reshape(n, -1)), Z)
    np.testing.assert_allclose(pool.matmat(X.reshape(n, -1).T).T, Z.reshape(n, -1), rtol=tol(dtype))
    np.testing.assert_allclose(pool.matvec(X[0].ravel()), Z[0].ravel(), rtol=tol(dtype))
    np.testing.assert_allclose(loop_pool(X, case.grid, case.window), Z, rtol=tol(dtype, M.shape[1]), atol=tol(dtype))
    # transpose
    W = pool.apply(Y, transpose=True)
    assert W.shape == (n, *pool.in_shape) and W.dtype == dtype
    ref_t = Y.reshape(n, -1).astype(np.float64) @ M
    np.testing.assert_allclose(W.reshape(n, -1), ref_t, rtol=tol(dtype), atol=tol(dtype))
    np.testing.assert_allclose(pool.rmatvec(Y[1].ravel()), W[1].ravel(), rtol=tol(dtype))
    np.testing.assert_allclose(pool.rmatmat(Y.reshape(n, -1).T).T, W.reshape(n, -1), rtol=tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_adjoint(case, dtype):
    for channels in CHANNELS:
        pool = AvgPool(case.grid, case.window, channels=channels, remainder=case.remainder, dtype=dtype)
        assert pool.dtype == dtype
        assert adjoint_test(pool, rng=channels).passed
        assert adjoint_test(pool.H, rng=channels).passed


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_pool_after_adjoint_is_scaled_identity(case, rng):
    # A A^T = I / |w|: each output cell owns |w| input cells, and windows do not overlap.
    pool = AvgPool(case.grid, case.window, channels=2, remainder=case.remainder)
    Y = rng.standard_normal((3, *pool.out_shape))
    want = Y / np.prod(case.window)
    np.testing.assert_allclose(pool.apply(pool.apply(Y, transpose=True)), want, rtol=0, atol=atol_for(want))


def test_drop_ignores_trailing_cells_and_adjoint_zeroes_them(rng):
    pool = AvgPool((5, 7), (2, 3), remainder="drop")
    assert pool.grid_out == (2, 2)
    X = rng.standard_normal((2, 1, 5, 7))
    X2 = X.copy()
    X2[:, :, 4, :] = 1e6  # dropped row
    X2[:, :, :, 6] = -1e6  # dropped column
    np.testing.assert_array_equal(pool.apply(X), pool.apply(X2))
    np.testing.assert_array_equal(pool.apply(X), AvgPool((4, 6), (2, 3)).apply(X[:, :, :4, :6]))
    back = pool.apply(np.ones((1, 1, 2, 2)), transpose=True)
    assert np.all(back[0, 0, 4, :] == 0) and np.all(back[0, 0, :, 6] == 0)
    np.testing.assert_array_equal(back[0, 0, :4, :6], np.full((4, 6), 1 / 6))


def test_pylops_shaped_products_and_empty_batch():
    pool = AvgPool((4, 6), (2, 3), channels=2)
    x = np.arange(48.0).reshape(2, 4, 6)
    y = pool @ x  # pylops reshapes to dimsd for dims-shaped input
    assert y.shape == (2, 2, 2)
    np.testing.assert_allclose(y[1, 0, 1], x[1, 0:2, 3:6].mean())
    np.testing.assert_allclose((pool.H @ y).shape, (2, 4, 6))
    assert pool.apply(np.zeros((0, 2, 4, 6))).shape == (0, 2, 2, 2)
    assert pool.apply(np.zeros((0, 8)), transpose=True).shape == (0, 2, 4, 6)
    # integer examples are computed in float64
    assert pool.apply(np.ones((1, 48), dtype=int)).dtype == np.float64
    # complex vectors (as pylops solvers may pass) go through the pylops interface
    z = np.ones(48) + 1j * np.arange(48)
    np.testing.assert_allclose(pool.matvec(z), pool.matvec(z.real) + 1j * pool.matvec(z.imag))


@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")
def test_pylops_lsqr_finds_minimum_norm_preimage():
    # A tiny inversion: the minimum-norm solution of A x = y is |w| A^T y (A A^T = I/|w|).
    pool = AvgPool((4, 6), (2, 3))
    y = np.arange(4.0)
    x = pylops.optimization.basic.lsqr(pool, y, niter=20, atol=1e-14, btol=1e-14)[0]
    np.testing.assert_allclose(np.ravel(x), pool.rmatvec(y) * 6, rtol=1e-10)


def test_window_given_as_int_applies_to_every_axis():
    pool = AvgPool((4, 6, 2), 2)
    assert pool.window == (2, 2, 2) and pool.grid_out == (2, 3, 1)
    assert AvgPool(6, 3).in_shape == (1, 6)


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"grid": (6,), "window": 4}, r"does not divide `grid` \(6,\).*remainder='drop'"),
        ({"grid": (4, 7), "window": (2, 2)}, r"on axis 1 \(7 % 2 = 1\)"),
        ({"grid": (6,), "window": 0}, r"`window` must be >= 1, got \(0,\)"),
        ({"grid": (6, 6), "window": (2, -1)}, r"`window` must be >= 1"),
        ({"grid": (4, 4), "window": (2, 5)}, r"larger than `grid` \(4, 4\) on axis 1"),
        ({"grid": (4, 4), "window": (2, 5), "remainder": "drop"}, r"larger than `grid`"),
        ({"grid": (4, 4), "window": (2, 2, 2)}, r"`window` must have 2 entries"),
        ({"grid": (4, 4), "window": 2, "remainder": "ceil"}, r"`remainder` must be one of .*'ceil'"),
        ({"grid": (), "window": 2}, r"`grid` must have 1, 2 or 3 axes"),
        ({"grid": (2, 2, 2, 2), "window": 1}, r"`grid` must have 1, 2 or 3 axes"),
        ({"grid": (0, 4), "window": 1}, r"`grid` must be >= 1"),
        ({"grid": (4,), "window": 2, "channels": 0}, r"`channels` must be an integer >= 1, got 0"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AvgPool(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [{"grid": (4.0, 4), "window": 2}, {"grid": (4,), "window": 2.5}, {"grid": (4,), "window": 2, "channels": 1.0}],
)
def test_non_integer_arguments_raise_type_error(kwargs):
    with pytest.raises(TypeError):
        AvgPool(**kwargs)


def test_wrong_channel_count_in_batch():
    pool = AvgPool((4, 6), (2, 3), channels=2)
    with pytest.raises(ValueError, match=r"`X` has 3 channels .* pools 2"):
        pool.apply(np.zeros((5, 3, 4, 6)))
    with pytest.raises(ValueError, match=r"`X` has 1 channels .* pools 2"):
        pool.apply(np.zeros((5, 1, 2, 2)), transpose=True)
    with pytest.raises(ValueError, match=r"`X` must hold examples .* \(n, 2, 4, 6\) or \(n, 48\)"):
        pool.apply(np.zeros((5, 2, 6, 4)))
    with pytest.raises(ValueError, match=r"\(n, 2, 2, 2\) or \(n, 8\)"):
        pool.apply(np.zeros((5, 48)), transpose=True)
    with pytest.raises(TypeError, match="`X` must be a real float32 or float64"):
        pool.apply(np.zeros((5, 48), dtype=np.complex128))


# ---------------------------------------------------------------------- torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_matches_torch_avg_pool_and_its_gradient(case, channels, dtype, rng):
    torch = pytest.importorskip("torch")
    pool_fn = {1: torch.nn.functional.avg_pool1d, 2: torch.nn.functional.avg_pool2d, 3: torch.nn.functional.avg_pool3d}
    fn = pool_fn[len(case.grid)]
    pool = AvgPool(case.grid, case.window, channels=channels, remainder=case.remainder)
    X = rng.standard_normal((3, *pool.in_shape)).astype(dtype)
    W = rng.standard_normal((3, *pool.out_shape)).astype(dtype)
    xt = torch.tensor(X, requires_grad=True)
    yt = fn(xt, kernel_size=case.window, stride=case.window, ceil_mode=False)
    np.testing.assert_allclose(pool.apply(X), yt.detach().numpy(), rtol=tol(dtype, 64), atol=tol(dtype))
    # torch's gradient of <A x, w> with respect to x is A^T w
    (yt * torch.tensor(W)).sum().backward()
    np.testing.assert_allclose(pool.apply(W, transpose=True), xt.grad.numpy(), rtol=tol(dtype), atol=tol(dtype))


# ------------------------------------------------------------------ properties
@st.composite
def pool_setups(draw):
    ndim = draw(st.integers(1, 3))
    grid = tuple(draw(st.integers(1, 12)) for _ in range(ndim))
    window = tuple(draw(st.integers(1, g)) for g in grid)
    channels = draw(st.integers(1, 3))
    dtype = draw(st.sampled_from(DTYPES))
    return grid, window, channels, dtype


@settings(max_examples=examples(40), deadline=None)
@given(pool_setups(), st.integers(0, 2**31))
def test_property_drop_pool_matches_loops_and_passes_dot_test(setup, seed):
    grid, window, channels, dtype = setup
    divides = all(g % w == 0 for g, w in zip(grid, window))
    if not divides:
        with pytest.raises(ValueError, match="does not divide"):
            AvgPool(grid, window, channels=channels)
    pool = AvgPool(grid, window, channels=channels, remainder="drop", dtype=dtype)
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((2, channels, *grid)).astype(dtype)
    np.testing.assert_allclose(pool.apply(X), loop_pool(X, grid, window), rtol=tol(dtype, 2000), atol=tol(dtype))
    assert adjoint_test(pool, rng=rng).passed


@pytest.mark.parametrize("window", [(1, 1), (2, 1), (1, 3)])
def test_input_is_never_modified(window, rng):
    pool = AvgPool((4, 6), window, channels=2)
    X = rng.standard_normal((3, 2, 4, 6))
    X.flags.writeable = False
    Y = pool.apply(X)
    Y[...] = 0.0  # the output owns its memory
    (w0, w1) = window
    np.testing.assert_allclose(
        pool.apply(X),
        X.reshape(3, 2, 4 // w0, w0, 6 // w1, w1).mean(axis=(3, 5)),
        rtol=0,
        atol=atol_for(X.reshape(3, 2, 4 // w0, w0, 6 // w1, w1).mean(axis=(3, 5))),
    )


@pytest.mark.parametrize("bad", [int, np.int32, bool, np.float16, complex])
def test_pooling_dtype_must_be_float32_or_float64(bad):
    with pytest.raises(TypeError, match="`dtype` must be float32 or float64"):
        AvgPool((4, 4), 2, dtype=bad)
