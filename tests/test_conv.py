"""structops.Conv against references built independently in the test.

The reference matrix is assembled entry by entry from the definition

    z_i = sum_j theta_j x_{i + c - j},   c = s // 2 per axis,

with each boundary condition's index rule written out here (zero: skip, periodic: mod,
reflect: mirror without repeating the edge, replicate: clip; valid: no padding and
z_i = sum_j theta_j x_{i + s - 1 - j}), channels (rows/columns in C-order of
(channels, *grid)) and stride sampling. Nothing here calls into the library's own index maps.
"""

from __future__ import annotations

import itertools
import tracemalloc

import numpy as np
import pytest
import scipy.ndimage as ndi
import scipy.signal as signal

from structops import Conv
from structops.kernels._base import MAX_DENSE_ENTRIES
from structops.testing import default_rtol

from ._helpers import ConvCase as Case
from ._helpers import atol_for

BCS = ("zero", "periodic", "reflect", "replicate", "valid")
METHODS = ("direct", "fft")


# ----------------------------------------------------------------------------- reference
def bc_index(p: int, g: int, bc: str) -> int | None:
    """Grid index read at (possibly out-of-range) position ``p`` on an axis of length ``g``."""
    if bc == "zero":
        return p if 0 <= p < g else None
    if bc == "periodic":
        return p % g
    if bc == "replicate":
        return min(max(p, 0), g - 1)
    if bc == "reflect":  # mirror about the edge sample, which is not repeated: ... x2 x1 | x0 x1 x2 ...
        if g == 1:
            return 0
        while p < 0 or p >= g:
            p = -p if p < 0 else 2 * (g - 1) - p
        return p
    if bc == "symmetric":  # ... x1 x0 | x0 x1 x2 ... (edge sample repeated)
        while p < 0 or p >= g:
            p = -1 - p if p < 0 else 2 * g - 1 - p
        return p
    raise AssertionError(bc)


def reference_out_grid(grid, stencil, bc, stride) -> tuple[int, ...]:
    full = [g - s + 1 for g, s in zip(grid, stencil)] if bc == "valid" else list(grid)
    return tuple(len(range(0, f, st)) for f, st in zip(full, stride))


def reference_matrix(theta, grid, stencil, bc, cin=1, cout=1, stride=1) -> np.ndarray:
    """Dense K(theta), entry by entry from the definition, in float64."""
    d = len(grid)
    stride = (stride,) * d if isinstance(stride, int) else tuple(stride)
    th = np.asarray(theta, dtype=np.float64).reshape(cout, cin, *stencil)
    out = reference_out_grid(grid, stencil, bc, stride)
    M, N = int(np.prod(out)), int(np.prod(grid))
    R = np.zeros((cout * M, cin * N))
    for o, c in itertools.product(range(cout), range(cin)):
        for i in itertools.product(*(range(m) for m in out)):
            row = o * M + int(np.ravel_multi_index(i, out))
            for j in itertools.product(*(range(s) for s in stencil)):
                if bc == "valid":
                    src = [i[a] * stride[a] + stencil[a] - 1 - j[a] for a in range(d)]
                else:
                    src = [bc_index(i[a] * stride[a] + stencil[a] // 2 - j[a], grid[a], bc) for a in range(d)]
                if any(s is None for s in src):
                    continue
                R[row, c * N + int(np.ravel_multi_index(src, grid))] += th[(o, c, *j)]
    return R


def reference_jacobian(k: Conv, data: np.ndarray, transpose: bool) -> np.ndarray:
    """Dense J[:, l] = vec over examples of dK/dtheta_l applied to the data (K is linear in theta)."""
    cols = []
    for l in range(k.nparams):
        e = np.zeros(k.nparams)
        e[l] = 1.0
        R = reference_matrix(e, k.grid, k.stencil, k.bc, k.in_channels, k.out_channels, k.stride)
        cols.append((data @ R if transpose else data @ R.T).ravel())
    return np.stack(cols, axis=1) if cols else np.zeros((0, 0))


# ------------------------------------------------------------------------------ cases
# every stencil fits its grid, so every bc accepts every case
CASES = {
    "1d-odd": Case((7,), (3,), 1, 1, (1,)),
    "1d-even-ch-stride2": Case((8,), (4,), 2, 3, (2,)),
    "1d-size1": Case((1,), (1,), 1, 2, (1,)),
    "1d-stencil=grid-stride3": Case((6,), (6,), 3, 1, (3,)),
    "2d-mixed-stride21": Case((5, 4), (3, 2), 2, 1, (2, 1)),
    "2d-size1-axis": Case((1, 6), (1, 3), 1, 2, (1, 1)),
    "2d-even-stride3": Case((4, 4), (4, 1), 1, 1, (3, 3)),
    "2d-ch2x2-stride12": Case((3, 5), (2, 3), 2, 2, (1, 2)),
    "3d-odd-even": Case((3, 4, 2), (3, 2, 1), 1, 2, (1, 2, 1)),
    "3d-even-stride2": Case((2, 3, 3), (2, 3, 2), 2, 1, (2, 2, 2)),
    "3d-size1-axes": Case((1, 1, 4), (1, 1, 3), 1, 1, (1, 1, 1)),
}


@pytest.fixture(params=list(CASES), ids=list(CASES))
def case(request) -> Case:
    return CASES[request.param]


def tol(dtype, *sizes: int) -> float:
    return default_rtol(dtype, max(sizes))


def assert_rel(actual, desired, rtol: float) -> None:
    actual = np.asarray(actual, dtype=np.float64)
    desired = np.asarray(desired, dtype=np.float64)
    assert actual.shape == desired.shape, (actual.shape, desired.shape)
    scale = max(np.linalg.norm(desired), np.linalg.norm(actual))
    err = np.linalg.norm(actual - desired) / scale if scale > 0 else np.linalg.norm(actual - desired)
    assert err <= rtol, f"relative error {err:.3e} > {rtol:.3e}"


# -------------------------------------------------------------- dense agreement, every path
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("bc", BCS)
def test_every_path_equals_entrywise_reference(case, bc, method, dtype, rng):
    k = case.kernel(bc, method)
    theta = rng.standard_normal(k.nparams).astype(dtype)
    R = reference_matrix(theta, case.grid, case.stencil, bc, case.cin, case.cout, case.stride)
    m, N = R.shape
    assert k.shape == (m, N)
    assert k.in_shape == (case.cin, *case.grid)
    assert k.out_shape == (case.cout, *reference_out_grid(case.grid, case.stencil, bc, case.stride))
    rt = tol(dtype, m, N, k.nparams)

    M = k.matrix(theta)
    assert M.dtype == dtype
    assert_rel(M, R, rt)
    vecK = k.Q @ theta.astype(np.float64)
    assert_rel(vecK.reshape((m, N), order="F"), R, rt)  # vec is column-major (the lecture notes')

    x = rng.standard_normal(N).astype(dtype)
    y = rng.standard_normal(m).astype(dtype)
    X = rng.standard_normal((N, 3)).astype(dtype)
    Y = rng.standard_normal((m, 2)).astype(dtype)
    op = k.op(theta)
    assert op.shape == (m, N)
    for out in (op.matvec(x), op.rmatvec(y), op.H.matvec(y), op.matmat(X), op.H.matmat(Y)):
        assert out.dtype == dtype
    assert_rel(op.matvec(x), R @ x, rt)
    assert_rel(op.matmat(X), R @ X, rt)
    assert_rel(op.rmatvec(y), R.T @ y, rt)
    assert_rel(op.H.matvec(y), R.T @ y, rt)
    assert_rel(op.H.matmat(Y), R.T @ Y, rt)
    assert_rel(op.H.H.matvec(x), R @ x, rt)

    for n in (0, 1, 4):
        Xb = rng.standard_normal((n, *k.in_shape)).astype(dtype)
        Yb = rng.standard_normal((n, *k.out_shape)).astype(dtype)
        z = k.apply(theta, Xb)
        zt = k.apply(theta, Yb, transpose=True)
        assert z.shape == (n, *k.out_shape) and z.dtype == dtype
        assert zt.shape == (n, *k.in_shape) and zt.dtype == dtype
        if n:
            assert_rel(z.reshape(n, m), Xb.reshape(n, N) @ R.T, rt)
            assert_rel(zt.reshape(n, N), Yb.reshape(n, m) @ R, rt)
            # flattened examples are accepted too
            assert_rel(k.apply(theta, Xb.reshape(n, N)), z, rt)


@pytest.mark.parametrize("bc", ["zero", "periodic", "replicate"])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    ("grid", "stencil"), [((3,), (5,)), ((2,), (7,)), ((3, 2), (4, 5)), ((2, 1, 3), (3, 2, 5))], ids=str
)
@pytest.mark.parametrize("stride", [1, 2])
def test_stencil_larger_than_grid_equals_reference(grid, stencil, bc, method, stride, rng):
    check_larger_stencil(grid, stencil, bc, method, stride, rng)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("grid", "stencil"), [((5,), (6,)), ((5,), (9,)), ((3, 2), (4, 3)), ((4, 3, 2), (7, 5, 3))])
@pytest.mark.parametrize("stride", [1, 2])
def test_reflect_stencil_larger_than_grid_within_one_reflection(grid, stencil, method, stride, rng):
    # reflect takes stencils up to 2 * grid - 1 (stencil // 2 <= grid - 1: one mirror image of the grid)
    check_larger_stencil(grid, stencil, "reflect", method, stride, rng)


def check_larger_stencil(grid, stencil, bc, method, stride, rng) -> None:
    # periodic wraps the stencil around (entries sum), zero/replicate see the padding only
    k = Conv(grid, stencil, bc=bc, in_channels=2, out_channels=1, stride=stride, method=method)
    theta = rng.standard_normal(k.nparams)
    R = reference_matrix(theta, grid, stencil, bc, 2, 1, stride)
    assert_rel(k.matrix(theta), R, tol(np.float64, *R.shape))
    assert_rel((k.Q @ theta).reshape(R.shape, order="F"), R, tol(np.float64, *R.shape))
    Y = rng.standard_normal((3, R.shape[0]))
    assert_rel(k.apply(theta, Y, transpose=True).reshape(3, -1), Y @ R, tol(np.float64, *R.shape))


# ------------------------------------------------------------------------------- Jacobian
def check_jacobian(k: Conv, theta, nexamples: int, transpose: bool, dtype, rng) -> None:
    """J (columns J e_l), J.H (columns J.H e_r), J.H @ w and per_example against the dense reference."""
    shape = k.out_shape if transpose else k.in_shape
    data = rng.standard_normal((nexamples, *shape)).astype(dtype)
    J = k.jac(theta, data, transpose=transpose)
    m_out = int(np.prod(k.in_shape if transpose else k.out_shape))
    assert J.shape == (nexamples * m_out, k.nparams)
    rt = tol(dtype, *k.shape, k.nparams, nexamples * m_out)

    w = rng.standard_normal(J.shape[0]).astype(dtype)
    per = J.per_example(w)
    grad = J.rmatvec(w)
    assert per.shape == (nexamples, k.nparams) and per.dtype == dtype
    assert grad.shape == (k.nparams,) and grad.dtype == dtype
    if nexamples == 0:
        assert not grad.any()
        assert J.matvec(theta).shape == (0,)
        return
    Jref = reference_jacobian(k, data.reshape(nexamples, int(np.prod(shape))).astype(np.float64), transpose)
    Jd = np.stack([J.matvec(e) for e in np.eye(k.nparams, dtype=dtype)], axis=1)
    # J.H column by column where that is cheap, else on random probes (as strong, with probability one)
    probes = np.eye(J.shape[0], dtype=dtype) if J.shape[0] <= 24 else rng.standard_normal((4, J.shape[0])).astype(dtype)
    JHd = np.stack([J.H.matvec(e) for e in probes], axis=1)
    assert_rel(Jd, Jref, rt)
    assert_rel(JHd, Jref.T @ probes.T.astype(np.float64), rt)
    assert_rel(grad, Jref.T @ w, rt)
    assert_rel(J.H.matvec(w), Jref.T @ w, rt)
    # per-example rows: J_i^T w_i, summing to the reduced gradient
    wi = w.reshape(nexamples, m_out).astype(np.float64)
    blocks = Jref.reshape(nexamples, m_out, k.nparams)
    assert_rel(per, np.einsum("imp,im->ip", blocks, wi), rt)
    assert_rel(per.sum(axis=0), grad, rt)
    # the Jacobian of a map linear in theta reproduces it: J theta = K(theta) data
    assert_rel(J.matvec(theta), k.apply(theta, data, transpose=transpose).ravel(), rt)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("bc", BCS)
def test_jacobian_equals_entrywise_reference(case, bc, method, dtype, rng):
    k = case.kernel(bc, method)
    theta = rng.standard_normal(k.nparams).astype(dtype)
    for transpose in (False, True):
        check_jacobian(k, theta, 2, transpose, dtype, rng)


@pytest.mark.parametrize("nexamples", [0, 1])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("bc", BCS)
def test_jacobian_batch_sizes_zero_and_one(bc, method, nexamples, dtype, rng):
    k = CASES["2d-ch2x2-stride12"].kernel(bc, method)
    theta = rng.standard_normal(k.nparams).astype(dtype)
    for transpose in (False, True):
        check_jacobian(k, theta, nexamples, transpose, dtype, rng)


@pytest.mark.parametrize("transpose", [False, True], ids=["J(Kx)", "J(KTy)"])
@pytest.mark.parametrize("method", METHODS)
def test_seed_fft_identity_for_periodic_jacobian_transpose(method, transpose, rng):
    """real(Q^T F((F* Y^T) o (F W^T)) e_n) with numpy FFTs equals J.H @ w (periodic 1D).

    With F = fft and F* = ifft (numpy's normalisation) the periodic K = F* diag(lambda) F and
    K^T y = real(F(lambda o F* y)), lambda = F Q theta, where Q places stencil entry j at row
    (j - s//2) mod n of the first column. Hence
    J_theta(K^T y)^T w = real(Q^T F((F* y) o (F w)))  (the notes' transposed form, apply(..., transpose=True)) and
    J_theta(K x)^T w = real(Q^T F((F x) o (F* w)))    (the forward form), both summed over examples.
    """
    n_f, s, n = 16, 3, 5
    k = Conv(n_f, s, bc="periodic", method=method)
    theta = rng.standard_normal(s)
    Y = rng.standard_normal((n, n_f))
    W = rng.standard_normal((n, n_f))
    Q = np.zeros((n_f, s))
    Q[(np.arange(s) - s // 2) % n_f, np.arange(s)] = 1.0
    # Q theta is the first column of K (independent of the FFT): check it on the dense reference
    assert_rel(Q @ theta, reference_matrix(theta, (n_f,), (s,), "periodic")[:, 0], 1e-15)
    F = lambda a: np.fft.fft(a, axis=0)  # noqa: E731
    Fs = lambda a: np.fft.ifft(a, axis=0)  # noqa: E731
    e_n = np.ones(n)
    if transpose:
        seed = np.real(Q.T @ (F(Fs(Y.T) * F(W.T)) @ e_n))
    else:
        seed = np.real(Q.T @ (F(F(Y.T) * Fs(W.T)) @ e_n))
    J = k.jac(theta, Y, transpose=transpose)
    assert_rel(J.H @ W.ravel(), seed, 1e-13)
    # and the same from the dense reference Jacobian
    assert_rel(reference_jacobian(k, Y, transpose).T @ W.ravel(), seed, 1e-13)


# ------------------------------------------------------------------------ lecture notes' examples
def test_seed_toeplitz_and_circulant_4x4(dtype, rng):
    t1, t2, t3 = theta = rng.standard_normal(3).astype(dtype)
    toeplitz = np.array(
        [
            [t2, t1, 0, 0],
            [t3, t2, t1, 0],
            [0, t3, t2, t1],
            [0, 0, t3, t2],
        ]
    )
    circulant = np.array(
        [
            [t2, t1, 0, t3],
            [t3, t2, t1, 0],
            [0, t3, t2, t1],
            [t1, 0, t3, t2],
        ]
    )
    np.testing.assert_array_equal(Conv(4, 3, method="direct").matrix(theta), toeplitz)
    np.testing.assert_array_equal(Conv(4, 3, bc="periodic", method="direct").matrix(theta), circulant)
    for bc, want in (("zero", toeplitz), ("periodic", circulant)):
        k = Conv(4, 3, bc=bc, method="fft")
        np.testing.assert_allclose(k.matrix(theta), want, rtol=0, atol=tol(dtype, 4) * np.abs(theta).max())
        # mat(Q theta) is exact: Q is a 0/1 pattern
        np.testing.assert_array_equal((k.Q @ theta.astype(np.float64)).reshape(4, 4, order="F"), want)


def test_seed_bccb_3x3(rng):
    th = rng.standard_normal((3, 3))
    t11, t12, t13, t21, t22, t23, t31, t32, t33 = th.ravel()
    # the lecture notes' matrix: rows z11 z21 z31 z12 ... and columns y11 y21 y31 y12 ... (column-major grid order)
    seed = np.array(
        [
            [t22, t12, t32, t21, t11, t31, t23, t13, t33],
            [t32, t22, t12, t31, t21, t11, t33, t23, t13],
            [t12, t32, t22, t11, t31, t21, t13, t33, t23],
            [t23, t13, t33, t22, t12, t32, t21, t11, t31],
            [t33, t23, t13, t32, t22, t12, t31, t21, t11],
            [t13, t33, t23, t12, t32, t22, t11, t31, t21],
            [t21, t11, t31, t23, t13, t33, t22, t12, t32],
            [t31, t21, t11, t33, t23, t13, t32, t22, t12],
            [t11, t31, t21, t13, t33, t23, t12, t32, t22],
        ]
    )
    # the lecture notes' row z21 written out: theta_33 y13 + theta_32 y11 + theta_31 y12 + theta_23 y23 + ...
    z21 = {(1, 3): t33, (1, 1): t32, (1, 2): t31, (2, 3): t23, (2, 1): t22, (2, 2): t21}
    z21.update({(3, 3): t13, (3, 1): t12, (3, 2): t11})
    for (a, b), coef in z21.items():
        assert seed[1, (a - 1) + 3 * (b - 1)] == coef
    # our rows/columns are in C-order of the grid: C-order position p holds column-major position perm[p]
    perm = np.array([a + 3 * b for a in range(3) for b in range(3)])
    want = seed[np.ix_(perm, perm)]
    np.testing.assert_array_equal(Conv((3, 3), (3, 3), bc="periodic", method="direct").matrix(th.ravel()), want)
    np.testing.assert_allclose(
        Conv((3, 3), (3, 3), bc="periodic", method="fft").matrix(th.ravel()), want, rtol=0, atol=atol_for(want)
    )
    np.testing.assert_array_equal((Conv((3, 3), (3, 3), bc="periodic").Q @ th.ravel()).reshape(9, 9, order="F"), want)


@pytest.mark.parametrize("method", METHODS)
def test_seed_mnist_valid_28_to_24(method, dtype, rng):
    k = Conv((28, 28), (5, 5), bc="valid", method=method)
    assert k.in_shape == (1, 28, 28) and k.out_shape == (1, 24, 24) and k.nparams == 25
    theta = rng.standard_normal(25).astype(dtype)
    X = rng.standard_normal((3, 1, 28, 28)).astype(dtype)
    Z = k.apply(theta, X)
    want = np.stack(
        [signal.convolve(x[0].astype(np.float64), theta.reshape(5, 5).astype(np.float64), "valid") for x in X]
    )
    assert_rel(Z[:, 0], want, tol(dtype, 784))


# --------------------------------------------------------------- scipy.signal / ndimage
NDIMAGE_MODE = {"zero": "constant", "periodic": "wrap", "reflect": "mirror", "replicate": "nearest"}


def scipy_reference(theta, X, k: Conv) -> np.ndarray:
    """K(theta) X through scipy: ndimage.convolve for same-size bcs, signal.convolve for valid."""
    th = theta.astype(np.float64).reshape(k.out_channels, k.in_channels, *k.stencil)
    X = X.astype(np.float64)
    outs = []
    for x in X:
        chans = []
        for o in range(k.out_channels):
            acc = 0.0
            for c in range(k.in_channels):
                if k.bc == "valid":
                    acc = acc + signal.convolve(x[c], th[o, c], mode="valid", method="direct")
                else:
                    # ndimage's origin 0 puts the centre of a size-s convolution at s // 2 for odd and even s
                    acc = acc + ndi.convolve(x[c], th[o, c], mode=NDIMAGE_MODE[k.bc], cval=0.0)
            chans.append(acc[tuple(slice(None, None, st) for st in k.stride)])
        outs.append(np.stack(chans))
    return np.stack(outs)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("bc", BCS)
def test_apply_equals_scipy(case, bc, method, dtype, rng):
    k = case.kernel(bc, method)
    theta = rng.standard_normal(k.nparams).astype(dtype)
    X = rng.standard_normal((2, *k.in_shape)).astype(dtype)
    assert_rel(k.apply(theta, X), scipy_reference(theta, X, k), tol(dtype, *k.shape))


@pytest.mark.parametrize("s", [1, 2, 3, 4, 5])
def test_zero_bc_equals_signal_convolve_full_cropped(s, rng):
    # z_i = (theta * x)_{i + s//2}: the 'full' convolution cropped at s // 2
    g = (9, 7)
    k = Conv(g, (s, s))
    theta = rng.standard_normal(s * s)
    x = rng.standard_normal(g)
    full = signal.convolve(x, theta.reshape(s, s), mode="full")
    c = s // 2
    assert_rel(k.apply(theta, x[None, None])[0, 0], full[c : c + g[0], c : c + g[1]], 1e-13)


# ----------------------------------------------------------------------- methods and stride
@pytest.mark.parametrize("bc", BCS)
def test_direct_and_fft_agree(bc, dtype, rng):
    grid, stencil = (12, 10), (5, 4)
    kd = Conv(grid, stencil, bc=bc, in_channels=3, out_channels=2, stride=(2, 3), method="direct")
    kf = Conv(grid, stencil, bc=bc, in_channels=3, out_channels=2, stride=(2, 3), method="fft")
    assert (kd.method, kf.method) == ("direct", "fft")
    theta = rng.standard_normal(kd.nparams).astype(dtype)
    X = rng.standard_normal((4, *kd.in_shape)).astype(dtype)
    Y = rng.standard_normal((4, *kd.out_shape)).astype(dtype)
    rt = tol(dtype, *kd.shape)
    assert_rel(kf.apply(theta, X), kd.apply(theta, X), rt)
    assert_rel(kf.apply(theta, Y, transpose=True), kd.apply(theta, Y, transpose=True), rt)
    for data, tr in ((X, False), (Y, True)):
        w = rng.standard_normal((4, *(kd.in_shape if tr else kd.out_shape))).astype(dtype)
        Jd, Jf = kd.jac(theta, data, transpose=tr), kf.jac(theta, data, transpose=tr)
        assert_rel(Jf.rmatvec(w.ravel()), Jd.rmatvec(w.ravel()), rt)
        assert_rel(Jf.per_example(w), Jd.per_example(w), rt)


@pytest.mark.parametrize("method", METHODS)
def test_non_contiguous_inputs(method, rng):
    # transposed, reversed and Fortran-ordered views give the same results as their contiguous copies
    k = Conv((6, 5), (3, 2), bc="reflect", in_channels=2, out_channels=3, stride=(1, 2), method=method)
    theta = rng.standard_normal(2 * k.nparams)[::2]
    X = rng.standard_normal((4, 2, 5, 6)).transpose(0, 1, 3, 2)[::-1]
    Y = np.asfortranarray(rng.standard_normal((4, *k.out_shape)))
    Xc, Yc, tc = np.ascontiguousarray(X), np.ascontiguousarray(Y), np.ascontiguousarray(theta)
    assert_rel(k.apply(theta, X), k.apply(tc, Xc), 1e-14)
    assert_rel(k.apply(theta, Y, transpose=True), k.apply(tc, Yc, transpose=True), 1e-14)
    assert_rel(k.jac(theta, X).rmatvec(Y.ravel()), k.jac(tc, Xc).rmatvec(Yc.ravel()), 1e-14)


def test_auto_method_is_one_of_the_two():
    assert Conv((28, 28), 3, in_channels=8, out_channels=8).method in METHODS
    assert Conv((128, 128), 15).method in METHODS


def test_jacobian_method_follows_the_operator_unless_given():
    # "auto" prices a Jacobian used for one gradient, which transforms as many arrays as an
    # operator product: the same choice; an explicit jac_method fixes the Jacobian's own
    for grid, stencil in (((128, 128), 15), ((28, 28), 3), (4096, 7)):
        k = Conv(grid, stencil)
        assert k.jac_method == k.method
    for method in METHODS:
        k = Conv((128, 128), 15, method=method)
        assert (k.method, k.jac_method) == (method, method)
    k = Conv((128, 128), 15, method="direct", jac_method="fft")
    assert (k.method, k.jac_method) == ("direct", "fft")
    with pytest.raises(ValueError, match=r"`jac_method` must be one of .*got 'gpu'"):
        Conv(8, 3, jac_method="gpu")


@pytest.mark.parametrize("bc", ["zero", "periodic", "reflect", "valid"])
def test_jacobian_with_its_own_method_matches_the_direct_one(bc, rng):
    # an operator on direct sums with an FFT Jacobian is the same map; the FFT Jacobian
    # transforms its data once, when it is built, and every product (the first included) uses it
    kw = dict(bc=bc, in_channels=2, out_channels=3, stride=(1, 2))
    mixed = Conv((9, 8), (5, 4), method="direct", jac_method="fft", **kw)
    ref = Conv((9, 8), (5, 4), method="direct", **kw)
    theta = rng.standard_normal(ref.nparams)
    X = rng.standard_normal((4, ref.shape[1]))
    W = rng.standard_normal((4, ref.shape[0]))
    v = rng.standard_normal(ref.nparams)
    for transpose, data, cot in ((False, X, W), (True, W, X)):
        J, Jref = mixed.jac(theta, data, transpose), ref.jac(theta, data, transpose)
        assert J._data.spectrum is not None and Jref._data.spectrum is None
        first = J.rmatvec(cot.ravel())
        assert_rel(first, Jref.rmatvec(cot.ravel()), 1e-12)
        assert_rel(J.matvec(v), Jref.matvec(v), 1e-12)
        assert np.array_equal(J.rmatvec(cot.ravel()), first)  # a fixed operator: bitwise the same
        assert_rel(J.per_example(cot), Jref.per_example(cot), 1e-12)


def test_unknown_method_is_rejected():
    with pytest.raises(ValueError, match=r"`method` must be one of .*'direct'.*'fft'.*got 'gpu'"):
        Conv(8, 3, method="gpu")


STRIDED = [name for name, c in CASES.items() if any(st > 1 for st in c.stride)]


@pytest.mark.parametrize("name", STRIDED)
@pytest.mark.parametrize("bc", BCS)
def test_strided_operator_is_restriction_of_stride_one(name, bc, rng):
    case = CASES[name]
    k1 = Case(case.grid, case.stencil, case.cin, case.cout, (1,) * len(case.grid)).kernel(bc)
    ks = case.kernel(bc)
    theta = rng.standard_normal(k1.nparams)
    full = k1.matrix(theta).reshape((*k1.out_shape, -1))
    rows = (slice(None), *(slice(None, None, st) for st in case.stride))
    want = full[rows].reshape(ks.shape[0], -1)
    np.testing.assert_allclose(ks.matrix(theta), want, rtol=0, atol=atol_for(want))


# ---------------------------------------------------------------------------- memory, scale
def test_dense_forms_refuse_large_sizes_with_clear_message():
    big = Conv((1024, 1024), (3, 3))
    theta = big.random_theta(0)
    with pytest.raises(MemoryError, match=r"matrix\(\).*dense entries.*op\(theta\)"):
        big.matrix(theta)
    wide = Conv((256, 256), 3, in_channels=8, out_channels=8)
    with pytest.raises(MemoryError, match=r"matrix\(\)"):
        wide.matrix(wide.random_theta(0))
    assert wide.shape[0] * wide.shape[1] > MAX_DENSE_ENTRIES


def test_Q_is_sparse_at_sizes_whose_dense_K_is_refused():
    # Q has rows * cols = 2**36 rows but only one entry per (output pixel, in-grid tap): O(nnz)
    k = Conv((512, 512), (3, 3), bc="zero")
    assert k.shape[0] * k.shape[1] > MAX_DENSE_ENTRIES
    Q, peak = _peak_bytes(lambda: k.Q)
    assert Q.shape == (k.shape[0] * k.shape[1], 9)
    assert Q.nnz == (3 * 512 - 2) ** 2  # the taps that stay inside the grid, summed over the 3 x 3 offsets
    assert peak < 200 * Q.nnz
    per_tap = [(512 - (a != 1)) * (512 - (b != 1)) for a in range(3) for b in range(3)]
    np.testing.assert_array_equal(Q.sum(axis=0), per_tap)


def _peak_bytes(fn) -> tuple[np.ndarray, int]:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        out = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return out, peak


@pytest.mark.parametrize(
    ("grid", "stencil", "cin", "cout", "n"),
    [((1024, 1024), (3, 3), 1, 1, 1), ((256, 256), (3, 3), 8, 8, 2)],
    ids=["1024x1024-3x3", "256x256-8to8"],
)
@pytest.mark.parametrize("method", ["auto", "fft"])
@pytest.mark.parametrize("bc", ["zero", "periodic"])
def test_large_problems_apply_without_densifying(grid, stencil, cin, cout, n, bc, method, rng):
    k = Conv(grid, stencil, bc=bc, in_channels=cin, out_channels=cout, method=method)
    theta = k.random_theta(rng, dtype=np.float32)
    X = rng.standard_normal((n, *k.in_shape), dtype=np.float32)
    Y = rng.standard_normal((n, *k.out_shape), dtype=np.float32)
    data_bytes = X.nbytes + Y.nbytes
    # a dense form needs N^2 entries (a sparse one prod(stencil) * N * 16 bytes); allow a few copies of the data
    # (padding, the FFT's complex half-spectra) and nothing that grows faster
    budget = 8 * data_bytes + (1 << 20)
    Z, peak = _peak_bytes(lambda: k.apply(theta, X))
    assert peak < budget, f"apply peaked at {peak:,} bytes for {data_bytes:,} bytes of data"
    XT, peak = _peak_bytes(lambda: k.apply(theta, Y, transpose=True))
    assert peak < budget, f"adjoint peaked at {peak:,} bytes"
    J = k.jac(theta, X)
    g, peak = _peak_bytes(lambda: J.rmatvec(Y.ravel()))
    assert peak < budget, f"J.H peaked at {peak:,} bytes"
    # spot-check values on a corner patch against the entry-by-entry definition (away from wrap effects)
    th = theta.reshape(cout, cin, *stencil).astype(np.float64)
    i0, j0 = 5, 7
    want = sum(th[0, c, a, b] * X[0, c, i0 + 1 - a, j0 + 1 - b] for c in range(cin) for a in range(3) for b in range(3))
    assert abs(Z[0, 0, i0, j0] - want) <= 1e-4 * (1 + abs(want))
    # adjoint consistency: <K x, y> = <x, K^T y>
    lhs = np.vdot(Z.astype(np.float64), Y.astype(np.float64))
    rhs = np.vdot(X.astype(np.float64), XT.astype(np.float64))
    assert abs(lhs - rhs) <= 1e-4 * np.linalg.norm(Z) * np.linalg.norm(Y)
    # <J theta, w> = <theta, J^T w> with J theta = K(theta) X
    assert abs(np.vdot(theta.astype(np.float64), g.astype(np.float64)) - lhs) <= 1e-4 * abs(lhs) + 1e-3


# ------------------------------------------------------------------------------- bad input
def test_stencil_larger_than_grid_for_valid_and_reflect():
    with pytest.raises(ValueError, match=r"`stencil` \(6,\) is larger than `grid` \(5,\).*valid"):
        Conv(5, 6, bc="valid")
    with pytest.raises(ValueError, match=r"`stencil` \(3, 4\) is larger than `grid` \(5, 3\) on axis 1"):
        Conv((5, 3), (3, 4), bc="valid")
    with pytest.raises(ValueError, match=r"`stencil` \(3, 7\) is too large for bc='reflect'"):
        Conv((5, 3), (3, 7), bc="reflect")
    with pytest.raises(ValueError, match=r"`stencil`.*too large for bc='reflect'"):
        Conv(1, 2, bc="reflect")
    # the same sizes are fine where the boundary condition can take them
    for bc in ("zero", "periodic", "replicate"):
        Conv((5, 3), (3, 7), bc=bc)


def test_unknown_bc_lists_the_valid_ones():
    with pytest.raises(
        ValueError,
        match=r"`bc` must be one of .*'zero'.*'periodic'.*'reflect'.*'replicate'.*'valid'.*"
        r"got 'circular'",
    ):
        Conv(8, 3, bc="circular")


def test_wrong_channel_counts_in_x_and_theta():
    k = Conv((5, 4), (3, 3), in_channels=2, out_channels=3)
    theta = k.random_theta(0)
    with pytest.raises(ValueError, match=r"`X` must hold examples .*\(n, 2, 5, 4\).*got shape \(1, 3, 5, 4\)"):
        k.apply(theta, np.zeros((1, 3, 5, 4)))
    with pytest.raises(ValueError, match=r"`X` must hold examples .*\(n, 3, 5, 4\)"):
        k.apply(theta, np.zeros((1, 2, 5, 4)), transpose=True)
    with pytest.raises(ValueError, match=r"`X`"):
        k.jac(theta, np.zeros((2, 1, 5, 4)))
    with pytest.raises(ValueError, match=r"`theta` must have length nparams = 54, got length 18"):
        k.apply(theta[:18], np.zeros((1, 2, 5, 4)))
    with pytest.raises(ValueError, match=r"`theta`"):
        k.op(np.zeros(55))


@pytest.mark.parametrize(
    ("kwargs", "exc", "pattern"),
    [
        ({"stride": 0}, ValueError, r"`stride` must be >= 1, got \(0, 0\)"),
        ({"stride": (1, -2)}, ValueError, r"`stride` must be >= 1, got \(1, -2\)"),
        ({"stride": (1, 2, 1)}, ValueError, r"`stride` must have 2 entries"),
        ({"in_channels": 0}, ValueError, r"`in_channels` must be an integer >= 1, got 0"),
        ({"out_channels": 2.0}, TypeError, r"`out_channels` must be an integer, got 2.0"),
        ({"stride": 1.5}, TypeError, r"`stride`"),
    ],
)
def test_bad_keyword_arguments(kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        Conv((6, 5), (3, 3), **kwargs)


@pytest.mark.parametrize(
    ("grid", "stencil", "exc", "pattern"),
    [
        ((), (), ValueError, r"`grid` must have 1, 2 or 3 axes, got \(\)"),
        ((3, 3, 3, 3), 3, ValueError, r"`grid` must have 1, 2 or 3 axes, got \(3, 3, 3, 3\)"),
        ((6, 5), (3,), ValueError, r"`stencil` must have 2 entries \(one per axis\), got \(3,\)"),
        ((6, 5), (3, 3, 3), ValueError, r"`stencil` must have 2 entries"),
        ((6, 0), (3, 3), ValueError, r"`grid` must be >= 1, got \(6, 0\)"),
        ((6, 5), (0, 3), ValueError, r"`stencil` must be >= 1"),
        (6.0, 3, TypeError, r"`grid` must be an integer or a sequence of integers, got 6.0"),
        ((6, 2.5), (3, 3), TypeError, r"`grid` must hold integers, got \(6, 2.5\)"),
        ((6, 5), (3, 1.0), TypeError, r"`stencil` must hold integers"),
        ((True, 5), (1, 3), TypeError, r"`grid` must hold integers"),
        ("abc", 3, TypeError, r"`grid`"),
    ],
)
def test_bad_grid_and_stencil(grid, stencil, exc, pattern):
    with pytest.raises(exc, match=pattern):
        Conv(grid, stencil)
