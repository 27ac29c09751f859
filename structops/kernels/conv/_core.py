r"""Batched multi-channel convolution kernels shared by :class:`structops.Conv`.

Every boundary condition is written as a *valid* convolution on a padded grid,

.. math::
    K(\theta) = S \, C_\theta \, P_{bc},

with :math:`P_{bc}` the padding (zero, periodic, reflect, symmetric, replicate or none), :math:`C_\theta`
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

import functools
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.fft as sfft

from ..._backend import kernel_threads
from ..._validation import check_int_tuple, check_positive_int

try:  # optional accelerator: ``pip install structops[fast]``; switched by structops._backend
    from . import _numba as _nb
except ImportError:  # pragma: no cover - exercised when numba is absent
    _nb = None  # type: ignore[assignment]

BOUNDARY_CONDITIONS = ("zero", "periodic", "reflect", "symmetric", "replicate", "valid")
_NP_PAD_MODE = {"periodic": "wrap", "reflect": "reflect", "symmetric": "symmetric", "replicate": "edge"}


def _lead(n: int, rest) -> tuple[Any, ...]:
    """The index ``(:, ..., :, *rest)`` with ``n`` leading full slices (Python 3.10 syntax)."""
    return (slice(None),) * n + tuple(rest)


def source_index(bc: str, g: int, left: int, right: int) -> np.ndarray:
    """Grid index feeding each padded position on one axis (``-1`` for a zero)."""
    p = np.arange(g + left + right) - left
    if bc in ("zero", "valid"):
        return np.where((p >= 0) & (p < g), p, -1)
    if bc == "periodic":
        return np.mod(p, g)
    if bc == "replicate":
        return np.clip(p, 0, g - 1)
    if bc == "symmetric":  # half-sample mirror, repeating the edge sample (numpy's "symmetric")
        q = np.mod(p, 2 * g)
        return np.where(q < g, q, 2 * g - 1 - q)
    period = 2 * (g - 1)  # reflect, without repeating the edge sample (numpy/PyTorch)
    q = np.mod(p, period) if period else np.zeros_like(p)
    return np.where(q < g, q, period - q)


def check_geometry(grid, stencil) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``grid`` (1, 2 or 3 axes; an int is a 1-D grid) and ``stencil`` (one size per axis) as validated tuples.

    Raises
    ------
    ValueError, TypeError
        Naming ``grid`` or ``stencil``, as every convolution family reports them.
    """
    grid = check_int_tuple(grid if not isinstance(grid, (int, np.integer)) else (grid,), "grid")
    if not 1 <= len(grid) <= 3:
        raise ValueError(f"`grid` must have 1, 2 or 3 axes, got {grid!r}.")
    return grid, check_int_tuple(stencil, "stencil", ndim=len(grid))


def _check_stencil_fits(grid: tuple[int, ...], stencil: tuple[int, ...], bc: str) -> None:
    """Raise ``ValueError`` where ``bc`` cannot pad ``grid`` for ``stencil``."""
    for axis, (g, s) in enumerate(zip(grid, stencil)):
        if bc == "valid" and s > g:
            raise ValueError(
                f"`stencil` {stencil!r} is larger than `grid` {grid!r} on axis {axis}: "
                "bc='valid' needs stencil <= grid."
            )
        if bc == "reflect" and max(s - 1 - s // 2, s // 2) > g - 1:
            raise ValueError(
                f"`stencil` {stencil!r} is too large for bc='reflect' on `grid` {grid!r} (axis {axis}): "
                "reflect padding needs stencil // 2 <= grid - 1."
            )
        if bc == "symmetric" and max(s - 1 - s // 2, s // 2) > g:
            raise ValueError(
                f"`stencil` {stencil!r} is too large for bc='symmetric' on `grid` {grid!r} (axis {axis}): "
                "symmetric padding needs stencil // 2 <= grid."
            )


@dataclass(frozen=True, init=False)
class ConvGeometry:
    """The geometry of a convolution, validated once: sizes, boundary, channels, stride; its padding and index maps.

    Every convolution family (:class:`~structops.Conv` and the families built on it) builds
    one from its constructor's arguments, or takes one (:meth:`structops.Conv.from_geometry`).

    Parameters
    ----------
    grid : int or sequence of int
        Shape of one image (1, 2 or 3 axes; an int is a 1-D grid).
    stencil : int or sequence of int
        Stencil shape, one size per axis (an int: the same on every axis).
    stride : int or sequence of int
        Output sampling step per axis.
    bc : str
        One of ``BOUNDARY_CONDITIONS``.
    cin, cout : int
        Input and output channels (the families' ``in_channels`` and ``out_channels``).

    Raises
    ------
    ValueError, TypeError
        Naming the argument (``grid``, ``stencil``, ``stride``, ``bc``, ``in_channels``,
        ``out_channels``): a wrong number of axes, a size below 1, an unknown ``bc``, a
        non-integer, or a stencil larger than the grid where ``bc`` cannot pad it
        (``"valid"``: stencil ``<=`` grid; ``"reflect"``: ``stencil // 2 <= grid - 1``;
        ``"symmetric"``: ``stencil // 2 <= grid``).

    Examples
    --------
    >>> geo = ConvGeometry((8, 8), 3, stride=2, cout=4)
    >>> geo.stencil, geo.stride, geo.out_grid
    ((3, 3), (2, 2), (4, 4))
    """

    grid: tuple[int, ...]
    stencil: tuple[int, ...]
    stride: tuple[int, ...]
    bc: str
    cin: int
    cout: int

    def __init__(
        self,
        grid: int | Sequence[int],
        stencil: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        bc: str = "zero",
        cin: int = 1,
        cout: int = 1,
    ) -> None:
        grid, stencil = check_geometry(grid, stencil)
        stride = check_int_tuple(stride, "stride", ndim=len(grid))
        if bc not in BOUNDARY_CONDITIONS:
            raise ValueError(f"`bc` must be one of {BOUNDARY_CONDITIONS!r}, got {bc!r}.")
        cin = check_positive_int(cin, "in_channels")
        cout = check_positive_int(cout, "out_channels")
        _check_stencil_fits(grid, stencil, bc)
        fields = {"grid": grid, "stencil": stencil, "stride": stride, "bc": bc, "cin": cin, "cout": cout}
        for name, value in fields.items():  # frozen: set once, here
            object.__setattr__(self, name, value)

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
        xp[_lead(2, (slice(lft, lft + g) for g, (lft, _) in zip(geo.grid, geo.pads)))] = x
        return xp
    return np.pad(x, widths, mode=_NP_PAD_MODE[geo.bc])  # type: ignore[call-overload]


def pad_adjoint(xp: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """``P_bc^T xp``: fold the padded margins back onto the grid they were copied from."""
    out = xp
    for axis, (g, (lft, rgt), idx) in enumerate(zip(geo.grid, geo.pads, geo.maps)):
        if lft == 0 and rgt == 0:
            continue
        ax = axis + 2
        core: list[slice | int] = [slice(None)] * out.ndim
        core[ax] = slice(lft, lft + g)
        folded = out[tuple(core)].copy()
        if geo.bc != "zero":
            for k in itertools.chain(range(lft), range(lft + g, lft + g + rgt)):
                src: list[slice | int] = [slice(None)] * out.ndim
                dst: list[slice | int] = [slice(None)] * out.ndim
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
        z += _mix(theta[_lead(2, j)], xp[lead + geo.window(j)])
    return z


def direct_adjoint(theta: np.ndarray, y: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """``C_theta^T y`` on the padded grid (correlation), by direct stencil sums."""
    xp = np.zeros((y.shape[0], geo.cin, *geo.padded), dtype=np.result_type(theta, y))
    lead = (slice(None), slice(None))
    for j in geo.offsets():
        xp[lead + geo.window(j)] += _mix(theta[_lead(2, j)].T, y)
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
            g[_lead(3, j)] = np.matmul(wf, win.transpose(0, 2, 1))
        else:
            # contract examples and grid at once: (cout, n*M) @ (n*M, cin)
            g[_lead(2, j)] = np.tensordot(wf, win, axes=([0, 2], [0, 2]))
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
        cols[_lead(2, idx)] = theta
    else:
        np.add.at(cols, _lead(2, idx), theta)
    return cols


def spectrum(theta: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """Half-spectrum of the stencil on the FFT grid, shape ``(cout, cin, *half)`` (complex)."""
    L = fft_shape(geo)
    axes = tuple(range(2, 2 + geo.ndim))
    if geo.bc == "periodic":
        return sfft.rfftn(first_columns(theta, geo), s=L, axes=axes)
    return sfft.rfftn(theta, s=L, axes=axes)


def _contract(spec: np.ndarray, data: np.ndarray, conj: bool) -> np.ndarray:
    """Per-frequency block product ``spec[o, c, f] data[n, c, f]`` -> ``(n, o, f)``.

    With ``conj``, the adjoint: ``conj(spec[o, c, f]) data[n, o, f]`` -> ``(n, c, f)``.
    ``data`` is a temporary of the caller and may be overwritten.
    """
    cout, cin = spec.shape[:2]
    if cout == 1 and cin == 1:  # one multiply in place
        data *= spec[0, 0].conj() if conj else spec[0, 0]
        return data
    blocks = spec.transpose(2, 0, 1)  # (f, o, c)
    if conj:
        blocks = blocks.conj().transpose(0, 2, 1)  # (f, c, o)
    # one small matrix product per frequency, batched over frequencies, with the examples
    # as the columns: (f, o, c) @ (f, c, n) -> (f, o, n)
    out = np.matmul(blocks, data.transpose(2, 1, 0))
    return out.transpose(2, 1, 0)


def _first_output(geo: ConvGeometry) -> tuple[int, ...]:
    """Index of the first output on the FFT grid, per axis.

    Periodic: the circular convolution on the grid is the output (stencil centred by
    :func:`first_columns`). Zero: the linear convolution ``f = theta * x`` of the unpadded
    grid (no wrap-around since the transform length is at least ``grid + stencil - 1``) with
    ``z_i = f[i + s//2]``. Otherwise the padded grid, with ``z_i = f[i + s - 1]``.
    """
    if geo.bc == "periodic":
        return tuple(0 for _ in geo.grid)
    if geo.bc == "zero":
        return tuple(s // 2 for s in geo.stencil)
    return tuple(s - 1 for s in geo.stencil)


def _outputs(geo: ConvGeometry) -> tuple[slice, ...]:
    """Where the strided outputs sit on the FFT grid."""
    return tuple(slice(f, f + st * (m - 1) + 1, st) for f, st, m in zip(_first_output(geo), geo.stride, geo.out_grid))


def _fft_input(x: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """The array transformed for input ``x``: ``x`` itself for periodic and zero, else ``P_bc x``."""
    return x if geo.bc in ("periodic", "zero") else pad(x, geo)


def _axes(geo: ConvGeometry) -> tuple[int, ...]:
    return tuple(range(2, 2 + geo.ndim))


def input_spectrum(x: np.ndarray, geo: ConvGeometry, workers: int = -1) -> np.ndarray:
    """Half-spectrum of the (padded) input ``x`` of shape ``(n, cin, *grid)``: ``(n, cin, F)``."""
    xf = sfft.rfftn(_fft_input(x, geo), s=fft_shape(geo), axes=_axes(geo), workers=workers)
    return xf.reshape(x.shape[0], geo.cin, -1)


def output_spectrum(y: np.ndarray, geo: ConvGeometry, workers: int = -1) -> np.ndarray:
    """Half-spectrum of ``S^T y`` for ``y`` of shape ``(n, cout, *out_grid)``: ``(n, cout, F)``."""
    yf = sfft.rfftn(_upsample(y, geo, geo.cout), axes=_axes(geo), workers=workers)
    return yf.reshape(y.shape[0], geo.cout, -1)


def _half(geo: ConvGeometry) -> tuple[int, ...]:
    L = fft_shape(geo)
    return (*L[:-1], L[-1] // 2 + 1)


def fft_forward_spectrum(
    spec: np.ndarray, xf: np.ndarray, geo: ConvGeometry, workers: int = -1, overwrite: bool = False
) -> np.ndarray:
    """``S C_theta P x`` from the input spectrum ``xf`` (:func:`input_spectrum`).

    ``xf`` is overwritten only with ``overwrite`` (a temporary of the caller).
    """
    n = xf.shape[0]
    if not overwrite and geo.cin * geo.cout == 1:
        xf = xf * spec.reshape(1, 1, -1)
        zf = xf
    else:
        zf = _contract(spec.reshape(geo.cout, geo.cin, -1), xf, conj=False)
    z = sfft.irfftn(zf.reshape(n, geo.cout, *_half(geo)), s=fft_shape(geo), axes=_axes(geo), workers=workers)
    return np.ascontiguousarray(z[_lead(2, _outputs(geo))])


def fft_forward(spec: np.ndarray, x: np.ndarray, geo: ConvGeometry, workers: int = -1) -> np.ndarray:
    """``S C_theta P x`` through the FFT for unpadded ``x`` of shape ``(n, cin, *grid)``."""
    return fft_forward_spectrum(spec, input_spectrum(x, geo, workers), geo, workers, overwrite=True)


def _upsample(y: np.ndarray, geo: ConvGeometry, channels: int) -> np.ndarray:
    L = fft_shape(geo)
    up = np.zeros((y.shape[0], channels, *L), dtype=y.dtype)
    up[_lead(2, _outputs(geo))] = y
    return up


def fft_adjoint_spectrum(
    spec: np.ndarray, yf: np.ndarray, geo: ConvGeometry, workers: int = -1, overwrite: bool = False
) -> np.ndarray:
    """``P^T C_theta^T S^T y`` from ``yf`` (:func:`output_spectrum`); returns ``(n, cin, *grid)``."""
    L = fft_shape(geo)
    n = yf.shape[0]
    if not overwrite and geo.cin * geo.cout == 1:
        xf = yf * spec.reshape(1, 1, -1).conj()
    else:
        xf = _contract(spec.reshape(geo.cout, geo.cin, -1), yf, conj=True)
    xp = sfft.irfftn(xf.reshape(n, geo.cin, *_half(geo)), s=L, axes=_axes(geo), workers=workers)
    if geo.bc in ("periodic", "zero"):  # correlation without wrap-around on the grid
        return np.ascontiguousarray(xp[_lead(2, (slice(0, g) for g in geo.grid))])
    return pad_adjoint(xp[_lead(2, (slice(0, g) for g in geo.padded))], geo)


def fft_adjoint(spec: np.ndarray, y: np.ndarray, geo: ConvGeometry, workers: int = -1) -> np.ndarray:
    """``P^T C_theta^T S^T y`` through the FFT; returns ``(n, cin, *grid)``."""
    return fft_adjoint_spectrum(spec, output_spectrum(y, geo, workers), geo, workers, overwrite=True)


def fft_gradient_spectra(
    xf: np.ndarray,
    wf: np.ndarray,
    geo: ConvGeometry,
    per_example: bool,
    dtype,
    workers: int = -1,
    scratch: str | None = None,
) -> np.ndarray:
    r"""``d<w, S C_theta P x>/d theta`` from the spectra of ``x`` and ``S^T w``.

    The cross-correlation :math:`\sum_n \hat w_n \overline{\hat x_n}` per frequency (contracted
    over the examples before the single inverse transform unless ``per_example``).
    ``scratch`` (``"x"``, ``"w"`` or None) names the spectrum that may be overwritten: the
    conjugation then happens in place instead of in a copy.
    """
    n = xf.shape[0]
    half = _half(geo)
    flip = False  # True: the product below is conj(w) x, whose conjugate is w conj(x)
    if scratch == "x":
        xc = np.conjugate(xf, out=xf)
    elif scratch == "w":
        xc, wf, flip = xf, np.conjugate(wf, out=wf), True
    else:
        xc = xf.conj()
    if per_example:
        gf = (wf[:, :, None, :] * xc[:, None, :, :]).reshape(n * geo.cout * geo.cin, *half)
    elif geo.cout == 1 and geo.cin == 1:
        # sum over the examples of the product per frequency (in place in the scratch
        # spectrum: numpy's complex einsum is 2-3x slower than multiply + sum)
        prod = xc if scratch == "x" else wf if scratch == "w" else None
        prod = np.multiply(wf, xc, out=prod)
        gf = prod.sum(axis=0).reshape(1, *half)
    else:
        # per frequency: (o, n) @ (n, c), batched over frequencies
        gf = np.matmul(wf.transpose(2, 1, 0), xc.transpose(2, 0, 1)).transpose(1, 2, 0)
        gf = gf.reshape(geo.cout * geo.cin, *half)
    if flip:
        np.conjugate(gf, out=gf)
    corr = sfft.irfftn(gf, s=fft_shape(geo), axes=tuple(range(1, 1 + geo.ndim)), workers=workers)
    if geo.bc == "periodic":
        idx = np.ix_(*(np.mod(np.arange(s) - s // 2, g) for s, g in zip(geo.stencil, geo.grid)))
    else:
        idx = np.ix_(*(np.arange(s) for s in geo.stencil))
    g = corr[_lead(1, idx)]
    lead = (n,) if per_example else ()
    return np.ascontiguousarray(g).reshape((*lead, geo.cout, geo.cin, *geo.stencil)).astype(dtype, copy=False)


# ------------------------------------------------------------ flat-shift direct method
@dataclass(frozen=True)
class FlatPlan:
    """Index maps of the flattened padded grid (see :mod:`._conv_numba`)."""

    src: np.ndarray  # (Lp,) flat grid index feeding each padded position, -1 for a zero
    shifts: np.ndarray  # (S,) flat shift of stencil offset j (C-order over the stencil)
    outidx: np.ndarray  # (M,) flat padded index P(i) of each output, C-order
    width: int  # P(i_last) + 1: the flat range the sums run over
    runs: np.ndarray  # (3, R) runs of src: padded start, grid start (-1: zeros), length
    outruns: np.ndarray  # (3, R') runs of outidx: output start, padded start, length
    injective: bool  # every grid point feeds exactly one padded position (zero, valid)


def _runs(idx: np.ndarray) -> np.ndarray:
    """Maximal runs ``(start, idx[start], length)`` of consecutive indices (or of ``-1``)."""
    size = idx.size
    brk = np.ones(size, dtype=bool)
    if size > 1:
        prev, cur = idx[:-1], idx[1:]
        brk[1:] = ~(((cur == prev + 1) & (prev >= 0)) | ((cur < 0) & (prev < 0)))
    starts = np.flatnonzero(brk)
    lengths = np.diff(np.append(starts, size))
    return np.ascontiguousarray(np.stack([starts, idx[starts], lengths]).astype(np.int64))


@functools.lru_cache(maxsize=256)
def flat_plan(geo: ConvGeometry) -> FlatPlan:
    """The :class:`FlatPlan` of ``geo`` (a bounded LRU cache per geometry)."""
    pstr = np.array([int(np.prod(geo.padded[a + 1 :])) for a in range(geo.ndim)], dtype=np.int64)
    gstr = [int(np.prod(geo.grid[a + 1 :])) for a in range(geo.ndim)]
    src = np.zeros(geo.padded, dtype=np.int64)
    bad = np.zeros(geo.padded, dtype=bool)
    for a, idx in enumerate(geo.maps):
        shape = [1] * geo.ndim
        shape[a] = -1
        ia = idx.reshape(shape)
        src = src + np.where(ia >= 0, ia, 0) * gstr[a]
        bad = bad | (ia < 0)
    src = np.where(bad, -1, src).reshape(-1)
    jj = np.indices(geo.stencil).reshape(geo.ndim, -1)
    shifts = ((np.array(geo.stencil)[:, None] - 1 - jj) * pstr[:, None]).sum(0)
    ii = np.indices(geo.out_grid).reshape(geo.ndim, -1)
    outidx = ((ii * np.array(geo.stride)[:, None]) * pstr[:, None]).sum(0).astype(np.int64)
    width = int(outidx[-1]) + 1 if outidx.size else 0
    counts = np.bincount(src[src >= 0], minlength=int(np.prod(geo.grid)))
    plan = FlatPlan(src, shifts.astype(np.int64), outidx, width, _runs(src), _runs(outidx), bool(np.all(counts == 1)))
    return plan


#: Bytes of one tile's working set (padded input and output rows), a fraction of L2.
TILE_BYTES = 512 * 1024


def _capacity(geo: ConvGeometry, dtype) -> int:
    """Flat positions of padded input and output rows that fit in :data:`TILE_BYTES`."""
    plan = flat_plan(geo)
    reach = int(plan.shifts.max()) if plan.shifts.size else 0
    return TILE_BYTES // np.dtype(dtype).itemsize // (geo.cin + geo.cout) - reach


def _tile(geo: ConvGeometry, dtype) -> int:
    """Length of the flat range processed at once so that one tile stays in cache."""
    return int(max(64, min(max(flat_plan(geo).width, 1), _capacity(geo, dtype))))


def _group(geo: ConvGeometry, dtype) -> int:
    """Examples the gradient kernel sweeps at once: as many padded grids as fit a tile.

    Only when at least four fit (small images: 0-10 % faster for 8 -> 8 channels on
    28×28, 20 % for 16 -> 16 on 16×16); with fewer it measured neutral or slower.
    """
    group = _capacity(geo, dtype) // max(int(np.prod(geo.padded)), 1)
    return group if group >= 4 else 1


def _blocks(n: int) -> int:
    """Contiguous blocks of examples run in parallel: four per numba thread (at most ``n``)."""
    import numba

    return min(n, 4 * numba.get_num_threads())


def _threads(geo: ConvGeometry, n: int):
    """:func:`~structops._backend.kernel_threads` for ``n`` examples: ``n * cout * cin * S * width`` multiply-adds."""
    return kernel_threads(n * geo.cout * geo.cin * int(np.prod(geo.stencil)) * flat_plan(geo).width, n)


def numba_forward(theta: np.ndarray, x: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """``K x`` for unpadded ``x`` of shape ``(n, cin, *grid)``; returns ``(n, cout, *out_grid)``."""
    plan = flat_plan(geo)
    n = x.shape[0]
    out = np.empty((n, geo.cout, int(np.prod(geo.out_grid))), dtype=x.dtype)
    with _threads(geo, n):
        _nb.forward(
            np.ascontiguousarray(theta, dtype=x.dtype).reshape(geo.cout, -1),
            np.ascontiguousarray(x).reshape(n, geo.cin, -1),
            plan.runs, plan.outruns, plan.shifts, plan.width, _tile(geo, out.dtype), _blocks(n), out,
        )  # fmt: skip
    return out


def numba_adjoint(theta: np.ndarray, y: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """``K^T y`` for ``y`` of shape ``(n, cout, *out_grid)``; returns ``(n, cin, prod(grid))``."""
    plan = flat_plan(geo)
    n = y.shape[0]
    out = np.empty((n, geo.cin, int(np.prod(geo.grid))), dtype=y.dtype)
    S = int(np.prod(geo.stencil))
    # the transposed stencil, (cin, cout * S): column o * S + j
    theta_t = np.ascontiguousarray(np.asarray(theta, dtype=y.dtype).reshape(geo.cout, geo.cin, S).transpose(1, 0, 2))
    with _threads(geo, n):
        _nb.adjoint(
            theta_t.reshape(geo.cin, geo.cout * S),
            np.ascontiguousarray(y).reshape(n, geo.cout, -1),
            plan.runs, plan.outruns, plan.shifts, plan.width, _tile(geo, out.dtype), plan.injective, _blocks(n), out,
        )  # fmt: skip
    return out


def numba_gradient(x: np.ndarray, w: np.ndarray, geo: ConvGeometry, per_example: bool) -> np.ndarray:
    """Stencil gradient ``(cout, cin, S)`` (or ``(n, cout, cin, S)``) of ``<w, K(θ) x>``."""
    plan = flat_plan(geo)
    n = x.shape[0]
    S = int(np.prod(geo.stencil))
    with _threads(geo, n):
        blocks = n if per_example else max(1, _blocks(n))
        g = np.empty((blocks, geo.cout, geo.cin * S), dtype=x.dtype)
        group = 1 if per_example else _group(geo, g.dtype)
        tile = _tile(geo, g.dtype) if group == 1 else max(64, _capacity(geo, g.dtype))
        _nb.gradient(
            np.ascontiguousarray(x).reshape(n, geo.cin, -1),
            np.ascontiguousarray(w, dtype=x.dtype).reshape(n, geo.cout, -1),
            plan.runs, plan.outruns, plan.shifts, plan.width, tile, group, g,
        )  # fmt: skip
    g = g.reshape(blocks, geo.cout, geo.cin, S)
    return g if per_example else g.sum(0)
