r"""A numba kernel for the Grams in :class:`~structops.CayleyConv`'s gradient in θ.

The gradient of :math:`\langle W, K(\theta)X\rangle` (:meth:`CayleyConv._spectral_vjp`) needs, at
every frequency :math:`\xi` of the half spectrum, the complex Gram
:math:`P_\xi = \omega_\xi \sum_n \hat x_{n\xi} \hat w_{n\xi}^H` of the two batches' rows. numpy
computes it as a stacked real product ``(2c × n) @ (n × 2c)`` with a transposed operand (slower
than a plain product), then reads the complex entries out of the real ``(F, 2c, 2c)`` Gram with
four strided copies. Here each frequency is one iteration of a parallel loop: one BLAS call for
its real Gram, and its complex entries written at once, with no ``(F, 2c, 2c)`` array.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from ..._backend import kernel_threads
from ._numba_fft import WORK_PER_VALUE

__all__ = ["pair_grams"]


@nb.njit(parallel=True, cache=True, nogil=True)
def _pair_grams(a, b, weight, out):  # pragma: no cover - compiled
    F, c = out.shape[0], out.shape[1]
    for f in nb.prange(F):
        G = np.dot(a[f].T, b[f])  # (2c, 2c): G[2i + p, 2j + q] = sum_n a[n, i, p] b[n, j, q]
        P = out[f]
        for i in range(c):
            for j in range(c):
                re = G[2 * i, 2 * j] + G[2 * i + 1, 2 * j + 1]
                im = G[2 * i + 1, 2 * j] - G[2 * i, 2 * j + 1]
                P[i, j] = weight[f] * complex(re, im)


def pair_grams(a: np.ndarray, b: np.ndarray, weight: np.ndarray, dtype: np.dtype) -> np.ndarray:
    r"""The weighted complex Grams :math:`P_\xi = \omega_\xi \sum_n \hat a_{n\xi} \hat b_{n\xi}^H` of two batches' rows.

    Parameters
    ----------
    a, b : numpy.ndarray, shape ``(F, n, 2c)``
        Two batches' half spectra as real rows (``(re, im)`` per channel), float32 or float64,
        C contiguous: :math:`P_\xi[i, j] = \omega_\xi \sum_n a_{n\xi i}\,\overline{b_{n\xi j}}`.
    weight : numpy.ndarray, shape ``(F,)``
        :math:`\omega_\xi` per frequency.
    dtype : numpy.dtype
        The complex dtype of the result.

    Returns
    -------
    numpy.ndarray, shape ``(F, c, c)``
    """
    F, c2 = a.shape[0], a.shape[2]
    out = np.empty((F, c2 // 2, c2 // 2), dtype)
    # as many threads as the transforms that made the rows (they count their work per value)
    with kernel_threads(WORK_PER_VALUE * a.size, F):
        _pair_grams(a, b, np.ascontiguousarray(weight, a.dtype), out)
    return out
