"""The numba Cholesky test behind :func:`structops.solvers._fastclip.within` (imported only when numba is installed)."""

from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(cache=True, nogil=True)
def factorises(gram, shift, out):  # pragma: no cover - compiled
    r"""``out[b]``: whether Cholesky of :math:`sI - G_b` runs to completion (every pivot positive), for each block.

    ``gram`` ``(blocks, n, n)`` complex128 (its lower triangle and the real part of its diagonal
    are read, as LAPACK's ``potrf`` reads a Hermitian matrix), ``shift`` the real :math:`s`.
    Cholesky--Banachiewicz in IEEE arithmetic, no fast-math: the backward error bound of
    :mod:`structops.solvers._fastclip` (item 3) holds for it as for LAPACK.
    """
    count, n, _ = gram.shape
    a = np.empty((n, n), dtype=np.complex128)
    for b in range(count):
        for i in range(n):
            for j in range(i):
                a[i, j] = -gram[b, i, j]
            a[i, i] = shift - gram[b, i, i].real
        ok = True
        for j in range(n):
            pivot = a[j, j].real
            for k in range(j):
                pivot -= a[j, k].real * a[j, k].real + a[j, k].imag * a[j, k].imag
            if not pivot > 0.0:
                ok = False
                break
            root = np.sqrt(pivot)
            a[j, j] = root
            for i in range(j + 1, n):
                value = a[i, j]
                for k in range(j):
                    value -= a[i, k] * np.conj(a[j, k])
                a[i, j] = value / root
        out[b] = ok
    return out
