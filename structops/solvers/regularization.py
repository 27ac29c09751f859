r"""Choosing the Tikhonov weight :math:`\alpha` from the data: GCV, the discrepancy principle, the L-curve.

:func:`choose_alpha` evaluates one criterion on a grid of weights and returns the weight it
picks with the whole curve (:class:`AlphaChoice`), for

.. math::
    x_\alpha = \arg\min_x \|K(\theta)x - b\|^2 + \alpha\|Lx\|^2 .

**Exact route.** When ``kernel.diagonalize(theta)`` is unitary with one channel and ``L`` shares
its basis (``L = I``, or e.g. the periodic Laplacian for a periodic blur, the cosine Laplacian
for a half-sample-mirror blur; a separable zero-boundary blur through its Kronecker SVD with
``L = I``), every criterion is a sum of filter factors over frequencies
(:class:`~structops.solvers._filters.TikhonovSpectrum`): one transform of ``b``, then
:math:`O(N)` per :math:`\alpha`. The returned weight is then the minimiser of the GCV function
(the maximiser of the L-curve's curvature) refined to ``xatol = 1e-6`` in :math:`\log\alpha`
between the neighbours of the best grid point, or the root of the discrepancy equation by
Brent's method.

**Iterative fallback** (any other ``K`` and ``L``): each :math:`x_\alpha` on the grid is a
preconditioned Krylov solve (:func:`structops.solvers.tikhonov`, ``solver="lsqr"``) and

* ``"discrepancy"``: :math:`\|Kx_\alpha - b\|` on the grid, the root by interpolation of
  :math:`\log\|Kx_\alpha - b\|` in :math:`\log\alpha` between the two grid points around it;
* ``"lcurve"``: the curvature of :math:`(\log\|Kx_\alpha - b\|, \log\|Lx_\alpha\|)` by finite
  differences along the grid; the best grid point;
* ``"gcv"``: the trace :math:`\operatorname{trace}(K(K^\top K + \alpha L^\top L)^{-1}K^\top)` by
  Hutchinson's estimator :math:`\frac1s\sum_j z_j^\top K x_\alpha(z_j)` with ``probes``
  seeded Rademacher vectors :math:`z_j` (one more solve each; Golub and von Matt 1997); the
  best grid point.

It costs ``len(alphas)`` solves (times ``1 + probes`` for GCV): use a short grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.optimize as sopt

from .._validation import check_number, check_positive_int
from ..kernels._base import ParametricKernel, as_kernel
from ._filters import Regularizer, TikhonovSpectrum, as_regularizer, check_data, shares_basis, spectrum
from .spectral import spectral_norm
from .tikhonov import _toeplitz, tikhonov

__all__ = ["METHODS", "TAU", "AlphaChoice", "choose_alpha"]

#: The parameter-choice rules of :func:`choose_alpha`.
METHODS = ("gcv", "discrepancy", "lcurve")

#: Safety factor of the discrepancy principle, :math:`\|Kx_\alpha - b\| = \tau\,\sigma\sqrt m`:
#: slightly above 1, so that a noise level known only approximately does not under-regularise.
TAU = 1.01

#: Points per decade of the default grid of the exact route.
_PER_DECADE = 4


@dataclass(frozen=True)
class AlphaChoice:
    r"""The weight :func:`choose_alpha` picked, and the criterion curve it was picked from.

    Attributes
    ----------
    alpha : float
        The chosen :math:`\alpha`.
    method : str
        ``"gcv"``, ``"discrepancy"`` or ``"lcurve"``.
    alphas : numpy.ndarray
        The grid of weights, increasing.
    values : numpy.ndarray
        The criterion on the grid: :math:`G(\alpha)` (GCV), :math:`\|Kx_\alpha - b\|` (discrepancy),
        the L-curve's curvature (lcurve).
    exact : bool
        True on the exact route (through the diagonalisation), False on the iterative fallback.
    target : float or None
        The discrepancy principle's :math:`\tau\sigma\sqrt m` (None for the other methods).
    """

    alpha: float
    method: str
    alphas: np.ndarray
    values: np.ndarray
    exact: bool
    target: float | None = None


def _grid(alphas, lo: float, hi: float, count: int | None) -> np.ndarray:
    if alphas is not None:
        grid = np.sort(np.asarray(alphas, dtype=np.float64).ravel())
        if grid.size < 3 or not np.all(np.isfinite(grid)) or grid[0] <= 0:
            raise ValueError(f"`alphas` must hold at least 3 finite weights > 0, got {alphas!r}.")
        return grid
    decades = np.log10(hi) - np.log10(lo) + 2
    count = count or max(int(np.ceil(decades * _PER_DECADE)) + 1, 3)
    return np.logspace(np.log10(lo) - 1, np.log10(hi) + 1, count)


def _refine(fun, grid: np.ndarray, i: int) -> float:
    """Minimise ``fun(α)`` in log α between the grid neighbours of ``grid[i]``."""
    lo, hi = np.log(grid[max(i - 1, 0)]), np.log(grid[min(i + 1, grid.size - 1)])
    res = sopt.minimize_scalar(lambda t: fun(np.exp(t)), bounds=(lo, hi), method="bounded", options={"xatol": 1e-6})
    best = float(np.exp(res.x))
    return best if fun(best) <= fun(grid[i]) else float(grid[i])


def _exact_choice(s: TikhonovSpectrum, method: str, alphas, target: float | None) -> AlphaChoice:
    grid = _grid(alphas, *s.alpha_range(), None)
    if method == "discrepancy":
        target = float(target or 0.0)
        values = np.sqrt([s.residual_norm2(a) for a in grid])
        low, high = s.residual_limits()
        if not low < target**2 < high:
            raise _noise_error(target, np.sqrt(low), np.sqrt(high))
        t_lo, t_hi = np.log(s.alpha_range()[0]) - 40, np.log(s.alpha_range()[1]) + 40
        root = sopt.brentq(lambda t: s.residual_norm2(np.exp(t)) - target**2, t_lo, t_hi, xtol=1e-10, rtol=1e-12)
        return AlphaChoice(float(np.exp(root)), method, grid, values, True, target)
    fun = s.gcv if method == "gcv" else (lambda a: -s.curvature(a))
    scores = np.array([fun(a) for a in grid])
    alpha = _refine(fun, grid, int(np.argmin(scores)))
    values = scores if method == "gcv" else -scores
    return AlphaChoice(alpha, method, grid, values, True)


def _noise_error(target: float, low: float, high: float) -> ValueError:
    return ValueError(
        f"`noise` gives a target residual τ·noise·√m = {target:.4e} that no α > 0 reaches: the residual "
        f"‖Kx_α − b‖ ranges over ({low:.4e}, {high:.4e}). Check the noise level (a standard deviation per pixel)."
    )


def _operator_norm(op, rng: np.random.Generator, steps: int = 30) -> float:
    """``‖op‖₂`` by power iteration on ``opᵀ op`` (a lower estimate, enough to place a grid of weights)."""
    v = rng.standard_normal(op.shape[1])
    value = 0.0
    for _ in range(steps):
        v /= np.linalg.norm(v)
        w = op.H @ (op @ v)
        value = float(np.linalg.norm(w))
        v = w
    return float(np.sqrt(value))


def _iterative_choice(kernel, theta, b, reg: Regularizer, method, alphas, target, probes, rtol, maxiter):
    rng = np.random.default_rng(0)
    if alphas is None:
        norm = spectral_norm(kernel, theta)
        scale = (norm if isinstance(norm, float) else norm.value) ** 2
        scale /= 1.0 if reg.op is None else _operator_norm(reg.op, rng) ** 2
        alphas = scale * np.logspace(-9, 0, 10)
    grid = _grid(alphas, 0, 0, None)

    kind = "chan" if _toeplitz(kernel) else None

    def solve(rhs, a):
        return tikhonov(
            kernel, theta, rhs, alpha=float(a), L=reg.op, solver="lsqr", preconditioner=kind, rtol=rtol, maxiter=maxiter
        )

    K = kernel.op(theta)
    xs = [solve(b, a) for a in grid]
    rho = np.array([np.linalg.norm(K @ x - b) for x in xs])
    if method == "discrepancy":
        if not rho[0] < target < rho[-1]:
            raise _noise_error(target, float(rho[0]), float(rho[-1]))
        i = int(np.searchsorted(rho, target))
        t = np.interp(np.log(target), np.log(rho[i - 1 : i + 1]), np.log(grid[i - 1 : i + 1]))
        return AlphaChoice(float(np.exp(t)), method, grid, rho, False, target)
    if method == "lcurve":
        eta = np.array([np.linalg.norm(x if reg.op is None else reg.op @ x) for x in xs])
        P, E, t = np.log(rho), np.log(eta), np.log(grid)
        p1, e1 = np.gradient(P, t), np.gradient(E, t)
        kappa = (p1 * np.gradient(e1, t) - np.gradient(p1, t) * e1) / (p1**2 + e1**2) ** 1.5
        return AlphaChoice(float(grid[int(np.argmax(kappa))]), method, grid, kappa, False)
    z = rng.choice([-1.0, 1.0], size=(probes, b.size)).astype(b.dtype)
    trace = np.array([np.mean([zj @ (K @ solve(zj, a)) for zj in z]) for a in grid])
    m = b.size
    values = (rho**2 / m) / (1.0 - trace / m) ** 2
    return AlphaChoice(float(grid[int(np.argmin(values))]), method, grid, values, False)


def choose_alpha(
    kernel: ParametricKernel,
    theta,
    b,
    *,
    method: str = "gcv",
    L=None,
    noise: float | None = None,
    tau: float = TAU,
    alphas=None,
    probes: int = 4,
    rtol: float = 1e-6,
    maxiter: int | None = None,
) -> AlphaChoice:
    r"""Choose the Tikhonov weight :math:`\alpha` for ``b`` by GCV, the discrepancy principle or the L-curve.

    Parameters
    ----------
    kernel : ParametricKernel
        The forward model :math:`K(\theta)`.
    theta : array_like, shape (p,)
        Its parameters.
    b : array_like
        The data, shaped as for :func:`structops.solvers.tikhonov` (``out_shape``, flat, or the output grid).
    method : {"gcv", "discrepancy", "lcurve"}
        ``"gcv"``: minimise :math:`G(\alpha) = \dfrac{\|Kx_\alpha - b\|^2/m}{(1 - \operatorname{trace}(A_\alpha)/m)^2}`,
        :math:`A_\alpha = K(K^\top K + \alpha L^\top L)^{-1}K^\top` (needs no noise level).
        ``"discrepancy"``: solve :math:`\|Kx_\alpha - b\| = \tau\,\sigma\sqrt m` (Morozov).
        ``"lcurve"``: maximise the curvature of :math:`(\log\|Kx_\alpha - b\|, \log\|Lx_\alpha\|)` (Hansen).
    L : pylops.LinearOperator, optional
        Regularisation operator (None: the identity), as for :func:`~structops.solvers.tikhonov`.
    noise : float, optional
        :math:`\sigma`, the standard deviation of the noise per pixel; needed by ``"discrepancy"``
        (ignored by the other methods).
    tau : float, optional
        The discrepancy principle's safety factor :math:`\tau \ge 1`
        (default :data:`~structops.solvers.regularization.TAU` = 1.01;
        values in :math:`[1, 1.1]` are usual).
    alphas : array_like, optional
        The grid of weights (at least 3, > 0). Default: exact route, 4 per decade over the span
        of :math:`|k_i|^2/|l_i|^2` widened by a decade each side; iterative fallback, 10 weights
        :math:`\|K\|_2^2/\|L\|_2^2 \cdot 10^{-9 \dots 0}`.
    probes : int, optional
        Rademacher probes of the iterative GCV's trace estimate (default 4).
    rtol, maxiter : optional
        Passed to the Krylov solves of the iterative fallback.

    Returns
    -------
    AlphaChoice
        ``alpha``, ``method``, the grid ``alphas`` and the criterion ``values`` on it, and whether
        the route was ``exact``.

    Raises
    ------
    TypeError, ValueError
        Unknown ``method``; ``noise`` missing (or not > 0) for ``"discrepancy"``; ``tau < 1``; a
        noise level no :math:`\alpha` matches; ``L`` of another grid; ``b`` of the wrong shape.

    Notes
    -----
    See the module notes for the exact route and the iterative fallback.

    Examples
    --------
    >>> import numpy as np, structops
    >>> from structops.data import gaussian_stencil, phantom
    >>> k = structops.Conv((64, 64), (9, 9), bc="periodic")
    >>> theta = gaussian_stencil(9, 2.0).ravel()
    >>> rng = np.random.default_rng(0)
    >>> b = k.apply(theta, phantom(64)) + 0.01 * rng.standard_normal((64, 64))
    >>> gcv = choose_alpha(k, theta, b)
    >>> gcv.method, gcv.exact, bool(gcv.values.min() >= 0)
    ('gcv', True, True)
    >>> dp = choose_alpha(k, theta, b, method="discrepancy", noise=0.01)
    >>> bool(1e-5 < dp.alpha < 1e-1)
    True
    """
    as_kernel(kernel)
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {METHODS!r}, got {method!r}.")
    tau = check_number(tau, "tau", minimum=1.0)
    probes = check_positive_int(probes, "probes")
    theta = kernel.validate_theta(theta)
    reg = as_regularizer(L, kernel)
    flat, _ = check_data(kernel, b, theta.dtype)
    target = None
    if method == "discrepancy":
        if noise is None:
            raise ValueError("`noise` (the noise's standard deviation per pixel) is needed by method='discrepancy'.")
        noise = check_number(noise, "noise", minimum=0.0)
        if noise == 0:
            raise ValueError("`noise` must be > 0 for method='discrepancy', got 0.")
        target = tau * noise * float(np.sqrt(flat.size))
    D = kernel.diagonalize(theta)
    if D is not None and D.blocks.shape[-2:] == (1, 1) and shares_basis(D, reg):
        L_blocks = reg.blocks()
        if L_blocks is None or L_blocks.shape[-2:] == (1, 1):
            return _exact_choice(spectrum(D, reg.diagonal, flat.astype(np.float64)), method, alphas, target)
    return _iterative_choice(kernel, theta, flat, reg, method, alphas, target, probes, rtol, maxiter)
