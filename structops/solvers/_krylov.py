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

import functools
import threading
from dataclasses import dataclass

import numpy as np
import pylops
import scipy.fft as sfft
import scipy.sparse.linalg as spla
from pylops.optimization.basic import cgls as pylops_cgls
from scipy.linalg import get_blas_funcs

from .._backend import blas_threads_for, workers
from ..kernels.conv import Conv
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
    "EdgeNormal",
    "NormalOperator",
    "PreconditionerModel",
    "RealSymbolMultiplier",
    "TikhonovResult",
    "build_model",
    "cosine_model_helps",
    "edge_cg",
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
    band : EdgeNormal or None
        For a zero-boundary ``K`` with :math:`L = I` on a grid large enough, :math:`K^\top K` as
        its periodic symbol plus exact edge strips (:func:`edge_cg` uses it); else None.
    """

    kind: str
    transform: str
    grid: tuple[int, ...]
    k2: np.ndarray
    l2: np.ndarray
    band: EdgeNormal | None = None

    def denominator(self, alpha: float) -> np.ndarray:
        r""":math:`|\lambda|^2 + \alpha|\lambda_L|^2`, checked to be nonsingular."""
        denom = self.k2 + alpha * self.l2
        if not float(denom.min()) > float(denom.max()) * np.finfo(denom.dtype).eps:
            raise ValueError(
                f"`alpha` = {alpha!r} makes the {self.kind} model CᵀC + α·C_LᵀC_L singular (smallest "
                f"{float(denom.min()):.3e}); pass alpha > 0."
            )
        return denom

    def applier(self, alpha: float, power: float, dtype, *, fft_dtype=None) -> pylops.LinearOperator:
        r"""The multiplier of :meth:`operator` in the form the Krylov loop applies, cheapest per product.

        For the FFT model a :class:`RealSymbolMultiplier` of dtype ``dtype`` whose real FFTs and
        half-grid symbol are in ``fft_dtype`` (default ``dtype``, what the solvers use: float32
        transforms of a float64 problem cost ``cg`` iterations, see :class:`RealSymbolMultiplier`);
        for the cosine model the :class:`CosineMultiplier` itself.
        """
        if self.transform != "fft":
            return self.operator(alpha, power, dtype)
        half = half_spectrum(self.denominator(alpha), len(self.grid))
        name = f"(CᵀC + {alpha:g}·C_LᵀC_L)^-{power:g}"
        symbol = (half ** (-power)).astype(dtype if fft_dtype is None else fft_dtype)
        mult = RealSymbolMultiplier(symbol, self.grid, dtype=dtype, name=name)
        mult.band = self.band if power == 1 and fft_dtype is None else None
        return mult

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
    FFTs (``scipy.fft`` with :func:`structops.workers` workers), the half-grid symbol stored once,
    the product in place in the transform's buffer and the inverse FFT allowed to overwrite it.
    No SVD is involved anywhere: ``h`` comes from the stencil's FFT
    (:func:`structops.solvers.circulant_eigvals`).

    The FFTs run in the symbol's precision, ``half.dtype``, whatever the operator's ``dtype``: a
    float32 symbol makes a float64 operator whose products are computed in float32 (rounded to
    about :math:`10^{-7}` relative) and returned in float64. The solvers do not use that form for
    a float64 problem: the symbol spans :math:`1/\alpha` over its minimum (about :math:`10^4`),
    the rounding perturbs the preconditioned operator by about :math:`10^{-3}`, and ``cg`` then
    takes 2 % (512², 9×9 Gaussian, α = 1e-4) to 17 % (48²) more iterations, which eats the
    transforms' saving (``benchmarks/README.md``).

    Parameters
    ----------
    half : numpy.ndarray, real, shape ``(*grid[:-1], grid[-1] // 2 + 1)``
        The symbol on the ``rfftn`` half grid, in the precision of the FFTs.
    grid : tuple of int
    dtype : numpy dtype, optional
        The operator's dtype (its products' dtype); default ``half.dtype``.
    name : str, optional
    """

    def __init__(self, half: np.ndarray, grid: tuple[int, ...], *, dtype=None, name: str | None = None) -> None:
        self.half = half
        self.grid = tuple(grid)
        self.band: EdgeNormal | None = None  # set by PreconditionerModel.applier for cg's M (edge_cg)
        self._buffers: dict[int, np.ndarray] = {}
        n = int(np.prod(self.grid))
        super().__init__(dtype=half.dtype if dtype is None else np.dtype(dtype), shape=(n, n), name=name)

    def apply(self, x: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Write the product with ``x`` (``N`` values) into ``out`` (a contiguous array of ``N``); return ``out``.

        On one FFT worker with a float64 symbol, ``numpy.fft`` transforms into a spectrum buffer
        kept per thread and back into ``out`` itself: no array of the grid's size is made per
        product. (Fresh FFT outputs are what made a product dear: at 512² the pair costs about
        2.5 ms of CPU with new arrays against 1.9 ms in place.) Otherwise ``scipy.fft`` with
        :func:`structops.workers` workers, in the symbol's precision (``numpy.fft`` has no
        workers, and no native float32).
        """
        w = workers()
        src = np.reshape(x, self.grid)
        dst = np.reshape(out, self.grid)
        if w == 1 and self.half.dtype == np.float64 and src.dtype == np.float64 and dst.dtype == np.float64:
            axes = tuple(range(len(self.grid)))
            X = self._spectrum()
            np.fft.rfftn(src, axes=axes, out=X)
            np.multiply(X, self.half, out=X)
            np.fft.irfftn(X, s=self.grid, axes=axes, out=dst)
            return out
        X = sfft.rfftn(src if src.dtype == self.half.dtype else src.astype(self.half.dtype), workers=w)
        X *= self.half
        np.copyto(dst, sfft.irfftn(X, s=self.grid, workers=w, overwrite_x=True), casting="unsafe")
        return out

    def _spectrum(self) -> np.ndarray:
        """The calling thread's complex128 work buffer of the half grid (threads never share one)."""
        key = threading.get_ident()
        X = self._buffers.get(key)
        if X is None:
            X = self._buffers[key] = np.empty(self.half.shape, dtype=np.complex128)
        return X

    def _matvec(self, x: np.ndarray) -> np.ndarray:
        return self.apply(x, np.empty(self.shape[0], dtype=np.result_type(self.dtype, x.dtype)))

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
    band = EdgeNormal.build(kernel, theta, kind) if kind != "dct" and reg.op is None else None
    return PreconditionerModel(kind, transform, tuple(k2.shape), k2, l2.astype(np.float64), band)


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

    ``P`` is the split preconditioner of ``lsqr``/``cgls``, or ``M = P²`` for ``cg``. The loop's
    vector operations (dot products, ``axpy``) run on one BLAS thread: they are memory-bound, and
    a BLAS pool woken between two numba kernels fights their threads for the cores (measured on
    2 cores, 512², 9×9: plain ``cg`` 4.9× slower with two BLAS threads than with one).
    """
    with blas_threads_for(1):
        return _krylov_solve(K, reg, alpha, b, solver, P, rtol, maxiter)


def _krylov_solve(K, reg: Regularizer, alpha: float, b: np.ndarray, solver: str, P, rtol: float, maxiter: int):
    if solver == "cg":  # P is then the preconditioner M of the normal equations
        A = normal_operator(K, reg, alpha)
        band = getattr(P, "band", None)
        if band is not None and reg.op is None and b.dtype == np.float64:
            return edge_cg(A, band, P, alpha, K.H @ b, rtol, maxiter)
        return normal_cg(A, K.H @ b, P, rtol, maxiter)
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


class NormalOperator(pylops.LinearOperator):
    r""":math:`K^\top K + \alpha L^\top L` (:math:`L = I` when ``L`` is None), one product at a time.

    A product is :math:`K^\top(Kx)` with :math:`\alpha x` (or :math:`\alpha L^\top(Lx)`) added in
    place by BLAS ``axpy``: the two stencil passes and one more pass over the vector, where
    pylops' composition ``K.H @ K + α·I`` copies ``x``, scales the copy and adds into a new array.

    Parameters
    ----------
    K : pylops.LinearOperator, shape (M, N)
    alpha : float
    L : pylops.LinearOperator, shape (P, N), optional
    """

    def __init__(self, K: pylops.LinearOperator, alpha: float, L: pylops.LinearOperator | None = None) -> None:
        self.K, self.alpha, self.L = K, float(alpha), L
        n = K.shape[1]
        dtype = K.dtype if L is None else np.result_type(K.dtype, L.dtype)
        super().__init__(dtype=dtype, shape=(n, n), name="KᵀK + αLᵀL")

    def _matvec(self, x: np.ndarray) -> np.ndarray:
        y = np.asarray(self.K.rmatvec(self.K.matvec(x)))
        extra = x if self.L is None else np.asarray(self.L.rmatvec(self.L.matvec(x)))
        dtype = np.result_type(y, extra)
        if y.dtype != dtype or not y.flags.writeable or np.may_share_memory(y, extra):
            return y + self.alpha * extra
        return _axpy(extra.astype(dtype, copy=False), y, self.alpha)

    _rmatvec = _matvec

    def _adjoint(self) -> NormalOperator:
        return self


def _axpy(x: np.ndarray, y: np.ndarray, a: float) -> np.ndarray:
    """``y += a * x`` in place (BLAS ``axpy`` for contiguous real float vectors, numpy otherwise); ``y``."""
    if y.dtype in (np.float32, np.float64) and x.flags.c_contiguous and y.flags.c_contiguous:
        flat = y.reshape(-1)
        _blas_axpy(y.dtype)(x.reshape(-1), flat, a=a)
    else:
        y += a * x
    return y


@functools.cache
def _blas_axpy(dtype):
    return get_blas_funcs("axpy", dtype=dtype)


def normal_operator(K, reg: Regularizer, alpha: float) -> pylops.LinearOperator:
    r""":math:`K^\top K + \alpha L^\top L` (``L = I`` when ``reg.op`` is None), a :class:`NormalOperator`."""
    return NormalOperator(K, alpha, reg.op)


def normal_cg(A, rhs: np.ndarray, M, rtol: float, maxiter: int):
    r"""Preconditioned CG on the symmetric positive definite ``A x = rhs``; ``(x, iterations, converged)``.

    The loop of ``scipy.sparse.linalg.cg`` (same start :math:`x_0 = 0`, same stopping test
    :math:`\|r_k\| < \mathrm{rtol}\,\|\mathrm{rhs}\|` on the updated residual, same count),
    with its vector updates done in place (BLAS ``axpy``, no temporaries), the preconditioner
    applied into a buffer when it can (:meth:`RealSymbolMultiplier.apply`), and, with ``M``, the
    *flexible* (Polak--Ribière) direction update of Notay (2000),
    :math:`\beta_k = z_{k+1}^\top(r_{k+1} - r_k)/z_k^\top r_k = -a_k\, z_{k+1}^\top q_k / z_k^\top r_k`
    (:math:`q_k = A p_k`, :math:`a_k` the step): equal to Fletcher--Reeves' for an exactly
    applied symmetric ``M``, and the safer one when ``M`` is applied inexactly (in float32, or
    by FFTs whose rounding makes it slightly unsymmetric). Without ``M`` it is plain CG,
    :math:`\beta_k = \|r_{k+1}\|^2/\|r_k\|^2`.

    Parameters
    ----------
    A : pylops.LinearOperator or scipy.sparse.linalg.LinearOperator, shape (N, N)
        Symmetric positive definite.
    rhs : numpy.ndarray, shape (N,)
    M : LinearOperator or None
        Symmetric positive definite preconditioner (an approximation of :math:`A^{-1}`).
    rtol : float
    maxiter : int
    """
    rhs = np.asarray(rhs).reshape(-1)
    dtype = np.result_type(A.dtype, rhs.dtype)
    x = np.zeros(rhs.shape, dtype=dtype)
    r = rhs.astype(dtype, copy=True)
    atol = rtol * float(np.linalg.norm(r))
    z = r if M is None else np.empty_like(r)
    apply = None if M is None else getattr(M, "apply", None)
    rr = float(np.dot(r, r))
    p, q = None, r  # q: the last A p (read only once p is set)
    rho = a = 0.0
    for iteration in range(maxiter + 1):
        if np.sqrt(rr) < atol or rr == 0:
            return x, iteration, True
        if iteration == maxiter:
            break
        if apply is not None:
            apply(r, z)
        elif M is not None:
            z[:] = np.asarray(M.matvec(r)).reshape(-1)
        rho, rho_prev = (rr if M is None else float(np.dot(r, z))), rho
        if p is None:
            p = z.copy()
        else:  # Fletcher-Reeves plain; flexible Polak-Ribière with M
            beta = rho / rho_prev if M is None else -a * float(np.dot(z, q)) / rho_prev
            p *= beta
            p += z
        q = np.asarray(A.matvec(p)).reshape(-1)
        pq = float(np.dot(p, q))
        if not pq > 0:  # A not positive definite along p (or p = 0): no step is possible
            break
        a = rho / pq
        _axpy(p, x, a)
        _axpy(q, r, -a)
        rr = float(np.dot(r, r))
    return x, min(iteration, maxiter), False


# ------------------------------------------------------------------ cg without the stencil pass
class EdgeNormal:
    r""":math:`K^\top K` of a zero-boundary one-channel convolution as a periodic symbol plus exact edge strips.

    Away from the edges the zero-boundary ``K`` and its periodic version :math:`C` (Strang's
    circulant: the stencil wrapped around the grid) agree row by row, and so do
    :math:`K^\top K` and :math:`C^\top C`: they differ only at the pixels within
    :math:`s_a - 1` of an edge of axis :math:`a` (stencil size :math:`s_a`). So
    :math:`K^\top K z` is :math:`F^{-1}(|\lambda_S|^2 \hat z)` everywhere but on those bands,
    which :meth:`fix` overwrites with :math:`K^\top K z` computed exactly on strips of width
    :math:`2(s_a - 1)` along each edge (zero boundary on the strip: :math:`K^\top K z` on it is
    exact on its first :math:`s_a - 1` rows, which see no further than the strip).
    :func:`edge_cg` gets :math:`Az` from the spectrum it computes for the preconditioner anyway,
    instead of passing the stencil twice over the whole image.

    Attributes
    ----------
    grid : tuple of int
    k2 : numpy.ndarray, shape ``(*grid[:-1], grid[-1] // 2 + 1)``
        :math:`|\lambda_S|^2` on the ``rfftn`` half grid (float64).
    strips : list of (int, tuple of slice, pylops.LinearOperator, slice, tuple of slice)
        Per edge: the axis, the strip's place in the grid, ``K`` on the strip with that axis
        first, the kept band along it in the strip, and its place in the grid.
    """

    def __init__(self, grid: tuple[int, ...], k2: np.ndarray, strips: list, kind: str = "chan") -> None:
        self.grid, self.k2, self.strips, self.kind = grid, k2, strips, kind

    @classmethod
    def build(cls, kernel, theta, kind: str = "chan") -> EdgeNormal | None:
        r"""The edge form of ``kernel(theta)``'s normal operator, or None where it does not apply or would not pay.

        It needs a one-channel stride-1 zero-boundary ``Conv`` (or a family on one) whose strips
        cover at most a quarter of the image for ``kind="strang"``, an eighth for ``"chan"``,
        :math:`\sum_a 4(s_a - 1)/n_a \le 1/4` or :math:`1/8` (so each stencil is shorter than a
        sixteenth of its axis and Strang's circulant is the periodic convolution). On smaller
        images the strips cost as much as the stencil pass they save (measured with a 9×9
        stencil: Strang's at 128², T. Chan's, which needs a second inverse FFT, at 256²).
        """
        conv = single_conv(kernel, ("zero",))
        if conv is None:
            return None
        grid, stencil = tuple(conv.grid), tuple(conv.stencil)
        if sum(4 * (s - 1) / n for s, n in zip(stencil, grid)) > (0.25 if kind == "strang" else 0.125):
            return None
        lam = circulant_eigvals(kernel, theta, "strang").astype(np.complex128)
        k2 = half_spectrum(np.abs(lam) ** 2, len(grid))
        weights = kernel.as_convolution().weights(theta).reshape(stencil)
        strips = []
        for axis, (s, n) in enumerate(zip(stencil, grid)):
            if s == 1:
                continue
            h, band = 2 * (s - 1), s - 1
            # the strip with its thin axis first: contiguous rows for the stencil kernel
            sub = (h, *(m for a, m in enumerate(grid) if a != axis))
            op = Conv(sub, np.moveaxis(weights, axis, 0).shape).op(np.moveaxis(weights, axis, 0).ravel())
            for lo in (True, False):
                place = slice(0, h) if lo else slice(n - h, n)
                keep = slice(0, band) if lo else slice(h - band, h)
                into = slice(0, band) if lo else slice(n - band, n)
                pick = tuple(place if a == axis else slice(None) for a in range(len(grid)))
                put = tuple(into if a == axis else slice(None) for a in range(len(grid)))
                strips.append((axis, pick, op, keep, put))
        return cls(grid, k2, strips, kind)

    def fix(self, z: np.ndarray, y: np.ndarray, alpha: float = 0.0) -> None:
        r"""Overwrite ``y`` (grid-shaped) on the edge bands with :math:`K^\top K z + \alpha z`."""
        for axis, pick, op, keep, put in self.strips:
            part = np.ascontiguousarray(np.moveaxis(z[pick], axis, 0))
            ktk = op.rmatvec(op.matvec(part.ravel())).reshape(part.shape)
            y[put] = np.moveaxis(ktk[keep], 0, axis)
            if alpha:
                y[put] += alpha * z[put]


def edge_cg(A, band: EdgeNormal, M: RealSymbolMultiplier, alpha: float, rhs: np.ndarray, rtol: float, maxiter: int):
    r"""Preconditioned CG on :math:`(K^\top K + \alpha I)x = K^\top b` with no stencil pass over the image.

    The preconditioner :math:`M = F^{-1} h F` already transforms the residual; the same spectrum
    gives :math:`z = F^{-1}(h\hat r)` and :math:`C^\top C z = F^{-1}(|\lambda_S|^2 h \hat r)`
    (one forward and two inverse real FFTs), and :meth:`EdgeNormal.fix` makes the latter
    :math:`K^\top K z` on the edge bands. With Strang's circulant,
    :math:`h = 1/(|\lambda_S|^2 + \alpha)`, the second transform is not needed:
    :math:`C^\top C z = r - \alpha z`, so :math:`Az` is :math:`r` inside and exact on the bands
    (Strang's preconditioned operator is :math:`I` plus an edge term): one FFT pair and the strips
    per iteration, less than plain CG's stencil pair over the image.

    :math:`q = Ap` follows from :math:`p = z + \beta p` as :math:`q = Az + \beta q`; otherwise it is
    :func:`normal_cg`'s loop (Fletcher--Reeves, ``M`` being applied exactly in float64) with the
    same stopping test; when it is met the residual is recomputed as :math:`\mathrm{rhs} - Ax`
    with ``A`` itself (the recurrences' drift) and the loop goes on from it if that one is not.
    Returns ``(x, iterations, converged)``.
    """
    grid, axes = band.grid, tuple(range(len(band.grid)))
    x = np.zeros(rhs.size)
    r = rhs.astype(np.float64, copy=True)
    atol = rtol * float(np.linalg.norm(r))
    spec = np.empty((2, *M.half.shape), dtype=np.complex128)
    zw = np.empty((2, *grid))
    z, w = zw[0], zw[1]
    strang = band.kind == "strang"  # M's symbol is 1/(|λ_S|² + α) itself
    hk2 = M.half * band.k2
    p = q = np.zeros(0)
    rr, rho, restart, iteration = float(np.dot(r, r)), 0.0, True, 0
    while True:
        if np.sqrt(rr) < atol or rr == 0:
            r = rhs - np.asarray(A.matvec(x)).reshape(-1)  # the true residual
            rr, restart = float(np.dot(r, r)), True
            if np.sqrt(rr) < atol or rr == 0:
                return x, iteration, True
        if iteration == maxiter:
            return x, iteration, False
        np.fft.rfftn(r.reshape(grid), axes=axes, out=spec[0])
        if strang:  # CᵀC z = F⁻¹(|λ_S|² ĥr̂) = r - α z, so A z = r off the bands: one inverse FFT
            spec[0] *= M.half
            np.fft.irfftn(spec[0], s=grid, axes=axes, out=z)
            w[...] = r.reshape(grid)
            band.fix(z, w, alpha)
        else:
            np.multiply(spec[0], hk2, out=spec[1])
            spec[0] *= M.half
            np.fft.irfftn(spec, s=grid, axes=tuple(a + 1 for a in axes), out=zw)
            band.fix(z, w)
            _axpy(z, w, alpha)  # w = A z
        rho, rho_prev = float(np.dot(r, z.reshape(-1))), rho
        if restart:
            p, q, restart = z.reshape(-1).copy(), w.reshape(-1).copy(), False
        else:
            beta = rho / rho_prev
            p *= beta
            p += z.reshape(-1)
            q *= beta
            q += w.reshape(-1)
        pq = float(np.dot(p, q))
        if not pq > 0:
            return x, iteration, False
        a = rho / pq
        _axpy(p, x, a)
        _axpy(q, r, -a)
        rr = float(np.dot(r, r))
        iteration += 1
