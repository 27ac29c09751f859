r"""The numpy bridge: a family's own hooks and numba kernels as a ``torch.autograd.Function``.

The tensors are converted to numpy arrays (no copy: CPU tensors share memory with them) and the
family's hooks (:class:`~structops.kernels.ParametricKernel`) run:

* forward: ``state = _prepare(θ)`` once, then ``y = _apply(state, x)``; the state is kept for
  the backward pass;
* backward, for the output gradient :math:`W`:
  :math:`\partial L/\partial x = K(\theta)^\top W` (``_apply`` with the flag flipped, on the
  kept state) and :math:`\partial L/\partial\theta = J(\theta, X)^\top W` (``_prepare_data``
  and ``_vjp``). Nothing is densified and the forward product is not recomputed. A family with
  the transform-domain hooks (``_transform``, ``_apply_transformed``, ``_vjp_transformed``;
  docs/contract.md) has each batch transformed once: the forward keeps the transform of ``x``
  and the backward transforms :math:`W` once for both gradients.

Both gradients are themselves bridge functions, so double backward is exact for the families
affine in :math:`\theta`. For the others the :math:`\theta`-gradient depends on :math:`\theta`
and the hooks give first derivatives only: differentiating it once more runs the family's torch
form (``structops.torch._forms``) differentiated twice, exact at any order; a family without a
torch form raises a ``RuntimeError`` that says so. The computation runs in numpy on the CPU,
outside ``torch.compile``'s graph (:func:`bridge_apply` is ``torch.compiler.disable``-d).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .. import internal
from .._backend import blas_threads_for
from ..kernels import ParametricKernel
from ._forms import has_torch_form, torch_apply

__all__ = ["bridge_apply", "numpy_side"]


def _numpy(t: torch.Tensor) -> np.ndarray:
    """The tensor's memory as a numpy array (no copy for CPU tensors)."""
    return t.detach().numpy()


def _tensor(a: np.ndarray, dtype: torch.dtype, *inputs: np.ndarray) -> torch.Tensor:
    """``a`` as a tensor of ``dtype`` that owns writable memory not shared with ``inputs``."""
    if not a.flags.writeable or any(np.may_share_memory(a, b) for b in inputs):
        a = a.copy()
    return torch.from_numpy(a).to(dtype)


def numpy_side(kernel: ParametricKernel):
    """BLAS threads for the family's numpy work between torch's operations (``blas_threads_for``).

    One thread unless the operator's side reaches ``BLAS_SIDE_MIN``: a multi-threaded OpenBLAS
    product leaves its workers spinning for milliseconds, and torch's (or numba's) next parallel
    region then waits a scheduler tick for the core they hold (a 256² product followed by a
    two-thread torch operation: 8 ms instead of 0.33 ms on two cores).
    """
    return blas_threads_for(max(kernel.shape))


def _transforms(kernel: ParametricKernel) -> bool:
    """Whether the family has the transform-domain hooks (``_transform`` and the two that take its result)."""
    return type(kernel)._transform is not ParametricKernel._transform


class _KernelApply(torch.autograd.Function):
    """``y = K(θ) x`` (``K(θ)ᵀ x`` with ``transpose``) on flattened batches ``x`` of shape ``(n, cols)``.

    ``state`` is the family's prepared state for ``θ`` when the caller has it (None: prepared
    here). For a family with the transform-domain hooks, ``kept`` is the transform of ``x`` when
    the caller has it; the forward keeps it (computing it when ``θ`` needs a gradient) for the
    backward's gradient in ``θ``, so each batch is transformed once. Inputs are validated by the callers.
    """

    @staticmethod
    def forward(
        ctx: Any, theta: torch.Tensor, x: torch.Tensor, kernel: ParametricKernel, transpose: bool, state: Any,
        kept: Any = None,
    ):  # fmt: skip
        xs = _numpy(x)
        with numpy_side(kernel):
            if state is None:
                state = internal.prepare(kernel, _numpy(theta))
            if kept is None and ctx.needs_input_grad[0] and _transforms(kernel) and xs.shape[0]:
                kept = kernel._transform(np.ascontiguousarray(xs), transpose)
            if kept is not None:
                y = kernel._apply_transformed(state, kept, transpose)
            else:
                y = internal.apply_prepared(kernel, state, np.ascontiguousarray(xs), transpose)
        ctx.kernel, ctx.transpose, ctx.state, ctx.kept = kernel, transpose, state, kept
        ctx.save_for_backward(theta, x)
        return _tensor(np.asarray(y).reshape(xs.shape[0], kernel.shape[1 if transpose else 0]), x.dtype, xs)

    @staticmethod
    def backward(ctx: Any, w: torch.Tensor):
        theta, x = ctx.saved_tensors
        grad_theta = grad_x = None
        kept = None
        if ctx.kept is not None and ctx.needs_input_grad[0]:  # transform w once, for both gradients
            with numpy_side(ctx.kernel):
                kept = (ctx.kept, ctx.kernel._transform(np.ascontiguousarray(_numpy(w)), not ctx.transpose))
        if ctx.needs_input_grad[1]:
            kept_w = None if kept is None else kept[1]
            grad_x = _KernelApply.apply(theta, w, ctx.kernel, not ctx.transpose, ctx.state, kept_w)
        if ctx.needs_input_grad[0]:
            grad_theta = _KernelVJP.apply(theta, x, w, ctx.kernel, ctx.transpose, ctx.state, kept)
        return grad_theta, grad_x, None, None, None, None


class _KernelVJP(torch.autograd.Function):
    r"""``J(θ, x)ᵀ w``: the gradient in ``θ`` of :math:`\langle w, K(\theta)x\rangle`, summed over the examples.

    Differentiable again for families affine in ``θ``: with :math:`L` the linear part of
    :math:`K` (:math:`L(v) = K(v) - K(0)`), the derivative in direction ``v`` is
    :math:`\langle w, L(v)x\rangle`, whose gradients are :math:`L(v)x` in ``w``, :math:`L(v)^\top w`
    in ``x`` and zero in ``θ``.
    """

    @staticmethod
    def forward(
        ctx: Any, theta: torch.Tensor, x: torch.Tensor, w: torch.Tensor, kernel: ParametricKernel, transpose: bool,
        state: Any, kept: tuple[Any, Any] | None = None,
    ):  # fmt: skip
        ctx.kernel, ctx.transpose = kernel, transpose
        ctx.save_for_backward(theta, x, w)
        ws = np.ascontiguousarray(_numpy(w))
        if ws.shape[0] == 0:
            return torch.zeros_like(theta)
        with numpy_side(kernel):
            if kept is not None:  # the transforms of x and w (the transform-domain hooks)
                grad = kernel._vjp_transformed(state, kept[0], kept[1], transpose)
            else:
                data = internal.prepare_data(kernel, np.ascontiguousarray(_numpy(x)), transpose)
                grad = internal.vjp_prepared(kernel, state, data, ws, transpose)
        return _tensor(np.asarray(grad).reshape(-1), theta.dtype, ws)

    @staticmethod
    def backward(ctx: Any, v: torch.Tensor):
        theta, x, w = ctx.saved_tensors
        kernel, transpose = ctx.kernel, ctx.transpose
        if not kernel.linear:
            grads = _second_derivatives(kernel, transpose, (theta, x, w), v, ctx.needs_input_grad[:3])
            return (*grads, None, None, None, None)
        grad_x = grad_w = None
        if ctx.needs_input_grad[1]:
            grad_x = _linear_part(v, w, kernel, not transpose)
        if ctx.needs_input_grad[2]:
            grad_w = _linear_part(v, x, kernel, transpose)
        # an affine family's theta-gradient does not depend on theta: its derivative is zero
        return None, grad_x, grad_w, None, None, None, None


def _second_derivatives(
    kernel: ParametricKernel,
    transpose: bool,
    inputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    v: torch.Tensor,
    needs: tuple[bool, ...],
) -> tuple[torch.Tensor | None, ...]:
    r"""The gradients of :math:`\langle v, J(\theta, x)^\top w\rangle` in ``θ``, ``x`` and ``w`` (those in ``needs``).

    For a family not affine in :math:`\theta`, from its torch form: :math:`J^\top w` is
    recomputed as torch's gradient of :math:`\langle w, K(\theta)x\rangle` with a graph, and
    differentiated once more. The result is recorded for autograd when the caller records one
    (``create_graph``), so higher orders are exact too.

    Raises
    ------
    RuntimeError
        If the family has no torch form.
    """
    if not has_torch_form(kernel):
        raise RuntimeError(
            f"structops.torch: double backward through the theta-gradient of {kernel!r} is not supported: the "
            "family is not affine in theta, its hooks give first derivatives only and it has no torch form to "
            "differentiate twice (double backward through the x-gradient, and any order for affine families, is "
            "exact). Give the family a torch form (a `torch_apply` method, see docs/contract.md)."
        )
    record = torch.is_grad_enabled()
    with torch.enable_grad():
        # each input through a node of its own (a view), so that the gradients are the partial
        # derivatives in these slots: w itself may depend on theta (w = 2y for a squared loss);
        # the inputs not asked for are detached
        theta, x, w = (
            t.view_as(t) if need else t.detach().requires_grad_(i == 0)
            for i, (t, need) in enumerate(zip(inputs, needs, strict=True))
        )
        shape = kernel.out_shape if transpose else kernel.in_shape
        y = torch_apply(kernel, theta, x.reshape(x.shape[0], *shape), transpose).reshape(x.shape[0], -1)
        (grad,) = torch.autograd.grad((w * y).sum(), theta, create_graph=True)
        wanted = [t for t, need in zip((theta, x, w), needs, strict=True) if need]
        found = iter(torch.autograd.grad((grad * v).sum(), wanted, create_graph=record, allow_unused=True))
    return tuple(next(found) if need else None for need in needs)


def _linear_part(v: torch.Tensor, x: torch.Tensor, kernel: ParametricKernel, transpose: bool) -> torch.Tensor:
    """``L(v) x`` for the linear part ``L(v) = K(v) - K(0)`` of an affine family (differentiable in ``v``, ``x``)."""
    y = _KernelApply.apply(v, x, kernel, transpose, None)
    # K(0) x is zero unless the family has a constant part; asking for `kernel.q` would build a
    # dense vector of the matrix's size for some families, so only the base's q (None) is trusted
    if type(kernel).q is not ParametricKernel.q:
        y = y - _KernelApply.apply(torch.zeros_like(v), x, kernel, transpose, None)
    return y


@torch.compiler.disable
def bridge_apply(kernel: ParametricKernel, theta: torch.Tensor, x: torch.Tensor, transpose: bool, state: Any = None):
    """``K(θ) x_i`` through the numpy bridge for validated CPU tensors, ``x`` flat of shape ``(n, cols)``.

    ``state`` None: prepared from ``theta`` in the forward (:class:`_KernelApply`).
    """
    return _KernelApply.apply(theta, x, kernel, transpose, state)
