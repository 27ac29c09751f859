r"""Every kernel family as a differentiable PyTorch function and layer (the ``torch`` extra).

:func:`apply` computes :math:`K(\theta)x_i` for a batch of examples and is differentiable in
both :math:`\theta` and :math:`x`; :class:`Layer` is the ``torch.nn.Module`` holding
:math:`\theta` as its one parameter. The bridge only converts tensors to numpy arrays (no copy:
CPU tensors share memory with them) and calls the family's own hooks
(:class:`~structops.kernels.ParametricKernel`):

* forward: ``state = _prepare(θ)`` once, then ``y = _apply(state, x)``; the state is kept for
  the backward pass;
* backward, for the output gradient :math:`W`:
  :math:`\partial L/\partial x = K(\theta)^\top W` (``_apply`` with the flag flipped, on the
  kept state) and :math:`\partial L/\partial\theta = J(\theta, X)^\top W` (``_prepare_data``
  and ``_vjp``). Nothing is densified and the forward product is not recomputed.

Both gradients are themselves :func:`apply`-style functions, so double backward (a gradient
penalty, a Hessian-vector product) is exact for the families affine in :math:`\theta`; for
the others, differentiating the :math:`\theta`-gradient once more raises a ``RuntimeError``
that says so (the family hooks give first derivatives only).

The computation runs in numpy on the CPU, outside ``torch.compile``'s graph (a graph break at
the call; values and gradients are unchanged). torch is imported by this module only:
``import structops`` does not need it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .._validation import check_batch
from ..kernels._base import ParametricKernel, _check_flag, as_kernel

__all__ = [
    "BiasedLayer",
    "CertifyReport",
    "LayerBound",
    "Layer",
    "Residual",
    "TransposedLayer",
    "apply",
    "certify",
    "from_module",
    "to_module",
]

_DTYPES = (torch.float32, torch.float64)


def _numpy(t: torch.Tensor) -> np.ndarray:
    """The tensor's memory as a numpy array (no copy for CPU tensors)."""
    return t.detach().numpy()


def _tensor(a: np.ndarray, dtype: torch.dtype, *inputs: np.ndarray) -> torch.Tensor:
    """``a`` as a tensor of ``dtype`` that owns writable memory not shared with ``inputs``."""
    if not a.flags.writeable or any(np.may_share_memory(a, b) for b in inputs):
        a = a.copy()
    return torch.from_numpy(a).to(dtype)


class _KernelApply(torch.autograd.Function):
    """``y = K(θ) x`` (``K(θ)ᵀ x`` with ``transpose``) on flattened batches ``x`` of shape ``(n, cols)``.

    ``state`` is the family's prepared state for ``θ`` when the caller has it (None: prepared
    here). Inputs are validated by the callers.
    """

    @staticmethod
    def forward(ctx: Any, theta: torch.Tensor, x: torch.Tensor, kernel: ParametricKernel, transpose: bool, state: Any):
        if state is None:
            state = kernel._prepare(_numpy(theta))
        xs = _numpy(x)
        y = kernel._apply(state, np.ascontiguousarray(xs), transpose)
        ctx.kernel, ctx.transpose, ctx.state = kernel, transpose, state
        ctx.save_for_backward(theta, x)
        return _tensor(np.asarray(y).reshape(xs.shape[0], kernel.shape[1 if transpose else 0]), x.dtype, xs)

    @staticmethod
    def backward(ctx: Any, w: torch.Tensor):
        theta, x = ctx.saved_tensors
        grad_theta = grad_x = None
        if ctx.needs_input_grad[1]:
            grad_x = _KernelApply.apply(theta, w, ctx.kernel, not ctx.transpose, ctx.state)
        if ctx.needs_input_grad[0]:
            grad_theta = _KernelVJP.apply(theta, x, w, ctx.kernel, ctx.transpose, ctx.state)
        return grad_theta, grad_x, None, None, None


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
        state: Any,
    ):  # fmt: skip
        ctx.kernel, ctx.transpose = kernel, transpose
        ctx.save_for_backward(theta, x, w)
        ws = np.ascontiguousarray(_numpy(w))
        if ws.shape[0] == 0:
            return torch.zeros_like(theta)
        data = kernel._prepare_data(np.ascontiguousarray(_numpy(x)), transpose)
        grad = kernel._vjp(state, data, ws, transpose, False)
        return _tensor(np.asarray(grad).reshape(-1), theta.dtype, ws)

    @staticmethod
    def backward(ctx: Any, v: torch.Tensor):
        _, x, w = ctx.saved_tensors
        kernel, transpose = ctx.kernel, ctx.transpose
        if not kernel.linear:
            raise RuntimeError(
                f"structops.torch: double backward through the theta-gradient of {kernel!r} is not supported: the "
                "family is not affine in theta and its hooks give first derivatives only (double backward "
                "through the x-gradient, and any order for affine families, is exact)."
            )
        grad_x = grad_w = None
        if ctx.needs_input_grad[1]:
            grad_x = _linear_part(v, w, kernel, not transpose)
        if ctx.needs_input_grad[2]:
            grad_w = _linear_part(v, x, kernel, transpose)
        # an affine family's theta-gradient does not depend on theta: its derivative is zero
        return None, grad_x, grad_w, None, None, None


def _linear_part(v: torch.Tensor, x: torch.Tensor, kernel: ParametricKernel, transpose: bool) -> torch.Tensor:
    """``L(v) x`` for the linear part ``L(v) = K(v) - K(0)`` of an affine family (differentiable in ``v``, ``x``)."""
    y = _KernelApply.apply(v, x, kernel, transpose, None)
    # K(0) x is zero unless the family has a constant part; asking for `kernel.q` would build a
    # dense vector of the matrix's size for some families, so only the base's q (None) is trusted
    if type(kernel).q is not ParametricKernel.q:
        y = y - _KernelApply.apply(torch.zeros_like(v), x, kernel, transpose, None)
    return y


def _check_tensor(value: Any, name: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {type(value).__name__} {value!r}.")
    if value.device.type != "cpu":
        raise NotImplementedError(
            f"`{name}` is on device {str(value.device)!r}: structops.torch supports CPU tensors only; "
            f"CUDA and other devices are not supported yet (move it with `{name}.cpu()`)."
        )
    if value.dtype not in _DTYPES:
        raise TypeError(f"`{name}` must have dtype torch.float32 or torch.float64, got dtype {value.dtype}.")
    return value


@torch.compiler.disable
def apply(kernel: ParametricKernel, theta: torch.Tensor, x: torch.Tensor, *, transpose: bool = False) -> torch.Tensor:
    r"""Apply :math:`K(\theta)` (or :math:`K(\theta)^\top`) to every example of a batch, differentiably.

    Parameters
    ----------
    kernel : ParametricKernel
        Any structops family (e.g. :class:`structops.Conv`).
    theta : torch.Tensor, shape (p,)
        Parameters, float32 or float64 on the CPU; the computation runs in this dtype.
    x : torch.Tensor, shape (n, *kernel.in_shape) or (n, prod(in_shape))
        Examples along the first axis (``out_shape`` with ``transpose=True``), same dtype as
        ``theta``.
    transpose : bool, optional
        Apply :math:`K(\theta)^\top` instead.

    Returns
    -------
    torch.Tensor, shape (n, *kernel.out_shape)
        :math:`y_i = K(\theta)x_i` (``(n, *in_shape)`` and :math:`K(\theta)^\top x_i` with
        ``transpose``), in the dtype of ``theta``; differentiable in ``theta`` and ``x``.

    Raises
    ------
    TypeError
        If ``kernel`` is not a family, or ``theta``/``x`` are not float32/float64 tensors of
        one dtype.
    ValueError
        If ``theta`` does not have shape ``(p,)``, is not finite or violates the family's
        constraints (e.g. :math:`\theta \ge 0`), or ``x`` does not hold examples of the right
        shape.
    NotImplementedError
        For tensors not on the CPU (CUDA is not supported yet).

    Notes
    -----
    With :math:`L` a scalar function of :math:`y` and :math:`W = \partial L/\partial y`, the
    backward pass returns

    .. math::
        \frac{\partial L}{\partial x_i} = K(\theta)^\top w_i, \qquad
        \frac{\partial L}{\partial \theta} = J(\theta, X)^\top W = \sum_i J(\theta, x_i)^\top w_i,

    through the family's ``_apply`` (on the state prepared in the forward pass) and ``_vjp``.

    Examples
    --------
    >>> import torch, structops
    >>> from structops.torch import apply
    >>> k = structops.Conv((8, 8), 3)
    >>> theta = torch.zeros(k.nparams, dtype=torch.float64, requires_grad=True)
    >>> x = torch.ones(2, 1, 8, 8, dtype=torch.float64)
    >>> y = apply(k, theta, x)
    >>> y.shape
    torch.Size([2, 1, 8, 8])
    >>> y.sum().backward()
    >>> theta.grad.shape
    torch.Size([9])
    """
    kernel = as_kernel(kernel)
    transpose = _check_flag(transpose, "transpose")
    theta = _check_tensor(theta, "theta")
    x = _check_tensor(x, "x")
    if theta.dtype != x.dtype:
        raise TypeError(
            f"`x` has dtype {x.dtype} but `theta` has dtype {theta.dtype}: pass both in the same precision, "
            f"e.g. `x.to({theta.dtype})`."
        )
    if theta.ndim != 1 or theta.shape[0] != kernel.nparams:
        raise ValueError(
            f"`theta` must have shape ({kernel.nparams},) (p = kernel.nparams of {kernel!r}), "
            f"got shape {tuple(theta.shape)}."
        )
    theta_np = kernel.validate_theta(_numpy(theta))
    x_shape, y_shape = kernel._io_shapes(transpose)
    check_batch(_numpy(x), x_shape, theta_np.dtype, name="x")
    flat = x.reshape(x.shape[0], int(np.prod(x_shape)))
    state = kernel._prepare(theta_np)
    return _KernelApply.apply(theta, flat, kernel, transpose, state).reshape(x.shape[0], *y_shape)


class Layer(torch.nn.Module):
    r"""A structops family as a ``torch.nn.Module``: ``forward(x)`` is :func:`apply` with the parameter ``theta``.

    Parameters
    ----------
    kernel : ParametricKernel
        The family :math:`\theta \mapsto K(\theta)`.
    theta : torch.Tensor or array_like, shape (p,), optional
        Initial parameters (copied; float32 or float64, integers become float32). Default: the
        initialisation below, in torch's default dtype.

    Attributes
    ----------
    theta : torch.nn.Parameter, shape (p,)
    kernel : ParametricKernel

    Notes
    -----
    **Initialisation** (``theta=None``). ``θ₀ = kernel.random_theta(seed)`` with the seed
    drawn from torch's global generator (so ``torch.manual_seed`` makes it reproducible): a
    standard normal vector, or uniform on :math:`[0.5, 1.5]` for families bounded below (the
    M-matrices). For a family homogeneous in :math:`\theta` (affine, no offset ``q``), ``θ₀``
    is then scaled by a positive factor so that :math:`K(\theta_0)` preserves the variance of
    standard normal inputs, estimated on 8 random examples
    (:math:`\mathbb{E}\|K z\|^2 / m = 1`, the LeCun/Kaiming rule; for a convolution this is
    :math:`\operatorname{Var}\theta = 1/(c_\mathrm{in}\,|\mathrm{stencil}|)`). A positive
    factor keeps :math:`\theta_0 \ge 0` inside :attr:`~structops.kernels.ParametricKernel.bounds`.

    Examples
    --------
    >>> import torch, structops
    >>> from structops.torch import Layer
    >>> layer = Layer(structops.MMatrixConv((8, 8), 3))
    >>> layer
    Layer(MMatrixConv(grid=(8, 8), stencil=(3, 3), bc='zero', channels=1), p=8, bounds=[0, inf))
    >>> opt = torch.optim.SGD(layer.parameters(), lr=10.0)
    >>> layer(torch.randn(4, 1, 8, 8)).square().sum().backward()
    >>> opt.step()
    >>> bool(layer.project_().theta.min() >= 0)
    True
    """

    def __init__(self, kernel: ParametricKernel, theta: Any = None) -> None:
        super().__init__()
        self.kernel = as_kernel(kernel)
        if theta is None:
            initial = self._initial_theta(torch.get_default_dtype())
        else:
            array = np.asarray(_numpy(theta) if isinstance(theta, torch.Tensor) else theta)
            if array.dtype.kind in "iu":
                array = array.astype(np.float32)
            initial = torch.from_numpy(np.array(self.kernel.validate_theta(array), copy=True))
        self.theta = torch.nn.Parameter(initial)

    def _initial_theta(self, dtype: torch.dtype) -> torch.Tensor:
        kernel = self.kernel
        seed = int(torch.randint(0, 2**62, (1,)).item())
        rng = np.random.default_rng(seed)
        theta = kernel.random_theta(rng, np.float64)
        if kernel.linear and kernel.nparams:
            probes = rng.standard_normal((8, kernel.shape[1]))
            homogeneous = not np.any(kernel.apply(np.zeros_like(theta), probes))  # no constant part q
            gain = float(np.sqrt(np.mean(kernel.apply(theta, probes) ** 2)))
            if homogeneous and gain > 0 and np.isfinite(gain):
                theta = theta / gain
        return torch.from_numpy(theta).to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r""":math:`K(\theta) x_i` for every example of ``x`` (shape ``(n, *kernel.in_shape)``)."""
        return apply(self.kernel, self.theta, x)

    @torch.no_grad()
    def project_(self, *, lipschitz: float | None = None) -> Layer:
        r"""Project ``theta`` in place onto the family's ``bounds`` (no-op when unbounded); returns ``self``.

        Call it after an optimiser step for a constrained family (e.g. :class:`structops.MMatrixConv`,
        :math:`\theta \ge 0`), or reparametrise with :class:`structops.Softplus` instead. With
        ``lipschitz=L``, then also onto :math:`\|K(\theta)\|_2 \le L`, certified
        (:func:`structops.solvers.project_spectral_norm`; families linear in ``theta``).
        """
        bounds = self.kernel.bounds
        if bounds is not None:
            lower, upper = (torch.as_tensor(b, dtype=self.theta.dtype) for b in bounds)
            self.theta.copy_(torch.maximum(torch.minimum(self.theta, upper), lower))
        if lipschitz is not None:
            project_lipschitz(self, lipschitz)
        return self

    def to_module(self) -> torch.nn.Module:
        """A plain torch module with the same output (fixed-stencil convolutions, Dense): see :func:`to_module`."""
        return to_module(self)

    def extra_repr(self) -> str:
        """The family, its number of parameters and its bounds (shown in ``repr(layer)``)."""
        bounds = self.kernel.bounds
        text = f"{self.kernel!r}, p={self.kernel.nparams}"
        if bounds is not None:
            lo, hi = np.min(bounds[0]), np.max(bounds[1])
            text += f", bounds=[{lo:g}, {hi:g}]" if np.isfinite(hi) else f", bounds=[{lo:g}, inf)"
        return text


from ._modules import BiasedLayer, TransposedLayer, from_module, project_lipschitz, to_module  # noqa: E402
from .certify import CertifyReport, LayerBound, Residual, certify  # noqa: E402
