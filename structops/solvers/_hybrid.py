r"""Hybrid regularisation: the discrepancy principle, the L-curve and GCV on Golub--Kahan projected problems.

Golub--Kahan bidiagonalisation of :math:`K` started from :math:`b` builds, after :math:`k` steps,
orthonormal :math:`U_{k+1} = [u_1, \dots, u_{k+1}]` (:math:`u_1 = b/\beta_1`), :math:`V_k` and the
lower bidiagonal :math:`B_k \in \mathbb R^{(k+1)\times k}` with :math:`K V_k = U_{k+1} B_k`. On
:math:`x = V_k y` the Tikhonov problem with :math:`L = I` becomes the small one

.. math::
    \min_y \|B_k y - \beta_1 e_1\|^2 + \alpha \|y\|^2 ,

and its residual :math:`\|B_k y_\alpha - \beta_1 e_1\|` *is* :math:`\|K V_k y_\alpha - b\|`. So the
weight solving the discrepancy equation on the projected problem, :math:`\alpha_k`, is found
from the SVD of :math:`B_k` at every step for :math:`O(k^3)`; the iteration stops when
:math:`\alpha_k` and :math:`x_k = V_k y_{\alpha_k}` settle (Chung, Nagy and O'Leary 2008, "A
weighted-GCV method for Lanczos-hybrid regularization", ETNA 28). One Krylov run chooses
:math:`\alpha` and solves. Full reorthogonalisation keeps the projected residual exact.

The L-curve is chosen the same way (:func:`hybrid_choice`): the projected problem is a Tikhonov
problem with the spectrum :math:`(s_i, c_i)` of :math:`B_k = P\,\mathrm{diag}(s)\,Q^\top`,
:math:`c = \beta_1 P^\top e_1`, plus the part :math:`\beta_1^2 - \|c\|^2` of :math:`b` outside
:math:`\mathrm{range}(B_k)` (a :class:`~structops.solvers._filters.TikhonovSpectrum` with one extra
component :math:`k = 0`), so the exact route's criterion applies to it unchanged: the maximiser of
the curvature of :math:`(\log\rho_k, \log\|y_\alpha\|)` (:math:`\|x_k\| = \|y_\alpha\|`,
:math:`V_k` orthonormal). Each stops when :math:`\alpha_k` and :math:`x_k` settle, as for the
discrepancy principle.

GCV (:func:`hybrid_gcv`) needs the trace of the influence matrix
:math:`A_\alpha = K(K^\top K + \alpha I)^{-1}K^\top`, which the projected problem of :math:`b`
does not give. It takes the grid route's estimator, Hutchinson's
:math:`\operatorname{trace}A_\alpha \approx \frac1p\sum_j z_j^\top A_\alpha z_j` with the same seeded
Rademacher :math:`z_j`, and evaluates each term for *every* :math:`\alpha` from a Golub--Kahan
run started at :math:`z_j`: with that run's :math:`(s, c)`,
:math:`z_j^\top K x_k(\alpha; z_j) = \sum_i c_i^2 s_i^2/(s_i^2 + \alpha)`, the Gauss quadrature of
Golub and von Matt (1997). The :math:`1 + p` runs advance together; at each step

.. math::
    G_k(\alpha) = \frac{m\,\rho_k(\alpha)}{\big(m - \frac1p\sum_j\sum_i c_{ji}^2 s_{ji}^2/(s_{ji}^2 + \alpha)\big)^2}

(:math:`\rho_k` the projected residual of :math:`b`, the full one) is minimised over 16 decades,
and the runs stop when the minimiser has moved by at most ``tol`` = 1e-3 over 3 steps. On 9×9
Gaussian blurs (zero and mirrored boundaries, 64²--256², noise 0.01 and 0.001;
``benchmarks/bench_imaging.py --only wgcv``, figures in ``benchmarks/README.md``) its
:math:`\alpha` is within 3 % of the exact GCV choice and its image within 0.3 % of the exact
GCV image, where the grid route (a decade between weights) is up to 19 % worse against the
truth; it costs :math:`2(1 + p)` products a step and :math:`2(1 + p)` stored bases, capped
to :data:`GCV_MEMORY` bytes (the grid route takes over when :math:`\alpha_k` has not settled).

Chung, Nagy and O'Leary's own choice, the weighted GCV of the projected problem,

.. math::
    G_{\omega,k}(\alpha) = \frac{k\,\|(I_{k+1} - B_kB_k^\alpha)\beta_1e_1\|^2}
    {\operatorname{trace}(I_{k+1} - \omega B_kB_k^\alpha)^2},
    \qquad B_k^\alpha = (B_k^\top B_k + \alpha I)^{-1}B_k^\top ,

with their adaptive weight (:math:`\omega_k` solving :math:`\partial_\alpha G_\omega = 0` at
:math:`\alpha = s_{\min}(B_k)^2`, capped at 1; :math:`\omega` the mean of the
:math:`\omega_j` so far) and HyBR's stopping rules (the Krylov GCV
:math:`m\rho_k/(m - \sum_i\varphi_i)^2` at :math:`\alpha_k` flat to :math:`10^{-6}` of its first
value, or minimal over a window of 3 steps), needs one run but failed on the same problems:
its :math:`\alpha` was 5.1--9.6 times the exact GCV choice at noise 0.01 and 11--31 times at
0.001, its images' error against the truth 0.95--1.05 times the exact GCV image's at noise 0.01
but 1.18--1.33 times at 0.001. The adaptive weight stays at its cap, and the minimiser is too
sensitive to :math:`\omega` for any fixed weight to serve: at the stopping step
:math:`\omega` = 1, 0.9, 0.8, 0.5 give 31, 4.6, 2.2 and 0.56 times the exact choice (64², noise
0.001), and after 100--300 steps :math:`\omega \le 0.8` sends :math:`\alpha_k` to 0 (the Krylov
subspace takes up the largest, noisiest coefficients of :math:`b` first, so one Ritz component
carries the noise of many and the projected trace undercounts it). The paper covers
:math:`L = I`; with another :math:`L` every criterion keeps the grid route.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import scipy.optimize as sopt

from .._backend import blas_threads_for
from ._choice import exact_choice, rademacher_probes
from ._filters import TikhonovSpectrum

__all__ = [
    "HYBRID_METHODS",
    "HybridResult",
    "ProjectedStep",
    "golub_kahan_steps",
    "hybrid_choice",
    "hybrid_gcv",
    "hybrid_discrepancy",
]

#: The criteria :func:`hybrid_choice` applies to the projected problem(s).
HYBRID_METHODS = ("discrepancy", "lcurve", "gcv")

#: Bytes the Krylov bases of the hybrid GCV (``1 + probes`` runs, ``U`` and ``V`` each) may hold:
#: the steps are capped to fit, and the grid route takes over when they do not settle by then.
GCV_MEMORY = 2**31


@dataclass(frozen=True)
class HybridResult:
    """What :func:`hybrid_choice` found: the weight, the solution, the steps taken and the criterion's curve."""

    alpha: float
    x: np.ndarray
    iterations: int
    grid: np.ndarray
    values: np.ndarray
    reachable: bool
    converged: bool = True


def _projected(B: np.ndarray, beta: float):
    """SVD pieces of ``min ||B y - β e1||² + α||y||²``: singular values, coefficients, residual off range(B)."""
    P, s, Qt = np.linalg.svd(B, full_matrices=False)
    c = beta * P[0, :]
    off = max(beta**2 - float(c @ c), 0.0)
    return s, c, Qt, off


def _residual2(s, c, off, alpha: float) -> float:
    f = alpha / (s**2 + alpha)
    return float(np.sum((f * c) ** 2) + off)


def _alpha_for(s, c, off, beta: float, target: float) -> float | None:
    """The root of residual(α) = target on the projected problem (None while no α reaches it)."""
    if not off < target**2 < beta**2:
        return None
    top = float(s.max()) ** 2
    lo, hi = np.log(top) - 80.0, np.log(top) + 40.0
    if _residual2(s, c, off, np.exp(lo)) >= target**2:
        return None
    root = sopt.brentq(lambda t: _residual2(s, c, off, np.exp(t)) - target**2, lo, hi, xtol=1e-10)
    return float(np.exp(root))


class _Basis:
    """Orthonormal vectors stored as the rows of one array that grows by doubling (no copy per step)."""

    def __init__(self, first: np.ndarray) -> None:
        self._rows = np.empty((8, first.size), dtype=first.dtype)
        self._rows[0] = first
        self.size = 1

    def append(self, v: np.ndarray) -> None:
        if self.size == self._rows.shape[0]:
            grown = np.empty((2 * self.size, self._rows.shape[1]), dtype=self._rows.dtype)
            grown[: self.size] = self._rows
            self._rows = grown
        self._rows[self.size] = v
        self.size += 1

    def rows(self, k: int | None = None) -> np.ndarray:
        """The first ``k`` vectors (all by default) as a ``(k, N)`` view; later appends never change it."""
        return self._rows[: self.size if k is None else k]

    def last(self) -> np.ndarray:
        return self._rows[self.size - 1]


def _reorth(w: np.ndarray, basis: _Basis) -> np.ndarray:
    """``w`` with its components along ``basis`` removed, twice (classical Gram--Schmidt, reorthogonalised)."""
    Q = basis.rows()
    w = w - Q.T @ (Q @ w)
    return w - Q.T @ (Q @ w)


def _projected_spectrum(s: np.ndarray, c: np.ndarray, off: float) -> TikhonovSpectrum:
    """The projected problem as a Tikhonov spectrum: ``(s_i, c_i)`` and the off-range part as a component ``k = 0``."""
    k2 = np.append(s**2, 0.0)
    c2 = np.append(c**2, off)
    ones = np.ones_like(k2)
    return TikhonovSpectrum(k2, ones, c2, ones, rows=k2.size)


def _criterion_alpha(method: str, s, c, off, beta: float, target: float | None):
    """``(α_k, grid, values)`` of ``method`` on the projected problem (``α_k`` None while none is defined)."""
    if method == "discrepancy":
        return _alpha_for(s, c, off, beta, float(target or 0.0)), None, None
    if not (s.size and float(s.min()) > 0):
        return None, None, None
    choice = exact_choice(_projected_spectrum(s, c, off), method, None, None)
    return float(choice.alpha), choice.alphas, choice.values


def hybrid_discrepancy(K, b: np.ndarray, target: float, *, tol: float = 1e-4, maxiter: int = 500) -> HybridResult:
    r"""Discrepancy-principle Tikhonov (:math:`L = I`) by Golub--Kahan bidiagonalisation (see the module notes).

    ``hybrid_choice(K, b, "discrepancy", target=target, tol=tol, maxiter=maxiter)``.
    """
    return hybrid_choice(K, b, "discrepancy", target=target, tol=tol, maxiter=maxiter)


@dataclass
class ProjectedStep:
    r"""Step :math:`k` of the Golub--Kahan bidiagonalisation of :math:`K` from :math:`b` (see the module notes).

    ``s``, ``Qt``: the SVD :math:`B_k = P\,\mathrm{diag}(s)\,Q^\top`; ``c`` :math:`= \beta_1 P^\top e_1`;
    ``off`` :math:`= \beta_1^2 - \|c\|^2` (the part of :math:`b` off :math:`\mathrm{range}(B_k)`);
    ``V``: the :math:`k` right basis vectors, the rows of a ``(k, N)`` array;
    ``last``: whether the subspace stopped growing here.
    """

    k: int
    s: np.ndarray
    c: np.ndarray
    Qt: np.ndarray
    off: float
    V: np.ndarray
    last: bool

    def solution(self, alpha: float) -> np.ndarray:
        r""":math:`x_k(\alpha) = V_k y_\alpha`, the Tikhonov solution on the subspace."""
        return self.V.T @ (self.Qt.T @ (self.s / (self.s**2 + alpha) * self.c))


def golub_kahan_steps(K, b: np.ndarray, maxiter: int) -> Iterator[ProjectedStep]:
    """The projected problem after each of at most ``maxiter`` steps (full reorthogonalisation, float64)."""
    beta = float(np.linalg.norm(b))
    dtype = np.float64
    U = _Basis(np.asarray(b, dtype).reshape(-1) / beta)
    v = np.asarray(K.H @ U.last(), dtype)
    a = float(np.linalg.norm(v))
    V = _Basis(v / a)
    diag, sub = [a], []
    for k in range(1, maxiter + 1):
        u = _reorth(np.asarray(K @ V.last(), dtype) - diag[-1] * U.last(), U)
        bk = float(np.linalg.norm(u))
        sub.append(bk)
        B = np.zeros((k + 1, k))
        B[np.arange(k), np.arange(k)] = diag
        B[np.arange(1, k + 1), np.arange(k)] = sub
        s, c, Qt, off = _projected(B, beta)
        last = bool(bk <= np.finfo(float).eps * beta)
        if not last:
            U.append(u / bk)
            v = _reorth(np.asarray(K.H @ U.last(), dtype) - bk * V.last(), V)
            a = float(np.linalg.norm(v))
            last = bool(a <= np.finfo(float).eps * beta)
        yield ProjectedStep(k, s, c, Qt, off, V.rows(k), last)
        if last:
            return
        V.append(v / a)
        diag.append(a)


def hybrid_choice(
    K,
    b: np.ndarray,
    method: str,
    *,
    target: float | None = None,
    tol: float = 1e-4,
    maxiter: int = 500,
    probes: int = 4,
) -> HybridResult:
    r"""Tikhonov (:math:`L = I`) with :math:`\alpha` chosen on the Golub--Kahan projected problem (module notes).

    Parameters
    ----------
    K : pylops.LinearOperator
        The forward operator.
    b : numpy.ndarray, shape (m,)
        The data.
    method : {"discrepancy", "lcurve", "gcv"}
        The criterion on the projected problem: the discrepancy principle, the L-curve's
        maximum curvature, or GCV (:func:`hybrid_gcv`, with ``probes`` runs more).
    target : float, optional
        :math:`\tau\sigma\sqrt m` (``"discrepancy"`` only).
    tol : float
        Stop when :math:`\alpha_k` and :math:`x_k` change by less than ``tol`` (relative) in a step.
    maxiter : int
        Most bidiagonalisation steps.
    probes : int
        Rademacher probes of the GCV trace estimate (``"gcv"`` only).

    Returns
    -------
    HybridResult
        ``reachable`` is False when no :math:`\alpha > 0` was found (discrepancy: the target is
        above :math:`\|b\|` or not reached on the subspace built); ``converged`` whether
        :math:`\alpha_k` and :math:`x_k` settled before ``maxiter`` steps.
    """
    if method not in HYBRID_METHODS:
        raise ValueError(f"`method` must be one of {HYBRID_METHODS!r}, got {method!r}.")
    # the vector operations between the products run on one BLAS thread (as krylov_solve's)
    with blas_threads_for(1):
        if method == "gcv":
            return hybrid_gcv(K, b, probes=probes, maxiter=maxiter)
        return _one_run(K, b, method, target, tol, maxiter)


def _one_run(K, b: np.ndarray, method: str, target: float | None, tol: float, maxiter: int) -> HybridResult:
    """:func:`hybrid_choice` for the discrepancy principle and the L-curve: one Golub--Kahan run."""
    beta = float(np.linalg.norm(b))
    best = None  # (alpha, x, grid, values) of the last step that defined one
    for step in golub_kahan_steps(K, b, maxiter):
        s, c, off = step.s, step.c, step.off
        alpha, grid, values = _criterion_alpha(method, s, c, off, beta, target)
        if alpha is not None:
            x = step.solution(alpha)
            if best is not None:
                dx = np.linalg.norm(x - best[1]) / max(np.linalg.norm(x), np.finfo(float).tiny)
                if abs(alpha - best[0]) <= tol * alpha and dx <= tol:
                    return _result(alpha, x, step.k, s, c, off, True, grid, values, True)
            best = (alpha, x, grid, values)
    exhausted = step.last  # an invariant subspace: the projected problem is the whole one
    if best is not None:
        return _result(best[0], best[1], step.k, s, c, off, True, best[2], best[3], exhausted)
    return _result(0.0, np.zeros(K.shape[1]), step.k, s, c, off, False, None, None, False)


def _gcv_curve(data: ProjectedStep, runs: list[ProjectedStep], m: int):
    r"""``G(log α)`` from the projected problems: :math:`m\rho_k(\alpha)/(m - t_k(\alpha))^2` (module notes)."""

    def G(t: float) -> float:
        a = float(np.exp(t))
        rho = _residual2(data.s, data.c, data.off, a)
        trace = float(np.mean([np.sum(r.c**2 * r.s**2 / (r.s**2 + a)) for r in runs]))
        return m * rho / (m - trace) ** 2 if trace < m else np.inf

    return G


def _gcv_alpha(data: ProjectedStep, runs: list[ProjectedStep], m: int):
    """The minimiser of the GCV curve over 16 decades below ``s_max²`` (and one above), its grid and values."""
    G = _gcv_curve(data, runs, m)
    top = np.log(float(data.s[0]) ** 2)
    t = np.linspace(top - 37.0, top + 2.3, 121)
    values = np.array([G(x) for x in t])
    i = int(np.argmin(values))
    res = sopt.minimize_scalar(G, bounds=(t[max(i - 1, 0)], t[min(i + 1, t.size - 1)]), method="bounded")
    best = float(res.x) if G(float(res.x)) <= values[i] else float(t[i])
    return float(np.exp(best)), np.exp(t), values


def hybrid_gcv(
    K, b: np.ndarray, *, probes: int = 4, tol: float = 1e-3, patience: int = 3, maxiter: int = 500
) -> HybridResult:
    r"""GCV's :math:`\alpha` (:math:`L = I`) from ``1 + probes`` Golub--Kahan runs (see the module notes).

    Parameters
    ----------
    K : pylops.LinearOperator
        The forward operator, :math:`m` rows.
    b : numpy.ndarray, shape (m,)
        The data.
    probes : int
        Seeded Rademacher vectors :math:`z_j` of the trace estimate (the grid route's).
    tol, patience : float, int
        Stop when :math:`\alpha_k` has moved by at most ``tol`` (relative) over ``patience`` steps.
    maxiter : int
        Most steps per run, lowered so that the ``2 (1 + probes)`` bases fit in :data:`GCV_MEMORY` bytes.

    Returns
    -------
    HybridResult
        ``iterations`` counts the steps of all runs; ``converged`` is False when :math:`\alpha_k`
        had not settled by the last step (the caller then falls back to the grid route).
    """
    m = int(b.size)
    z = rademacher_probes(probes, m)
    maxiter = max(min(maxiter, GCV_MEMORY // (16 * (1 + probes) * max(m, K.shape[1]))), 3)
    runs = [golub_kahan_steps(K, v, maxiter) for v in (b, *z)]
    steps: list[ProjectedStep] = [next(r) for r in runs]
    alphas: list[float] = []
    for k in range(1, maxiter + 1):
        if k > 1:
            steps = [s if s.last else next(r, s) for r, s in zip(runs, steps)]
        alpha, grid, values = _gcv_alpha(steps[0], steps[1:], m)
        alphas.append(alpha)
        recent = alphas[-patience - 1 :]
        settled = len(recent) > patience and max(abs(a - alpha) for a in recent) <= tol * alpha
        if settled or all(s.last for s in steps):
            break
    total = sum(s.k for s in steps)
    data = steps[0]
    return HybridResult(alpha, data.solution(alpha), total, grid, values, True, bool(settled or data.last))


def _result(alpha, x, k, s, c, off, reachable, grid, values, converged) -> HybridResult:
    if grid is None:  # the discrepancy principle: the projected residual on a grid
        top = float(s.max()) ** 2
        grid = top * np.logspace(-14, 1, 31)
        values = np.sqrt([_residual2(s, c, off, g) for g in grid])
    return HybridResult(float(alpha), x, int(k), grid, values, bool(reachable), bool(converged))
