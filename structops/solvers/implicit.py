r"""Gradients of a Tikhonov solution by implicit differentiation: one adjoint solve on the same route.

For :math:`x = A^{-1}K^\top b` with :math:`A = K(\theta)^\top K(\theta) + \alpha L(\phi)^\top L(\phi)`
and a loss gradient :math:`g = \partial\ell/\partial x`, the adjoint solve
:math:`\lambda = A^{-1} g` (:math:`A` is symmetric) gives every gradient:

.. math::
    \frac{\partial\ell}{\partial b} = K\lambda, \qquad
    \frac{\partial\ell}{\partial\alpha} = -(L\lambda)^\top(Lx), \qquad
    \frac{\partial\ell}{\partial\theta} = J_K(\lambda)^\top(b - Kx) - J_K(x)^\top(K\lambda), \qquad
    \frac{\partial\ell}{\partial\phi} = -\alpha\big(J_L(\lambda)^\top(Lx) + J_L(x)^\top(L\lambda)\big),

where :math:`J_K(v) = \partial(K(\theta)v)/\partial\theta` (``kernel.jac(theta, v)``). The adjoint
solve runs on the route of the forward one (:meth:`structops.solvers.Deblurrer.normal_solve`):
exact through the shared diagonalisation, or ``cg`` with the same preconditioner model. The
PyTorch and JAX forms (:func:`structops.torch.solve.tikhonov`, :func:`structops.jax.tikhonov`) call
:func:`tikhonov_vjp` on the host.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..kernels._base import ParametricKernel, as_kernel
from .deblurrer import Deblurrer

__all__ = ["TikhonovGradients", "tikhonov_vjp"]


@dataclass(frozen=True)
class TikhonovGradients:
    """The gradients of a loss through the Tikhonov solution (``theta_L`` is None without an ``L`` family)."""

    theta: np.ndarray
    b: np.ndarray
    alpha: float
    theta_L: np.ndarray | None


def _jac_t(kernel: ParametricKernel, theta: np.ndarray, v: np.ndarray, w: np.ndarray) -> np.ndarray:
    r""":math:`J(v)^\top w` for :math:`J(v) = \partial(K(\theta)v)/\partial\theta` (one example)."""
    J = kernel.jac(theta, v.reshape(kernel.in_shape))
    return np.asarray(J.H @ w.ravel()).ravel()


def tikhonov_vjp(
    kernel: ParametricKernel,
    theta,
    b: np.ndarray,
    alpha: float,
    x: np.ndarray,
    g: np.ndarray,
    *,
    L_family: ParametricKernel | None = None,
    theta_L=None,
    L=None,
    solver: str = "auto",
    preconditioner: str | None = "auto",
    rtol: float = 1e-10,
) -> TikhonovGradients:
    r"""The vector-Jacobian products of the Tikhonov solution ``x`` with the loss gradient ``g`` (see the module notes).

    Parameters
    ----------
    kernel, theta : ParametricKernel, array_like
        :math:`K(\theta)`.
    b : numpy.ndarray, shape ``(N_out,)``
        The data ``x`` was solved for.
    alpha : float
        The weight.
    x, g : numpy.ndarray, shape ``(N_in,)``
        The solution and :math:`\partial\ell/\partial x`.
    L_family, theta_L : optional
        :math:`L(\phi)` as a family and its parameters (differentiated in :math:`\phi`).
    L : pylops.LinearOperator, optional
        A fixed regulariser instead of a family (no gradient through it); neither: :math:`L = I`.
    solver, preconditioner, rtol : optional
        The route of the adjoint solve (as for :func:`structops.solvers.tikhonov`).

    Returns
    -------
    TikhonovGradients
    """
    as_kernel(kernel)
    theta = kernel.validate_theta(theta)
    if L_family is not None:
        L = L_family.op(theta_L)
    d = Deblurrer(kernel, theta, L=L, solver=solver, preconditioner=preconditioner, rtol=rtol)
    dtype = theta.dtype
    x, g, b = (np.asarray(a, dtype=dtype).ravel() for a in (x, g, b))
    lam = d.normal_solve(g, alpha)
    K = d.K
    K_lam = np.asarray(K @ lam)
    grad_theta = _jac_t(kernel, theta, lam, b - K @ x) - _jac_t(kernel, theta, x, K_lam)
    if L is None:
        L_lam, L_x = lam, x
    else:
        L_lam, L_x = np.asarray(L @ lam), np.asarray(L @ x)
    grad_alpha = -float(L_lam @ L_x)
    grad_L = None
    if L_family is not None:
        grad_L = -alpha * (
            _jac_t(L_family, L_family.validate_theta(theta_L), lam, L_x)
            + _jac_t(L_family, L_family.validate_theta(theta_L), x, L_lam)
        )
    return TikhonovGradients(grad_theta, K_lam, grad_alpha, grad_L)
