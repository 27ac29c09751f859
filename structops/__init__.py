"""structops: parametric structured linear operators with Jacobians, built on pylops.

A kernel family describes a structured matrix ``K(θ)`` for every parameter vector ``θ``;
every family offers ``matrix``, ``Q``, ``op`` (a pylops ``LinearOperator``), the batched
``apply`` and the Jacobian ``jac``. See :mod:`structops.testing` for the dot and Taylor tests.
"""

from . import solvers, testing
from .kernels import (
    Antisymmetric,
    AntisymmetricConv,
    AvgPool,
    Banded,
    BatchOperator,
    CayleyConv,
    Chain,
    Conv,
    Dense,
    DepthwiseSeparableConv,
    Diagonal,
    KernelJacobian,
    KernelOperator,
    LinearKernel,
    LinearReparam,
    MMatrix,
    MMatrixConv,
    ParametricKernel,
    SeparableConv,
    Softplus,
    Sparse,
    SymmetricConv,
    Wavelet,
    accelerator,
    set_accelerator,
    set_num_threads,
)

__version__ = "0.1.0"


def __getattr__(name: str):
    # structops.train (checkpoints, data loaders, optimisers, plots) is imported on first use:
    # `import structops` stays light for users who only want the operators.
    if name == "train":
        import importlib

        return importlib.import_module(".train", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ParametricKernel",
    "KernelOperator",
    "KernelJacobian",
    "BatchOperator",
    "LinearKernel",
    "LinearReparam",
    "Dense",
    "Diagonal",
    "Antisymmetric",
    "MMatrix",
    "Softplus",
    "Conv",
    "SeparableConv",
    "DepthwiseSeparableConv",
    "MMatrixConv",
    "SymmetricConv",
    "AntisymmetricConv",
    "CayleyConv",
    "AvgPool",
    "Chain",
    "Sparse",
    "Banded",
    "Wavelet",
    "set_num_threads",
    "set_accelerator",
    "accelerator",
    "testing",
    "solvers",
    "train",
    "__version__",
]
