r"""Exact spectra of strided periodic convolutions: per-frequency blocks of the polyphase components.

A periodic convolution sampled with stride :math:`t` (dividing the grid :math:`n` on every
axis; output grid :math:`h = n / t`) is :math:`K = S\,C`. Split the input into its
:math:`m = \prod_a t_a` *polyphase components* :math:`x_{r,c}[k] = x_c[t k + r]`
(:math:`0 \le r < t`, :math:`k` on the coarse grid :math:`h`). Output :math:`i` reads the
input at :math:`t i + \delta_j` with :math:`\delta_j = d(s - 1 - j) - p_-` (tap :math:`j`,
dilation :math:`d`, padding before :math:`p_-`), i.e. component :math:`r_j = \delta_j \bmod t`
at coarse offset :math:`q_j = \lfloor \delta_j / t \rfloor`:

.. math::
    z_o[i] = \sum_{c,j} \theta_{o,c,j}\; x_{r_j, c}[(i + q_j) \bmod h],

a periodic convolution on the coarse grid from :math:`m\,c_{in}` channels to :math:`c_{out}`.
The DFT on :math:`h` diagonalises it into one ``out × (m·in)`` block per coarse frequency
:math:`\eta`,

.. math::
    B(\eta)_{o,(c,r)} = \sum_{j:\ r_j = r} \theta_{o,c,j}\, e^{2\pi i \sum_a \eta_a q_{j,a} / h_a},

and :math:`K = U\,\operatorname{blkdiag}_\eta(B(\eta))\,V^H` with :math:`U = F_h^{-1}` and
:math:`V^H = F_h P` (:math:`P` the polyphase permutation), both unitary: the singular values of
:math:`K` are exactly those of the blocks (Sedghi, Gupta and Long, *The singular values of
convolutional layers*, ICLR 2019, for stride 1; the polyphase form is the classical
filter-bank one, Vaidyanathan, *Multirate Systems and Filter Banks*, 1993).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.fft as sfft

from ..diagonalized import Diagonalized, FourierMultiplier, half_spectrum
from ..operators import real_apply
from ._core import ConvGeometry, expand_groups

__all__ = ["PolyphaseMultiplier", "polyphase_applies"]


def polyphase_applies(geo: ConvGeometry) -> bool:
    """Periodic, a stride above 1 dividing the grid on every axis, and output grid ``grid / stride``."""
    return (
        geo.bc == "periodic"
        and any(st > 1 for st in geo.stride)
        and all(g % st == 0 for g, st in zip(geo.grid, geo.stride))
        and geo.out_grid == tuple(g // st for g, st in zip(geo.grid, geo.stride))
    )


def polyphase_blocks(theta: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    r"""The blocks :math:`B(\eta)` on the full coarse grid, shape ``(*coarse, cout, cin · m)``.

    Column ``c · m + r`` (``r`` the C-order index of the phase over the axes).
    """
    d = geo.ndim
    coarse = tuple(g // st for g, st in zip(geo.grid, geo.stride))
    cols = np.zeros((geo.cout, geo.cin_group, *geo.stride, *coarse), dtype=theta.dtype)
    phases, shifts = [], []
    for a, (s, dil, (lft, _), st, h) in enumerate(zip(geo.stencil, geo.dilation, geo.pads, geo.stride, coarse)):
        delta = dil * (s - 1 - np.arange(s)) - lft
        shape = [1] * d
        shape[a] = s
        phases.append(np.mod(delta, st).reshape(shape))
        shifts.append(np.mod(-(delta // st), h).reshape(shape))
    index: tuple[Any, ...] = (slice(None), slice(None), *phases, *shifts)
    np.add.at(cols, index, theta.reshape(geo.theta_shape))
    cols = expand_groups(cols, geo)  # (cout, cin, *stride, *coarse)
    spec = sfft.fftn(cols, axes=tuple(range(2 + d, 2 + 2 * d)))
    m = int(np.prod(geo.stride))
    spec = spec.reshape(geo.cout, geo.cin * m, *coarse)
    return np.moveaxis(spec, (0, 1), (-2, -1))


class PolyphaseMultiplier(Diagonalized):
    r"""A strided periodic convolution :math:`K = U\,\operatorname{blkdiag}_\eta(B(\eta))\,V^H` (see the module notes).

    Parameters
    ----------
    blocks : numpy.ndarray, complex, shape ``(*half, r, c)``
        The blocks on the ``rfftn`` half of the coarse grid (``B(-η) = conj(B(η))``).
    grid : tuple of int
        The fine (input) grid :math:`n`.
    stride : tuple of int
        The stride :math:`t`, dividing ``grid``; the coarse grid is ``grid / stride``.
    dtype : numpy dtype
        Real dtype of the operator.
    sides : (bool, bool), optional
        Whether the input and the output side are the polyphase (fine) side :math:`V`:
        ``(True, False)`` is :math:`U B V^H` (``K``: blocks ``cout × cin·m``), ``(False, True)``
        :math:`V B U^H` (a pseudo-inverse), ``(True, True)`` :math:`V B V^H` (a function of
        :math:`K^H K`).
    name : str, optional

    Notes
    -----
    ``transform = "fft"`` (the coarse DFT after the polyphase permutation), ``unitary`` (the
    singular values of :math:`K` are those of the blocks: :func:`structops.solvers.svdvals`
    and :func:`~structops.solvers.spectral_norm` are exact), not a ``similarity``
    (:math:`U \ne V`: no eigenvalues). Products cost one coarse FFT per channel and side and
    one small block product per frequency.
    """

    transform = "fft"
    route_name = "fourier"
    unitary = True
    similarity = False

    def __init__(self, blocks, grid, stride, *, dtype, sides=(True, False), name=None) -> None:
        self.blocks = blocks
        self.grid = tuple(int(g) for g in grid)
        self.stride = tuple(int(s) for s in stride)
        self.coarse = tuple(g // st for g, st in zip(self.grid, self.stride))
        self.sides = (bool(sides[0]), bool(sides[1]))
        self._fm = FourierMultiplier(blocks, self.coarse, dtype=dtype)
        self._m = int(np.prod(self.stride))
        cout, cin = blocks.shape[-2:]
        dims = (cin // self._m, *self.grid) if self.sides[0] else (cin, *self.coarse)
        dimsd = (cout // self._m, *self.grid) if self.sides[1] else (cout, *self.coarse)
        super().__init__(dtype=np.dtype(dtype), dims=dims, dimsd=dimsd, name=name)

    @classmethod
    def from_stencil(cls, theta: np.ndarray, geo: ConvGeometry, *, dtype) -> PolyphaseMultiplier:
        """The multiplier of the strided periodic ``Conv`` of geometry ``geo`` with stencils ``theta``."""
        full = polyphase_blocks(np.asarray(theta), geo)
        return cls(half_spectrum(full, geo.ndim), geo.grid, geo.stride, dtype=dtype, name="K(θ)")

    def _split(self, X: np.ndarray) -> np.ndarray:
        """``(c · prod(grid), k)`` -> the polyphase components ``(c · m · prod(coarse), k)``."""
        d, k = len(self.grid), X.shape[1]
        shape = [-1]
        for h, st in zip(self.coarse, self.stride):
            shape += [h, st]
        Z = X.reshape(*shape, k)
        order = [0, *range(2, 2 * d + 1, 2), *range(1, 2 * d, 2), 2 * d + 1]
        return np.ascontiguousarray(Z.transpose(order)).reshape(-1, k)

    def _merge(self, Z: np.ndarray) -> np.ndarray:
        """The inverse of :meth:`_split`."""
        d, k = len(self.grid), Z.shape[1]
        Y = Z.reshape(-1, *self.stride, *self.coarse, k)
        order = [0]
        for a in range(d):
            order += [1 + d + a, 1 + a]
        return np.ascontiguousarray(Y.transpose(*order, 2 * d + 1)).reshape(-1, k)

    def _cols(self, X: np.ndarray, adjoint: bool) -> np.ndarray:
        first, last = self.sides[::-1] if adjoint else self.sides
        Z = self._split(X) if first else X
        Y = self._fm._cols(Z, adjoint)
        return self._merge(Y) if last else Y

    def _columns(self, X, adjoint):
        return real_apply(lambda z: self._cols(z, adjoint), X, self.dtype)

    def _adjoint(self) -> PolyphaseMultiplier:
        name = None if self.name is None else f"({self.name})ᵀ"
        blocks = np.conj(np.swapaxes(self.blocks, -1, -2))
        return PolyphaseMultiplier(blocks, self.grid, self.stride, dtype=self.dtype, sides=self.sides[::-1], name=name)

    _transpose = _adjoint

    def with_blocks(self, blocks, *, swap=False, normal=False, name=None) -> PolyphaseMultiplier:
        """See :meth:`~structops.solvers.Diagonalized.with_blocks`.

        ``U B' V^H``, ``V B' U^H`` (``swap``) or ``V B' V^H`` (``normal``).
        """
        blocks = self._check_freq_shape(blocks)
        sides = (True, True) if normal else (False, True) if swap else (True, False)
        real = np.dtype(np.finfo(blocks.dtype).dtype)
        return PolyphaseMultiplier(blocks, self.grid, self.stride, dtype=real, sides=sides, name=name)

    def same_basis(self, other: Diagonalized) -> bool:
        """Same transform pair: a polyphase multiplier on the same grid with the same stride."""
        return isinstance(other, PolyphaseMultiplier) and (other.grid, other.stride) == (self.grid, self.stride)

    def multiplicity(self) -> np.ndarray:
        """How many coarse frequencies each stored block stands for (the ``rfftn`` half grid's 1 or 2)."""
        return self._fm.multiplicity()

    def __repr__(self) -> str:
        out, inp = self.blocks.shape[-2:]
        return f"PolyphaseMultiplier(grid={self.grid}, stride={self.stride}, blocks={out}×{inp})"
