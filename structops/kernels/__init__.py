"""Kernel families: one module per family, all honouring :class:`ParametricKernel`'s contract."""

from ._base import KernelJacobian, KernelOperator, ParametricKernel
from ._conv_core import accelerator, set_accelerator, set_num_threads
from .antisymmetric import Antisymmetric
from .compose import Chain, LinearMap
from .conv import Conv
from .dense import Dense
from .diagonal import Diagonal
from .linear import LinearKernel
from .mmatrix import MMatrix
from .pooling import AvgPool
from .reparam import Softplus

__all__ = [
    "ParametricKernel",
    "KernelOperator",
    "KernelJacobian",
    "LinearKernel",
    "Dense",
    "Diagonal",
    "Antisymmetric",
    "MMatrix",
    "Softplus",
    "Conv",
    "AvgPool",
    "Chain",
    "LinearMap",
    "set_num_threads",
    "set_accelerator",
    "accelerator",
]
