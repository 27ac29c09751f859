r"""Learning a stencil (or any affine family's parameters) from input/output examples.

For an affine family, :math:`K(\theta)x` is affine in :math:`\theta`: with the Jacobian
:math:`J(X)` of :math:`\theta \mapsto (K(\theta)x_i)_i` (independent of :math:`\theta`) and
the offset :math:`q(X) = (K(0)x_i)_i`,

.. math::
    \operatorname{vec}\big(K(\theta)x_1, \dots, K(\theta)x_n\big) = J(X)\,\theta + q(X),

so fitting :math:`\theta` to pairs :math:`(x_i, y_i)` is the linear least-squares problem

.. math::
    \min_\theta \|J(X)\theta - (\operatorname{vec}(Y) - q(X))\|_2^2 + d^2\|\theta\|_2^2

(Tikhonov damping :math:`d`), solved matrix-free by ``scipy.sparse.linalg.lsqr`` or
``lsmr`` with products :math:`Jv` and :math:`J^\top w` -- the kernel's ``jac``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse.linalg as spla

from .._validation import as_float_array, check_batch, check_number, check_positive_int
from ..kernels._base import ParametricKernel, as_kernel

__all__ = ["SOLVERS", "LearnResult", "learn_stencil", "least_squares_problem"]

#: The least-squares solvers :func:`learn_stencil` accepts.
SOLVERS = ("lsqr", "lsmr")

#: Stopping codes of lsqr/lsmr that mean a (least-squares) solution was found.
_CONVERGED = (0, 1, 2, 4, 5)


@dataclass(frozen=True)
class LearnResult:
    r"""The fitted parameters and what the least-squares solver reported.

    Attributes
    ----------
    theta : numpy.ndarray, shape (p,)
        The fitted parameters, in the dtype of ``X``.
    solver : str
        ``"lsqr"`` or ``"lsmr"``.
    istop : int
        The solver's stopping code (``scipy.sparse.linalg.lsqr``/``lsmr`` documentation):
        1/4 solved, 2/5 least-squares solution, 3/6 condition limit, 7 iteration limit.
    itn : int
        Number of iterations.
    residual_norm : float
        :math:`\|J\theta - b\|_2` at the returned ``theta`` (the data misfit, without damping).
    relative_residual : float
        ``residual_norm / ||b||`` (0 when ``b`` is zero).
    converged : bool
        Whether ``istop`` reports a solution (not the condition or iteration limit).
    """

    theta: np.ndarray
    solver: str
    istop: int
    itn: int
    residual_norm: float
    relative_residual: float
    converged: bool


def learn_stencil(
    kernel: ParametricKernel,
    X,
    Y,
    *,
    damp: float = 0.0,
    solver: str = "lsqr",
    transpose: bool = False,
    atol: float | None = None,
    btol: float | None = None,
    conlim: float | None = None,
    maxiter: int | None = None,
    theta0=None,
) -> LearnResult:
    r"""Fit the parameters of an affine kernel family to examples: :math:`y_i \approx K(\theta)x_i`.

    Parameters
    ----------
    kernel : ParametricKernel
        An affine family (``kernel.linear`` is True): ``Conv`` with any channels, stride and
        boundary condition, ``Dense``, ``Diagonal``, ``Antisymmetric``, ``MMatrix``,
        ``LinearKernel``, ``Chain`` of those...
    X : array_like, shape (n, *in_shape) or (n, prod(in_shape))
        Inputs, examples along the first axis (``out_shape`` with ``transpose``); float32 or
        float64 -- the computation and the result use this dtype.
    Y : array_like, shape (n, *out_shape) or (n, prod(out_shape))
        Outputs, same dtype as ``X`` (``in_shape`` with ``transpose``).
    damp : float, optional
        Tikhonov damping :math:`d \ge 0`: minimise :math:`\|J\theta - b\|^2 + d^2\|\theta\|^2`.
    solver : {"lsqr", "lsmr"}
        ``scipy.sparse.linalg.lsqr`` or ``lsmr`` (the latter's residual :math:`\|J^\top r\|`
        decreases monotonically, so early stopping is safer with noise). For families with
        bounds (``kernel.bounds``, e.g. ``MMatrix``: :math:`\theta \ge 0`) whose unconstrained
        fit leaves them, the fit is redone within the bounds by ``scipy.optimize.lsq_linear``
        (``solver="lsq_linear"`` in the result, its ``status`` as ``istop``): the fitted
        parameters always satisfy the constraint.
    transpose : bool, optional
        Fit :math:`y_i \approx K(\theta)^\top x_i` instead.
    atol, btol : float, optional
        Stopping tolerances of the solver; default :math:`100\,\varepsilon` of the dtype
        (an exact fit when the data allow one).
    conlim : float, optional
        Condition-number limit of the solver; default :math:`1/(100\,\varepsilon)`.
    maxiter : int, optional
        Iteration limit; default :math:`2p + 20` (in exact arithmetic both converge in
        :math:`p` steps; rounding needs a few more).
    theta0 : array_like, optional
        Parameters at which the Jacobian and offset are evaluated (any feasible point gives
        the same affine model); default zero, or ``kernel.random_theta(0)`` if zero violates a
        constraint.

    Returns
    -------
    LearnResult
        ``theta`` (in the dtype of ``X``), the solver's stopping code and iteration count,
        the misfit :math:`\|J\theta - b\|`, its ratio to :math:`\|b\|` and ``converged``.

    Raises
    ------
    TypeError
        If ``kernel`` is not a kernel family or is not affine in :math:`\theta` (e.g.
        ``Softplus``: fit it with a nonlinear optimiser), or ``X``/``Y`` have other dtypes.
    ValueError
        If ``X``/``Y`` have the wrong shapes or numbers of examples, ``solver`` is unknown or
        ``damp`` is negative.

    Notes
    -----
    The right-hand side is :math:`b = \operatorname{vec}(Y) - (K(\theta_0)x_i - J\theta_0)_i`,
    the data minus the family's offset (zero for linear families). Without noise and with
    enough examples for :math:`J` to have full column rank, the fit is exact; with noise
    :math:`e`, :math:`\|\hat\theta - \theta\| \le \|e\| / \sigma_{\min}(J)` (for ``damp = 0``).
    scipy's ``lsqr``/``lsmr`` iterate in float64 even for a float32 operator (the Jacobian's
    products then run in float64 too, as every structops operator computes in the wider of
    its own and its input's precision); the result is cast back to the dtype of ``X``.

    Examples
    --------
    Recover a 3×3 stencil from five 16×16 images:

    >>> import numpy as np, structops
    >>> k = structops.Conv((16, 16), (3, 3), bc="reflect")
    >>> rng = np.random.default_rng(0)
    >>> theta = rng.standard_normal(9)
    >>> X = rng.standard_normal((5, 1, 16, 16))
    >>> fit = learn_stencil(k, X, k.apply(theta, X))
    >>> fit.converged, bool(np.allclose(fit.theta, theta, atol=1e-10))
    (True, True)
    """
    if solver not in SOLVERS:
        raise ValueError(f"`solver` must be one of {SOLVERS!r}, got {solver!r}.")
    damp = check_number(damp, "damp", minimum=0.0)
    J, b, dtype = least_squares_problem(kernel, X, Y, transpose=transpose, theta0=theta0)
    eps = float(np.finfo(dtype).eps)
    atol = 100 * eps if atol is None else check_number(atol, "atol", minimum=0.0)
    btol = 100 * eps if btol is None else check_number(btol, "btol", minimum=0.0)
    conlim = 1.0 / (100 * eps) if conlim is None else check_number(conlim, "conlim", minimum=0.0)
    maxiter = 2 * kernel.nparams + 20 if maxiter is None else check_positive_int(maxiter, "maxiter")
    # scipy iterates in float64 whatever the operator's dtype (lsmr overflows casting its
    # 1e100 sentinels to float32): hand it float64 data explicitly
    b = b.astype(np.float64)
    if solver == "lsqr":
        out = spla.lsqr(J, b, damp=damp, atol=atol, btol=btol, conlim=conlim, iter_lim=maxiter)
    else:
        out = spla.lsmr(J, b, damp=damp, atol=atol, btol=btol, conlim=conlim, maxiter=maxiter)
    theta = np.asarray(out[0]).astype(dtype, copy=False)
    istop, itn = int(out[1]), int(out[2])
    if not kernel.is_feasible(theta):
        return _bounded_fit(kernel, J, b, damp, atol, maxiter, dtype)
    return _result(J, b, theta, solver, istop, itn, converged=istop in _CONVERGED)


def _result(J, b: np.ndarray, theta: np.ndarray, solver: str, istop: int, itn: int, converged: bool) -> LearnResult:
    """The :class:`LearnResult` of ``theta``, with its misfit ``||J theta - b||`` and its ratio to ``||b||``."""
    residual = float(np.linalg.norm(J.matvec(theta) - b))
    bnorm = float(np.linalg.norm(b))
    return LearnResult(
        theta=theta,
        solver=solver,
        istop=istop,
        itn=itn,
        residual_norm=residual,
        relative_residual=residual / bnorm if bnorm else 0.0,
        converged=converged,
    )


def least_squares_problem(
    kernel: ParametricKernel, X, Y, *, transpose: bool = False, theta0=None, allow_empty: bool = False
):
    r"""The linear least-squares problem :math:`\min_\theta \|J\theta - b\|` of fitting ``kernel`` to ``(X, Y)``.

    Validates the arguments as :func:`learn_stencil` documents and returns ``(J, b, dtype)``:
    the Jacobian at ``theta0`` (a :class:`~structops.kernels.KernelJacobian`), the right-hand
    side :math:`b = \operatorname{vec}(Y) - (K(\theta_0)x_i - J\theta_0)_i` in ``dtype`` (that
    of ``X``). Shared with :func:`structops.distributed.learn_stencil`, where each rank holds
    its own examples (and may hold none: ``allow_empty``).
    """
    kernel = as_kernel(kernel)
    if not kernel.linear:
        raise TypeError(
            f"`kernel` {kernel!r} is not affine in theta, so fitting it is not a linear least-squares problem; "
            "use a nonlinear optimiser (e.g. scipy.optimize.least_squares with kernel.jac)."
        )
    dtype = as_float_array(X, "X").dtype
    x_shape, y_shape = (kernel.out_shape, kernel.in_shape) if transpose else (kernel.in_shape, kernel.out_shape)
    x = check_batch(X, x_shape, dtype, "X")
    y = check_batch(Y, y_shape, dtype, "Y", source="X")
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"`X` and `Y` must hold the same number of examples, got {x.shape[0]} and {y.shape[0]}.")
    if x.shape[0] == 0 and not allow_empty:
        raise ValueError("`X` and `Y` hold no examples: there is nothing to fit theta to.")

    if theta0 is None:
        theta0 = np.zeros(kernel.nparams, dtype=dtype)
        try:
            kernel.validate_theta(theta0)
        except ValueError:
            theta0 = kernel.random_theta(0, dtype=dtype)
    theta0 = kernel.validate_theta(as_float_array(theta0, "theta0", dtype=dtype), "theta0")

    J = kernel.jac(theta0, x, transpose=transpose)
    offset = kernel.apply(theta0, x, transpose=transpose).ravel() - J.matvec(theta0)
    return J, y.ravel() - offset, dtype


def _bounded_fit(kernel: ParametricKernel, J, b: np.ndarray, damp: float, tol: float, maxiter: int, dtype):
    r"""Least squares within the family's bounds (e.g. ``MMatrix``: theta >= 0).

    ``scipy.optimize.lsq_linear`` (trust-region reflective, matrix-free lsmr steps) on
    :math:`[J; dI]\theta \approx [b; 0]`.
    """
    import pylops
    from scipy.optimize import lsq_linear

    bounds = kernel.bounds
    if bounds is None:  # pragma: no cover - only called for bounded families
        raise TypeError(f"{kernel!r} has no bounds to fit within.")
    lower, upper = (np.asarray(v, dtype=np.float64) for v in bounds)
    A = J if damp == 0 else pylops.VStack([J, damp * pylops.Identity(kernel.nparams, dtype=J.dtype)])
    rhs = b if damp == 0 else np.concatenate([b, np.zeros(kernel.nparams)])
    tol = max(tol, 1e-15)
    A = spla.aslinearoperator(A)  # lsq_linear recognises scipy's operators only
    out = lsq_linear(
        A, rhs, bounds=(lower, upper), method="trf", lsq_solver="lsmr", lsmr_tol=tol, tol=tol, max_iter=maxiter
    )
    theta = np.clip(out.x, lower, upper).astype(dtype, copy=False)
    return _result(J, b, theta, "lsq_linear", int(out.status), int(out.nit), converged=out.status > 0)
