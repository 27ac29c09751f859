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


PADDING_WORDS = ("same", "valid")


def _default_pads(extent: tuple[int, ...], bc: str) -> tuple[tuple[int, int], ...]:
    """``padding=None``: ``(e - 1 - e//2, e//2)`` per axis for extent ``e`` ("same" size), none for ``valid``."""
    if bc == "valid":
        return tuple((0, 0) for _ in extent)
    return tuple((e - 1 - e // 2, e // 2) for e in extent)


def resolve_padding(padding, extent: tuple[int, ...], stride: tuple[int, ...], bc: str) -> tuple[tuple[int, int], ...]:
    """``padding`` (None, ``"same"``, ``"valid"``, an int or one per axis) as ``(before, after)`` per axis.

    ``"same"`` pads ``e - 1`` in all, ``(e - 1) // 2`` before (PyTorch's split; the same as
    the default ``e - 1 - e // 2``), and like PyTorch refuses a stride above 1.
    """
    if padding is None:
        return _default_pads(extent, bc)
    if isinstance(padding, str):
        if padding not in PADDING_WORDS:
            raise ValueError(f"`padding` must be None, 'same', 'valid', an int or one int per axis, got {padding!r}.")
        if padding == "valid":
            return tuple((0, 0) for _ in extent)
        if any(st != 1 for st in stride):
            raise ValueError(f"`padding`='same' needs stride 1 (as in PyTorch), got stride {stride!r}.")
        if bc == "valid":
            raise ValueError("`padding`='same' contradicts bc='valid' (no padding); pass padding=None.")
        return _default_pads(extent, "zero")
    widths = check_int_tuple(padding, "padding", ndim=len(extent), minimum=0)
    if bc == "valid" and any(widths):
        raise ValueError(f"`padding` must be 0 with bc='valid' (no padding), got {padding!r}.")
    return tuple((p, p) for p in widths)


def _check_fits(
    grid: tuple[int, ...], stencil: tuple[int, ...], extent: tuple[int, ...], pads: tuple[tuple[int, int], ...], bc: str
) -> None:
    """Raise ``ValueError`` where the (dilated) stencil does not fit the padded grid, or ``bc`` cannot pad it."""
    dilated = extent != stencil
    what = f"`stencil` {stencil!r}" + (f" dilated to extent {extent!r} by `dilation`" if dilated else "")
    for axis, (g, e, (lft, rgt)) in enumerate(zip(grid, extent, pads)):
        if bc == "valid" and e > g:
            raise ValueError(f"{what} is larger than `grid` {grid!r} on axis {axis}: bc='valid' needs stencil <= grid.")
        if e > g + lft + rgt:
            raise ValueError(
                f"{what} is larger than the padded grid on axis {axis} (`grid` {grid!r} padded by {lft} + {rgt}, "
                "`padding`): no output."
            )
        if bc == "reflect" and max(lft, rgt) > g - 1:
            raise ValueError(
                f"{what} is too large for bc='reflect' on `grid` {grid!r} (axis {axis}, `padding` {lft} + {rgt}): "
                "reflect padding needs stencil // 2 <= grid - 1 (each pad <= grid - 1)."
            )
        if bc == "symmetric" and max(lft, rgt) > g:
            raise ValueError(
                f"{what} is too large for bc='symmetric' on `grid` {grid!r} (axis {axis}, `padding` {lft} + {rgt}): "
                "symmetric padding needs stencil // 2 <= grid (each pad <= grid)."
            )


def _check_groups(groups, cin: int, cout: int) -> int:
    groups = check_positive_int(groups, "groups")
    if cin % groups or cout % groups:
        raise ValueError(
            f"`groups` must divide in_channels and out_channels, got groups={groups} with in_channels={cin}, "
            f"out_channels={cout}."
        )
    return groups


@dataclass(frozen=True, init=False)
class ConvGeometry:
    r"""The geometry of a convolution, validated once: sizes, boundary, channels, stride, dilation, groups, padding.

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
    dilation : int or sequence of int
        Spacing :math:`d_a` of the stencil taps per axis (PyTorch's ``dilation``): tap
        :math:`j` sits at offset :math:`d_a j_a`, so the stencil covers the *extent*
        :math:`e_a = d_a(s_a - 1) + 1`.
    groups : int
        PyTorch's ``groups``: it divides both channel counts; output channel :math:`o` (in
        group :math:`\lfloor o / (c_{out}/G) \rfloor`) reads only the :math:`c_{in}/G` input
        channels of its group, so the operator is block diagonal over the groups and
        :math:`\theta` holds ``cout × cin/groups × prod(stencil)`` weights (PyTorch's weight
        layout).
    padding : None, "same", "valid", int or sequence of int
        How many samples ``bc`` adds on each side of each axis. None: the default, ``e - 1``
        in all (``e - 1 - e // 2`` before, ``e // 2`` after: output on the input grid at
        stride 1), none for ``bc="valid"``; ``"same"``: the same, refused with a stride above
        1 (as PyTorch does); ``"valid"``: none; an int or one int per axis :math:`p_a`:
        :math:`p_a` on both sides (PyTorch's ``padding``), padded by ``bc`` (zeros, wrapped,
        mirrored or replicated samples).

    Attributes
    ----------
    dilation : tuple of int
        Per axis.
    groups : int
    padding : tuple of (int, int)
        The resolved padding, ``(before, after)`` per axis (also :attr:`pads`).

    Notes
    -----
    With the padded input :math:`x^p` (``bc`` applied with ``padding``), the output is

    .. math::
        z_{o,i} = \sum_{c \in G(o)} \sum_j \theta_{o,c,j}\; x^p_{c,\; \mathrm{st}\, i + d\,(s - 1 - j)}
        \qquad 0 \le i < \mathrm{out} = \lfloor (n + p_- + p_+ - e)/\mathrm{st} \rfloor + 1

    per axis, i.e. PyTorch's cross-correlation with the flipped weight
    ``theta_to_torch(θ)`` on the same padding.

    Raises
    ------
    ValueError, TypeError
        Naming the argument (``grid``, ``stencil``, ``stride``, ``bc``, ``in_channels``,
        ``out_channels``, ``dilation``, ``groups``, ``padding``): a wrong number of axes, a
        size below 1, a negative padding, an unknown ``bc`` or padding word, a non-integer,
        ``groups`` not dividing both channel counts, ``"same"`` with a stride above 1, a
        padding other than 0 with ``bc="valid"``, or a (dilated) stencil larger than the
        (padded) grid or than ``bc`` can pad (``"valid"``: extent ``<=`` grid; ``"reflect"``:
        each pad ``<= grid - 1``; ``"symmetric"``: each pad ``<= grid``).

    Examples
    --------
    >>> geo = ConvGeometry((8, 8), 3, stride=2, cout=4)
    >>> geo.stencil, geo.stride, geo.out_grid
    ((3, 3), (2, 2), (4, 4))
    >>> geo = ConvGeometry(10, 3, dilation=2, padding=1, cin=4, cout=2, groups=2)
    >>> geo.extent, geo.padding, geo.out_grid, geo.theta_shape
    ((5,), ((1, 1),), (8,), (2, 2, 3))
    """

    grid: tuple[int, ...]
    stencil: tuple[int, ...]
    stride: tuple[int, ...]
    bc: str
    cin: int
    cout: int
    dilation: tuple[int, ...]
    groups: int
    padding: tuple[tuple[int, int], ...]

    def __init__(
        self,
        grid: int | Sequence[int],
        stencil: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        bc: str = "zero",
        cin: int = 1,
        cout: int = 1,
        dilation: int | Sequence[int] = 1,
        groups: int = 1,
        padding: int | str | Sequence[int] | None = None,
    ) -> None:
        grid, stencil = check_geometry(grid, stencil)
        stride = check_int_tuple(stride, "stride", ndim=len(grid))
        dilation = check_int_tuple(dilation, "dilation", ndim=len(grid))
        if bc not in BOUNDARY_CONDITIONS:
            raise ValueError(f"`bc` must be one of {BOUNDARY_CONDITIONS!r}, got {bc!r}.")
        cin = check_positive_int(cin, "in_channels")
        cout = check_positive_int(cout, "out_channels")
        groups = _check_groups(groups, cin, cout)
        extent = tuple(d * (s - 1) + 1 for d, s in zip(dilation, stencil))
        pads = resolve_padding(padding, extent, stride, bc)
        _check_fits(grid, stencil, extent, pads, bc)
        fields = {
            "grid": grid, "stencil": stencil, "stride": stride, "bc": bc, "cin": cin, "cout": cout,
            "dilation": dilation, "groups": groups, "padding": pads,
        }  # fmt: skip
        for name, value in fields.items():  # frozen: set once, here
            object.__setattr__(self, name, value)

    @property
    def ndim(self) -> int:
        return len(self.grid)

    @property
    def extent(self) -> tuple[int, ...]:
        """Extent of the dilated stencil per axis, :math:`d(s - 1) + 1`."""
        return tuple(d * (s - 1) + 1 for d, s in zip(self.dilation, self.stencil))

    @property
    def cin_group(self) -> int:
        """Input channels per group, ``cin // groups``."""
        return self.cin // self.groups

    @property
    def cout_group(self) -> int:
        """Output channels per group, ``cout // groups``."""
        return self.cout // self.groups

    @property
    def theta_shape(self) -> tuple[int, ...]:
        """``(cout, cin // groups, *stencil)``: PyTorch's weight layout."""
        return (self.cout, self.cin_group, *self.stencil)

    @property
    def default_padding(self) -> bool:
        """Whether the padding is the default of ``bc`` (``padding=None``)."""
        return self.padding == _default_pads(self.extent, self.bc)

    @property
    def plain(self) -> bool:
        """No dilation, one group and the default padding: tap ``j`` of the stencil sits at offset ``j - s//2``."""
        return all(d == 1 for d in self.dilation) and self.groups == 1 and self.default_padding

    @property
    def pads(self) -> tuple[tuple[int, int], ...]:
        """(before, after) padding per axis: the field ``padding``."""
        return self.padding

    @property
    def padded(self) -> tuple[int, ...]:
        return tuple(g + lft + rgt for g, (lft, rgt) in zip(self.grid, self.pads))

    @property
    def out_grid(self) -> tuple[int, ...]:
        return tuple((gp - e) // st + 1 for gp, e, st in zip(self.padded, self.extent, self.stride))

    @property
    def maps(self) -> tuple[np.ndarray, ...]:
        return tuple(source_index(self.bc, g, lft, rgt) for g, (lft, rgt) in zip(self.grid, self.pads))

    def window(self, j: tuple[int, ...]) -> tuple[slice, ...]:
        """Slice of the padded grid read by stencil offset ``j`` for all (strided) outputs."""
        return tuple(
            slice(d * (s - 1 - ja), d * (s - 1 - ja) + st * (m - 1) + 1, st)
            for s, d, ja, st, m in zip(self.stencil, self.dilation, j, self.stride, self.out_grid)
        )

    def offsets(self):
        return itertools.product(*(range(s) for s in self.stencil))

    def dense_stencil(self, theta: np.ndarray) -> np.ndarray:
        r"""The equivalent ungrouped, undilated stencil ``(cout, cin, *extent)``.

        Zeros between the dilated taps (tap :math:`j` at :math:`d\,j`) and off the
        block-diagonal groups: ``Conv`` of this geometry with ``theta`` equals the
        ``dilation=1``, ``groups=1`` convolution with the same padding and this stencil.
        """
        theta = np.asarray(theta).reshape(self.theta_shape)
        dilated = np.zeros((self.cout, self.cin_group, *self.extent), dtype=theta.dtype)
        dilated[_lead(2, (slice(None, None, d) for d in self.dilation))] = theta
        return expand_groups(dilated, self)


def expand_groups(blocks: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """``(cout, cin/G, ...)`` -> ``(cout, cin, ...)``, block diagonal over the groups (zeros elsewhere)."""
    if geo.groups == 1:
        return blocks
    G, og, cg = geo.groups, geo.cout_group, geo.cin_group
    rest = blocks.shape[2:]
    full = np.zeros((G, og, G, cg, *rest), dtype=blocks.dtype)
    full[np.arange(G), :, np.arange(G)] = blocks.reshape(G, og, cg, *rest)
    return full.reshape(geo.cout, geo.cin, *rest)


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
def _mix(theta_j: np.ndarray, block: np.ndarray, groups: int, transpose: bool = False) -> np.ndarray:
    """``sum_c theta_j[o, c] block[n, c, ...]`` -> ``(n, o, ...)`` as one GEMM over channels.

    ``theta_j`` is ``(cout, cin // groups)``; with ``groups`` the product is block diagonal
    (one batched GEMM over the groups). ``transpose``: the adjoint, ``theta_j^T`` per group.
    """
    if theta_j.size == 1 and groups == 1:
        return theta_j[0, 0] * block
    n = block.shape[0]
    rest = block.shape[2:]
    blocks = theta_j.reshape(groups, theta_j.shape[0] // groups, theta_j.shape[1])  # (G, og, cg)
    if transpose:
        blocks = blocks.transpose(0, 2, 1)
    flat = np.ascontiguousarray(block).reshape(n, groups, blocks.shape[2], -1)
    return np.matmul(blocks, flat).reshape((n, groups * blocks.shape[1], *rest))


def direct_forward(theta: np.ndarray, xp: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """Valid strided (dilated, grouped) convolution of the padded batch ``xp`` by direct stencil sums."""
    z = np.zeros((xp.shape[0], geo.cout, *geo.out_grid), dtype=np.result_type(theta, xp))
    lead = (slice(None), slice(None))
    for j in geo.offsets():
        z += _mix(theta[_lead(2, j)], xp[lead + geo.window(j)], geo.groups)
    return z


def direct_adjoint(theta: np.ndarray, y: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """``C_theta^T y`` on the padded grid (correlation), by direct stencil sums."""
    xp = np.zeros((y.shape[0], geo.cin, *geo.padded), dtype=np.result_type(theta, y))
    lead = (slice(None), slice(None))
    for j in geo.offsets():
        xp[lead + geo.window(j)] += _mix(theta[_lead(2, j)], y, geo.groups, transpose=True)
    return xp


def _grouped_products(wf: np.ndarray, win: np.ndarray, geo: ConvGeometry, per_example: bool) -> np.ndarray:
    """``sum_m wf[n, o, m] win[n, c, m]`` within each group: ``(n, cout, cin/G)`` or summed over ``n``."""
    n, G = wf.shape[0], geo.groups
    w4 = wf.reshape(n, G, geo.cout_group, -1)
    x4 = win.reshape(n, G, geo.cin_group, -1)
    if per_example:
        return np.matmul(w4, x4.transpose(0, 1, 3, 2)).reshape(n, geo.cout, geo.cin_group)
    if G == 1:  # contract examples and grid at once: (cout, n*M) @ (n*M, cin)
        return np.tensordot(wf, win, axes=([0, 2], [0, 2]))
    left = w4.transpose(1, 2, 0, 3).reshape(G, geo.cout_group, -1)
    right = x4.transpose(1, 0, 3, 2).reshape(G, -1, geo.cin_group)
    return np.matmul(left, right).reshape(geo.cout, geo.cin_group)


def direct_gradient(xp: np.ndarray, w: np.ndarray, geo: ConvGeometry, per_example: bool) -> np.ndarray:
    """``d<w, C_theta xp>/d theta``: shape ``(cout, cin/G, *stencil)`` or ``(n, cout, cin/G, *stencil)``."""
    n = xp.shape[0]
    lead = (slice(None), slice(None))
    wf = w.reshape(n, geo.cout, -1)
    shape = ((n,) if per_example else ()) + geo.theta_shape
    g = np.empty(shape, dtype=np.result_type(xp, w))
    for j in geo.offsets():
        win = np.ascontiguousarray(xp[lead + geo.window(j)]).reshape(n, geo.cin, -1)
        g[_lead(3 if per_example else 2, j)] = _grouped_products(wf, win, geo, per_example)
    return g


# ------------------------------------------------------------------------------ FFT
def fft_route(geo: ConvGeometry) -> str:
    """How the FFT method embeds the convolution.

    ``"circular"``: periodic, outputs not wrapping round the grid -- a circular convolution on
    the grid itself; ``"unpadded"``: zero padding of at most ``e - 1`` on each side -- the
    linear convolution of the unpadded grid on ``L >= n + e - 1``; ``"padded"``: otherwise,
    the valid part of the circular convolution of ``P_bc x`` on ``L >= n + p_- + p_+``.
    """
    if geo.bc == "periodic" and all(st * (m - 1) < g for st, m, g in zip(geo.stride, geo.out_grid, geo.grid)):
        return "circular"
    if geo.bc == "zero" and all(max(lft, rgt) <= e - 1 for (lft, rgt), e in zip(geo.pads, geo.extent)):
        return "unpadded"
    return "padded"


def fft_shape(geo: ConvGeometry) -> tuple[int, ...]:
    """Transform size: the grid itself for the circular route, else a fast length with no wrap-around."""
    route = fft_route(geo)
    if route == "circular":
        return geo.grid
    if route == "unpadded":
        return tuple(sfft.next_fast_len(g + e - 1, real=True) for g, e in zip(geo.grid, geo.extent))
    return tuple(sfft.next_fast_len(gp, real=True) for gp in geo.padded)


def tap_positions(geo: ConvGeometry) -> tuple[np.ndarray, ...]:
    r"""Per axis, where tap :math:`j` of the stencil sits on the FFT grid.

    Circular route: :math:`(d j + p_- - (e - 1)) \bmod n` (the first column of the circulant;
    the default padding centres the stencil, :math:`d j - e/\!/2`); otherwise :math:`d j`.
    """
    if fft_route(geo) == "circular":
        return tuple(
            np.mod(d * np.arange(s) + lft - (e - 1), g)
            for s, d, (lft, _), e, g in zip(geo.stencil, geo.dilation, geo.pads, geo.extent, geo.grid)
        )
    return tuple(d * np.arange(s) for s, d in zip(geo.stencil, geo.dilation))


def first_columns(theta: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    r"""The stencil placed on the FFT grid: ``(cout, cin/G, *fft_shape)``.

    For the circular route the first columns :math:`K^{oc}(\theta)u_1` (summed where taps wrap
    onto the same point), else the dilated stencil at the origin.
    """
    cols = np.zeros((geo.cout, geo.cin_group, *fft_shape(geo)), dtype=theta.dtype)
    idx = np.ix_(*tap_positions(geo))
    if all(e <= g for e, g in zip(geo.extent, cols.shape[2:])):
        cols[_lead(2, idx)] = theta
    else:
        np.add.at(cols, _lead(2, idx), theta)
    return cols


def block_circulant(geo: ConvGeometry) -> bool:
    """Whether the convolution is block circulant: ``bc="periodic"``, stride 1, output on the input grid."""
    return geo.bc == "periodic" and all(st == 1 for st in geo.stride) and geo.out_grid == geo.grid


def periodic_symbol(theta: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    r"""Per-frequency ``cout × cin`` blocks of a block-circulant convolution, shape ``(*grid, cout, cin)``.

    :math:`\hat K(\xi)` with :math:`\widehat{(Kx)}_o(\xi) = \sum_c \hat K_{oc}(\xi)\hat x_c(\xi)`: the
    ``fftn`` over the grid of the first columns of the blocks (:func:`first_columns`; stencils
    larger than the grid wrap around), block diagonal over the groups, in :math:`O(N \log N)`
    without building ``K``. ``theta`` has the shape ``geo.theta_shape``; the caller has checked
    :func:`block_circulant`.
    """
    cols = expand_groups(first_columns(theta, geo), geo)
    spec = sfft.fftn(cols, axes=tuple(range(2, 2 + geo.ndim)))
    return np.moveaxis(spec, (0, 1), (-2, -1))


def spectrum(theta: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """Half-spectrum of the stencil on the FFT grid, shape ``(cout, cin/G, *half)`` (complex)."""
    return sfft.rfftn(first_columns(theta, geo), axes=tuple(range(2, 2 + geo.ndim)))


def _contract(spec: np.ndarray, data: np.ndarray, conj: bool, groups: int = 1) -> np.ndarray:
    """Per-frequency block product ``spec[o, c, f] data[n, c, f]`` -> ``(n, o, f)``, block diagonal over groups.

    With ``conj``, the adjoint: ``conj(spec[o, c, f]) data[n, o, f]`` -> ``(n, c, f)``.
    ``data`` is a temporary of the caller and may be overwritten.
    """
    cout, cg = spec.shape[:2]
    if cout == 1 and cg == 1:  # one multiply in place
        data *= spec[0, 0].conj() if conj else spec[0, 0]
        return data
    F = spec.shape[2]
    blocks = spec.transpose(2, 0, 1).reshape(F, groups, cout // groups, cg)  # (f, G, og, cg)
    if conj:
        blocks = blocks.conj().transpose(0, 1, 3, 2)  # (f, G, cg, og)
    # one small matrix product per frequency and group, batched, with the examples as the
    # columns: (f, G, og, cg) @ (f, G, cg, n) -> (f, G, og, n)
    n = data.shape[0]
    out = np.matmul(blocks, data.transpose(2, 1, 0).reshape(F, groups, blocks.shape[3], n))
    return out.reshape(F, -1, n).transpose(2, 1, 0)


def _first_output(geo: ConvGeometry) -> tuple[int, ...]:
    """Index of the first output on the FFT grid, per axis.

    Circular: 0 (the stencil placed by :func:`first_columns`). Unpadded: the linear
    convolution ``f = theta * x`` of the unpadded grid with ``z_i = f[st i + e - 1 - p_-]``.
    Padded: the padded grid, with ``z_i = f[st i + e - 1]``.
    """
    route = fft_route(geo)
    if route == "circular":
        return tuple(0 for _ in geo.grid)
    if route == "unpadded":
        return tuple(e - 1 - lft for e, (lft, _) in zip(geo.extent, geo.pads))
    return tuple(e - 1 for e in geo.extent)


def _outputs(geo: ConvGeometry) -> tuple[slice, ...]:
    """Where the strided outputs sit on the FFT grid."""
    return tuple(slice(f, f + st * (m - 1) + 1, st) for f, st, m in zip(_first_output(geo), geo.stride, geo.out_grid))


def _fft_input(x: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """The array transformed for input ``x``: ``x`` itself for the circular and unpadded routes, else ``P_bc x``."""
    return x if fft_route(geo) != "padded" else pad(x, geo)


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
        zf = _contract(spec.reshape(geo.cout, geo.cin_group, -1), xf, conj=False, groups=geo.groups)
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
        xf = _contract(spec.reshape(geo.cout, geo.cin_group, -1), yf, conj=True, groups=geo.groups)
    xp = sfft.irfftn(xf.reshape(n, geo.cin, *_half(geo)), s=L, axes=_axes(geo), workers=workers)
    if fft_route(geo) != "padded":  # correlation without wrap-around on the grid
        return np.ascontiguousarray(xp[_lead(2, (slice(0, g) for g in geo.grid))])
    return pad_adjoint(xp[_lead(2, (slice(0, g) for g in geo.padded))], geo)


def fft_adjoint(spec: np.ndarray, y: np.ndarray, geo: ConvGeometry, workers: int = -1) -> np.ndarray:
    """``P^T C_theta^T S^T y`` through the FFT; returns ``(n, cin, *grid)``."""
    return fft_adjoint_spectrum(spec, output_spectrum(y, geo, workers), geo, workers, overwrite=True)


def _cross_spectra(wf: np.ndarray, xc: np.ndarray, geo: ConvGeometry, per_example: bool) -> np.ndarray:
    """Per frequency ``wf[n, o, f] xc[n, c, f]`` within each group, summed over ``n`` unless ``per_example``.

    Returns ``(n * cout * cin/G, F)`` or ``(cout * cin/G, F)``.
    """
    n, F, G = wf.shape[0], wf.shape[2], geo.groups
    og, cg = geo.cout_group, geo.cin_group
    if per_example:
        prod = wf.reshape(n, G, og, 1, F) * xc.reshape(n, G, 1, cg, F)
        return prod.reshape(n * geo.cout * cg, F)
    # per frequency and group: (og, n) @ (n, cg), batched over frequencies and groups
    left = wf.transpose(2, 1, 0).reshape(F, G, og, n)
    right = xc.transpose(2, 0, 1).reshape(F, n, G, cg).transpose(0, 2, 1, 3)
    return np.matmul(left, right).reshape(F, geo.cout * cg).T


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
    over the examples before the single inverse transform unless ``per_example``), within each
    group, read at the tap positions (:func:`tap_positions`).
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
    if not per_example and geo.cout == 1 and geo.cin == 1:
        # sum over the examples of the product per frequency (in place in the scratch
        # spectrum: numpy's complex einsum is 2-3x slower than multiply + sum)
        prod = xc if scratch == "x" else wf if scratch == "w" else None
        prod = np.multiply(wf, xc, out=prod)
        gf = prod.sum(axis=0).reshape(1, *half)
    else:
        gf = _cross_spectra(wf, xc, geo, per_example).reshape(-1, *half)
    if flip:
        np.conjugate(gf, out=gf)
    corr = sfft.irfftn(gf, s=fft_shape(geo), axes=tuple(range(1, 1 + geo.ndim)), workers=workers)
    g = corr[_lead(1, np.ix_(*tap_positions(geo)))]
    lead = (n,) if per_example else ()
    return np.ascontiguousarray(g).reshape((*lead, *geo.theta_shape)).astype(dtype, copy=False)


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
    shifts = ((np.array(geo.stencil)[:, None] - 1 - jj) * np.array(geo.dilation)[:, None] * pstr[:, None]).sum(0)
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
    """:func:`~structops._backend.kernel_threads` for ``n`` examples: ``n * cout * cin/G * S * width`` multiply-adds."""
    return kernel_threads(n * geo.cout * geo.cin_group * int(np.prod(geo.stencil)) * flat_plan(geo).width, n)


def _read_only(a: np.ndarray) -> np.ndarray:
    """A read-only view of ``a`` (no copy), for the inputs of the numba kernels.

    numba compiles a kernel once per argument type, and writable and read-only arrays (jax hands
    the latter) are different types: with read-only inputs always, each kernel compiles one
    signature per dtype instead of four (each costs seconds of a first run).
    """
    view = a.view()
    view.flags.writeable = False
    return view


def numba_forward(theta: np.ndarray, x: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """``K x`` for unpadded ``x`` of shape ``(n, cin, *grid)``; returns ``(n, cout, *out_grid)``."""
    plan = flat_plan(geo)
    n = x.shape[0]
    out = np.empty((n, geo.cout, int(np.prod(geo.out_grid))), dtype=x.dtype)
    with _threads(geo, n):
        _nb.forward(
            _read_only(np.ascontiguousarray(theta, dtype=x.dtype).reshape(geo.cout, -1)),
            _read_only(np.ascontiguousarray(x).reshape(n, geo.cin, -1)),
            plan.runs, plan.outruns, plan.shifts, plan.width, _tile(geo, out.dtype), geo.groups, _blocks(n), out,
        )  # fmt: skip
    return out


def numba_adjoint(theta: np.ndarray, y: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """``K^T y`` for ``y`` of shape ``(n, cout, *out_grid)``; returns ``(n, cin, prod(grid))``."""
    plan = flat_plan(geo)
    n = y.shape[0]
    out = np.empty((n, geo.cin, int(np.prod(geo.grid))), dtype=y.dtype)
    S = int(np.prod(geo.stencil))
    # the transposed stencil of each group, (cin, cout/G * S): column o * S + j
    G, og, cg = geo.groups, geo.cout_group, geo.cin_group
    blocks = np.asarray(theta, dtype=y.dtype).reshape(G, og, cg, S).transpose(0, 2, 1, 3)
    theta_t = np.ascontiguousarray(blocks).reshape(geo.cin, og * S)
    with _threads(geo, n):
        _nb.adjoint(
            _read_only(theta_t),
            _read_only(np.ascontiguousarray(y).reshape(n, geo.cout, -1)),
            plan.runs, plan.outruns, plan.shifts, plan.width, _tile(geo, out.dtype), plan.injective, G, _blocks(n), out,
        )  # fmt: skip
    return out


def numba_gradient(x: np.ndarray, w: np.ndarray, geo: ConvGeometry, per_example: bool) -> np.ndarray:
    """Stencil gradient ``(cout, cin/G, S)`` (or ``(n, cout, cin/G, S)``) of ``<w, K(θ) x>``."""
    plan = flat_plan(geo)
    n = x.shape[0]
    S = int(np.prod(geo.stencil))
    with _threads(geo, n):
        blocks = n if per_example else max(1, _blocks(n))
        g = np.empty((blocks, geo.cout, geo.cin_group * S), dtype=x.dtype)
        group = 1 if per_example else _group(geo, g.dtype)
        tile = _tile(geo, g.dtype) if group == 1 else max(64, _capacity(geo, g.dtype))
        _nb.gradient(
            _read_only(np.ascontiguousarray(x).reshape(n, geo.cin, -1)),
            _read_only(np.ascontiguousarray(w, dtype=x.dtype).reshape(n, geo.cout, -1)),
            plan.runs, plan.outruns, plan.shifts, plan.width, tile, group, geo.groups, g,
        )  # fmt: skip
    g = g.reshape(blocks, geo.cout, geo.cin_group, S)
    return g if per_example else g.sum(0)
