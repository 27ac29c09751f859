"""structops: parametric structured linear operators with Jacobians, built on pylops.

A kernel family describes a structured matrix ``K(θ)`` for every parameter vector ``θ``;
every family offers ``matrix``, ``Q``, ``op`` (a pylops ``LinearOperator``), the batched
``apply`` and the Jacobian ``jac``. See :mod:`structops.testing` for the dot and Taylor tests.
"""

from . import kernels, solvers, testing
from .kernels import *  # noqa: F403 -- the families, re-exported through kernels.TOP_LEVEL

__version__ = "0.1.0"


def __getattr__(name: str):
    # structops.train (checkpoints, data loaders, optimisers, plots) is imported on first use:
    # `import structops` stays light for users who only want the operators.
    if name == "train":
        import importlib

        return importlib.import_module(".train", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [*kernels.TOP_LEVEL, "testing", "solvers", "train", "__version__"]  # noqa: F405 -- train: __getattr__
