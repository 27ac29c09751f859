r"""Convolution families whose stencil is a function of their parameters: :math:`K(\varphi) = C(w(\varphi))`.

The cheaper convolution models of the lecture notes (Lars Ruthotto, *Numerical Methods for
Deep Learning*, "Parametric Models": symmetric, separable, M-matrix stencils) are all a
:class:`~structops.Conv` :math:`C(w)` whose full stencil :math:`w = w(\varphi)` is built from
fewer parameters. :class:`ConvBased` gives such a family the convolution's geometry and
spectral tools (``grid``, ``stencil``, ``bc``, ``eigvals``,
``weights``, ``theta_to_torch``), so solvers treat it as the convolution it is; it is mixed
into a :class:`~structops.kernels.Reparametrized` (or :class:`~structops.kernels.LinearReparam`)
whose inner family is that :class:`~structops.Conv`.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING

import numpy as np

from ..diagonalized import ConvStencil
from ._core import ConvGeometry
from .conv import Conv, deprecated_symbol

__all__ = ["ConvBased", "ConvView"]


def conv_itself(kernel) -> Conv | None:
    """``kernel`` when it is a convolution whose ``θ`` is its stencil (``as_convolution`` names itself); else None."""
    view = kernel.as_convolution()
    return view.conv if view is not None and view.conv is kernel else None


class ConvView:
    """Mixin: a convolution family's geometry (grid, stencil, bc, stride, channels), read from its :attr:`geometry`."""

    @property
    @abc.abstractmethod
    def geometry(self) -> ConvGeometry:
        """The validated geometry (grid, stencil, stride, bc, channels)."""

    @property
    def grid(self) -> tuple[int, ...]:
        """Shape of one image."""
        return self.geometry.grid

    @property
    def stencil(self) -> tuple[int, ...]:
        """Shape of one stencil."""
        return self.geometry.stencil

    @property
    def bc(self) -> str:
        """The boundary condition."""
        return self.geometry.bc

    @property
    def stride(self) -> tuple[int, ...]:
        """Output sampling step per axis."""
        return self.geometry.stride

    @property
    def in_channels(self) -> int:
        """Input channels."""
        return self.geometry.cin

    @property
    def out_channels(self) -> int:
        """Output channels."""
        return self.geometry.cout

    @property
    def dilation(self) -> tuple[int, ...]:
        """Spacing of the stencil taps per axis (see :class:`~structops.kernels.conv.ConvGeometry`)."""
        return self.geometry.dilation

    @property
    def groups(self) -> int:
        """Channel groups (block-diagonal channel structure)."""
        return self.geometry.groups

    @property
    def padding(self) -> tuple[tuple[int, int], ...]:
        """The resolved ``(before, after)`` padding per axis."""
        return self.geometry.padding


class ConvBased(ConvView):
    """Mixin: the convolution view of a reparametrised :class:`~structops.Conv` (``self.kernel``)."""

    kernel: Conv

    if TYPE_CHECKING:  # provided by the Reparametrized family the mixin is combined with

        def _map(self, phi: np.ndarray) -> np.ndarray: ...

        def validate_theta(self, theta, name: str = "theta") -> np.ndarray: ...  # noqa: D102

    @property
    def conv(self) -> Conv:
        """The underlying convolution :math:`C(w)`."""
        return self.kernel

    @property
    def geometry(self) -> ConvGeometry:
        """The convolution's validated geometry (grid, stencil, stride, bc, channels)."""
        return self.kernel.geometry

    def weights(self, theta) -> np.ndarray:
        r"""The full stencil :math:`w(\varphi)`, shape ``(out_channels, in_channels, *stencil)``."""
        return self._map(self.validate_theta(theta)).reshape(self.kernel.theta_shape)

    def as_convolution(self) -> ConvStencil:
        """The convolution and :meth:`weights`; ``solve`` from a linear reparametrisation of it, if any."""
        linear = super().as_convolution()  # type: ignore[misc]  # the Reparametrized family's (LinearReparam: lsqr)
        return ConvStencil(self.kernel, self.weights, None if linear is None else linear.solve)

    def symbol(self, theta) -> np.ndarray:
        """Deprecated: use ``conv.diagonalize(weights(theta).ravel()).full_blocks()`` (the convolution's blocks)."""
        return deprecated_symbol(self.kernel, self.weights(theta).ravel())

    def eigvals(self, theta) -> np.ndarray:
        """Eigenvalues of the single-channel periodic convolution (see :meth:`structops.Conv.eigvals`)."""
        return self.kernel.eigvals(self.weights(theta).ravel())

    def theta_to_torch(self, theta) -> np.ndarray:
        """The PyTorch weight computing the same map (see :meth:`structops.Conv.theta_to_torch`)."""
        return self.kernel.theta_to_torch(self.weights(theta).ravel())
