r"""M-matrix convolutions: depthwise stencils with nonpositive couplings and zero sums.

The lecture notes' M-matrix idea carried to stencils (Lars Ruthotto, *Numerical Methods for
Deep Learning*, "Parametric Models", "Build your own parametric model"): every off-centre tap
is a coupling :math:`-\theta \le 0` and the centre tap balances them, so each channel is a
learned diffusion operator, a graph Laplacian on the pixel grid.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from ..._validation import check_positive_int
from ..constraints import Nonnegative
from ..reparam import LinearReparam
from ._core import ConvGeometry
from .based import ConvBased
from .conv import Conv

__all__ = ["MMatrixConv"]


class MMatrixConv(Nonnegative, ConvBased, LinearReparam):
    r"""Depthwise convolution whose matrix is an M-matrix: off-centre taps :math:`-\theta \le 0`, zero sums.

    Parameters
    ----------
    grid : int or sequence of int
        Shape of one image (1, 2 or 3 axes).
    stencil : int or sequence of int
        Stencil shape, **odd** sizes (the centre tap balances the others).
    bc : {"zero", "periodic", "reflect", "symmetric", "replicate"}
        Boundary condition, as in :class:`~structops.Conv` (``"valid"`` is refused: it has
        no output at the border and the centre would not sit on the diagonal).
    channels : int
        Number of channels; channel :math:`c` of the output is the stencil of channel
        :math:`c` applied to channel :math:`c` of the input (depthwise, no mixing).

    Raises
    ------
    ValueError
        If a stencil size is even (no centre tap), ``bc`` is ``"valid"`` or unknown, or for
        any reason :class:`~structops.Conv` gives. At every public entry point, when
        ``theta`` has a negative entry: to optimise without the constraint, use
        ``structops.Softplus(MMatrixConv(...))`` (:math:`\theta = \operatorname{softplus}(\varphi)`)
        or pass :attr:`~structops.kernels.constraints.Nonnegative.bounds` to a bound-constrained optimiser.
    TypeError
        If a size or the channel count is not an integer.

    Attributes
    ----------
    nparams : int
        ``channels * (prod(stencil) - 1)`` (8 for a 3×3 stencil and one channel).
    P : scipy.sparse.csr_array, shape (channels² · prod(stencil), nparams)
        The full stencils of the underlying ``Conv(grid, stencil, in_channels=channels,
        out_channels=channels)``: the diagonal channel blocks, the off-diagonal ones zero.

    Notes
    -----
    **Parameters.** :math:`\theta` holds, channel after channel, the :math:`S - 1` couplings
    (:math:`S = \prod_a s_a`) of the stencil's taps in C-order, skipping the centre
    :math:`c = s /\!/ 2`. The stencil of channel :math:`k` is

    .. math::
        w^{k}_j = -\theta_{k, t(j)} \quad (j \ne c), \qquad w^{k}_c = \sum_{t} \theta_{k, t},

    so, with the convolution of :class:`~structops.Conv`,
    :math:`(K x)_i = \sum_{j \ne c} \theta_{t(j)} (x_i - x_{i + c - j})`.

    **M-matrix.** The off-diagonal entries of :math:`K` are :math:`\le 0` and every row of the
    interior sums to zero (:math:`K\mathbf 1 = 0` away from the border). With ``bc="zero"`` the
    border rows lose couplings and become strictly diagonally dominant, so for
    :math:`\theta > 0` (an irreducible stencil) :math:`K` is a nonsingular M-matrix:
    :math:`K^{-1} \ge 0` entrywise. With ``"periodic"``, ``"reflect"``, ``"symmetric"`` and
    ``"replicate"`` every row sums to zero: :math:`K\mathbf 1 = 0`, a singular M-matrix, and
    :math:`K + \alpha I` (:math:`\alpha > 0`) is a nonsingular one, so
    :math:`(I + hK)^{-1} \ge 0` maps nonnegative images to nonnegative images (the implicit
    Euler step of the diffusion :math:`\dot x = -Kx`; ``structops.solvers.inverse(kernel,
    theta, alpha=1/h)`` in the periodic case gives :math:`(K + I/h)^{-1} = h(I + hK)^{-1}`).
    ``structops.solvers.implicit_step`` is another step, :math:`(hK^\top K + I)^{-1}` of the
    flow :math:`\dot x = -K^\top K x`; :math:`K^\top K` has positive couplings (it is no
    M-matrix), so that step need not keep positivity.

    **Cost.** The family is a :class:`~structops.LinearReparam` of a full
    ``channels → channels`` :class:`~structops.Conv`, with the off-diagonal channel blocks
    zero: applications, Jacobians and :math:`Q = Q_C P` (sparse) come from it, and so do
    ``diagonalize``, ``eigvals`` and the FFT solvers for ``"periodic"``. That costs
    ``channels`` times a true depthwise convolution, fine for the small channel counts this
    family is meant for.

    Examples
    --------
    >>> k = MMatrixConv((28, 28), (3, 3))
    >>> k.nparams
    8
    >>> MMatrixConv(4, 3).matrix(np.array([1.0, 2.0]))
    array([[ 3., -1.,  0.,  0.],
           [-2.,  3., -1.,  0.],
           [ 0., -2.,  3., -1.],
           [ 0.,  0., -2.,  3.]])
    """

    kernel: Conv

    def __init__(
        self,
        grid: int | Sequence[int],
        stencil: int | Sequence[int],
        *,
        bc: str = "zero",
        channels: int = 1,
    ) -> None:
        if bc == "valid":
            raise ValueError(
                "`bc` must not be 'valid' for MMatrixConv (its output grid is smaller, so K is not square and the "
                "centre tap is not its diagonal), got 'valid'."
            )
        channels = check_positive_int(channels, "channels")
        geometry = ConvGeometry(grid, stencil, 1, bc, channels, channels)  # validated once, here
        stencil = geometry.stencil
        if any(s % 2 == 0 for s in stencil):
            raise ValueError(
                f"`stencil` must have odd sizes for MMatrixConv, got {stencil!r}: the centre tap, which balances "
                "the couplings, needs a centre."
            )
        conv = Conv.from_geometry(geometry)
        self.channels = channels
        super().__init__(conv, self._build_P(stencil, channels))

    @staticmethod
    def _build_P(stencil: tuple[int, ...], channels: int) -> sp.csr_array:
        S = int(np.prod(stencil))
        centre = int(np.ravel_multi_index(tuple(s // 2 for s in stencil), stencil))
        t = np.arange(S - 1)
        taps = t + (t >= centre)  # C-order, skipping the centre
        rows, cols, vals = [], [], []
        for k in range(channels):
            block = (k * channels + k) * S  # the diagonal block (k, k) of (out, in, *stencil)
            col = k * (S - 1) + t
            rows += [block + taps, np.full(S - 1, block + centre)]
            cols += [col, col]
            vals += [-np.ones(S - 1), np.ones(S - 1)]
        shape = (channels * channels * S, channels * (S - 1))
        if not rows:  # pragma: no cover - channels >= 1
            return sp.csr_array(shape)
        return sp.csr_array((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=shape)

    _reparametrise = "structops.Softplus(MMatrixConv(...))"

    def __repr__(self) -> str:
        return f"MMatrixConv(grid={self.grid}, stencil={self.stencil}, bc={self.bc!r}, channels={self.channels})"
