r"""The projection of :func:`~structops.solvers.project_spectral_norm` at training speed, for plain convolutions.

A :class:`~structops.Conv` with one group, no dilation, stride 1 and zero, valid or periodic
boundaries is a restriction of the periodic convolution on a grid :math:`L` (its own, or the
periodic embedding's: :func:`~structops.solvers._certified.embedding_grid`), whose norm is the
largest :math:`\sigma_{\max}` of the per-frequency blocks

.. math::

    B(\xi) = \sum_x w_x\, e^{-2\pi i\,\xi\cdot x / L} \in \mathbb C^{m\times n},
    \qquad \xi \text{ on the half grid of } \texttt{rfftn}.

The projection (module notes of :mod:`structops.solvers.lipschitz`) reads these blocks three
times per call; inside a training loop most of them are already below the bound :math:`L_{\rm ip}`
and only a few exceed it. So here:

* **the blocks** come from one real matrix product of the twiddles (cached per grid and stencil,
  :func:`twiddles`) with the stencil, already in the ``(freq, m, n)`` layout: with a few taps
  this is cheaper than a padded FFT, and its error bound is elementary;
* **which blocks may exceed** :math:`t` is decided by one Cholesky factorisation of
  :math:`sI - \hat G(\xi)` per block (LAPACK ``potrf``, about a sixth of ``eigvalsh`` on
  16×16 blocks), which *proves* :math:`\sigma_{\max}(B(\xi)) \le t` when it runs to completion
  (:func:`within`; Rump 2006);
* only the blocks that fail get an eigendecomposition of their Gram (:func:`decompose`): their
  clipping :math:`B \mapsto BV\min(1, L/\Sigma)V^H` and their certified norms;
* the clipped blocks go back to the stencil support by the inverse transform restricted to the
  support and to those frequencies (:func:`stencil_change`);
* what is left above the bound is removed by a rescaling whose effect, round-off of the
  parameters' dtype included, is bounded a priori (:func:`rescaled`): no further read.

A wide layer (:math:`m < n`) is projected as its transpose (:math:`B^\top` has the singular values
of :math:`B`, and the clipping commutes with the transposition), so every Gram is :math:`n\times n`
with :math:`n \le m`.

**Error bounds** (:math:`u = 2^{-53}`, :math:`\gamma_j = ju/(1-ju)`, Higham, *Accuracy and
Stability of Numerical Algorithms*, §3.1 and Thm. 10.3; ``T`` taps, :math:`a_{oi} = \sum_x
|w_{oix}|`):

1. a computed twiddle factor is within :math:`\tau` = :data:`TWIDDLE_ULPS` :math:`\cdot u` of the
   exact one in its real and imaginary parts (its phase :math:`2\pi k/N` is formed from an exact
   integer :math:`k`: three roundings, then ``cos``/``sin``), so every entry of the computed
   block :math:`\hat B` is within :math:`\sqrt2(\gamma_T(1+\tau)+\tau)\,a_{oi}` of the exact one
   and :math:`\|\hat B(\xi) - B(\xi)\|_2 \le \beta = \sqrt2(\gamma_T(1+\tau)+\tau)\|a\|_F`;
2. :math:`\hat G = \mathrm{fl}(\hat B^H\hat B)` and the Hermitian matrix read from one of its
   triangles are within :math:`\gamma_{4m+8}\|\hat B(\xi)\|_F^2` of :math:`\hat B^H\hat B` in the
   2-norm (complex inner products of length :math:`m`);
3. if Cholesky of :math:`\tilde A = \mathrm{fl}(sI - \hat G)` (only the diagonal rounds, by
   :math:`u\tilde a_{ii}`) runs to completion, in any order of evaluation, then
   :math:`\hat R^H\hat R = \tilde A + \Delta` with :math:`|\Delta_{ij}| \le
   \alpha\sqrt{\tilde a_{ii}\tilde a_{jj}}`, :math:`\alpha = \gamma_{4n+8}/(1-\gamma_{4n+8})` (Demmel
   1989; Rump, *BIT* 46 (2006), Lemma 2.1, with the constant of complex arithmetic), so
   :math:`\lambda_{\max}(\hat G) \le s\,(1 + (\alpha n + u)(1 + u))` since :math:`\tilde a_{ii} \le s`;
4. hence :math:`\sigma_{\max}(B(\xi)) \le \sqrt{s(1 + (\alpha n + u)(1+u)) + \gamma_{4m+8}
   \|\hat B\|_F^2} + \beta`, and :func:`within` picks :math:`s` so that this is :math:`\le t`;
5. an eigenvalue of the Gram computed by LAPACK is within :math:`c\,n\,\varepsilon\,\|\hat G\|_2`
   of the exact one (``LAPACK_CONSTANT``, as in :mod:`structops.solvers._certified`);
6. rounding :math:`c\,w` to the parameters' dtype (relative :math:`\varepsilon_\theta` per entry,
   the float64 product included) changes every block by at most
   :math:`\varepsilon_\theta c\,\|a\|_F` in the 2-norm.

These bound the norm of the periodic convolution of the stencil as stored (a float32
:math:`\theta` converts exactly); :func:`~structops.solvers.certified_norm_bound` reads the same
blocks by FFT and eigenvalues with its own round-off allowance :math:`A`, so the projection aims
at :math:`t = L - 4A` (:func:`target`), which keeps that certificate :math:`\le L` too.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np
from scipy.linalg import lapack

from .._backend import blas_threads_for, have_numba
from ..kernels._base import ParametricKernel
from ..kernels.conv import Conv
from ._certified import FFT_CONSTANT, LAPACK_CONSTANT
from ._roundoff import U, cholesky_alpha, gamma

__all__ = ["MAX_TAPS", "MAX_TWIDDLES", "TWIDDLE_ULPS", "fast_projection", "twiddles", "within"]

#: The error of a computed twiddle factor, real and imaginary parts, in units of :math:`u` (generous).
TWIDDLE_ULPS = 64
#: Most taps for which the blocks come from a matrix product with the twiddles instead of the FFT.
MAX_TAPS = 64
#: Most twiddle factors (half-grid frequencies × taps) held for one grid and stencil.
MAX_TWIDDLES = 1 << 21
#: Blocks within ``1 - WATCH`` of the target are followed exactly through the rounds; the others by a bound.
WATCH = 2.0**-6

_EPS = 2 * U


class Twiddles(NamedTuple):
    r"""The half-grid transform on ``grid``: ``rows[f, 0 or 1, x]``, Re and Im of :math:`e^{-2\pi i\xi_f\cdot x/L}`."""

    grid: tuple[int, ...]
    stencil: tuple[int, ...]
    rows: np.ndarray  # (freq, 2, taps)
    weights: np.ndarray  # (freq,): the inverse transform's weight of each half-grid frequency, 1/N or 2/N


@functools.lru_cache(maxsize=16)
def twiddles(grid: tuple[int, ...], stencil: tuple[int, ...]) -> Twiddles:
    r"""The twiddles of ``rfftn``'s half grid on ``grid`` at the taps of ``stencil`` (tap ``j`` at offset ``j - s//2``).

    The phase :math:`2\pi k/N` (:math:`N = \prod L_a`) is formed from the exact integer
    :math:`k = \sum_a (\xi_a x_a \bmod L_a)\,N/L_a \bmod N`. ``weights`` are :math:`1/N` for the
    frequencies that stand for themselves (last index 0 or :math:`L_d/2`) and :math:`2/N` for those
    that also stand for their conjugates: :math:`w_x = \sum_\xi \mathrm{weight}_\xi
    \,\mathrm{Re}(B(\xi)\,e^{2\pi i\xi\cdot x/L})` inverts the transform of a real stencil.
    """
    d = len(grid)
    half = (*grid[:-1], grid[-1] // 2 + 1)
    freqs = np.indices(half).reshape(d, -1)
    offsets = np.indices(stencil).reshape(d, -1) - np.array([s // 2 for s in stencil])[:, None]
    total = int(np.prod(grid))
    phase = np.zeros((freqs.shape[1], offsets.shape[1]), dtype=np.int64)
    for a, g in enumerate(grid):
        phase += np.mod(np.outer(freqs[a], offsets[a]), g) * (total // g)
    angle = (2 * np.pi / total) * np.mod(phase, total)
    rows = np.ascontiguousarray(np.stack([np.cos(angle), -np.sin(angle)], axis=1))
    last = freqs[-1]
    weights = np.where((last == 0) | (2 * last == grid[-1]), 1.0, 2.0) / total
    rows.flags.writeable = weights.flags.writeable = False
    return Twiddles(tuple(grid), tuple(stencil), rows, weights)


def symbol(w: np.ndarray, tw: Twiddles, index: np.ndarray | None = None) -> np.ndarray:
    """The blocks ``(freq, m, n)``, complex, of the float64 stencil ``w`` ``(m, n, *stencil)`` (those of ``index``)."""
    m, n = w.shape[:2]
    rows = tw.rows if index is None else tw.rows[index]
    freq, _, taps = rows.shape
    parts = (rows.reshape(2 * freq, taps) @ w.reshape(m * n, taps).T).reshape(freq, 2, m, n)
    blocks = np.empty((freq, m, n), dtype=np.complex128)
    blocks.real = parts[:, 0]
    blocks.imag = parts[:, 1]
    return blocks


def symbol_error(w: np.ndarray) -> float:
    r""":math:`\beta`: a bound on :math:`\|\hat B(\xi) - B(\xi)\|_2` for every frequency (module notes, item 1)."""
    taps = int(np.prod(w.shape[2:]))
    a = np.abs(w).reshape(*w.shape[:2], taps).sum(axis=-1)
    tau = TWIDDLE_ULPS * U
    scale = np.sqrt(2.0) * (gamma(taps) * (1 + tau) + tau) * (1 + gamma(taps + a.size + 4))
    return float(scale * np.linalg.norm(a))


def _frobenius2(gram: np.ndarray, m: int) -> np.ndarray:
    r""":math:`\|\hat B(\xi)\|_F^2` per block, from the trace of the computed Gram (of ``m`` rows), rounded up."""
    n = gram.shape[-1]
    diagonal = np.arange(n)
    return gram[:, diagonal, diagonal].real.sum(axis=-1) * (1 + gamma(2 * m + n + 8))


def _gram(blocks: np.ndarray) -> np.ndarray:
    with blas_threads_for(blocks.shape[-2]):  # small blocks: one BLAS thread
        return np.conj(np.swapaxes(blocks, -1, -2)) @ blocks


def within(blocks: np.ndarray, t: float, beta: float) -> np.ndarray:
    r"""Which blocks are *proved* to have :math:`\sigma_{\max}(B(\xi)) \le t` (a boolean per block).

    ``blocks`` ``(freq, m, n)`` with :math:`m \ge n` are the computed :math:`\hat B`, within
    ``beta`` of the exact ones; a block passes when Cholesky of :math:`sI - \hat G(\xi)` runs to
    completion, with :math:`s` from items 2--4 of the module notes. A block may fail although it
    is within ``t`` (by the round-off margin, below :math:`10^{-12}` relative for 16 channels).
    """
    freq, m, n = blocks.shape
    target = t - beta
    alpha = cholesky_alpha(4 * n + 8)
    shifted = _gram(blocks)
    frob2 = float(_frobenius2(shifted, m).max(initial=0.0))
    s = (target * target * (1 - 4 * U) - gamma(4 * m + 8) * frob2) / (1 + (alpha * n + U) * (1 + U)) * (1 - 8 * U)
    if not (target > 0 and s > 0):
        return np.zeros(freq, dtype=bool)
    if have_numba() and n > 1:
        from ._numba_cholesky import factorises

        return factorises(shifted, s, np.empty(freq, dtype=bool))
    np.negative(shifted, out=shifted)
    diagonal = np.arange(n)
    shifted[:, diagonal, diagonal] += s
    if n == 1:
        return shifted[:, 0, 0].real > 0
    potrf = lapack.get_lapack_funcs("potrf", (shifted,))
    # shifted[b].T: Fortran order without a copy (the conjugate, which factorises exactly when shifted[b] does)
    return np.fromiter((potrf(a.T, lower=1, clean=0, overwrite_a=1)[1] == 0 for a in shifted), dtype=bool, count=freq)


class Decomposed(NamedTuple):
    r"""Eigenpairs of the Gram of some blocks and certified bounds on their :math:`\sigma_{\max}`."""

    values: np.ndarray  # (k, n), ascending
    vectors: np.ndarray  # (k, n, n)
    upper: np.ndarray  # (k,)


def decompose(blocks: np.ndarray, beta: float) -> Decomposed:
    r"""``eigh`` of :math:`\hat B^H\hat B` per block, and bounds on :math:`\sigma_{\max}(B(\xi))` (items 1, 2, 5)."""
    m, n = blocks.shape[-2:]
    gram = _gram(blocks)
    with blas_threads_for(n):
        values, vectors = np.linalg.eigh(gram)
    size = np.abs(values).max(axis=-1, initial=0.0)
    top2 = values[:, -1] if n else np.zeros(len(blocks))
    top2 = top2 + LAPACK_CONSTANT * n * _EPS * size * (1 + 4 * U) + gamma(4 * m + 8) * _frobenius2(gram, m)
    upper = np.sqrt(np.maximum(top2, 0.0)) * (1 + 4 * U) + beta
    return Decomposed(values, vectors, upper)


def clip_change(blocks: np.ndarray, parts: Decomposed, bound: float) -> np.ndarray:
    r"""The change :math:`BV(\min(1, L/\Sigma) - 1)V^H` that clips the singular values of the blocks at ``bound``."""
    sigma = np.sqrt(np.maximum(parts.values, 0.0))
    scale = np.where(sigma > bound, bound / np.where(sigma > 0, sigma, 1.0), 1.0) - 1.0
    V = parts.vectors
    with blas_threads_for(blocks.shape[-2]):
        return blocks @ ((V * scale[:, None, :]) @ np.conj(np.swapaxes(V, -1, -2)))


def stencil_change(change: np.ndarray, index: np.ndarray, tw: Twiddles) -> np.ndarray:
    r"""The stencil ``(m, n, *stencil)`` of a change of the blocks ``index``, restricted to the stencil's support.

    :math:`\Delta w_x = \sum_{\xi} \mathrm{weight}_\xi\,\mathrm{Re}(\Delta B(\xi) e^{2\pi i\xi\cdot x/L})`
    over the changed frequencies only: what ``irfftn`` of the changed half symbol gives at the taps.
    """
    k, m, n = change.shape
    taps = tw.rows.shape[-1]
    parts = np.stack([change.real, change.imag], axis=1) * tw.weights[index][:, None, None, None]
    delta = tw.rows[index].reshape(2 * k, taps).T @ parts.reshape(2 * k, m * n)
    return delta.T.reshape(m, n, *tw.stencil)


def rescaled(w: np.ndarray, norm: float, t: float, dtype) -> np.ndarray:
    r"""``w`` times :math:`c` in ``dtype`` (as float64) with every block proved :math:`\le t` (item 6).

    ``norm`` bounds :math:`\max_\xi \|B(\xi)\|_2` of ``w``; :math:`c\,(\mathrm{norm} +
    \varepsilon_\theta\|a\|_F) \le t`.
    """
    taps = int(np.prod(w.shape[2:]))
    a = float(np.linalg.norm(np.abs(w).reshape(*w.shape[:2], taps).sum(axis=-1))) * (1 + gamma(taps + w.size))
    c = t / (norm + float(np.finfo(dtype).eps) * a) * (1 - 8 * U)
    return (w * c).astype(dtype).astype(np.float64)


def room(w: np.ndarray, t: float) -> float:
    r"""How far below ``t`` (relative) a block must be for :func:`within` to prove it within ``t``.

    Four times the test's round-off margin (items 1--4, with :math:`\|\hat B\|_F^2 \le n t^2`): a
    layer rescaled this far inside is found within at once when it is projected again.
    """
    m, n = w.shape[:2]
    alpha = cholesky_alpha(4 * n + 8)
    return 4 * ((alpha * n + U) * (1 + U) + gamma(4 * m + 8) * n + 16 * U + symbol_error(w) / t)


def target(w: np.ndarray, grid: tuple[int, ...], bound: float) -> float:
    r""":math:`t = L - 4A`, :math:`A` the round-off allowance of the certificate of ``w`` at norm ``bound`` (notes)."""
    points = float(np.prod(grid))
    frobenius = np.sqrt(points) * float(np.linalg.norm(w)) * (1 + 1e-6)
    allowance = FFT_CONSTANT * np.log2(max(points, 2.0)) * _EPS * frobenius
    allowance += LAPACK_CONSTANT * (min(w.shape[:2]) + 2) * _EPS * bound
    return bound - 4 * allowance


def change_bound(delta: np.ndarray) -> float:
    r"""A bound on :math:`\max_\xi \|\Delta B(\xi)\|_2` for the stencil change ``delta`` (as computed by a subtraction).

    :math:`|\Delta B(\xi)_{oi}| \le a_{oi} = \sum_x |\Delta w_{oix}|` entrywise, so
    :math:`\|\Delta B(\xi)\|_2 \le \|a\|_2 \le \min(\|a\|_F, \sqrt{\|a\|_1\|a\|_\infty})`.
    """
    taps = int(np.prod(delta.shape[2:]))
    a = np.abs(delta).reshape(*delta.shape[:2], taps).sum(axis=-1)
    bound = min(float(np.linalg.norm(a)), float(np.sqrt(a.sum(axis=0).max() * a.sum(axis=1).max())))
    return bound * (1 + gamma(taps + a.size + 8))


class _Watch(NamedTuple):
    """The blocks followed exactly, the eigenpairs of those not proved within ``t``, and a bound on all the others."""

    followed: np.ndarray  # half-grid frequencies followed
    blocks: np.ndarray  # their blocks
    bad: np.ndarray  # positions in ``index`` of the blocks not proved within t
    parts: Decomposed  # of blocks[bad]
    rest: float  # every block not followed has sigma_max <= rest
    t: float

    @property
    def norm(self) -> float:
        """A certified bound on the norm of the periodic convolution: every block is within it."""
        within_t = self.t if self.bad.size < self.followed.size else 0.0
        return max(self.rest, within_t, float(self.parts.upper.max(initial=0.0)))


def _follow(w: np.ndarray, tw: Twiddles, index: np.ndarray, rest: float, t: float, blocks=None, beta=None) -> _Watch:
    """Follow the blocks ``index`` of ``w`` (``rest`` bounds the others: caller's proof); decompose those over ``t``."""
    blocks = symbol(w, tw, index) if blocks is None else blocks
    beta = symbol_error(w) if beta is None else beta
    bad = np.flatnonzero(~within(blocks, t, beta))
    return _Watch(index, blocks, bad, decompose(blocks[bad], beta), rest, t)


def _read(w: np.ndarray, tw: Twiddles, low: float, t: float) -> _Watch:
    """Read every block of ``w``: follow those not proved within ``low`` (:func:`within`)."""
    blocks = symbol(w, tw)
    beta = symbol_error(w)
    index = np.flatnonzero(~within(blocks, low, beta))
    return _follow(w, tw, index, low, t, blocks[index], beta)


def _tall(conv: Conv):
    """``(to, back)``: the stencil of ``theta`` as float64 ``(m, n, *stencil)`` with ``m >= n``, and the way back."""
    shape = conv.theta_shape
    wide = shape[0] < shape[1]

    def to(theta: np.ndarray) -> np.ndarray:
        w = theta.astype(np.float64).reshape(shape)
        return np.ascontiguousarray(np.swapaxes(w, 0, 1)) if wide else w

    def back(w: np.ndarray) -> np.ndarray:
        return (np.swapaxes(w, 0, 1) if wide else w).reshape(-1)

    return to, back


def applies(kernel: ParametricKernel, grid: tuple[int, ...] | None) -> bool:
    """Whether :func:`fast_projection` takes ``kernel`` on ``grid``: a plain stride-1 ``Conv`` (θ is the stencil)."""
    view = kernel.as_convolution()
    if grid is None or view is None or view.conv is not kernel:
        return False
    geo = view.conv.geometry
    if not geo.plain or any(st != 1 for st in geo.stride) or any(s > g for s, g in zip(geo.stencil, grid)):
        return False
    taps = int(np.prod(geo.stencil))
    freq = int(np.prod(grid[:-1])) * (grid[-1] // 2 + 1)
    return taps <= MAX_TAPS and freq * taps <= MAX_TWIDDLES and min(geo.cout, geo.cin) > 0


def fast_projection(
    kernel: ParametricKernel, theta: np.ndarray, bound: float, grid: tuple[int, ...], rounds: int
) -> np.ndarray | None:
    r""":func:`~structops.solvers.project_spectral_norm` of a plain convolution (:func:`applies`), or None.

    ``theta`` itself when every block is proved within the bound; else ``rounds`` of clipping
    the blocks above ``bound`` and restricting to the support, then :func:`rescaled`, or the plain
    rescaling of ``theta`` when that is closer. None when the certified norm of ``theta`` is
    within ``bound`` by less than the round-off margin (the caller decides with the certificate).
    """
    conv = kernel.as_convolution().conv  # type: ignore[union-attr]  # applies(kernel, grid): kernel itself
    to, back = _tall(conv)
    tw = twiddles(grid, tuple(conv.geometry.stencil))
    w0 = to(theta)
    t = target(w0, grid, bound)
    low = t * (1 - WATCH)
    first = _read(w0, tw, low, t)
    if first.norm <= t:
        return theta
    if first.norm <= bound:
        return None
    w, state = w0, first
    for _ in range(rounds):
        over = state.parts.values[:, -1] > bound * bound
        if not np.any(over):
            break
        change = clip_change(state.blocks[state.bad[over]], Decomposed(*(x[over] for x in state.parts)), bound)
        new = (w + stencil_change(change, state.followed[state.bad[over]], tw)).astype(theta.dtype).astype(np.float64)
        rest = state.rest + change_bound(new - w)  # the blocks not followed moved by at most this
        w = new
        state = _follow(w, tw, state.followed, rest, t) if rest <= t else _read(w, tw, low, t)
    if state.norm > t:
        w = rescaled(w, state.norm, t * (1 - room(w, t)), theta.dtype)
    clipped = back(w).astype(theta.dtype)
    # the plain rescaling θ t/N is about |1 - L/N| ‖θ‖ away: build it only when it is closer
    distance = abs(1 - bound / first.norm) * np.linalg.norm(theta)
    if kernel.is_feasible(clipped) and np.linalg.norm(clipped - theta) <= distance:
        return clipped
    return back(rescaled(w0, first.norm, t * (1 - room(w0, t)), theta.dtype)).astype(theta.dtype)
