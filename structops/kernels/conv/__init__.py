"""Convolution families and their engine.

* :class:`Conv` -- multi-channel convolutions in 1, 2 and 3 dimensions, every boundary
  condition, stride (:mod:`.conv`);
* :class:`ConvBased` -- the convolution view of families whose stencil is built from fewer
  parameters (:mod:`.based`);
* :class:`AvgPool` -- average pooling, the fixed map composed after a convolution (:mod:`.pooling`);
* the engine: :mod:`._core` (padding, direct sums, FFTs) and :mod:`._numba` (the compiled
  direct kernels, when numba is installed).
"""

from .based import ConvBased
from .conv import Conv
from .pooling import AvgPool

__all__ = ["AvgPool", "Conv", "ConvBased"]
