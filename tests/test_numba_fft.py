"""The numba kernels of CayleyConv's numpy path against independent references.

* ``rfft2_rows`` / ``irfft2_rows`` (batched 2-D real FFTs in the frequency-major row layout)
  against ``scipy.fft.rfftn`` / ``irfftn``, over sizes that exercise every radix (4, 2, the
  written-out 7, the generic odd 3 and 5), odd and even axes, a single row or column, and
  batches that do not fill the last block of examples;
* ``irfft2_rows`` on spectra that are not Hermitian (it drops the imaginary parts of the
  self-conjugate bins, as ``irfftn`` does);
* ``irfft2_rows`` through per-frequency blocks and their adjoints (the products computed inside
  the kernel) against ``einsum`` and ``irfftn``, on one thread and on two;
* ``pair_grams`` against an ``einsum`` of the complex rows in float64;
* ``resolvents`` (Gauss--Jordan without pivoting on all blocks at once) against
  ``numpy.linalg.inv`` in float64, for skew-Hermitian blocks small and large;
* CayleyConv's products and gradient with the kernels against the scipy path (numba off).
"""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
import scipy.fft as sfft

import structops
from structops.testing import default_rtol

pytest.importorskip("numba")
from structops.kernels.conv import _numba_fft, _numba_gram, _numba_resolvent

GRIDS = [(28, 28), (7, 14), (5, 9), (12, 10), (1, 8), (6, 1), (3, 5), (2, 2), (16, 21)]


def _rows_reference(x: np.ndarray) -> np.ndarray:
    """scipy's half spectrum of ``x`` (n, c, H, W) as complex rows (F, n, c)."""
    n, c = x.shape[:2]
    spec = sfft.rfftn(x.astype(np.float64), axes=(2, 3))
    return np.moveaxis(spec, (0, 1), (-2, -1)).reshape(-1, n, c)


def _complex(rows: np.ndarray) -> np.ndarray:
    return rows.astype(np.float64).view(np.complex128)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


@pytest.mark.parametrize("grid", GRIDS, ids=[f"{h}x{w}" for h, w in GRIDS])
def test_rows_are_scipys_half_spectrum_and_invert_back(grid, dtype, rng):
    n, c = 11, 3  # 11 examples: the last block of examples is not full
    x = rng.standard_normal((n, c, *grid)).astype(dtype)
    rows = _numba_fft.rfft2_rows(x)
    assert rows.shape == (grid[0] * (grid[1] // 2 + 1), n, 2 * c) and rows.dtype == dtype
    tol = default_rtol(dtype, int(np.prod(grid)))
    assert _rel(_complex(rows), _rows_reference(x)) <= tol
    back = _numba_fft.irfft2_rows(rows, grid)
    assert back.shape == x.shape and back.dtype == dtype
    assert _rel(back, x) <= tol


@pytest.mark.parametrize("grid", [(28, 28), (5, 6), (4, 7), (3, 1)], ids=["28x28", "5x6", "4x7", "3x1"])
def test_inverse_of_a_non_hermitian_spectrum_is_scipys(grid, dtype, rng):
    """Arbitrary rows: the imaginary parts of the self-conjugate bins are dropped, as irfftn does."""
    n, c = 3, 2
    F = grid[0] * (grid[1] // 2 + 1)
    rows = rng.standard_normal((F, n, 2 * c)).astype(dtype)
    spec = np.moveaxis(_complex(rows).reshape(*grid[:-1], grid[-1] // 2 + 1, n, c), (-2, -1), (0, 1))
    expected = sfft.irfftn(spec, s=grid, axes=(2, 3))
    got = _numba_fft.irfft2_rows(rows, grid, np.empty((n, c, *grid), dtype))
    assert _rel(got, expected) <= default_rtol(dtype, int(np.prod(grid)))


@pytest.mark.parametrize("adjoint", [False, True], ids=["K", "KH"])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("grid", [(28, 28), (5, 9)], ids=["28x28", "5x9"])
def test_products_inside_the_inverse_are_the_blocks_multiplier(grid, threads, adjoint, dtype, rng):
    """``irfft2_rows(rows, grid, out, blocks, adjoint)`` is ``irfftn`` of :math:`K_f z` (:math:`K_f^H z`).

    64 examples of 16 channels on 28×28 are enough work for two threads (``kernel_threads``), so
    the parallel products run.
    """
    n, c = (64, 16) if grid == (28, 28) else (5, 2)
    F = grid[0] * (grid[1] // 2 + 1)
    rows = rng.standard_normal((F, n, 2 * c)).astype(dtype)
    K = (rng.standard_normal((F, c, c)) + 1j * rng.standard_normal((F, c, c))).astype(np.result_type(dtype, 1j))
    with structops.set_num_threads(threads):
        got = _numba_fft.irfft2_rows(rows, grid, None, K, adjoint)
        again = _numba_fft.irfft2_rows(rows, grid, None, K, adjoint)  # the reused scratch gives the same
    M = np.conj(np.swapaxes(K, -1, -2)) if adjoint else K
    prod = np.einsum("foi,fni->fno", M.astype(np.complex128), _complex(rows))  # (K_f z_n) per example
    spec = np.moveaxis(prod.reshape(*grid[:-1], grid[-1] // 2 + 1, n, c), (-2, -1), (0, 1))
    expected = sfft.irfftn(spec, s=grid, axes=(2, 3))
    assert _rel(got, expected) <= default_rtol(dtype, int(np.prod(grid)) * 2 * c)
    np.testing.assert_array_equal(got, again)
    with pytest.raises(ValueError, match="`blocks` must have shape"):
        _numba_fft.irfft2_rows(rows, grid, None, K[:-1])


@pytest.mark.parametrize("n", [1, 37])
def test_pair_grams_are_the_weighted_complex_grams(n, dtype, rng):
    F, c = 6, 3
    a, b = (rng.standard_normal((F, n, 2 * c)).astype(dtype) for _ in range(2))
    weight = rng.standard_normal(F)
    complex_dtype = np.result_type(dtype, np.complex64)
    got = _numba_gram.pair_grams(a, b, weight, complex_dtype)
    assert got.shape == (F, c, c) and got.dtype == complex_dtype
    expected = weight[:, None, None] * np.einsum("fni,fnj->fij", _complex(a), np.conj(_complex(b)))
    assert _rel(got, expected) <= default_rtol(dtype, n)


def test_plans_factor_the_length_and_refuse_other_primes():
    stages, re, im = _numba_fft.plan(28, False, np.float64)
    assert [int(p) for p in stages[:, 0]] == [4, 7] and re.shape == im.shape
    np.testing.assert_allclose(
        re + 1j * im,
        np.concatenate(
            [np.exp(-2j * np.pi * np.outer(np.arange(L), np.arange(p)) / (p * L)).ravel() for p, L in ((4, 1), (7, 4))]
        ),
    )
    assert _numba_fft.supported((28, 30)) and _numba_fft.supported((1, 1))
    assert not _numba_fft.supported((11, 4)) and not _numba_fft.supported((8,)) and not _numba_fft.supported((2, 2, 2))
    with pytest.raises(ValueError, match="`n` must factor"):
        _numba_fft.plan(22, False, np.float64)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("c", [1, 3, 16])
@pytest.mark.parametrize("scale", [0.1, 3.0, 100.0])
def test_resolvents_are_the_inverses_of_identity_plus_skew(c, scale, threads, rng):
    S = scale * (rng.standard_normal((4, 5, c, c)) + 1j * rng.standard_normal((4, 5, c, c)))
    B = S - np.conj(np.swapaxes(S, -1, -2))
    B32 = B.astype(np.complex64)
    # blocks sliced over the threads: every slice size (20 blocks on two threads, 10 each)
    with structops.set_num_threads(threads), mock.patch.object(_numba_resolvent, "WORK_PER_MULTIPLY_ADD", 2**30):
        got, transform = _numba_resolvent.resolvents(B32)
    assert got.shape == transform.shape == B.shape and got.dtype == transform.dtype == np.complex64
    # the exact inverse of the rounded blocks; float64 elimination keeps the error at complex64's rounding
    expected = np.linalg.inv(np.eye(c) + B32.astype(np.complex128))
    assert _rel(got, expected) <= default_rtol(np.float32, c)
    cayley = np.linalg.solve(np.eye(c) + B32.astype(np.complex128), np.eye(c) - B32.astype(np.complex128))
    assert _rel(transform, cayley) <= default_rtol(np.float32, c)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(("grid", "c"), [((28, 28), 16), ((7, 6), 3), ((5,), 1), ((4, 3, 6), 2)])
def test_tap_resolvents_are_the_cayley_blocks_of_the_taps_spectrum(grid, c, threads, rng):
    """The generator's spectrum summed inside the kernel, against its dense Fourier sum and LAPACK, in float64."""
    k = structops.CayleyConv(grid, 3, channels=c)
    theta = k.random_theta(rng, np.float32)
    taps = theta.reshape(c, c, -1).astype(np.float64)
    phi = structops.kernels.conv.cayley.tap_factors(k.geometry)  # (T, F)
    S = np.einsum("ijt,tf->fij", taps, phi)
    A = np.eye(c) + S - np.conj(np.swapaxes(S, -1, -2))
    with structops.set_num_threads(threads), mock.patch.object(_numba_resolvent, "WORK_PER_MULTIPLY_ADD", 2**30):
        resolvent, transform = _numba_resolvent.tap_resolvents(taps, phi.real, phi.imag, np.complex64)
    assert resolvent.dtype == transform.dtype == np.complex64 and resolvent.shape == (phi.shape[1], c, c)
    assert _rel(resolvent, np.linalg.inv(A)) <= default_rtol(np.float32, c)
    assert _rel(transform, np.linalg.solve(A, 2 * np.eye(c) - A)) <= default_rtol(np.float32, c)


@pytest.mark.parametrize("transpose", [False, True], ids=["K", "KT"])
def test_cayley_products_and_gradient_agree_with_and_without_numba(transpose, dtype, rng):
    """The numba transforms and resolvents against the scipy/LAPACK path of the same family."""
    k = structops.CayleyConv((14, 7), 3, channels=3)
    theta = k.random_theta(rng, dtype)
    X, W = (rng.standard_normal((5, k.shape[0])).astype(dtype) for _ in range(2))
    fast = k.apply(theta, X, transpose=transpose), k.jac(theta, X, transpose).H @ W.ravel()
    with structops.set_accelerator("numpy"):
        slow = k.apply(theta, X, transpose=transpose), k.jac(theta, X, transpose).H @ W.ravel()
    tol = default_rtol(dtype, k.shape[0])
    assert _rel(fast[0], slow[0]) <= tol and _rel(fast[1], slow[1]) <= tol
