"""Convolution families and their engine.

* :class:`Conv` -- multi-channel convolutions in 1, 2 and 3 dimensions, every boundary
  condition, stride (:mod:`.conv`);
* :class:`ConvBased` -- the convolution view of families whose stencil is built from fewer
  parameters (:mod:`.based`);
* :class:`SeparableConv`, :class:`DepthwiseSeparableConv` -- stencils built from 1-D
  factors or a depthwise stencil and a channel mix, applied pass by pass (:mod:`.separable`);
* :class:`MMatrixConv` -- depthwise stencils whose matrix is an M-matrix (:mod:`.mmatrix_conv`);
* :class:`SymmetricConv` -- stencils mirror symmetric about every axis (:mod:`.symmetric`);
* :class:`AntisymmetricConv`, :class:`CayleyConv` -- antisymmetric convolutions ``C - C^T`` and
  their orthogonal Cayley transforms (:mod:`.antisymmetric_conv`, :mod:`.cayley`);
* :class:`ConvGeometry` -- the geometry every convolution family builds (or takes) and
  validates once: grid, stencil, stride, dilation, groups, padding, boundary condition and channels;
* :class:`PolyphaseMultiplier` -- the exact per-frequency blocks of a strided periodic
  convolution (:mod:`.polyphase`);
* :class:`AvgPool` -- average pooling, the fixed map composed after a convolution (:mod:`.pooling`);
* the engine: :mod:`._core` (padding, direct sums, FFTs) and :mod:`._numba` (the compiled
  direct kernels, when numba is installed).
"""

from ._core import ConvGeometry
from .antisymmetric_conv import AntisymmetricConv
from .based import ConvBased
from .cayley import CayleyConv
from .conv import Conv
from .mmatrix_conv import MMatrixConv
from .polyphase import PolyphaseMultiplier
from .pooling import AvgPool
from .separable import DepthwiseSeparableConv, SeparableConv
from .symmetric import SymmetricConv

__all__ = [
    "AntisymmetricConv",
    "AvgPool",
    "CayleyConv",
    "Conv",
    "ConvBased",
    "ConvGeometry",
    "DepthwiseSeparableConv",
    "MMatrixConv",
    "PolyphaseMultiplier",
    "SeparableConv",
    "SymmetricConv",
]
