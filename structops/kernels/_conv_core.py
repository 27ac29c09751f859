r"""Batched multi-channel convolution kernels shared by :class:`structops.Conv`.

Every boundary condition is written as a *valid* convolution on a padded grid,

.. math::
    K(\theta) = S \, C_\theta \, P_{bc},

with :math:`P_{bc}` the padding (zero, periodic, reflect, replicate or none), :math:`C_\theta`
the valid multi-channel convolution :math:`z_{o,i} = \sum_{c,j} \theta_{o,c,j}\, x^p_{c,\,i+s-1-j}`
and :math:`S` the stride sampling. The adjoint is :math:`P_{bc}^\top C_\theta^\top S^\top`
(correlation, then folding the padding back), and the Jacobian with respect to
:math:`\theta` is the correlation of the output-space cotangent with the padded input.

Arrays are laid out ``(n, channels, *grid)``. Two algorithms: direct stencil sums (a loop
over the ``prod(stencil)`` offsets, each a GEMM over channels for all examples at once)
and FFTs (circular convolution of the padded grid, exact because only the valid part is
kept).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import scipy.fft as sfft

BOUNDARY_CONDITIONS = ("zero", "periodic", "reflect", "replicate", "valid")
_NP_PAD_MODE = {"periodic": "wrap", "reflect": "reflect", "replicate": "edge"}


def source_index(bc: str, g: int, left: int, right: int) -> np.ndarray:
    """Grid index feeding each padded position on one axis (``-1`` for a zero)."""
    p = np.arange(g + left + right) - left
    if bc in ("zero", "valid"):
        return np.where((p >= 0) & (p < g), p, -1)
    if bc == "periodic":
        return np.mod(p, g)
    if bc == "replicate":
        return np.clip(p, 0, g - 1)
    period = 2 * (g - 1)  # reflect, without repeating the edge sample (numpy/PyTorch)
    q = np.mod(p, period) if period else np.zeros_like(p)
    return np.where(q < g, q, period - q)


@dataclass(frozen=True)
class ConvGeometry:
    """Static description of a convolution: sizes, padding, stride and index maps."""

    grid: tuple[int, ...]
    stencil: tuple[int, ...]
    stride: tuple[int, ...]
    bc: str
    cin: int
    cout: int

    @property
    def ndim(self) -> int:
        return len(self.grid)

    @property
    def pads(self) -> tuple[tuple[int, int], ...]:
        """(left, right) padding per axis: ``s - 1 - s//2`` and ``s//2`` (none for ``valid``)."""
        if self.bc == "valid":
            return tuple((0, 0) for _ in self.grid)
        return tuple((s - 1 - s // 2, s // 2) for s in self.stencil)

    @property
    def padded(self) -> tuple[int, ...]:
        return tuple(g + lft + rgt for g, (lft, rgt) in zip(self.grid, self.pads))

    @property
    def out_grid(self) -> tuple[int, ...]:
        return tuple((gp - s) // st + 1 for gp, s, st in zip(self.padded, self.stencil, self.stride))

    @property
    def maps(self) -> tuple[np.ndarray, ...]:
        return tuple(source_index(self.bc, g, lft, rgt) for g, (lft, rgt) in zip(self.grid, self.pads))

    def window(self, j: tuple[int, ...]) -> tuple[slice, ...]:
        """Slice of the padded grid read by stencil offset ``j`` for all (strided) outputs."""
        return tuple(
            slice(s - 1 - ja, s - 1 - ja + st * (m - 1) + 1, st)
            for s, ja, st, m in zip(self.stencil, j, self.stride, self.out_grid)
        )

    def offsets(self):
        return itertools.product(*(range(s) for s in self.stencil))


# --------------------------------------------------------------------------- padding
def pad(x: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """``P_bc x`` for ``x`` of shape ``(n, c, *grid)``."""
    if all(lft == 0 and rgt == 0 for lft, rgt in geo.pads):
        return x
    widths = ((0, 0), (0, 0), *geo.pads)
    if geo.bc == "zero":
        xp = np.zeros(x.shape[:2] + geo.padded, dtype=x.dtype)
        xp[(slice(None), slice(None), *(slice(lft, lft + g) for g, (lft, _) in zip(geo.grid, geo.pads)))] = x
        return xp
    return np.pad(x, widths, mode=_NP_PAD_MODE[geo.bc])


def pad_adjoint(xp: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """``P_bc^T xp``: fold the padded margins back onto the grid they were copied from."""
    out = xp
    for axis, (g, (lft, rgt), idx) in enumerate(zip(geo.grid, geo.pads, geo.maps)):
        if lft == 0 and rgt == 0:
            continue
        ax = axis + 2
        core = [slice(None)] * out.ndim
        core[ax] = slice(lft, lft + g)
        folded = out[tuple(core)].copy()
        if geo.bc != "zero":
            for k in itertools.chain(range(lft), range(lft + g, lft + g + rgt)):
                src, dst = [slice(None)] * out.ndim, [slice(None)] * out.ndim
                src[ax], dst[ax] = k, int(idx[k])
                folded[tuple(dst)] += out[tuple(src)]
        out = folded
    return out


# ----------------------------------------------------------------------- direct sums
def _mix(theta_j: np.ndarray, block: np.ndarray) -> np.ndarray:
    """``sum_c theta_j[o, c] block[n, c, ...]`` -> ``(n, o, ...)`` as one GEMM over channels."""
    if theta_j.shape == (1, 1):
        return theta_j[0, 0] * block
    n, c = block.shape[:2]
    rest = block.shape[2:]
    flat = np.ascontiguousarray(block).reshape(n, c, -1)
    return np.matmul(theta_j, flat).reshape((n, theta_j.shape[0], *rest))


def direct_forward(theta: np.ndarray, xp: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """Valid strided convolution of the padded batch ``xp`` by direct stencil sums."""
    z = np.zeros((xp.shape[0], geo.cout, *geo.out_grid), dtype=np.result_type(theta, xp))
    lead = (slice(None), slice(None))
    for j in geo.offsets():
        z += _mix(theta[(slice(None), slice(None), *j)], xp[lead + geo.window(j)])
    return z


def direct_adjoint(theta: np.ndarray, y: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """``C_theta^T y`` on the padded grid (correlation), by direct stencil sums."""
    xp = np.zeros((y.shape[0], geo.cin, *geo.padded), dtype=np.result_type(theta, y))
    lead = (slice(None), slice(None))
    for j in geo.offsets():
        xp[lead + geo.window(j)] += _mix(theta[(slice(None), slice(None), *j)].T, y)
    return xp


def direct_gradient(xp: np.ndarray, w: np.ndarray, geo: ConvGeometry, per_example: bool) -> np.ndarray:
    """``d<w, C_theta xp>/d theta``: shape ``(cout, cin, *stencil)`` or ``(n, cout, cin, *stencil)``."""
    n = xp.shape[0]
    lead = (slice(None), slice(None))
    wf = w.reshape(n, geo.cout, -1)
    shape = ((n,) if per_example else ()) + (geo.cout, geo.cin, *geo.stencil)
    g = np.empty(shape, dtype=np.result_type(xp, w))
    for j in geo.offsets():
        win = np.ascontiguousarray(xp[lead + geo.window(j)]).reshape(n, geo.cin, -1)
        if per_example:
            g[(slice(None), slice(None), slice(None), *j)] = np.matmul(wf, win.transpose(0, 2, 1))
        else:
            # contract examples and grid at once: (cout, n*M) @ (n*M, cin)
            g[(slice(None), slice(None), *j)] = np.tensordot(wf, win, axes=([0, 2], [0, 2]))
    return g


# ------------------------------------------------------------------------------ FFT
def fft_shape(geo: ConvGeometry) -> tuple[int, ...]:
    """Transform size: the grid itself for periodic, else a fast length >= the padded grid."""
    if geo.bc == "periodic":
        return geo.grid
    return tuple(sfft.next_fast_len(gp, real=True) for gp in geo.padded)


def first_columns(theta: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    r"""Periodic first columns :math:`K^{oc}(\theta)u_1`, shape ``(cout, cin, *grid)``.

    Stencil entry ``j`` lands at ``(j - s//2) mod g`` (summed when the stencil wraps).
    """
    cols = np.zeros((geo.cout, geo.cin, *geo.grid), dtype=theta.dtype)
    idx = np.ix_(*(np.mod(np.arange(s) - s // 2, g) for s, g in zip(geo.stencil, geo.grid)))
    if all(s <= g for s, g in zip(geo.stencil, geo.grid)):
        cols[(slice(None), slice(None), *idx)] = theta
    else:
        np.add.at(cols, (slice(None), slice(None), *idx), theta)
    return cols


def spectrum(theta: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """Half-spectrum of the stencil on the FFT grid, shape ``(cout, cin, *half)`` (complex)."""
    L = fft_shape(geo)
    axes = tuple(range(2, 2 + geo.ndim))
    if geo.bc == "periodic":
        return sfft.rfftn(first_columns(theta, geo), s=L, axes=axes)
    return sfft.rfftn(theta, s=L, axes=axes)


def _contract(spec: np.ndarray, data: np.ndarray, conj: bool) -> np.ndarray:
    """Per-frequency block product: ``spec[o, c, f] data[n, c, f]`` (or its adjoint)."""
    if conj:
        return np.einsum("ocf,nof->ncf", spec.conj(), data)
    return np.einsum("ocf,ncf->nof", spec, data)


def _outputs(geo: ConvGeometry) -> tuple[slice, ...]:
    """Where the strided valid outputs sit on the FFT grid."""
    if geo.bc == "periodic":
        # circular convolution on the grid gives the 'same' output directly
        return tuple(slice(0, st * (m - 1) + 1, st) for st, m in zip(geo.stride, geo.out_grid))
    return tuple(slice(s - 1, s - 1 + st * (m - 1) + 1, st) for s, st, m in zip(geo.stencil, geo.stride, geo.out_grid))


def fft_forward(spec: np.ndarray, x: np.ndarray, geo: ConvGeometry, workers: int = -1) -> np.ndarray:
    """``S C_theta P x`` through the FFT (``x`` unpadded for periodic, padded otherwise)."""
    L = fft_shape(geo)
    axes = tuple(range(2, 2 + geo.ndim))
    n = x.shape[0]
    xf = sfft.rfftn(x, s=L, axes=axes, workers=workers)
    half = xf.shape[2:]
    zf = _contract(spec.reshape(geo.cout, geo.cin, -1), xf.reshape(n, geo.cin, -1), conj=False)
    z = sfft.irfftn(zf.reshape(n, geo.cout, *half), s=L, axes=axes, workers=workers)
    return np.ascontiguousarray(z[(slice(None), slice(None), *_outputs(geo))])


def _upsample(y: np.ndarray, geo: ConvGeometry, channels: int) -> np.ndarray:
    L = fft_shape(geo)
    up = np.zeros((y.shape[0], channels, *L), dtype=y.dtype)
    up[(slice(None), slice(None), *_outputs(geo))] = y
    return up


def fft_adjoint(spec: np.ndarray, y: np.ndarray, geo: ConvGeometry, workers: int = -1) -> np.ndarray:
    """``C_theta^T S^T y`` through the FFT, on the padded grid (the grid for periodic)."""
    L = fft_shape(geo)
    axes = tuple(range(2, 2 + geo.ndim))
    n = y.shape[0]
    yf = sfft.rfftn(_upsample(y, geo, geo.cout), axes=axes, workers=workers)
    half = yf.shape[2:]
    xf = _contract(spec.reshape(geo.cout, geo.cin, -1), yf.reshape(n, geo.cout, -1), conj=True)
    xp = sfft.irfftn(xf.reshape(n, geo.cin, *half), s=L, axes=axes, workers=workers)
    size = geo.grid if geo.bc == "periodic" else geo.padded
    return np.ascontiguousarray(xp[(slice(None), slice(None), *(slice(0, g) for g in size))])


def fft_gradient(x: np.ndarray, w: np.ndarray, geo: ConvGeometry, per_example: bool, workers: int = -1) -> np.ndarray:
    """``d<w, S C_theta P x>/d theta`` through the FFT (cross-correlation of ``w`` and ``x``)."""
    L = fft_shape(geo)
    axes = tuple(range(2, 2 + geo.ndim))
    n = x.shape[0]
    xf = sfft.rfftn(x, s=L, axes=axes, workers=workers).reshape(n, geo.cin, -1)
    wf = sfft.rfftn(_upsample(w, geo, geo.cout), axes=axes, workers=workers).reshape(n, geo.cout, -1)
    half = tuple(L[:-1]) + (L[-1] // 2 + 1,)
    if per_example:
        gf = np.einsum("nof,ncf->nocf", wf, xf.conj()).reshape(n * geo.cout * geo.cin, *half)
    else:
        gf = np.einsum("nof,ncf->ocf", wf, xf.conj()).reshape(geo.cout * geo.cin, *half)
    corr = sfft.irfftn(gf, s=L, axes=tuple(range(1, 1 + geo.ndim)), workers=workers)
    if geo.bc == "periodic":
        idx = np.ix_(*(np.mod(np.arange(s) - s // 2, g) for s, g in zip(geo.stencil, geo.grid)))
    else:
        idx = np.ix_(*(np.arange(s) for s in geo.stencil))
    g = corr[(slice(None), *idx)]
    lead = (n,) if per_example else ()
    return np.ascontiguousarray(g).reshape((*lead, geo.cout, geo.cin, *geo.stencil)).astype(x.dtype, copy=False)
