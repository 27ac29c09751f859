r"""The registry of built-in families: one entry per family, read by every command that lists them.

Each :class:`Family` declares once what the commands need to know about it:

* its name on the command line (``structops train --kernel NAME``) and how the command builds
  it for examples of shape ``(C, *grid)`` from the layer options (:class:`LayerOptions`:
  channels, stencil, boundary, stride, hidden rows), and which of those options it reads;
* the rows it contributes to ``structops compare`` (a label and the configuration overrides);
* the instances ``structops check`` runs :func:`structops.testing.check_kernel` on (per size,
  once, and in the full run only);
* its row in the README's table of families (signature, number of parameters :math:`p`, and
  :math:`K(\theta)`), which ``docs/update_readme.py`` writes.

``structops check``, ``structops train``/``compare`` (:mod:`structops.train`) and the README
table all read :data:`FAMILIES`: adding a built-in family is its module plus one entry here
(``docs/guide.md``, "Adding a built-in family"). The families are the parametric models of
Lars Ruthotto's lecture notes *Numerical Methods for Deep Learning*, "Parametric Models", and
their project ideas.

Examples
--------
>>> [f.name for f in FAMILIES][:4]
['dense', 'diagonal', 'antisymmetric', 'mmatrix']
>>> options = LayerOptions(image_shape=(1, 8, 8), channels=8, stencil=3)
>>> family("conv").build(options)
Conv(grid=(8, 8), stencil=(3, 3), bc='zero', in_channels=1, out_channels=8, stride=(1, 1), method='direct')
>>> family_names("stride")
('conv', 'symmetric', 'separable', 'depthwise')
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from . import kernels
from ._validation import check_int_tuple
from .kernels.conv._core import BOUNDARY_CONDITIONS

__all__ = [
    "BOUNDARY_CONDITIONS",
    "FAMILIES",
    "LAYER_OPTIONS",
    "WRAPPER_ROWS",
    "Family",
    "LayerOptions",
    "check_instances",
    "compare_rows",
    "family",
    "family_names",
    "families_table",
    "locally_connected",
    "tridiagonal_kernel",
]

#: The family-specific options of ``structops train`` (the :class:`LayerOptions` a family may read).
LAYER_OPTIONS = ("channels", "stencil", "bc", "stride", "hidden")


@dataclass(frozen=True)
class LayerOptions:
    """What the command line says about the layer, for examples of shape ``image_shape = (C, *grid)``.

    Attributes
    ----------
    image_shape : tuple of int
        ``(in_channels, *grid)`` of one example.
    channels : int
        Output channels (convolutions, ``linear``).
    stencil : int or sequence of int
        Stencil shape (an int: the same on every axis).
    bc : str
        Boundary condition (one of ``BOUNDARY_CONDITIONS``, the convolutions').
    stride : int or sequence of int
        Stride of the convolutions.
    hidden : int or None
        Rows of ``dense`` (None: as many as input pixels).
    """

    image_shape: tuple[int, ...]
    channels: int = 8
    stencil: int | Sequence[int] = 3
    bc: str = "zero"
    stride: int | Sequence[int] = 1
    hidden: int | None = None

    @property
    def grid(self) -> tuple[int, ...]:
        """The spatial shape of one example."""
        return tuple(self.image_shape[1:])

    @property
    def size(self) -> int:
        """Number of entries of one example, :math:`N`."""
        return int(np.prod(self.image_shape))

    def conv(self, family: Callable[..., kernels.ParametricKernel]) -> kernels.ParametricKernel:
        """``family(grid, stencil, bc=, in_channels=, out_channels=, stride=)``: a multi-channel convolution."""
        return family(
            self.grid,
            self.stencil,
            bc=self.bc,
            in_channels=self.image_shape[0],
            out_channels=self.channels,
            stride=self.stride,
        )


Builder = Callable[[], Sequence[kernels.ParametricKernel]]


def _none() -> tuple[kernels.ParametricKernel, ...]:
    return ()


@dataclass(frozen=True)
class Family:
    r"""One built-in family as the commands know it.

    Attributes
    ----------
    name : str
        Its name on the command line (``--kernel``).
    build : callable
        ``build(options)``: the family for a :class:`LayerOptions`.
    options : tuple of str
        The entries of :data:`LAYER_OPTIONS` ``build`` reads (others are an error on the command line).
    compare : tuple of (str, dict)
        Rows of ``structops compare``: a label (its first word selects it with ``--families``)
        and :class:`~structops.train.TrainConfig` overrides.
    check_per_size : callable
        ``check_per_size(n)``: instances ``structops check`` runs at every size ``n``.
    check : callable
        Instances ``structops check`` runs once (``--quick`` too).
    check_full : callable
        Instances only the full ``structops check`` runs.
    table : tuple of str
        The README row: signature, number of parameters :math:`p`, :math:`K(\theta)`.
    """

    name: str
    build: Callable[[LayerOptions], kernels.ParametricKernel]
    options: tuple[str, ...] = ()
    compare: tuple[tuple[str, dict[str, Any]], ...] = ()
    check_per_size: Callable[[int], Sequence[kernels.ParametricKernel]] = field(default=lambda n: ())
    check: Builder = _none
    check_full: Builder = _none
    table: tuple[str, str, str] = ("", "", "")


def tridiagonal_kernel(n: int) -> kernels.LinearKernel:
    r"""A user-pattern :class:`~structops.LinearKernel`: :math:`K = I + \mathrm{tridiag}(\theta_1, \theta_2, \theta_3)`.

    Three parameters shared along the sub-, main and super-diagonal and the offset
    :math:`q = \operatorname{vec}(I)`, so ``Q`` has :math:`3n - 2` nonzeros.

    Parameters
    ----------
    n : int
        Size of ``K`` (``n >= 1``).

    Returns
    -------
    LinearKernel

    Examples
    --------
    >>> tridiagonal_kernel(3).matrix(np.array([1.0, 2.0, 3.0]))
    array([[3., 3., 0.],
           [1., 3., 3.],
           [0., 1., 3.]])
    """
    rows, cols, par = [], [], []
    for offset, which in ((-1, 0), (0, 1), (1, 2)):
        i = np.arange(max(0, -offset), min(n, n - offset))
        rows.append(i)
        cols.append(i + offset)
        par.append(np.full(i.size, which))
    r, c, k = (np.concatenate(a) for a in (rows, cols, par))
    Q = sp.csr_array((np.ones(r.size), (r + c * n, k)), shape=(n * n, 3))
    return kernels.LinearKernel(Q, (n, n), q=np.eye(n).ravel(order="F"))


def locally_connected(image_shape, stencil, out_channels: int = 1) -> kernels.LinearKernel:
    r"""A locally connected layer as a :class:`~structops.LinearKernel` (an untied convolution).

    Like a zero-boundary convolution, output pixel :math:`i` of channel :math:`o` combines the
    input pixels of a ``stencil`` neighbourhood of :math:`i` in every input channel, but every
    output pixel has its own weights: ``vec(K) = Q θ`` with one parameter per (output channel,
    output pixel, input channel, stencil tap inside the grid). It sits between ``Conv``
    (weights shared across pixels) and ``Dense`` (every pixel connected).

    Parameters
    ----------
    image_shape : sequence of int
        ``(in_channels, *grid)``.
    stencil : int or sequence of int
    out_channels : int, optional

    Examples
    --------
    >>> k = locally_connected((1, 8, 8), 3)
    >>> k.shape, k.nparams
    ((64, 64), 484)
    """
    cin, *rest = check_int_tuple(image_shape, "image_shape")
    grid = tuple(rest)
    stencil = check_int_tuple(stencil, "stencil", ndim=len(grid))
    cout = int(out_channels)
    G = int(np.prod(grid))
    rows_n, cols_n = cout * G, cin * G
    pix = np.stack(np.unravel_index(np.arange(G), grid), axis=1)  # (G, ndim)
    taps = np.stack(np.unravel_index(np.arange(int(np.prod(stencil))), stencil), axis=1)  # (S, ndim)
    centre = np.array([s // 2 for s in stencil])
    src = pix[:, None, :] + centre - taps[None, :, :]  # convolution: x_{i + c - j}
    inside = np.all((src >= 0) & (src < np.array(grid)), axis=2)  # (G, S)
    gi, sj = np.nonzero(inside)
    src_lin = np.ravel_multi_index(tuple(src[gi, sj].T), grid)
    o = np.repeat(np.arange(cout), gi.size * cin)
    c = np.tile(np.repeat(np.arange(cin), gi.size), cout)
    g = np.tile(gi, cout * cin)
    s = np.tile(src_lin, cout * cin)
    rows = o * G + g
    cols = c * G + s
    p = rows.size
    Q = sp.csr_array((np.ones(p), (rows + cols * rows_n, np.arange(p))), shape=(rows_n * cols_n, p))
    return kernels.LinearKernel(Q, (rows_n, cols_n))


def _sparse_neighbourhood(options: LayerOptions) -> kernels.Sparse:
    """:class:`~structops.Sparse` on the pattern of a stencil: each output pixel reads its neighbourhood.

    The pattern is where a zero-boundary convolution's ``K`` has entries (the rows of its
    ``Q`` that are not empty), so it is built in O(nnz), and every entry gets its own weight.
    """
    conv = kernels.Conv(options.grid, options.stencil, in_channels=options.image_shape[0])
    lin = np.unique(conv.Q.tocoo().row)
    m = conv.shape[0]
    return kernels.Sparse(sp.csc_array((np.ones(lin.size, dtype=bool), (lin % m, lin // m)), shape=conv.shape))


_CONV_OPTIONS = ("channels", "stencil", "bc", "stride")
_Conv = kernels.Conv

#: The built-in families, in the order the commands list them.
FAMILIES: tuple[Family, ...] = (
    Family(
        "dense",
        lambda o: kernels.Dense(o.hidden or o.size, o.size),
        options=("hidden",),
        compare=(("dense", {"kernel": "dense"}),),
        check_per_size=lambda n: (kernels.Dense(n, n + 1),),
        check=lambda: (kernels.Dense(2, 9),),
        table=("`Dense(rows, cols)`", "`rows·cols`", "`mat(θ)`"),
    ),
    Family(
        "diagonal",
        lambda o: kernels.Diagonal(o.size),
        compare=(("diagonal", {"kernel": "diagonal"}),),
        check_per_size=lambda n: (kernels.Diagonal(n),),
        table=("`Diagonal(n)`", "`n`", "`diag(θ)`"),
    ),
    Family(
        "antisymmetric",
        lambda o: kernels.Antisymmetric(o.size),
        compare=(("antisymmetric", {"kernel": "antisymmetric"}),),
        check_per_size=lambda n: (kernels.Antisymmetric(n),),
        table=("`Antisymmetric(n)`", "`n(n−1)/2`", "`U(θ) − U(θ)ᵀ`, `θ` fills the strict upper triangle"),
    ),
    Family(
        "mmatrix",
        lambda o: kernels.MMatrix(o.size),
        compare=(("mmatrix", {"kernel": "mmatrix"}),),
        check_per_size=lambda n: (kernels.MMatrix(n),),
        check=lambda: (kernels.Softplus(kernels.MMatrix(4)),),
        table=("`MMatrix(n)`", "`n(n−1)`", "off-diagonals `−θ`, zero row sums, `θ ≥ 0`"),
    ),
    Family(
        "linear",
        lambda o: locally_connected(o.image_shape, o.stencil, o.channels),
        options=("channels", "stencil"),
        compare=(("linear (local 3x3)", {"kernel": "linear", "channels": 1}),),
        check_per_size=lambda n: (tridiagonal_kernel(n),),
        table=("`LinearKernel(Q, shape, q=None)`", "`Q.shape[1]`", "any affine family `vec(K) = Qθ + q`"),
    ),
    Family(
        "conv",
        lambda o: o.conv(kernels.Conv),
        options=_CONV_OPTIONS,
        compare=(
            ("conv 3x3, 1 channel", {"kernel": "conv", "channels": 1}),
            ("conv 3x3, 8 channels", {"kernel": "conv", "channels": 8}),
        ),
        check=lambda: (
            _Conv((8,), (3,)),
            _Conv((5, 6), (3, 3), bc="periodic"),
            kernels.Chain(kernels.AvgPool((6, 4), 2, channels=2), _Conv((6, 4), 3, out_channels=2)),
        ),
        check_full=lambda: (
            _Conv((6, 5), (3, 3), in_channels=2, out_channels=3),
            _Conv((7,), (3,), bc="reflect"),
            _Conv((9, 7), (4, 3), bc="replicate", stride=(2, 1), in_channels=2, out_channels=2),
            _Conv((8, 8), (5, 5), bc="valid", stride=2),
            _Conv((4, 5, 3), (3, 2, 3), bc="periodic", in_channels=2, out_channels=1),
            _Conv((10, 9), (7, 7), bc="zero", method="fft"),
            kernels.Chain(kernels.AvgPool((8,), 4, channels=3), _Conv((8,), 5, bc="periodic", out_channels=3)),
            kernels.Softplus(_Conv((6, 6), (3, 3), bc="zero", method="fft")),  # a nonnegative stencil
        ),
        table=(
            "`Conv(grid, stencil, *, bc, in_channels, out_channels, stride)`",
            "`cout·cin·prod(stencil)`",
            "multi-channel convolution, 1–3 D",
        ),
    ),
    Family(
        "mmatrixconv",
        lambda o: kernels.MMatrixConv(o.grid, o.stencil, bc=o.bc, channels=o.image_shape[0]),
        options=("stencil", "bc"),
        compare=(("mmatrixconv 3x3", {"kernel": "mmatrixconv"}),),
        check=lambda: (
            kernels.MMatrixConv((6, 5), 3, bc="periodic"),
            kernels.Softplus(kernels.MMatrixConv((6, 5), 3, channels=2)),
        ),
        table=(
            "`MMatrixConv(grid, stencil, *, bc, channels)`",
            "`channels·(prod(stencil) − 1)`",
            "depthwise stencils with an M-matrix: off-centre taps `−θ ≤ 0`, zero sums",
        ),
    ),
    Family(
        "symmetric",
        lambda o: o.conv(kernels.SymmetricConv),
        options=_CONV_OPTIONS,
        compare=(("symmetric 3x3, 8 channels", {"kernel": "symmetric", "channels": 8}),),
        check=lambda: (kernels.SymmetricConv((7, 6), 3, bc="symmetric"),),
        check_full=lambda: (
            kernels.SymmetricConv((6, 6), 5, symmetry="isotropic", in_channels=2, out_channels=2, stride=2),
        ),
        table=(
            "`SymmetricConv(grid, stencil, *, symmetry, …)`",
            '`cout·cin·prod(s//2 + 1)` (`"double"`)',
            "stencils mirror symmetric about every axis (or isotropic)",
        ),
    ),
    Family(
        "separable",
        lambda o: o.conv(kernels.SeparableConv),
        options=_CONV_OPTIONS,
        compare=(("separable 3x3, 8 channels", {"kernel": "separable", "channels": 8}),),
        check=lambda: (kernels.SeparableConv((7, 6), (3, 5), out_channels=2),),
        check_full=lambda: (kernels.SeparableConv((5, 4, 3), 3, bc="periodic", rank=2),),
        table=(
            "`SeparableConv(grid, stencil, *, rank, …)`",
            "`rank·cout·cin·sum(stencil)`",
            "stencils as sums of outer products of 1-D stencils",
        ),
    ),
    Family(
        "depthwise",
        lambda o: o.conv(kernels.DepthwiseSeparableConv),
        options=_CONV_OPTIONS,
        compare=(("depthwise 3x3, 8 channels", {"kernel": "depthwise", "channels": 8}),),
        check=lambda: (kernels.DepthwiseSeparableConv((6, 6), 3, in_channels=2, out_channels=3),),
        check_full=lambda: (
            kernels.DepthwiseSeparableConv((9,), 3, bc="reflect", in_channels=3, out_channels=2, multiplier=2),
        ),
        table=(
            "`DepthwiseSeparableConv(grid, stencil, *, in_channels, out_channels, multiplier)`",
            "`cin·m·prod(stencil) + cout·cin·m`",
            "a depthwise convolution, then a 1×1 channel mix",
        ),
    ),
    Family(
        "wavelet",
        lambda o: kernels.Wavelet(o.grid if o.image_shape[0] == 1 else o.image_shape),
        compare=(("wavelet (haar subbands)", {"kernel": "wavelet"}),),
        check=lambda: (kernels.Wavelet((8, 8)),),
        check_full=lambda: (kernels.Wavelet(16, "db2", per="coefficient"),),
        table=("`Wavelet(grid, wavelet)`", "subbands or coefficients", "`Wᵀ diag(Qθ) W`, orthonormal wavelet basis"),
    ),
    Family(
        "sparse",
        _sparse_neighbourhood,
        options=("stencil",),
        compare=(("sparse (3x3 neighbourhoods)", {"kernel": "sparse"}),),
        check=lambda: (kernels.Sparse(np.eye(5, 6, dtype=bool) | np.eye(5, 6, k=2, dtype=bool)),),
        table=("`Sparse(pattern)`", "`nnz`", "`θ` fills a fixed sparsity pattern"),
    ),
    Family(
        "banded",
        lambda o: kernels.Banded(o.size, 1, 1),
        compare=(("banded (tridiagonal)", {"kernel": "banded"}),),
        check=lambda: (kernels.Banded(6, 1, 2),),
        table=("`Banded(n, lower, upper)`", "entries in the band", "every entry of the band is free"),
    ),
    Family(
        "antisymmetricconv",
        lambda o: kernels.AntisymmetricConv(o.grid, o.stencil, bc=o.bc, channels=o.image_shape[0]),
        options=("stencil", "bc"),
        compare=(("antisymmetricconv 3x3", {"kernel": "antisymmetricconv"}),),
        # the antisymmetric kernel carried to convolutions
        check=lambda: (kernels.AntisymmetricConv((6, 5), 3, bc="periodic", channels=2),),
        check_full=lambda: (kernels.AntisymmetricConv((7, 6), (4, 3), channels=2),),
        table=(
            "`AntisymmetricConv(grid, stencil, *, bc, channels)`",
            "`channels²·prod(stencil)`",
            "`C(θ) − C(θ)ᵀ`: antisymmetric, purely imaginary eigenvalues (`bc` zero or periodic)",
        ),
    ),
    Family(
        "cayley",
        lambda o: kernels.CayleyConv(o.grid, o.stencil, channels=o.image_shape[0]),
        options=("stencil",),
        compare=(("cayley 3x3 (orthogonal)", {"kernel": "cayley"}),),
        # its orthogonal Cayley transform
        check=lambda: (kernels.CayleyConv((6, 5), 3),),
        check_full=lambda: (kernels.CayleyConv((4, 5, 3), (3, 2, 3), channels=2),),
        table=(
            "`CayleyConv(grid, stencil, *, channels)`",
            "`channels²·prod(stencil)`",
            "`(I + A)⁻¹(I − A)`, `A` periodic `AntisymmetricConv`: orthogonal, per-frequency solves",
        ),
    ),
)

#: The README table's rows for the wrappers, which turn any family into another one.
WRAPPER_ROWS: tuple[tuple[str, str, str], ...] = (
    ("`Softplus(kernel)`", "as `kernel`", "`K(softplus(φ))`: positivity without bounds"),
    ("`LinearReparam(kernel, P)`", "`P.shape[1]`", "`K(Pφ)` for a fixed sparse `P`"),
    ("`pool @ kernel`, `Chain(outer, kernel)`", "as `kernel`", "`A K(θ)`, e.g. `AvgPool` after a `Conv`"),
)


def family(name: str) -> Family:
    """The entry of :data:`FAMILIES` called ``name``.

    Raises
    ------
    ValueError
        If no built-in family has that name (the message lists them).
    """
    for entry in FAMILIES:
        if entry.name == name:
            return entry
    raise ValueError(f"`kernel` must be one of {family_names()}, got {name!r}.")


def family_names(option: str | None = None) -> tuple[str, ...]:
    """The names of the built-in families, or of those that read the layer option ``option``."""
    return tuple(f.name for f in FAMILIES if option is None or option in f.options)


def compare_rows() -> tuple[tuple[str, dict[str, Any]], ...]:
    """The rows of ``structops compare``: (label, configuration overrides), family by family."""
    return tuple(row for f in FAMILIES for row in f.compare)


def check_instances(quick: bool = False) -> list[kernels.ParametricKernel]:
    """The instances ``structops check`` runs: every family's per-size ones, its fixed ones, then the full run's.

    Parameters
    ----------
    quick : bool, optional
        Size 3 only and no full-run instances (the full run takes sizes 1, 3 and 7).
    """
    found: list[kernels.ParametricKernel] = []
    for n in (3,) if quick else (1, 3, 7):
        found += [k for f in FAMILIES for k in f.check_per_size(n)]
    found += [k for f in FAMILIES for k in f.check()]
    if not quick:
        found += [k for f in FAMILIES for k in f.check_full()]
    return found


def families_table() -> str:
    """The README's table of families (markdown): one row per built-in family, then the wrappers."""
    lines = ["| family | `p` | `K(θ)` |", "| --- | --- | --- |"]
    lines += [f"| {' | '.join(f.table)} |" for f in FAMILIES]
    lines += [f"| {' | '.join(row)} |" for row in WRAPPER_ROWS]
    return "\n".join(lines) + "\n"
