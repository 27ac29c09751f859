r"""Solvers and spectral tools for structured operators.

* exact :math:`O(N\log N)` inverses of periodic convolutions (:func:`inverse`, :func:`implicit_step`),
  and of doubly symmetric ones with mirror boundaries through the DCT (:mod:`.dct`),
  and their spectra (:func:`spectral_norm`, :func:`cond`, :func:`eigvals`, estimates for other kernels);
* circulant preconditioners for zero-boundary convolutions (:func:`circulant_preconditioner`,
  :func:`strang_preconditioner`, :func:`chan_preconditioner`, :func:`circulant_eigvals`);
* learning a stencil (or any affine family's parameters) from examples (:func:`learn_stencil`);
* Tikhonov regularisation with an operator ``L`` (:func:`tikhonov`: exact through the
  diagonalisation, else lsqr/cgls/cg with split circulant preconditioners) and the choice of
  its weight from the data (:func:`choose_alpha`: GCV, discrepancy principle, L-curve).

Every operator returned is a pylops ``LinearOperator`` with its adjoint, usable as it is with
``scipy.sparse.linalg`` (``cg``, ``minres``, ``gmres``, ``lsqr``, ``lsmr``, ``svds``) and pylops' solvers.
"""

from ..kernels.diagonalized import (
    CosineMultiplier,
    Diagonalized,
    FourierMultiplier,
    KroneckerMultiplier,
    PeriodicEmbedding,
)
from ._routes import Route, route
from .dct import dct_eigvals, dct_implicit_step, dct_inverse
from .deblurrer import Deblurrer
from .learn import LearnResult, learn_stencil
from .lipschitz import certified_norm_bound, project_spectral_norm
from .preconditioners import (
    KINDS,
    chan_preconditioner,
    circulant_eigvals,
    circulant_preconditioner,
    cosine_eigvals,
    strang_preconditioner,
)
from .regularization import AlphaChoice, choose_alpha
from .spectral import (
    SINGULAR_FACTOR,
    EstimateWarning,
    IllConditionedWarning,
    SpectralEstimate,
    cond,
    eigvals,
    implicit_step,
    inverse,
    is_circulant,
    spectral_norm,
    svdvals,
)
from .tikhonov import ConvergenceWarning, TikhonovResult, split_preconditioner, tikhonov

__all__ = [
    "KINDS",
    "SINGULAR_FACTOR",
    "EstimateWarning",
    "IllConditionedWarning",
    "FourierMultiplier",
    "CosineMultiplier",
    "SpectralEstimate",
    "LearnResult",
    "chan_preconditioner",
    "circulant_eigvals",
    "circulant_preconditioner",
    "cond",
    "dct_eigvals",
    "dct_implicit_step",
    "dct_inverse",
    "eigvals",
    "implicit_step",
    "inverse",
    "is_circulant",
    "learn_stencil",
    "spectral_norm",
    "strang_preconditioner",
    "Diagonalized",
    "KroneckerMultiplier",
    "PeriodicEmbedding",
    "Route",
    "route",
    "svdvals",
    "certified_norm_bound",
    "project_spectral_norm",
    "AlphaChoice",
    "ConvergenceWarning",
    "TikhonovResult",
    "choose_alpha",
    "split_preconditioner",
    "tikhonov",
    "Deblurrer",
    "cosine_eigvals",
]
