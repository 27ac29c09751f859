r"""Real operators diagonalised by the FFT: per-frequency blocks on a periodic grid.

A block-circulant operator with circulant blocks (BCCB, one block per pair of channels) is
block-diagonalised by the multi-dimensional DFT :math:`F` over the grid,

.. math::
    A = F^{-1} \operatorname{blkdiag}_\xi\big(B(\xi)\big) F, \qquad
    \widehat{(Ax)}(\xi) = B(\xi)\,\hat x(\xi),

with one ``out_channels × in_channels`` block :math:`B(\xi)` per frequency :math:`\xi`.
When :math:`A` is real, :math:`B(-\xi) = \overline{B(\xi)}`, so only the half spectrum of a
real FFT is stored and applied (``rfftn``/``irfftn``).
"""

from __future__ import annotations

import numpy as np
import scipy.fft as sfft

from ..kernels.operators import ColumnBatched, real_apply


def half_spectrum(full: np.ndarray, ndim: int) -> np.ndarray:
    """Restrict a full spectrum ``(*grid, ...)`` to the ``rfftn`` half (last grid axis cut to ``g//2 + 1``)."""
    g = full.shape[ndim - 1]
    index = (slice(None),) * (ndim - 1) + (slice(0, g // 2 + 1),)
    return np.ascontiguousarray(full[index])


class FourierMultiplier(ColumnBatched):
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

    Notes
    -----
    Examples are ``(in_channels, *grid)`` flattened in C-order (as for
    :class:`structops.Conv`). Forward and adjoint:

    .. math::
        A x = \operatorname{irfftn}\big(B(\xi)\,\operatorname{rfftn}(x)(\xi)\big), \qquad
        A^\top y = \operatorname{irfftn}\big(B(\xi)^H\,\operatorname{rfftn}(y)(\xi)\big),

    i.e. the adjoint is the multiplier of the conjugate-transposed blocks (for one channel:
    the conjugate spectrum). Products with ``k`` columns cost
    :math:`O(k\,(c_{in} + c_{out})\,N\log N + k\,c_{in} c_{out} N)`.
    """

    def __init__(self, blocks: np.ndarray, grid: tuple[int, ...], *, dtype, name: str | None = None) -> None:
        self.blocks = blocks
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
        return FourierMultiplier(np.conj(np.swapaxes(self.blocks, -1, -2)), self.grid, dtype=self.dtype, name=name)

    _transpose = _adjoint
