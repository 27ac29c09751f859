r"""Certified two-sided bounds for convolutions that no fast transform diagonalises.

A zero-boundary convolution (any channels, any stride) is a restriction of a periodic one
on the grid padded by the stencil, :math:`K = R\,C_L\,E`
(:class:`~structops.kernels.diagonalized.PeriodicEmbedding`), so

* **upper bound of** :math:`\sigma_{\max}` -- :math:`\|K\|_2 \le \|S\,C_L\|_2`, computed exactly from
  the symbol of :math:`C_L` (a certificate, plus a round-off allowance);
* **lower bound of** :math:`\sigma_{\max}` -- the largest Ritz value of a few Golub--Kahan--Lanczos
  steps started from the maximising Fourier mode, restricted to the grid and windowed by
  :math:`\prod_a \sin(\pi(i_a + 1)/(n_a + 1))` (a Ritz value never exceeds :math:`\sigma_{\max}`);
* **upper bound of** :math:`\sigma_{\min}` -- the smallest Ritz value of a run started from the
  minimising mode (never below :math:`\sigma_{\min}`);
* **lower bound of** :math:`\sigma_{\min}` -- only for one channel, stride 1 and bc ``"zero"``:
  with the stencil split into its mirror-symmetric part :math:`w_s` and the rest :math:`w_a`,
  :math:`K(w_s)` is a finite section of the symmetric Toeplitz operator of the real symbol
  :math:`f(\xi) = \sum_o (w_s)_o \prod_a\cos(\xi_a o_a)`, whose eigenvalues lie in
  :math:`[\inf f, \sup f]` over the continuum; :math:`\inf f` is bounded from below by its
  minimum on a fine grid minus the Lipschitz constant :math:`\sum_o |(w_s)_o|\,|o|_2` times the
  largest distance to the grid; by Weyl, :math:`\sigma_{\min}(K) \ge \inf f - \|w_a\|_1` when
  :math:`\inf f > 0` (likewise with :math:`-\sup f` when the symbol is negative). Otherwise 0.

Reflect and replicate padding (no periodic embedding), and zero-boundary layers whose symbol
bound is loose (small grids: :func:`certified_norm` tightens when the bracket exceeds
:data:`TIGHTEN`), are certified by verified positive definiteness of :math:`tI - K^\top K`
(:mod:`structops.solvers._verified`, Rump 2006, with its own round-off allowances; a banded
Cholesky factorisation, or for larger layers, up to 64→64 3×3 on 32×32, a nested-dissection
one, :mod:`structops.solvers._dissection`); above its size limit by
:math:`\|K_{\mathrm{valid}}\|\,\|E\|` or Schur's bound (:func:`_padded_upper`).

**Round-off allowances** (:func:`norm_upper`). Every certificate is computed in float64 from the
parameters as stored (a float32 :math:`\theta` converts exactly), so it bounds the norm of the
operator *as computed*, the one whose matrix is ``kernel.matrix(theta.astype(float64))``:

* an FFT of length :math:`N` has the normwise error
  :math:`\|\mathrm{fl}(\hat c) - \hat c\|_2 \le c_F \log_2 N\,\varepsilon\,\|\hat c\|_2`
  (Higham, *Accuracy and Stability of Numerical Algorithms*, Thm. 24.2), so every block of the
  computed symbol is within :math:`c_F\log_2 N\,\varepsilon\,\|\hat K\|_F` (over all
  frequencies) of the exact one, in the 2-norm;
* an eigenvalue of the Gram block :math:`B^H B` (size :math:`k`) computed by LAPACK is within
  :math:`c\,k\,\varepsilon\,\|B\|_2^2` of the exact one; dense SVD within
  :math:`c\max(m, n)\,\varepsilon\,\|A\|_2`;
* a family whose stencil is a computed function of :math:`\theta` (``SymmetricConv``: a sum of
  parameters) differs from the float64 stencil by :math:`|\delta w| \le c\,\varepsilon_\theta |w|`,
  and :math:`\|K(\delta w)\|_2 \le \|\delta w\|_1 \sqrt{m}` with :math:`m` the most times a
  boundary condition reads one sample (1 for zero and periodic padding).

The constants (:data:`FFT_CONSTANT`, :data:`LAPACK_CONSTANT`) are generous; in float64 the
allowance is below :math:`10^{-11}` relative for every grid up to :math:`10^6` points.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np
import scipy.fft as sfft

from .._backend import blas_threads_for, thread_budget
from ..kernels._base import ParametricKernel
from ..kernels.conv import Conv, ConvBased
from ..kernels.conv.based import conv_itself
from ..kernels.dense import Dense
from ..kernels.diagonalized import block_svdvals, full_spectrum
from ..kernels.reparam import LinearReparam
from ._lanczos import SpectralEstimate, golub_kahan
from ._verified import MAX_DISSECTION_FLOPS, MAX_FLOPS, schur_upper, verified_upper

__all__ = ["certified_cond", "certified_norm", "norm_upper", "symbol_range_bound", "verified_norm"]

#: Lanczos steps of the run that bounds :math:`\sigma_{\max}` from below.
NORM_STEPS = 30
#: :math:`c_F`: the FFT's normwise error is at most ``FFT_CONSTANT * log2(N) * eps`` relative.
FFT_CONSTANT = 16.0
#: LAPACK's eigenvalue/singular value error is at most ``LAPACK_CONSTANT * size * eps * norm``.
LAPACK_CONSTANT = 8.0
#: Lanczos steps of the estimate that places the trial value of the verified route (:mod:`._verified`).
ESTIMATE_STEPS = 80
#: The certified bracket is tightened by the verified route when ``upper > lower * (1 + TIGHTEN)``.
TIGHTEN = 0.008
#: Points of the fine grid on which the symbol's range is bounded (in all, over the axes).
SYMBOL_POINTS = 2**22


def _window(grid: tuple[int, ...]) -> np.ndarray:
    w = np.ones(())
    for n in grid:
        w = np.multiply.outer(w, np.sin(np.pi * (np.arange(n) + 1) / (n + 1)))
    return w


def _mode(symbol: _Symbol, index: tuple[int, ...], vector: np.ndarray, dtype) -> list[np.ndarray]:
    r"""Real and imaginary part of the windowed Fourier mode :math:`v\,e^{2\pi i \xi\cdot x/L}` on the grid."""
    grid, L = symbol.grid, symbol.periodic
    phase = np.zeros(grid)
    for a, (n, xi, la) in enumerate(zip(grid, index, L)):
        shape = [1] * len(grid)
        shape[a] = n
        phase = phase + (2 * np.pi * xi * np.arange(n) / la).reshape(shape)
    wave = _window(grid) * np.exp(1j * phase)
    mode = vector.reshape(-1, *([1] * len(grid))) * wave[None]
    return [np.ascontiguousarray(part, dtype=dtype).ravel() for part in (mode.real, mode.imag)]


def _start(kernel: ParametricKernel, theta: np.ndarray, symbol: _Symbol, largest: bool) -> np.ndarray:
    """The better of the real and imaginary part of the extreme windowed mode (largest or smallest ``‖Kx‖/‖x‖``)."""
    blocks = symbol.blocks
    if largest:
        pick = symbol.tops if symbol.tops is not None else block_tops(blocks)
    else:
        pick = block_svdvals(blocks)[..., -1]
    index = np.unravel_index(int(np.argmax(pick) if largest else np.argmin(pick)), pick.shape)
    _, _, vh = np.linalg.svd(blocks[index])
    vector = np.conj(vh[0] if largest else vh[-1])
    op = kernel.op(theta)
    parts = [x for x in _mode(symbol, tuple(int(i) for i in index), vector, theta.dtype) if np.any(x)]
    scores = [float(np.linalg.norm(op.matvec(x)) / np.linalg.norm(x)) for x in parts]
    if not parts:  # pragma: no cover - the real or the imaginary part of a mode is nonzero
        return np.ones(kernel.shape[1], dtype=theta.dtype)
    return parts[int(np.argmax(scores) if largest else np.argmin(scores))]


class _Symbol(NamedTuple):
    """The blocks of the periodic convolution on ``periodic`` that contains ``K`` on ``grid`` (rfft half grid)."""

    grid: tuple[int, ...]
    periodic: tuple[int, ...]
    blocks: np.ndarray
    tops: np.ndarray | None = None  # their largest singular values, when already computed


def _periodic_symbol(kernel: ParametricKernel, theta: np.ndarray) -> _Symbol | None:
    """The symbol of ``kernel.periodic_embedding(theta)``, or None without one (reflect, replicate padding)."""
    emb = kernel.periodic_embedding(theta)
    return None if emb is None else _Symbol(emb.grid, emb.multiplier.grid, emb.multiplier.blocks)


def _embedding(kernel: ParametricKernel, theta: np.ndarray) -> _Symbol:
    symbol = _periodic_symbol(kernel, theta)
    if symbol is None:
        raise ValueError(f"{kernel!r} has no periodic embedding at this theta: no certified bounds.")
    return symbol


def certified_norm(kernel: ParametricKernel, theta: np.ndarray, *, maxiter: int, tol: float) -> SpectralEstimate:
    r"""``lower <= ‖K(θ)‖₂ <= upper``, both guaranteed: Lanczos from the top mode, and :func:`norm_upper`.

    When the bracket is wider than ``max(tol, TIGHTEN)``, the upper bound is tightened by verified
    positive definiteness (:func:`verified_norm`) at the Lanczos value. Without a periodic
    embedding (reflect and replicate padding) the run starts from a seeded random vector.

    ``converged`` is True only when the certified bracket is within ``tol`` (``upper <= lower (1 + tol)``):
    the value returned, the Lanczos lower bound, is then within ``tol`` of the norm; otherwise the
    caller warns with the bracket.
    """
    seen: dict = {}
    upper, source = norm_upper(kernel, theta, dense_limit=0, symbol=seen)  # what gives the bound names the result
    exact = theta.astype(np.float64)  # the operator as computed, in float64 (a float32 θ converts exactly)
    read = seen["symbol"] if "symbol" in seen else _periodic_symbol(kernel, theta)
    v0 = None if read is None else _start(kernel, exact, read, largest=True)
    with blas_threads_for(0):  # vector steps: BLAS threads only spin (measured: 10x the CPU on a loaded machine)
        big, _ = golub_kahan(kernel.op(exact), maxiter=maxiter, tol=tol, need_min=False, v0=v0)
    slack = LAPACK_CONSTANT * np.sqrt(max(kernel.shape)) * _EPS64 * big.lower + _conversion(kernel, theta, big.lower)
    if upper > big.lower * (1 + max(tol, TIGHTEN)):  # a loose symbol bound (small grids): verify a tighter one
        tight = verified_norm(kernel, theta, big.value)
        if tight is not None:
            upper = min(upper, tight + _conversion(kernel, theta, tight))
    lower = max(min(big.lower - slack, upper), 0.0)
    converged = upper <= lower * (1 + tol)
    value, lower, upper = float(big.value), float(lower), float(upper)
    return SpectralEstimate(value, lower, upper, False, source, big.iterations, bool(converged), True)


def certified_cond(kernel: ParametricKernel, theta: np.ndarray, *, maxiter: int, tol: float) -> SpectralEstimate:
    r"""Guaranteed bounds on :math:`\kappa(K(\theta))`; the value, a Lanczos ratio, is a lower bound till converged."""
    emb = _embedding(kernel, theta)
    norm = certified_norm(kernel, theta, maxiter=NORM_STEPS, tol=tol)
    v0 = _start(kernel, theta, emb, largest=False)
    big, small = golub_kahan(kernel.op(theta), maxiter=maxiter, tol=tol, need_min=True, v0=v0)
    smax_low = max(norm.lower, big.lower)
    smin_up = small.upper
    smin_low = max(small.lower if small.certified else 0.0, symbol_range_bound(kernel, theta))
    value = np.inf if small.value == 0 else max(norm.value, big.value) / small.value
    lower = np.inf if smin_up == 0 else smax_low / smin_up
    upper = np.inf if smin_low <= 0 else norm.upper / smin_low
    converged = (big.converged and small.converged) or upper <= lower * (1 + tol)
    return SpectralEstimate(
        float(value),
        float(min(lower, value)),
        float(max(upper, value)),
        False,
        "certified",
        norm.iterations + big.iterations,
        bool(converged),
        True,
    )


def symbol_range_bound(kernel: ParametricKernel, theta: np.ndarray) -> float:
    r"""A certified lower bound on :math:`\sigma_{\min}(K(\theta))` from the symbol's range (0 when none is known).

    Only for one channel, stride 1 and a square ``K`` (``bc="zero"``: a finite section of a
    Toeplitz operator); see the module notes.
    """
    emb = kernel.periodic_embedding(theta)
    if emb is None or emb.stencil.shape[:2] != (1, 1) or any(st != 1 for st in emb.stride):
        return 0.0
    if kernel.shape[0] != kernel.shape[1]:  # "valid": not a finite section
        return 0.0
    w = emb.stencil[0, 0].astype(np.float64)
    d = w.ndim
    # odd sizes, same centre (an even size s has offsets -s/2 .. s/2 - 1: one zero appended)
    w = np.pad(w, [(0, 1 - s % 2) for s in w.shape])
    sym = 0.5 * (w + np.flip(w))
    anti = float(np.abs(w - sym).sum())
    M = max(8, int(SYMBOL_POINTS ** (1.0 / d)))
    L = tuple(max(M, 2 * s) for s in sym.shape)
    centre = [s // 2 for s in sym.shape]
    coeffs = np.roll(
        np.pad(sym, [(0, la - s) for la, s in zip(L, sym.shape)]), [-c for c in centre], axis=tuple(range(d))
    )
    f = sfft.rfftn(coeffs).real  # f(ξ) = Σ_o w_o cos(ξ·o) on the grid 2πk/L
    offsets = np.stack(np.meshgrid(*(np.arange(s) - c for s, c in zip(sym.shape, centre)), indexing="ij"), -1)
    lipschitz = float((np.abs(sym) * np.linalg.norm(offsets, axis=-1)).sum())
    delta = float(np.sqrt(sum((np.pi / la) ** 2 for la in L)))  # farthest point of the torus from the grid
    roundoff = 16 * np.finfo(np.float64).eps * np.log2(float(np.prod(L))) * float(np.abs(sym).sum())
    low, high = float(f.min()) - lipschitz * delta - roundoff, float(f.max()) + lipschitz * delta + roundoff
    if low > 0:
        return max(low - anti, 0.0)
    if high < 0:
        return max(-high - anti, 0.0)
    return 0.0


# ------------------------------------------------------------------ upper bounds with round-off allowances
_EPS64 = float(np.finfo(np.float64).eps)


def _plain_stencil(kernel: ParametricKernel, theta64: np.ndarray) -> tuple[Conv, np.ndarray] | None:
    """``(conv, w)``: the :class:`Conv` behind ``kernel`` (``as_convolution``) and its float64 stencil, if plain.

    ``w`` has shape ``(out, in, *stencil)``. Plain: no dilation, one group, the default padding
    (the fast symbol below places tap ``j`` at ``j - s//2``); anything else goes through the
    family's own ``periodic_embedding``.
    """
    view = kernel.as_convolution()  # the stencil hook (docs/contract.md), not isinstance
    if view is None:
        return None
    conv, w = view.conv, np.asarray(view.weights(theta64), dtype=np.float64)
    geo = conv.geometry
    if not geo.plain:
        return None
    if w.shape != (geo.cout, geo.cin, *geo.stencil):
        return None
    return conv, w


def half_symbol(w: np.ndarray, grid: tuple[int, ...]) -> np.ndarray:
    r"""The ``rfftn`` half of the symbol of the periodic convolution of stencil ``w`` on ``grid``.

    ``w`` has shape ``(out, in, *stencil)`` (tap :math:`j` at offset :math:`j - s/\!/2`, wrapped
    when larger than the grid); returns ``(*half, out, in)`` complex, computed in ``w``'s dtype.
    """
    d = len(grid)
    cols = np.zeros((*w.shape[:2], *grid), dtype=w.dtype)
    index = (slice(None), slice(None), *np.ix_(*(np.mod(np.arange(s) - s // 2, g) for s, g in zip(w.shape[2:], grid))))
    if all(s <= g for s, g in zip(w.shape[2:], grid)):
        cols[index] = w
    else:
        np.add.at(cols, index, w)
    spec = sfft.rfftn(cols, axes=tuple(range(2, 2 + d)))
    return np.moveaxis(spec, (0, 1), (-2, -1))


#: Work (blocks × side³) per Python thread below which :func:`block_tops` runs in the calling thread.
_SPLIT_WORK = 1 << 19
#: ``(pid, workers, executor)``: the Python threads of :func:`block_tops`, made once per process.
_POOL: list = []


def _pool(workers: int) -> ThreadPoolExecutor:
    """A thread pool of ``workers`` threads kept between calls (a new one after a fork or a new budget)."""
    key = (os.getpid(), workers)
    if not _POOL or _POOL[0][:2] != key:
        _POOL[:] = [(*key, ThreadPoolExecutor(workers, thread_name_prefix="structops-blocks"))]
    return _POOL[0][2]


def block_tops(blocks: np.ndarray) -> np.ndarray:
    r""":math:`\sigma_{\max}(B(\xi))` of every block ``(*freq, m, n)``, from the eigenvalues of the smaller Gram block.

    LAPACK on small blocks gains nothing from BLAS threads (they cost several times the work on
    a loaded machine): one BLAS thread, the batch split over the thread budget's
    Python threads instead (the LAPACK loops release the GIL).
    """
    m, n = blocks.shape[-2:]
    flat = blocks.reshape(-1, m, n)

    def tops(chunk: np.ndarray) -> np.ndarray:
        adjoint = np.conj(np.swapaxes(chunk, -1, -2))
        gram = chunk @ adjoint if m <= n else adjoint @ chunk
        return np.sqrt(np.maximum(np.linalg.eigvalsh(gram)[:, -1], 0.0))

    if flat.shape[0] == 0 or m * n == 0:
        return np.zeros(blocks.shape[:-2])
    if m == n == 1:
        return np.abs(blocks[..., 0, 0])
    parts = max(1, min(thread_budget(), flat.shape[0] * max(m, n) ** 3 // _SPLIT_WORK))  # small batches: no threads
    with blas_threads_for(max(m, n)):
        if parts == 1:
            out = tops(flat)
        else:
            out = np.concatenate(list(_pool(parts).map(tops, np.array_split(flat, parts))))
    return out.reshape(blocks.shape[:-2])


def gram_top(blocks: np.ndarray) -> float:
    r""":math:`\max_\xi \sigma_{\max}(B(\xi))` from the eigenvalues of the smaller Gram block (no SVD)."""
    return float(block_tops(blocks).max(initial=0.0))


def _aliased_top(half: np.ndarray, grid: tuple[int, ...], stride: tuple[int, ...]) -> float:
    r""":math:`\|S\,C\|_2` for the sampling :math:`S` by ``stride`` (dividing ``grid``) after the periodic :math:`C`.

    See :class:`~structops.kernels.diagonalized.PeriodicEmbedding`: the block of a coarse
    frequency :math:`\eta` has the Gram :math:`m^{-1}\sum_r \hat C(\xi_r)\hat C(\xi_r)^H` over its aliases.
    """
    if all(st == 1 for st in stride):
        return gram_top(half)
    d = len(grid)
    full = full_spectrum(half, grid)
    shape: list[int] = []
    for g, st in zip(grid, stride):
        shape += [st, g // st]
    full = full.reshape(*shape, *full.shape[d:])
    with blas_threads_for(full.shape[-1]):
        gram = np.mean(full @ np.conj(np.swapaxes(full, -1, -2)), axis=tuple(range(0, 2 * d, 2)))
        return float(np.sqrt(max(float(np.linalg.eigvalsh(gram)[..., -1].max(initial=0.0)), 0.0)))


def embedding_grid(conv: Conv) -> tuple[int, ...]:
    r"""The smallest periodic grid containing a plain zero-boundary ``conv``, a multiple of the stride.

    Tap :math:`j` of a stencil of size :math:`s` reads offset :math:`j - s/\!/2`, so output
    :math:`i` reads :math:`i - a \ldots i + b` with :math:`a = s/\!/2`, :math:`b = s - 1 - a`:
    on a grid :math:`L \ge n + \max(a, b)` no read wraps onto the image (``"zero"``; the reads
    of a ``"valid"`` output stay inside it, :math:`L \ge n`), so ``K`` is a restriction of the
    periodic convolution there. The smallest such grid whose FFT is fast (factors 2, 3, 5, 7,
    11: 33 for 32, 30 for 28, not a prime) gives the fewest frequency blocks.
    """
    size = []
    for g, s, st in zip(conv.grid, conv.stencil, conv.stride):
        n = sfft.next_fast_len(g if conv.bc == "valid" else g + max(s // 2, s - 1 - s // 2))  # 2, 3, 5, 7, 11
        size.append(-(-n // st) * st)
    return tuple(size)


def _fft_allowance(frobenius: float, grid: tuple[int, ...], block: int, top: float) -> float:
    """Round-off allowance of a norm read from an FFT symbol (module notes): FFT error plus eigenvalue error."""
    n = float(np.prod(grid))
    return FFT_CONSTANT * np.log2(max(n, 2.0)) * _EPS64 * frobenius + LAPACK_CONSTANT * (block + 2) * _EPS64 * top


def _conv_upper(conv: Conv, w: np.ndarray, symbol: dict | None = None) -> tuple[float, str] | None:
    """The certificate of a plain zero/valid/periodic convolution of stencil ``w`` (float64), or None.

    For zero boundaries, ``symbol["symbol"]`` receives the :class:`_Symbol` it read (the start of the Lanczos run).
    """
    if conv.bc == "periodic":
        grid = conv.grid
        if any(g % st for g, st in zip(grid, conv.stride)):
            stride = (1,) * len(grid)  # ‖R S C‖ <= ‖C‖: the sampling does not tile the grid
        else:
            stride = conv.stride
        name = "fourier"
    elif conv.bc in ("zero", "valid"):
        grid, stride, name = embedding_grid(conv), conv.stride, "certified"
    else:
        return None
    half = half_symbol(w, grid)
    if all(st == 1 for st in stride):
        tops = block_tops(half)
        top = float(tops.max(initial=0.0))
    else:
        tops, top = None, _aliased_top(half, grid, stride)
    if symbol is not None and name == "certified":
        symbol["symbol"] = _Symbol(conv.grid, grid, half, tops)
    frobenius = float(np.sqrt(np.prod(grid))) * float(np.linalg.norm(w))
    if any(s > g for s, g in zip(w.shape[2:], grid)):
        frobenius = float(np.sqrt(np.prod(grid))) * float(np.abs(w).sum())
    return top + _fft_allowance(frobenius, grid, min(w.shape[:2]) * int(np.prod(stride)), top), name


def _copies(n: int, before: int, after: int, bc: str) -> int:
    """The most positions of a line of ``n`` samples padded by ``before + after`` that hold one sample."""
    if n > 1 and bc == "replicate":
        return 1 + max(before, after)
    if bc == "reflect" and max(before, after) < n and before + after < n - 1:  # the two sides touch no sample twice
        return 1 + int(before > 0 or after > 0)
    return 1 + before + after


def _padded_upper(conv: Conv, w: np.ndarray) -> float:
    r"""A loose certificate for any padding: :math:`\|K\| = \|K_{\mathrm{valid}} E\| \le \|K_{\mathrm{valid}}\|\,\|E\|`.

    :math:`E` pads the grid by the boundary rule (each sample copied at most :math:`m_a` times per
    axis, :func:`_copies`: :math:`\|E\|_2 = \sqrt{\prod_a m_a}` at most, 2 for a 3×3 stencil in 2-D)
    and :math:`K_{\mathrm{valid}}` is the convolution without padding on the padded grid (the
    periodic-embedding certificate). The smaller of this and Schur's bound
    (:func:`~structops.solvers._verified.schur_upper`).
    """
    geo = conv.geometry
    schur = schur_upper(w, _multiplicity(conv))
    try:
        valid = Conv(
            tuple(n + b + a for n, (b, a) in zip(geo.grid, geo.pads)),
            geo.stencil,
            bc="valid",
            in_channels=geo.cin,
            out_channels=geo.cout,
            stride=geo.stride,
            dilation=geo.dilation,
            groups=geo.groups,
        )
        found = _structured_upper(valid, w.ravel())
    except (TypeError, ValueError):  # pragma: no cover - every geometry has a valid counterpart
        return schur
    if found is None:  # pragma: no cover
        return schur
    copies = np.prod([_copies(n, b, a, geo.bc) for n, (b, a) in zip(geo.grid, geo.pads)])
    return min(schur, found[0] * float(np.sqrt(copies)) * (1 + 4 * _EPS64))


def _multiplicity(kernel: ParametricKernel) -> float:
    """The most times one input sample is read by one tap of one channel pair (1 for zero and periodic padding).

    Along an axis padded by ``p_before + p_after`` samples, at most ``1 + p_before + p_after``
    positions of the padded line copy one sample (any padding rule, dilation and stride included).
    """
    geo = getattr(kernel, "geometry", None)
    if geo is None or geo.bc in ("zero", "valid", "periodic"):
        return 1.0
    return float(np.prod([1 + before + after for before, after in geo.pads]))


def _conversion(kernel: ParametricKernel, theta: np.ndarray, top: float) -> float:
    r"""Allowance for the stencil computed in ``theta``'s dtype instead of float64 (module notes)."""
    if isinstance(kernel, Dense) or conv_itself(kernel) is not None:
        return 0.0  # θ holds the operator's entries: the float64 copy is exact
    eps = float(np.finfo(theta.dtype).eps)
    theta64 = theta.astype(np.float64)
    if isinstance(kernel, LinearReparam) and conv_itself(kernel.kernel) is not None:
        P = kernel.P
        nnz = int(np.diff(P.indptr).max(initial=1))
        l1 = float((abs(P) @ np.abs(theta64)).sum())
        return 4.0 * (nnz + 1) * eps * l1 * np.sqrt(_multiplicity(kernel))
    if isinstance(kernel, ConvBased):
        l1 = float(np.abs(kernel.weights(theta64)).sum())
        return 8.0 * eps * l1 * np.sqrt(_multiplicity(kernel))
    return 8.0 * eps * np.sqrt(float(min(kernel.shape))) * top  # ‖|ΔK|‖₂ <= sqrt(rank) ‖ΔK‖ entrywise


def _transform_top(kernel: ParametricKernel, theta64: np.ndarray) -> tuple[float, str] | None:
    """The norm from a unitary diagonalisation at a float64 ``theta`` with its FFT and LAPACK allowances, or None."""
    D = kernel.diagonalize(theta64)
    if D is None or not D.unitary:  # otherwise the singular values are those of the blocks
        return None
    blocks = D.blocks
    top = float(block_svdvals(blocks).max(initial=0.0))
    frobenius = float(np.sqrt(2.0)) * float(np.linalg.norm(blocks))
    return top + D.residual + _fft_allowance(frobenius, D.grid, min(blocks.shape[-2:]), top), D.route_name


def _structured_upper(
    kernel: ParametricKernel, theta64: np.ndarray, symbol: dict | None = None
) -> tuple[float, str] | None:
    """The structured certificate (transform or periodic embedding) at a float64 ``theta``, or None."""
    plain = _plain_stencil(kernel, theta64)
    if plain is not None:
        found = _conv_upper(*plain, symbol)
        if found is not None:
            return found
    found = _transform_top(kernel, theta64)
    if found is not None:
        return found
    emb = kernel.periodic_embedding(theta64)
    if emb is not None:
        top = emb.upper_bound()  # includes the symbol's allowance
        return top + LAPACK_CONSTANT * (emb.multiplier.blocks.shape[-2] + 2) * _EPS64 * top, "certified"
    return None


def transform_upper(kernel: ParametricKernel, theta: np.ndarray) -> float | None:
    r"""The certified bound read from the kernel's unitary diagonalisation, with every round-off allowance, or None.

    The bound of :class:`~structops.solvers.Route` objects on a transform route: the largest
    block singular value, the transform's residual, the FFT and LAPACK allowances and the
    conversion of the stencil from ``theta``'s dtype (computed in float64).
    """
    found = _transform_top(kernel, np.asarray(theta).astype(np.float64))
    return None if found is None else float(found[0] + _conversion(kernel, np.asarray(theta), found[0]))


def dense_upper(kernel: ParametricKernel, theta: np.ndarray) -> float:
    r"""The dense LAPACK norm of :math:`K(\theta)` in float64 with LAPACK's and the conversion's allowances."""
    theta64 = np.asarray(theta).astype(np.float64)
    value = float(np.linalg.norm(kernel.matrix(theta64), 2)) if min(kernel.shape) else 0.0
    top = value * (1 + LAPACK_CONSTANT * max(kernel.shape) * _EPS64)
    return float(top + _conversion(kernel, np.asarray(theta), top))


def norm_upper(
    kernel: ParametricKernel, theta: np.ndarray, *, dense_limit: int, symbol: dict | None = None
) -> tuple[float, str]:
    r"""A certified upper bound on :math:`\|K(\theta)\|_2` of the operator as computed, and its route.

    Structured routes first (a fast transform, the periodic embedding), all in float64 with the
    round-off allowances of the module notes; then, for any other convolution (reflect and
    replicate padding), verified positive definiteness (:func:`verified_norm`, route
    ``"verified-cholesky"``, banded or by nested dissection; above its size limit, dense LAPACK
    when ``max(kernel.shape) <= dense_limit``, else :func:`_padded_upper`, route ``"padded"``
    (:math:`\|K_{\mathrm{valid}}\|\,\|E\|` or Schur's bound), valid but looser); dense
    LAPACK only when none applies and ``max(kernel.shape) <= dense_limit``. A dict ``symbol``
    receives the symbol read on the plain zero-boundary route (key ``"symbol"``), so that
    :func:`certified_norm` need not rebuild it.

    Raises
    ------
    ValueError
        If no route applies (the message says why).
    """
    theta64 = np.asarray(theta).astype(np.float64)
    found = _structured_upper(kernel, theta64, symbol)
    view = kernel.as_convolution()
    if found is None and view is not None and min(kernel.shape) > 0:
        bound = verified_norm(kernel, theta64, budget=MAX_DISSECTION_FLOPS)
        found = None if bound is None else (bound, "verified-cholesky")
        if bound is None and max(kernel.shape) > dense_limit:  # too costly to factorise
            found = (_padded_upper(view.conv, np.asarray(view.weights(theta64), dtype=np.float64)), "padded")
    if found is None and (max(kernel.shape) <= dense_limit or min(kernel.shape) == 0):
        return dense_upper(kernel, theta), "dense"
    if found is None:
        raise ValueError(
            f"no certified bound on the spectral norm of {kernel!r}: no fast transform diagonalises it, it has "
            f"no periodic embedding, and max(kernel.shape) = {max(kernel.shape)} exceeds `dense_limit` = "
            f"{dense_limit} for dense LAPACK. Use "
            "structops.solvers.spectral_norm for an estimate with (probabilistic) bounds."
        )
    top, name = found
    return float(top + _conversion(kernel, np.asarray(theta), top)), name


def verified_norm(
    kernel: ParametricKernel, theta: np.ndarray, estimate: float | None = None, *, budget: float = MAX_FLOPS
) -> float | None:
    r"""The verified-positive-definiteness bound of :mod:`structops.solvers._verified`, or None (too costly, or failed).

    ``estimate`` places the trial values; by default the Ritz value of :data:`ESTIMATE_STEPS`
    Golub--Kahan--Lanczos steps. ``budget`` caps the flops of the nested-dissection
    factorisation (:mod:`structops.solvers._dissection`, for convolutions): :func:`norm_upper`
    passes :data:`~structops.solvers._verified.MAX_DISSECTION_FLOPS` (reflect and replicate
    layers up to 64→64 3×3 on 32×32, tens of seconds), the tightening in :func:`certified_norm`
    the banded route's limit. The bound is of the operator at ``theta.astype(float64)``; the
    caller adds the conversion allowance of a family computed from ``theta``.
    """
    theta64 = np.asarray(theta).astype(np.float64)
    if estimate is None:
        big, _ = golub_kahan(kernel.op(theta64), maxiter=ESTIMATE_STEPS, tol=1e-8, need_min=False)
        estimate = big.value
    return verified_upper(kernel, theta64, float(estimate), budget=budget)
