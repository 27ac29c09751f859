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
``lsmr`` with products :math:`Jv` and :math:`J^\top w` -- the kernel's ``jac``. With
``constraint="psf"`` the parameters are a point spread function, :math:`\theta \ge 0` and
:math:`\mathbf 1^\top\theta = 1` (a blur that neither creates nor loses light), and the fit is
the quadratic programme on the :math:`p \times p` normal equations, solved exactly by a
multiplier search over non-negative least squares (``learn_stencil``'s Notes). The lecture
notes' parametric models (Ruthotto, *Numerical Methods for Deep Learning*, "Parametric
Models") are fitted this way when they are affine.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import scipy.linalg as sla
import scipy.sparse.linalg as spla

from .._validation import as_float_array, check_batch, check_positive_int, check_real_scalar
from ..kernels._base import ParametricKernel, as_kernel

__all__ = ["CONSTRAINTS", "SOLVERS", "LearnResult", "learn_stencil", "least_squares_problem"]

#: The least-squares solvers :func:`learn_stencil` accepts.
SOLVERS = ("lsqr", "lsmr")

#: The constraints :func:`learn_stencil` accepts besides the family's own bounds.
CONSTRAINTS = (None, "psf")

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
        ``"lsqr"``, ``"lsmr"``, ``"lsq_linear"`` (a family's bounds), ``"cgls"``
        (:func:`structops.distributed.learn_stencil`) or ``"nnls"`` (``constraint="psf"``).
    istop : int
        The solver's stopping code (``scipy.sparse.linalg.lsqr``/``lsmr`` documentation):
        1/4 solved, 2/5 least-squares solution, 3/6 condition limit, 7 iteration limit;
        ``"nnls"``: 0 solved (the KKT conditions hold), 7 iteration limit.
    iterations : int
        Number of iterations (``"nnls"``: of the search for the multiplier of the sum,
        each an exact non-negative least-squares solve). The name of
        :class:`~structops.solvers.TikhonovResult`'s count; ``itn`` is a deprecated alias.
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
    iterations: int
    residual_norm: float
    relative_residual: float
    converged: bool

    @property
    def itn(self) -> int:
        """Deprecated alias of ``iterations`` (scipy's name; removed in a future release)."""
        warnings.warn(
            "`LearnResult.itn` is deprecated; use `LearnResult.iterations` (the name TikhonovResult uses).",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.iterations


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
    constraint: str | None = None,
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
    constraint : {None, "psf"}, optional
        ``"psf"``: :math:`\theta` is a point spread function, :math:`\theta \ge 0` and
        :math:`\sum_j \theta_j = 1` over all ``p`` parameters (e.g. the stencil of a
        one-channel ``Conv``: a blur that keeps the mean brightness). Solved exactly (see
        Notes; ``solver="nnls"`` in the result), ``solver`` is then not used; ``maxiter``
        bounds the multiplier search. Costs ``p`` products with :math:`J` and :math:`J^\top`
        to form the normal equations.

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
        If ``X``/``Y`` have the wrong shapes or numbers of examples, ``solver`` or
        ``constraint`` is unknown, or ``damp`` is negative.

    Notes
    -----
    The right-hand side is :math:`b = \operatorname{vec}(Y) - (K(\theta_0)x_i - J\theta_0)_i`,
    the data minus the family's offset (zero for linear families). Without noise and with
    enough examples for :math:`J` to have full column rank, the fit is exact; with noise
    :math:`e`, :math:`\|\hat\theta - \theta\| \le \|e\| / \sigma_{\min}(J)` (for ``damp = 0``).
    scipy's ``lsqr``/``lsmr`` iterate in float64 even for a float32 operator (the Jacobian's
    products then run in float64 too, as every structops operator computes in the wider of
    its own and its input's precision); the result is cast back to the dtype of ``X``.

    With ``constraint="psf"`` the fit minimises :math:`\tfrac12\theta^\top H\theta - c^\top\theta`,
    :math:`H = J^\top J + d^2 I`, :math:`c = J^\top b`, over the probability simplex. For
    ``damp = 0`` that is the projection of the unconstrained fit :math:`\hat\theta` onto the
    simplex in the metric of :math:`J`, so for a true PSF :math:`\theta^*` (which lies in the
    simplex) the constrained fit's prediction error is never larger:
    :math:`\|J(\theta_{\mathrm{psf}} - \theta^*)\| \le \|J(\hat\theta - \theta^*)\|` (a
    projection onto a convex set is non-expansive); with noise it is usually much smaller in
    :math:`\theta` too, as the constraint removes the noise that leaves the simplex.

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
    if constraint not in CONSTRAINTS:
        raise ValueError(f"`constraint` must be one of {CONSTRAINTS!r}, got {constraint!r}.")
    damp = check_real_scalar(damp, "damp", minimum=0.0)
    J, b, dtype = least_squares_problem(kernel, X, Y, transpose=transpose, theta0=theta0)
    if constraint == "psf":
        limit = 2 * kernel.nparams + 20 if maxiter is None else check_positive_int(maxiter, "maxiter")
        return _psf_fit(J, b.astype(np.float64), damp, limit, dtype)
    eps = float(np.finfo(dtype).eps)
    atol = 100 * eps if atol is None else check_real_scalar(atol, "atol", minimum=0.0)
    btol = 100 * eps if btol is None else check_real_scalar(btol, "btol", minimum=0.0)
    conlim = 1.0 / (100 * eps) if conlim is None else check_real_scalar(conlim, "conlim", minimum=0.0)
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


def _result(
    J, b: np.ndarray, theta: np.ndarray, solver: str, istop: int, iterations: int, converged: bool
) -> LearnResult:
    """The :class:`LearnResult` of ``theta``, with its misfit ``||J theta - b||`` and its ratio to ``||b||``."""
    residual = float(np.linalg.norm(J.matvec(theta) - b))
    bnorm = float(np.linalg.norm(b))
    return LearnResult(
        theta=theta,
        solver=solver,
        istop=istop,
        iterations=iterations,
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


def _psf_fit(J, b: np.ndarray, damp: float, maxiter: int, dtype) -> LearnResult:
    r"""The ``constraint="psf"`` fit: the normal equations' QP over the simplex (:func:`_simplex_least_squares`)."""
    p = J.shape[1]
    H = np.empty((p, p))
    unit = np.zeros(p)
    for i in range(p):  # H = J^T J column by column: p products each way, memory of one column of J
        unit[i] = 1.0
        H[:, i] = J.rmatvec(J.matvec(unit))
        unit[i] = 0.0
    H = 0.5 * (H + H.T) + damp**2 * np.eye(p)
    theta, iterations, converged = _simplex_least_squares(H, np.asarray(J.rmatvec(b), dtype=np.float64), maxiter)
    theta = theta.astype(dtype, copy=False)
    return _result(J, b, theta, "nnls", 0 if converged else 7, iterations, converged)


def _simplex_least_squares(H: np.ndarray, c: np.ndarray, maxiter: int) -> tuple[np.ndarray, int, bool]:
    r"""The exact minimiser of :math:`\tfrac12\theta^\top H\theta - c^\top\theta` on the probability simplex.

    ``H`` symmetric positive (semi)definite, ``(p, p)``. Returns ``(theta, iterations, converged)``.

    For a multiplier :math:`\mu` of the sum,
    :math:`\theta(\mu) = \arg\min_{\theta \ge 0} \tfrac12\theta^\top H\theta - (c + \mu\mathbf 1)^\top\theta`
    is the non-negative least-squares problem :math:`\|R\theta - R^{-\top}(c + \mu\mathbf 1)\|`
    (:math:`H = R^\top R`), solved exactly by Lawson and Hanson's active-set method
    (``scipy.optimize.nnls``); :math:`s(\mu) = \mathbf 1^\top\theta(\mu)` is continuous,
    non-decreasing and piecewise affine (it is :math:`1 -` the derivative of the concave dual),
    zero for :math:`\mu \le -\max_j c_j`. Each step takes :math:`\theta(\mu)`'s free set
    :math:`F` and solves the KKT system of that piece,
    :math:`H_{FF}\theta_F - \mu\mathbf 1 = c_F,\ \mathbf 1^\top\theta_F = 1`; when its
    :math:`\theta_F \ge 0` and the multipliers of the zeros
    :math:`(H\theta - c)_j - \mu \ge 0` (both to round-off), that is the solution (the KKT
    conditions hold); otherwise :math:`\mu` moves into the bracket around :math:`s = 1`
    (bisection when the piece's root lies outside it). As :math:`s` has finitely many
    pieces, the search ends.

    Why not the alternatives: ``nnls`` on :math:`[J; w\mathbf 1^\top]` with a large weight
    :math:`w` only approaches the sum constraint (error :math:`O(w^{-2})`) while its
    conditioning grows with :math:`w`; a Euclidean projection of the unconstrained fit onto
    the simplex is not the constrained least-squares solution (it ignores the metric of
    :math:`J`); projected gradient converges slowly on the ill-conditioned normal equations of
    smooth images.
    """
    from scipy.optimize import nnls

    p = c.shape[0]
    scale = max(float(np.abs(H).max(initial=0.0)), float(np.abs(c).max(initial=0.0)), np.finfo(float).tiny)
    tol = 100 * p * np.finfo(float).eps
    try:
        R = sla.cholesky(H)
    except np.linalg.LinAlgError:  # singular data: the least-squares problem has many solutions
        R = sla.cholesky(H + tol * scale * np.eye(p))

    def kkt(free: np.ndarray) -> tuple[np.ndarray, float] | None:
        k = int(free.sum())
        A = np.zeros((k + 1, k + 1))
        A[:k, :k], A[:k, k], A[k, :k] = H[np.ix_(free, free)], -1.0, 1.0
        try:
            sol = np.linalg.solve(A, np.append(c[free], 1.0))
        except np.linalg.LinAlgError:
            return None
        theta = np.zeros(p)
        theta[free] = sol[:k]
        return theta, float(sol[k])

    lo, hi, step = -float(c.max()), None, scale
    mu = lo + step
    for it in range(1, maxiter + 1):
        theta = nnls(R, sla.solve_triangular(R, c + mu, trans="T"), maxiter=50 * p)[0]
        if theta.sum() < 1:
            lo = mu
        else:
            hi = mu
        candidate = kkt(theta > 0) if theta.any() else None
        if candidate is not None:
            cand, mu_c = candidate
            lam = H @ cand - c - mu_c
            if cand.min() >= -tol and lam[cand <= 0].min(initial=0.0) >= -tol * scale:
                cand = np.clip(cand, 0.0, None)
                return cand / cand.sum(), it, True
        if hi is None:  # no bracket yet: grow the step
            step *= 4
            mu = lo + step
        elif candidate is not None and lo < candidate[1] < hi:
            mu = candidate[1]
        else:
            mu = 0.5 * (lo + hi)
    theta = np.clip(theta, 0.0, None)
    return theta / max(float(theta.sum()), np.finfo(float).tiny), maxiter, False
