"""structops: parametric structured linear operators with Jacobians, built on pylops.

A kernel family describes a structured matrix ``K(θ)`` for every parameter vector ``θ``;
every family offers ``matrix``, ``Q``, ``op`` (a pylops ``LinearOperator``), the batched
``apply`` and the Jacobian ``jac``. See :mod:`structops.testing` for the dot and Taylor tests.
"""

from . import solvers, testing, train
from .kernels import (
    Antisymmetric,
    AvgPool,
    Chain,
    Conv,
    Dense,
    Diagonal,
    KernelJacobian,
    KernelOperator,
    LinearKernel,
    MMatrix,
    ParametricKernel,
    Softplus,
    accelerator,
    set_accelerator,
    set_num_threads,
)

__version__ = "0.1.0"

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
    "set_num_threads",
    "set_accelerator",
    "accelerator",
    "testing",
    "solvers",
    "train",
    "__version__",
]
