r"""Operators diagonalised by a fast transform: one interface for every spectral solver.

A family whose operator is diagonalised by a fast transform says so by returning, from
:meth:`ParametricKernel.diagonalize <structops.kernels.ParametricKernel.diagonalize>`, a
:class:`Diagonalized` operator

.. math::
    K = U\,\operatorname{blkdiag}_\xi\big(B(\xi)\big)\,V^H ,

where :math:`U` and :math:`V` act on each channel over the grid and the blocks :math:`B(\xi)`
are small ``out_channels × in_channels`` matrices, one per frequency :math:`\xi`. Three
implementations:

* :class:`FourierMultiplier` -- :math:`U = V = F^{-1}` (the DFT over the grid): periodic
  convolutions of any channel counts (block circulant with circulant blocks);
* :class:`CosineMultiplier` -- :math:`U = V = C^\top` (DCT-II) or
  :math:`U = B^{-1}C,\ V = BC` (DCT-I with its edge weights :math:`B`): doubly symmetric
  stencils with mirror boundaries;
* :class:`KroneckerMultiplier` -- :math:`U = \otimes_a U_a`, :math:`V = \otimes_a V_a` from the
  SVDs of 1-D factors :math:`K_a = U_a S_a V_a^\top`: one-channel convolutions whose stencil is
  an outer product, with any per-axis boundary.

Every function of :math:`K` that the blocks determine is then a multiplier of the same kind,
built by :meth:`Diagonalized.with_blocks <structops.solvers.Diagonalized.with_blocks>`:

* ``unitary`` (:math:`U`, :math:`V` unitary): the singular values of :math:`K` are those of the
  blocks, :math:`K^+ = V B^+ U^H` and :math:`(K^H K + \alpha I)^{-1} = V (B^H B + \alpha I)^{-1} V^H`;
* ``similarity`` (:math:`U = V`, up to a fixed diagonal scaling): the eigenvalues of :math:`K`
  are those of the blocks and :math:`(K + \alpha I)^{-1} = U (B + \alpha I)^{-1} V^H`.

This module sits at the bottom of :mod:`structops.kernels` (it imports only
:mod:`structops.kernels.operators`), so kernel families and every solver can import it without a cycle.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import scipy.fft as sfft

from .._backend import blas_threads_for
from .operators import ColumnBatched, real_apply

if TYPE_CHECKING:
    from .conv.conv import Conv

# The operator classes' one public import path is :mod:`structops.solvers`; this module exports the helpers.
__all__ = ["TRANSFORMS", "ConvStencil", "block_svdvals", "full_spectrum", "half_spectrum"]

#: The built-in transforms (a new :class:`Diagonalized` subclass declares its own label).
TRANSFORMS = ("fft", "dct1", "dct2", "kron")


def block_svdvals(blocks: np.ndarray) -> np.ndarray:
    """Singular values of every ``(out, in)`` block, shape ``(*freq, min(out, in))``, descending per block."""
    if blocks.shape[-2:] == (1, 1):
        return np.abs(blocks[..., 0, :])
    return np.linalg.svd(blocks, compute_uv=False)


def _adjoint_blocks(blocks: np.ndarray) -> np.ndarray:
    return np.conj(np.swapaxes(blocks, -1, -2))


def _real_dtype(blocks: np.ndarray) -> np.dtype:
    return np.dtype(np.finfo(blocks.dtype).dtype)


class Diagonalized(ColumnBatched, abc.ABC):
    r"""Abstract operator :math:`K = U\,\operatorname{blkdiag}_\xi(B(\xi))\,V^H` (a pylops ``LinearOperator``).

    Attributes
    ----------
    transform : {"fft", "dct1", "dct2", "kron"}
        The transform pair :math:`(U, V)`.
    grid : tuple of int
        Shape of one channel of an example.
    blocks : numpy.ndarray, shape ``(*freq_shape, out_channels, in_channels)``
        The blocks :math:`B(\xi)`; complex for ``"fft"`` (on the ``rfftn`` half grid), real otherwise.
    unitary : bool
        :math:`U` and :math:`V` are unitary: the singular values of :math:`K` are the union of
        those of the blocks.
    similarity : bool
        :math:`U = V` (a similarity): the eigenvalues of :math:`K` are those of the blocks.
    residual : float
        A certified bound on :math:`\|K(\theta) - K\|_2` between the kernel's operator and this
        one (0 when they are the same; see :class:`KroneckerMultiplier`): by Weyl's inequality
        each singular value of :math:`K(\theta)` lies within ``residual`` of this operator's.
    route_name : str
        The name :func:`structops.solvers.route` gives the exact route through this transform
        (``"fourier"``, ``"cosine"``, ``"kronecker"``; a new transform picks its own).

    Notes
    -----
    Examples are ``(in_channels, *grid)`` flattened in C-order, as for :class:`structops.Conv`.
    Subclasses implement :meth:`with_blocks`, :meth:`same_basis` and the products; the spectra
    (:meth:`singular_values`, :meth:`eigenvalues`, :meth:`extremes`) follow from the blocks.
    What depends on the transform itself lives on the subclass: :meth:`coefficients` (for
    :func:`structops.solvers.choose_alpha`'s exact route), :meth:`multiplicity` (blocks that stand
    for several frequencies), :attr:`periodic_grid` (for :func:`structops.solvers.project_spectral_norm`).
    Adding a transform is one subclass; see ``docs/contract.md``.
    """

    transform: str
    route_name: str
    grid: tuple[int, ...]
    blocks: np.ndarray
    unitary: bool
    similarity: bool
    residual: float = 0.0

    @abc.abstractmethod
    def with_blocks(
        self, blocks: np.ndarray, *, swap: bool = False, normal: bool = False, name: str | None = None
    ) -> Diagonalized:
        r"""The operator :math:`U\,\operatorname{blkdiag}(B')\,V^H` of the same transform, with new blocks.

        Parameters
        ----------
        blocks : numpy.ndarray, shape ``(*freq_shape, r, c)``
            The new blocks :math:`B'(\xi)`.
        swap : bool, optional
            Build :math:`V\,\operatorname{blkdiag}(B')\,U^H` instead: the shape of an inverse or
            pseudo-inverse :math:`K^+ = V B^+ U^H` (blocks then ``(in, out)``).
        normal : bool, optional
            Build :math:`V\,\operatorname{blkdiag}(B')\,V^H`: the shape of a function of
            :math:`K^H K` (needs ``unitary``).
        name : str, optional
            Name shown by pylops.

        Raises
        ------
        ValueError
            If ``blocks`` has the wrong frequency shape, or ``normal`` is asked of a non-unitary transform.
        """

    @abc.abstractmethod
    def same_basis(self, other: Diagonalized) -> bool:
        """Whether ``other`` has the same transform, grid and factors (its blocks combine with these)."""

    @property
    def has_eigenvalues(self) -> bool:
        """Whether :meth:`eigenvalues` is available (square blocks and a similarity transform)."""
        return self.similarity and self.blocks.shape[-1] == self.blocks.shape[-2]

    def multiplicity(self) -> np.ndarray:
        """How many frequencies of the full grid each stored block stands for, shape ``freq_shape`` (1 each here)."""
        return np.ones(self.blocks.shape[:-2])

    def coefficients(self, b: np.ndarray) -> np.ndarray:
        r"""The coefficients :math:`U^H b` of a one-channel ``b`` (shape ``grid`` or flat), shape ``freq_shape``.

        With :meth:`multiplicity`, :math:`\|b\|^2 = \sum_i m_i |(U^H b)_i|^2` (a unitary :math:`U`):
        the data of :func:`structops.solvers.choose_alpha`'s exact route.

        Raises
        ------
        ValueError
            If the transform does not provide them (here: a subclass must override this), or is not unitary.
        """
        raise ValueError(f"the coefficients of b need a unitary transform that provides them; {self!r} does not.")

    @property
    def periodic_grid(self) -> tuple[int, ...] | None:
        """The grid when :math:`K` is a periodic convolution (blocks = Fourier symbol), else None."""
        return None

    def extremes(self) -> tuple[float, float]:
        """``(σ_max, σ_min)`` over every block of a unitary transform (``(0, 0)`` without blocks)."""
        sv = self.block_singular_values()
        if not sv.size:
            return 0.0, 0.0
        return float(sv.max()), float(sv.min())

    def block_singular_values(self) -> np.ndarray:
        """Singular values per stored block, shape ``(*freq_shape, min(out, in))`` (needs ``unitary``)."""
        if not self.unitary:
            raise ValueError(
                f"the singular values of {self!r} are not those of its blocks: transform {self.transform!r} is "
                "not unitary."
            )
        return block_svdvals(self.blocks)

    def singular_values(self) -> np.ndarray:
        r"""Every singular value of :math:`K`, descending, flat: ``min(out, in) · prod(grid)`` of them.

        Raises
        ------
        ValueError
            If the transform is not unitary (``"dct1"``: :math:`K = B^{-1}S B` is not normal).
        """
        sv = self.block_singular_values()
        count = self.multiplicity().astype(np.int64)
        flat = np.repeat(sv.reshape(-1, sv.shape[-1]), count.ravel(), axis=0)
        return np.sort(flat.reshape(-1))[::-1]

    def eigenvalues(self) -> np.ndarray:
        r"""Every eigenvalue of a square :math:`K`: shape ``grid`` for one channel, else ``(*grid, c)``.

        Raises
        ------
        ValueError
            If the transform is not a similarity or the blocks are not square.
        """
        if not self.has_eigenvalues:
            raise ValueError(
                f"the eigenvalues of {self!r} are not those of its blocks: transform {self.transform!r} "
                f"(similarity={self.similarity}) with blocks {self.blocks.shape[-2:]}."
            )
        blocks = self.full_blocks()
        if blocks.shape[-2:] == (1, 1):
            return blocks[..., 0, 0]
        return np.linalg.eigvals(blocks)

    def dot(self, x):
        r"""``A @ x``, also for a stack of examples: one block product, the same as looping over them.

        Besides pylops' conventions (and a one-channel example given as its grid alone, see
        :meth:`~structops.kernels.operators.ColumnBatched.dot`), ``x`` may be a stack
        ``(m, *dims)`` of examples, or for one input channel ``(m, *grid)`` with a grid of two or
        more axes (``m`` images ``(m, H, W)``); the result is ``(m, *dimsd)``, or ``(m, *out_grid)``
        for the latter (the output grid alone when there is one output channel). The ``m``
        examples are the columns of one ``matmat``: ``inverse(kernel, theta) @ B`` solves for
        every image of ``B`` with one transform of the stack.
        """
        out = self._stack_output(x.shape) if isinstance(x, np.ndarray) else None
        if out is None:
            return super().dot(x)
        m = x.shape[0]
        Y = np.asarray(super().dot(x.reshape(m, -1).T))
        return np.ascontiguousarray(Y.T).reshape(m, *out)

    def _stack_output(self, shape: tuple[int, ...]) -> tuple[int, ...] | None:
        """The shape of one result when ``shape`` is a stack of examples (see :meth:`dot`), else None."""
        dims, dimsd = tuple(self.dims), tuple(self.dimsd)
        if len(shape) == len(dims) + 1 and tuple(shape[1:]) == dims:
            return dimsd
        one_channel = len(dims) >= 3 and dims[0] == 1 and tuple(shape) != dims
        if one_channel and len(shape) == len(dims) and tuple(shape[1:]) == dims[1:]:
            return dimsd[1:] if dimsd[0] == 1 else dimsd
        return None

    def full_blocks(self) -> np.ndarray:
        r"""The blocks on every frequency of the grid, shape ``(*grid, out, in)`` (the stored ones here).

        For :class:`FourierMultiplier` the per-frequency blocks :math:`\hat K(\xi)` of the
        periodic convolution on the whole ``fftn`` grid (the stored half and its mirror).
        """
        return self.blocks

    def _check_freq_shape(self, blocks: np.ndarray) -> np.ndarray:
        blocks = np.asarray(blocks)
        if blocks.ndim != self.blocks.ndim or blocks.shape[:-2] != self.blocks.shape[:-2]:
            raise ValueError(
                f"`blocks` must have shape {(*self.blocks.shape[:-2], 'r', 'c')} (one block per frequency of "
                f"{self!r}), got {blocks.shape}."
            )
        return blocks

    def __repr__(self) -> str:
        out, inp = self.blocks.shape[-2:]
        return f"{type(self).__name__}(transform={self.transform!r}, grid={self.grid}, blocks={out}×{inp})"


# --------------------------------------------------------------------- Fourier
def half_spectrum(full: np.ndarray, ndim: int) -> np.ndarray:
    """Restrict a full spectrum ``(*grid, ...)`` to the ``rfftn`` half (last grid axis cut to ``g//2 + 1``)."""
    g = full.shape[ndim - 1]
    index = (slice(None),) * (ndim - 1) + (slice(0, g // 2 + 1),)
    return np.ascontiguousarray(full[index])


def full_spectrum(half: np.ndarray, grid: tuple[int, ...]) -> np.ndarray:
    r"""The full spectrum ``(*grid, ...)`` of a real operator from its ``rfftn`` half.

    The missing frequencies follow from :math:`B(-\xi) = \overline{B(\xi)}`.
    """
    d, n = len(grid), grid[-1]
    h = half.shape[d - 1]
    full = np.empty((*grid, *half.shape[d:]), dtype=half.dtype)
    full[(slice(None),) * (d - 1) + (slice(0, h),)] = half
    if n > h:
        mirror = [np.mod(-np.arange(g), g) for g in grid[:-1]] + [n - np.arange(h, n)]
        full[(slice(None),) * (d - 1) + (slice(h, n),)] = np.conj(half[np.ix_(*mirror)])
    return full


class FourierMultiplier(Diagonalized):
    r"""Real BCCB operator :math:`x \mapsto F^{-1}\big(B(\xi)\hat x(\xi)\big)_\xi` from its per-frequency blocks.

    Parameters
    ----------
    blocks : numpy.ndarray, complex, shape ``(*half, out_channels, in_channels)``
        The blocks :math:`B(\xi)` on the ``rfftn`` half grid (``half`` is ``grid`` with the
        last axis cut to ``grid[-1] // 2 + 1``); they must satisfy
        :math:`B(-\xi) = \overline{B(\xi)}` so that the operator is real.
    grid : tuple of int
        Shape of one channel of an example.
    dtype : numpy dtype
        Real dtype the operator advertises (float32 or float64); products run in the dtype
        of the input and of the blocks (float32 data stays float32).
    name : str, optional
        Name shown by pylops.
    full : numpy.ndarray, optional
        The blocks on the whole grid, shape ``(*grid, out_channels, in_channels)``, when at
        hand (:meth:`~structops.solvers.Diagonalized.eigenvalues` then returns them as they are
        instead of mirroring the half).

    Notes
    -----
    ``transform = "fft"``, unitary and a similarity (:math:`U = V = F^{-1}`, unitary DFT).
    Forward and adjoint:

    .. math::
        A x = \operatorname{irfftn}\big(B(\xi)\,\operatorname{rfftn}(x)(\xi)\big), \qquad
        A^\top y = \operatorname{irfftn}\big(B(\xi)^H\,\operatorname{rfftn}(y)(\xi)\big),

    i.e. the adjoint is the multiplier of the conjugate-transposed blocks (for one channel:
    the conjugate spectrum). Products with ``k`` columns cost
    :math:`O(k\,(c_{in} + c_{out})\,N\log N + k\,c_{in} c_{out} N)`. The half grid stores each
    frequency :math:`\xi` with :math:`0 < \xi_{-1} < n_{-1}/2` for itself and its mirror
    :math:`-\xi`; :meth:`~structops.solvers.Diagonalized.singular_values` counts it twice.
    """

    transform = "fft"
    route_name = "fourier"
    unitary = True
    similarity = True

    def __init__(
        self,
        blocks: np.ndarray,
        grid: tuple[int, ...],
        *,
        dtype,
        name: str | None = None,
        full: np.ndarray | None = None,
    ) -> None:
        self.blocks = blocks
        self.full = full
        self.grid = tuple(int(g) for g in grid)
        cout, cin = blocks.shape[-2:]
        self._axes = tuple(range(1, 1 + len(self.grid)))
        super().__init__(dtype=np.dtype(dtype), dims=(cin, *self.grid), dimsd=(cout, *self.grid), name=name)

    def _cols(self, X: np.ndarray, adjoint: bool) -> np.ndarray:
        """Apply ``A`` (or ``A^T``) to the columns of a real 2-D ``X`` of shape ``(rows, k)``."""
        cout, cin = self.blocks.shape[-2:]
        if adjoint:
            cout, cin = cin, cout
        k = X.shape[1]
        Xf = sfft.rfftn(X.reshape(cin, *self.grid, k), axes=self._axes)  # (cin, *half, k)
        if self.blocks.shape[-2:] == (1, 1):
            b = self.blocks[..., 0, 0]
            Yf = Xf * (np.conj(b) if adjoint else b)[None, ..., None]
        elif adjoint:
            # B^H z = conj(B^T conj(z)): no conjugated copy of the blocks
            Yf = np.conj(np.swapaxes(self.blocks, -1, -2) @ np.conj(np.moveaxis(Xf, 0, -2)))
            Yf = np.moveaxis(Yf, -2, 0)
        else:
            Yf = np.moveaxis(self.blocks @ np.moveaxis(Xf, 0, -2), -2, 0)  # (cout, *half, k)
        Y = sfft.irfftn(Yf, s=self.grid, axes=self._axes)
        return Y.reshape(cout * int(np.prod(self.grid)), k)

    def _columns(self, X, adjoint):
        return real_apply(lambda z: self._cols(z, adjoint), X, self.dtype)

    def _adjoint(self) -> FourierMultiplier:
        name = None if self.name is None else f"({self.name})ᵀ"
        return FourierMultiplier(_adjoint_blocks(self.blocks), self.grid, dtype=self.dtype, name=name)

    _transpose = _adjoint

    def with_blocks(self, blocks, *, swap=False, normal=False, name=None) -> FourierMultiplier:
        """See :meth:`Diagonalized.with_blocks`; :math:`U = V`, so ``swap`` and ``normal`` change nothing."""
        blocks = self._check_freq_shape(blocks)
        return FourierMultiplier(blocks, self.grid, dtype=_real_dtype(blocks), name=name)

    def same_basis(self, other: Diagonalized) -> bool:
        """Same transform (``"fft"``) on the same grid."""
        return isinstance(other, FourierMultiplier) and other.grid == self.grid

    def multiplicity(self) -> np.ndarray:
        r"""2 for a frequency of the ``rfftn`` half grid that also stands for its mirror :math:`-\xi`, else 1."""
        n, h = self.grid[-1], self.blocks.shape[len(self.grid) - 1]
        count = np.full(h, 2.0)
        count[0] = 1.0
        if n % 2 == 0:
            count[-1] = 1.0
        return np.broadcast_to(count, self.blocks.shape[: len(self.grid)])

    def coefficients(self, b: np.ndarray) -> np.ndarray:
        """``rfftn(b, norm="ortho")`` on the half grid (see :meth:`Diagonalized.coefficients`)."""
        return sfft.rfftn(np.reshape(b, self.grid), norm="ortho")

    @property
    def periodic_grid(self) -> tuple[int, ...]:
        """The grid: the blocks are the Fourier symbol of a periodic convolution on it."""
        return self.grid

    def full_blocks(self) -> np.ndarray:
        r"""The blocks on the whole ``fftn`` grid, shape ``(*grid, out, in)``: ``full``, or the half and its mirror.

        :math:`\widehat{(Kx)}_o(\xi) = \sum_c B_{oc}(\xi)\hat x_c(\xi)` for every frequency
        :math:`\xi` of ``numpy.fft.fftn`` over the grid (the mirrored ones are :math:`\overline{B(-\xi)}`).
        """
        return full_spectrum(self.blocks, self.grid) if self.full is None else self.full

    @classmethod
    def from_full(cls, full: np.ndarray, *, dtype, name: str | None = "K(θ)") -> FourierMultiplier:
        """The multiplier of blocks given on the whole grid, shape ``(*grid, out, in)`` (kept as ``full``)."""
        grid = full.shape[:-2]
        return cls(half_spectrum(full, len(grid)), grid, dtype=dtype, name=name, full=full)


# ---------------------------------------------------------------------- cosine
DCT_TYPES = (1, 2)


def cosine_symbol(stencil: np.ndarray, grid: tuple[int, ...], dct_type: int) -> np.ndarray:
    r"""Eigenvalues :math:`\lambda_k` of a doubly symmetric stencil under mirror boundaries.

    Parameters
    ----------
    stencil : numpy.ndarray, shape ``stencil`` (odd sizes)
        The full stencil :math:`w`, centred (tap :math:`j` at offset :math:`j - s /\!/ 2`),
        mirror symmetric about every axis (not checked).
    grid : tuple of int
        The grid :math:`(n_1, \dots, n_d)`.
    dct_type : {1, 2}
        1 for ``bc="reflect"`` (DCT-I), 2 for ``bc="symmetric"`` (DCT-II).

    Returns
    -------
    numpy.ndarray, shape ``grid``, real, dtype of ``stencil``
        :math:`\lambda_k = \sum_o w_o \prod_a \cos(\pi k_a o_a / L_a)` (:math:`L_a = n_a - 1` for
        DCT-I, :math:`n_a` for DCT-II), index ``k`` the frequency of ``scipy.fft.dctn`` (an axis
        of size 1 under DCT-I: :math:`\cos(0) = 1`).

    Examples
    --------
    The 1-D Laplacian with a half-sample mirror: :math:`2 - 2\cos(\pi k/n)`.

    >>> cosine_symbol(np.array([-1.0, 2.0, -1.0]), (4,), 2).round(4)
    array([0.    , 0.5858, 2.    , 3.4142])
    """
    lam = np.asarray(stencil)
    for axis, n in enumerate(grid):
        s = lam.shape[axis]
        length = n - 1 if dct_type == 1 else n
        offsets = np.arange(s) - s // 2
        if length == 0:
            cos = np.ones((n, s))
        else:
            cos = np.cos(np.pi * np.outer(np.arange(n), offsets) / length)
        lam = np.moveaxis(np.tensordot(lam, cos.astype(lam.dtype), axes=([axis], [1])), -1, axis)
    return np.ascontiguousarray(lam)


def _edge_weights(grid: tuple[int, ...], dct_type: int, dtype) -> np.ndarray | None:
    """The diagonal :math:`B` of DCT-I (``1/√2`` on the first and last sample of each axis), None for DCT-II."""
    if dct_type != 1:
        return None
    b = np.ones(grid, dtype=dtype)
    for axis, n in enumerate(grid):
        if n > 1:
            edge = [slice(None)] * len(grid)
            for i in (0, n - 1):
                edge[axis] = slice(i, i + 1)
                b[tuple(edge)] /= np.sqrt(2.0)
    return b


class CosineMultiplier(Diagonalized):
    r"""Real operator diagonalised by an orthonormal DCT: :math:`x \mapsto B^{-1} C^\top(\mu \odot C B x)`.

    Parameters
    ----------
    multiplier : numpy.ndarray, real, shape ``grid``
        :math:`\mu_k`, one value per DCT frequency.
    dct_type : {1, 2}
        The transform :math:`C` (``scipy.fft.dctn(type=dct_type, norm="ortho")``).
    dtype : numpy dtype
        Real dtype the operator advertises (float32 or float64); products run in the dtype
        of the input and of ``multiplier``.
    name : str, optional
        Name shown by pylops.
    transposed : bool, optional
        Build the transpose :math:`B C^\top(\mu \odot C B^{-1} x)` instead (DCT-I only differs).

    Raises
    ------
    ValueError
        If ``dct_type`` is not 1 or 2.

    Notes
    -----
    ``transform`` is ``"dct1"`` or ``"dct2"``; ``blocks`` is ``multiplier[..., None, None]``.
    Examples are ``(1, *grid)`` flattened in C-order. :math:`B = I` for DCT-II, so the
    operator :math:`C^\top \operatorname{diag}(\mu) C` is symmetric, its adjoint is itself, and
    the transform is unitary and a similarity. For DCT-I, :math:`C^\top = C` and :math:`B` is the
    diagonal with :math:`1/\sqrt2` on the first and last sample of each axis (see
    :mod:`structops.solvers.dct`): a similarity (:math:`U = B^{-1}C`, :math:`V^H = CB`), not
    unitary, and the adjoint swaps :math:`B` and :math:`B^{-1}`. Axes of size 1 are not
    transformed (DCT-I needs two samples; its one eigenvector there is the constant). A product
    with ``k`` columns is two ``dctn`` over the grid axes, batched over the columns:
    :math:`O(k N \log N)`.
    """

    similarity = True

    def __init__(
        self,
        multiplier: np.ndarray,
        dct_type: int,
        *,
        dtype,
        name: str | None = None,
        transposed: bool = False,
    ) -> None:
        if dct_type not in DCT_TYPES:
            raise ValueError(f"`dct_type` must be one of {DCT_TYPES!r}, got {dct_type!r}.")
        self.multiplier = np.asarray(multiplier)
        self.blocks = self.multiplier[..., None, None]
        self.grid = tuple(int(g) for g in self.multiplier.shape)
        self.dct_type = int(dct_type)
        self.transform = f"dct{self.dct_type}"
        self.route_name = "cosine"
        self.unitary = self.dct_type == 2
        self.transposed = bool(transposed)
        self._b = _edge_weights(self.grid, self.dct_type, self.multiplier.dtype)
        skip = 1 if self.dct_type == 1 else 0  # DCT-I of one sample is undefined (and the identity)
        self._axes = tuple(a for a, n in enumerate(self.grid) if n > skip)
        super().__init__(dtype=np.dtype(dtype), dims=(1, *self.grid), dimsd=(1, *self.grid), name=name)

    def _cols(self, X: np.ndarray, adjoint: bool) -> np.ndarray:
        k = X.shape[1]
        Z = X.reshape(*self.grid, k)
        b = None if self._b is None else self._b[..., None]
        flip = adjoint != self.transposed
        if b is not None:
            Z = Z / b if flip else Z * b
        if self._axes:
            Z = sfft.dctn(Z, type=self.dct_type, axes=self._axes, norm="ortho")
        Z = Z * self.multiplier[..., None]
        if self._axes:
            Z = sfft.idctn(Z, type=self.dct_type, axes=self._axes, norm="ortho", overwrite_x=True)
        if b is not None:
            Z = Z * b if flip else Z / b
        return Z.reshape(X.shape[0], k)

    def _columns(self, X, adjoint):
        return real_apply(lambda z: self._cols(z, adjoint), X, self.dtype)

    def _adjoint(self) -> CosineMultiplier:
        if self.dct_type == 2:
            return self
        name = None if self.name is None else f"({self.name})ᵀ"
        return CosineMultiplier(
            self.multiplier, self.dct_type, dtype=self.dtype, name=name, transposed=not self.transposed
        )

    _transpose = _adjoint

    def with_blocks(self, blocks, *, swap=False, normal=False, name=None) -> CosineMultiplier:
        """See :meth:`Diagonalized.with_blocks`; ``swap`` transposes the DCT-I edge weights, ``normal`` needs DCT-II.

        Raises
        ------
        ValueError
            If the blocks are not ``1 × 1`` or ``normal`` is asked of DCT-I.
        """
        blocks = self._check_freq_shape(blocks)
        if blocks.shape[-2:] != (1, 1):
            raise ValueError(f"`blocks` of a CosineMultiplier must be 1×1 (one channel), got {blocks.shape}.")
        if normal and not self.unitary:
            raise ValueError(f"`normal` needs a unitary transform; {self!r} (DCT-I with edge weights) is not.")
        multiplier = np.ascontiguousarray(blocks[..., 0, 0])
        return CosineMultiplier(
            multiplier, self.dct_type, dtype=multiplier.dtype, name=name, transposed=self.transposed != swap
        )

    def coefficients(self, b: np.ndarray) -> np.ndarray:
        """``dctn(b, type=2, norm="ortho")`` (DCT-II only; see :meth:`Diagonalized.coefficients`).

        Raises
        ------
        ValueError
            For DCT-I, whose :math:`U = B^{-1}C` is not unitary.
        """
        if not self.unitary:
            return super().coefficients(b)
        return sfft.dctn(np.reshape(b, self.grid), type=2, norm="ortho")

    def same_basis(self, other: Diagonalized) -> bool:
        """Same DCT on the same grid, with the edge weights on the same side."""
        return (
            isinstance(other, CosineMultiplier)
            and other.dct_type == self.dct_type
            and other.grid == self.grid
            and other.transposed == self.transposed
        )


# ------------------------------------------------------------------- Kronecker
def _apply_axes(Z: np.ndarray, mats: tuple[np.ndarray, ...]) -> np.ndarray:
    r"""Multiply axis ``a`` of ``Z`` (shape ``(*grid, k)``) by ``mats[a]``: :math:`(\otimes_a M_a) z` per column."""
    with blas_threads_for(max(Z.shape[:-1], default=0)):
        for a, M in enumerate(mats):
            Z = np.moveaxis(np.tensordot(M.astype(Z.dtype, copy=False), Z, axes=([1], [a])), 0, a)
    return Z


def _factor_svds(factors) -> tuple[list, float]:
    r"""The SVD of each factor, computed once for factors that are multiples :math:`K_b = cK_a` of an earlier one.

    A multiple reuses :math:`K_a = USV^\top` as :math:`(U, |c|S, \operatorname{sign}(c)V)`; what it
    leaves out, :math:`\|K_b - cK_a\|_F` times the other factors' norms, is returned to be added to
    the certified ``residual`` (zero for exact multiples, round-off otherwise).
    """
    svds: list = []
    extra = 0.0
    for f in factors:
        for g, (u, sv, vh) in zip(factors, svds):
            if g.shape != f.shape:
                continue
            c = float(np.vdot(g, f) / max(np.vdot(g, g), np.finfo(float).tiny))
            gap = float(np.linalg.norm(f - c * g))
            if c != 0 and gap <= 16 * np.finfo(f.dtype).eps * float(np.linalg.norm(f)):
                svds.append((u, abs(c) * sv, vh if c > 0 else -vh))  # c > 0 shares the basis: no copy
                others = float(np.prod([np.linalg.norm(h) for h in factors if h is not f]))
                extra += gap * others
                break
        else:
            svds.append(np.linalg.svd(f))
    return svds, extra


def _factors_in(factors: tuple[np.ndarray, ...], dtype) -> tuple[tuple[np.ndarray, ...], float]:
    r"""The factors in the operator's ``dtype`` when it is narrower than theirs (float32 data: float32 SVDs).

    Rounding :math:`K_a` to :math:`\tilde K_a` moves the product by at most
    :math:`\sum_a \|K_a - \tilde K_a\|_F \prod_{b \ne a} \max(\|K_b\|_F, \|\tilde K_b\|_F)`
    (telescoping), returned to be added to the certified ``residual`` (0 when nothing is cast).
    """
    if dtype is None or np.dtype(dtype).kind != "f":
        return factors, 0.0
    target = np.dtype(dtype)
    if all(f.dtype.kind == "f" and f.dtype.itemsize <= target.itemsize for f in factors):
        return factors, 0.0
    cast = tuple(f.astype(target) for f in factors)
    norms = [max(float(np.linalg.norm(f)), float(np.linalg.norm(g))) for f, g in zip(factors, cast)]
    bound = 0.0
    for a, (f, g) in enumerate(zip(factors, cast)):
        gap = float(np.linalg.norm(f.astype(np.float64) - g.astype(np.float64)))
        bound += gap * float(np.prod(norms[:a] + norms[a + 1 :]))
    return cast, bound * (1.0 + 4.0 * float(np.finfo(np.float64).eps) * len(factors))


class KroneckerMultiplier(Diagonalized):
    r"""One-channel operator :math:`K = K_1 \otimes \dots \otimes K_d` diagonalised by the SVDs of its 1-D factors.

    Parameters
    ----------
    factors : sequence of numpy.ndarray
        Square real 1-D operators :math:`K_a` (``n_a × n_a``), one per grid axis, axis 0 first
        (C-order: :math:`K = K_0 \otimes K_1 \otimes \dots`, ``numpy.kron``'s order).
    dtype : numpy dtype, optional
        Real dtype the operator advertises (default: that of the factors). Factors of a wider
        dtype are rounded to it first, so that a float32 operator has float32 SVDs and bases
        (half the memory, single-precision GEMMs); the rounding's effect on the product is
        added to ``residual``.
    residual : float, optional
        A certified bound on :math:`\|K_{\rm true} - K_0 \otimes \dots\|_2` when this operator
        stands for one whose stencil is an outer product only to round-off (default 0). By
        Weyl's inequality every singular value of the true operator lies within ``residual`` of
        the corresponding one of this operator.
    name : str, optional
        Name shown by pylops.

    Raises
    ------
    ValueError
        If a factor is not a square 2-D array, or ``residual`` is negative.

    Notes
    -----
    With :math:`K_a = U_a S_a V_a^\top` (``numpy.linalg.svd``),
    :math:`K = (\otimes U_a)(\otimes S_a)(\otimes V_a)^\top`: ``transform = "kron"``, unitary,
    the blocks the ``1 × 1`` products :math:`\prod_a s_{a, k_a}` on the grid.
    ``factor_singular_values`` holds the 1-D :math:`s_a`; the grid of products
    (``blocks``) is built on first use only. It is not a
    similarity (:math:`U \ne V`), but :meth:`eigenvalues` are the products of the factors'
    eigenvalues. A product applies one dense ``n_a × n_a`` matrix per axis, twice:
    :math:`O(N \sum_a n_a)`; building costs the 1-D SVDs, :math:`O(\sum_a n_a^3)`.

    Examples
    --------
    >>> T = np.array([[2.0, 1.0], [0.0, 3.0]])
    >>> K = KroneckerMultiplier([T, T])
    >>> bool(np.allclose(K.todense(), np.kron(T, T)))
    True
    >>> bool(np.allclose(K.singular_values(), np.linalg.svd(np.kron(T, T), compute_uv=False)))
    True
    """

    transform = "kron"
    route_name = "kronecker"
    unitary = True
    similarity = False

    def __init__(self, factors, *, dtype=None, residual: float = 0.0, name: str | None = None) -> None:
        factors = tuple(np.asarray(f) for f in factors)
        for a, f in enumerate(factors):
            if f.ndim != 2 or f.shape[0] != f.shape[1]:
                raise ValueError(f"`factors[{a}]` must be a square 2-D array, got shape {f.shape}.")
        factors, rounding = _factors_in(factors, dtype)
        # equal factors (a symmetric PSF) are kept once
        factors = tuple(
            next((g for g in factors[:a] if g.shape == f.shape and np.array_equal(g, f)), f)
            for a, f in enumerate(factors)
        )
        if not residual >= 0:
            raise ValueError(f"`residual` must be >= 0, got {residual!r}.")
        with blas_threads_for(max(f.shape[0] for f in factors)):  # one BLAS thread below 1024²
            svds, shared = _factor_svds(factors)
        residual = float(residual) + shared + rounding
        left = tuple(u for u, _, _ in svds)
        right = tuple(vh.T for _, _, vh in svds)
        self._init(left, right, None, factors, float(residual), dtype, name)
        self.factor_singular_values: tuple[np.ndarray, ...] | None = tuple(s for _, s, _ in svds)

    def _init(self, left, right, blocks, factors, residual, dtype, name) -> None:
        self.left, self.right = left, right
        self._blocks = blocks
        self.factor_singular_values = None
        self.factors = factors
        self.residual = residual
        self.grid = tuple(int(u.shape[0]) for u in left)
        dtype = np.dtype((left[0].dtype if blocks is None else blocks.dtype) if dtype is None else dtype)
        super().__init__(dtype=dtype, dims=(1, *self.grid), dimsd=(1, *self.grid), name=name)

    @property
    def blocks(self) -> np.ndarray:
        r"""The ``1 × 1`` blocks :math:`\prod_a s_{a, k_a}` on the grid, built on first use from the 1-D ones.

        A solve that needs only the filter (:class:`structops.solvers.Deblurrer`) reads
        ``factor_singular_values`` instead and never holds this grid.
        """
        if self._blocks is None:
            assert self.factor_singular_values is not None
            grid = np.ones((), dtype=self.factor_singular_values[0].dtype)
            for sv in self.factor_singular_values:
                grid = np.multiply.outer(grid, sv)
            self._blocks = grid[..., None, None]
        return self._blocks

    @blocks.setter
    def blocks(self, value: np.ndarray) -> None:
        self._blocks = value

    @classmethod
    def _from_bases(cls, left, right, blocks, name, dtype=None) -> KroneckerMultiplier:
        new = cls.__new__(cls)
        new._init(left, right, blocks, None, 0.0, dtype, name)
        return new

    def _cols(self, X: np.ndarray, adjoint: bool) -> np.ndarray:
        k = X.shape[1]
        first, second = (self.left, self.right) if adjoint else (self.right, self.left)
        Z = _apply_axes(X.reshape(*self.grid, k), tuple(m.T for m in first))
        Z = Z * self.blocks[..., 0, 0, None].astype(Z.dtype, copy=False)
        return _apply_axes(Z, second).reshape(X.shape[0], k)

    def _columns(self, X, adjoint):
        return real_apply(lambda z: self._cols(z, adjoint), X, self.dtype)

    def _adjoint(self) -> KroneckerMultiplier:
        name = None if self.name is None else f"({self.name})ᵀ"
        return KroneckerMultiplier._from_bases(self.right, self.left, self.blocks, name, self.dtype)

    _transpose = _adjoint

    def with_blocks(self, blocks, *, swap=False, normal=False, name=None) -> KroneckerMultiplier:
        """See :meth:`Diagonalized.with_blocks` (``1 × 1`` real blocks)."""
        blocks = self._check_freq_shape(blocks)
        if blocks.shape[-2:] != (1, 1) or np.iscomplexobj(blocks):
            raise ValueError(
                f"`blocks` of a KroneckerMultiplier must be real and 1×1, got {blocks.dtype} {blocks.shape}."
            )
        # the advertised dtype is kept (a float32 problem's bases are float32 too: see ``_factors_in``)
        if normal:
            return KroneckerMultiplier._from_bases(self.right, self.right, blocks, name, self.dtype)
        left, right = (self.right, self.left) if swap else (self.left, self.right)
        return KroneckerMultiplier._from_bases(left, right, blocks, name, self.dtype)

    def coefficients(self, b: np.ndarray) -> np.ndarray:
        r""":math:`(\otimes_a U_a)^\top b`, one 1-D basis per axis (see :meth:`Diagonalized.coefficients`)."""
        return _apply_axes(np.reshape(b, self.grid)[..., None], tuple(u.T for u in self.left))[..., 0]

    def same_basis(self, other: Diagonalized) -> bool:
        """Same singular bases, factor by factor."""
        if not isinstance(other, KroneckerMultiplier) or other.grid != self.grid:
            return False
        pairs = zip(self.left + self.right, other.left + other.right)
        return all(a is b or np.array_equal(a, b) for a, b in pairs)

    @property
    def has_eigenvalues(self) -> bool:
        """True when the factors are kept: the eigenvalues are the products of theirs."""
        return self.factors is not None

    def eigenvalues(self) -> np.ndarray:
        r"""Every eigenvalue, shape ``grid``: :math:`\lambda_k = \prod_a \lambda_{a,k_a}`.

        Real when every factor is symmetric (``eigvalsh``), else complex.
        """
        if self.factors is None:
            raise ValueError(f"the eigenvalues of {self!r} are unknown: it was built from singular bases only.")
        lam = np.ones((), dtype=self.factors[0].dtype)
        symmetric = all(np.array_equal(f, f.T) for f in self.factors)
        for f in self.factors:
            lam = np.multiply.outer(lam, np.linalg.eigvalsh(f) if symmetric else np.linalg.eigvals(f))
        return lam


# ---------------------------------------------------------- periodic embedding
class PeriodicEmbedding:
    r"""A convolution written as a restriction of a periodic one: :math:`K = R\,C_L\,E`.

    Parameters
    ----------
    multiplier : FourierMultiplier
        The periodic convolution :math:`C_L` on a grid :math:`L` (per axis a multiple of ``stride``).
    grid : tuple of int
        The input grid, embedded at the origin of :math:`L` (:math:`E`, zero padding: an isometry).
    stride : tuple of int
        The output sampling step; :math:`R` keeps a subset of the points of one polyphase
        component of :math:`C_L`'s output.
    stencil : numpy.ndarray, shape ``(out_channels, in_channels, *stencil)``
        The stencils (centred as in :class:`structops.Conv`: tap :math:`j` at offset
        :math:`j - s /\!/ 2`); :math:`\sum|w|` sets the round-off allowance.

    Notes
    -----
    :math:`\|K\|_2 \le \|S\,C_L\|_2` with :math:`S` the sampling by ``stride`` (rows of an
    isometry times a row subset), and :math:`S\,C_L` is block diagonal in the Fourier basis of
    the coarse grid :math:`L/\text{stride}`: the block of a coarse frequency :math:`\eta` is
    :math:`m^{-1/2}[\,\phi_1 \hat C(\xi_1), \dots, \phi_m \hat C(\xi_m)\,]` over its
    :math:`m = \prod_a \text{stride}_a` aliases :math:`\xi_r`, with unit phases :math:`\phi_r`
    that depend on the component sampled but cancel in
    :math:`\sigma_{\max}^2 = \lambda_{\max}\big(m^{-1}\sum_r \hat C(\xi_r)\hat C(\xi_r)^H\big)`.
    """

    def __init__(
        self, multiplier: FourierMultiplier, grid: tuple[int, ...], stride: tuple[int, ...], stencil: np.ndarray
    ) -> None:
        self.multiplier = multiplier
        self.grid = tuple(int(g) for g in grid)
        self.stride = tuple(int(s) for s in stride)
        self.stencil = np.asarray(stencil)
        self.stencil_l1 = float(np.abs(self.stencil).sum())
        for L, st in zip(multiplier.grid, self.stride):
            if L % st:
                raise ValueError(f"the periodic grid {multiplier.grid} must be a multiple of `stride` {self.stride}.")

    def __repr__(self) -> str:
        out, inp = self.multiplier.blocks.shape[-2:]
        return f"PeriodicEmbedding(periodic grid={self.multiplier.grid}, blocks={out}×{inp}, stride={self.stride})"

    def _slack(self) -> float:
        """Round-off allowance of the computed symbol's norms (FFT error ``~ eps log N`` per entry)."""
        blocks = self.multiplier.blocks
        eps = float(np.finfo(blocks.dtype).eps)
        n = float(np.prod(self.multiplier.grid))
        return 8.0 * eps * np.log2(max(n, 2.0)) * np.sqrt(blocks.shape[-1] * blocks.shape[-2]) * self.stencil_l1

    def upper_bound(self) -> float:
        r"""A certified upper bound on :math:`\|K\|_2`: :math:`\|S\,C_L\|_2` plus a round-off allowance."""
        blocks = self.multiplier.blocks
        if all(st == 1 for st in self.stride):
            top = float(block_svdvals(blocks).max(initial=0.0))
        else:
            full = full_spectrum(blocks, self.multiplier.grid)  # (*L, out, in)
            d = len(self.grid)
            shape: list[int] = []
            for L, st in zip(self.multiplier.grid, self.stride):
                shape += [st, L // st]
            full = full.reshape(*shape, *full.shape[d:])
            alias_axes = tuple(range(0, 2 * d, 2))
            gram = np.mean(full @ _adjoint_blocks(full), axis=alias_axes)  # (*coarse, out, out)
            top = float(np.sqrt(max(float(np.linalg.eigvalsh(gram).max(initial=0.0)), 0.0)))
        return float(top + self._slack())


# ------------------------------------------------------------- stencil hook
@dataclass(frozen=True)
class ConvStencil:
    r"""How a family reaches the stencil of the convolution behind it.

    Returned by :meth:`structops.kernels.ParametricKernel.as_convolution`.

    Attributes
    ----------
    conv : ParametricKernel
        The :class:`structops.Conv` :math:`C(w)` whose operator the family's :math:`K(\theta)` is.
    weights : callable
        ``weights(theta)``: the full stencil :math:`w(\theta)`, shape ``(out_channels, in_channels, *stencil)``.
    solve : callable or None
        ``solve(w)``: the least-squares parameter :math:`\theta` with :math:`w(\theta) \approx w` when
        :math:`w` is linear in :math:`\theta` (a ``Conv``, a ``LinearReparam`` of one), else None.
        :func:`structops.solvers.project_spectral_norm` clips the stencil and maps it back with it.
    """

    conv: Conv
    weights: Callable[[np.ndarray], np.ndarray]
    solve: Callable[[np.ndarray], np.ndarray] | None = None
