r"""Certified :math:`\ell_2` Lipschitz bounds of whole torch models: :func:`certify`.

A feed-forward network :math:`f = f_L \circ \dots \circ f_1` is Lipschitz with constant
:math:`\prod_l \operatorname{Lip}(f_l)`; a residual block :math:`x + g(x)` with
:math:`1 + \operatorname{Lip}(g)`. For a linear layer :math:`\operatorname{Lip} = \|K\|_2`, and
structops certifies it (:func:`structops.solvers.certified_norm_bound`: exact for periodic
convolutions, the periodic-embedding certificate for zero padding, verified positive
definiteness for reflect and replicate padding, dense LAPACK for small operators, each with a
round-off allowance), and brackets it from below by a Lanczos run
(:func:`structops.solvers.spectral_norm`); a row's ``route`` names what gave its upper bound.
Batch normalisation in eval mode is the affine map
:math:`x \mapsto \gamma (x - \mu)/\sqrt{\sigma^2 + \epsilon} + \beta`; folded into the
convolution or linear layer before it, it scales output channel :math:`o` by
:math:`\gamma_o/\sqrt{\sigma_o^2+\epsilon}`, and the product is certified as one layer (tighter
than the two norms multiplied). The lecture notes (Lars Ruthotto, *Numerical Methods for Deep
Learning*, "Parametric Models") give the layers; the certificate of a product is the
standard one (Szegedy et al. 2014, Tsuzuku et al. 2018).

With ``inputs``, the report also gives a measured **lower** bound: :math:`\max_x \|J_f(x)\|_2`
over those inputs, by power iteration on :math:`J^\top J` (``torch.func.jvp`` / ``vjp``): the
true Lipschitz constant lies between the two.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from ..kernels.conv import Conv
from ..kernels.conv.based import conv_itself
from ..kernels.dense import Dense
from ..solvers import EstimateWarning, SpectralEstimate, spectral_norm
from ..solvers._certified import norm_upper
from ..solvers._routes import DENSE_LIMIT
from . import Layer
from ._modules import TransposedLayer, from_module

__all__ = ["CertifyReport", "LayerBound", "Residual", "certify"]

#: Activations that are 1-Lipschitz in every norm (elementwise, slope in [-1, 1]); GroupSort/MaxMin by name.
ONE_LIPSCHITZ = (
    torch.nn.ReLU, torch.nn.Tanh, torch.nn.Identity, torch.nn.Flatten, torch.nn.Dropout, torch.nn.Dropout1d,
    torch.nn.Dropout2d, torch.nn.Dropout3d, torch.nn.Hardtanh, torch.nn.ReLU6, torch.nn.Softsign,
)  # fmt: skip
_ONE_LIPSCHITZ_NAMES = ("GroupSort", "MaxMin")
_POWER_STEPS = 30


class Residual(torch.nn.Module):
    r"""A residual block :math:`x \mapsto x + g(x)`; :func:`certify` bounds it by :math:`1 + \operatorname{Lip}(g)`.

    Parameters
    ----------
    branch : torch.nn.Module
        :math:`g`, mapping inputs to outputs of the same shape.
    """

    def __init__(self, branch: torch.nn.Module) -> None:
        super().__init__()
        self.branch = branch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`x + g(x)`."""
        return x + self.branch(x)


@dataclass
class LayerBound:
    """One row of a :class:`CertifyReport`.

    Attributes
    ----------
    name : str
        The module's qualified name in the model (``"0.conv"``; BatchNorm folded: ``"0+1"``).
    family : str
        The structops family (``"Conv"``, ``"Dense"``) or the module type.
    route : str
        What gave the upper bound: a solver route (``"fourier"``, ``"certified"``,
        ``"verified-cholesky"``, ``"padded"``, ``"dense"``, ...; ``SpectralEstimate.method``),
        ``"1-Lipschitz"``, ``"exact"`` (pooling), ``"given"`` (from ``bounds``) or ``"residual"``.
    upper, lower : float
        Certified upper bound and a guaranteed lower bound of the layer's Lipschitz constant.
    seconds : float
        Time taken.
    """

    name: str
    family: str
    route: str
    upper: float
    lower: float
    seconds: float

    @property
    def ratio(self) -> float:
        """``upper / lower`` (``inf`` if ``lower`` is 0)."""
        return self.upper / self.lower if self.lower > 0 else float("inf")


@dataclass
class CertifyReport:
    r"""What :func:`certify` returns: the per-layer rows and the network's bounds.

    Attributes
    ----------
    rows : list of LayerBound
    upper : float
        Certified upper bound of the network's :math:`\ell_2` Lipschitz constant.
    lower : float or None
        Measured lower bound :math:`\max_x \|J(x)\|_2` over ``inputs`` (None without inputs).
    seconds : float
    """

    rows: list[LayerBound] = field(default_factory=list)
    upper: float = 1.0
    lower: float | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (rows as dicts with their ``ratio``)."""
        rows = [{**asdict(r), "ratio": r.ratio} for r in self.rows]
        return {"rows": rows, "upper": self.upper, "lower": self.lower, "seconds": self.seconds}

    def __str__(self) -> str:
        head = f"{'layer':<14} {'family':<12} {'route':<18} {'upper':>11} {'lower':>11} {'ratio':>8} {'time':>7}"
        lines = [head, "-" * len(head)]
        for r in self.rows:
            lines.append(
                f"{r.name:<14} {r.family:<12} {r.route:<18} {r.upper:>11.5g} {r.lower:>11.5g} {r.ratio:>8.4f} "
                f"{r.seconds:>6.2f}s"
            )
        lines.append(f"network: certified Lipschitz upper bound {self.upper:.6g}")
        if self.lower is not None:
            lines.append(
                f"network: measured lower bound max ‖J(x)‖₂ {self.lower:.6g} (ratio {self.upper / self.lower:.4g})"
            )
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"CertifyReport(upper={self.upper:.6g}, lower={self.lower!r}, rows={len(self.rows)})"

    def to_json(self) -> str:
        """:meth:`to_dict` as a JSON string."""
        return json.dumps(self.to_dict())


#: ``SpectralEstimate.method`` of the routes whose ``upper`` is already the certificate (tightened where loose).
_CERTIFYING = ("certified", "verified-cholesky", "padded")


def _kernel_bounds(kernel, theta: np.ndarray) -> tuple[float, float, str]:
    """Certified upper bound, guaranteed lower bound of ``‖K(θ)‖₂``, and the route that gave the upper bound."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EstimateWarning)
        est = spectral_norm(kernel, theta, tol=1e-4, full_output=True)
    assert isinstance(est, SpectralEstimate)
    lower = float(est.lower)  # a Ritz value less its round-off allowance on every route: guaranteed
    if est.method in _CERTIFYING:  # the certificate of certified_norm_bound, tightened by verified PD where loose
        return float(est.upper), min(lower, float(est.upper)), est.method
    upper, source = norm_upper(kernel, theta, dense_limit=DENSE_LIMIT)  # certified_norm_bound, and its route
    if est.certified and float(est.upper) < upper:  # Weyl bounds of the Kronecker route
        upper, source = float(est.upper), est.method
    if est.exact:  # LAPACK or a transform: within LAPACK_CONSTANT·n·eps of the norm
        allowance = 8.0 * max(kernel.shape) * float(np.finfo(np.float64).eps)
        lower = float(est.value) * (1 - allowance)
        if float(est.value) * (1 + allowance) < upper:
            upper, source = float(est.value) * (1 + allowance), est.method
    return float(upper), min(lower, float(upper)), source


def _fold_batchnorm(layer: Layer, bn: Any) -> np.ndarray:
    """``θ`` of ``diag(γ/√(σ²+ε)) K(θ)``: the eval-mode BatchNorm's scale folded into a Conv or Dense layer."""
    scale = (bn.weight.detach() if bn.affine else torch.ones_like(bn.running_var)) / torch.sqrt(
        bn.running_var.detach() + bn.eps
    )
    s = scale.double().numpy()
    theta = layer.theta.detach().double().numpy()
    kernel = layer.kernel
    conv = conv_itself(kernel)
    if conv is not None and not isinstance(layer, TransposedLayer):
        w = theta.reshape(conv.out_channels, -1) * s[:, None]
        return w.ravel()
    if isinstance(kernel, Dense):
        return (theta.reshape(kernel.rows, kernel.cols, order="F") * s[:, None]).ravel(order="F")
    raise ValueError(f"certify cannot fold BatchNorm into {kernel!r}")


class _Walker:
    """Walks a model, collecting rows; ``shapes`` maps each module to its input shape (from one forward pass)."""

    def __init__(self, shapes: dict[torch.nn.Module, tuple[int, ...]], bounds: dict) -> None:
        self.shapes, self.bounds = shapes, bounds
        self.rows: list[LayerBound] = []

    def layer(self, module: Any) -> Layer:
        if isinstance(module, Layer):
            return module
        return from_module(module, self.shapes[module])

    def linear(self, name: str, layer: Layer, theta: np.ndarray | None = None) -> float:
        start = time.perf_counter()
        theta = layer.theta.detach().double().numpy() if theta is None else theta
        upper, lower, route = _kernel_bounds(layer.kernel, theta)
        self.rows.append(
            LayerBound(name, type(layer.kernel).__name__, route, upper, lower, time.perf_counter() - start)
        )
        return upper

    def fixed(self, name: str, module: Any, value: float, route: str) -> float:
        self.rows.append(LayerBound(name, type(module).__name__, route, value, value, 0.0))
        return value

    def sequence(self, prefix: str, children: list[tuple[str, torch.nn.Module]]) -> float:
        total, i = 1.0, 0
        while i < len(children):
            name, child = children[i]
            following = children[i + 1][1] if i + 1 < len(children) else None
            if isinstance(following, torch.nn.modules.batchnorm._BatchNorm) and _foldable(child):
                layer = self.layer(child)
                total *= self.linear(f"{prefix}{name}+{children[i + 1][0]}", layer, _fold_batchnorm(layer, following))
                i += 2
                continue
            total *= self.module(f"{prefix}{name}", child)
            i += 1
        return total

    def module(self, name: str, module: Any) -> float:
        for key in (name, type(module)):
            if key in self.bounds:
                return self.fixed(name, module, float(self.bounds[key]), "given")
        if isinstance(module, torch.nn.Sequential):
            return self.sequence(f"{name}." if name else "", list(module.named_children()))
        if isinstance(module, Residual):
            inner = _Walker(self.shapes, self.bounds)
            value = 1.0 + inner.module(f"{name}.branch", module.branch)
            self.rows.extend(inner.rows)
            return self.fixed(name, module, value, "residual")
        if isinstance(module, (Layer, *_LINEAR_MODULES)):
            return self.linear(name, self.layer(module))
        if isinstance(module, ONE_LIPSCHITZ) or type(module).__name__ in _ONE_LIPSCHITZ_NAMES:
            return self.fixed(name, module, 1.0, "1-Lipschitz")
        if isinstance(module, torch.nn.LeakyReLU):
            return self.fixed(name, module, max(1.0, abs(float(module.negative_slope))), "1-Lipschitz")
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            return self.fixed(name, module, _batchnorm_bound(module), "exact")
        if isinstance(module, (torch.nn.MaxPool1d, torch.nn.MaxPool2d, torch.nn.MaxPool3d)):
            return self.fixed(name, module, _maxpool_bound(module), "exact")
        if isinstance(module, (torch.nn.AvgPool1d, torch.nn.AvgPool2d, torch.nn.AvgPool3d)):
            return self.avgpool(name, module)
        raise TypeError(
            f"certify: no Lipschitz bound for module {name!r} of type {type(module).__name__}; pass "
            f"bounds={{{type(module).__name__}: L}} or bounds={{{name!r}: L}} with a bound you trust."
        )

    def avgpool(self, name: str, module: Any) -> float:
        shape = self.shapes[module]
        d = len(shape) - 1
        k = _tuple(module.kernel_size, d)
        st = _tuple(module.stride or module.kernel_size, d)
        if _tuple(module.padding, d) != (0,) * d or module.ceil_mode:
            raise TypeError(f"certify: {type(module).__name__} {name!r} with padding or ceil_mode: pass `bounds`.")
        conv = Conv(shape[1:], k, bc="valid", stride=st)
        theta = np.full(conv.nparams, 1.0 / np.prod(k))
        start = time.perf_counter()
        upper, lower, route = _kernel_bounds(conv, theta)
        self.rows.append(LayerBound(name, type(module).__name__, route, upper, lower, time.perf_counter() - start))
        return upper


_LINEAR_MODULES = (
    torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.ConvTranspose1d, torch.nn.ConvTranspose2d,
    torch.nn.ConvTranspose3d, torch.nn.Linear,
)  # fmt: skip


def _foldable(module: Any) -> bool:
    if isinstance(module, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear)):
        return True
    return isinstance(module, Layer) and (conv_itself(module.kernel) is not None or isinstance(module.kernel, Dense))


def _tuple(value: Any, d: int) -> tuple[int, ...]:
    return tuple(int(v) for v in value) if isinstance(value, (tuple, list)) else (int(value),) * d


def _batchnorm_bound(bn: Any) -> float:
    scale = (bn.weight.detach() if bn.affine else torch.ones_like(bn.running_var)) / torch.sqrt(bn.running_var + bn.eps)
    return float(scale.abs().max())


def _maxpool_bound(module: Any) -> float:
    r"""``sqrt(m)``, ``m`` the most windows one input lies in.

    :math:`\sum_w \max_{i\in w}|\delta_i|^2 \le \sum_w \sum_{i\in w}|\delta_i|^2 \le m\|\delta\|^2`.
    """
    k = np.atleast_1d(module.kernel_size)
    st = np.atleast_1d(module.stride if module.stride is not None else module.kernel_size)
    dil = np.atleast_1d(module.dilation)
    span = dil * (k - 1) + 1
    per_axis = np.minimum(np.ceil(span / st), k)
    return float(np.sqrt(np.prod(np.broadcast_to(per_axis, np.broadcast(k, st).shape))))


def _input_shapes(model: torch.nn.Module, x: torch.Tensor) -> dict[torch.nn.Module, tuple[int, ...]]:
    shapes: dict[torch.nn.Module, tuple[int, ...]] = {}

    def hook(module, args):
        if args and isinstance(args[0], torch.Tensor):
            shapes.setdefault(module, tuple(args[0].shape[1:]))

    handles = [m.register_forward_pre_hook(hook) for m in model.modules()]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return shapes


def _jacobian_norm(model: torch.nn.Module, x: torch.Tensor, steps: int) -> float:
    r"""A lower bound of :math:`\|J_f(x)\|_2`: power iteration on :math:`J^\top J`.

    :math:`J^\top w` is one backward pass; :math:`Jv` the derivative in :math:`u` of
    :math:`\langle J^\top u, v\rangle` (double backward, exact through structops layers, which
    ``torch.func.jvp`` cannot enter). Every :math:`\|Jv\|` with :math:`\|v\| = 1` is a lower bound.
    """
    generator = torch.Generator().manual_seed(0)
    v = torch.randn(x.shape, generator=generator, dtype=x.dtype)
    v = v / v.norm()
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        y = model(x)
        u = torch.zeros_like(y, requires_grad=True)
        (pullback,) = torch.autograd.grad(y, x, u, create_graph=True)
    sigma = 0.0
    for _ in range(steps):
        (jv,) = torch.autograd.grad(pullback, u, v, retain_graph=True)
        sigma = max(sigma, float(jv.detach().norm()))
        (w,) = torch.autograd.grad(y, x, jv.detach(), retain_graph=True)
        norm = float(w.detach().norm())
        if norm == 0:
            break
        v = (w / norm).detach()
    return sigma


def certify(
    model: torch.nn.Module,
    input_shape: Any,
    *,
    inputs: torch.Tensor | None = None,
    bounds: dict | None = None,
) -> CertifyReport:
    r"""Certified :math:`\ell_2` Lipschitz upper bound of a torch model, layer by layer (and a measured lower bound).

    Parameters
    ----------
    model : torch.nn.Module
        Composed of ``nn.Sequential`` (nested), ``nn.Conv1d/2d/3d``, ``nn.ConvTranspose*``,
        ``nn.Linear``, :class:`~structops.torch.Layer`, ``BatchNorm`` (eval mode; folded into the
        layer before it), 1-Lipschitz activations (``ReLU``, ``LeakyReLU`` with slope
        :math:`\le 1`, ``Tanh``, ``GroupSort``/``MaxMin``, ...), ``MaxPool`` (:math:`\sqrt m`,
        ``m`` the most windows an input lies in: 1 without overlap), ``AvgPool`` (its norm),
        ``Flatten``, ``Dropout`` and :class:`Residual` blocks (:math:`1 + L(g)`).
    input_shape : sequence of int
        One example's shape (no batch axis), e.g. ``(1, 28, 28)``.
    inputs : torch.Tensor, optional
        A batch of inputs at which to measure :math:`\|J_f(x)\|_2` (power iteration, 30 steps each).
    bounds : dict, optional
        Lipschitz bounds for modules certify does not know, keyed by qualified name or type.

    Returns
    -------
    CertifyReport
        Prints as a table; ``.to_dict()`` for JSON. ``report.upper`` is the certified bound;
        ``report.lower`` (with ``inputs``) a measured lower bound.

    Raises
    ------
    TypeError
        For a module with no known bound (the message names its type and how to pass one).
    ValueError
        If the model is in training mode (BatchNorm and Dropout are then not the maps certified).
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}.")
    if model.training:
        raise ValueError(
            "`model` must be in eval mode (call model.eval()): BatchNorm and Dropout are certified as such."
        )
    start = time.perf_counter()
    shape = tuple(int(s) for s in input_shape)
    dtype = next((p.dtype for p in model.parameters()), torch.get_default_dtype())
    shapes = _input_shapes(model, torch.zeros(1, *shape, dtype=dtype))
    walker = _Walker(shapes, dict(bounds or {}))
    upper = (
        walker.module("", model)
        if not isinstance(model, torch.nn.Sequential)
        else walker.sequence("", list(model.named_children()))
    )
    lower = None
    if inputs is not None:
        lower = max(_jacobian_norm(model, x[None].to(dtype), _POWER_STEPS) for x in inputs)
    return CertifyReport(walker.rows, float(upper), lower, time.perf_counter() - start)
