r"""A numba kernel for the resolvents :math:`(I + B)^{-1}` of many small skew-Hermitian blocks (CayleyConv).

``numpy.linalg.inv`` (and ``torch.linalg.inv``) call LAPACK once per block: for the
``H(W/2+1)`` blocks of ``16 × 16`` of a 28×28 Cayley layer that is ~3 ms of call overhead for
~0.1 ms of arithmetic. Here Gauss–Jordan elimination runs on all blocks at once, the blocks
being the vector lanes (planar real and imaginary parts of shape ``(c, c, F)``).

**No pivoting, and why that is stable.** With :math:`B^H = -B` the Hermitian part of
:math:`A = I + B` is :math:`I`. Eliminating the first row leaves the Schur complement
:math:`A_{22} + b^H b/(1 + i\beta)` (:math:`a_{11} = 1 + i\beta`, :math:`a_{21} = -b^H`),
whose Hermitian part :math:`I + b^H b/(1 + \beta^2) \succeq I` is again positive definite, so
every pivot has real part at least 1: elimination without pivoting never divides by a small
number (Golub & Van Loan, *Matrix Computations*, 4th ed., §4.2, unsymmetric positive definite
systems), and :math:`A` itself is well conditioned (singular values :math:`\sqrt{1 + \sigma^2} \ge 1`).
"""

from __future__ import annotations

import numba as nb
import numpy as np

__all__ = ["resolvents"]


@nb.njit(fastmath=True, cache=True, nogil=True)
def _gauss_jordan(ar, ai):  # pragma: no cover - compiled
    """Invert the planar blocks ``a[:, :, f]`` in place (Gauss–Jordan, no pivoting), every loop over ``f``."""
    c, F = ar.shape[0], ar.shape[2]
    er, ei = np.empty(F, ar.dtype), np.empty(F, ar.dtype)
    mr, mi = np.empty(F, ar.dtype), np.empty(F, ar.dtype)
    for k in range(c):
        pr, pi = ar[k, k], ai[k, k]
        for f in range(F):  # e = 1 / pivot
            d = 1.0 / (pr[f] * pr[f] + pi[f] * pi[f])
            er[f], ei[f] = pr[f] * d, -pi[f] * d
        for j in range(c):  # row k /= pivot; its pivot entry becomes 1 / pivot
            xr, xi = ar[k, j], ai[k, j]
            if j == k:
                xr[:] = er
                xi[:] = ei
            else:
                for f in range(F):
                    a, b = xr[f], xi[f]
                    xr[f] = a * er[f] - b * ei[f]
                    xi[f] = a * ei[f] + b * er[f]
        for i in range(c):  # row i -= a[i, k] row k; its k entry becomes -a[i, k] / pivot
            if i == k:
                continue
            mr[:] = ar[i, k]
            mi[:] = ai[i, k]
            for j in range(c):
                yr, yi, xr, xi = ar[i, j], ai[i, j], ar[k, j], ai[k, j]
                if j == k:
                    for f in range(F):
                        yr[f] = -(mr[f] * xr[f] - mi[f] * xi[f])
                        yi[f] = -(mr[f] * xi[f] + mi[f] * xr[f])
                else:
                    for f in range(F):
                        yr[f] -= mr[f] * xr[f] - mi[f] * xi[f]
                        yi[f] -= mr[f] * xi[f] + mi[f] * xr[f]


def resolvents(skew: np.ndarray) -> np.ndarray:
    r""":math:`(I + B)^{-1}` for skew-Hermitian complex64 blocks ``skew`` of shape ``(..., c, c)``, computed in float64.

    Without pivoting the entries of the Schur complements grow like :math:`\|B\|`, so the
    rounding error is about :math:`u\,\|B\|^2` instead of LAPACK's :math:`u\,\|B\|`; in
    float64 that stays far below complex64's own rounding (complex128 blocks go to LAPACK).
    """
    c = skew.shape[-1]
    blocks = skew.reshape(-1, c, c)
    ar = np.ascontiguousarray(np.moveaxis(blocks.real, 0, -1), dtype=np.float64)
    ai = np.ascontiguousarray(np.moveaxis(blocks.imag, 0, -1), dtype=np.float64)
    ar[np.arange(c), np.arange(c)] += 1
    _gauss_jordan(ar, ai)
    out = np.empty(blocks.shape, skew.dtype)
    out.real = np.moveaxis(ar, -1, 0)
    out.imag = np.moveaxis(ai, -1, 0)
    return out.reshape(skew.shape)
