r"""A Tikhonov solve as a differentiable PyTorch function (implicit differentiation).

:func:`tikhonov` returns :math:`x = (K(\theta)^\top K(\theta) + \alpha L(\phi)^\top L(\phi))^{-1}K(\theta)^\top b`,
solved in numpy by :func:`structops.solvers.tikhonov` (exact through a shared diagonalisation,
else a preconditioned Krylov method), and differentiable in :math:`\theta`, :math:`b`,
:math:`\alpha` and :math:`\phi` (when ``L`` is a family). The backward pass is one adjoint solve
on the same route (:func:`structops.solvers.implicit.tikhonov_vjp`), never an unrolled loop:
bilevel learning of a regulariser or of :math:`\alpha` costs two solves per step.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pylops
import torch

from ..kernels._base import ParametricKernel, as_kernel
from ..solvers.implicit import tikhonov_vjp
from ..solvers.tikhonov import tikhonov as _np_tikhonov

__all__ = ["tikhonov"]


def _host(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


class _Tikhonov(torch.autograd.Function):
    @staticmethod
    def forward(ctx, theta, b, alpha, theta_L, kernel, L_family, L_fixed, options):
        th, bb, a = _host(theta), _host(b), float(alpha.detach())
        L = L_fixed if L_family is None else L_family.op(_host(theta_L))
        x = _np_tikhonov(kernel, th, bb, alpha=a, L=L, **options)
        ctx.save_for_backward(theta, b, alpha, theta_L)
        ctx.kernel, ctx.L_family, ctx.L_fixed, ctx.options, ctx.x = kernel, L_family, L_fixed, options, x
        return torch.from_numpy(np.array(x)).to(theta.dtype)

    @staticmethod
    def backward(ctx, gx):
        theta, b, alpha, theta_L = ctx.saved_tensors
        g = tikhonov_vjp(
            ctx.kernel,
            _host(theta),
            _host(b),
            float(alpha.detach()),
            ctx.x,
            _host(gx),
            L_family=ctx.L_family,
            theta_L=None if ctx.L_family is None else _host(theta_L),
            L=ctx.L_fixed,
            solver=ctx.options["solver"],
            preconditioner=ctx.options["preconditioner"],
            rtol=ctx.options["rtol"],
        )
        dtype = theta.dtype
        d_theta = torch.from_numpy(np.array(g.theta)).to(dtype)
        d_b = torch.from_numpy(np.array(g.b)).to(dtype).reshape(b.shape)
        d_alpha = torch.tensor(g.alpha, dtype=alpha.dtype)
        d_L = None if g.theta_L is None else torch.from_numpy(np.array(g.theta_L)).to(theta_L.dtype)
        return d_theta, d_b, d_alpha, d_L, None, None, None, None


def tikhonov(
    kernel: ParametricKernel,
    theta: torch.Tensor,
    b: torch.Tensor,
    *,
    alpha: Any,
    L: ParametricKernel | pylops.LinearOperator | None = None,
    theta_L: torch.Tensor | None = None,
    solver: str = "auto",
    preconditioner: str | None = "auto",
    rtol: float = 1e-10,
) -> torch.Tensor:
    r"""The Tikhonov solution as a torch function of ``theta``, ``b``, ``alpha`` (and ``theta_L``).

    Parameters
    ----------
    kernel : ParametricKernel
        :math:`K(\theta)`.
    theta : torch.Tensor, shape (p,)
        Its parameters, float32 or float64 (the solve runs in their dtype).
    b : torch.Tensor
        One output of ``kernel`` (``out_shape``, flat or the output grid), of ``theta``'s dtype.
    alpha : float or torch.Tensor
        :math:`\alpha > 0` (a 0-d tensor to differentiate in it).
    L : ParametricKernel or pylops.LinearOperator, optional
        The regulariser: a family :math:`L(\phi)` (then ``theta_L`` is needed and differentiated),
        a fixed operator (no gradient through it), or None for the identity.
    theta_L : torch.Tensor, optional
        :math:`\phi` when ``L`` is a family.
    solver, preconditioner : optional
        As for :func:`structops.solvers.tikhonov`; the adjoint solve takes the same route.
    rtol : float
        Tolerance of the Krylov route (default 1e-10: gradients are as accurate as the solves).

    Returns
    -------
    torch.Tensor
        ``x``, shaped as :func:`structops.solvers.tikhonov` shapes it.

    Raises
    ------
    TypeError
        ``theta``/``b`` not tensors, or ``L`` a family without ``theta_L``.

    Examples
    --------
    >>> import torch, structops
    >>> from structops.data import gaussian_stencil
    >>> k = structops.Conv((8, 8), 3, bc="periodic")
    >>> theta = torch.tensor(gaussian_stencil(3, 0.8).ravel(), requires_grad=True)
    >>> alpha = torch.tensor(1e-2, dtype=torch.float64, requires_grad=True)
    >>> x = tikhonov(k, theta, torch.ones(8, 8, dtype=torch.float64), alpha=alpha)
    >>> x.sum().backward()
    >>> theta.grad.shape, alpha.grad.shape
    (torch.Size([9]), torch.Size([]))
    """
    as_kernel(kernel)
    for value, name in ((theta, "theta"), (b, "b")):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"`{name}` must be a torch.Tensor, got {type(value).__name__}.")
    alpha_t = alpha if isinstance(alpha, torch.Tensor) else torch.tensor(float(alpha), dtype=theta.dtype)
    L_family = L if isinstance(L, ParametricKernel) else None
    if L_family is not None and not isinstance(theta_L, torch.Tensor):
        raise TypeError(f"`L` is the family {L!r}: pass its parameters as the tensor `theta_L`.")
    if isinstance(theta_L, torch.Tensor) and L_family is not None and theta_L.dtype != theta.dtype:
        raise TypeError(f"`theta_L` has dtype {theta_L.dtype} but `theta` {theta.dtype}: pass both in one precision.")
    L_fixed = None if L_family is not None else L
    phi = theta_L if isinstance(theta_L, torch.Tensor) and L_family is not None else torch.zeros(0, dtype=theta.dtype)
    options = {"solver": solver, "preconditioner": preconditioner, "rtol": rtol}
    return _Tikhonov.apply(theta, b, alpha_t, phi, kernel, L_family, L_fixed, options)
