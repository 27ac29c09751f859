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

The gather ``src`` and the output positions are passed as *runs* ``(start, source, length)``
of consecutive indices, so padding and output copies are contiguous, vectorised loops (the
gradient copies the long runs 16 values at a time and the short ones value by value, into
buffers whose zero positions are written once per block, see :func:`_place`). The
examples are split into a few contiguous blocks run in parallel (``prange``); each block
allocates its temporaries (one example's padded grid and output rows) once and reuses them,
so nothing of the size of the batch is allocated besides the result (``blocks``: a few per
thread, chosen by the caller). Eight terms are summed
per sweep of a row (then 4, 2, 1 for the rest), so the row in cache is loaded and stored once
per up to eight multiply-adds. With four or more rows the sums are register-blocked, and the
blocking follows the vector registers of the CPU numba compiles for (:func:`vector_registers`,
decided once at import): 4 rows × 8 terms (gradient: 4 × 6 sums) with AVX-512's 32, 4 × 3 with
AVX2's 16, where the larger blocks spill to the stack. ``fastmath`` only lets LLVM reassociate
and vectorise the sums (results differ from the numpy path by round-off).
"""

from __future__ import annotations

import numba as nb
import numpy as np

_OPTS = dict(parallel=True, fastmath=True, cache=True, nogil=True)
_INLINE = dict(fastmath=True, cache=True, nogil=True)

#: LLVM CPU names with AVX-512F (and so 32 vector registers) when no feature string says.
_AVX512_CPUS = frozenset(
    "knl knm skylake-avx512 skx cascadelake cooperlake cannonlake icelake-client icelake-server "
    "rocketlake tigerlake sapphirerapids emeraldrapids graniterapids graniterapids-d diamondrapids "
    "znver4 znver5 x86-64-v4".split()
)


def vector_registers(cpu_name: str | None = None, features: str | None = None) -> int:
    """Vector registers of the CPU that numba compiles for: 32 with AVX-512F, else 16.

    ``cpu_name`` and ``features`` default to what numba's code generator uses:
    ``NUMBA_CPU_NAME`` / ``NUMBA_CPU_FEATURES`` when set, else the host's. A feature string
    decides when it names ``avx512f`` (``+`` or ``-``); otherwise the CPU name does. (So
    ``NUMBA_CPU_NAME=haswell`` alone on an AVX-512 host still compiles AVX-512 code with 32
    registers, as numba passes the host's features; ``NUMBA_CPU_FEATURES=`` empty as well
    gives a true Haswell target.)
    """
    import llvmlite.binding as ll
    from numba import config

    if cpu_name is None:
        cpu_name = config.CPU_NAME or ll.get_host_cpu_name()
    if features is None:
        features = config.CPU_FEATURES
        if features is None:
            host = ll.get_host_cpu_features()
            features = host.flatten() if config.ENABLE_AVX else "-avx512f"
    flags = features.replace(" ", "").split(",")
    if "+avx512f" in flags:
        return 32
    if "-avx512f" in flags:
        return 16
    return 32 if cpu_name.lower() in _AVX512_CPUS else 16


#: Whether the kernels block for 32 vector registers (read as a compile-time constant by
#: numba; numba's cache keys on the CPU name and features this is derived from).
_WIDE: bool = vector_registers() >= 32


@nb.njit(**_INLINE)
def _gather(dst, srcrow, rq, rs, rl):  # pragma: no cover - compiled
    """``dst[q] = srcrow[src[q]]`` (0 where ``src[q] = -1``) from the runs of ``src``."""
    for r in range(rq.shape[0]):
        q0, s0, ln = rq[r], rs[r], rl[r]
        if ln <= 8:  # short runs (wrapped margins): scalar copies beat a slice's set-up
            if s0 < 0:
                for t in range(ln):
                    dst[q0 + t] = 0
            else:
                for t in range(ln):
                    dst[q0 + t] = srcrow[s0 + t]
        elif s0 < 0:
            dst[q0 : q0 + ln] = 0
        else:
            dst[q0 : q0 + ln] = srcrow[s0 : s0 + ln]


@nb.njit(**_INLINE)
def _fold(dst, xprow, rq, rs, rl, injective):  # pragma: no cover - compiled
    """``dst = P^T xprow``: ``dst[src[q]] += xprow[q]`` (plain copies when ``src`` is injective)."""
    if injective:
        for r in range(rq.shape[0]):
            q0, s0, ln = rq[r], rs[r], rl[r]
            if s0 >= 0:
                dst[s0 : s0 + ln] = xprow[q0 : q0 + ln]
    else:
        dst[:] = 0
        for r in range(rq.shape[0]):
            q0, s0, ln = rq[r], rs[r], rl[r]
            if s0 >= 0:
                for t in range(ln):
                    dst[s0 + t] += xprow[q0 + t]


@nb.njit(**_INLINE)
def _copy16(dst, q, src, s):  # pragma: no cover - compiled
    """``dst[q : q + 16] = src[s : s + 16]`` as one vector load and store per 16 values.

    Loaded into locals first and indexed from views by constants, so that LLVM sees neither
    aliasing nor negative indices and emits plain vector moves; a slice assignment per run of
    28 values (case A) made the whole gather and scatter about 1.5 times slower, and a plain
    indexed loop did not vectorise at all (negative-index wraparound checks).
    """
    d, v = dst[q : q + 16], src[s : s + 16]
    a0, a1, a2, a3, a4, a5, a6, a7 = v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]
    b0, b1, b2, b3, b4, b5, b6, b7 = v[8], v[9], v[10], v[11], v[12], v[13], v[14], v[15]
    d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7] = a0, a1, a2, a3, a4, a5, a6, a7
    d[8], d[9], d[10], d[11], d[12], d[13], d[14], d[15] = b0, b1, b2, b3, b4, b5, b6, b7


@nb.njit(**_INLINE)
def _split_runs(q, s, ln):  # pragma: no cover - compiled
    """The runs ``dst[q + t] = src[s + t]`` (``t < ln``, those with ``s >= 0``), for :func:`_place`.

    Returns the runs of 16 or more as ``(3, nl)`` rows ``(q, s, ln)`` and every position of
    the shorter ones as ``(2, ns)`` rows ``(q, s)`` (e.g. the one-value wrapped margins of a
    periodic grid, two per row).
    """
    nl = ns = 0
    for r in range(q.shape[0]):
        if s[r] >= 0:
            if ln[r] >= 16:
                nl += 1
            else:
                ns += ln[r]
    lng = np.empty((3, nl), dtype=np.int64)
    sgl = np.empty((2, ns), dtype=np.int64)
    nl = ns = 0
    for r in range(q.shape[0]):
        if s[r] >= 0:
            if ln[r] >= 16:
                lng[0, nl], lng[1, nl], lng[2, nl] = q[r], s[r], ln[r]
                nl += 1
            else:
                for t in range(ln[r]):
                    sgl[0, ns], sgl[1, ns] = q[r] + t, s[r] + t
                    ns += 1
    return lng, sgl


@nb.njit(**_INLINE)
def _place(dst, base, src, lng, sgl):  # pragma: no cover - compiled
    """``dst[base + q] = src[s]`` for the runs ``lng`` and positions ``sgl`` of :func:`_split_runs`.

    Runs are copied in 16-value chunks, the last one overlapping the one before (a run of 28:
    two vector moves). Positions of ``dst`` not named are left as they are.
    """
    for r in range(lng.shape[1]):
        q0, s0, ln = base + lng[0, r], lng[1, r], lng[2, r]
        u = 0
        while u + 16 <= ln:
            _copy16(dst, q0 + u, src, s0 + u)
            u += 16
        if u < ln:
            _copy16(dst, q0 + ln - 16, src, s0 + ln - 16)
    for p in range(sgl.shape[1]):
        dst[base + sgl[0, p]] = src[sgl[1, p]]


@nb.njit(**_INLINE)
def _sweep(arow, xp, theta_o, shifts, S, m0, m1, c0):  # pragma: no cover - compiled
    """``arow += sum_k theta_o[k] xp[c0 + k // S, m0 + shifts[k % S] : m1 + shifts[k % S]]``."""
    K = theta_o.shape[0]
    n = m1 - m0
    k = 0
    while k + 8 <= K:
        t0, t1, t2, t3 = theta_o[k], theta_o[k + 1], theta_o[k + 2], theta_o[k + 3]
        t4, t5, t6, t7 = theta_o[k + 4], theta_o[k + 5], theta_o[k + 6], theta_o[k + 7]
        a0 = m0 + shifts[k % S]
        a1 = m0 + shifts[(k + 1) % S]
        a2 = m0 + shifts[(k + 2) % S]
        a3 = m0 + shifts[(k + 3) % S]
        a4 = m0 + shifts[(k + 4) % S]
        a5 = m0 + shifts[(k + 5) % S]
        a6 = m0 + shifts[(k + 6) % S]
        a7 = m0 + shifts[(k + 7) % S]
        x0, x1, x2, x3 = (
            xp[c0 + k // S, a0 : a0 + n],
            xp[c0 + (k + 1) // S, a1 : a1 + n],
            xp[c0 + (k + 2) // S, a2 : a2 + n],
            xp[c0 + (k + 3) // S, a3 : a3 + n],
        )
        x4, x5, x6, x7 = (
            xp[c0 + (k + 4) // S, a4 : a4 + n],
            xp[c0 + (k + 5) // S, a5 : a5 + n],
            xp[c0 + (k + 6) // S, a6 : a6 + n],
            xp[c0 + (k + 7) // S, a7 : a7 + n],
        )
        for m in range(n):
            arow[m] += (t0 * x0[m] + t1 * x1[m] + t2 * x2[m] + t3 * x3[m]) + (
                t4 * x4[m] + t5 * x5[m] + t6 * x6[m] + t7 * x7[m]
            )
        k += 8
    if k + 4 <= K:
        t0, t1, t2, t3 = theta_o[k], theta_o[k + 1], theta_o[k + 2], theta_o[k + 3]
        a0 = m0 + shifts[k % S]
        a1 = m0 + shifts[(k + 1) % S]
        a2 = m0 + shifts[(k + 2) % S]
        a3 = m0 + shifts[(k + 3) % S]
        x0, x1, x2, x3 = (
            xp[c0 + k // S, a0 : a0 + n],
            xp[c0 + (k + 1) // S, a1 : a1 + n],
            xp[c0 + (k + 2) // S, a2 : a2 + n],
            xp[c0 + (k + 3) // S, a3 : a3 + n],
        )
        for m in range(n):
            arow[m] += t0 * x0[m] + t1 * x1[m] + t2 * x2[m] + t3 * x3[m]
        k += 4
    if k + 2 <= K:
        t0, t1 = theta_o[k], theta_o[k + 1]
        a0 = m0 + shifts[k % S]
        a1 = m0 + shifts[(k + 1) % S]
        x0, x1 = xp[c0 + k // S, a0 : a0 + n], xp[c0 + (k + 1) // S, a1 : a1 + n]
        for m in range(n):
            arow[m] += t0 * x0[m] + t1 * x1[m]
        k += 2
    if k < K:
        t0 = theta_o[k]
        a0 = m0 + shifts[k % S]
        x0 = xp[c0 + k // S, a0 : a0 + n]
        for m in range(n):
            arow[m] += t0 * x0[m]


@nb.njit(**_INLINE)
def _sweep4(acc, o, xp, theta, shifts, S, m0, m1, c0):  # pragma: no cover - compiled
    """``acc[o + r, m0:m1] += sum_k theta[o + r, k] xp[c0 + k // S, m0 + shifts[k % S] : ...]``, r < 4.

    Register blocking: four output rows at once, eight (then 4, 3, 1) terms per sweep, so
    every loaded input vector feeds four multiply-adds and every output row is loaded and
    stored once per eight terms. With 16 vector registers (:data:`_WIDE` false: AVX2) the 32
    broadcast weights of an eight-term sweep spill to the stack, so the sweeps take three
    terms (12 weights, then 1).
    """
    K = theta.shape[1]
    n = m1 - m0
    r0, r1, r2, r3 = acc[o, m0:m1], acc[o + 1, m0:m1], acc[o + 2, m0:m1], acc[o + 3, m0:m1]
    th0, th1, th2, th3 = theta[o], theta[o + 1], theta[o + 2], theta[o + 3]
    k = 0
    while _WIDE and k + 8 <= K:
        a0 = m0 + shifts[k % S]
        x0 = xp[c0 + k // S, a0 : a0 + n]
        a1 = m0 + shifts[(k + 1) % S]
        x1 = xp[c0 + (k + 1) // S, a1 : a1 + n]
        a2 = m0 + shifts[(k + 2) % S]
        x2 = xp[c0 + (k + 2) // S, a2 : a2 + n]
        a3 = m0 + shifts[(k + 3) % S]
        x3 = xp[c0 + (k + 3) // S, a3 : a3 + n]
        a4 = m0 + shifts[(k + 4) % S]
        x4 = xp[c0 + (k + 4) // S, a4 : a4 + n]
        a5 = m0 + shifts[(k + 5) % S]
        x5 = xp[c0 + (k + 5) // S, a5 : a5 + n]
        a6 = m0 + shifts[(k + 6) % S]
        x6 = xp[c0 + (k + 6) // S, a6 : a6 + n]
        a7 = m0 + shifts[(k + 7) % S]
        x7 = xp[c0 + (k + 7) // S, a7 : a7 + n]
        u00, u01, u02, u03, u04, u05, u06, u07 = (
            th0[k + 0],
            th0[k + 1],
            th0[k + 2],
            th0[k + 3],
            th0[k + 4],
            th0[k + 5],
            th0[k + 6],
            th0[k + 7],
        )
        u10, u11, u12, u13, u14, u15, u16, u17 = (
            th1[k + 0],
            th1[k + 1],
            th1[k + 2],
            th1[k + 3],
            th1[k + 4],
            th1[k + 5],
            th1[k + 6],
            th1[k + 7],
        )
        u20, u21, u22, u23, u24, u25, u26, u27 = (
            th2[k + 0],
            th2[k + 1],
            th2[k + 2],
            th2[k + 3],
            th2[k + 4],
            th2[k + 5],
            th2[k + 6],
            th2[k + 7],
        )
        u30, u31, u32, u33, u34, u35, u36, u37 = (
            th3[k + 0],
            th3[k + 1],
            th3[k + 2],
            th3[k + 3],
            th3[k + 4],
            th3[k + 5],
            th3[k + 6],
            th3[k + 7],
        )
        for m in range(n):
            v0, v1, v2, v3, v4, v5, v6, v7 = x0[m], x1[m], x2[m], x3[m], x4[m], x5[m], x6[m], x7[m]
            r0[m] += ((u00 * v0 + u01 * v1) + (u02 * v2 + u03 * v3)) + ((u04 * v4 + u05 * v5) + (u06 * v6 + u07 * v7))
            r1[m] += ((u10 * v0 + u11 * v1) + (u12 * v2 + u13 * v3)) + ((u14 * v4 + u15 * v5) + (u16 * v6 + u17 * v7))
            r2[m] += ((u20 * v0 + u21 * v1) + (u22 * v2 + u23 * v3)) + ((u24 * v4 + u25 * v5) + (u26 * v6 + u27 * v7))
            r3[m] += ((u30 * v0 + u31 * v1) + (u32 * v2 + u33 * v3)) + ((u34 * v4 + u35 * v5) + (u36 * v6 + u37 * v7))
        k += 8
    while _WIDE and k + 4 <= K:
        a0 = m0 + shifts[k % S]
        a1 = m0 + shifts[(k + 1) % S]
        a2 = m0 + shifts[(k + 2) % S]
        a3 = m0 + shifts[(k + 3) % S]
        x0 = xp[c0 + k // S, a0 : a0 + n]
        x1 = xp[c0 + (k + 1) // S, a1 : a1 + n]
        x2 = xp[c0 + (k + 2) // S, a2 : a2 + n]
        x3 = xp[c0 + (k + 3) // S, a3 : a3 + n]
        u00, u01, u02, u03 = th0[k], th0[k + 1], th0[k + 2], th0[k + 3]
        u10, u11, u12, u13 = th1[k], th1[k + 1], th1[k + 2], th1[k + 3]
        u20, u21, u22, u23 = th2[k], th2[k + 1], th2[k + 2], th2[k + 3]
        u30, u31, u32, u33 = th3[k], th3[k + 1], th3[k + 2], th3[k + 3]
        for m in range(n):
            v0, v1, v2, v3 = x0[m], x1[m], x2[m], x3[m]
            r0[m] += (u00 * v0 + u01 * v1) + (u02 * v2 + u03 * v3)
            r1[m] += (u10 * v0 + u11 * v1) + (u12 * v2 + u13 * v3)
            r2[m] += (u20 * v0 + u21 * v1) + (u22 * v2 + u23 * v3)
            r3[m] += (u30 * v0 + u31 * v1) + (u32 * v2 + u33 * v3)
        k += 4
    while k + 3 <= K:  # without _WIDE: 4 x 3 weights, 3 inputs and 4 sums fit 16 registers
        a0 = m0 + shifts[k % S]
        a1 = m0 + shifts[(k + 1) % S]
        a2 = m0 + shifts[(k + 2) % S]
        x0 = xp[c0 + k // S, a0 : a0 + n]
        x1 = xp[c0 + (k + 1) // S, a1 : a1 + n]
        x2 = xp[c0 + (k + 2) // S, a2 : a2 + n]
        u00, u01, u02 = th0[k], th0[k + 1], th0[k + 2]
        u10, u11, u12 = th1[k], th1[k + 1], th1[k + 2]
        u20, u21, u22 = th2[k], th2[k + 1], th2[k + 2]
        u30, u31, u32 = th3[k], th3[k + 1], th3[k + 2]
        for m in range(n):
            v0, v1, v2 = x0[m], x1[m], x2[m]
            r0[m] += (u00 * v0 + u01 * v1) + u02 * v2
            r1[m] += (u10 * v0 + u11 * v1) + u12 * v2
            r2[m] += (u20 * v0 + u21 * v1) + u22 * v2
            r3[m] += (u30 * v0 + u31 * v1) + u32 * v2
        k += 3
    while k < K:
        a0 = m0 + shifts[k % S]
        x0 = xp[c0 + k // S, a0 : a0 + n]
        u00, u10, u20, u30 = th0[k], th1[k], th2[k], th3[k]
        for m in range(n):
            v0 = x0[m]
            r0[m] += u00 * v0
            r1[m] += u10 * v0
            r2[m] += u20 * v0
            r3[m] += u30 * v0
        k += 1


@nb.njit(inline="always", **_INLINE)  # inlined in numba's IR: the loops stay as they were written in each kernel
def _sweep_groups(acc, src, theta, shifts, S, m0, m1, groups, rows, reads):  # pragma: no cover - compiled
    """``acc[r, m0:m1] += sum_k theta[r, k] src[g(r) reads + k // S, m0 + shifts[k % S] : ...]`` for every row.

    Row ``r`` of group ``g(r) = r // rows`` reads the ``reads`` rows of ``src`` of its group:
    four rows at a time (:func:`_sweep4`), then one by one (:func:`_sweep`). The forward
    sweep's rows are output channels reading input channels, the adjoint's the reverse.
    """
    for gi in range(groups):
        r, end = gi * rows, (gi + 1) * rows
        while r + 4 <= end:
            _sweep4(acc, r, src, theta, shifts, S, m0, m1, gi * reads)
            r += 4
        while r < end:
            _sweep(acc[r, m0:m1], src, theta[r], shifts, S, m0, m1, gi * reads)
            r += 1


@nb.njit(**_OPTS)
def forward(theta, x, runs, outruns, shifts, width, tile, groups, blocks, out):  # pragma: no cover - compiled
    """``out[e, o, i] = sum_{c,j} theta[o, c, j] xp_e[g(o) cg + c, outidx[i] + shifts[j]]``.

    ``groups``: output channel ``o`` of group ``g(o) = o // (cout / groups)`` reads the ``cg =
    cin / groups`` input rows of its group (``theta``: ``(cout, cg * S)``).
    """
    n, cin, _ = x.shape
    cout = theta.shape[0]  # theta: (cout, cg * S), column c * S + j
    og, cg = cout // groups, cin // groups
    S = shifts.shape[0]
    rq, rs, rl = runs[0], runs[1], runs[2]
    oi, op, ol = outruns[0], outruns[1], outruns[2]
    Lp = rq[-1] + rl[-1]
    for b in nb.prange(blocks):
        xp = np.empty((cin, Lp), dtype=x.dtype)
        acc = np.empty((cout, width), dtype=x.dtype)
        for e in range(b * n // blocks, (b + 1) * n // blocks):
            for c in range(cin):
                _gather(xp[c], x[e, c], rq, rs, rl)
            acc[:] = 0
            for m0 in range(0, width, tile):
                m1 = min(m0 + tile, width)
                _sweep_groups(acc, xp, theta, shifts, S, m0, m1, groups, og, cg)
            for o in range(cout):
                for r in range(oi.shape[0]):
                    i0, p0, ln = oi[r], op[r], ol[r]
                    out[e, o, i0 : i0 + ln] = acc[o, p0 : p0 + ln]


@nb.njit(**_OPTS)
def adjoint(
    theta, y, runs, outruns, shifts, width, tile, injective, groups, blocks, out
):  # pragma: no cover - compiled
    """``out = P^T C^T S^T y``: scatter, correlate with the reversed shifts, fold the padding.

    Only the padded positions that the fold reads (``src >= 0``, from the first to the last)
    are summed: for ``bc='zero'`` that skips the margin rows. ``y`` is scattered, and an
    injective padding folded, with the 16-wide copies of :func:`_place`.
    """
    n, cout, _ = y.shape
    cin = theta.shape[0]  # theta: (cin, og * S) = the transposed stencil of each group, column o * S + j
    og, cg = cout // groups, cin // groups
    S = shifts.shape[0]
    rq, rs, rl = runs[0], runs[1], runs[2]
    oi, op, ol = outruns[0], outruns[1], outruns[2]
    Lp = rq[-1] + rl[-1]
    rev = shifts[0] - shifts  # D_max - D_j >= 0
    yl, ys = _split_runs(op, oi, ol)  # yw[shifts[0] + outidx[i]] = y[i]
    keep = rs >= 0
    fl, fs = _split_runs(rs[keep], rq[keep], rl[keep])  # out[src[q]] = xp[q] (injective src)
    lo, hi = Lp, 0  # the padded positions the fold reads: the sums skip the rest
    for r in range(rq.shape[0]):
        if rs[r] >= 0:
            lo, hi = min(lo, rq[r]), max(hi, rq[r] + rl[r])
    for b in nb.prange(blocks):
        # yw holds S^T y shifted by the largest offset, so that xp[q] = sum yw[q + (Dmax - D_j)]
        yw = np.zeros((cout, Lp + shifts[0]), dtype=y.dtype)
        xp = np.empty((cin, Lp), dtype=y.dtype)
        for e in range(b * n // blocks, (b + 1) * n // blocks):
            for o in range(cout):
                _place(yw[o], shifts[0], y[e, o], yl, ys)
            for m0 in range(lo, hi, tile):
                m1 = min(m0 + tile, hi)
                xp[:, m0:m1] = 0
                # input channel c of group gi reads the og rows of its group
                _sweep_groups(xp, yw, theta, rev, S, m0, m1, groups, cg, og)
            for c in range(cin):
                if injective:
                    _place(out[e, c], 0, xp[c], fl, fs)
                else:
                    _fold(out[e, c], xp[c], rq, rs, rl, injective)


@nb.njit(**_INLINE)
def _dots(g_o, wrow, xp, shifts, S, m0, m1, zero, c0):  # pragma: no cover - compiled
    """``g_o[k] += <wrow, xp[c0 + k // S, m0 + shifts[k % S] : m1 + shifts[k % S]]>`` for every k."""
    K = g_o.shape[0]
    n = m1 - m0
    k = 0
    while k + 8 <= K:
        a0 = m0 + shifts[k % S]
        a1 = m0 + shifts[(k + 1) % S]
        a2 = m0 + shifts[(k + 2) % S]
        a3 = m0 + shifts[(k + 3) % S]
        a4 = m0 + shifts[(k + 4) % S]
        a5 = m0 + shifts[(k + 5) % S]
        a6 = m0 + shifts[(k + 6) % S]
        a7 = m0 + shifts[(k + 7) % S]
        x0, x1, x2, x3 = (
            xp[c0 + k // S, a0 : a0 + n],
            xp[c0 + (k + 1) // S, a1 : a1 + n],
            xp[c0 + (k + 2) // S, a2 : a2 + n],
            xp[c0 + (k + 3) // S, a3 : a3 + n],
        )
        x4, x5, x6, x7 = (
            xp[c0 + (k + 4) // S, a4 : a4 + n],
            xp[c0 + (k + 5) // S, a5 : a5 + n],
            xp[c0 + (k + 6) // S, a6 : a6 + n],
            xp[c0 + (k + 7) // S, a7 : a7 + n],
        )
        s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = zero
        for m in range(n):
            wm = wrow[m]
            s0 += wm * x0[m]
            s1 += wm * x1[m]
            s2 += wm * x2[m]
            s3 += wm * x3[m]
            s4 += wm * x4[m]
            s5 += wm * x5[m]
            s6 += wm * x6[m]
            s7 += wm * x7[m]
        g_o[k] += s0
        g_o[k + 1] += s1
        g_o[k + 2] += s2
        g_o[k + 3] += s3
        g_o[k + 4] += s4
        g_o[k + 5] += s5
        g_o[k + 6] += s6
        g_o[k + 7] += s7
        k += 8
    while k + 4 <= K:
        a0 = m0 + shifts[k % S]
        a1 = m0 + shifts[(k + 1) % S]
        a2 = m0 + shifts[(k + 2) % S]
        a3 = m0 + shifts[(k + 3) % S]
        x0, x1, x2, x3 = (
            xp[c0 + k // S, a0 : a0 + n],
            xp[c0 + (k + 1) // S, a1 : a1 + n],
            xp[c0 + (k + 2) // S, a2 : a2 + n],
            xp[c0 + (k + 3) // S, a3 : a3 + n],
        )
        s0 = s1 = s2 = s3 = zero
        for m in range(n):
            wm = wrow[m]
            s0 += wm * x0[m]
            s1 += wm * x1[m]
            s2 += wm * x2[m]
            s3 += wm * x3[m]
        g_o[k] += s0
        g_o[k + 1] += s1
        g_o[k + 2] += s2
        g_o[k + 3] += s3
        k += 4
    while k < K:
        a0 = m0 + shifts[k % S]
        x0 = xp[c0 + k // S, a0 : a0 + n]
        s0 = zero
        for m in range(n):
            s0 += wrow[m] * x0[m]
        g_o[k] += s0
        k += 1


@nb.njit(**_INLINE)
def _dots4(g_b, o, ww, xp, shifts, S, m0, m1, zero, c0):  # pragma: no cover - compiled
    """``g_b[o + r, k] += <ww[o + r, m0:m1], xp[c0 + k // S, m0 + shifts[k % S] : ...]>`` for r < 4.

    Register blocking: four cotangent rows times six shifted input rows per sweep (24 running
    sums of one 512-bit vector each, plus the ten loaded vectors, within the 32 registers of
    AVX-512), so every loaded input vector feeds four multiply-adds and every cotangent vector
    six; the columns left over are done three, then one at a time (``K = 9``: 6 + 3). With 16
    registers (:data:`_WIDE` false: AVX2) the 24 sums spill to the stack, so the sweeps take
    three input rows (12 sums).
    """
    K = g_b.shape[1]
    n = m1 - m0
    w0, w1, w2, w3 = ww[o, m0:m1], ww[o + 1, m0:m1], ww[o + 2, m0:m1], ww[o + 3, m0:m1]
    k = 0
    while _WIDE and k + 6 <= K:
        a0 = m0 + shifts[k % S]
        x0 = xp[c0 + k // S, a0 : a0 + n]
        a1 = m0 + shifts[(k + 1) % S]
        x1 = xp[c0 + (k + 1) // S, a1 : a1 + n]
        a2 = m0 + shifts[(k + 2) % S]
        x2 = xp[c0 + (k + 2) // S, a2 : a2 + n]
        a3 = m0 + shifts[(k + 3) % S]
        x3 = xp[c0 + (k + 3) // S, a3 : a3 + n]
        a4 = m0 + shifts[(k + 4) % S]
        x4 = xp[c0 + (k + 4) // S, a4 : a4 + n]
        a5 = m0 + shifts[(k + 5) % S]
        x5 = xp[c0 + (k + 5) // S, a5 : a5 + n]
        s00 = s01 = s02 = s03 = s04 = s05 = zero
        s10 = s11 = s12 = s13 = s14 = s15 = zero
        s20 = s21 = s22 = s23 = s24 = s25 = zero
        s30 = s31 = s32 = s33 = s34 = s35 = zero
        for m in range(n):
            v0, v1, v2, v3, v4, v5 = x0[m], x1[m], x2[m], x3[m], x4[m], x5[m]
            u = w0[m]
            s00 += u * v0
            s01 += u * v1
            s02 += u * v2
            s03 += u * v3
            s04 += u * v4
            s05 += u * v5
            u = w1[m]
            s10 += u * v0
            s11 += u * v1
            s12 += u * v2
            s13 += u * v3
            s14 += u * v4
            s15 += u * v5
            u = w2[m]
            s20 += u * v0
            s21 += u * v1
            s22 += u * v2
            s23 += u * v3
            s24 += u * v4
            s25 += u * v5
            u = w3[m]
            s30 += u * v0
            s31 += u * v1
            s32 += u * v2
            s33 += u * v3
            s34 += u * v4
            s35 += u * v5
        g_b[o, k] += s00
        g_b[o, k + 1] += s01
        g_b[o, k + 2] += s02
        g_b[o, k + 3] += s03
        g_b[o, k + 4] += s04
        g_b[o, k + 5] += s05
        g_b[o + 1, k] += s10
        g_b[o + 1, k + 1] += s11
        g_b[o + 1, k + 2] += s12
        g_b[o + 1, k + 3] += s13
        g_b[o + 1, k + 4] += s14
        g_b[o + 1, k + 5] += s15
        g_b[o + 2, k] += s20
        g_b[o + 2, k + 1] += s21
        g_b[o + 2, k + 2] += s22
        g_b[o + 2, k + 3] += s23
        g_b[o + 2, k + 4] += s24
        g_b[o + 2, k + 5] += s25
        g_b[o + 3, k] += s30
        g_b[o + 3, k + 1] += s31
        g_b[o + 3, k + 2] += s32
        g_b[o + 3, k + 3] += s33
        g_b[o + 3, k + 4] += s34
        g_b[o + 3, k + 5] += s35
        k += 6
    while k + 3 <= K:
        a0 = m0 + shifts[k % S]
        x0 = xp[c0 + k // S, a0 : a0 + n]
        a1 = m0 + shifts[(k + 1) % S]
        x1 = xp[c0 + (k + 1) // S, a1 : a1 + n]
        a2 = m0 + shifts[(k + 2) % S]
        x2 = xp[c0 + (k + 2) // S, a2 : a2 + n]
        s00 = s01 = s02 = s10 = s11 = s12 = s20 = s21 = s22 = s30 = s31 = s32 = zero
        for m in range(n):
            v0, v1, v2 = x0[m], x1[m], x2[m]
            u = w0[m]
            s00 += u * v0
            s01 += u * v1
            s02 += u * v2
            u = w1[m]
            s10 += u * v0
            s11 += u * v1
            s12 += u * v2
            u = w2[m]
            s20 += u * v0
            s21 += u * v1
            s22 += u * v2
            u = w3[m]
            s30 += u * v0
            s31 += u * v1
            s32 += u * v2
        g_b[o, k] += s00
        g_b[o, k + 1] += s01
        g_b[o, k + 2] += s02
        g_b[o + 1, k] += s10
        g_b[o + 1, k + 1] += s11
        g_b[o + 1, k + 2] += s12
        g_b[o + 2, k] += s20
        g_b[o + 2, k + 1] += s21
        g_b[o + 2, k + 2] += s22
        g_b[o + 3, k] += s30
        g_b[o + 3, k + 1] += s31
        g_b[o + 3, k + 2] += s32
        k += 3
    while k < K:
        a0 = m0 + shifts[k % S]
        x0 = xp[c0 + k // S, a0 : a0 + n]
        s00 = s10 = s20 = s30 = zero
        for m in range(n):
            v0 = x0[m]
            u = w0[m]
            s00 += u * v0
            u = w1[m]
            s10 += u * v0
            u = w2[m]
            s20 += u * v0
            u = w3[m]
            s30 += u * v0
        g_b[o, k] += s00
        g_b[o + 1, k] += s10
        g_b[o + 2, k] += s20
        g_b[o + 3, k] += s30
        k += 1


@nb.njit(**_OPTS)
def gradient(x, w, runs, outruns, shifts, width, tile, group, groups, g):  # pragma: no cover - compiled
    """``g[b, o, c, j] = sum_{e in block b} sum_i w[e, o, i] xp_e[g(o) cg + c, outidx[i] + shifts[j]]``.

    ``groups``: output channel ``o`` pairs with the ``cg = cin / groups`` input rows of its
    group ``g(o)`` only (``g``: ``(blocks, cout, cg * S)``).

    Examples are split into ``g.shape[0]`` contiguous blocks (one per example for
    per-example gradients, a few for the sum, which the caller adds up). Within a block,
    ``group`` examples are laid end to end on one flat axis (each on its own padded grid)
    and swept at once: a shifted read from an output position never leaves its example's
    padded grid, and the cotangent is zero off the outputs, so the examples do not mix,
    while the dot products run over ``group`` times longer ranges (fewer horizontal
    reductions and loop set-ups for small images).

    The padded inputs and cotangents are placed with :func:`_place` (16-wide copies of the
    long runs, single values for the short ones) into buffers zeroed once per block: the
    positions that are zero (padding of ``bc='zero'``, positions that are not outputs) are
    the same for every example, so they are never written again.
    """
    n, cin, _ = x.shape
    nb_, cout, K = g.shape  # g: (blocks, cout, cg * S), column c * S + j
    og, cg = cout // groups, cin // groups
    S = shifts.shape[0]
    Lp = runs[0, -1] + runs[2, -1]
    xl, xs = _split_runs(runs[0], runs[1], runs[2])  # xp[q] = x[s]
    wl, wsg = _split_runs(outruns[1], outruns[0], outruns[2])  # ww[outidx[i]] = w[i]
    for b in nb.prange(nb_):
        xp = np.zeros((cin, group * Lp), dtype=x.dtype)
        ww = np.zeros((cout, group * Lp), dtype=x.dtype)
        zero = np.zeros(1, dtype=x.dtype)[0]
        for o in range(cout):
            for k in range(K):
                g[b, o, k] = 0
        e0, e1 = b * n // nb_, (b + 1) * n // nb_
        for first in range(e0, e1, group):
            count = min(group, e1 - first)
            for t in range(count):
                for c in range(cin):
                    _place(xp[c], t * Lp, x[first + t, c], xl, xs)
                for o in range(cout):
                    _place(ww[o], t * Lp, w[first + t, o], wl, wsg)
            span = (count - 1) * Lp + width
            for m0 in range(0, span, tile):
                m1 = min(m0 + tile, span)
                for gi in range(groups):
                    o, end = gi * og, (gi + 1) * og
                    while o + 4 <= end:
                        _dots4(g[b], o, ww, xp, shifts, S, m0, m1, zero, gi * cg)
                        o += 4
                    while o < end:
                        _dots(g[b, o], ww[o, m0:m1], xp, shifts, S, m0, m1, zero, gi * cg)
                        o += 1
