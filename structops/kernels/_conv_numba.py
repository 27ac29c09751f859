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
    cout, K = theta.shape  # theta: (cout, cin * S), column c * S + j
    S = shifts.shape[0]
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
                k = 0
                # four (channel, offset) terms per sweep: one load and store of the output per 4 FMAs
                while k + 4 <= K:
                    t0, t1, t2, t3 = theta[o, k], theta[o, k + 1], theta[o, k + 2], theta[o, k + 3]
                    x0 = xp[k // S, m0 + shifts[k % S] : m1 + shifts[k % S]]
                    x1 = xp[(k + 1) // S, m0 + shifts[(k + 1) % S] : m1 + shifts[(k + 1) % S]]
                    x2 = xp[(k + 2) // S, m0 + shifts[(k + 2) % S] : m1 + shifts[(k + 2) % S]]
                    x3 = xp[(k + 3) // S, m0 + shifts[(k + 3) % S] : m1 + shifts[(k + 3) % S]]
                    for m in range(m1 - m0):
                        arow[m] += t0 * x0[m] + t1 * x1[m] + t2 * x2[m] + t3 * x3[m]
                    k += 4
                while k < K:
                    t = theta[o, k]
                    xrow = xp[k // S, m0 + shifts[k % S] : m1 + shifts[k % S]]
                    for m in range(m1 - m0):
                        arow[m] += t * xrow[m]
                    k += 1
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
                for j in range(S):
                    xrow = xp[c, m0 + shifts[j] : m1 + shifts[j]]
                    o = 0
                    # four output channels per sweep: one load and store of the target per 4 FMAs
                    while o + 4 <= cout:
                        t0, t1, t2, t3 = theta[o, c, j], theta[o + 1, c, j], theta[o + 2, c, j], theta[o + 3, c, j]
                        y0, y1, y2, y3 = yw[o, m0:m1], yw[o + 1, m0:m1], yw[o + 2, m0:m1], yw[o + 3, m0:m1]
                        for m in range(m1 - m0):
                            xrow[m] += t0 * y0[m] + t1 * y1[m] + t2 * y2[m] + t3 * y3[m]
                        o += 4
                    while o < cout:
                        t = theta[o, c, j]
                        yrow = yw[o, m0:m1]
                        for m in range(m1 - m0):
                            xrow[m] += t * yrow[m]
                        o += 1
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
    nb_, cout, K = g.shape  # g: (blocks, cout, cin * S), column c * S + j
    S = shifts.shape[0]
    Lp = src.shape[0]
    M = outidx.shape[0]
    for b in nb.prange(nb_):
        lo = b * n // nb_
        hi = (b + 1) * n // nb_
        xp = np.empty((cin, Lp), dtype=x.dtype)
        ww = np.zeros((cout, width), dtype=x.dtype)
        zero = np.zeros(1, dtype=x.dtype)
        for o in range(cout):
            for k in range(K):
                g[b, o, k] = 0
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
                    k = 0
                    # four (channel, offset) dot products per sweep of the cotangent row
                    while k + 4 <= K:
                        x0 = xp[k // S, m0 + shifts[k % S] : m1 + shifts[k % S]]
                        x1 = xp[(k + 1) // S, m0 + shifts[(k + 1) % S] : m1 + shifts[(k + 1) % S]]
                        x2 = xp[(k + 2) // S, m0 + shifts[(k + 2) % S] : m1 + shifts[(k + 2) % S]]
                        x3 = xp[(k + 3) // S, m0 + shifts[(k + 3) % S] : m1 + shifts[(k + 3) % S]]
                        a0 = zero[0]
                        a1 = zero[0]
                        a2 = zero[0]
                        a3 = zero[0]
                        for m in range(m1 - m0):
                            wm = wrow[m]
                            a0 += wm * x0[m]
                            a1 += wm * x1[m]
                            a2 += wm * x2[m]
                            a3 += wm * x3[m]
                        g[b, o, k] += a0
                        g[b, o, k + 1] += a1
                        g[b, o, k + 2] += a2
                        g[b, o, k + 3] += a3
                        k += 4
                    while k < K:
                        xrow = xp[k // S, m0 + shifts[k % S] : m1 + shifts[k % S]]
                        acc = zero[0]
                        for m in range(m1 - m0):
                            acc += wrow[m] * xrow[m]
                        g[b, o, k] += acc
                        k += 1
