r"""Numba kernels for :class:`~structops.CayleyConv`'s per-frequency products, parallel over the frequencies.

After the transforms (:mod:`._numba_fft`) the bridge's work is many small dense products, one
per frequency: the rows times the real right factors, and for the gradient in :math:`\theta`
the Gram of two batches' rows followed by :math:`E = Q - Q^H`, :math:`Q = R P R`. numpy runs
them one after another on one thread, and splitting them over Python threads competes with
numba's OpenMP workers, which spin after each kernel. Here a ``prange`` over the frequencies
runs them on the same OpenMP pool as the transforms, each product a BLAS call (BLAS is held at
one thread meanwhile by :func:`structops._backend.kernel_threads`).
"""

from __future__ import annotations

import numba as nb
import numpy as np

from ..._backend import kernel_threads

__all__ = ["gram_skew", "products"]

_OPTS = dict(parallel=True, cache=True, nogil=True)


@nb.njit(**_OPTS)
def _products(rows, right, out):  # pragma: no cover - compiled
    for f in nb.prange(rows.shape[0]):
        np.dot(rows[f], right[f], out[f])


@nb.njit(**_OPTS)
def _gram_skew(a, b, R, weight, out):  # pragma: no cover - compiled
    c = R.shape[-1]
    for f in nb.prange(a.shape[0]):
        g = np.dot(a[f].T, b[f])  # (2c, 2c): (re, im) interleaved per channel
        P = np.empty((c, c), R.dtype)
        for i in range(c):
            for j in range(c):
                re = g[2 * i, 2 * j] + g[2 * i + 1, 2 * j + 1]
                im = g[2 * i + 1, 2 * j] - g[2 * i, 2 * j + 1]
                P[i, j] = weight[f] * (re + 1j * im)
        Q = np.dot(np.dot(R[f], P), R[f])
        for i in range(c):
            for j in range(c):
                out[f, i, j] = Q[i, j] - np.conj(Q[j, i])


def products(rows: np.ndarray, right: np.ndarray) -> np.ndarray:
    """``rows[f] @ right[f]`` for every frequency: rows ``(F, n, k)``, right ``(F, k, k)``, both C-contiguous."""
    out = np.empty(rows.shape, np.result_type(rows, right))
    with kernel_threads(rows.size * right.shape[-1], rows.shape[0]):
        _products(rows, right.astype(out.dtype, copy=False), out)
    return out


def gram_skew(a: np.ndarray, b: np.ndarray, R: np.ndarray, weight: np.ndarray) -> np.ndarray:
    r""":math:`E_f = Q_f - Q_f^H`, :math:`Q_f = R_f P_f R_f`, :math:`P_f` the complex form of ``weight[f] a[f]ᵀ b[f]``.

    ``a``, ``b``: rows ``(F, n, 2c)``; ``R``: complex blocks ``(F, c, c)``; ``weight``: ``(F,)``.
    Returns ``(F, c, c)`` in ``R``'s dtype (see ``CayleyConv._spectral_vjp`` for the maths).
    """
    out = np.empty(R.shape, R.dtype)
    with kernel_threads(a.size * a.shape[-1], a.shape[0]):
        _gram_skew(a, b, np.ascontiguousarray(R), weight.astype(a.dtype), out)
    return out
