r"""From a ``torch.nn`` module to a :class:`~structops.torch.Layer` and back, and Lipschitz projection of a layer.

* :func:`from_module` -- ``nn.Conv1d/2d/3d`` (every ``padding_mode``, ``stride``, ``bias``),
  ``nn.ConvTranspose1d/2d/3d`` (the adjoint of the convolution it transposes) and
  ``nn.Linear`` (:class:`~structops.Dense`) as a :class:`~structops.torch.Layer` computing the
  same map. Every layer built is checked on a random input against the module itself (to
  :math:`10^{-12}` relative in float64, :math:`10^{-5}` in float32): nothing is ever silently
  different. Every ``dilation``, ``groups`` and ``padding`` is passed on to :class:`structops.Conv`;
  what it cannot represent (an unknown ``padding_mode``, an ``output_padding`` that does not fit)
  is refused with a ``ValueError`` that names the attribute and its value.
* :func:`to_module` -- the plain torch module of a layer whose family is a convolution with a
  fixed stencil (zero-cost inference).
* :func:`project_lipschitz` -- ``Layer.project_(lipschitz=L)``: the certified projection
  :func:`structops.solvers.project_spectral_norm` applied in place.

**Bias.** A bias is held by the returned layer as its ``bias`` parameter
(``Layer(..., bias=True)``), a ``torch.nn.Parameter`` of shape ``(out_channels,)``
(``(out_features,)``).

The convention (Lars Ruthotto, *Numerical Methods for Deep Learning*, "Parametric Models"):
``Conv`` computes :math:`z_i = \sum_j \theta_j x_{i + c - j}` with :math:`c = s/\!/2`, torch the
cross-correlation :math:`y_i = \sum_j w_j x_{i - c + j}`: :math:`\theta` is the weight flipped on
the spatial axes (:meth:`structops.Conv.theta_from_torch`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..kernels._base import ParametricKernel
from ..kernels.conv import Conv
from ..kernels.dense import Dense
from ..solvers.lipschitz import project_spectral_norm
from . import Layer, apply

__all__ = ["TransposedLayer", "from_module", "project_lipschitz", "to_module"]

_PADDING_MODES = {"zeros": "zero", "circular": "periodic", "reflect": "reflect", "replicate": "replicate"}
_MODES_BY_BC = {bc: mode for mode, bc in _PADDING_MODES.items()}
_CONVS = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)
_TRANSPOSED = (torch.nn.ConvTranspose1d, torch.nn.ConvTranspose2d, torch.nn.ConvTranspose3d)


class TransposedLayer(Layer):
    r"""A :class:`~structops.torch.Layer` applying :math:`K(\theta)^\top` (a transposed convolution).

    ``forward(x)`` is :func:`~structops.torch.apply` with ``transpose=True``: inputs of shape
    ``(n, *kernel.out_shape)``, outputs ``(n, *kernel.in_shape)``; its norm is that of
    :math:`K(\theta)`. An optional ``bias`` per output channel, added after the product.
    """

    def __init__(self, kernel: ParametricKernel, theta: Any, bias: torch.Tensor | None = None) -> None:
        super().__init__(kernel, theta)
        if bias is not None:
            self.bias = torch.nn.Parameter(bias.detach().clone().to(self.theta.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r""":math:`K(\theta)^\top x_i` (plus the bias)."""
        y = apply(self.kernel, self.theta, x, transpose=True)
        return y if self.bias is None else y + self.bias.reshape(-1, *([1] * (y.ndim - 2)))


def _refuse(module: Any, attribute: str, value: Any, why: str) -> ValueError:
    return ValueError(
        f"structops.torch.from_module cannot represent {type(module).__name__} with `{attribute}`={value!r}: {why}"
    )


def _check_input_shape(input_shape: Any, ndim: int, channels: int, module: Any) -> tuple[int, ...]:
    """``input_shape`` as ``(channels, *grid)`` with ``ndim`` grid axes (a batch axis is not allowed)."""
    try:
        shape = tuple(int(s) for s in input_shape)
    except TypeError:
        raise TypeError(f"`input_shape` must be a sequence of ints (channels, *grid), got {input_shape!r}.") from None
    if len(shape) != ndim + 1 or shape[0] != channels or min(shape) < 1:
        raise ValueError(
            f"`input_shape` must be (in_channels={channels}, *grid) with {ndim} grid axes for "
            f"{type(module).__name__}, got {input_shape!r} (one example, no batch axis)."
        )
    return shape


def _conv_options(module: Any) -> dict[str, Any]:
    """``Conv`` keywords for a ``nn.ConvNd``; refuses what cannot be represented."""
    d = len(module.kernel_size)
    stencil = tuple(int(k) for k in module.kernel_size)
    mode = module.padding_mode
    if mode not in _PADDING_MODES:
        raise _refuse(module, "padding_mode", mode, f"expected one of {tuple(_PADDING_MODES)}.")
    bc = _PADDING_MODES[mode]
    padding = module.padding
    extra: dict[str, Any] = {}
    if tuple(module.dilation) != (1,) * d:
        extra["dilation"] = tuple(module.dilation)
    if module.groups != 1:
        extra["groups"] = int(module.groups)
    half = tuple(k // 2 for k in stencil)
    if padding == "valid" or (padding != "same" and tuple(padding) == (0,) * d and bc == "zero"):
        if any(k > 1 for k in stencil):
            bc = "valid"
    elif padding == "same" and bc == "zero" and not extra:
        pass  # torch's "same": left (s - 1)//2, the convention of Conv for every size
    elif padding == "same" or tuple(padding) != half or any(k % 2 == 0 for k in stencil):
        extra["padding"] = padding if isinstance(padding, str) else tuple(padding)
    return {"stencil": stencil, "bc": bc, "stride": tuple(int(s) for s in module.stride), **extra}


def _build_conv(grid: tuple[int, ...], cin: int, cout: int, options: dict) -> Conv:
    """The ``Conv`` of ``options`` (from :func:`_conv_options`) on ``grid``."""
    options = dict(options)
    stencil = options.pop("stencil")
    return Conv(grid, stencil, in_channels=cin, out_channels=cout, **options)


def _with_bias(kernel: ParametricKernel, theta: np.ndarray, bias: torch.Tensor | None) -> Layer:
    """A :class:`Layer` holding ``bias`` (``Layer(..., bias=True)``, the parameter set to it), or none."""
    tensor = torch.from_numpy(np.ascontiguousarray(theta))
    if bias is None:
        return Layer(kernel, tensor)
    layer = Layer(kernel, tensor, bias=True)
    with torch.no_grad():
        layer.bias.copy_(bias.detach().reshape(layer.bias.shape))
    return layer


def _conv_layer(module: Any, input_shape: Any) -> Layer:
    weight = module.weight.detach().cpu()
    d = weight.ndim - 2
    cin = int(module.in_channels)
    shape = _check_input_shape(input_shape, d, cin, module)
    options = _conv_options(module)
    conv = _build_conv(shape[1:], cin, int(module.out_channels), options)
    theta = conv.theta_from_torch(module)
    return _with_bias(conv, theta, module.bias)


def _transposed_layer(module: Any, input_shape: Any) -> Layer:
    weight = module.weight.detach().cpu()  # (in, out / groups, *k): the weight of the convolution it transposes
    d = weight.ndim - 2
    cin, cout = int(module.in_channels), int(module.out_channels)
    shape = _check_input_shape(input_shape, d, cin, module)
    if module.padding_mode != "zeros":
        raise _refuse(module, "padding_mode", module.padding_mode, "a transposed convolution pads with zeros only.")
    options = _conv_options(module)
    stride, stencil = options["stride"], options["stencil"]
    dilation = options.get("dilation", (1,) * d)
    pad = tuple(np.atleast_1d(options.get("padding", tuple(k // 2 for k in stencil))))
    grid = tuple(
        (n - 1) * st - 2 * p + dl * (k - 1) + op + 1
        for n, st, p, dl, k, op in zip(shape[1:], stride, pad, dilation, stencil, module.output_padding)
    )
    conv = _build_conv(grid, cout, cin, options)
    if conv.out_shape != shape:
        raise _refuse(
            module, "output_padding", tuple(module.output_padding),
            f"the convolution it transposes maps {conv.in_shape} to {conv.out_shape}, not to the input {shape}.",
        )  # fmt: skip
    theta = conv.theta_from_torch(weight, unchecked=True)  # checked above: the convolution it transposes
    bias = module.bias
    return TransposedLayer(conv, torch.from_numpy(np.ascontiguousarray(theta)), bias)


def _linear_layer(module: torch.nn.Linear) -> Layer:
    weight = module.weight.detach().cpu().numpy()
    kernel = Dense(int(module.out_features), int(module.in_features))
    return _with_bias(kernel, weight.ravel(order="F"), module.bias)


def _check_same_map(module: Any, layer: Layer, input_shape: tuple[int, ...]) -> None:
    """Refuse (``ValueError``) if ``layer`` and ``module`` differ on a random input beyond round-off."""
    dtype = layer.theta.dtype
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, *input_shape, generator=generator, dtype=torch.float64).to(dtype)
    with torch.no_grad():
        want = module(x.to(module.weight.dtype)).to(dtype)
        got = layer(x)
    rtol = 1e-12 if dtype == torch.float64 else 1e-5
    scale = float(want.abs().max()) or 1.0
    if got.shape != want.shape or float((got - want).abs().max()) > rtol * 8 * scale:
        raise ValueError(
            f"structops.torch.from_module: the layer built for {module!r} does not reproduce it on input shape "
            f"{input_shape} (output shapes {tuple(got.shape)} and {tuple(want.shape)}); this geometry is not supported."
        )


def from_module(module: torch.nn.Module, input_shape: Any = None) -> Layer:
    r"""The :class:`~structops.torch.Layer` computing the same map as a torch ``Conv``, ``ConvTranspose`` or ``Linear``.

    Parameters
    ----------
    module : torch.nn.Module
        ``nn.Conv1d``/``Conv2d``/``Conv3d`` (``padding_mode`` ``"zeros"``, ``"circular"``,
        ``"reflect"``, ``"replicate"``; any ``stride``; ``padding`` ``kernel_size // 2`` for odd
        sizes, ``"same"``, ``0`` or ``"valid"``; ``bias``), ``nn.ConvTranspose1d/2d/3d`` (as the
        adjoint :math:`K^\top` of the convolution it transposes, a :class:`TransposedLayer`) or
        ``nn.Linear`` (a :class:`~structops.Dense` layer).
    input_shape : sequence of int
        One example's shape ``(in_channels, *grid)`` (no batch axis); ignored for ``nn.Linear``.

    Returns
    -------
    Layer
        Same dtype as the module's weight; ``layer(x) == module(x)`` to :math:`10^{-12}` relative
        (float64) or :math:`10^{-5}` (float32), checked on a random input before returning. A
        bias is a parameter ``layer.bias`` (see the module notes).

    Raises
    ------
    TypeError
        If ``module`` is none of these types (the message names its type).
    ValueError
        If an attribute cannot be represented: the message names it and its value (e.g.
        ``dilation``, ``groups``, ``padding_mode``, ``padding``), or ``input_shape`` does not match.

    Examples
    --------
    >>> import torch
    >>> conv = torch.nn.Conv2d(2, 3, 3, padding=1, padding_mode="circular", dtype=torch.float64)
    >>> layer = from_module(conv, (2, 8, 8))
    >>> layer.kernel
    Conv(grid=(8, 8), stencil=(3, 3), bc='periodic', in_channels=2, out_channels=3, stride=(1, 1), method='direct')
    >>> x = torch.randn(4, 2, 8, 8, dtype=torch.float64)
    >>> bool(torch.allclose(layer(x), conv(x), rtol=1e-12, atol=1e-12))
    True
    """
    if isinstance(module, _CONVS):
        layer = _conv_layer(module, input_shape)
    elif isinstance(module, _TRANSPOSED):
        layer = _transposed_layer(module, input_shape)
    elif isinstance(module, torch.nn.Linear):
        layer = _linear_layer(module)
        input_shape = (int(module.in_features),)
    else:
        raise TypeError(
            f"`module` must be a torch.nn.Conv1d/2d/3d, ConvTranspose1d/2d/3d or Linear, got {type(module).__name__}."
        )
    _check_same_map(module, layer, tuple(int(s) for s in input_shape))
    return layer


def _stencil_of(kernel: ParametricKernel, theta: np.ndarray) -> tuple[Conv, np.ndarray] | None:
    """The :class:`Conv` and its full stencil (the kernel hook ``as_convolution``), for a convolution; else None."""
    view = kernel.as_convolution()
    if view is None:
        return None
    return view.conv, theta if view.conv is kernel else np.asarray(view.weights(theta)).ravel()


def to_module(layer: Layer) -> torch.nn.Module:
    r"""A plain torch module computing the same map as ``layer`` (``Conv`` families and ``Dense``).

    Parameters
    ----------
    layer : Layer
        A layer whose family is a convolution with a fixed stencil (:class:`~structops.Conv`,
        ``SymmetricConv``, ``MMatrixConv``, ... on an odd stencil, or ``bc="zero"`` with stride
        1 or ``"valid"`` for any), a :class:`TransposedLayer` of one (``bc="zero"``), or
        :class:`~structops.Dense`; the bias, if any, is copied.

    Returns
    -------
    torch.nn.Module
        ``nn.ConvNd`` / ``nn.ConvTransposeNd`` / ``nn.Linear`` with the current parameters
        (a copy: later training of either does not affect the other), in the layer's dtype.

    Raises
    ------
    TypeError
        If ``layer`` is not a :class:`~structops.torch.Layer`.
    ValueError
        If its family is not a convolution with a fixed stencil or cannot be written as a torch
        module (the message says which).
    """
    if not isinstance(layer, Layer):
        raise TypeError(f"`layer` must be a structops.torch.Layer, got {type(layer).__name__}.")
    theta = layer.theta.detach().cpu().numpy()
    bias = getattr(layer, "bias", None)
    dtype = layer.theta.dtype
    if isinstance(layer.kernel, Dense):
        k = layer.kernel
        module: Any = torch.nn.Linear(k.cols, k.rows, bias=bias is not None, dtype=dtype)
        weight = theta.reshape((k.rows, k.cols), order="F")
    else:
        found = _stencil_of(layer.kernel, theta)
        if found is None:
            raise ValueError(
                f"`layer` holds {layer.kernel!r}, which is not a convolution with a fixed stencil: it has no torch "
                "module form (apply it with structops.torch.apply)."
            )
        conv, stencil = found
        module = _torch_conv(conv, isinstance(layer, TransposedLayer), bias is not None, dtype)
        weight = conv.theta_to_torch(stencil)
    with torch.no_grad():
        module.weight.copy_(torch.from_numpy(np.ascontiguousarray(weight)))
        if bias is not None:
            module.bias.copy_(bias.detach().reshape(-1))
    return module


def _torch_conv(conv: Conv, transposed: bool, bias: bool, dtype: torch.dtype) -> torch.nn.Module:
    """The torch convolution module of ``conv``'s geometry (weights set by the caller)."""
    geo = conv.geometry
    d = len(geo.grid)
    even = tuple(lft for lft, rgt in geo.pads if lft == rgt)
    stride1 = all(st == 1 for st in geo.stride)
    if len(even) == d:
        padding: Any = even
    elif geo.bc == "zero" and stride1 and not transposed and geo.default_padding:
        padding = "same"
    else:
        raise ValueError(
            f"to_module: {conv!r} pads {geo.pads} (before, after) per axis: torch pads both sides alike "
            "(or 'same' for a zero boundary with stride 1)."
        )
    if transposed:
        if geo.bc not in ("zero", "valid") or padding == "same":
            raise ValueError(f"to_module: a transposed layer needs bc='zero' and even padding, got {conv!r}.")
        transposed_cls: Any = _TRANSPOSED[d - 1]
        out_padding = tuple(
            g + 2 * p - ((o - 1) * st + dl * (s - 1) + 1)
            for g, p, o, st, dl, s in zip(geo.grid, padding, geo.out_grid, geo.stride, geo.dilation, geo.stencil)
        )
        return transposed_cls(
            geo.cout, geo.cin, geo.stencil, stride=geo.stride, padding=padding, output_padding=out_padding,
            dilation=geo.dilation, groups=geo.groups, bias=bias, dtype=dtype,
        )  # fmt: skip
    mode = _MODES_BY_BC.get("zero" if geo.bc == "valid" else geo.bc)
    if mode is None:
        raise ValueError(f"to_module: bc={geo.bc!r} has no torch padding_mode ({tuple(_MODES_BY_BC)}).")
    cls: Any = _CONVS[d - 1]
    return cls(
        geo.cin, geo.cout, geo.stencil, stride=geo.stride, padding=padding, padding_mode=mode,
        dilation=geo.dilation, groups=geo.groups, bias=bias, dtype=dtype,
    )  # fmt: skip


@torch.no_grad()
def project_lipschitz(layer: Layer, lipschitz: float) -> Layer:
    r"""Project ``layer.theta`` in place so that :math:`\|K(\theta)\|_2 \le` ``lipschitz``, certified.

    :func:`structops.solvers.project_spectral_norm` on the current parameters (the identity
    when the certified norm is already within the bound); ``Layer.project_(lipschitz=L)``
    calls it. Returns ``layer``.
    """
    theta = layer.theta.detach().cpu().numpy()
    projected = project_spectral_norm(layer.kernel, theta, lipschitz)
    if projected is not theta:
        layer.theta.copy_(torch.from_numpy(np.ascontiguousarray(projected)))
    return layer
