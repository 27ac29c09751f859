r"""Every kernel family as a differentiable PyTorch function and layer (the ``torch`` extra).

:func:`apply` computes :math:`K(\theta)x_i` for a batch of examples and is differentiable in
both :math:`\theta` and :math:`x`; :class:`Layer` is the ``torch.nn.Module`` holding
:math:`\theta` (and optionally a bias) as parameters. Two backends compute the product:

* ``"torch"``: the family's *torch form* (``structops/torch/_forms.py``), torch operations only
  -- a convolution is ``torch.nn.functional.conv{1,2,3}d`` on the padded grid, a pattern
  family a sparse or dense product on its fixed pattern, never a dense :math:`K` -- so
  autograd of any order, ``torch.func`` (``vmap``, ``grad``, ``jacrev``, ``functional_call``),
  ``torch.export``, ``torch.compile(fullgraph=True)``, every device (CUDA, ``meta``) and
  float16/bfloat16 come from torch;
* ``"numpy"``: the bridge to the family's own hooks and numba kernels
  (``structops/torch/_bridge.py``), on the CPU in float32/float64, a graph break under
  ``torch.compile``;
* ``"auto"`` (default): the bridge for plain eager CPU float32/float64 calls, where it is
  faster for the convolutions, and the torch form everywhere else (any other device,
  ``torch.func`` transforms, compile, export, half precision); see
  ``structops/torch/_dispatch.py`` and docs/guide.md.

NaN and Inf in ``x`` propagate as in torch on both backends (the data are not scanned);
shapes, dtypes, ``theta`` (finite, within the family's bounds: checked for plain CPU tensors)
and ``backend`` are validated with errors that name them. torch is imported by this module
only: ``import structops`` does not need it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .. import internal
from ..kernels import ParametricKernel, as_kernel
from ._bridge import bridge_apply, numpy_side
from ._dispatch import BACKENDS, check_backend, choose_backend, is_plain_eager
from ._forms import DENSE_ENTRIES, has_torch_form, prepare, register_torch_form, register_torch_map, torch_apply
from .solve import tikhonov as tikhonov  # the differentiable Tikhonov solve (structops.torch.solve)

__all__ = [
    "BACKENDS",
    "DENSE_ENTRIES",
    "CertifyReport",
    "LayerBound",
    "Layer",
    "Residual",
    "TransposedLayer",
    "certify",
    "from_module",
    "to_module",
    "apply",
    "has_torch_form",
    "prepare",
    "register_torch_form",
    "register_torch_map",
    "torch_apply",
]

_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _check_tensor(value: Any, name: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {type(value).__name__} {value!r}.")
    if value.dtype not in _DTYPES:
        raise TypeError(
            f"`{name}` must have a floating dtype (torch.float16, torch.bfloat16, torch.float32 or torch.float64), "
            f"got dtype {value.dtype}."
        )
    return value


def _check_examples(x: torch.Tensor, shape: tuple[int, ...]) -> None:
    """``x`` holds examples of ``shape`` along its first axis (or flattened); the values are not scanned."""
    size = math.prod(shape)
    if x.ndim >= 1 and (tuple(x.shape[1:]) == shape or (x.ndim == 2 and x.shape[1] == size)):
        return
    expected = f"(n, {', '.join(map(str, shape))})" + (f" or (n, {size})" if len(shape) > 1 else "")
    raise ValueError(f"`x` must hold examples along its first axis with shape {expected}, got shape {tuple(x.shape)}.")


def _validate(kernel: ParametricKernel, theta: Any, x: Any, transpose: Any) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """The checks both backends share: types, dtypes and shapes (no value is read)."""
    if not isinstance(transpose, (bool, np.bool_)):
        raise TypeError(f"`transpose` must be True or False, got {transpose!r}.")
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
    _check_examples(x, kernel.in_shape if not transpose else kernel.out_shape)
    return theta, x, bool(transpose)


@torch.compiler.disable
def _numpy_apply(kernel: ParametricKernel, theta: torch.Tensor, x: torch.Tensor, transpose: bool) -> torch.Tensor:
    theta_np = kernel.validate_theta(theta.detach().numpy())
    x_shape, y_shape = (kernel.out_shape, kernel.in_shape) if transpose else (kernel.in_shape, kernel.out_shape)
    flat = x.reshape(x.shape[0], math.prod(x_shape))
    with numpy_side(kernel):
        state = internal.prepare(kernel, theta_np)
    return bridge_apply(kernel, theta, flat, transpose, state).reshape(x.shape[0], *y_shape)


def apply(
    kernel: ParametricKernel, theta: torch.Tensor, x: torch.Tensor, *, transpose: bool = False, backend: str = "auto"
) -> torch.Tensor:
    r"""Apply :math:`K(\theta)` (or :math:`K(\theta)^\top`) to every example of a batch, differentiably.

    Parameters
    ----------
    kernel : ParametricKernel
        Any structops family (e.g. :class:`structops.Conv`).
    theta : torch.Tensor, shape (p,)
        Parameters, float16, bfloat16, float32 or float64, on any device; the computation runs
        in this dtype.
    x : torch.Tensor, shape (n, *kernel.in_shape) or (n, prod(in_shape))
        Examples along the first axis (``out_shape`` with ``transpose=True``), same dtype and
        device as ``theta``.
    transpose : bool, optional
        Apply :math:`K(\theta)^\top` instead.
    backend : {"auto", "torch", "numpy"}, optional
        ``"torch"``: the family's torch form; ``"numpy"``: the bridge to the family's hooks
        (CPU, float32/float64); ``"auto"``: the bridge for plain eager CPU float32/float64
        calls, the torch form otherwise (see the module notes and docs/guide.md).

    Returns
    -------
    torch.Tensor, shape (n, *kernel.out_shape)
        :math:`y_i = K(\theta)x_i` (``(n, *in_shape)`` and :math:`K(\theta)^\top x_i` with
        ``transpose``), in the dtype of ``theta``; differentiable in ``theta`` and ``x``.

    Raises
    ------
    TypeError
        If ``kernel`` is not a family, ``transpose`` not a bool, or ``theta``/``x`` are not
        floating tensors of one dtype.
    ValueError
        If ``backend`` is unknown, ``theta`` does not have shape ``(p,)`` or (a plain CPU
        tensor) is not finite or violates the family's constraints (e.g. :math:`\theta \ge 0`),
        or ``x`` does not hold examples of the right shape.
    NotImplementedError
        If the backend cannot run the call: ``"torch"`` for a family without a torch form,
        ``"numpy"`` off the CPU, in half precision or inside a ``torch.func`` transform.

    Notes
    -----
    With :math:`L` a scalar function of :math:`y` and :math:`W = \partial L/\partial y`, the
    backward pass returns

    .. math::
        \frac{\partial L}{\partial x_i} = K(\theta)^\top w_i, \qquad
        \frac{\partial L}{\partial \theta} = J(\theta, X)^\top W = \sum_i J(\theta, x_i)^\top w_i,

    by torch's autograd through the torch form, or by the family's ``_apply`` and ``_vjp``
    through the bridge. The values of ``x`` are never scanned: NaN and Inf propagate as in torch.

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
    >>> torch.func.vmap(lambda xi: apply(k, theta, xi[None])[0])(x).shape  # the torch form, chosen by "auto"
    torch.Size([2, 1, 8, 8])
    """
    kernel = as_kernel(kernel)
    theta, x, transpose = _validate(kernel, theta, x, transpose)
    if choose_backend(kernel, theta, x, backend) == "numpy":
        return _numpy_apply(kernel, theta, x, transpose)
    if is_plain_eager(theta):  # the values of theta are checked where reading them costs nothing
        kernel.validate_theta(
            theta.detach().to(torch.float64 if theta.dtype == torch.float64 else torch.float32).numpy()
        )
    x_shape, y_shape = (kernel.out_shape, kernel.in_shape) if transpose else (kernel.in_shape, kernel.out_shape)
    y = torch_apply(kernel, theta, x.reshape(x.shape[0], *x_shape), transpose)
    return y.reshape(x.shape[0], *y_shape)


class Layer(torch.nn.Module):
    r"""A structops family as a ``torch.nn.Module``: ``forward(x)`` is :func:`apply` with the parameter ``theta``.

    Parameters
    ----------
    kernel : ParametricKernel
        The family :math:`\theta \mapsto K(\theta)`.
    theta : torch.Tensor or array_like, shape (p,), optional
        Initial parameters (copied; float32 or float64, integers become float32). Default: the
        initialisation below, in torch's default dtype.
    backend : {"auto", "torch", "numpy"}, optional
        How :meth:`forward` computes (see :func:`apply`).
    bias : bool, optional
        Add a learned bias ``b`` (initialised to zero): one entry per output channel for the
        convolution families (those with ``out_channels``, and a :class:`~structops.Chain`
        around one), broadcast over the grid, so :math:`y_{o,i} = (K(\theta)x)_{o,i} + b_o`
        as ``torch.nn.Conv2d``; one per output entry (shape ``kernel.out_shape``) otherwise.

    Attributes
    ----------
    theta : torch.nn.Parameter, shape (p,)
    bias : torch.nn.Parameter or None
    kernel : ParametricKernel
    backend : str

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

    def __init__(
        self, kernel: ParametricKernel, theta: Any = None, *, backend: str = "auto", bias: bool = False
    ) -> None:
        super().__init__()
        self.kernel = as_kernel(kernel)
        self.backend = check_backend(backend)
        if not isinstance(bias, (bool, np.bool_)):
            raise TypeError(f"`bias` must be True or False, got {bias!r}.")
        if theta is None:
            initial = self._initial_theta(torch.get_default_dtype())
        else:
            array = np.asarray(theta.detach().cpu().numpy() if isinstance(theta, torch.Tensor) else theta)
            if array.dtype.kind in "iu":
                array = array.astype(np.float32)
            initial = torch.from_numpy(np.array(self.kernel.validate_theta(array), copy=True))
        self.theta = torch.nn.Parameter(initial)
        self._bias_shape = _bias_shape(self.kernel)
        prepare(self.kernel)  # the torch form's constants, built now: compile and export trace torch operations only
        if bias:
            self.bias = torch.nn.Parameter(torch.zeros(self._bias_shape[0], dtype=initial.dtype))
        else:
            self.register_parameter("bias", None)

    def __prepare_scriptable__(self) -> Layer:
        """``torch.jit.script`` is not supported: raise a clear error naming the alternatives."""
        raise RuntimeError(
            f"structops.torch.Layer({self.kernel!r}) cannot be compiled by torch.jit.script (TorchScript cannot "
            "run structops' Python kernels); use torch.compile (fullgraph=True works) or torch.export.export, "
            "which trace the layer's torch form."
        )

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
        y = apply(self.kernel, self.theta, x, backend=self.backend)
        if self.bias is None:
            return y
        return y + self.bias.reshape(self._bias_shape[1])

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
        if self.backend != "auto":
            text += f", backend={self.backend!r}"
        if self.bias is not None:
            text += ", bias=True"
        if bounds is not None:
            lo, hi = np.min(bounds[0]), np.max(bounds[1])
            text += f", bounds=[{lo:g}, {hi:g}]" if np.isfinite(hi) else f", bounds=[{lo:g}, inf)"
        return text


def _bias_shape(kernel: ParametricKernel) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The bias's shape and the shape it broadcasts from: per output channel for convolutions, else per entry."""
    conv = kernel.kernel if hasattr(kernel, "outer") and hasattr(kernel, "kernel") else kernel
    out = kernel.out_shape
    if hasattr(conv, "out_channels") and len(out) >= 2:
        return (out[0],), (out[0],) + (1,) * (len(out) - 1)
    return out, out


from ._modules import TransposedLayer, from_module, project_lipschitz, to_module  # noqa: E402
from .certify import CertifyReport, LayerBound, Residual, certify  # noqa: E402
