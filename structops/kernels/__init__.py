"""Kernel families: one module per family, all honouring :class:`ParametricKernel`'s contract.

The contract lives in ``_base.py``, the pylops operators it hands out in :mod:`~structops.kernels.operators`
(``batch.py`` for a batch of examples); the convolution families and their engine have a folder of their own, ``conv/``.
"""

from .._backend import accelerator, set_accelerator, set_num_threads
from ._base import ParametricKernel, as_kernel
from .antisymmetric import Antisymmetric
from .batch import BatchOperator
from .compose import Chain, LinearMap
from .conv import (
    AntisymmetricConv,
    AvgPool,
    CayleyConv,
    Conv,
    DepthwiseSeparableConv,
    MMatrixConv,
    SeparableConv,
    SymmetricConv,
)
from .dense import Dense
from .diagonal import Diagonal
from .linear import LinearKernel
from .mmatrix import MMatrix
from .operators import KernelJacobian, KernelOperator
from .patterns import Banded, Sparse
from .reparam import LinearReparam, Reparametrized, Softplus
from .wavelet import Wavelet

__all__ = [
    "ParametricKernel",
    "KernelOperator",
    "KernelJacobian",
    "BatchOperator",
    "LinearKernel",
    "Dense",
    "Diagonal",
    "Antisymmetric",
    "MMatrix",
    "Softplus",
    "Reparametrized",
    "LinearReparam",
    "Conv",
    "SeparableConv",
    "DepthwiseSeparableConv",
    "MMatrixConv",
    "SymmetricConv",
    "AntisymmetricConv",
    "CayleyConv",
    "AvgPool",
    "Chain",
    "LinearMap",
    "Sparse",
    "Banded",
    "Wavelet",
    "as_kernel",
    "set_num_threads",
    "set_accelerator",
    "accelerator",
]

#: The names :mod:`structops` re-exports at the top level (``structops.Conv``): every public name
#: here but the helpers for writing families.
TOP_LEVEL = [name for name in __all__ if name not in ("Reparametrized", "LinearMap", "as_kernel")]
