"""Wavelet: K(theta) = W^T diag(Q theta) W with W the orthonormal periodic DWT.

PyWavelets (``wavedecn``/``waverecn`` with ``mode="periodization"``) is the independent
reference for ``W``; from it the tests build ``K``, ``Q`` and the gradient entry by entry, and
check that ``W W^T = I``, that ``K`` is symmetric with the eigenvalues ``Q theta``, that
theta = 1 gives the identity, ``check_kernel`` in float32 and float64, hypothesis properties
over grids, wavelets and levels, and the errors on bad input.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np
import pytest
import pywt
from hypothesis import given, settings
from hypothesis import strategies as st

import structops
from structops import Wavelet
from structops.kernels.wavelet import max_levels
from structops.testing import check_kernel, default_rtol

from ._helpers import atol_for, examples

# ----------------------------------------------------------------------------------------
# references from PyWavelets


def pywt_coeffs(x, wavelet, levels):
    """pywt.wavedecn coefficients of one example, flattened: approximation, then details coarse to fine."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pywt warns when the filter is longer than a level's grid
        c = pywt.wavedecn(x, wavelet, mode="periodization", level=levels)
    blocks = [c[0]] + [c[j][key] for j in range(1, len(c)) for key in sorted(c[j])]
    return np.concatenate([b.ravel() for b in blocks]), [b.shape for b in blocks]


def pywt_matrix(grid, wavelet, levels):
    """W column by column: column i holds the coefficients of the unit vector e_i."""
    N = int(np.prod(grid))
    cols = []
    for i in range(N):
        e = np.zeros(N)
        e[i] = 1.0
        cols.append(pywt_coeffs(e.reshape(grid), wavelet, levels)[0])
    return np.stack(cols, 1)


def subband_sizes(grid, wavelet, levels):
    return [int(np.prod(s)) for s in pywt_coeffs(np.zeros(grid), wavelet, levels)[1]]


def diag_ref(theta, sizes, per):
    """Q theta written out: each subband's parameter repeated over its coefficients."""
    if per == "coefficient":
        return np.asarray(theta, dtype=np.float64)
    d = []
    for t, size in zip(theta, sizes):
        d += [float(t)] * size
    return np.array(d)


class WaveletCase(NamedTuple):
    grid: tuple[int, ...]
    wavelet: str
    levels: int | None
    per: str

    def kernel(self) -> Wavelet:
        return Wavelet(self.grid, self.wavelet, levels=self.levels, per=self.per)

    @property
    def name(self) -> str:
        return f"{self.grid}-{self.wavelet}-J{self.levels}-{self.per}"


CASES = [
    WaveletCase((8,), "haar", None, "subband"),
    WaveletCase((2,), "haar", None, "coefficient"),
    WaveletCase((12,), "haar", 2, "coefficient"),
    WaveletCase((16,), "db2", None, "subband"),
    WaveletCase((4,), "db2", 1, "subband"),
    WaveletCase((8, 8), "haar", 2, "subband"),
    WaveletCase((8, 4), "db2", 1, "coefficient"),
    WaveletCase((4, 8), "haar", None, "coefficient"),
    WaveletCase((6, 4), "haar", 1, "subband"),
    WaveletCase((12, 12), "coif1", 1, "subband"),
    WaveletCase((16,), "db3", None, "subband"),
    WaveletCase((4, 4, 8), "haar", None, "subband"),
]


@pytest.fixture(params=CASES, ids=lambda c: c.name)
def case(request) -> WaveletCase:
    return request.param


# ----------------------------------------------------------------------------------------
# the transform


def test_transform_matches_pywt_wavedecn(case, dtype, rng, close):
    k = case.kernel()
    X = rng.standard_normal((3, *case.grid)).astype(dtype)
    C = k.transform(X)
    assert C.dtype == dtype and C.shape == (3, k.shape[0])
    want = np.stack([pywt_coeffs(x.astype(np.float64), case.wavelet, k.levels)[0] for x in X])
    close(C, want, dtype, k.shape[0])
    # the flattened (n, N) form is accepted too
    np.testing.assert_array_equal(k.transform(X.reshape(3, -1)), C)


def test_inverse_transform_matches_pywt_waverecn(case, rng, close):
    k = case.kernel()
    X = rng.standard_normal((2, *case.grid))
    C = k.transform(X)
    Y = k.inverse_transform(C)
    assert Y.shape == X.shape
    close(Y, X, np.float64, k.shape[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        c = pywt.wavedecn(X[0], case.wavelet, mode="periodization", level=k.levels)
        c[-1] = {key: np.zeros_like(v) for key, v in c[-1].items()}  # drop the finest details
        want = pywt.waverecn(c, case.wavelet, mode="periodization")
    finest = [b for b in k.subbands if b.level == 1 and "d" in b.orientation]
    C0 = C[:1].copy()
    for b in finest:
        C0[:, b.start : b.stop] = 0.0
    close(k.inverse_transform(C0)[0], want, np.float64, k.shape[0])


def test_W_is_orthonormal(case):
    k = case.kernel()
    W = k.transform(np.eye(k.shape[0])).T  # column i is W e_i
    tol = default_rtol(np.float64, k.shape[0])  # an orthonormal W: entries and products of size <= 1
    np.testing.assert_allclose(W, pywt_matrix(case.grid, case.wavelet, k.levels), rtol=0, atol=tol)
    eye = np.eye(k.shape[0])
    np.testing.assert_allclose(W @ W.T, eye, rtol=0, atol=tol)
    np.testing.assert_allclose(W.T @ W, eye, rtol=0, atol=tol)
    # inverse_transform is W^T
    np.testing.assert_allclose(k.inverse_transform(eye).reshape(k.shape[0], -1), W, rtol=0, atol=tol)


def test_subbands_follow_the_pywt_layout(case):
    k = case.kernel()
    sizes = subband_sizes(case.grid, case.wavelet, k.levels)
    shapes = pywt_coeffs(np.zeros(case.grid), case.wavelet, k.levels)[1]
    assert [b.shape for b in k.subbands] == shapes
    assert [b.stop - b.start for b in k.subbands] == sizes
    assert k.subbands[0].start == 0 and k.subbands[-1].stop == k.shape[0]
    assert all(a.stop == b.start for a, b in zip(k.subbands, k.subbands[1:]))
    d = len(case.grid)
    assert len(k.subbands) == 1 + (2**d - 1) * k.levels
    assert k.nparams == (len(k.subbands) if case.per == "subband" else k.shape[0])
    assert k.subbands[0].orientation == "a" * d and k.subbands[-1].level == 1


# ----------------------------------------------------------------------------------------
# the kernel


def test_matrix_is_symmetric_and_matches_reference(case, dtype, rng, close):
    k = case.kernel()
    Wref = pywt_matrix(case.grid, case.wavelet, k.levels)
    sizes = subband_sizes(case.grid, case.wavelet, k.levels)
    theta = rng.standard_normal(k.nparams).astype(dtype)
    d = diag_ref(theta, sizes, case.per)
    M = k.matrix(theta)
    assert M.dtype == dtype and M.shape == (k.shape[0],) * 2
    close(M, Wref.T @ np.diag(d) @ Wref, dtype, k.shape[0])
    close(M, M.T, dtype, k.shape[0])
    np.testing.assert_array_equal(k.diagonal(theta), d.astype(dtype))
    if dtype == np.float64:  # the eigenvalues of K are the wavelet-domain weights
        np.testing.assert_allclose(np.linalg.eigvalsh(M), np.sort(d), rtol=0, atol=atol_for(d))


def test_theta_one_is_the_identity(case, dtype, rng, close):
    k = case.kernel()
    ones = np.ones(k.nparams, dtype=dtype)
    close(k.matrix(ones), np.eye(k.shape[0]), dtype, k.shape[0])
    X = rng.standard_normal((4, *case.grid)).astype(dtype)
    close(k.apply(ones, X), X, dtype, k.shape[0])
    close(k.apply(ones, X, transpose=True), X, dtype, k.shape[0])


def test_Q_matches_reference(case):
    k = case.kernel()
    Wref = pywt_matrix(case.grid, case.wavelet, k.levels)
    sizes = subband_sizes(case.grid, case.wavelet, k.levels)
    N = k.shape[0]
    Qref = np.zeros((N * N, k.nparams))
    for j in range(k.nparams):
        e = np.zeros(k.nparams)
        e[j] = 1.0
        Kj = Wref.T @ np.diag(diag_ref(e, sizes, case.per)) @ Wref
        for c in range(N):
            for r in range(N):
                Qref[r + c * N, j] = Kj[r, c]
    assert k.Q.shape == (N * N, k.nparams) and k.q is None
    np.testing.assert_allclose(k.Q.toarray(), Qref, rtol=0, atol=atol_for(Qref, size=N))


def test_check_kernel(case, dtype):
    report = check_kernel(case.kernel(), dtype=dtype, rng=11)
    assert report.passed, str(report)


def test_gradient_is_the_subband_correlation_of_pywt_coefficients(case, dtype, rng, close):
    # d/dtheta_k sum_i <w_i, K x_i> = sum over subband k of (W w_i) * (W x_i)
    k = case.kernel()
    sizes = subband_sizes(case.grid, case.wavelet, k.levels)
    theta = rng.standard_normal(k.nparams).astype(dtype)
    X = rng.standard_normal((3, *case.grid)).astype(dtype)
    Wout = rng.standard_normal((3, *case.grid)).astype(dtype)
    want = np.zeros((3, k.nparams))
    for i in range(3):
        prod = pywt_coeffs(Wout[i].astype(np.float64), case.wavelet, k.levels)[0]
        prod = prod * pywt_coeffs(X[i].astype(np.float64), case.wavelet, k.levels)[0]
        if case.per == "coefficient":
            want[i] = prod
        else:
            start = 0
            for j, size in enumerate(sizes):
                want[i, j] = prod[start : start + size].sum()
                start += size
    J = k.jac(theta, X)
    per = J.per_example(Wout)
    assert per.dtype == dtype and per.shape == (3, k.nparams)
    close(per, want, dtype, k.shape[0])
    close(J.rmatvec(Wout.ravel()), want.sum(0), dtype, k.shape[0])
    close(k.jac(theta, X, transpose=True).per_example(Wout), want, dtype, k.shape[0])


def test_keeping_the_haar_approximation_averages_blocks(rng):
    k = Wavelet((8, 8), "haar", levels=2)
    theta = np.zeros(k.nparams)
    theta[0] = 1.0
    X = rng.standard_normal((2, 8, 8))
    want = np.kron(X.reshape(2, 2, 4, 2, 4).mean(axis=(2, 4)), np.ones((4, 4)))
    np.testing.assert_allclose(k.apply(theta, X), want.reshape(2, 8, 8), rtol=0, atol=atol_for(X, size=64))


def test_empty_batch_and_single_example(dtype, rng):
    k = Wavelet((4, 4), "haar")
    theta = rng.standard_normal(k.nparams).astype(dtype)
    assert k.apply(theta, np.zeros((0, 4, 4), dtype)).shape == (0, 4, 4)
    J = k.jac(theta, np.zeros((0, 16), dtype))
    assert J.per_example(np.zeros((0, 16), dtype)).shape == (0, k.nparams)
    assert J.rmatvec(np.zeros(0, dtype)).shape == (k.nparams,)
    x = rng.standard_normal((4, 4)).astype(dtype)
    np.testing.assert_array_equal(k.apply(theta, x), k.apply(theta, x[None])[0])


# ----------------------------------------------------------------------------------------
# levels


@pytest.mark.parametrize(
    ("grid", "wavelet", "levels"),
    [
        ((28, 28), "haar", 2),  # 28 -> 14 -> 7 (odd)
        ((16,), "haar", 4),
        ((16,), "db2", 3),  # 16 -> 8 -> 4 -> (2 < 4: too short for the filter)
        ((8,), "db2", 2),
        ((4,), "db2", 1),
        ((8, 32), "haar", 3),
        ((24,), "db3", 3),  # 24 -> 12 -> 6 -> 3 (odd: no level 4)
        ((12,), "db4", 1),  # 12 -> (6 < 8)
        ((7,), "haar", 0),
        ((2,), "db2", 0),
    ],
)
def test_default_levels_are_the_most_the_grid_allows(grid, wavelet, levels):
    assert max_levels(grid, wavelet) == levels
    if levels:
        assert Wavelet(grid, wavelet).levels == levels
        assert Wavelet(grid, wavelet, levels=levels).levels == levels
        with pytest.raises(ValueError, match=rf"`levels`={levels + 1} is out of range .* \(at most {levels}\)"):
            Wavelet(grid, wavelet, levels=levels + 1)
    else:
        with pytest.raises(ValueError, match=r"`grid` .* admits no level"):
            Wavelet(grid, wavelet)


def test_Q_of_a_large_grid_raises_MemoryError():
    k = Wavelet((512, 512))
    with pytest.raises(MemoryError, match="Q of Wavelet"):
        _ = k.Q


# ----------------------------------------------------------------------------------------
# properties


def _axis_sizes():
    return st.builds(lambda a, odd: 2**a * odd, st.integers(1, 4), st.sampled_from([1, 3]))


@settings(max_examples=examples(20), deadline=None)
@given(
    data=st.data(),
    grid=st.one_of(
        st.tuples(_axis_sizes()), st.tuples(_axis_sizes(), _axis_sizes()).filter(lambda g: g[0] * g[1] <= 96)
    ),
    wavelet=st.sampled_from(["haar", "db2"]),
    per=st.sampled_from(["subband", "coefficient"]),
    dtype=st.sampled_from([np.float32, np.float64]),
)
def test_property_transform_and_kernel(data, grid, wavelet, per, dtype):
    most = max_levels(grid, wavelet)
    if most == 0:
        with pytest.raises(ValueError, match="admits no level"):
            Wavelet(grid, wavelet)
        return
    levels = data.draw(st.integers(1, most))
    k = Wavelet(grid, wavelet, levels=levels, per=per)
    gen = np.random.default_rng(levels + 7 * len(grid))
    X = gen.standard_normal((2, *grid))
    want = np.stack([pywt_coeffs(x, wavelet, levels)[0] for x in X])
    np.testing.assert_allclose(k.transform(X), want, rtol=0, atol=atol_for(X, size=X[0].size))
    theta = gen.standard_normal(k.nparams).astype(dtype)
    M = k.matrix(theta)
    tol = atol_for(theta, dtype, size=k.shape[0])
    np.testing.assert_allclose(M, M.T, rtol=0, atol=tol)
    np.testing.assert_allclose(k.matrix(np.ones(k.nparams, dtype)), np.eye(k.shape[0]), rtol=0, atol=tol)
    report = check_kernel(k, dtype=dtype, rng=levels)
    assert report.passed, str(report)


# ----------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        (((8,), "db99"), {}, ValueError, r"`wavelet` must be one of 'haar', 'db1'...'db10'.* got 'db99'"),
        (((8,), "bior2.2"), {}, ValueError, r"got 'bior2.2' \(a biorthogonal wavelet"),
        (((8,), "sym4"), {}, ValueError, r"got 'sym4' \(PyWavelets' symlet"),
        (((8,), 3), {}, TypeError, r"`wavelet` must be the name of a wavelet .* got 3"),
        (((6,),), {"levels": 2}, ValueError, r"`levels`=2 is out of range .* axis 0: it has odd length 3"),
        (((8, 12),), {"levels": 3}, ValueError, r"level 3 cannot halve axis 1: it has odd length 3"),
        (((8,), "db2"), {"levels": 3}, ValueError, r"length 2 on axis 0 .* shorter than the filter length 4 of 'db2'"),
        (((8,),), {"levels": 0}, ValueError, r"`levels` must be an integer >= 1, got 0"),
        (((8,),), {"levels": 1.0}, TypeError, r"`levels` must be an integer or None, got 1.0"),
        (((8,),), {"levels": True}, TypeError, r"`levels` must be an integer or None, got True"),
        (((8,),), {"per": "pixel"}, ValueError, r"`per` must be one of \('subband', 'coefficient'\), got 'pixel'"),
        (((2, 2, 2, 2),), {}, ValueError, r"`grid` must have 1, 2 or 3 axes, got \(2, 2, 2, 2\)"),
        (((8, 0),), {}, ValueError, r"every entry of `grid` must be >= 1, got \(8, 0\)"),
        (((8.0,),), {}, TypeError, r"`grid` must hold integers, got \(8.0,\)"),
        ((None,), {}, TypeError, r"`grid` must be an integer or a sequence"),
        (((7,),), {}, ValueError, r"`grid` \(7,\) admits no level .* odd length 7"),
    ],
)
def test_bad_input(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        Wavelet(*args, **kwargs)


def test_bad_transform_input():
    k = Wavelet((4, 4))
    with pytest.raises(ValueError, match=r"`X` must hold examples .* \(n, 4, 4\) or \(n, 16\)"):
        k.transform(np.zeros((2, 3, 3)))
    with pytest.raises(ValueError, match=r"`C` must hold examples .* \(n, 16\)"):
        k.inverse_transform(np.zeros((2, 15)))
    with pytest.raises(TypeError, match=r"`X` must be a real float32 or float64 array"):
        k.transform(np.zeros((1, 16), dtype=np.complex128))


def test_exported_from_the_package():
    assert structops.Wavelet is Wavelet and "Wavelet" in structops.__all__
    assert repr(Wavelet(8, "db2")) == "Wavelet((8,), 'db2', levels=2, per='subband')"
