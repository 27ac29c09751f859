r"""Lipschitz-bounded layers: the projection onto :math:`\{\theta : \|K(\theta)\|_2 \le L\}`.

A layer :math:`x \mapsto \sigma(K(\theta)x + b)` with a 1-Lipschitz activation is
:math:`L`-Lipschitz when :math:`\|K(\theta)\|_2 \le L`. :func:`project_spectral_norm` maps any
:math:`\theta` of a family linear in its parameters to a nearby :math:`\theta'` whose norm is
*certified* to be at most :math:`L`:

1. **Clip** the per-frequency singular values of the periodic convolution (the kernel's own,
   or, for zero boundaries, the periodic embedding on the grid padded by the stencil) at
   :math:`L`: :math:`\hat K(\xi) = U\Sigma V^H \mapsto U\min(\Sigma, L)V^H`, the nearest
   operator of norm :math:`\le L` in the Frobenius norm among block-circulant ones;
2. **project back** onto the stencil support (and onto the family's parameters: the least-squares
   :math:`\theta` with :math:`P\theta \approx w` for a :class:`~structops.kernels.LinearReparam`
   such as ``SymmetricConv``), and repeat steps 1--2 a few times (alternating projections);
3. **rescale what is left over**: if the certified norm still exceeds :math:`L`, multiply by
   :math:`L/\|K\|`;
4. keep the result only if it is closer to :math:`\theta` than the plain rescaling
   :math:`\theta L/\|K(\theta)\|_{\rm cert}`; otherwise return the plain rescaling.

The certified norm is exact for a fast transform (periodic convolutions, DCT-II, Kronecker
products plus their round-off residual) and for dense LAPACK (plus a round-off allowance), and
is the periodic-embedding certificate of :class:`~structops.kernels.diagonalized.PeriodicEmbedding`
for zero-boundary convolutions.
"""

from __future__ import annotations

import numpy as np
import scipy.fft as sfft

from .._backend import blas_threads_for
from .._validation import check_number, check_positive_int
from ..kernels._base import ParametricKernel, as_kernel
from ._certified import block_tops, embedding_grid, half_symbol, norm_upper
from ._fastclip import applies, fast_projection
from ._routes import DENSE_LIMIT

__all__ = ["certified_norm_bound", "project_spectral_norm"]

#: Rounds of clipping and projecting back onto the stencil support.
CLIP_ROUNDS = 2


def certified_norm_bound(kernel: ParametricKernel, theta, *, dense_limit: int = DENSE_LIMIT) -> float:
    r"""A certified upper bound on :math:`\|K(\theta)\|_2` (exact up to round-off where the structure allows).

    Parameters
    ----------
    kernel : ParametricKernel
    theta : array_like, shape (p,)
    dense_limit : int, optional
        Largest ``max(kernel.shape)`` for dense LAPACK (default 2048).

    Returns
    -------
    float
        Through a unitary fast transform: :math:`\max_\xi \sigma_{\max}(B(\xi))` plus the
        transform's ``residual``; zero-boundary convolutions: the periodic-embedding
        certificate, or dense LAPACK (``numpy.linalg.norm(M, 2)`` times
        :math:`1 + 64\varepsilon`) when ``max(shape) <= dense_limit`` and that is smaller.

    Raises
    ------
    ValueError
        If no certified route applies (a large operator with neither a transform nor a periodic
        embedding: :func:`structops.solvers.spectral_norm` then gives an estimate only).

    Examples
    --------
    >>> import numpy as np, structops
    >>> bound = certified_norm_bound(structops.Conv(16, 3, bc="periodic"), np.array([-1.0, 2.0, -1.0]))
    >>> bool(4.0 <= bound <= 4.0 * (1 + 1e-12))  # the norm 4, plus the round-off allowance
    True
    """
    as_kernel(kernel)
    dense_limit = check_positive_int(dense_limit, "dense_limit", minimum=0)
    return _certified(kernel, kernel.validate_theta(theta), dense_limit)


def _certified(kernel: ParametricKernel, theta: np.ndarray, dense_limit: int) -> float:
    """:func:`certified_norm_bound` on a validated ``theta`` (:func:`~structops.solvers._certified.norm_upper`)."""
    return norm_upper(kernel, theta, dense_limit=dense_limit)[0]


def _stencil_maps(kernel: ParametricKernel):
    """``(conv, to_w, from_w)`` for families whose stencil is linear in ``theta``, else None.

    ``to_w(theta)`` is the full stencil ``(out, in, *stencil)`` of the :class:`Conv` ``conv``;
    ``from_w(w)`` the least-squares parameter (the kernel hook ``as_convolution``).
    """
    view = kernel.as_convolution()
    return None if view is None or view.solve is None else (view.conv, view.weights, view.solve)


def _clip_blocks(blocks: np.ndarray, bound: float) -> np.ndarray:
    r"""The blocks with their singular values clipped at ``bound``: :math:`B\,V\min(1, L/\Sigma)V^H`.

    From the eigenpairs of the smaller Gram block (``eigh`` is several times faster than an SVD
    of the batch); singular values below ``bound`` are left alone, so their accuracy does not matter.
    """
    if blocks.shape[-2:] == (1, 1):
        mag = np.abs(blocks)
        scale = np.where(mag > bound, bound / np.where(mag > 0, mag, 1), 1.0)
        return blocks * scale
    adjoint = np.conj(np.swapaxes(blocks, -1, -2))
    wide = blocks.shape[-2] < blocks.shape[-1]
    with blas_threads_for(max(blocks.shape[-2:])):  # small blocks: one BLAS thread (threads only spin)
        lam, V = np.linalg.eigh(blocks @ adjoint if wide else adjoint @ blocks)
        sigma = np.sqrt(np.maximum(lam, 0.0))
        scale = np.where(sigma > bound, bound / np.where(sigma > 0, sigma, 1.0), 1.0)
        proj = (V * scale[..., None, :]) @ np.conj(np.swapaxes(V, -1, -2))
        return proj @ blocks if wide else blocks @ proj


def _clip_on_grid(w: np.ndarray, grid: tuple[int, ...], bound: float, known: tuple | None = None) -> np.ndarray | None:
    """One round: clip the periodic convolution of stencil ``w`` on ``grid``, restrict back to the stencil support.

    Only the blocks whose largest singular value exceeds ``bound`` are clipped (the others are
    left as they are by the clip); ``known`` is ``(half, tops)`` of ``w`` on ``grid`` when the
    certificate already read them. None when no block exceeds ``bound``.
    """
    d = len(grid)
    stencil = w.shape[2:]
    half, tops = known if known is not None else (None, None)
    if half is None:
        half = half_symbol(w, grid)
    if tops is None:
        tops = block_tops(half)
    over = tops > bound
    if not np.any(over):
        return None
    half = np.array(half, copy=True)
    half[over] = _clip_blocks(half[over], bound)
    clipped = np.moveaxis(half, (-2, -1), (0, 1))  # (out, in, *half)
    cols = sfft.irfftn(clipped, s=grid, axes=tuple(range(2, 2 + d)))
    index = np.ix_(*(np.mod(np.arange(s) - s // 2, g) for s, g in zip(stencil, grid)))
    key = (slice(None), slice(None), *index)
    return cols[key]


def _clip_grid(kernel: ParametricKernel) -> tuple[int, ...] | None:
    """The periodic grid on which to clip: the kernel's own (periodic, stride 1), its embedding's (zero), else None."""
    maps = _stencil_maps(kernel)
    if maps is None:
        return None
    conv = maps[0]
    if not conv.geometry.plain:
        return None  # the stencil maps below assume the plain layout
    if conv.bc == "periodic" and all(st == 1 for st in conv.stride):
        return conv.grid
    if conv.bc in ("zero", "valid"):
        return embedding_grid(conv)
    return None


def _clipped(
    kernel: ParametricKernel, theta: np.ndarray, grid: tuple[int, ...], bound: float, known: tuple | None = None
) -> np.ndarray | None:
    """Steps 1--2 of the module notes on ``grid`` (the kernel's own, or its embedding's), or None.

    ``known``: the symbol and block norms of ``theta`` on ``grid`` (from the certificate), for the first round.
    """
    maps = _stencil_maps(kernel)
    if maps is None:
        return None
    conv, to_w, from_w = maps
    if any(s > g for s, g in zip(conv.stencil, grid)):
        return None
    phi = theta.astype(np.float64)
    for _ in range(CLIP_ROUNDS):
        w = _clip_on_grid(to_w(phi), grid, bound, known)
        known = None
        if w is None:  # every block is within the bound already
            break
        phi = from_w(w)
    phi = phi.astype(theta.dtype)
    return phi if kernel.is_feasible(phi) else None


def _shrink(kernel: ParametricKernel, phi: np.ndarray, bound: float, dense_limit: int) -> np.ndarray:
    """``phi`` rescaled until its certified norm is at most ``bound`` (step 3)."""
    eps = float(np.finfo(phi.dtype).eps)
    for attempt in range(40):  # the norm is homogeneous: one round, two with round-off
        norm = _certified(kernel, phi, dense_limit)
        if norm <= bound:
            return phi
        phi = (phi * (bound / norm) * (1 - 4 * eps * 2**attempt)).astype(phi.dtype)
    raise RuntimeError(f"could not rescale theta below the bound {bound!r} for {kernel!r}.")  # pragma: no cover


def project_spectral_norm(
    kernel: ParametricKernel, theta, bound: float, *, dense_limit: int = DENSE_LIMIT
) -> np.ndarray:
    r"""A parameter :math:`\theta'` near ``theta`` with :math:`\|K(\theta')\|_2 \le` ``bound``, certified.

    Parameters
    ----------
    kernel : ParametricKernel
        A family linear in its parameters with no offset (:math:`K(c\theta) = cK(\theta)`;
        ``kernel.linear`` and ``kernel.q is None``): ``Conv`` (any boundary, channels, stride),
        ``SymmetricConv``, ``MMatrixConv``, ``Dense``, ...
    theta : array_like, shape (p,)
        Parameters.
    bound : float
        The Lipschitz bound :math:`L > 0`.
    dense_limit : int, optional
        Largest ``max(kernel.shape)`` for dense LAPACK (default 2048).

    Returns
    -------
    numpy.ndarray, shape (p,), dtype of ``theta``
        :math:`\theta'` with

        * :math:`\|K(\theta')\|_2 \le L` certified (:func:`certified_norm_bound`: exact for
          periodic convolutions, the periodic-embedding certificate for zero boundaries);
        * :math:`\theta' = \theta` when :math:`\theta` already satisfies it;
        * :math:`\|\theta' - \theta\| \le \|\theta L/N - \theta\|` with :math:`N` the certified
          norm of :math:`K(\theta)`: never farther than the plain rescaling.

    Raises
    ------
    TypeError
        If ``kernel`` is not a kernel family or ``bound`` not a real number.
    ValueError
        If ``bound`` is not positive and finite, the family is not linear without offset, or
        no certified norm is available (see :func:`certified_norm_bound`).

    Notes
    -----
    See the module notes: per-frequency singular values clipped at :math:`L` on the kernel's
    periodic grid (``"fourier"`` route) or on the padded grid of its periodic embedding
    (zero boundaries), projected back onto the stencil support in a few alternating rounds, the
    rest removed by rescaling; the plain rescaling when that is closer (and for the DCT,
    Kronecker and dense routes, where clipping would not keep the family).

    Examples
    --------
    >>> import numpy as np, structops
    >>> k = structops.Conv((16, 16), (3, 3), bc="periodic")
    >>> theta = np.random.default_rng(0).standard_normal(9)
    >>> proj = project_spectral_norm(k, theta, 1.0)
    >>> bool(np.linalg.norm(k.matrix(proj), 2) <= 1.0)
    True
    >>> bool(np.linalg.norm(proj - theta) <= np.linalg.norm(theta / structops.solvers.spectral_norm(k, theta) - theta))
    True
    """
    as_kernel(kernel)
    bound = check_number(bound, "bound", minimum=0.0)
    if not bound > 0:
        raise ValueError(f"`bound` must be > 0, got {bound!r}.")
    if not kernel.linear or kernel.q is not None:
        raise ValueError(
            f"`project_spectral_norm` needs a family linear in theta with no offset (K(cθ) = cK(θ)), got "
            f"{kernel!r}: project the parameter of its inner linear family instead."
        )
    theta = kernel.validate_theta(theta)
    dense_limit = check_positive_int(dense_limit, "dense_limit", minimum=0)
    grid = _clip_grid(kernel)
    if applies(kernel, grid):  # a plain stride-1 Conv: the fast path (structops.solvers._fastclip)
        fast = fast_projection(kernel, theta, bound, grid, CLIP_ROUNDS)  # type: ignore[arg-type]
        if fast is not None:
            return fast
    seen: dict = {}
    norm = norm_upper(kernel, theta, dense_limit=dense_limit, symbol=seen)[0]
    if norm <= bound:
        return theta
    read = seen.get("symbol")
    known = (read.blocks, read.tops) if read is not None and read.periodic == grid else None
    clipped = None if grid is None else _clipped(kernel, theta, grid, bound, known)
    if clipped is not None:
        clipped = _shrink(kernel, clipped, bound, dense_limit)
        # the plain rescaling θ L/N is |1 - L/N| ‖θ‖ away: build it only when it is closer
        if np.linalg.norm(clipped - theta) <= abs(1 - bound / norm) * np.linalg.norm(theta):
            return clipped
    return _shrink(kernel, (theta * (bound / norm)).astype(theta.dtype), bound, dense_limit)
