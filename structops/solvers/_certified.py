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
"""

from __future__ import annotations

import numpy as np
import scipy.fft as sfft

from ..kernels._base import ParametricKernel
from ..kernels.diagonalized import PeriodicEmbedding, block_svdvals
from ._lanczos import SpectralEstimate, golub_kahan

__all__ = ["certified_cond", "certified_norm", "symbol_range_bound"]

#: Lanczos steps of the run that bounds :math:`\sigma_{\max}` from below.
NORM_STEPS = 30
#: Points of the fine grid on which the symbol's range is bounded (in all, over the axes).
SYMBOL_POINTS = 2**22


def _window(grid: tuple[int, ...]) -> np.ndarray:
    w = np.ones(())
    for n in grid:
        w = np.multiply.outer(w, np.sin(np.pi * (np.arange(n) + 1) / (n + 1)))
    return w


def _mode(emb: PeriodicEmbedding, index: tuple[int, ...], vector: np.ndarray, dtype) -> list[np.ndarray]:
    r"""Real and imaginary part of the windowed Fourier mode :math:`v\,e^{2\pi i \xi\cdot x/L}` on the grid."""
    grid, L = emb.grid, emb.multiplier.grid
    phase = np.zeros(grid)
    for a, (n, xi, la) in enumerate(zip(grid, index, L)):
        shape = [1] * len(grid)
        shape[a] = n
        phase = phase + (2 * np.pi * xi * np.arange(n) / la).reshape(shape)
    wave = _window(grid) * np.exp(1j * phase)
    mode = vector.reshape(-1, *([1] * len(grid))) * wave[None]
    return [np.ascontiguousarray(part, dtype=dtype).ravel() for part in (mode.real, mode.imag)]


def _start(kernel: ParametricKernel, theta: np.ndarray, emb: PeriodicEmbedding, largest: bool) -> np.ndarray:
    """The better of the real and imaginary part of the extreme windowed mode (largest or smallest ``‖Kx‖/‖x‖``)."""
    blocks = emb.multiplier.blocks
    sv = block_svdvals(blocks)
    pick = sv[..., 0] if largest else sv[..., -1]
    index = np.unravel_index(int(np.argmax(pick) if largest else np.argmin(pick)), pick.shape)
    _, _, vh = np.linalg.svd(blocks[index])
    vector = np.conj(vh[0] if largest else vh[-1])
    op = kernel.op(theta)
    parts = [x for x in _mode(emb, tuple(int(i) for i in index), vector, theta.dtype) if np.any(x)]
    scores = [float(np.linalg.norm(op.matvec(x)) / np.linalg.norm(x)) for x in parts]
    if not parts:  # pragma: no cover - the real or the imaginary part of a mode is nonzero
        return np.ones(kernel.shape[1], dtype=theta.dtype)
    return parts[int(np.argmax(scores) if largest else np.argmin(scores))]


def _embedding(kernel: ParametricKernel, theta: np.ndarray) -> PeriodicEmbedding:
    emb = kernel.periodic_embedding(theta)
    if emb is None:
        raise ValueError(f"{kernel!r} has no periodic embedding at this theta: no certified bounds.")
    return emb


def certified_norm(kernel: ParametricKernel, theta: np.ndarray, *, maxiter: int, tol: float) -> SpectralEstimate:
    r"""``lower <= ‖K(θ)‖₂ <= upper``, both guaranteed: Lanczos from the top mode, and the embedding certificate."""
    emb = _embedding(kernel, theta)
    upper = emb.upper_bound()
    v0 = _start(kernel, theta, emb, largest=True)
    big, _ = golub_kahan(kernel.op(theta), maxiter=maxiter, tol=tol, need_min=False, v0=v0)
    lower = min(big.lower, upper)
    converged = big.converged or upper <= lower * (1 + tol)
    return SpectralEstimate(big.value, lower, upper, False, "certified", big.iterations, converged, True)


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
