r"""The parameter-choice rules of :func:`structops.solvers.choose_alpha` on one image.

* :func:`exact_choice`: every criterion from a :class:`~structops.solvers._filters.TikhonovSpectrum`
  (filter factors in a shared basis), :math:`O(N)` per :math:`\alpha`, refined by a scalar solve;
* :func:`grid_choice`: the criteria on a grid of weights, one Krylov solve per weight (a
  ``solve(rhs, alpha)`` callable); the discrepancy grid is widened a decade at a time until it
  brackets the target, so that an error saying no :math:`\alpha` exists is only raised when the
  residual has stopped moving at both ends.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.optimize as sopt

from ._filters import TikhonovSpectrum

__all__ = [
    "METHODS",
    "TAU",
    "AlphaChoice",
    "default_grid",
    "exact_choice",
    "grid_choice",
    "noise_error",
    "rademacher_probes",
]

#: The parameter-choice rules of :func:`~structops.solvers.choose_alpha`.
METHODS = ("gcv", "discrepancy", "lcurve")

#: Safety factor of the discrepancy principle, :math:`\|Kx_\alpha - b\| = \tau\,\sigma\sqrt m`:
#: slightly above 1, so that a noise level known only approximately does not under-regularise.
TAU = 1.01

#: Points per decade of the default grid of the exact route.
_PER_DECADE = 4

#: Most decades the discrepancy grid of the iterative route is widened by, each side.
_WIDEN = 12


@dataclass(frozen=True)
class AlphaChoice:
    r"""The weight :func:`~structops.solvers.choose_alpha` picked, and the criterion curve it was picked from.

    For a stack of ``m`` images, ``alpha`` has shape ``(m,)`` and ``alphas``/``values`` shape
    ``(m, g)`` (one curve per image), so ``tikhonov(..., alpha=choice.alpha)`` solves the stack.

    Attributes
    ----------
    alpha : float or numpy.ndarray
        The chosen :math:`\alpha`.
    method : str
        ``"gcv"``, ``"discrepancy"`` or ``"lcurve"``.
    alphas : numpy.ndarray
        The grid of weights, increasing.
    values : numpy.ndarray
        The criterion on the grid: :math:`G(\alpha)` (GCV), :math:`\|Kx_\alpha - b\|` (discrepancy),
        the L-curve's curvature (lcurve).
    exact : bool
        True on the exact route (through the diagonalisation), False on the iterative one.
    target : float or None
        The discrepancy principle's :math:`\tau\sigma\sqrt m` (None for the other methods).
    iterations : int or numpy.ndarray
        Krylov iterations spent (0 on the exact route; the bidiagonalisation steps of the hybrid
        routes, summed over the ``1 + probes`` runs of the hybrid GCV).
    """

    alpha: float | np.ndarray
    method: str
    alphas: np.ndarray
    values: np.ndarray
    exact: bool
    target: float | None = None
    iterations: int | np.ndarray = 0


def _grid(alphas, lo: float, hi: float) -> np.ndarray:
    if alphas is not None:
        grid = np.sort(np.asarray(alphas, dtype=np.float64).ravel())
        if grid.size < 3 or not np.all(np.isfinite(grid)) or grid[0] <= 0:
            raise ValueError(f"`alphas` must hold at least 3 finite weights > 0, got {alphas!r}.")
        return grid
    decades = np.log10(hi) - np.log10(lo) + 2
    count = max(int(np.ceil(decades * _PER_DECADE)) + 1, 3)
    return np.logspace(np.log10(lo) - 1, np.log10(hi) + 1, count)


def _refine(fun, grid: np.ndarray, i: int) -> float:
    """Minimise ``fun(α)`` in log α between the grid neighbours of ``grid[i]``."""
    lo, hi = np.log(grid[max(i - 1, 0)]), np.log(grid[min(i + 1, grid.size - 1)])
    res = sopt.minimize_scalar(lambda t: fun(np.exp(t)), bounds=(lo, hi), method="bounded", options={"xatol": 1e-6})
    best = float(np.exp(res.x))
    return best if fun(best) <= fun(grid[i]) else float(grid[i])


def noise_error(target: float, low: float, high: float) -> ValueError:
    """The error for a discrepancy target that no weight > 0 reaches."""
    return ValueError(
        f"`noise` gives a target residual τ·noise·√m = {target:.4e} that no α > 0 reaches: the residual "
        f"‖Kx_α − b‖ ranges over ({low:.4e}, {high:.4e}). Check the noise level (a standard deviation per pixel, "
        "in the units of `b`: scale an 8-bit image to [0, 1] and the noise with it)."
    )


def exact_choice(s: TikhonovSpectrum, method: str, alphas, target: float | None) -> AlphaChoice:
    """The choice on the exact route, from the filter factors."""
    grid = _grid(alphas, *s.alpha_range())
    if method == "discrepancy":
        target = float(target or 0.0)
        values = np.sqrt([s.residual_norm2(a) for a in grid])
        low, high = s.residual_limits()
        if not low < target**2 < high:
            raise noise_error(target, np.sqrt(low), np.sqrt(high))
        t_lo, t_hi = np.log(s.alpha_range()[0]) - 40, np.log(s.alpha_range()[1]) + 40
        root = sopt.brentq(lambda t: s.residual_norm2(np.exp(t)) - target**2, t_lo, t_hi, xtol=1e-10, rtol=1e-12)
        return AlphaChoice(float(np.exp(root)), method, grid, values, True, target)
    fun = s.gcv if method == "gcv" else (lambda a: -s.curvature(a))
    scores = np.array([fun(a) for a in grid])
    alpha = _refine(fun, grid, int(np.argmin(scores)))
    values = scores if method == "gcv" else -scores
    return AlphaChoice(alpha, method, grid, values, True)


Solve = Callable[[np.ndarray, float], np.ndarray]


def _discrepancy_grid(solve: Solve, K, b, grid: np.ndarray, target: float) -> AlphaChoice:
    """Widen ``grid`` a decade at a time until the residuals bracket ``target``; interpolate the root in log-log."""
    xs = {float(a): solve(b, float(a)) for a in grid}

    def rho(a: float) -> float:
        if a not in xs:
            xs[a] = solve(b, a)
        return float(np.linalg.norm(K @ xs[a] - b))

    values = {a: rho(a) for a in list(xs)}
    for _ in range(_WIDEN):
        lo, hi = min(values), max(values)
        if values[hi] > target and values[lo] < target:
            break
        if values[hi] <= target:
            new = hi * 10.0
        else:
            new = lo / 10.0
        values[new] = rho(new)
        if new > hi and abs(values[new] - values[hi]) <= 1e-12 * values[new]:
            break  # saturated above: ‖b‖'s part outside L's null space is reached
        if new < lo and abs(values[new] - values[lo]) <= 1e-12 * values[new]:
            break
    g = np.array(sorted(values))
    r = np.array([values[a] for a in g])
    if not r[0] < target < r[-1]:
        raise noise_error(target, float(r[0]), float(r[-1]))
    i = int(np.searchsorted(r, target))
    t = np.interp(np.log(target), np.log(r[i - 1 : i + 1]), np.log(g[i - 1 : i + 1]))
    return AlphaChoice(float(np.exp(t)), "discrepancy", g, r, False, target)


def grid_choice(solve: Solve, K, Lop, b: np.ndarray, method: str, grid: np.ndarray, target, probes: int) -> AlphaChoice:
    """The choice on the iterative route: one ``solve`` per weight (``1 + probes`` for GCV)."""
    if method == "discrepancy":
        return _discrepancy_grid(solve, K, b, grid, float(target))
    xs = [solve(b, float(a)) for a in grid]
    rho = np.array([np.linalg.norm(K @ x - b) for x in xs])
    if method == "lcurve":
        eta = np.array([np.linalg.norm(x if Lop is None else Lop @ x) for x in xs])
        P, E, t = np.log(rho), np.log(eta), np.log(grid)
        p1, e1 = np.gradient(P, t), np.gradient(E, t)
        kappa = (p1 * np.gradient(e1, t) - np.gradient(p1, t) * e1) / (p1**2 + e1**2) ** 1.5
        return AlphaChoice(float(grid[int(np.argmax(kappa))]), method, grid, kappa, False)
    z = rademacher_probes(probes, b.size).astype(b.dtype)
    trace = np.array([np.mean([zj @ (K @ solve(zj, float(a))) for zj in z]) for a in grid])
    m = b.size
    values = (rho**2 / m) / (1.0 - trace / m) ** 2
    return AlphaChoice(float(grid[int(np.argmin(values))]), method, grid, values, False)


def rademacher_probes(probes: int, size: int) -> np.ndarray:
    r"""The seeded Rademacher vectors :math:`z_j` of GCV's trace estimate, shape ``(probes, size)``, float64.

    Hutchinson's :math:`\operatorname{trace}A \approx \frac1p\sum_j z_j^\top A z_j`; the grid route
    (:func:`grid_choice`) and the hybrid one (:func:`~structops.solvers._hybrid.hybrid_gcv`) draw the
    same ones, so they estimate the same GCV function.
    """
    return np.random.default_rng(0).choice([-1.0, 1.0], size=(probes, size))


def default_grid(alphas, scale: float) -> np.ndarray:
    r"""The iterative route's grid: ``alphas``, or 13 weights :math:`s\cdot 10^{-10 \dots 2}` (``scale`` :math:`s`)."""
    if alphas is not None:
        return _grid(alphas, 0, 0)
    return scale * np.logspace(-10, 2, 13)
