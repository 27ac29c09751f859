r"""Bounded iterative estimates of extreme singular values: Golub--Kahan--Lanczos with bounds.

Shared by :mod:`.spectral` (estimates for kernels without a fast transform) and
:mod:`._certified` (the lower bounds of the certified route). See :func:`structops.solvers.cond`
for what the bounds guarantee.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from .._validation import check_number, check_positive_int

__all__ = ["EstimateWarning", "SpectralEstimate", "golub_kahan"]

#: Default number of Golub--Kahan--Lanczos steps (one product with K and one with Kᵀ each); the
#: bases kept for full reorthogonalisation take ``maxiter · (m + n)`` numbers.
MAXITER = 200
#: Default relative accuracy of the iterative estimates.
TOL = 1e-6
#: Default number of ARPACK restarts (Arnoldi update iterations) in :func:`eigvals`.
EIGS_MAXITER = 100
#: Probability that one probabilistic bound of a :class:`SpectralEstimate` fails (over the start vector).
_FAILURE_PROBABILITY = 1e-6


class EstimateWarning(UserWarning):
    """An iterative spectral estimate stopped at ``maxiter`` before reaching ``tol``.

    The message gives the estimate and the bounds it is known to lie within; pass
    ``full_output=True`` to get them as a :class:`SpectralEstimate`.
    """


@dataclass(frozen=True)
class SpectralEstimate:
    r"""A spectral quantity with the interval it is known to lie in.

    Attributes
    ----------
    value : float
        The estimate: what :func:`spectral_norm` / :func:`cond` return without ``full_output``.
    lower, upper : float
        Bounds, ``lower <= true value <= upper`` (``upper`` may be ``inf``). Exact results:
        ``lower == value == upper``. Iterative results: see Notes of :func:`cond`.
    exact : bool
        True when computed exactly, up to round-off: through a fast transform (the kernel's
        ``diagonalize``) or by dense LAPACK on ``kernel.matrix(theta)``.
    method : str
        The route taken (:func:`structops.solvers.route`): ``"fourier"``, ``"cosine"``,
        ``"kronecker"``, ``"dense"``, ``"certified"``, ``"verified-cholesky"`` or
        ``"golub-kahan-lanczos"``; ``"padded"`` when the verified route's factorisation was too
        costly and ``upper`` is :math:`\|K_{\rm valid}\|\,\|E\|` or Schur's bound.
    iterations : int
        Lanczos steps taken (each one product with :math:`K` and one with :math:`K^\top`); 0 if exact.
    converged : bool
        False when an iterative estimate stopped at ``maxiter`` before reaching ``tol`` (an
        :class:`EstimateWarning` was then emitted).
    certified : bool
        True when ``lower <= true value <= upper`` is guaranteed (up to round-off allowances):
        exact results, Weyl bounds of the Kronecker route, the periodic-embedding certificate of
        the ``"certified"`` route, verified positive definiteness (``"verified-cholesky"``). False
        when a bound is only probable (the Kuczyński--Woźniakowski bounds of a random-start
        Lanczos run, see :func:`structops.solvers.cond`).
    """

    value: float
    lower: float
    upper: float
    exact: bool
    method: str
    iterations: int
    converged: bool = True
    certified: bool = True


def exact_estimate(value: float, method: str) -> SpectralEstimate:
    """An exact result: ``lower == value == upper``."""
    return SpectralEstimate(value, value, value, True, method, 0)


def check_estimate_options(maxiter, tol, dense_limit) -> tuple[int, float, int]:
    """Validated ``maxiter`` (>= 1), ``tol`` (in [0, 1)) and ``dense_limit`` (>= 0)."""
    maxiter = check_positive_int(maxiter, "maxiter")
    tol = check_number(tol, "tol", minimum=0.0)
    if tol >= 1.0:
        raise ValueError(f"`tol` must be a relative accuracy in [0, 1), got {tol!r}.")
    dense_limit = check_positive_int(dense_limit, "dense_limit", minimum=0)
    return maxiter, tol, dense_limit


def _kw_epsilon(k: int, n: int) -> float:
    r"""The relative gap :math:`\varepsilon` of Kuczyński--Woźniakowski's bound after ``k`` Lanczos steps.

    For a symmetric positive semidefinite :math:`B` and a start vector uniform on the unit
    sphere, the largest Ritz value satisfies
    :math:`P(\theta_1 < (1 - \varepsilon)\lambda_1) \le 1.648\sqrt n\, e^{-\sqrt\varepsilon(2k - 1)}`
    (SIAM J. Matrix Anal. Appl. 13 (1992), Theorem 4.2); solved for the failure probability
    ``_FAILURE_PROBABILITY``.
    """
    root = np.log(1.648 * np.sqrt(n) / _FAILURE_PROBABILITY) / (2 * k - 1)
    return float(root * root)


def golub_kahan(
    op, *, maxiter: int, tol: float, need_min: bool, v0: np.ndarray | None = None
) -> tuple[SpectralEstimate, SpectralEstimate]:
    r"""Largest and smallest singular values of ``op`` (tall or wide) by Golub--Kahan--Lanczos bidiagonalisation.

    Runs at most ``maxiter`` steps with full reorthogonalisation from a seeded Gaussian start
    vector (or ``v0``: then only the guaranteed bounds -- ``lower`` of :math:`\sigma_{\max}`,
    ``upper`` of :math:`\sigma_{\min}` -- hold; the probabilistic ones assume a random start),
    stopping once the largest (and, with ``need_min``, the smallest) Ritz value has a
    residual ``<= tol`` relative to itself, or once the Krylov space is invariant. Returns the
    estimates of :math:`\sigma_{\max}` and :math:`\sigma_{\min}` (the ``min(shape)``-th) with
    the bounds described in :func:`cond`.
    """
    m, n = op.shape
    if m < n:  # the same singular values; Ritz values of a tall operator lie within [σ_min, σ_max]
        v0 = None if v0 is None else op.matvec(v0)  # a start in the other space: K v0, its image
        op, m, n = op.H, n, m
    work = np.result_type(op.dtype, np.float64)
    eps = float(np.finfo(op.dtype if np.issubdtype(op.dtype, np.inexact) else np.float64).eps)
    tol = max(tol, 10.0 * eps)
    kmax = min(maxiter, n)
    U = np.zeros((kmax, m), dtype=work)
    V = np.zeros((kmax + 1, n), dtype=work)
    alpha = np.zeros(kmax)
    beta = np.zeros(kmax + 1)
    rng = np.random.default_rng(0)
    v = rng.standard_normal(n) if v0 is None else np.asarray(v0, dtype=work).ravel()
    if np.iscomplexobj(V) and v0 is None:
        v = v + 1j * rng.standard_normal(n)
    V[0] = v / np.linalg.norm(v)

    def ritz(k: int, defect: float, uniform: bool = False):
        B = np.diag(alpha[:k]) + np.diag(beta[1:k], 1)
        P, s, _ = np.linalg.svd(B)
        return s, np.full(k, defect) if uniform else np.abs(defect * P[k - 1, :])

    def done(s, r) -> tuple[bool, bool]:
        top = r[0] <= tol * s[0]
        bottom = r[-1] <= tol * s[-1] or s[-1] <= n * eps * s[0]
        return bool(top), bool(bottom)

    scale, k, invariant, defect, rank_deficient = 0.0, 0, False, 0.0, False
    s, r = np.zeros(1), np.zeros(1)
    for j in range(kmax):
        k = j + 1
        u = np.asarray(op.matvec(V[j]), dtype=work).ravel()
        if j:
            u -= beta[j] * U[j - 1]
            u -= U[:j].T @ (U[:j].conj() @ u)
        alpha[j] = np.linalg.norm(u)
        scale = max(scale, alpha[j], beta[j])
        if alpha[j] <= n * eps * scale:  # K v_j lies in span(u_1..u_{j-1}): K is numerically rank deficient
            # then K V_k = U_{k-1} B_k[:-1] + alpha_j u e_kᵀ and Kᵀ U_{k-1} = V_k B_k[:-1]ᵀ: invariant up to alpha_j
            invariant, rank_deficient, defect = True, True, alpha[j]
            alpha[j] = 0.0
            break
        U[j] = u / alpha[j]
        w = np.asarray(op.rmatvec(U[j]), dtype=work).ravel() - alpha[j] * V[j]
        w -= V[:k].T @ (V[:k].conj() @ w)
        beta[k] = np.linalg.norm(w)
        if k == n or beta[k] <= n * eps * scale:  # span(v_1..v_k) is invariant under KᵀK
            invariant, defect = True, beta[k]
            break
        V[k] = w / beta[k]
        if k % 5 == 0 and k < kmax:
            s, r = ritz(k, beta[k])
            top, bottom = done(s, r)
            if top and (bottom or not need_min):
                break
    if not invariant:
        defect = beta[k]
    s, r = ritz(k, defect, uniform=rank_deficient)
    top, bottom = done(s, r)
    slack = np.sqrt(n) * eps * s[0]  # round-off of the computed Ritz values, relative to ||K||
    method = "golub-kahan-lanczos"
    if invariant:  # the Ritz values are singular values of K (all distinct ones the start vector sees)
        max_up, min_low = s[0] + r[0] + slack, max(s[-1] - r[-1] - slack, 0.0)
        top = bottom = True
    else:
        eps_kw = _kw_epsilon(k, n)
        max_up = s[0] / np.sqrt(1.0 - eps_kw) + slack if eps_kw < 1 else np.inf
        floor = (s[-1] ** 2 - eps_kw * max_up**2) / (1.0 - eps_kw) if eps_kw < 1 else -1.0
        min_low = max(np.sqrt(floor) - slack, 0.0) if floor > 0 else 0.0
    smax = SpectralEstimate(float(s[0]), float(max(s[0] - slack, 0.0)), float(max_up), False, method, k, top, invariant)
    smin = SpectralEstimate(float(s[-1]), float(min_low), float(s[-1] + slack), False, method, k, bottom, invariant)
    return smax, smin


def not_converged(what: str, est: SpectralEstimate, maxiter: int, tol: float) -> None:
    """Warn that an iterative estimate stopped at ``maxiter``, with its bounds and what they guarantee."""
    kind = "both bounds certified" if est.certified else "the upper bound holds with probability >= 1 - 1e-6"
    if est.method == "certified" and what == "spectral_norm":
        gap = est.upper / est.lower - 1 if est.lower > 0 else np.inf
        warnings.warn(
            f"{what}: the certified bracket [{est.lower:.6e}, {est.upper:.6e}] is {gap:.2e} wide relative, more "
            f"than tol={tol:g}: the value returned, {est.value:.6e}, is a Lanczos lower bound and may lie that far "
            "below the norm. For a certificate use structops.solvers.certified_norm_bound or `full_output=True` "
            "and `.upper`; for the exact value raise `dense_limit` above max(kernel.shape).",
            EstimateWarning,
            stacklevel=3,
        )
        return
    warnings.warn(
        f"{what}: the Lanczos estimate {est.value:.6e} did not reach tol={tol:g} in maxiter={maxiter} steps; "
        f"the true value lies in [{est.lower:.6e}, {est.upper:.6e}] ({kind}; see `full_output=True` and the "
        "Notes of structops.solvers.cond). The value returned is only an estimate"
        f"{', and a lower bound' if what == 'cond' else ''}. Raise `maxiter` for a tighter one.",
        EstimateWarning,
        stacklevel=3,
    )
