"""Solvers and spectral tools: exact FFT solves, circulant preconditioners, learning stencils from data."""

from ._fourier import FourierMultiplier
from .spectral import SINGULAR_FACTOR, cond, eigvals, implicit_step, inverse, is_circulant, spectral_norm

__all__ = [
    "SINGULAR_FACTOR",
    "FourierMultiplier",
    "cond",
    "eigvals",
    "implicit_step",
    "inverse",
    "is_circulant",
    "spectral_norm",
]
