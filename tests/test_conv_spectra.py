"""Spectra of periodic convolutions: eigvals, symbol and the lecture notes' FFT identities.

References: ``numpy.linalg.eigvals`` of the dense matrix, a sparse circulant built with
``scipy.sparse.diags`` (the lecture notes' coding exercise), numpy FFTs written out in the test.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.optimize import linear_sum_assignment

from structops import Conv
from structops.testing import default_rtol

from ._helpers import atol_for


def assert_same_multiset(got, want, atol: float) -> None:
    """Match eigenvalues one-to-one minimising |got_i - want_j| (Hungarian), then compare."""
    got = np.asarray(got, dtype=np.complex128).ravel()
    want = np.asarray(want, dtype=np.complex128).ravel()
    assert got.shape == want.shape
    cost = np.abs(got[:, None] - want[None, :])
    rows, cols = linear_sum_assignment(cost)
    worst = cost[rows, cols].max(initial=0.0)
    assert worst <= atol, f"eigenvalues differ by {worst:.3e} > {atol:.3e}"


def eig_tol(dtype, lam, n: int) -> float:
    # circulant matrices are normal, so eigenvalues are perfectly conditioned: error ~ eps * ||K||_2 * log n
    return default_rtol(dtype, n) * max(float(np.abs(lam).max()), 1.0)


GRIDS_STENCILS = [
    ((16,), (3,)),
    ((7,), (2,)),
    ((5,), (5,)),
    ((4,), (7,)),  # larger than the grid: wraps
    ((1,), (3,)),
    ((4, 5), (3, 2)),
    ((3, 3), (3, 3)),
    ((2, 6), (5, 4)),  # larger on axis 0
    ((3, 2, 4), (2, 3, 3)),
    ((2, 2, 3), (1, 2, 3)),
]


@pytest.mark.parametrize(("grid", "stencil"), GRIDS_STENCILS, ids=str)
def test_eigvals_equal_numpy_eigvals_of_dense_matrix(grid, stencil, dtype, rng):
    k = Conv(grid, stencil, bc="periodic")
    theta = rng.standard_normal(k.nparams).astype(dtype)
    lam = k.eigvals(theta)
    assert lam.shape == grid and np.iscomplexobj(lam)
    dense = k.matrix(theta).astype(np.float64)
    assert_same_multiset(lam, np.linalg.eigvals(dense), eig_tol(dtype, lam, dense.shape[0]))
    # lambda = F(K u_1): fftn of the first column, not merely the same multiset
    np.testing.assert_allclose(lam, np.fft.fftn(dense[:, 0].reshape(grid)), atol=eig_tol(dtype, lam, lam.size))


@pytest.mark.parametrize(("grid", "stencil"), GRIDS_STENCILS, ids=str)
def test_fft_diagonalisation_reproduces_apply_and_adjoint(grid, stencil, dtype, rng):
    k = Conv(grid, stencil, bc="periodic")
    theta = rng.standard_normal(k.nparams).astype(dtype)
    lam = k.eigvals(theta)
    Y = rng.standard_normal((3, *grid)).astype(dtype)
    axes = tuple(range(1, 1 + len(grid)))
    KY = np.real(np.fft.ifftn(lam * np.fft.fftn(Y, axes=axes), axes=axes))
    KTY = np.real(np.fft.ifftn(np.conj(lam) * np.fft.fftn(Y, axes=axes), axes=axes))
    rt = default_rtol(dtype, Y[0].size)
    for got, want in ((k.apply(theta, Y[:, None])[:, 0], KY), (k.apply(theta, Y[:, None], transpose=True)[:, 0], KTY)):
        assert np.linalg.norm(got - want) <= rt * np.linalg.norm(want)


@pytest.mark.parametrize("method", ["direct", "fft"])
def test_seed_coding_exercise_n16(method, rng):
    """The lecture notes' exercise: sparse periodic K (spdiags), eig(full(K)) vs fft of the first column."""
    n, (t1, t2, t3) = 16, rng.standard_normal(3)
    # z_i = t1 x_{i+1} + t2 x_i + t3 x_{i-1} (periodic): the stencil (t1, t2, t3) centred at t2
    K = sp.diags(
        [t2 * np.ones(n), t1 * np.ones(n - 1), t3 * np.ones(n - 1), [t3], [t1]],
        [0, 1, -1, n - 1, -(n - 1)],
        format="csr",
    )
    k = Conv(n, 3, bc="periodic", method=method)
    theta = np.array([t1, t2, t3])
    tol = default_rtol(np.float64, n) * np.abs(theta).sum()  # |λ| <= Σ|θ|: the scale of every result
    np.testing.assert_allclose(k.matrix(theta), K.toarray(), rtol=0, atol=tol)
    lam = k.eigvals(theta)
    assert_same_multiset(lam, np.linalg.eigvals(K.toarray()), tol)
    np.testing.assert_allclose(lam, np.fft.fft(K @ np.eye(n)[:, 0]), atol=tol)
    y = rng.standard_normal(n)
    assert np.linalg.norm(K @ y - np.real(np.fft.ifft(lam * np.fft.fft(y)))) <= tol * np.linalg.norm(y)
    assert np.linalg.norm(K.T @ y - np.real(np.fft.ifft(np.conj(lam) * np.fft.fft(y)))) <= tol * np.linalg.norm(y)
    # arbitrary stencil sizes without K: circshift of the zero-padded stencil, centre to index 0
    for s in (1, 2, 5, 8, 16, 21):
        ks = Conv(n, s, bc="periodic", method=method)
        th = rng.standard_normal(s)
        col = np.zeros(n)
        for j in range(s):
            col[(j - s // 2) % n] += th[j]  # np.roll of the padded stencil by -(s // 2), wrapping sums
        tol = default_rtol(np.float64, n) * np.abs(th).sum()
        np.testing.assert_allclose(ks.eigvals(th), np.fft.fft(col), atol=tol)
        assert_same_multiset(ks.eigvals(th), np.linalg.eigvals(ks.matrix(th)), tol)


@pytest.mark.parametrize(
    ("grid", "stencil", "cin", "cout"),
    [((8,), (3,), 2, 3), ((4, 5), (3, 2), 3, 2), ((3, 2, 4), (2, 2, 3), 1, 2), ((3, 4), (5, 5), 2, 2)],
    ids=str,
)
def test_fourier_blocks_reproduce_apply(grid, stencil, cin, cout, dtype, rng):
    k = Conv(grid, stencil, bc="periodic", in_channels=cin, out_channels=cout)
    theta = rng.standard_normal(k.nparams).astype(dtype)
    sym = k.diagonalize(theta).full_blocks()
    assert sym.shape == (*grid, cout, cin)
    X = rng.standard_normal((2, cin, *grid)).astype(dtype)
    axes = tuple(range(2, 2 + len(grid)))
    Xf = np.fft.fftn(X, axes=axes)
    # per frequency: z_hat(xi) = K_hat(xi) x_hat(xi), an (out x in) block times a vector
    Zf = np.einsum("...oc,nc...->no...", sym, Xf)
    Z = np.real(np.fft.ifftn(Zf, axes=axes))
    rt = default_rtol(dtype, int(np.prod(grid)) * cin)
    assert np.linalg.norm(k.apply(theta, X) - Z) <= rt * np.linalg.norm(Z)
    # adjoint: conjugate-transposed blocks
    Y = rng.standard_normal((2, cout, *grid)).astype(dtype)
    XTf = np.einsum("...oc,no...->nc...", np.conj(sym), np.fft.fftn(Y, axes=axes))
    XT = np.real(np.fft.ifftn(XTf, axes=axes))
    assert np.linalg.norm(k.apply(theta, Y, transpose=True) - XT) <= rt * np.linalg.norm(XT)
    # block (o, c) is the spectrum of the single-channel convolution with stencil theta[o, c]
    th = theta.reshape(cout, cin, -1)
    single = Conv(grid, stencil, bc="periodic")
    for o in range(cout):
        for c in range(cin):
            np.testing.assert_allclose(sym[..., o, c], single.eigvals(th[o, c]), atol=rt * np.abs(th).sum())


def test_fourier_block_singular_values_are_the_operator_norm(rng):
    # the 2-norm of a periodic multi-channel conv is the largest singular value over all frequency blocks
    k = Conv((6, 5), (3, 3), bc="periodic", in_channels=2, out_channels=3)
    theta = rng.standard_normal(k.nparams)
    sv = np.linalg.svd(k.diagonalize(theta).full_blocks(), compute_uv=False)
    norm = np.linalg.norm(k.matrix(theta), 2)
    np.testing.assert_allclose(sv.max(), norm, rtol=0, atol=atol_for(norm, size=k.shape[0]))


@pytest.mark.parametrize("bc", ["zero", "reflect", "replicate", "valid"])
def test_spectra_need_periodic(bc):
    k = Conv(8, 3, bc=bc)
    with pytest.raises(ValueError, match=r"`eigvals` needs bc='periodic' and stride 1.*bc='" + bc):
        k.eigvals(np.ones(3))
    with pytest.warns(DeprecationWarning, match=r"`symbol\(theta\)` is deprecated.*full_blocks"):
        with pytest.raises(ValueError, match=r"`symbol` needs bc='periodic'"):
            k.symbol(np.ones(3))


def test_spectra_need_stride_one():
    k = Conv((8, 8), 3, bc="periodic", stride=(1, 2))
    with pytest.raises(ValueError, match=r"`eigvals` needs bc='periodic' and stride 1.*stride=\(1, 2\)"):
        k.eigvals(np.ones(9))
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match=r"`symbol` needs .*stride 1"):
        k.symbol(np.ones(9))


def test_eigvals_need_one_channel():
    k = Conv(8, 3, bc="periodic", in_channels=2)
    with pytest.raises(ValueError, match=r"`eigvals` needs in_channels = out_channels = 1.*full_blocks"):
        k.eigvals(np.ones(6))


def test_spectra_validate_theta():
    k = Conv(8, 3, bc="periodic")
    with pytest.raises(ValueError, match=r"`theta` must have length nparams = 3"):
        k.eigvals(np.ones(4))
    with pytest.raises(ValueError, match=r"`theta` must be finite"):
        k.diagonalize(np.array([1.0, np.nan, 0.0]))


def _deprecated_symbol_cases():
    from structops import AntisymmetricConv, CayleyConv, SymmetricConv

    return [
        ("Conv", Conv((5, 4), (3, 2), bc="periodic", in_channels=2, out_channels=3), lambda k, t: (k, t)),
        ("SymmetricConv", SymmetricConv((6, 5), (3, 3), bc="periodic"), lambda k, t: (k.conv, k.weights(t).ravel())),
        ("AntisymmetricConv", AntisymmetricConv((4, 5), (3, 3), bc="periodic", channels=2), lambda k, t: (k, t)),
        ("CayleyConv", CayleyConv((4, 4), (3, 3), channels=2), lambda k, t: (k, t)),
    ]


@pytest.mark.parametrize("case", range(4), ids=["Conv", "SymmetricConv", "AntisymmetricConv", "CayleyConv"])
def test_symbol_is_a_deprecated_alias_of_the_fourier_blocks(case, rng):
    # the removed symbol(theta) warns and returns diagonalize(theta).full_blocks(), which block-diagonalise K
    _, k, source = _deprecated_symbol_cases()[case]
    theta = k.random_theta(rng)
    with pytest.warns(DeprecationWarning, match=r"`symbol\(theta\)` is deprecated.*diagonalize\(theta\)\.full_blocks"):
        S = k.symbol(theta)
    owner, t = source(k, theta)
    np.testing.assert_array_equal(S, owner.diagonalize(t).full_blocks())
    x = rng.standard_normal(k.in_shape)
    axes = tuple(range(1, x.ndim))
    y = np.fft.ifftn(np.einsum("...oc,c...->o...", S, np.fft.fftn(x, axes=axes)), axes=axes).real
    want = k.apply(theta, x)
    np.testing.assert_allclose(y, want, atol=atol_for(want, size=k.shape[0]))
