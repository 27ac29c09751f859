r"""Torch forms of the kernel families: :math:`K(\theta)x` computed with torch's own operations.

A *torch form* of a family is a function ``form(kernel, theta, x, transpose) -> y`` of torch
tensors: ``theta`` of shape ``(p,)``, ``x`` of shape ``(n, *in_shape)`` (``(n, *out_shape)``
with ``transpose``) and ``y`` of shape ``(n, *out_shape)`` (``(n, *in_shape)``), built from
torch operations only -- never a dense :math:`K`, never numpy -- so that autograd (any
order), ``torch.func`` (``vmap``, ``grad``, ``jacrev``), ``torch.export``, ``torch.compile``
and every device and dtype come from torch. The forms follow the families' structure:

* :class:`~structops.Conv`: the stencil weights :math:`W(\theta)` (``θ`` flipped on the
  spatial axes, PyTorch's weight layout) and ``torch.nn.functional.conv{1,2,3}d`` on the
  padded grid :math:`K = S\,C_W\,P_{bc}`; the padding :math:`P_{bc}` is built from slices,
  flips and concatenation of the grid (every boundary: zero, periodic, reflect, replicate,
  the half-sample mirror ``symmetric``, valid), its adjoint by adding the slices back, and
  :math:`K^\top = P_{bc}^\top C_W^\top S^\top` through ``conv_transpose{1,2,3}d``.
* :class:`~structops.AntisymmetricConv`: :math:`C_W x - C_W^\top x` with one ``W``.
* :class:`~structops.CayleyConv`: the generator's half spectrum from the taps' Fourier factors,
  one batched ``torch.linalg.inv`` over the frequencies (once per call, for the whole batch),
  then ``rfftn`` of the examples, one complex ``(F, n, c) @ (F, c, c)`` product and
  ``irfftn``, in a ``torch.autograd.Function`` whose backward uses the real DFTs' own adjoints.
  The one exception to "torch's operations only": a plain eager call on CPU tensors with numba
  as the accelerator runs the same steps on the numba kernels of the numpy bridge
  (:mod:`structops.torch._fused`: no layout copies, measured faster), and
  ``structops.set_accelerator("numpy")`` turns that off; every transform, trace, compile, export,
  other device, half precision and double backward runs torch's operations.
* The pattern families (:class:`~structops.Dense`, :class:`~structops.Diagonal`,
  :class:`~structops.Antisymmetric`, :class:`~structops.MMatrix`, :class:`~structops.Sparse`,
  :class:`~structops.Banded`, :class:`~structops.LinearKernel`): the nonzeros of :math:`K`
  as :math:`P\theta + k_0` on the fixed pattern of :math:`Q` (a gather and an
  ``index_add``), then a dense product when :math:`K` has at most :data:`DENSE_ENTRIES`
  entries or its pattern fills more than a tenth of it, else a sparse product
  (gather the columns, scale, ``index_add`` into the rows).
* :class:`~structops.Wavelet`: the fixed orthonormal transform :math:`W` as a sparse matrix,
  :math:`K x = W^\top(Q\theta \odot W x)`.
* :class:`~structops.Softplus`, :class:`~structops.kernels.LinearReparam` (and the families
  built on it: :class:`~structops.SymmetricConv`, :class:`~structops.MMatrixConv`),
  :class:`~structops.SeparableConv`, :class:`~structops.DepthwiseSeparableConv`: the inner
  family's form at :math:`g(\varphi)`, with :math:`g` in torch (:func:`register_torch_map`);
  :class:`~structops.Chain`: the inner form, then the outer map's (``avg_pool`` for
  :class:`~structops.AvgPool`, a sparse product for a map with ``tosparse()``).

A user family gives its own torch form by defining a method
``torch_apply(self, theta, x, transpose)`` with the contract above (see docs/contract.md),
or by :func:`register_torch_form` for a class it does not own. Constant index tensors are
built once per family (on the CPU, from the family's structure) and moved to the device of
``x`` at each call.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from .._backend import have_numba
from ..kernels import (
    AntisymmetricConv,
    AvgPool,
    CayleyConv,
    Chain,
    Conv,
    DepthwiseSeparableConv,
    Diagonal,
    LinearReparam,
    Reparametrized,
    SeparableConv,
    Softplus,
    Wavelet,
)
from ..kernels.conv.cayley import tap_factors
from ..kernels.linear import PatternKernel
from . import _fused

__all__ = ["DENSE_ENTRIES", "has_torch_form", "prepare", "register_torch_form", "register_torch_map", "torch_apply"]

#: A pattern family's :math:`K` is assembled dense (then one matrix product) up to this many entries.
DENSE_ENTRIES = 2**18

#: ``form(kernel, theta, x, transpose) -> y``
Form = Callable[[Any, torch.Tensor, torch.Tensor, bool], torch.Tensor]
#: ``g(kernel, phi) -> theta`` of a reparametrised family
Map = Callable[[Any, torch.Tensor], torch.Tensor]

_FORMS: dict[type, Form] = {}
_MAPS: dict[type, Map] = {}


def register_torch_form(cls: type, form: Form) -> Form:
    """Register ``form(kernel, theta, x, transpose)`` as the torch form of the family ``cls`` and its subclasses.

    Parameters
    ----------
    cls : type
        A :class:`~structops.kernels.ParametricKernel` subclass.
    form : callable
        ``form(kernel, theta, x, transpose) -> y`` with torch operations only: ``theta`` shape
        ``(p,)``, ``x`` shape ``(n, *in_shape)`` (``(n, *out_shape)`` with ``transpose``),
        ``y`` shape ``(n, *out_shape)`` (``(n, *in_shape)``).

    Returns
    -------
    callable
        ``form`` (so this can decorate it).
    """
    _FORMS[cls] = form
    return form


def register_torch_map(cls: type, fn: Map) -> Map:
    r"""Register ``fn(kernel, phi) -> theta``: a :class:`~structops.kernels.Reparametrized`'s map :math:`g` in torch."""
    _MAPS[cls] = fn
    return fn


def _lookup(table: dict[type, Any], kernel: Any) -> Any:
    for cls in type(kernel).__mro__:
        found = table.get(cls)
        if found is not None:
            return found
    return None


def _form_of(kernel: Any) -> Form | None:
    """The torch form of ``kernel``: its own ``torch_apply`` method, else the registered form of its class."""
    method = getattr(type(kernel), "torch_apply", None)
    if method is not None:
        return lambda k, theta, x, transpose: method(k, theta, x, transpose)
    if isinstance(kernel, Reparametrized):
        if _lookup(_MAPS, kernel) is None or not has_torch_form(kernel.kernel):
            return None
        return _reparametrized
    if isinstance(kernel, Chain):
        return _chain if has_torch_form(kernel.kernel) and _outer_form(kernel.outer) is not None else None
    return _lookup(_FORMS, kernel)


def has_torch_form(kernel: Any) -> bool:
    """Whether ``kernel`` has a torch form (its own ``torch_apply``, or a registered one)."""
    return _form_of(kernel) is not None


def torch_apply(kernel: Any, theta: torch.Tensor, x: torch.Tensor, transpose: bool = False) -> torch.Tensor:
    r""":math:`K(\theta)x_i` (:math:`K(\theta)^\top x_i`) for ``x`` of shape ``(n, *in_shape)``: the torch form.

    No validation (the callers in :mod:`structops.torch` validate); raises ``NotImplementedError``
    for a family without a torch form.
    """
    form = _form_of(kernel)
    if form is None:
        raise NotImplementedError(f"{kernel!r} has no torch form")
    return form(kernel, theta, x, transpose)


# ------------------------------------------------------------------ constants
# The constants live on the object they belong to (a kernel, a geometry), under these attribute
# names: torch.compile guards an attribute of an object the traced module holds, where a guard on
# an entry of a global weak dictionary breaks when an unrelated entry is collected during the
# compilation (found by a Cayley network compiled after another network had been exported).
_CONSTANTS = "_structops_torch_constants"
_PLAN = "_structops_torch_plan"


def _constants(key: Any, build: Callable[[], dict[str, Any]], like: torch.Tensor) -> dict[str, Any]:
    """What ``build()`` made once for ``key`` (tensors on the CPU), with the tensors on the device of ``like``."""
    table = getattr(key, _CONSTANTS, None)
    if table is None:
        table = _store(key, _CONSTANTS, build)
    if like.device.type == "cpu":
        return table
    return {name: t.to(like.device) if isinstance(t, torch.Tensor) else t for name, t in table.items()}


@torch.compiler.disable
def _store(key: Any, name: str, build: Callable[[], Any]) -> Any:
    """``key.name = build()`` (frozen dataclasses too), eagerly: never traced (:func:`prepare` builds first)."""
    value = build()
    object.__setattr__(key, name, value)
    return value


def prepare(kernel: Any) -> None:
    """Build the constants of ``kernel``'s torch form now (index tensors, padding plans), by one run on meta tensors.

    :class:`structops.torch.Layer` calls it at construction, so that ``torch.compile`` and
    ``torch.export`` later trace only torch operations; a no-op for a family without a torch form.
    """
    if not has_torch_form(kernel):
        return
    theta = torch.empty(kernel.nparams, device="meta")
    for transpose in (False, True):
        shape = kernel.out_shape if transpose else kernel.in_shape
        torch_apply(kernel, theta, torch.empty(1, *shape, device="meta"), transpose)


def _coo(matrix: Any) -> dict[str, torch.Tensor]:
    """Rows, columns and values of a fixed sparse matrix (float64 values; cast at use)."""
    A = sp.coo_array(matrix)
    A.sum_duplicates()
    return {
        "row": torch.from_numpy(A.row.astype(np.int64)),
        "col": torch.from_numpy(A.col.astype(np.int64)),
        "val": torch.from_numpy(A.data.astype(np.float64)),
    }


def _sparse_rows(A: dict[str, torch.Tensor], rows: int, x: torch.Tensor) -> torch.Tensor:
    """``x @ Aᵀ`` for rows ``x`` of shape ``(n, cols)`` and a fixed sparse ``A`` (gather, scale, ``index_add``)."""
    terms = x[:, A["col"]] * A["val"].to(x.dtype)
    return x.new_zeros((x.shape[0], rows)).index_add(1, A["row"], terms)


def _sparse_vec(A: dict[str, torch.Tensor], rows: int, v: torch.Tensor) -> torch.Tensor:
    """``A v`` for a fixed sparse ``A`` and a vector ``v``."""
    return v.new_zeros(rows).index_add(0, A["row"], v[A["col"]] * A["val"].to(v.dtype))


def _transposed(A: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {"row": A["col"], "col": A["row"], "val": A["val"]}


# ------------------------------------------------------------------------ Conv
def _runs(index: np.ndarray) -> list[tuple[str, int, int, int]]:
    """Split a padding index map into runs ``(kind, position, source, length)``.

    ``kind`` is ``"zero"`` (no source), ``"up"`` (sources ``source, source + 1, ...``) or
    ``"down"`` (sources ``source, source - 1, ...``); ``position`` is where the run starts in
    the padded axis.
    """
    runs: list[list[Any]] = []
    for pos, src in enumerate(int(i) for i in index):
        if runs:
            kind, _, first, length = runs[-1]
            last = first + (length - 1) * (1 if kind == "up" else -1)
            if kind == "zero" and src < 0:
                runs[-1][3] += 1
                continue
            if src >= 0 and kind != "zero":
                if src == last + 1 and (kind == "up"):
                    runs[-1][3] += 1
                    continue
                if src == last - 1 and (kind == "down" or length == 1):
                    runs[-1][0], runs[-1][3] = "down", length + 1
                    continue
        runs.append(["zero" if src < 0 else "up", pos, max(src, 0), 1])
    return [(str(k), int(p), int(s), int(n)) for k, p, s, n in runs]


def _pad_axis(x: torch.Tensor, dim: int, runs: list[tuple[str, int, int, int]]) -> torch.Tensor:
    """The padded axis ``dim`` of ``x``: its runs concatenated (slices, flipped slices, zeros)."""
    if len(runs) == 1 and runs[0][0] == "up" and runs[0][2] == 0 and runs[0][3] == x.shape[dim]:
        return x
    pieces = []
    for kind, _, src, length in runs:
        if kind == "zero":
            shape = list(x.shape)
            shape[dim] = length
            pieces.append(x.new_zeros(shape))
        elif kind == "up":
            pieces.append(x.narrow(dim, src, length))
        else:
            pieces.append(x.narrow(dim, src - length + 1, length).flip(dim))
    return torch.cat(pieces, dim)


def _place(piece: torch.Tensor, dim: int, start: int, size: int) -> torch.Tensor:
    """``piece`` zero-padded along ``dim`` to ``size`` entries, starting at ``start``."""
    after = size - start - piece.shape[dim]
    if start == 0 and after == 0:
        return piece
    widths = [0, 0] * (piece.ndim - dim - 1) + [start, after]
    return F.pad(piece, widths)


def _pad_axis_adjoint(y: torch.Tensor, dim: int, runs: list[tuple[str, int, int, int]], size: int) -> torch.Tensor:
    """The adjoint of :func:`_pad_axis`: every run's slice added back onto the ``size`` samples it came from."""
    if len(runs) == 1 and runs[0][0] == "up" and runs[0][2] == 0 and runs[0][3] == size:
        return y
    out = None
    for kind, pos, src, length in runs:
        if kind == "zero":
            continue
        piece = y.narrow(dim, pos, length)
        if kind == "down":
            piece, src = piece.flip(dim), src - length + 1
        placed = _place(piece, dim, src, size)
        out = placed if out is None else out + placed
    if out is None:
        shape = list(y.shape)
        shape[dim] = size
        return y.new_zeros(shape)
    return out


def _conv_plan(geo: Any) -> dict[str, Any]:
    """What the conv form needs from a geometry: padding runs, torch's conv arguments, output padding."""
    nd = geo.ndim
    dilation = tuple(getattr(geo, "dilation", (1,) * nd))
    groups = int(getattr(geo, "groups", 1))
    pads = tuple(geo.pads)
    runs = [_runs(np.asarray(m)) for m in geo.maps]
    # zero padding equal on both sides goes to torch's own `padding=`
    native = geo.bc in ("zero", "valid") and all(lft == rgt for lft, rgt in pads)
    size = geo.grid if native else geo.padded
    extent = tuple(d * (s - 1) + 1 for d, s in zip(dilation, geo.stencil))
    native_pad = tuple(lft for lft, _ in pads) if native else (0,) * nd
    full = tuple((m - 1) * st - 2 * p + e for m, st, p, e in zip(geo.out_grid, geo.stride, native_pad, extent))
    return {
        "runs": runs,
        "native": native,
        "padding": native_pad,
        "dilation": dilation,
        "groups": groups,
        "output_padding": tuple(g - f for g, f in zip(size, full)),
    }


_CONV = {1: (F.conv1d, F.conv_transpose1d), 2: (F.conv2d, F.conv_transpose2d), 3: (F.conv3d, F.conv_transpose3d)}


def _plan(geo: Any) -> dict[str, Any]:
    plan = getattr(geo, _PLAN, None)
    if plan is None:
        plan = _store(geo, _PLAN, lambda: _conv_plan(geo))
    return plan


def conv_weight(geo: Any, theta: torch.Tensor) -> torch.Tensor:
    """PyTorch's weight ``(cout, cin / groups, *stencil)`` of the stencils ``theta``: flipped on the spatial axes."""
    w = theta.reshape(geo.cout, -1, *geo.stencil)
    return w.flip(tuple(range(2, w.ndim)))


def conv_apply(geo: Any, weight: torch.Tensor, x: torch.Tensor, transpose: bool) -> torch.Tensor:
    r""":math:`K x = S\,C_W\,P_{bc}\,x` (or :math:`K^\top x = P_{bc}^\top C_W^\top S^\top x`), torch weights ``W``."""
    plan = _plan(geo)
    conv, conv_t = _CONV[geo.ndim]
    args = {"stride": geo.stride, "padding": plan["padding"], "dilation": plan["dilation"], "groups": plan["groups"]}
    if not transpose:
        if not plan["native"]:
            for a, runs in enumerate(plan["runs"]):
                x = _pad_axis(x, 2 + a, runs)
        return conv(x, weight, **args)
    y = conv_t(x, weight, output_padding=plan["output_padding"], **args)
    if not plan["native"]:
        for a, (runs, g) in enumerate(zip(plan["runs"], geo.grid)):
            y = _pad_axis_adjoint(y, 2 + a, runs, g)
    return y


def _conv(kernel: Conv, theta: torch.Tensor, x: torch.Tensor, transpose: bool) -> torch.Tensor:
    geo = kernel.geometry
    return conv_apply(geo, conv_weight(geo, theta), x, transpose)


def _antisymmetric_conv(kernel: AntisymmetricConv, theta: torch.Tensor, x: torch.Tensor, transpose: bool) -> Any:
    geo = kernel.geometry
    w = conv_weight(geo, theta)
    y = conv_apply(geo, w, x, False) - conv_apply(geo, w, x, True)
    return -y if transpose else y


# ----------------------------------------------------------------- CayleyConv
#: The eager CPU path of the Cayley product runs the batch in chunks whose half spectrum takes at
#: most this many bytes (counted in complex64) per thread of torch's pool: the chunk's transforms,
#: layout copies and products stay in the cores' L2 caches, and no large temporaries are made
#: (large ones cost page faults at every call). 768 KiB (14 images of 16 channels on 28×28) was
#: measured fastest on one thread among 256 KiB to 3 MiB, with glibc's default heap and with a
#: steady one; with two threads, twice that halves the parallel regions per call, which is what
#: costs when the cores are shared (see benchmarks/README.md).
CAYLEY_CHUNK_BYTES = 3 * 2**18


def _tap_phases(geo: Any) -> dict[str, torch.Tensor]:
    r"""The stencil taps' Fourier factors on the ``rfftn`` half spectrum, ``(T, F)`` real and imaginary parts.

    Float64, built once per kernel from :func:`structops.kernels.conv.cayley.tap_factors`, with
    the frequencies in the rows' order (:func:`_spectrum_rows`: the halved last axis first).
    """
    *rest, g = geo.grid
    factor = tap_factors(geo)
    factor = np.moveaxis(factor.reshape(-1, *rest, g // 2 + 1), -1, 1).reshape(factor.shape[0], -1)
    return {"re": torch.from_numpy(factor.real.copy()), "im": torch.from_numpy(factor.imag.copy())}


def _cayley_factors(theta: torch.Tensor, re: torch.Tensor, im: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The complex right factors :math:`\hat K^\top` and :math:`R = (I + \hat A^\top)^{-1}`, each ``(F, c, c)``.

    ``re``, ``im``: the taps' factors :func:`_tap_phases` ``(T, F)`` in ``theta``'s dtype.
    """
    c = math.isqrt(theta.shape[0] // re.shape[0])
    taps = theta.reshape(c, c, -1).permute(2, 0, 1)  # (T, c_out, c_in)
    eye = torch.eye(c, dtype=theta.dtype, device=theta.device)
    # I + B with B the transpose of S - S^*: sum_j re_j (Theta_j^T - Theta_j) + i im_j (Theta_j^T + Theta_j),
    # antisymmetrised on the taps (small) before the products with their factors
    minus, plus = (taps.mT - taps).reshape(-1, c * c), (taps.mT + taps).reshape(-1, c * c)
    system = torch.complex(torch.addmm(eye.reshape(1, -1), re.T, minus), im.T @ plus).reshape(-1, c, c)
    resolvent = torch.linalg.inv(system)
    return torch.add(-eye, resolvent, alpha=2), resolvent  # (I + B)^{-1}(I - B) = 2 (I + B)^{-1} - I


class _CayleyBlocks(torch.autograd.Function):
    r"""``theta`` to the complex right factors of :func:`_cayley_blocks`, with the backward in closed form.

    With :math:`B = \hat A^\top`, :math:`R = (I + B)^{-1}` and :math:`\hat K^\top = 2R - I`, the
    gradient :math:`\bar K` of the factors (torch's convention for complex tensors:
    :math:`\partial L/\partial \operatorname{Re} + i\,\partial L/\partial \operatorname{Im}`) gives
    :math:`\bar B = -2 R^H \bar K R^H`, and the gradient of tap :math:`j` is
    :math:`\sum_f \mathrm{re}_{jf} (\bar B_{re}^\top - \bar B_{re})_f + \mathrm{im}_{jf}
    (\bar B_{im}^\top + \bar B_{im})_f`, the sums over the frequencies (two real products with the
    taps' factors) taken before the transposes: two small products per frequency instead of
    autograd's second solve and complex bookkeeping. Made of torch operations (double backward
    recomputes :math:`R` from ``theta``). A plain eager float32 call with numba
    computes the forward on the numpy bridge's kernel (:func:`structops.torch._fused.cayley_factors`).
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(theta: torch.Tensor, re: torch.Tensor, im: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if theta.dtype == torch.float32 and have_numba() and _eager(theta, re, im) and not torch.jit.is_tracing():
            return _fused.cayley_factors(theta, re, im)
        return _cayley_factors(theta, re, im)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[torch.Tensor, ...], output: tuple[torch.Tensor, ...]) -> None:
        ctx.mark_non_differentiable(output[1])
        ctx.set_materialize_grads(False)  # no zeros for the unused second output (a 7 MB fill per step)
        ctx.save_for_backward(*inputs, output[1])

    @staticmethod
    def backward(ctx: Any, k_bar: torch.Tensor | None, _: Any) -> tuple[torch.Tensor | None, None, None]:
        if k_bar is None:
            return None, None, None
        theta, re, im, resolvent = ctx.saved_tensors
        if torch.is_grad_enabled():  # double backward: R as a function of theta
            resolvent = _cayley_factors(theta, re, im)[1]
        c = resolvent.shape[-1]
        rh = resolvent.mH
        parts = torch.view_as_real(rh @ k_bar @ rh).reshape(rh.shape[0], -1)  # B_bar / -2, (F, c c 2)
        b_re, b_im = (re @ parts).reshape(-1, c, c, 2)[..., 0], (im @ parts).reshape(-1, c, c, 2)[..., 1]
        taps = -2 * (b_re.mT - b_re + b_im.mT + b_im)  # (T, c_out, c_in): the sums over f before the transposes
        return taps.permute(1, 2, 0).reshape(theta.shape), None, None


def _cayley_blocks(theta: torch.Tensor, phases: dict[str, torch.Tensor]) -> torch.Tensor:
    r"""The unitary blocks :math:`\hat K(\xi) = (I + \hat A)^{-1}(I - \hat A)` as complex ``c × c`` right factors.

    The generator's spectrum :math:`\hat S(\xi) = \sum_j \theta_j\, e^{-2\pi i \xi \cdot o_j}` is
    two real ``(F, T) @ (T, c^2)`` products with the taps' factors (:func:`_tap_phases`), then
    one batched ``torch.linalg.inv`` over the half spectrum (``theta`` only, never the batch):
    :math:`(I + B)^{-1}(I - B) = 2(I + B)^{-1} - I`; the backward is :class:`_CayleyBlocks`'.
    Frequencies in the rows' order (:func:`_spectrum_rows`). Block ``M[f]`` ``(c, c)`` acts on rows: with the spectrum
    of an example at frequency ``f`` as a row of ``c`` complex numbers, ``row @ M[f]`` is
    :math:`\hat K(\xi)` applied to it, i.e. ``M[f]`` is
    :math:`\hat K^\top = (I + \hat A^\top)^{-1}(I - \hat A^\top)` (:math:`\hat A = \hat S - \hat S^*`),
    and ``M[f]^H`` is the right factor of :math:`\hat K(\xi)^*`, the block of :math:`K^\top`. The
    channels come from ``theta``'s length and the taps'.
    """
    return _CayleyBlocks.apply(theta, phases["re"], phases["im"])[0]


def _spectrum_rows(x: torch.Tensor, into: torch.Tensor | None = None) -> torch.Tensor:
    """The ``rfftn`` half spectrum of ``x`` ``(m, c, *grid)`` as complex rows ``(F, m, c)``, frequency-major.

    The frequencies run over the halved last axis first, then the others in C order (so that
    :func:`_fourier_product`'s inverse needs one layout copy fewer). One copy of the ``(m c, *half)``
    spectrum into that layout; ``into``: a contiguous complex tensor of ``F m c`` elements to write
    the rows to (else a new one).
    """
    m, c = x.shape[:2]
    spec = torch.fft.rfftn(x, dim=tuple(range(2, x.ndim)))
    last = spec.shape[-1]
    rows = spec.reshape(m * c, -1, last).permute(2, 1, 0)  # (last, rest, m c)
    rows = rows.contiguous() if into is None else into.view(rows.shape).copy_(rows)
    return rows.view(-1, m, c)


def _mixed_spectrum(
    rows: torch.Tensor, blocks: torch.Tensor, shape: torch.Size, into: torch.Tensor | None = None
) -> torch.Tensor:
    """The products ``rows[f] @ blocks[f]`` inverted over every axis but the halved one, ``(m, c, *rest, last)``.

    ``shape = (m, c, *grid)``. One 2-D transposing copy to ``(m, c, last, *rest)``, the complex
    inverse over the other axes (contiguous: no copy inside), then the halved axis moved last: a
    view, or copied into ``into`` (a contiguous ``(m, c, *rest, last)`` tensor).
    """
    m, c, *rest, g = shape
    prod = torch.bmm(rows, blocks)
    spec = prod.reshape(prod.shape[0], m * c).t().contiguous().view(m, c, g // 2 + 1, *rest)
    if rest:
        spec = torch.fft.ifftn(spec, dim=tuple(range(3, spec.ndim)))
    spec = spec.movedim(2, -1)
    return spec if into is None else into.copy_(spec)


def _fourier_product(rows: torch.Tensor, blocks: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """``irfftn`` of the per-frequency products ``rows[f] @ blocks[f]``, back on the grid ``shape = (m, c, *grid)``."""
    return torch.fft.irfft(_mixed_spectrum(rows, blocks, shape), n=shape[-1], dim=-1)


def _chunks(shape: torch.Size, count: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of the eager path's chunks: each one's half spectrum within ``CAYLEY_CHUNK_BYTES`` a thread."""
    n, c = shape[:2]
    step = max(1, min(n, CAYLEY_CHUNK_BYTES * torch.get_num_threads() // (8 * c * count)))
    return [(start, min(n, start + step)) for start in range(0, n, step)]


def _eager(*tensors: torch.Tensor) -> bool:
    """A plain eager CPU call, no gradient being recorded: no transform or compile, no tensor subclass.

    There the Cayley form runs the numba kernels (:mod:`structops.torch._fused`) or the chunked path.
    """
    if torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active() or torch.is_grad_enabled():
        return False
    return all(type(t) in (torch.Tensor, torch.nn.Parameter) and t.device.type == "cpu" for t in tensors)


def _rows_of(rows: torch.Tensor, start: int, stop: int, shape: torch.Size) -> torch.Tensor:
    """Examples ``start:stop`` of the flat chunk-major rows (:class:`_CayleyProduct`), ``(F, stop - start, c)``."""
    c, f = shape[1], rows.shape[0] // (shape[0] * shape[1])
    return rows[start * f * c : stop * f * c].view(f, stop - start, c)


def _real_rows(rows: torch.Tensor) -> torch.Tensor:
    """Complex rows ``(F, m, c)`` read as real rows ``(F, m, 2c)``, ``(re, im)`` interleaved per channel (a view)."""
    f, m, c = rows.shape
    return torch.view_as_real(rows).reshape(f, m, 2 * c)


def _blocks_gradient(gram: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    r"""The blocks' gradient :math:`\bar M(\xi) = (w_\xi/N)\, X(\xi)^H G(\xi)` from the real Gram ``(F, 2c, 2c)``.

    ``X^H G`` is :math:`(P_{00} + P_{11}) + i(P_{01} - P_{10})` of the real Gram's ``(re, im)``
    parts; :math:`w_\xi` and :math:`N` as in :class:`_CayleyProduct`.
    """
    *grid, g = shape[2:]
    c = shape[1]
    p = gram.reshape(-1, c, 2, c, 2)
    k_bar = torch.complex(p[:, :, 0, :, 0] + p[:, :, 1, :, 1], p[:, :, 0, :, 1] - p[:, :, 1, :, 0])
    k = torch.arange(g // 2 + 1, device=gram.device)  # the torch twin of parseval_weights (any device)
    weight = torch.where((k == 0) | (2 * k == g), 1.0, 2.0).to(gram.dtype) / (math.prod(grid) * g)
    return (k_bar.reshape(g // 2 + 1, -1, c, c) * weight[:, None, None, None]).reshape(-1, c, c)


def _chunked_product(x: torch.Tensor, blocks: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
    """:func:`_fourier_product` of :func:`_spectrum_rows` by chunks (the rows into ``rows``).

    Each chunk's :func:`_mixed_spectrum` is copied into one ``(n, c, *rest, last)`` spectrum, whose
    real inverse over the halved axis is one ``irfft`` for the batch, straight into the output.
    """
    half = torch.empty(*x.shape[:-1], x.shape[-1] // 2 + 1, dtype=blocks.dtype)
    for start, stop in _chunks(x.shape, blocks.shape[0]):
        part = x[start:stop]
        into = None if rows is None else _rows_of(rows, start, stop, x.shape)
        _mixed_spectrum(_spectrum_rows(part, into), blocks, part.shape, half[start:stop])
    return torch.fft.irfft(half, n=x.shape[-1], dim=-1)


def _chunked_backward(
    grad: torch.Tensor, blocks: torch.Tensor, rows_x: torch.Tensor, needs: tuple[bool, bool]
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    r"""The eager backward of :class:`_CayleyProduct` by the forward's chunks: :math:`\bar x` and the real Gram.

    The Gram ``(F, 2c, 2c)`` is :func:`_real_rows` of ``x``'s rows transposed times those of ``grad``'s,
    summed over the chunks (:func:`_blocks_gradient` turns it into the blocks' gradient).
    """
    half = torch.empty(*grad.shape[:-1], grad.shape[-1] // 2 + 1, dtype=blocks.dtype) if needs[0] else None
    f, c = blocks.shape[:2]
    gram = torch.zeros(f, 2 * c, 2 * c, dtype=grad.dtype) if needs[1] else None
    adjoint = blocks.mH.resolve_conj()
    for start, stop in _chunks(grad.shape, f):
        part = grad[start:stop]
        rows = _spectrum_rows(part)
        if half is not None:
            _mixed_spectrum(rows, adjoint, part.shape, half[start:stop])
        if gram is not None:
            gram.baddbmm_(_real_rows(_rows_of(rows_x, start, stop, grad.shape)).mT, _real_rows(rows))
    return None if half is None else torch.fft.irfft(half, n=grad.shape[-1], dim=-1), gram


class _CayleyProduct(torch.autograd.Function):
    r""":math:`y = \mathrm{irfftn}(\mathrm{rfftn}(x)\,M)` per frequency; the backward uses the real DFTs' adjoints.

    torch's derivative of ``rfftn`` is a full complex FFT; here the adjoints are the real
    transforms themselves. With :math:`N = \prod` grid and :math:`w_k` the weights of
    ``irfftn`` on the last axis (1 at :math:`k = 0` and :math:`k = g/2`, else 2), the
    real-linear adjoints are :math:`\mathrm{irfftn}^\top = (w/N)\,\mathrm{rfftn}` and
    :math:`\mathrm{rfftn}^\top = N\,\mathrm{irfftn}\,w^{-1}`, so that with
    :math:`G = \mathrm{rfftn}(\bar y)` (per frequency, a row for each example)

    .. math:: \bar x = \mathrm{irfftn}(G\,M^H), \qquad
              \bar M(\xi) = \frac{w(\xi)}{N}\, X(\xi)^H G(\xi)

    (torch's convention for the gradient of a complex tensor), the weights cancel in
    :math:`\bar x` (they are scalars per frequency). The backward is made of torch operations,
    so it is differentiable again (double backward). The forward also returns the spectrum rows
    of ``x`` (flat, not differentiable), kept for :math:`\bar M`; a double backward recomputes
    them from ``x``. (No flag says whether a backward will follow: ``torch.jit.trace`` records
    such a flag as a constant that differs between its trace and its check.)

    Per pass (forward, or the backward's :math:`\bar x`): ``rfftn``, one copy of its ``(m c, *half)``
    spectrum to the frequency-major rows (:func:`_spectrum_rows`), one batched complex product,
    one 2-D transposing copy back, the complex inverse over all axes but the halved one, and the
    real inverse over that one (:func:`_mixed_spectrum`, :func:`_fourier_product`).

    A plain eager call on CPU tensors runs on the numba kernels when numba is the accelerator
    (:func:`structops.torch._fused.forward`, :func:`~structops.torch._fused.backward`: the rows
    are then real, in the kernels' layout, which is how the backward tells the paths apart), else
    the batch in chunks (:func:`_chunked_product`,
    :func:`_chunked_backward`, :data:`CAYLEY_CHUNK_BYTES`): the same operations on cache-sized
    pieces up to the last inverse, which runs once on the batch's half spectrum. Besides the
    output, the kept rows (stored chunk-major: each chunk's rows ``(F, m, c)`` contiguous,
    :func:`_rows_of`) and that half spectrum, no large temporaries are made.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x: torch.Tensor, blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if _eager(x, blocks) and _fused.fusable(x):
            return _fused.forward(x, blocks)
        if _eager(x, blocks):
            rows = torch.empty(x.shape[0] * x.shape[1] * blocks.shape[0], dtype=blocks.dtype)
            return _chunked_product(x, blocks, rows), rows
        rows = _spectrum_rows(x)
        return _fourier_product(rows, blocks, x.shape), rows.reshape(-1)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[torch.Tensor, torch.Tensor], output: tuple[torch.Tensor, ...]) -> None:
        ctx.mark_non_differentiable(output[1])
        ctx.set_materialize_grads(False)  # no zeros for the unused second output (a 7 MB fill per step)
        ctx.save_for_backward(*inputs, output[1])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor | None, _: Any) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if grad is None:
            return None, None
        x, blocks, rows_x = ctx.saved_tensors
        need_x, need_m = ctx.needs_input_grad[:2]
        fused = not rows_x.is_complex()  # the forward ran on the numba kernels (their real rows)
        if fused and _eager(x, blocks, grad, rows_x) and _fused.fusable(x):
            return _fused.backward(grad, blocks, rows_x, (need_x, need_m))
        if not fused and _eager(x, blocks, grad, rows_x):
            gx, gram = _chunked_backward(grad, blocks, rows_x, (need_x, need_m))
        else:
            # the spectrum of x again: as a function of x (double backward), or in this layout (the
            # forward ran on the numba kernels, the backward cannot: numba switched off, or traced)
            if torch.is_grad_enabled() or fused:
                rows_x = _spectrum_rows(x).reshape(-1)
            rows = _spectrum_rows(grad)
            gx = _fourier_product(rows, blocks.mH, x.shape) if need_x else None
            gram = torch.bmm(_real_rows(rows_x.view(rows.shape)).mT, _real_rows(rows)) if need_m else None
        gm = None if gram is None else _blocks_gradient(gram, x.shape)
        return gx if need_x else None, gm


def _cayley(kernel: CayleyConv, theta: torch.Tensor, x: torch.Tensor, transpose: bool) -> torch.Tensor:
    r""":math:`K x`: ``rfftn`` of the batch, one complex ``(F, n, c) @ (F, c, c)`` product, ``irfftn``.

    The blocks come from :func:`_cayley_blocks` (a closed-form backward in ``theta``,
    :class:`_CayleyBlocks`), the batch path from :class:`_CayleyProduct` (real DFT adjoints in the
    backward). Half precision is computed in float32 (torch's CPU FFT has no half) and cast back.
    """
    work = torch.promote_types(torch.promote_types(theta.dtype, x.dtype), torch.float32)
    phases = {part: t.to(work) for part, t in _constants(kernel, lambda: _tap_phases(kernel.geometry), x).items()}
    blocks = _cayley_blocks(theta.to(work), phases)
    if transpose:
        blocks = blocks.mH  # the right factor of the conjugate transpose
    if x.shape[0] == 0:  # MKL's FFT refuses an empty batch; the result is empty, still a function of theta
        return (x.to(work) * blocks.real.sum()).to(x.dtype)
    return _CayleyProduct.apply(x.to(work), blocks)[0].to(x.dtype)


# ------------------------------------------------------------- pattern families
def _pattern_constants(kernel: PatternKernel) -> dict[str, Any]:
    """The pattern of ``Q`` (rows and columns of ``K``), ``Q`` restricted to it and ``q`` on it."""
    m, N = kernel.shape
    Q = sp.csr_array(kernel.Q)
    lin = np.flatnonzero(np.diff(Q.indptr))
    q = kernel.q
    if q is not None:
        lin = np.union1d(lin, np.flatnonzero(q))
    table: dict[str, Any] = {f"Q_{k}": v for k, v in _coo(Q[lin]).items()}
    table["k0"] = torch.from_numpy(np.zeros(lin.size) if q is None else np.asarray(q, dtype=np.float64)[lin])
    rows, cols = lin % m, lin // m
    table["row"], table["col"] = torch.from_numpy(rows.astype(np.int64)), torch.from_numpy(cols.astype(np.int64))
    table["flat"] = torch.from_numpy((rows * N + cols).astype(np.int64))
    table["dense"] = bool(m * N <= DENSE_ENTRIES or lin.size > 0.1 * m * N)
    return table


def _pattern(kernel: PatternKernel, theta: torch.Tensor, x: torch.Tensor, transpose: bool) -> torch.Tensor:
    c = _constants(kernel, lambda: _pattern_constants(kernel), x)
    m, N = kernel.shape
    Q = {k[2:]: v for k, v in c.items() if k.startswith("Q_")}
    values = _sparse_vec(Q, c["row"].shape[0], theta) + c["k0"].to(theta.dtype)
    if c["dense"]:
        K = theta.new_zeros(m * N).index_add(0, c["flat"], values).reshape(m, N)
        return x @ K if transpose else x @ K.T
    rows, cols = (c["col"], c["row"]) if transpose else (c["row"], c["col"])
    return x.new_zeros((x.shape[0], N if transpose else m)).index_add(1, rows, x[:, cols] * values)


def _diagonal(kernel: Any, theta: torch.Tensor, x: torch.Tensor, transpose: bool) -> torch.Tensor:
    return x * theta


# --------------------------------------------------------------------- Wavelet
def _wavelet(kernel: Wavelet, theta: torch.Tensor, x: torch.Tensor, transpose: bool) -> torch.Tensor:
    def build() -> dict[str, torch.Tensor]:
        table = _coo(kernel._sparse_W())
        counts = [b.stop - b.start for b in kernel.subbands]
        index = np.repeat(np.arange(len(counts)), counts) if kernel.per == "subband" else np.arange(kernel.nparams)
        table["index"] = torch.from_numpy(index.astype(np.int64))
        return table

    c = _constants(kernel, build, x)
    N = kernel.shape[0]
    flat = x.reshape(x.shape[0], N)
    coeffs = _sparse_rows(c, N, flat) * theta[c["index"]]
    return _sparse_rows(_transposed(c), N, coeffs).reshape(x.shape)


# ------------------------------------------------------------- compositions
def _reparametrized(kernel: Reparametrized, phi: torch.Tensor, x: torch.Tensor, transpose: bool) -> torch.Tensor:
    return torch_apply(kernel.kernel, _lookup(_MAPS, kernel)(kernel, phi), x, transpose)


def _softplus(kernel: Softplus, phi: torch.Tensor) -> torch.Tensor:
    return torch.logaddexp(torch.zeros_like(phi), phi)


def _linear_map(kernel: LinearReparam, phi: torch.Tensor) -> torch.Tensor:
    c = _constants(kernel, lambda: _coo(kernel.P), phi)
    return _sparse_vec(c, kernel.P.shape[0], phi)


_AXES = "ijk"


def _separable_map(kernel: SeparableConv, phi: torch.Tensor) -> torch.Tensor:
    blocks = phi.reshape(kernel.theta_shape)
    sizes = list(kernel.stencil)
    factors = torch.split(blocks, sizes, dim=-1)
    d = len(sizes)
    spec = ",".join(f"ocr{_AXES[a]}" for a in range(d)) + "->oc" + _AXES[:d]
    return torch.einsum(spec, *factors).reshape(-1)


def _depthwise_separable_map(kernel: DepthwiseSeparableConv, phi: torch.Tensor) -> torch.Tensor:
    C, M, O = kernel.in_channels, kernel.multiplier, kernel.out_channels
    ndepth = C * M * math.prod(kernel.stencil)
    D, P = phi[:ndepth].reshape(C, M, -1), phi[ndepth:].reshape(O, C, M)
    return torch.einsum("ocm,cms->ocs", P, D).reshape(-1)


def _avg_pool(pool: AvgPool, y: torch.Tensor, transpose: bool) -> torch.Tensor:
    nd = len(pool.grid)
    if not transpose:
        return getattr(F, f"avg_pool{nd}d")(y, pool.window, pool.window)
    n, ch = y.shape[0], pool.channels
    split = [ch, *(s for go, w in zip(pool.grid_out, pool.window) for s in (go, w))]
    spread = [ch, *(s for go in pool.grid_out for s in (go, 1))]
    kept = tuple(go * w for go, w in zip(pool.grid_out, pool.window))
    z = (y.reshape(n, *spread).expand(n, *split) / math.prod(pool.window)).reshape(n, ch, *kept)
    widths = [v for g, k in zip(reversed(pool.grid), reversed(kept)) for v in (0, g - k)]
    return F.pad(z, widths) if any(widths) else z


def _outer_form(outer: Any) -> Callable[[Any, torch.Tensor, bool], torch.Tensor] | None:
    """How the outer map of a :class:`~structops.Chain` acts on torch rows: ``AvgPool``, or a sparse form."""
    if isinstance(outer, AvgPool):
        return _avg_pool
    if hasattr(outer, "tosparse"):
        return _sparse_outer
    return None


def _sparse_outer(outer: Any, y: torch.Tensor, transpose: bool) -> torch.Tensor:
    c = _constants(outer, lambda: _coo(outer.tosparse()), y)
    sizes = (math.prod(outer.in_shape), math.prod(outer.out_shape))
    rows = y.reshape(y.shape[0], sizes[1 if transpose else 0])
    return _sparse_rows(_transposed(c) if transpose else c, sizes[0 if transpose else 1], rows)


def _chain(kernel: Chain, theta: torch.Tensor, x: torch.Tensor, transpose: bool) -> torch.Tensor:
    outer = _outer_form(kernel.outer)
    assert outer is not None
    inner = kernel.kernel
    if transpose:
        y = outer(kernel.outer, x.reshape(x.shape[0], *kernel.outer.out_shape), True)
        return torch_apply(inner, theta, y.reshape(x.shape[0], *inner.out_shape), True)
    y = torch_apply(inner, theta, x, False).reshape(x.shape[0], *kernel.outer.in_shape)
    return outer(kernel.outer, y, False).reshape(x.shape[0], *kernel.out_shape)


register_torch_form(Conv, _conv)
register_torch_form(AntisymmetricConv, _antisymmetric_conv)
register_torch_form(CayleyConv, _cayley)
register_torch_form(PatternKernel, _pattern)
register_torch_form(Diagonal, _diagonal)
register_torch_form(Wavelet, _wavelet)
register_torch_map(Softplus, _softplus)
register_torch_map(LinearReparam, _linear_map)
register_torch_map(SeparableConv, _separable_map)
register_torch_map(DepthwiseSeparableConv, _depthwise_separable_map)
