r"""The Krylov side of Tikhonov solves: result record, preconditioner models, and the solve itself.

A *preconditioner model* replaces :math:`K` and :math:`L` by operators one fast transform
diagonalises, :math:`C = Q\Lambda Q^\top` and :math:`C_L = Q\Lambda_L Q^\top`, and keeps only their
squared symbols :math:`|\lambda|^2`, :math:`|\lambda_L|^2` (independent of :math:`\alpha`, so built
once). For any :math:`\alpha` the split preconditioner is then the multiplier
:math:`P_\alpha = (|\lambda|^2 + \alpha|\lambda_L|^2)^{-1/2}`:

* ``"strang"``, ``"chan"``: the circulant (FFT) approximations of a zero-boundary convolution
  (:func:`structops.solvers.circulant_eigvals`), a periodic one's own symbol;
* ``"dct"``: the cosine-transform model of a mirrored-boundary convolution from its stencil's
  doubly symmetric part (Ng, Chan and Tang 1999; :func:`structops.solvers.cosine_eigvals`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pylops
import scipy.fft as sfft
import scipy.sparse.linalg as spla
from pylops.optimization.basic import cgls as pylops_cgls

from .._backend import workers
from ..kernels.diagonalized import (
    CosineMultiplier,
    Diagonalized,
    FourierMultiplier,
    cosine_symbol,
    full_spectrum,
    half_spectrum,
)
from ._filters import Regularizer
from .preconditioners import MIRRORS, circulant_eigvals, cosine_eigvals, single_conv, symmetric_part

__all__ = [
    "MAXITER",
    "PRECONDITIONERS",
    "SOLVERS",
    "ConvergenceWarning",
    "PreconditionerModel",
    "RealSymbolMultiplier",
    "TikhonovResult",
    "build_model",
    "cosine_model_helps",
    "krylov_solve",
    "normal_cg",
    "normal_operator",
]

#: The solvers :func:`~structops.solvers.tikhonov` accepts.
SOLVERS = ("auto", "exact", "lsqr", "cgls", "cg")

#: The preconditioners of the Krylov route (``"auto"`` picks one, or none, per kernel).
PRECONDITIONERS = ("auto", "strang", "chan", "dct")

#: Default most iterations of the Krylov solvers.
MAXITER = 5000

#: ``"auto"`` keeps the cosine model only when its estimated condition number is below this
#: fraction of the unpreconditioned one (CG's iteration count scales with its square root).
_HELP_RATIO = 0.5


class ConvergenceWarning(UserWarning):
    """A Krylov solve stopped at ``maxiter`` before reaching ``rtol``."""


@dataclass(frozen=True)
class TikhonovResult:
    r"""What :func:`~structops.solvers.tikhonov` returns with ``full_output=True``.

    For a stack of ``m`` images the per-image fields are arrays of length ``m``.

    Attributes
    ----------
    x : numpy.ndarray
        The solution, in the shape ``b`` was given (``in_shape``, the input grid, or flat;
        with a leading axis ``m`` for a stack).
    iterations : int or numpy.ndarray
        Krylov iterations (0 for the exact solve).
    residual_norm : float or numpy.ndarray
        :math:`\|K x - b\|`.
    method : str
        ``"exact"`` or the Krylov solver, with its preconditioner (``"lsqr+chan"``).
    alpha : float or numpy.ndarray
        The weight used.
    converged : bool
        False when a Krylov solve stopped at ``maxiter`` (a :class:`ConvergenceWarning` was emitted).
    """

    x: np.ndarray
    iterations: int | np.ndarray
    residual_norm: float | np.ndarray
    method: str
    alpha: float | np.ndarray
    converged: bool = True


# ------------------------------------------------------------------ models
@dataclass(frozen=True)
class PreconditionerModel:
    r"""Squared symbols :math:`|\lambda|^2`, :math:`|\lambda_L|^2` of a fast-transform model of ``K`` and ``L``.

    Attributes
    ----------
    kind : str
        ``"strang"``, ``"chan"`` (FFT) or ``"dct"``.
    transform : str
        ``"fft"`` or ``"dct2"`` (the DCT-II also for ``bc="reflect"``: its symmetric multiplier keeps
        ``cg``'s preconditioner symmetric, which the DCT-I's edge weights would not).
    grid : tuple of int
    k2, l2 : numpy.ndarray, shape ``grid``
        :math:`|\lambda|^2` and :math:`|\lambda_L|^2` (``l2`` is 1 for :math:`L = I`).
    """

    kind: str
    transform: str
    grid: tuple[int, ...]
    k2: np.ndarray
    l2: np.ndarray

    def denominator(self, alpha: float) -> np.ndarray:
        r""":math:`|\lambda|^2 + \alpha|\lambda_L|^2`, checked to be nonsingular."""
        denom = self.k2 + alpha * self.l2
        if not float(denom.min()) > float(denom.max()) * np.finfo(denom.dtype).eps:
            raise ValueError(
                f"`alpha` = {alpha!r} makes the {self.kind} model CᵀC + α·C_LᵀC_L singular (smallest "
                f"{float(denom.min()):.3e}); pass alpha > 0."
            )
        return denom

    def applier(self, alpha: float, power: float, dtype) -> pylops.LinearOperator:
        r"""The multiplier of :meth:`operator` in the form the Krylov loop applies, cheapest per product.

        For the FFT model a :class:`RealSymbolMultiplier` (real FFTs, the real half-grid symbol
        precomputed in ``dtype``); for the cosine model the :class:`CosineMultiplier` itself.
        """
        if self.transform != "fft":
            return self.operator(alpha, power, dtype)
        half = half_spectrum(self.denominator(alpha), len(self.grid))
        name = f"(CᵀC + {alpha:g}·C_LᵀC_L)^-{power:g}"
        return RealSymbolMultiplier((half ** (-power)).astype(dtype), self.grid, name=name)

    def operator(self, alpha: float, power: float, dtype) -> Diagonalized:
        r"""The symmetric positive definite multiplier :math:`(|\lambda|^2 + \alpha|\lambda_L|^2)^{-p}`."""
        mult = self.denominator(alpha) ** (-power)
        name = f"(CᵀC + {alpha:g}·C_LᵀC_L)^-{power:g}"
        if self.transform == "fft":
            blocks = half_spectrum(mult, len(self.grid)).astype(np.result_type(dtype, np.complex64))
            return FourierMultiplier(blocks[..., None, None], self.grid, dtype=dtype, name=name)
        return CosineMultiplier(mult.astype(dtype), 2, dtype=dtype, name=name)


class RealSymbolMultiplier(pylops.LinearOperator):
    r"""A symmetric BCCB preconditioner :math:`x \mapsto F^{-1}(h \circ F x)` with a real symbol ``h``, made cheap.

    The preconditioners' symbols :math:`h = (|\lambda|^2 + \alpha|\lambda_L|^2)^{-p}` are real and
    even, so the operator is symmetric and one product is ``irfftn(h_half * rfftn(x))``: two real
    FFTs (``scipy.fft`` with :func:`structops.workers` workers), the half-grid symbol stored once
    in the problem's dtype (a float32 solve runs its FFTs in float32), the product in place in the
    transform's buffer and the inverse FFT allowed to overwrite it. No SVD is involved anywhere:
    ``h`` comes from the stencil's FFT (:func:`structops.solvers.circulant_eigvals`).

    Parameters
    ----------
    half : numpy.ndarray, real, shape ``(*grid[:-1], grid[-1] // 2 + 1)``
        The symbol on the ``rfftn`` half grid.
    grid : tuple of int
    name : str, optional
    """

    def __init__(self, half: np.ndarray, grid: tuple[int, ...], *, name: str | None = None) -> None:
        self.half = half
        self.grid = tuple(grid)
        n = int(np.prod(self.grid))
        super().__init__(dtype=half.dtype, shape=(n, n), name=name)

    def _matvec(self, x: np.ndarray) -> np.ndarray:
        w = workers()
        X = sfft.rfftn(np.reshape(x, self.grid), workers=w)
        X *= self.half
        return sfft.irfftn(X, s=self.grid, workers=w, overwrite_x=True).reshape(-1)

    _rmatvec = _matvec

    def _adjoint(self) -> RealSymbolMultiplier:
        return self


def _fft_symbol(kernel, theta, kind: str, name: str) -> np.ndarray:
    """Full-grid FFT symbol of ``kernel(theta)``: its own if periodic (no other work), else ``kind``'s circulant."""
    if getattr(kernel, "bc", None) == "periodic":  # its own FFT symbol, when it has one
        D = kernel.diagonalize(theta)
        if isinstance(D, FourierMultiplier) and D.blocks.shape[-2:] == (1, 1):
            return full_spectrum(D.blocks[..., 0, 0], D.grid)
    try:
        return circulant_eigvals(kernel, theta, kind)
    except ValueError:
        raise ValueError(
            f"`preconditioner` {kind!r} needs `{name}` to be a one-channel stride-1 convolution (zero boundary: its "
            f"{kind} circulant; periodic: itself), got {kernel!r}."
        ) from None


def _cosine_symbol(kernel, theta, name: str) -> np.ndarray:
    """DCT-II symbol of ``kernel(theta)``'s doubly symmetric part (exact for ``bc="symmetric"``)."""
    conv = single_conv(kernel, MIRRORS)
    if conv is not None and conv.bc == "symmetric":
        return cosine_eigvals(kernel, theta)
    stencil = _stencil_of(kernel, theta)
    if conv is not None and stencil is not None:  # reflect: DCT-I's edge weights would make the model unsymmetric
        return cosine_symbol(symmetric_part(stencil), conv.grid, 2)
    raise ValueError(
        f"`preconditioner` 'dct' needs `{name}` to be a one-channel stride-1 convolution with a mirrored boundary "
        f"{MIRRORS!r}, got {kernel!r}."
    )


def build_model(kernel, theta, reg: Regularizer, kind: str) -> PreconditionerModel:
    """The :class:`PreconditionerModel` of ``kind`` (``"strang"``, ``"chan"``, ``"dct"``) for ``K`` and ``L``.

    Raises
    ------
    ValueError
        If ``K`` or ``L`` is not a convolution this model covers (the message names the one that is not).
    """
    if reg.op is not None and (reg.kernel is None or reg.theta is None):
        raise ValueError(f"`preconditioner` needs `L` = family.op(theta_L) of a convolution, got {reg.op!r}.")
    if kind == "dct":
        lam = _cosine_symbol(kernel, theta, "kernel")
        transform = "dct2"
        lam_l = None if reg.op is None else _cosine_symbol(reg.kernel, reg.theta, "L")
    else:
        lam = _fft_symbol(kernel, theta, kind, "kernel")
        transform = "fft"
        lam_l = None if reg.op is None else _fft_symbol(reg.kernel, reg.theta, kind, "L")
    k2 = np.abs(lam.astype(np.complex128 if np.iscomplexobj(lam) else np.float64)) ** 2
    l2 = np.ones_like(k2) if lam_l is None else np.abs(lam_l) ** 2
    if l2.shape != k2.shape:
        raise ValueError(f"`L` acts on grid {l2.shape}, the kernel on {k2.shape}.")
    return PreconditionerModel(kind, transform, tuple(k2.shape), k2, l2.astype(np.float64))


def _periodic_power(stencil: np.ndarray, grid: tuple[int, ...]) -> np.ndarray:
    r""":math:`|\hat w(\xi)|^2` of a centred stencil on the periodic ``grid`` (stencil larger than it: cropped)."""
    w = np.asarray(stencil, dtype=np.float64)
    w = w[tuple(slice(0, min(s, n)) for s, n in zip(w.shape, grid))]
    full = np.zeros(grid)
    full[tuple(slice(0, s) for s in w.shape)] = w
    return np.abs(sfft.rfftn(full)) ** 2


def _stencil_of(kernel, theta) -> np.ndarray | None:
    conv = single_conv(kernel, (*MIRRORS, "zero", "periodic"))
    if conv is None:
        return None
    return kernel.as_convolution().weights(theta).reshape(conv.stencil)


def cosine_model_helps(kernel, theta, reg: Regularizer, alpha: float) -> bool:
    r"""Whether the cosine model of a mirrored-boundary ``K`` (and ``L``) is worth applying at ``alpha``.

    A cheap estimate, from the stencils alone: on the periodic grid the true symbol is
    :math:`a(\xi) = |\hat w(\xi)|^2 + \alpha|\hat l(\xi)|^2`, the model's
    :math:`m(\xi) = |\hat w_s(\xi)|^2 + \alpha|\hat l_s(\xi)|^2` (doubly symmetric parts). The
    preconditioned operator's condition number is about :math:`\max(a/m)/\min(a/m)`, the plain
    one's :math:`\max a/\min a`; the model is kept when the former is below ``_HELP_RATIO`` times
    the latter (a poor model, e.g. the symmetric part of a diagonal motion blur, is dropped).
    """
    w = _stencil_of(kernel, theta)
    conv = single_conv(kernel, MIRRORS)
    if w is None or conv is None:
        return False
    grid = conv.grid
    l_w = None if reg.op is None else _stencil_of(reg.kernel, reg.theta)
    if reg.op is not None and l_w is None:
        return False
    lpow = np.ones(1) if l_w is None else _periodic_power(l_w, grid)
    lpow_s = np.ones(1) if l_w is None else _periodic_power(symmetric_part(l_w), grid)
    a = _periodic_power(w, grid) + alpha * lpow
    m = _periodic_power(symmetric_part(w), grid) + alpha * lpow_s
    tiny = float(a.max()) * 1e-14
    if float(m.min()) <= tiny or float(a.min()) <= tiny:
        return False
    r = a / m
    return float(r.max() / r.min()) < _HELP_RATIO * float(a.max() / a.min())


# ------------------------------------------------------------------ solve
def _stack(K: pylops.LinearOperator, reg: Regularizer, alpha: float, P) -> pylops.LinearOperator:
    """``[K; sqrt(α) L] P`` (``L = I`` when ``reg.op`` is None), as one pylops operator."""
    n = K.shape[1]
    Lop = pylops.Identity(n, dtype=K.dtype) if reg.op is None else reg.op
    A = pylops.VStack([K, float(np.sqrt(alpha)) * Lop])
    return A if P is None else A @ P


def krylov_solve(K, reg: Regularizer, alpha: float, b: np.ndarray, solver: str, P, rtol: float, maxiter: int):
    """Solve the Tikhonov problem by ``solver``: ``(x, iterations, converged)``.

    ``P`` is the split preconditioner of ``lsqr``/``cgls``, or ``M = P²`` for ``cg``.
    """
    if solver == "cg":  # P is then the preconditioner M of the normal equations
        return normal_cg(normal_operator(K, reg, alpha), K.H @ b, P, rtol, maxiter)
    plain = P is None and reg.op is None  # damping by the solver itself
    A = K if plain else _stack(K, reg, alpha, P)
    rhs = b if plain else np.concatenate([b, np.zeros(A.shape[0] - b.size, dtype=b.dtype)])
    damp = float(np.sqrt(alpha)) if plain else 0.0
    if solver == "lsqr":
        out = spla.lsqr(A, rhs, damp=damp, atol=rtol, btol=rtol, iter_lim=maxiter)
        z, iterations, converged = out[0], int(out[2]), int(out[1]) in (1, 2, 4, 5)
    else:  # pylops' cgls: ||y - Op x||² + damp² ||x||²
        tol = float(rtol * np.linalg.norm(A.H @ rhs)) ** 2
        out = pylops_cgls(A, rhs, x0=np.zeros(A.shape[1], dtype=b.dtype), niter=maxiter, damp=damp, tol=tol)
        z, iterations = np.asarray(out[0]), int(out[2])
        converged = iterations < maxiter
    return (z if P is None else P @ z), iterations, converged


def normal_operator(K, reg: Regularizer, alpha: float) -> pylops.LinearOperator:
    r""":math:`K^\top K + \alpha L^\top L` as a pylops operator (``L = I`` when ``reg.op`` is None)."""
    Lop = reg.op
    return K.H @ K + alpha * (pylops.Identity(K.shape[1], dtype=K.dtype) if Lop is None else Lop.H @ Lop)


def normal_cg(A, rhs: np.ndarray, M, rtol: float, maxiter: int):
    """CG on the symmetric positive definite ``A x = rhs`` with preconditioner ``M``; ``(x, iterations, converged)``."""
    count = [0]

    def callback(_, count=count):
        count[0] += 1

    x, info = spla.cg(A, rhs, rtol=rtol, maxiter=maxiter, M=M, callback=callback)
    return x, count[0], info == 0
