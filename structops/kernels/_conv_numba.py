r"""Optional numba kernels for the direct method of :class:`structops.Conv` (``structops[fast]``).

All three maps work on the *flattened padded grid*: with :math:`P_{bc}` written as a gather
``xp[q] = x[src[q]]`` (``src[q] = -1`` for a zero), stencil offset :math:`j` reads the padded
example at a constant flat shift :math:`D_j = \sum_a (s_a - 1 - j_a)\,\mathrm{stride}^{p}_a`
from the flat padded index :math:`P(i)` of output :math:`i`, so

.. math::
    z_{o}[P(i)] = \sum_{c, j} \theta_{o c j}\; x^p_c[P(i) + D_j]

is, for every ``(o, c, j)``, one contiguous multiply-add over the flat range
``[0, P(i_last)]`` (positions that are not outputs are computed and dropped). The adjoint
scatters :math:`y` onto that range, runs the same sums with the shifts reversed and folds the
padding back with ``src``; the stencil gradient is one dot product per ``(o, c, j)``.
Examples run in parallel (``prange``); every temporary is one example's padded grid, so
nothing of the size of the batch is allocated besides the result.
"""

from __future__ import annotations

import numba as nb
import numpy as np

_OPTS = dict(parallel=True, fastmath=True, cache=True, nogil=True)


@nb.njit(**_OPTS)
def forward(theta, x, src, shifts, outidx, width, tile, out):  # pragma: no cover - compiled
    """``out[e, o, i] = sum_{c,j} theta[o, c, j] xp_e[c, outidx[i] + shifts[j]]``."""
    n, cin, _ = x.shape
    cout, _, S = theta.shape
    Lp = src.shape[0]
    M = outidx.shape[0]
    for e in nb.prange(n):
        xp = np.empty((cin, Lp), dtype=x.dtype)
        for c in range(cin):
            for q in range(Lp):
                s = src[q]
                xp[c, q] = x[e, c, s] if s >= 0 else 0
        acc = np.zeros((cout, width), dtype=x.dtype)
        for m0 in range(0, width, tile):
            m1 = min(m0 + tile, width)
            for o in range(cout):
                arow = acc[o, m0:m1]
                for c in range(cin):
                    for j in range(S):
                        t = theta[o, c, j]
                        xrow = xp[c, m0 + shifts[j] : m1 + shifts[j]]
                        for m in range(m1 - m0):
                            arow[m] += t * xrow[m]
        for o in range(cout):
            for i in range(M):
                out[e, o, i] = acc[o, outidx[i]]


@nb.njit(**_OPTS)
def adjoint(theta, y, src, shifts, outidx, width, tile, out):  # pragma: no cover - compiled
    """``out = P^T C^T S^T y``: scatter, correlate with the reversed shifts, fold the padding."""
    n, cout, M = y.shape
    _, cin, S = theta.shape
    Lp = src.shape[0]
    N = out.shape[2]
    for e in nb.prange(n):
        yw = np.zeros((cout, width), dtype=y.dtype)
        for o in range(cout):
            for i in range(M):
                yw[o, outidx[i]] = y[e, o, i]
        xp = np.zeros((cin, Lp), dtype=y.dtype)
        for m0 in range(0, width, tile):
            m1 = min(m0 + tile, width)
            for c in range(cin):
                for o in range(cout):
                    yrow = yw[o, m0:m1]
                    for j in range(S):
                        t = theta[o, c, j]
                        xrow = xp[c, m0 + shifts[j] : m1 + shifts[j]]
                        for m in range(m1 - m0):
                            xrow[m] += t * yrow[m]
        for c in range(cin):
            for g in range(N):
                out[e, c, g] = 0
            for q in range(Lp):
                s = src[q]
                if s >= 0:
                    out[e, c, s] += xp[c, q]


@nb.njit(**_OPTS)
def gradient(x, w, src, shifts, outidx, width, tile, g):  # pragma: no cover - compiled
    """``g[b, o, c, j] = sum_{e in block b} sum_i w[e, o, i] xp_e[c, outidx[i] + shifts[j]]``.

    Examples are split into ``g.shape[0]`` contiguous blocks (one per example for
    per-example gradients, a few for the sum, which the caller adds up).
    """
    n, cin, _ = x.shape
    nb_, cout, _, S = g.shape
    Lp = src.shape[0]
    M = outidx.shape[0]
    for b in nb.prange(nb_):
        lo = b * n // nb_
        hi = (b + 1) * n // nb_
        xp = np.empty((cin, Lp), dtype=x.dtype)
        ww = np.zeros((cout, width), dtype=x.dtype)
        zero = np.zeros(1, dtype=x.dtype)
        for o in range(cout):
            for c in range(cin):
                for j in range(S):
                    g[b, o, c, j] = 0
        for e in range(lo, hi):
            for c in range(cin):
                for q in range(Lp):
                    s = src[q]
                    xp[c, q] = x[e, c, s] if s >= 0 else 0
            for o in range(cout):
                for i in range(M):
                    ww[o, outidx[i]] = w[e, o, i]
            for m0 in range(0, width, tile):
                m1 = min(m0 + tile, width)
                for o in range(cout):
                    wrow = ww[o, m0:m1]
                    for c in range(cin):
                        for j in range(S):
                            xrow = xp[c, m0 + shifts[j] : m1 + shifts[j]]
                            acc = zero[0]
                            for m in range(m1 - m0):
                                acc += wrow[m] * xrow[m]
                            g[b, o, c, j] += acc
