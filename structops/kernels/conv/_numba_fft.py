r"""Numba kernels for batched 2-D real FFTs in the frequency-major layout of :class:`~structops.CayleyConv`.

The Cayley product works per frequency on rows ``(F, n, 2c)``: for each frequency of the
``rfftn`` half grid, one row per example holding the ``c`` channels' complex values as
``(re, im)`` pairs. With ``scipy.fft`` (or torch's MKL) the spectrum comes out as
``(n, c, *half)`` and a layout copy of the whole complex spectrum sits between every transform
and every product. These kernels transform one example at a time in cache and write (read) the
rows directly, so no layout copy of the batch is made. The inverse can apply the per-frequency
blocks first (:func:`irfft2_rows`' ``blocks``): one BLAS product per frequency inside the kernel,
on its threads, into a scratch array that each thread reuses (:func:`structops._scratch.workspace`).

**The transform.** For an example :math:`x` of shape ``(c, H, W)`` (``W`` even or odd):

1. the rows are packed in pairs, :math:`z_p = x_{2p} + i\,x_{2p+1}` (a last row of odd ``H``
   has a zero partner), and one complex FFT of length ``W`` transforms every pair and channel
   at once; the two real rows' half spectra follow from Hermitian symmetry,
   :math:`X_{2p}[k] = (Z_p[k] + \overline{Z_p[W-k]})/2` and
   :math:`X_{2p+1}[k] = (Z_p[k] - \overline{Z_p[W-k]})/(2i)`;
2. one complex FFT of length ``H`` along the rows, for every half-spectrum column and channel.

The inverse runs the steps backwards: an inverse FFT of length ``H``, then the pairs of rows
packed as :math:`Z_p[k] = X_{2p}[k] + i\,X_{2p+1}[k]` (completed by Hermitian symmetry, the
imaginary parts of the self-conjugate bins :math:`k = 0` and :math:`k = W/2` dropped, exactly
as ``irfftn`` does) and one inverse complex FFT of length ``W``, divided by :math:`HW`.

**The complex FFT** is a self-sorting (Stockham) mixed-radix FFT over *lanes*: the transform
axis is the slowest one of a planar buffer ``(n, lanes)`` (real and imaginary parts apart), and
every butterfly is a loop over the contiguous lanes (``(H/2)·c`` lanes on the first axis,
``(W/2+1)·c`` on the second), which LLVM vectorises without shuffles. With
:math:`N = p_1 \cdots p_s` and :math:`L` the product of the radices done so far, the stage of
radix :math:`p` maps the length-:math:`L` transforms of the residue classes
:math:`A[j + J t]` (:math:`J = N/L`, :math:`J' = J/p`) to those of length :math:`pL`:

.. math::
    A'[j' + J'(k_1 + L k_2)] = \sum_{t=0}^{p-1} \omega_{pL}^{t(k_1 + L k_2)}\, A[j' + J'(t + p k_1)],
    \qquad \omega_m = e^{-2\pi i/m},

radix 4 and 2 with their multiplication-free butterflies after the twiddles, radix 7 written
out (:func:`_radix7`), 3 and 5 by pairs of conjugate twiddles (:func:`_radix_odd`). Twiddles
are computed in float64 and rounded to the data's precision; results differ from ``scipy.fft``
by round-off (``fastmath`` lets LLVM reassociate).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from ..._backend import kernel_threads
from ..._scratch import workspace

__all__ = ["irfft2_rows", "plan", "rfft2_rows", "supported"]

_OPTS = dict(parallel=True, fastmath=True, cache=True, nogil=True)
_INLINE = dict(fastmath=True, cache=True, nogil=True)

#: Radices the plans use: 4, 2 and 7 have their own stages, 3 and 5 the generic odd one.
RADICES = (4, 2, 3, 5, 7)


def _factors(n: int) -> list[int] | None:
    """``n`` as a product of :data:`RADICES` (fours first), or None when another prime divides it."""
    out = []
    for p in RADICES:
        while n % p == 0:
            out.append(p)
            n //= p
    return out if n == 1 else None


def supported(grid: tuple[int, ...]) -> bool:
    """Whether the kernels transform this grid: two axes whose lengths factor into 2, 3, 5 and 7."""
    return len(grid) == 2 and all(g >= 1 and _factors(g) is not None for g in grid)


def plan(n: int, inverse: bool, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""The stages of a length-``n`` complex FFT: ``(stages, re, im)`` for :func:`_fft`.

    ``stages[s] = (p, L, offset)``: radix, length of the transforms before the stage and where
    its twiddles :math:`\omega_{pL}^{t k_1}` start in the table (``(L, p)``, indexed ``[k1, t]``).
    ``inverse`` conjugates every twiddle (no scaling).
    """
    radices = _factors(n)
    if radices is None:
        raise ValueError(f"`n` must factor into {RADICES}, got {n}.")
    stages, tables, offset, L = [], [], 0, 1
    sign = 1.0 if inverse else -1.0
    for p in radices:
        table = np.exp(sign * 2j * np.pi * np.outer(np.arange(L), np.arange(p)) / (p * L)).ravel()
        stages.append((p, L, offset))
        tables.append(table)
        offset += table.size
        L *= p
    table = np.concatenate(tables) if tables else np.zeros(0, complex)
    real = np.dtype(dtype).type
    return (
        np.asarray(stages, dtype=np.int64).reshape(-1, 3),
        np.ascontiguousarray(table.real.astype(real)),
        np.ascontiguousarray(table.imag.astype(real)),
    )


@nb.njit(**_INLINE)
def _radix4(sr, si, dr, di, n, lanes, L, off, tr, ti, sign):  # pragma: no cover - compiled
    """One radix-4 Stockham stage ``s → d`` (``sign`` -1 forward, +1 inverse: the butterfly's ±i)."""
    Jp = n // (4 * L)
    step, out = Jp * lanes, Jp * L * lanes
    for k1 in range(L):
        w1r, w1i = tr[off + 4 * k1 + 1], ti[off + 4 * k1 + 1]
        w2r, w2i = tr[off + 4 * k1 + 2], ti[off + 4 * k1 + 2]
        w3r, w3i = tr[off + 4 * k1 + 3], ti[off + 4 * k1 + 3]
        for jj in range(Jp):
            i = (jj + Jp * 4 * k1) * lanes
            o = (jj + Jp * k1) * lanes
            x0r, x0i = sr[i : i + lanes], si[i : i + lanes]
            x1r, x1i = sr[i + step : i + step + lanes], si[i + step : i + step + lanes]
            x2r, x2i = sr[i + 2 * step : i + 2 * step + lanes], si[i + 2 * step : i + 2 * step + lanes]
            x3r, x3i = sr[i + 3 * step : i + 3 * step + lanes], si[i + 3 * step : i + 3 * step + lanes]
            y0r, y0i = dr[o : o + lanes], di[o : o + lanes]
            y1r, y1i = dr[o + out : o + out + lanes], di[o + out : o + out + lanes]
            y2r, y2i = dr[o + 2 * out : o + 2 * out + lanes], di[o + 2 * out : o + 2 * out + lanes]
            y3r, y3i = dr[o + 3 * out : o + 3 * out + lanes], di[o + 3 * out : o + 3 * out + lanes]
            for q in range(lanes):
                a1r, a1i = w1r * x1r[q] - w1i * x1i[q], w1r * x1i[q] + w1i * x1r[q]
                a2r, a2i = w2r * x2r[q] - w2i * x2i[q], w2r * x2i[q] + w2i * x2r[q]
                a3r, a3i = w3r * x3r[q] - w3i * x3i[q], w3r * x3i[q] + w3i * x3r[q]
                b0r, b0i, b1r, b1i = x0r[q] + a2r, x0i[q] + a2i, x0r[q] - a2r, x0i[q] - a2i
                b2r, b2i, b3r, b3i = a1r + a3r, a1i + a3i, (a1i - a3i) * sign, (a1r - a3r) * sign
                # out_1 = b1 + sign i (a1 - a3), out_3 = b1 - sign i (a1 - a3)
                y0r[q] = b0r + b2r
                y0i[q] = b0i + b2i
                y2r[q] = b0r - b2r
                y2i[q] = b0i - b2i
                y1r[q] = b1r - b3r
                y1i[q] = b1i + b3i
                y3r[q] = b1r + b3r
                y3i[q] = b1i - b3i


@nb.njit(**_INLINE)
def _radix2(sr, si, dr, di, n, lanes, L, off, tr, ti):  # pragma: no cover - compiled
    """One radix-2 Stockham stage ``s → d``."""
    Jp = n // (2 * L)
    step, out = Jp * lanes, Jp * L * lanes
    for k1 in range(L):
        wr, wi = tr[off + 2 * k1 + 1], ti[off + 2 * k1 + 1]
        for jj in range(Jp):
            i = (jj + Jp * 2 * k1) * lanes
            o = (jj + Jp * k1) * lanes
            x0r, x0i = sr[i : i + lanes], si[i : i + lanes]
            x1r, x1i = sr[i + step : i + step + lanes], si[i + step : i + step + lanes]
            y0r, y0i = dr[o : o + lanes], di[o : o + lanes]
            y1r, y1i = dr[o + out : o + out + lanes], di[o + out : o + out + lanes]
            for q in range(lanes):
                ar, ai = wr * x1r[q] - wi * x1i[q], wr * x1i[q] + wi * x1r[q]
                y0r[q] = x0r[q] + ar
                y0i[q] = x0i[q] + ai
                y1r[q] = x0r[q] - ar
                y1i[q] = x0i[q] - ai


#: Lanes per piece of the radix-7 stage: its sums and differences stay in L1.
_PIECE = 256


@nb.njit(**_INLINE)
def _radix7(sr, si, dr, di, n, lanes, L, off, tr, ti, sign):  # pragma: no cover - compiled
    r"""One radix-7 Stockham stage ``s → d``: :func:`_radix_odd`'s pairs in three fused loops per piece of lanes.

    Per group and piece of :data:`_PIECE` lanes: the twiddled pairs' sums :math:`p_t` and
    differences :math:`m_t` (``t = 1, 2, 3``) into a small buffer, then each output pair
    :math:`k, 7 - k` from them, then :math:`y_0`. Each loop touches few arrays, so LLVM's runtime
    alias checks stay within its limit and every loop is vectorised.
    """
    Jp = n // (7 * L)
    cs = (math.cos(2 * math.pi / 7), math.cos(4 * math.pi / 7), math.cos(6 * math.pi / 7))
    sn = (sign * math.sin(2 * math.pi / 7), sign * math.sin(4 * math.pi / 7), sign * math.sin(6 * math.pi / 7))
    pr, pi = np.empty((3, _PIECE), sr.dtype), np.empty((3, _PIECE), sr.dtype)
    mr, mi = np.empty((3, _PIECE), sr.dtype), np.empty((3, _PIECE), sr.dtype)
    for k1 in range(L):
        for jj in range(Jp):
            i, o = (jj + Jp * 7 * k1) * lanes, (jj + Jp * k1) * lanes
            step, out = Jp * lanes, Jp * L * lanes
            for q0 in range(0, lanes, _PIECE):
                nq = min(_PIECE, lanes - q0)
                for t in range(1, 4):
                    w, v = off + 7 * k1 + t, off + 7 * k1 + 7 - t
                    wr, wi, vr, vi = tr[w], ti[w], tr[v], ti[v]
                    a, b = i + t * step + q0, i + (7 - t) * step + q0
                    xr, xi, yr, yi = sr[a : a + nq], si[a : a + nq], sr[b : b + nq], si[b : b + nq]
                    Pr, Pi, Mr, Mi = pr[t - 1], pi[t - 1], mr[t - 1], mi[t - 1]
                    for q in range(nq):
                        ar, ai = wr * xr[q] - wi * xi[q], wr * xi[q] + wi * xr[q]
                        br, bi = vr * yr[q] - vi * yi[q], vr * yi[q] + vi * yr[q]
                        Pr[q], Pi[q], Mr[q], Mi[q] = ar + br, ai + bi, ar - br, ai - bi
                x0r, x0i = sr[i + q0 : i + q0 + nq], si[i + q0 : i + q0 + nq]
                for k in range(1, 4):
                    c1, c2, c3 = _cos7(k, 1, cs), _cos7(k, 2, cs), _cos7(k, 3, cs)
                    s1, s2, s3 = _sin7(k, 1, sn), _sin7(k, 2, sn), _sin7(k, 3, sn)
                    a, b = o + k * out + q0, o + (7 - k) * out + q0
                    ur, ui, zr, zi = dr[a : a + nq], di[a : a + nq], dr[b : b + nq], di[b : b + nq]
                    for q in range(nq):
                        Ar = x0r[q] + c1 * pr[0, q] + c2 * pr[1, q] + c3 * pr[2, q]
                        Ai = x0i[q] + c1 * pi[0, q] + c2 * pi[1, q] + c3 * pi[2, q]
                        Br = s1 * mr[0, q] + s2 * mr[1, q] + s3 * mr[2, q]
                        Bi = s1 * mi[0, q] + s2 * mi[1, q] + s3 * mi[2, q]
                        ur[q], ui[q], zr[q], zi[q] = Ar - Bi, Ai + Br, Ar + Bi, Ai - Br
                yr, yi = dr[o + q0 : o + q0 + nq], di[o + q0 : o + q0 + nq]
                for q in range(nq):
                    yr[q] = x0r[q] + pr[0, q] + pr[1, q] + pr[2, q]
                    yi[q] = x0i[q] + pi[0, q] + pi[1, q] + pi[2, q]


@nb.njit(**_INLINE)
def _cos7(k, t, cs):  # pragma: no cover - compiled
    r""":math:`\cos(2\pi tk/7)` from the cosines of :math:`2\pi m/7`, ``m = 1, 2, 3``."""
    m = (t * k) % 7
    return cs[m - 1] if m < 4 else cs[6 - m]


@nb.njit(**_INLINE)
def _sin7(k, t, sn):  # pragma: no cover - compiled
    r""":math:`\sin(2\pi tk/7)` (times the sign) from the sines of :math:`2\pi m/7`, ``m = 1, 2, 3``."""
    m = (t * k) % 7
    return sn[m - 1] if m < 4 else -sn[6 - m]


@nb.njit(**_INLINE)
def _radix_odd(sr, si, dr, di, n, lanes, p, L, off, tr, ti, sign):  # pragma: no cover - compiled
    r"""One stage of an odd radix ``p``, by pairs of conjugate twiddles.

    With :math:`s_t = a_t + a_{p-t}`, :math:`d_t = a_t - a_{p-t}`,
    :math:`A_k = a_0 + \sum_t \cos(2\pi tk/p)\, s_t`, :math:`B_k = \sum_t \sin(2\pi tk/p)\, d_t` and
    ``out[k] = A_k + sign i B_k``, ``out[p - k] = A_k - sign i B_k`` (``t, k = 1 … (p-1)/2``). The
    twiddled inputs of one group go through a small buffer ``(p, lanes)``.
    """
    Jp, h = n // (p * L), (p - 1) // 2
    ar, ai = np.empty((p, lanes), sr.dtype), np.empty((p, lanes), sr.dtype)
    cs, sn = np.empty(p, sr.dtype), np.empty(p, sr.dtype)
    for m in range(p):
        cs[m], sn[m] = np.cos(2 * np.pi * m / p), np.sin(2 * np.pi * m / p)
    for k1 in range(L):
        for jj in range(Jp):
            for t in range(p):
                w = off + k1 * p + t
                wr, wi = tr[w], ti[w]
                i = (jj + Jp * (t + p * k1)) * lanes
                xr, xi, zr, zi = sr[i : i + lanes], si[i : i + lanes], ar[t], ai[t]
                for q in range(lanes):
                    zr[q] = wr * xr[q] - wi * xi[q]
                    zi[q] = wr * xi[q] + wi * xr[q]
            o = (jj + Jp * k1) * lanes
            y0r, y0i = dr[o : o + lanes], di[o : o + lanes]
            for q in range(lanes):
                y0r[q] = ar[0, q]
                y0i[q] = ai[0, q]
            for t in range(1, h + 1):
                for q in range(lanes):
                    y0r[q] += ar[t, q] + ar[p - t, q]
                    y0i[q] += ai[t, q] + ai[p - t, q]
            for k in range(1, h + 1):
                o1, o2 = (jj + Jp * (k1 + L * k)) * lanes, (jj + Jp * (k1 + L * (p - k))) * lanes
                u0r, u0i = dr[o1 : o1 + lanes], di[o1 : o1 + lanes]
                u1r, u1i = dr[o2 : o2 + lanes], di[o2 : o2 + lanes]
                for q in range(lanes):
                    u0r[q] = ar[0, q]
                    u0i[q] = ai[0, q]
                    u1r[q] = 0.0
                    u1i[q] = 0.0
                for t in range(1, h + 1):
                    c, s = cs[(t * k) % p], sn[(t * k) % p] * sign
                    x1r, x1i, x2r, x2i = ar[t], ai[t], ar[p - t], ai[p - t]
                    for q in range(lanes):  # A_k in u0, sign B_k in u1
                        u0r[q] += c * (x1r[q] + x2r[q])
                        u0i[q] += c * (x1i[q] + x2i[q])
                        u1r[q] += s * (x1r[q] - x2r[q])
                        u1i[q] += s * (x1i[q] - x2i[q])
                for q in range(lanes):  # out_k = A + i (sign B), out_{p-k} = A - i (sign B)
                    Ar, Ai, Br, Bi = u0r[q], u0i[q], u1r[q], u1i[q]
                    u0r[q] = Ar - Bi
                    u0i[q] = Ai + Br
                    u1r[q] = Ar + Bi
                    u1i[q] = Ai - Br


@nb.njit(**_INLINE)
def _fft(ar, ai, br, bi, n, lanes, stages, tr, ti, sign):  # pragma: no cover - compiled
    """The FFT of planar ``(n, lanes)`` buffers ``a``, ping-ponging with ``b``; returns whether ``b`` holds it."""
    in_b = False
    for s in range(stages.shape[0]):
        p, L, off = stages[s, 0], stages[s, 1], stages[s, 2]
        sr, si, dr, di = (br, bi, ar, ai) if in_b else (ar, ai, br, bi)
        if p == 4:
            _radix4(sr, si, dr, di, n, lanes, L, off, tr, ti, sign)
        elif p == 2:
            _radix2(sr, si, dr, di, n, lanes, L, off, tr, ti)
        elif p == 7:
            _radix7(sr, si, dr, di, n, lanes, L, off, tr, ti, sign)
        else:
            _radix_odd(sr, si, dr, di, n, lanes, p, L, off, tr, ti, sign)
        in_b = not in_b
    return in_b


@nb.njit(**_INLINE)
def _pack_rows(xs, ar, ai, P):  # pragma: no cover - compiled
    """``a[w, p, j, ch] = x[j, ch, 2p, w] + i x[j, ch, 2p + 1, w]`` (a zero partner for a last odd row)."""
    m, c, H, W = xs.shape
    A, Ai = ar[: W * P * m * c].reshape(W, P, m, c), ai[: W * P * m * c].reshape(W, P, m, c)
    for j in range(m):  # (p outside ch: the 2 W lines a (j, p) writes stay in L1 over its channels)
        for p in range(P):
            for ch in range(c):
                even = xs[j, ch, 2 * p]
                for w in range(W):
                    A[w, p, j, ch] = even[w]
                if 2 * p + 1 < H:
                    odd = xs[j, ch, 2 * p + 1]
                    for w in range(W):
                        Ai[w, p, j, ch] = odd[w]
                else:
                    for w in range(W):
                        Ai[w, p, j, ch] = 0.0


@nb.njit(**_INLINE)
def _unpack_rows(ys, br, bi, P, scale):  # pragma: no cover - compiled
    """``y[j, ch, 2p, w] = scale re b[w, p, j, ch]``, ``y[j, ch, 2p + 1, w] = scale im b[w, p, j, ch]``."""
    m, c, H, W = ys.shape
    B, Bi = br[: W * P * m * c].reshape(W, P, m, c), bi[: W * P * m * c].reshape(W, P, m, c)
    for j in range(m):
        for p in range(P):
            for ch in range(c):
                even = ys[j, ch, 2 * p]
                for w in range(W):
                    even[w] = scale * B[w, p, j, ch]
                if 2 * p + 1 < H:
                    odd = ys[j, ch, 2 * p + 1]
                    for w in range(W):
                        odd[w] = scale * Bi[w, p, j, ch]


@nb.njit(**_INLINE)
def _split_pairs(ar, ai, br, bi, H, W, P, lanes):  # pragma: no cover - compiled
    r"""The pairs' spectra ``a[k, p, :]`` to the rows' half spectra ``b[h, k, :]`` (Hermitian symmetry)."""
    Wh = W // 2 + 1
    A, Ai = ar[: W * P * lanes].reshape(W, P, lanes), ai[: W * P * lanes].reshape(W, P, lanes)
    B, Bi = br[: H * Wh * lanes].reshape(H, Wh, lanes), bi[: H * Wh * lanes].reshape(H, Wh, lanes)
    for k in range(Wh):
        mk = (W - k) % W
        for p in range(P):
            zr, zi, vr, vi = A[k, p], Ai[k, p], A[mk, p], Ai[mk, p]
            er, ei = B[2 * p, k], Bi[2 * p, k]
            for q in range(lanes):  # X_2p = (Z[k] + conj Z[-k]) / 2
                er[q] = 0.5 * (zr[q] + vr[q])
                ei[q] = 0.5 * (zi[q] - vi[q])
            if 2 * p + 1 < H:  # X_2p+1 = (Z[k] - conj Z[-k]) / 2i
                er, ei = B[2 * p + 1, k], Bi[2 * p + 1, k]
                for q in range(lanes):
                    er[q] = 0.5 * (zi[q] + vi[q])
                    ei[q] = 0.5 * (vr[q] - zr[q])


@nb.njit(**_INLINE)
def _join_pairs(ar, ai, br, bi, H, W, P, lanes):  # pragma: no cover - compiled
    r"""The rows' half spectra ``a[h, k, :]`` to the pairs' full spectra ``b[k, p, :]``, ``Z = X_2p + i X_2p+1``.

    Bins :math:`k > W/2` are the conjugates of :math:`W - k`; the imaginary parts of the
    self-conjugate bins (``k = 0``, ``k = W/2``) are dropped, as ``irfftn`` does.
    """
    Wh = W // 2 + 1
    A, Ai = ar[: H * Wh * lanes].reshape(H, Wh, lanes), ai[: H * Wh * lanes].reshape(H, Wh, lanes)
    B, Bi = br[: W * P * lanes].reshape(W, P, lanes), bi[: W * P * lanes].reshape(W, P, lanes)
    for k in range(W):
        mk, flip = (k, 1.0) if k < Wh else (W - k, -1.0)
        keep = 0.0 if mk == 0 or 2 * mk == W else flip
        for p in range(P):
            xr, xi, zr, zi = A[2 * p, mk], Ai[2 * p, mk], B[k, p], Bi[k, p]
            if 2 * p + 1 < H:
                yr, yi = A[2 * p + 1, mk], Ai[2 * p + 1, mk]
                for q in range(lanes):
                    zr[q] = xr[q] - keep * yi[q]
                    zi[q] = keep * xi[q] + yr[q]
            else:
                for q in range(lanes):
                    zr[q] = xr[q]
                    zi[q] = keep * xi[q]


@nb.njit(**_INLINE)
def _block(blk, block, x, per_channel):  # pragma: no cover - compiled
    """Block ``blk``: its first example, its size and four work buffers of ``per_channel`` values a channel."""
    n, c = x.shape[:2]
    b0 = blk * block
    m = min(block, n - b0)
    size = per_channel * m * c
    return b0, m, np.empty(size, x.dtype), np.empty(size, x.dtype), np.empty(size, x.dtype), np.empty(size, x.dtype)


# Each kernel calls _fft from one place, in a loop over the two axes: LLVM inlines the FFT
# (all its radices) into the kernel, and a second call site would double the code it compiles.
@nb.njit(**_OPTS)
def _rfft2_rows(x, out, block, sw, twr, twi, sh, thr, thi):  # pragma: no cover - compiled
    n, c, H, W = x.shape
    Wh, P = W // 2 + 1, (H + 1) // 2
    F, flat = H * Wh, out.reshape(-1)
    for blk in nb.prange((n + block - 1) // block):
        b0, m, ur, ui, vr, vi = _block(blk, block, x, max(W * P, F))
        _pack_rows(x[b0 : b0 + m], ur, ui, P)
        for axis in range(2):  # W (the row pairs), then H
            if axis == 0:
                N, lanes, st, tr, ti = W, P * m * c, sw, twr, twi
            else:
                N, lanes, st, tr, ti = H, Wh * m * c, sh, thr, thi
            if _fft(ur, ui, vr, vi, N, lanes, st, tr, ti, -1.0):
                ur, ui, vr, vi = vr, vi, ur, ui
            if axis == 0:
                _split_pairs(ur, ui, vr, vi, H, W, P, m * c)
                ur, ui, vr, vi = vr, vi, ur, ui
        for f in range(F):  # the block's rows of one frequency are contiguous in `out`
            zr, zi = ur[f * m * c : (f + 1) * m * c], ui[f * m * c : (f + 1) * m * c]
            row = flat[(f * n + b0) * 2 * c : (f * n + b0 + m) * 2 * c]
            for q in range(m * c):
                row[2 * q] = zr[q]
                row[2 * q + 1] = zi[q]


@nb.njit(**_INLINE)
def _right_factor(K, adjoint, dtype):  # pragma: no cover - compiled
    r"""The real ``2c × 2c`` matrix ``M`` with ``row @ M`` the row of :math:`Kz` (:math:`K^H z` with ``adjoint``).

    A row holds :math:`z` as ``(re, im)`` pairs; the row of :math:`Kz` is :math:`z^\top B` with
    :math:`B = K^\top` (:math:`\bar K` for the adjoint), whose real form has blocks
    ``[[Re B, Im B], [-Im B, Re B]]`` per entry.
    """
    c = K.shape[0]
    M = np.empty((2 * c, 2 * c), dtype)
    for i in range(c):
        for o in range(c):
            if adjoint:
                re, im = K[i, o].real, -K[i, o].imag
            else:
                re, im = K[o, i].real, K[o, i].imag
            M[2 * i, 2 * o], M[2 * i, 2 * o + 1] = re, im
            M[2 * i + 1, 2 * o], M[2 * i + 1, 2 * o + 1] = -im, re
    return M


@nb.njit(**_OPTS)
def _irfft2_rows(rows, blocks, adjoint, prod, y, block, sw, twr, twi, sh, thr, thi):  # pragma: no cover - compiled
    n, c, H, W = y.shape
    Wh, P = W // 2 + 1, (H + 1) // 2
    F = H * Wh
    if blocks.shape[0]:  # the products K_f z (K_f^H z) into `prod` first: one BLAS call per frequency
        for f in nb.prange(F):
            np.dot(rows[f], _right_factor(blocks[f], adjoint, rows.dtype), prod[f])
        rows = prod
    flat = rows.reshape(-1)
    for blk in nb.prange((n + block - 1) // block):
        b0, m, ur, ui, vr, vi = _block(blk, block, y, max(W * P, F))
        for f in range(F):
            zr, zi = ur[f * m * c : (f + 1) * m * c], ui[f * m * c : (f + 1) * m * c]
            row = flat[(f * n + b0) * 2 * c : (f * n + b0 + m) * 2 * c]
            for q in range(m * c):
                zr[q] = row[2 * q]
                zi[q] = row[2 * q + 1]
        for axis in range(2):  # H, then W (the row pairs)
            if axis == 0:
                N, lanes, st, tr, ti = H, Wh * m * c, sh, thr, thi
            else:
                N, lanes, st, tr, ti = W, P * m * c, sw, twr, twi
            if _fft(ur, ui, vr, vi, N, lanes, st, tr, ti, 1.0):
                ur, ui, vr, vi = vr, vi, ur, ui
            if axis == 0:
                _join_pairs(ur, ui, vr, vi, H, W, P, m * c)
                ur, ui, vr, vi = vr, vi, ur, ui
        _unpack_rows(y[b0 : b0 + m], ur, ui, P, 1.0 / (H * W))


#: The kernels' work per real value of the grid, in the multiply-adds of ``PARALLEL_WORK_MIN``
#: (:func:`structops._backend.kernel_threads`): two passes of butterflies plus the packing and
#: the transposes. Measured: 128×16×28×28 float32 runs 1.5–2× faster on two threads than on one,
#: 16 examples 1.6×.
WORK_PER_VALUE = 100

#: The four work buffers of a block of examples take at most this many bytes (about an L2 cache).
BLOCK_BYTES = 2**20


def block(example: tuple[int, ...], itemsize: int) -> int:
    """Examples transformed together (channels side by side in the lanes): at most 8, within :data:`BLOCK_BYTES`."""
    c, H, W = example
    per_example = 4 * itemsize * c * max(W * ((H + 1) // 2), H * (W // 2 + 1))
    return max(1, min(8, BLOCK_BYTES // max(1, per_example)))


def _plans(grid: tuple[int, int], inverse: bool, dtype: np.dtype) -> tuple[np.ndarray, ...]:
    """The plans of both axes (cached per grid, direction and precision)."""
    key = (grid, inverse, np.dtype(dtype).str)
    hit = _PLANS.get(key)
    if hit is None:
        H, W = grid
        hit = _PLANS[key] = (*plan(W, inverse, dtype), *plan(H, inverse, dtype))
    return hit


_PLANS: dict[tuple, tuple[np.ndarray, ...]] = {}


def rfft2_rows(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    r"""The ``rfftn`` half spectrum of ``x`` ``(n, c, H, W)`` as real rows ``(F, n, 2c)``.

    ``F = H·(W//2 + 1)`` frequencies in ``rfftn``'s C order; row ``[f, i]`` holds example
    ``i``'s channels at frequency ``f`` as ``(re, im)`` pairs. ``x`` float32 or float64, C
    contiguous; ``out`` (optional) a C-contiguous array of that shape and dtype.
    """
    n, c, H, W = x.shape
    if out is None:
        out = np.empty((H * (W // 2 + 1), n, 2 * c), x.dtype)
    if n:
        m = block(x.shape[1:], x.itemsize)
        with kernel_threads(WORK_PER_VALUE * x.size, -(-n // m)):
            _rfft2_rows(x, out, m, *_plans((H, W), False, x.dtype))
    return out


def irfft2_rows(
    rows: np.ndarray,
    grid: tuple[int, ...],
    out: np.ndarray | None = None,
    blocks: np.ndarray | None = None,
    adjoint: bool = False,
) -> np.ndarray:
    """``irfftn`` of real rows ``(F, n, 2c)`` (:func:`rfft2_rows`' layout) back to ``(n, c, H, W)``.

    ``blocks`` (complex, ``(F, c, c)``): transform :math:`K_f z` instead, for each example's
    complex row :math:`z` at frequency :math:`f` (:math:`K_f^H z` with ``adjoint``), computed in
    the kernel on its threads (one BLAS call per frequency with the real form of :math:`K_f`),
    in the rows' precision.
    """
    F, n, c2 = rows.shape
    H, W = grid
    if out is None:
        out = np.empty((n, c2 // 2, H, W), rows.dtype)
    complex_dtype = np.result_type(rows.dtype, np.complex64)
    if blocks is None:
        blocks, prod = np.zeros((0, c2 // 2, c2 // 2), complex_dtype), np.zeros((0, 0, 0), rows.dtype)
    elif blocks.shape != (F, c2 // 2, c2 // 2):
        raise ValueError(f"`blocks` must have shape {(F, c2 // 2, c2 // 2)}, got {blocks.shape}.")
    else:
        prod = workspace(rows.shape, rows.dtype)
    if n:
        m = block(out.shape[1:], rows.itemsize)
        work = WORK_PER_VALUE * out.size + (rows.size * c2 if blocks.shape[0] else 0)
        with kernel_threads(work, -(-n // m)):
            blocks = np.ascontiguousarray(blocks, complex_dtype)
            _irfft2_rows(rows, blocks, bool(adjoint), prod, out, m, *_plans((H, W), True, rows.dtype))
    return out
