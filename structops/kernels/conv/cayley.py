r"""Orthogonal convolutions: the Cayley transform of a periodic antisymmetric convolution.

Trockman & Kolter 2021, "Orthogonalizing convolutional layers with the Cayley transform": with
:math:`A` antisymmetric, :math:`K = (I + A)^{-1}(I - A)` is orthogonal, and for a periodic
convolution :math:`A` both inverse and product are per-frequency ``channels × channels``
blocks, so :math:`K` is computed exactly through the FFT.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import scipy.fft as sfft

from ..._backend import workers
from .._base import ParametricKernel
from ..diagonalized import FourierMultiplier
from . import _core as core
from ._core import ConvGeometry
from .antisymmetric_conv import AntisymmetricConv
from .based import ConvView
from .conv import deprecated_symbol, fourier_multiplier

__all__ = ["CayleyConv"]


class _CayleyState(NamedTuple):
    """What :class:`CayleyConv` prepares for a ``theta``: the generator's state and the half-spectrum blocks."""

    generator: object  # the state of the periodic AntisymmetricConv A(θ)
    blocks: np.ndarray  # K̂(ξ) = (I + Â)^{-1}(I - Â), shape (*half, c, c)
    resolvent: np.ndarray  # (I + Â(ξ))^{-1}, shape (*half, c, c)


def cayley_blocks(skew: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""The Cayley transforms :math:`(I + B)^{-1}(I - B)` and resolvents :math:`(I + B)^{-1}` of skew-Hermitian blocks.

    Parameters
    ----------
    skew : numpy.ndarray, complex, shape ``(..., c, c)``
        Blocks with :math:`B^H = -B`; :math:`I + B` then has singular values
        :math:`\sqrt{1 + \sigma^2} \ge 1`, so the batched solve is always well conditioned.

    Returns
    -------
    transform, resolvent : numpy.ndarray, shape ``(..., c, c)``
        Unitary blocks and :math:`(I + B)^{-1}`, from one batched ``numpy.linalg.solve``.
    """
    c = skew.shape[-1]
    eye = np.broadcast_to(np.eye(c, dtype=skew.dtype), skew.shape)
    solved = np.linalg.solve(eye + skew, np.concatenate([eye - skew, eye], axis=-1))
    return solved[..., :c], solved[..., c:]


class CayleyConv(ConvView, ParametricKernel):
    r"""Orthogonal convolution :math:`K(\theta) = (I + A(\theta))^{-1}(I - A(\theta))` (Cayley transform).

    :math:`A(\theta)` is the periodic :class:`~structops.AntisymmetricConv`
    :math:`C(\theta) - C(\theta)^\top` of the same grid, stencil and channels (Trockman &
    Kolter 2021, "Orthogonalizing convolutional layers with the Cayley transform").
    :math:`K(\theta)^\top K(\theta) = I` for every :math:`\theta`: a layer that preserves
    norms, :math:`\|K x\| = \|x\|`, with spectral norm exactly 1.

    Parameters
    ----------
    grid : int or sequence of int
        Shape of one image (1, 2 or 3 axes); the boundary is periodic.
    stencil : int or sequence of int
        Stencil shape of :math:`C` (larger than the grid: it wraps).
    channels : int
        Number of channels of the input and of the output.

    Raises
    ------
    ValueError
        For any reason :class:`~structops.Conv` gives (``grid``, ``stencil``).
    TypeError
        If a size or ``channels`` is not an integer.

    Attributes
    ----------
    nparams : int
        ``channels**2 * prod(stencil)``: the stencils of :math:`C`, as for
        :class:`~structops.AntisymmetricConv`.
    generator : AntisymmetricConv
        The periodic :math:`A(\theta)`.

    Notes
    -----
    **Per frequency.** :math:`A` has skew-Hermitian blocks :math:`\hat A(\xi)`, so

    .. math::
        \hat K(\xi) = (I + \hat A(\xi))^{-1}(I - \hat A(\xi)), \qquad
        K x = \operatorname{irfftn}\big(\hat K(\xi)\,\operatorname{rfftn}(x)(\xi)\big),

    one batched ``channels × channels`` solve per frequency of the ``rfftn`` half spectrum
    (:math:`I + \hat A` has singular values at least 1). Each :math:`\hat K(\xi)` is unitary,
    hence :math:`K^\top K = I` to round-off, and :math:`K^\top = K^{-1}` is the multiplier of
    :math:`\hat K(\xi)^H`.

    **Jacobian.** Not affine in :math:`\theta` (so no ``Q``). Differentiating
    :math:`(I + A)K = I - A` in direction :math:`v` gives, with :math:`A(v)` the
    antisymmetric convolution of the stencils :math:`v`,

    .. math::
        J v = -(I + A)^{-1} A(v)\,(I + K)x, \qquad
        J^\top w = -\nabla_\theta \big\langle (I - A)^{-1} w,\; A(\theta)\,(I + K)x \big\rangle,

    (using :math:`(I + A)^{-\top} = (I - A)^{-1}`), and for the transposed map
    :math:`K^\top = (I + A)(I - A)^{-1}`:
    :math:`J v = (I + K^\top) A(v) (I - A)^{-1} y`. The gradients in :math:`\theta` of
    :math:`\langle z, A(\theta)u\rangle` are the generator's (a convolution's and a
    correlation's), so nothing dense is built.

    Examples
    --------
    >>> k = CayleyConv((8, 8), 3, channels=2)
    >>> theta = k.random_theta(0)
    >>> K = k.matrix(theta)
    >>> bool(np.allclose(K.T @ K, np.eye(128)))
    True
    """

    linear = False

    def __init__(self, grid: int | Sequence[int], stencil: int | Sequence[int], *, channels: int = 1) -> None:
        self.generator = AntisymmetricConv(grid, stencil, bc="periodic", channels=channels)  # validates the geometry
        self.channels = self.generator.channels
        self._axes = tuple(range(2, 2 + len(self.generator.grid)))
        gen = self.generator
        super().__init__(gen.nparams, gen.in_shape, gen.out_shape)

    def __repr__(self) -> str:
        return f"CayleyConv(grid={self.grid}, stencil={self.stencil}, channels={self.channels})"

    @property
    def geometry(self) -> ConvGeometry:
        """The validated geometry of the generator :math:`A` (periodic, ``channels → channels``)."""
        return self.generator.geometry

    @property
    def theta_shape(self) -> tuple[int, ...]:
        """``(channels, channels, *stencil)``: ``theta`` may be passed as this array."""
        return self.generator.theta_shape

    # ------------------------------------------------------------------- hooks
    def _half_generator(self, theta: np.ndarray) -> np.ndarray:
        r""":math:`\hat A(\xi)` on the ``rfftn`` half grid, shape ``(*half, c, c)``, in ``theta``'s precision."""
        conv = self.generator.conv
        cols = core.first_columns(conv._stencil(theta), conv.geometry)
        spec = np.moveaxis(sfft.rfftn(cols, axes=self._axes, workers=workers()), (0, 1), (-2, -1))
        return spec - np.conj(np.swapaxes(spec, -1, -2))

    def _prepare(self, theta):
        blocks, resolvent = cayley_blocks(self._half_generator(theta))
        return _CayleyState(self.generator._prepare(theta), blocks, resolvent)

    def _state_dtype(self, state):
        return np.dtype(state.blocks.real.dtype)

    def _multiply(self, blocks: np.ndarray, x: np.ndarray, adjoint: bool) -> np.ndarray:
        """``x`` (rows of examples) through the multiplier of ``blocks`` (of their conjugate transposes)."""
        n, c = x.shape[0], self.channels
        if n == 0:
            return np.zeros_like(x)
        xf = sfft.rfftn(x.reshape(n, c, *self.grid), axes=self._axes, workers=workers())
        if c == 1:
            b = blocks[..., 0, 0]
            yf = xf * (np.conj(b) if adjoint else b)
        else:
            mat = np.conj(np.swapaxes(blocks, -1, -2)) if adjoint else blocks
            # (*half, c, c) @ (n, *half, c, 1): one small product per frequency and example
            yf = np.moveaxis((mat @ np.moveaxis(xf, 1, -1)[..., None])[..., 0], -1, 1)
        y = sfft.irfftn(yf, s=self.grid, axes=self._axes, workers=workers())
        return y.reshape(n, -1).astype(x.dtype, copy=False)

    def _apply(self, state, x, transpose):
        return self._multiply(state.blocks, x, transpose)

    def _generator_jvp(self, v: np.ndarray, u: np.ndarray) -> np.ndarray:
        r""":math:`A(v)\,u` for the examples ``u`` (A is linear in its stencils)."""
        gen = self.generator
        return gen._apply(gen._prepare(v), u, False)

    def _generator_vjp(self, state, u: np.ndarray, z: np.ndarray, per_example: bool) -> np.ndarray:
        r""":math:`\nabla_\theta \langle z, A(\theta)u\rangle` (summed, or per example)."""
        gen = self.generator
        return gen._vjp(state.generator, gen._prepare_data(u, False), z, False, per_example)

    def _jvp(self, state, data, v, transpose):
        x = data
        if transpose:  # (I + K^T) A(v) (I - A)^{-1} y
            a = self._generator_jvp(v, self._multiply(state.resolvent, x, True))
            return a + self._multiply(state.blocks, a, True)
        # -(I + A)^{-1} A(v) (I + K) x
        a = self._generator_jvp(v, x + self._multiply(state.blocks, x, False))
        return -self._multiply(state.resolvent, a, False)

    def _vjp(self, state, data, w, transpose, per_example):
        x = data
        if transpose:
            s = self._multiply(state.resolvent, x, True)
            return self._generator_vjp(state, s, w + self._multiply(state.blocks, w, False), per_example)
        u = x + self._multiply(state.blocks, x, False)
        return -self._generator_vjp(state, u, self._multiply(state.resolvent, w, True), per_example)

    # -------------------------------------------------------------- spectra
    def symbol(self, theta) -> np.ndarray:
        """Deprecated: use ``diagonalize(theta).full_blocks()``, the unitary blocks ``(*grid, channels, channels)``."""
        return deprecated_symbol(self, theta)

    def diagonalize(self, theta) -> FourierMultiplier:
        r"""``K(θ)`` block-diagonalised by the FFT: the multiplier of its unitary blocks.

        The blocks are the Cayley transforms :math:`(I - \hat A(\xi))^{-1}(I + \hat A(\xi))` of
        the generator's skew-Hermitian ones (``full_blocks()``, shape ``(*grid, channels, channels)``).
        The spectral solvers take this route: every singular value is 1 (``spectral_norm`` and
        ``cond`` are 1 to round-off), the eigenvalues lie on the unit circle, and
        :math:`K^{-1} = K^\top` is the multiplier of the conjugate-transposed blocks.
        """
        theta = self.validate_theta(theta)
        generator = fourier_multiplier(self.generator, theta, "diagonalize").full_blocks()
        return FourierMultiplier.from_full(cayley_blocks(generator)[0], dtype=theta.dtype)

    def eigvals(self, theta) -> np.ndarray:
        r"""Every eigenvalue of :math:`K(\theta)`, on the unit circle: shape ``grid`` or ``(*grid, channels)``.

        Raises
        ------
        ValueError
            If ``theta`` is invalid.
        """
        S = self.diagonalize(theta).full_blocks()
        return S[..., 0, 0] if self.channels == 1 else np.linalg.eigvals(S)
