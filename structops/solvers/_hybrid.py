r"""Hybrid regularisation: the discrepancy principle applied to the Golub--Kahan projected problem.

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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.optimize as sopt

__all__ = ["HybridResult", "hybrid_discrepancy"]


@dataclass(frozen=True)
class HybridResult:
    """What :func:`hybrid_discrepancy` found: the weight, the solution and the steps taken."""

    alpha: float
    x: np.ndarray
    iterations: int
    grid: np.ndarray
    values: np.ndarray
    reachable: bool


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


def _reorth(w: np.ndarray, basis: list[np.ndarray]) -> np.ndarray:
    if basis:
        Q = np.asarray(basis)
        w = w - Q.T @ (Q @ w)
        w = w - Q.T @ (Q @ w)
    return w


def hybrid_discrepancy(K, b: np.ndarray, target: float, *, tol: float = 1e-4, maxiter: int = 500) -> HybridResult:
    r"""Discrepancy-principle Tikhonov (:math:`L = I`) by Golub--Kahan bidiagonalisation (see the module notes).

    Parameters
    ----------
    K : pylops.LinearOperator
        The forward operator.
    b : numpy.ndarray, shape (m,)
        The data.
    target : float
        :math:`\tau\sigma\sqrt m`.
    tol : float
        Stop when :math:`\alpha_k` and :math:`x_k` change by less than ``tol`` (relative) in a step.
    maxiter : int
        Most bidiagonalisation steps.

    Returns
    -------
    HybridResult
        ``reachable`` is False when no :math:`\alpha > 0` reaches ``target`` on the subspace
        built (target above :math:`\|b\|`, or the subspace exhausted first).
    """
    beta = float(np.linalg.norm(b))
    dtype = np.float64
    U = [np.asarray(b, dtype) / beta]
    v = np.asarray(K.H @ U[0], dtype)
    a = float(np.linalg.norm(v))
    V: list[np.ndarray] = [v / a]
    diag, sub = [a], []
    alpha_prev, x_prev = None, None
    for k in range(1, maxiter + 1):
        u = _reorth(np.asarray(K @ V[-1], dtype) - diag[-1] * U[-1], U)
        bk = float(np.linalg.norm(u))
        sub.append(bk)
        B = np.zeros((k + 1, k))
        B[np.arange(k), np.arange(k)] = diag
        B[np.arange(1, k + 1), np.arange(k)] = sub
        s, c, Qt, off = _projected(B, beta)
        alpha = _alpha_for(s, c, off, beta, target)
        if alpha is not None:
            y = Qt.T @ (s / (s**2 + alpha) * c)
            x = np.asarray(V).T @ y
            if alpha_prev is not None and x_prev is not None:
                dx = np.linalg.norm(x - x_prev) / max(np.linalg.norm(x), np.finfo(float).tiny)
                if abs(alpha - alpha_prev) <= tol * alpha and dx <= tol:
                    return _result(alpha, x, k, s, c, off, True)
            alpha_prev, x_prev = alpha, x
        if bk <= np.finfo(float).eps * beta:
            break
        U.append(u / bk)
        v = _reorth(np.asarray(K.H @ U[-1], dtype) - bk * V[-1], V)
        a = float(np.linalg.norm(v))
        if a <= np.finfo(float).eps * beta:
            break
        V.append(v / a)
        diag.append(a)
    if alpha_prev is not None and x_prev is not None:
        return _result(alpha_prev, x_prev, k, s, c, off, True)
    return _result(0.0, np.zeros(K.shape[1]), k, s, c, off, False)


def _result(alpha, x, k, s, c, off, reachable) -> HybridResult:
    top = float(s.max()) ** 2
    grid = top * np.logspace(-14, 1, 31)
    values = np.sqrt([_residual2(s, c, off, g) for g in grid])
    return HybridResult(float(alpha), x, int(k), grid, values, bool(reachable))
