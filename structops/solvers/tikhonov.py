r"""Tikhonov regularisation with any solver: the one call for a regularised deblurring.

.. math::
    x_\alpha = \arg\min_x \|K(\theta)x - b\|^2 + \alpha\|Lx\|^2
             = (K^\top K + \alpha L^\top L)^{-1} K^\top b .

:func:`tikhonov` solves it exactly through the family's diagonalisation when ``K`` and ``L``
share one (``kernel.diagonalize(theta)``: periodic convolutions by the FFT, doubly symmetric
stencils with a half-sample mirror by the DCT-II, one-channel outer-product stencils with any
boundary by the SVDs of their 1-D factors), and otherwise by a Krylov method:

* ``"lsqr"`` (scipy) and ``"cgls"`` (pylops) on the stacked least-squares problem
  :math:`\min_z \|[K; \sqrt\alpha L]Pz - [b; 0]\|`, :math:`x = Pz`, with the *split (right)*
  circulant preconditioner :math:`P = (C^\top C + \alpha C_L^\top C_L)^{-1/2}`
  (:func:`split_preconditioner`);
* ``"cg"`` (scipy) on the normal equations with :math:`M = P^2 = (C^\top C + \alpha C_L^\top C_L)^{-1}`.

Here :math:`C` is Strang's or T. Chan's circulant approximation of a zero-boundary ``K``
(:mod:`structops.solvers.preconditioners`) and :math:`C_L` that of ``L`` (``L`` itself when it is
periodic, 1 for the identity). Preconditioning lowers the iteration count, by a factor that
shrinks as the grid grows (see the table in ``benchmarks/README.md``); it does not make it
independent of :math:`N` in 2-D.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pylops
import scipy.sparse.linalg as spla
from pylops.optimization.basic import cgls as pylops_cgls

from .._validation import check_number, check_positive_int
from ..kernels._base import ParametricKernel, as_kernel
from ..kernels.diagonalized import FourierMultiplier, full_spectrum, half_spectrum
from ._filters import Regularizer, as_regularizer, check_data, exact_solver, shares_basis, structure_error
from .preconditioners import KINDS, _require_toeplitz, circulant_eigvals

__all__ = ["SOLVERS", "ConvergenceWarning", "TikhonovResult", "split_preconditioner", "tikhonov"]

#: The solvers :func:`tikhonov` accepts.
SOLVERS = ("auto", "exact", "lsqr", "cgls", "cg")

#: Default most iterations of the Krylov solvers.
MAXITER = 5000


class ConvergenceWarning(UserWarning):
    """A Krylov solve stopped at ``maxiter`` before reaching ``rtol``."""


@dataclass(frozen=True)
class TikhonovResult:
    r"""What :func:`tikhonov` returns with ``full_output=True``.

    Attributes
    ----------
    x : numpy.ndarray
        The solution, in the shape ``b`` was given (``in_shape``, the input grid, or flat).
    iterations : int
        Krylov iterations (0 for the exact solve).
    residual_norm : float
        :math:`\|K x - b\|`.
    method : str
        ``"exact"`` or the Krylov solver, with its preconditioner (``"lsqr+chan"``).
    alpha : float
        The weight used.
    converged : bool
        False when the Krylov solver stopped at ``maxiter`` (a :class:`ConvergenceWarning` was emitted).
    """

    x: np.ndarray
    iterations: int
    residual_norm: float
    method: str
    alpha: float
    converged: bool = True


# ------------------------------------------------------------- preconditioner
def _circulant_symbol(op_kernel: ParametricKernel, theta: np.ndarray, kind: str, name: str) -> np.ndarray:
    """Full-grid eigenvalues of the circulant for ``op_kernel(theta)``: its own if periodic, else ``kind``'s."""
    D = op_kernel.diagonalize(theta)
    if isinstance(D, FourierMultiplier) and D.blocks.shape[-2:] == (1, 1):
        return full_spectrum(D.blocks[..., 0, 0], D.grid)
    try:
        return circulant_eigvals(op_kernel, theta, kind)
    except ValueError:
        raise ValueError(
            f"`preconditioner` needs `{name}` to be a one-channel stride-1 convolution (zero boundary: its "
            f"{kind} circulant; periodic: itself), got {op_kernel!r}."
        ) from None


def split_preconditioner(
    kernel: ParametricKernel, theta, *, alpha: float, L=None, kind: str = "chan", power: float = 0.5
) -> FourierMultiplier:
    r"""The circulant preconditioner :math:`(C^\top C + \alpha C_L^\top C_L)^{-p}` for Tikhonov problems.

    With ``power=0.5`` (default) it is the *split (right)* preconditioner :math:`P` of ``lsqr`` and
    ``cgls``: they solve :math:`\min_z \|[K; \sqrt\alpha L]Pz - [b; 0]\|` and return :math:`x = Pz`,
    whose normal equations :math:`P(K^\top K + \alpha L^\top L)P z = P K^\top b` are those of
    ``cg`` preconditioned by :math:`M = P^2` (``power=1``).

    Parameters
    ----------
    kernel : ParametricKernel
        A one-channel stride-1 convolution (a ``Conv`` or a family on one): zero boundary
        (its Strang/Chan circulant) or periodic (itself).
    theta : array_like
        Its parameters; the operator runs in their dtype.
    alpha : float
        :math:`\alpha \ge 0`.
    L : pylops.LinearOperator, optional
        ``family.op(theta_L)`` of such a convolution on the same grid (None: the identity).
    kind : {"strang", "chan"}
        Which circulant approximates a zero-boundary operator.
    power : float
        :math:`p > 0`.

    Returns
    -------
    FourierMultiplier
        Symmetric positive definite, shape ``(N, N)``: the multiplier
        :math:`(|c(\xi)|^2 + \alpha|c_L(\xi)|^2)^{-p}`.

    Raises
    ------
    ValueError
        Unsupported kernel or ``L``, unknown ``kind``, ``alpha < 0``, or a singular
        :math:`C^\top C + \alpha C_L^\top C_L` (e.g. ``alpha = 0`` with a zero in the symbol).

    Examples
    --------
    >>> import numpy as np, structops
    >>> k = structops.Conv(64, 5)
    >>> theta = np.array([0.05, 0.25, 0.4, 0.25, 0.05])
    >>> P = split_preconditioner(k, theta, alpha=1e-3)
    >>> bool(np.allclose((P @ P).todense(), split_preconditioner(k, theta, alpha=1e-3, power=1).todense()))
    True
    """
    as_kernel(kernel)
    if kind not in KINDS:
        raise ValueError(f"`kind` must be one of {KINDS!r}, got {kind!r}.")
    alpha = check_number(alpha, "alpha", minimum=0.0)
    power = check_number(power, "power", minimum=0.0)
    theta = kernel.validate_theta(theta)
    reg = as_regularizer(L, kernel)
    lam = _circulant_symbol(kernel, theta, kind, "kernel")
    denom = np.abs(lam) ** 2
    if reg.op is None:
        denom = denom + alpha
    elif reg.kernel is not None and reg.theta is not None:
        denom = denom + alpha * np.abs(_circulant_symbol(reg.kernel, reg.theta, kind, "L")) ** 2
    else:
        raise ValueError(f"`preconditioner` needs `L` = family.op(theta_L) of a convolution, got {reg.op!r}.")
    if not float(denom.min()) > float(denom.max()) * np.finfo(denom.dtype).eps:
        raise ValueError(
            f"`alpha` = {alpha!r} makes the circulant CᵀC + α·C_LᵀC_L singular (smallest {float(denom.min()):.3e}); "
            "pass alpha > 0."
        )
    grid = lam.shape
    blocks = half_spectrum(denom ** (-power), len(grid)).astype(lam.dtype)[..., None, None]
    return FourierMultiplier(blocks, grid, dtype=theta.dtype, name=f"(CᵀC + {alpha:g}·C_LᵀC_L)^-{power:g}")


# ------------------------------------------------------------------- Krylov
def _stack(K: pylops.LinearOperator, reg: Regularizer, alpha: float, P) -> pylops.LinearOperator:
    """``[K; sqrt(α) L] P`` (``L = I`` when ``reg.op`` is None), as one pylops operator."""
    n = K.shape[1]
    Lop = pylops.Identity(n, dtype=K.dtype) if reg.op is None else reg.op
    A = pylops.VStack([K, float(np.sqrt(alpha)) * Lop])
    return A if P is None else A @ P


def _krylov(K, reg: Regularizer, alpha: float, b: np.ndarray, solver: str, P, rtol: float, maxiter: int):
    """Solve with ``solver``; return ``(x, iterations, converged)``."""
    if solver == "cg":
        Lop = None if reg.op is None else reg.op
        A = K.H @ K + alpha * (pylops.Identity(K.shape[1], dtype=K.dtype) if Lop is None else Lop.H @ Lop)
        rhs = K.H @ b
        count = [0]

        def callback(_, count=count):
            count[0] += 1

        M = None if P is None else P @ P
        x, info = spla.cg(A, rhs, rtol=rtol, maxiter=maxiter, M=M, callback=callback)
        return x, count[0], info == 0
    plain = P is None and reg.op is None  # damping by the solver itself
    A = K if plain else _stack(K, reg, alpha, P)
    rhs = b if plain else np.concatenate([b, np.zeros(A.shape[0] - b.size, dtype=b.dtype)])
    if solver == "lsqr":
        damp = float(np.sqrt(alpha)) if plain else 0.0
        out = spla.lsqr(A, rhs, damp=damp, atol=rtol, btol=rtol, iter_lim=maxiter)
        z, iterations, converged = out[0], int(out[2]), int(out[1]) in (1, 2, 4, 5)
    else:
        damp = float(np.sqrt(alpha)) if plain else 0.0  # pylops' cgls: ||y - Op x||² + damp² ||x||²
        tol = float(rtol * np.linalg.norm(A.H @ rhs)) ** 2
        out = pylops_cgls(A, rhs, x0=np.zeros(A.shape[1], dtype=b.dtype), niter=maxiter, damp=damp, tol=tol)
        z, iterations = np.asarray(out[0]), int(out[2])
        converged = iterations < maxiter
    return (z if P is None else P @ z), iterations, converged


def _preconditioner_for(kernel, theta, alpha, reg, preconditioner) -> FourierMultiplier | None:
    if preconditioner is None:
        return None
    if preconditioner not in KINDS:
        raise ValueError(f"`preconditioner` must be None or one of {KINDS!r}, got {preconditioner!r}.")
    L = reg.op
    return split_preconditioner(kernel, theta, alpha=alpha, L=L, kind=preconditioner)


def _check_options(solver, alpha, rtol, maxiter, full_output) -> tuple[float, float, int]:
    if solver not in SOLVERS:
        raise ValueError(f"`solver` must be one of {SOLVERS!r}, got {solver!r}.")
    alpha = check_number(alpha, "alpha", minimum=0.0)
    rtol = check_number(rtol, "rtol", minimum=0.0)
    if not rtol < 1:
        raise ValueError(f"`rtol` must be in [0, 1), got {rtol!r}.")
    maxiter = check_positive_int(MAXITER if maxiter is None else maxiter, "maxiter")
    if not isinstance(full_output, (bool, np.bool_)):
        raise TypeError(f"`full_output` must be True or False, got {full_output!r}.")
    return alpha, rtol, maxiter


def tikhonov(
    kernel: ParametricKernel,
    theta,
    b,
    *,
    alpha: float,
    L=None,
    solver: str = "auto",
    preconditioner: str | None = None,
    rtol: float = 1e-6,
    maxiter: int | None = None,
    full_output: bool = False,
) -> np.ndarray | TikhonovResult:
    r"""Tikhonov-regularised solution :math:`\arg\min_x \|K(\theta)x - b\|^2 + \alpha\|Lx\|^2`.

    Parameters
    ----------
    kernel : ParametricKernel
        The forward model :math:`K(\theta)`.
    theta : array_like, shape (p,)
        Its parameters (float32 or float64: the solve runs in their dtype).
    b : array_like
        The data: one output of ``kernel`` -- ``out_shape``, flat, or for one output channel the
        output grid (an image ``(H, W)``).
    alpha : float
        :math:`\alpha \ge 0` (no default: pick it with :func:`structops.solvers.choose_alpha`).
    L : pylops.LinearOperator, optional
        The regularisation operator on the grid of ``kernel``, e.g. ``lap.op(theta_lap)`` for a
        Laplacian family ``lap``; None is the identity.
    solver : {"auto", "exact", "lsqr", "cgls", "cg"}
        ``"auto"``: exact when ``kernel.diagonalize(theta)`` exists, is unitary and ``L`` shares
        its basis (then ``preconditioner`` is not used); else ``"lsqr"`` with ``preconditioner``
        (default ``"chan"`` when ``kernel`` is a zero-boundary one-channel convolution).
        ``"exact"`` insists on the exact route (an error says why it is not available).
    preconditioner : {None, "strang", "chan"}
        Circulant preconditioner of the Krylov solvers (:func:`split_preconditioner`).
    rtol : float
        Relative tolerance of the Krylov solvers (default 1e-6): ``cg``'s on the normal
        equations, ``lsqr``'s ``atol = btol``, ``cgls``' on the norm of the (preconditioned)
        normal-equation residual relative to its start.
    maxiter : int, optional
        Most Krylov iterations (default 5000).
    full_output : bool
        Return a :class:`TikhonovResult` instead of ``x``.

    Returns
    -------
    numpy.ndarray or TikhonovResult
        ``x`` in the shape matching ``b``: ``in_shape`` for ``out_shape``, the input grid for
        the output grid, flat for flat.

    Raises
    ------
    TypeError
        ``kernel`` not a family, ``L`` not an operator, ``b`` not real.
    ValueError
        ``alpha < 0``; ``alpha = 0`` with a singular per-frequency system (a
        ``numpy.linalg.LinAlgError``, which is a ``ValueError``); ``L`` of another grid;
        ``solver="exact"`` where K and L share no diagonalisation; ``b`` of the wrong shape;
        unknown ``solver``/``preconditioner``.

    Warns
    -----
    ConvergenceWarning
        When a Krylov solver stops at ``maxiter``.

    Notes
    -----
    Exact: :math:`x = V\,\operatorname{blkdiag}\big((B^HB + \alpha C^HC)^{-1}B^H\big)\,U^H b` for
    :math:`K = UBV^H`, :math:`L = WCV^H`, in :math:`O(N\log N)` (FFT, DCT) or
    :math:`O(N\sum_a n_a)` (Kronecker). Iterative: see the module notes; ``residual_norm`` is
    recomputed from ``x``.

    Examples
    --------
    >>> import numpy as np, structops
    >>> from structops.data import gaussian_stencil, phantom
    >>> k = structops.Conv((32, 32), (5, 5))           # zero boundary, diagonalised by Kronecker
    >>> theta = gaussian_stencil(5, 1.0).ravel()
    >>> b = k.apply(theta, phantom(32))
    >>> exact = tikhonov(k, theta, b, alpha=1e-3, full_output=True)
    >>> exact.x.shape, exact.method, exact.iterations
    ((32, 32), 'exact', 0)
    >>> it = tikhonov(k, theta, b, alpha=1e-3, solver="lsqr", preconditioner="chan", rtol=1e-10, full_output=True)
    >>> bool(np.linalg.norm(it.x - exact.x) < 1e-6 * np.linalg.norm(exact.x)), it.method
    (True, 'lsqr+chan')
    """
    as_kernel(kernel)
    alpha, rtol, maxiter = _check_options(solver, alpha, rtol, maxiter, full_output)
    theta = kernel.validate_theta(theta)
    reg = as_regularizer(L, kernel)
    flat, x_shape = check_data(kernel, b, theta.dtype)
    D = kernel.diagonalize(theta) if solver in ("auto", "exact") else None
    exact = shares_basis(D, reg)
    if solver == "exact" and not exact:
        raise structure_error(kernel, D, reg, "tikhonov(solver='exact')")
    K = kernel.op(theta)
    if exact and D is not None:
        x, iterations, converged, method = exact_solver(D, reg, alpha) @ flat, 0, True, "exact"
    else:
        name = "lsqr" if solver == "auto" else solver
        if solver == "auto" and preconditioner is None:
            preconditioner = "chan" if _toeplitz(kernel) else None
        P = _preconditioner_for(kernel, theta, alpha, reg, preconditioner)
        x, iterations, converged = _krylov(K, reg, alpha, flat, name, P, rtol, maxiter)
        method = name if preconditioner is None else f"{name}+{preconditioner}"
        if not converged:
            warnings.warn(
                f"tikhonov: {method} stopped at maxiter={maxiter} before reaching rtol={rtol:g}; raise `maxiter`, "
                "or use a preconditioner.",
                ConvergenceWarning,
                stacklevel=2,
            )
    x = np.asarray(x, dtype=theta.dtype)
    if not full_output:
        return x.reshape(x_shape)
    residual = float(np.linalg.norm(K @ x - flat))
    return TikhonovResult(x.reshape(x_shape), iterations, residual, method, alpha, converged)


def _toeplitz(kernel: ParametricKernel) -> bool:
    """Whether the circulant preconditioners apply to ``kernel`` (a zero-boundary one-channel stride-1 conv)."""
    try:
        _require_toeplitz(kernel, "tikhonov")
    except ValueError:
        return False
    return True
