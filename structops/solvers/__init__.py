r"""Solvers and spectral tools for structured operators.

* exact :math:`O(N\log N)` inverses of kernels diagonalised by a fast transform (:func:`inverse`,
  :func:`implicit_step`: periodic convolutions through the FFT, doubly symmetric ones with mirror
  boundaries through the DCT, outer-product stencils through Kronecker factors), and their
  spectra (:func:`svdvals`, :func:`spectral_norm`, :func:`cond`, :func:`eigvals`; certified
  bounds or estimates for other kernels). :func:`route` says which route a call takes and why;
* circulant preconditioners for zero-boundary convolutions (:func:`circulant_preconditioner`,
  :func:`circulant_eigvals`);
* learning a stencil (or any affine family's parameters) from examples (:func:`learn_stencil`);
* Tikhonov regularisation with an operator ``L`` (:func:`tikhonov`: exact through the
  diagonalisation, else lsqr/cgls/cg with split circulant preconditioners) and the choice of
  its weight from the data (:func:`choose_alpha`: GCV, discrepancy principle, L-curve);
* Lipschitz-bounded layers (:func:`project_spectral_norm`, :func:`certified_norm_bound`).

Every operator returned is a pylops ``LinearOperator`` with its adjoint, usable as it is with
``scipy.sparse.linalg`` (``cg``, ``minres``, ``gmres``, ``lsqr``, ``lsmr``, ``svds``) and pylops' solvers.
This package is the one public import path of every name in ``__all__``, including the
:class:`Diagonalized` operators that ``kernel.diagonalize(theta)`` returns.
"""

import warnings
from typing import Any

from ..kernels.diagonalized import (
    CosineMultiplier,
    Diagonalized,
    FourierMultiplier,
    KroneckerMultiplier,
    PeriodicEmbedding,
)
from ._blocks import SINGULAR_FACTOR, IllConditionedWarning
from ._lanczos import EstimateWarning, SpectralEstimate
from ._routes import Route, route
from .deblurrer import Deblurrer
from .learn import LearnResult, learn_stencil
from .lipschitz import certified_norm_bound, project_spectral_norm
from .preconditioners import KINDS, circulant_eigvals, circulant_preconditioner, cosine_eigvals
from .regularization import AlphaChoice, choose_alpha
from .spectral import cond, eigvals, implicit_step, inverse, spectral_norm, svdvals
from .tikhonov import ConvergenceWarning, TikhonovResult, split_preconditioner, tikhonov

__all__ = [
    "KINDS",
    "SINGULAR_FACTOR",
    "AlphaChoice",
    "ConvergenceWarning",
    "CosineMultiplier",
    "Diagonalized",
    "EstimateWarning",
    "FourierMultiplier",
    "IllConditionedWarning",
    "KroneckerMultiplier",
    "LearnResult",
    "PeriodicEmbedding",
    "Route",
    "SpectralEstimate",
    "TikhonovResult",
    "certified_norm_bound",
    "choose_alpha",
    "circulant_eigvals",
    "circulant_preconditioner",
    "cond",
    "eigvals",
    "implicit_step",
    "inverse",
    "learn_stencil",
    "project_spectral_norm",
    "route",
    "spectral_norm",
    "split_preconditioner",
    "svdvals",
    "tikhonov",
    "Deblurrer",
    "cosine_eigvals",
]


# ------------------------------------------------------------- deprecated
def _is_circulant(kernel) -> bool:
    """Whether ``kernel`` is a block-circulant convolution family (a reparametrisation: its inner family's)."""
    from ..kernels._base import ParametricKernel
    from ..kernels.conv._core import block_circulant
    from ..kernels.reparam import Reparametrized

    while isinstance(kernel, Reparametrized) and not hasattr(kernel, "geometry"):
        kernel = kernel.kernel
    geometry = getattr(kernel, "geometry", None) if isinstance(kernel, ParametricKernel) else None
    return geometry is not None and block_circulant(geometry)


#: Removed names the documentation once used: name -> (replacement, the call it forwards to).
_DEPRECATED: dict[str, tuple[str, Any]] = {
    "dct_inverse": ("structops.solvers.inverse", lambda *a, **k: inverse(*a, **k)),
    "dct_implicit_step": ("structops.solvers.implicit_step", lambda *a, **k: implicit_step(*a, **k)),
    "dct_eigvals": ("structops.solvers.eigvals", lambda *a, **k: eigvals(*a, **k)),
    "strang_preconditioner": (
        "structops.solvers.circulant_preconditioner(..., kind='strang')",
        lambda *a, **k: circulant_preconditioner(*a, kind="strang", **k),
    ),
    "chan_preconditioner": (
        "structops.solvers.circulant_preconditioner(..., kind='chan')",
        lambda *a, **k: circulant_preconditioner(*a, kind="chan", **k),
    ),
    "is_circulant": (
        "isinstance(kernel.diagonalize(theta), structops.solvers.FourierMultiplier) or "
        "structops.solvers.route(kernel, theta, 'inverse').name",
        _is_circulant,
    ),
}


def __getattr__(name: str) -> Any:
    """Thin deprecated aliases of removed functions: each call warns and forwards to its replacement."""
    if name not in _DEPRECATED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    replacement, target = _DEPRECATED[name]

    def alias(*args, **kwargs):
        warnings.warn(
            f"structops.solvers.{name} is deprecated and will be removed; use {replacement}.",
            DeprecationWarning,
            stacklevel=2,
        )
        return target(*args, **kwargs)

    alias.__name__ = alias.__qualname__ = name
    alias.__doc__ = f"Deprecated: use {replacement}."
    return alias
