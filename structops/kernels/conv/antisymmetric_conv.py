r"""Antisymmetric convolutions :math:`K(\theta) = C(\theta) - C(\theta)^\top`.

The lecture notes' antisymmetric kernel (Lars Ruthotto, *Numerical Methods for Deep Learning*,
"Parametric Models": :math:`\operatorname{real}(\lambda_i(K(\theta))) = 0`) carried to
convolutions: the forward propagation :math:`\dot y = \sigma(K y + b)` of a residual network
with such layers neither amplifies nor damps perturbations to first order (Haber & Ruthotto
2017, "Stable architectures for deep neural networks").
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from ..._validation import check_positive_int
from .._base import ParametricKernel
from ..diagonalized import FourierMultiplier
from . import _core as core
from ._core import ConvGeometry
from .based import ConvView
from .conv import Conv, deprecated_symbol, fourier_multiplier

__all__ = ["AntisymmetricConv", "transposed_vec"]

#: Boundary conditions under which ``C - C^T`` is the difference of two convolutions.
ANTISYMMETRIC_BCS = ("zero", "periodic")


def transposed_vec(Q: sp.csc_array, shape: tuple[int, int]) -> sp.csc_array:
    r"""The ``Q`` of :math:`K^\top` from the ``Q`` of :math:`K` (``vec`` column-major), in O(nnz).

    Entry :math:`(r, c)` of :math:`K` sits at row :math:`r + c\,m` of ``Q``; the same entry of
    :math:`K^\top` (an :math:`n \times m` matrix) at row :math:`c + r\,n`.
    """
    m, n = shape
    coo = Q.tocoo()
    lin = coo.row.astype(np.int64)
    r, c = lin % m, lin // m
    return sp.csc_array(sp.coo_array((coo.data, (c + r * n, coo.col)), shape=Q.shape))


class AntisymmetricConv(ConvView, ParametricKernel):
    r"""Antisymmetric multi-channel convolution :math:`K(\theta) = C(\theta) - C(\theta)^\top`.

    :math:`C(\theta)` is the ``channels → channels`` :class:`~structops.Conv` of the same grid,
    stencil and boundary; :math:`K` is square and :math:`K^\top = -K` exactly.

    Parameters
    ----------
    grid : int or sequence of int
        Shape of one image (1, 2 or 3 axes).
    stencil : int or sequence of int
        Stencil shape, same number of axes (odd or even sizes).
    bc : {"zero", "periodic"}
        Boundary condition of :math:`C`. Only these two: for the mirrored and replicated
        boundaries :math:`C^\top` is not a convolution (it folds the padding back onto the
        border), so :math:`C - C^\top` would not be one either.
    channels : int
        Number of channels of the input and of the output.

    Raises
    ------
    ValueError
        If ``bc`` is not ``"zero"`` or ``"periodic"``, or for any reason :class:`~structops.Conv`
        gives (``grid``, ``stencil``).
    TypeError
        If a size or ``channels`` is not an integer.

    Attributes
    ----------
    nparams : int
        ``channels**2 * prod(stencil)``: the stencils of :math:`C`, shape
        ``(channels, channels, *stencil)`` (PyTorch's weight layout) flattened in C-order.
        They are redundant: the part of :math:`\theta` with :math:`C = C^\top` (e.g. the
        centre taps of the diagonal channel blocks) does not change :math:`K`.
    conv : Conv
        The convolution :math:`C`.

    Notes
    -----
    Forward, adjoint and Jacobian, all through :math:`C`'s own products (one convolution and
    one correlation each, never a dense matrix):

    .. math::
        K(\theta)x = C(\theta)x - C(\theta)^\top x, \qquad K(\theta)^\top y = -K(\theta)y,

        J v = C(v)x - C(v)^\top x, \qquad
        J^\top w = \nabla_\theta\langle w, C(\theta)x\rangle - \nabla_\theta\langle x, C(\theta)w\rangle .

    The family is linear: :math:`\operatorname{vec}(K) = (Q_C - \Pi Q_C)\theta` with
    :math:`\Pi` the permutation :math:`\operatorname{vec}(C) \mapsto \operatorname{vec}(C^\top)`,
    sparse with at most twice the nonzeros of :math:`Q_C`.

    **Spectrum.** With ``bc="periodic"`` :math:`K` is block circulant with the per-frequency
    blocks :math:`\hat K(\xi) = \hat C(\xi) - \hat C(\xi)^H`, skew-Hermitian: every
    eigenvalue of :math:`K` is purely imaginary (:meth:`diagonalize`, :meth:`eigvals`,
    :func:`structops.solvers.eigvals`). With ``bc="zero"`` :math:`K` is a real
    antisymmetric matrix, so its eigenvalues are purely imaginary too (computed
    iteratively or densely by the solvers). With one channel and a periodic grid of at most two
    points on every axis the stencil extends along, :math:`C` is symmetric, so :math:`K = 0` (computed as the
    round-off of :math:`Cx - C^\top x`).

    Examples
    --------
    >>> k = AntisymmetricConv(4, 3)
    >>> k.matrix(np.array([1.0, 2.0, 3.0]))
    array([[ 0., -2.,  0.,  0.],
           [ 2.,  0., -2.,  0.],
           [ 0.,  2.,  0., -2.],
           [ 0.,  0.,  2.,  0.]])
    >>> lam = AntisymmetricConv(8, 3, bc="periodic").eigvals(np.array([1.0, 2.0, 3.0]))
    >>> float(np.abs(lam.real).max())
    0.0
    """

    def __init__(
        self,
        grid: int | Sequence[int],
        stencil: int | Sequence[int],
        *,
        bc: str = "zero",
        channels: int = 1,
    ) -> None:
        if bc not in ANTISYMMETRIC_BCS:
            raise ValueError(
                f"`bc` must be one of {ANTISYMMETRIC_BCS!r} for AntisymmetricConv, got {bc!r}: under mirrored or "
                "replicated boundaries the adjoint of a convolution folds the padding back and is not a convolution."
            )
        self.channels = check_positive_int(channels, "channels")  # named as the user wrote it
        geometry = ConvGeometry(grid, stencil, 1, bc, self.channels, self.channels)  # validated once, here
        self.conv = Conv.from_geometry(geometry)
        super().__init__(self.conv.nparams, self.conv.in_shape, self.conv.out_shape)

    def __repr__(self) -> str:
        return f"AntisymmetricConv(grid={self.grid}, stencil={self.stencil}, bc={self.bc!r}, channels={self.channels})"

    @property
    def geometry(self) -> ConvGeometry:
        """The validated geometry of :math:`C` (and of :math:`K`)."""
        return self.conv.geometry

    @property
    def theta_shape(self) -> tuple[int, ...]:
        """``(channels, channels, *stencil)``: ``theta`` may be passed as this array."""
        return self.conv.theta_shape

    # ------------------------------------------------------------------- hooks
    # K x = C x - C^T x and K^T = -K: every hook is one product of C and one of C^T.
    def _prepare(self, theta):
        return self.conv._prepare(theta)

    def _state_dtype(self, state):
        return self.conv._state_dtype(state)

    def _apply(self, state, x, transpose):
        y = self.conv._apply(state, x, False) - self.conv._apply(state, x, True)
        return -y if transpose else y

    def _prepare_data(self, x, transpose):
        return self.conv._prepare_data(x, False), self.conv._prepare_data(x, True)

    def _jvp(self, state, data, v, transpose):
        forward, adjoint = data
        y = self.conv._jvp(state, forward, v, False) - self.conv._jvp(state, adjoint, v, True)
        return -y if transpose else y

    def _vjp(self, state, data, w, transpose, per_example):
        forward, adjoint = data
        g = self.conv._vjp(state, forward, w, False, per_example) - self.conv._vjp(state, adjoint, w, True, per_example)
        return -g if transpose else g

    def _dense(self, state):
        # C - C^T from the dense C: antisymmetric to the last bit, also where stencils wrap
        C = self.conv._dense(state)
        return C - C.T

    def _build_Q(self):
        QC = self.conv.Q
        Q = sp.csc_array(QC - transposed_vec(QC, self.shape))
        Q.eliminate_zeros()
        return Q

    # -------------------------------------------------------------- spectra
    def symbol(self, theta) -> np.ndarray:
        """Deprecated: use ``diagonalize(theta).full_blocks()`` (the skew-Hermitian blocks)."""
        return deprecated_symbol(self, theta)

    def diagonalize(self, theta) -> FourierMultiplier | None:
        r"""``K(θ)`` block-diagonalised by the FFT (``bc="periodic"``), else None.

        Returns
        -------
        FourierMultiplier or None
            The multiplier of the skew-Hermitian blocks :math:`\hat K(\xi) = \hat C(\xi) - \hat C(\xi)^H`
            (``full_blocks()``, shape ``(*grid, channels, channels)``; the spectral solvers' route:
            every eigenvalue, purely imaginary, and every singular value, exactly); None for
            ``bc="zero"`` (a Toeplitz difference, no fast transform).
        """
        theta = self.validate_theta(theta)
        if not core.block_circulant(self.geometry):
            return None
        S = fourier_multiplier(self.conv, theta, "diagonalize").full_blocks()
        return FourierMultiplier.from_full(S - np.conj(np.swapaxes(S, -1, -2)), dtype=theta.dtype)

    def eigvals(self, theta) -> np.ndarray:
        r"""Every eigenvalue, purely imaginary, of a periodic :math:`K(\theta)`, shape ``(*grid, channels)``.

        For one channel, shape ``grid``: :math:`\lambda(\xi) = 2i\,\operatorname{imag}\hat C(\xi)`.

        Raises
        ------
        ValueError
            If ``bc`` is not ``"periodic"`` or ``theta`` is invalid.
        """
        S = fourier_multiplier(self, theta, "eigvals").full_blocks()
        if self.channels == 1:
            return 1j * S[..., 0, 0].imag
        # the blocks are skew-Hermitian: i B is Hermitian, with real eigenvalues μ, and λ = -i μ
        return -1j * np.linalg.eigvalsh(1j * S)
