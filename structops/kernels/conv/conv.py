r"""Multi-channel convolutions in 1, 2 and 3 dimensions as a parametric kernel family."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import scipy.fft as sfft

from ..._backend import have_numba, workers
from ..._validation import check_theta
from .._base import ParametricKernel
from .._sparse import csc_from_triplets
from ..diagonalized import (
    ConvStencil,
    Diagonalized,
    FourierMultiplier,
    KroneckerMultiplier,
    PeriodicEmbedding,
    half_spectrum,
)
from . import _core as core
from ._core import ConvGeometry, check_geometry  # noqa: F401 (check_geometry: re-exported for the families)
from .polyphase import PolyphaseMultiplier, polyphase_applies
from .torch_geometry import check_torch_module

METHODS = ("auto", "direct", "fft")
#: Boundaries under which a stencil that is an outer product gives a Kronecker product of 1-D operators.
KRONECKER_BCS = ("zero", "periodic", "reflect", "symmetric", "replicate")
#: Largest grid axis whose dense 1-D factor :meth:`Conv.diagonalize` factorises (an ``n³`` SVD).
KRONECKER_MAX_AXIS = 4096


def fourier_multiplier(kernel: ParametricKernel, theta, what: str) -> FourierMultiplier:
    """``kernel.diagonalize(theta)`` of a block-circulant convolution family; ``what`` (a method) needs one.

    Raises
    ------
    ValueError
        If the family's geometry is not block circulant (``bc="periodic"``, stride 1, the default
        padding) or its diagonalisation is not the FFT's.
    """
    geo = getattr(kernel, "geometry", None)
    D = kernel.diagonalize(theta) if geo is None or core.block_circulant(geo) else None
    if not isinstance(D, FourierMultiplier):
        raise ValueError(
            f"`{what}` needs bc='periodic' and stride 1, with the default padding (a circulant operator); "
            f"this is {kernel!r}."
        )
    return D


def deprecated_symbol(kernel: ParametricKernel, theta) -> np.ndarray:
    """The removed ``symbol(theta)`` of a convolution family: warn, then ``diagonalize(theta).full_blocks()``."""
    warnings.warn(
        "The convolution families' `symbol(theta)` is deprecated and will be removed; use "
        "kernel.diagonalize(theta).full_blocks() (the per-frequency blocks, shape (*grid, out, in)).",
        DeprecationWarning,
        stacklevel=3,
    )
    return fourier_multiplier(kernel, theta, "symbol").full_blocks()


class _ConvData(NamedTuple):
    """What a :class:`Conv` Jacobian keeps of its data: ``x``, and its spectrum for an FFT Jacobian."""

    x: np.ndarray
    spectrum: np.ndarray | None


class Conv(ParametricKernel):
    r"""Multi-channel convolution :math:`K(\theta)` with a boundary condition and a stride.

    Output channel :math:`o` is :math:`z_o = \sum_c K^{oc}(\theta^{oc})\,x_c` (the lecture notes' block
    operator of convolutions), each block the lecture notes' discrete convolution

    .. math::
        z_i = \sum_j \theta_j\, x_{i + c - j}, \qquad c = s /\!/ 2 \text{ per axis},

    sampled at :math:`0, s_t, 2s_t, \dots` on each axis for stride :math:`s_t`.

    Parameters
    ----------
    grid : int or sequence of int
        Shape of one image (1, 2 or 3 axes: signals, images, videos).
    stencil : int or sequence of int
        Stencil shape, same number of axes; odd or even sizes.
    bc : {"zero", "periodic", "reflect", "symmetric", "replicate", "valid"}
        Boundary condition: ``"zero"`` (Toeplitz/BTTB), ``"periodic"`` (circulant/BCCB,
        diagonalised by the FFT), ``"reflect"`` (mirror about the edge sample, as numpy's and
        PyTorch's ``reflect``), ``"symmetric"`` (half-sample mirror, repeating the edge sample,
        as numpy's ``symmetric``), ``"replicate"`` (repeat the edge sample) -- all with output on
        the same grid -- or ``"valid"`` (no padding: output ``grid - stencil + 1`` per axis).
    in_channels, out_channels : int
        Channel counts.
    stride : int or sequence of int
        Output sampling step per axis.
    method : {"auto", "direct", "fft"}
        Direct stencil sums or FFTs for the operator (``self.method``); ``"auto"`` picks by a
        cost model (see ``Conv._choose_method``).
    jac_method : {"auto", "direct", "fft"}, optional
        The same for the Jacobians (``self.jac_method``); default: as ``method``. The method
        of a Jacobian is fixed when it is built: an FFT Jacobian transforms its data once, at
        :meth:`~structops.kernels.ParametricKernel.jac`, and each later product transforms only the other side,
        so ``"fft"`` pays
        for Jacobians used for many products (a Krylov fit of a large stencil); ``"auto"``
        prices a Jacobian used for one gradient, which costs the same transforms as an
        operator product.
    dilation : int or sequence of int, optional
        PyTorch's ``dilation``: tap :math:`j` reads offset :math:`d\,j` per axis, so the stencil
        covers the extent :math:`e = d(s - 1) + 1` (default 1).
    groups : int, optional
        PyTorch's ``groups``, dividing both channel counts: output channel :math:`o` reads only
        the ``in_channels // groups`` input channels of its group, so :math:`K` is block
        diagonal over the groups and :math:`\theta` has shape
        ``(out_channels, in_channels // groups, *stencil)`` (default 1).
    padding : None, "same", "valid", int or sequence of int, optional
        Samples that ``bc`` adds on each side of each axis. None (default): ``e - 1`` in all,
        ``e - 1 - e // 2`` before (output on the input grid at stride 1; none for
        ``bc="valid"``); ``"same"`` the same (stride 1 only, as in PyTorch); ``"valid"`` none;
        an int or one per axis :math:`p`: :math:`p` on both sides, as PyTorch's ``padding``
        with ``padding_mode`` the ``bc`` (zeros, circular, reflect, replicate; ``symmetric``
        has no PyTorch mode). The resolved ``(before, after)`` pairs are the attribute ``padding``.

    Raises
    ------
    ValueError
        If ``grid`` does not have 1, 2 or 3 axes, ``stencil`` or ``stride`` has another
        number of axes, a size or stride is below 1, ``bc`` or ``method`` is unknown, or the
        stencil is larger than the grid where ``bc`` cannot take it (``"valid"``: stencil
        ``<=`` grid; ``"reflect"``: ``stencil // 2 <= grid - 1``, one mirror image;
        ``"symmetric"``: ``stencil // 2 <= grid``).
        Also, naming the argument: ``groups`` not dividing both channel counts, a negative
        ``padding`` or an unknown padding word, ``padding="same"`` with a stride above 1, a
        nonzero ``padding`` with ``bc="valid"``, a dilated stencil wider than the padded grid,
        or a pad wider than ``bc`` can mirror.
    TypeError
        If a size, a stride, a dilation or a channel count is not an integer.

    Attributes
    ----------
    nparams : int
        ``out_channels * in_channels // groups * prod(stencil)``.
    dilation, groups, padding
        The validated geometry (:class:`~structops.kernels.conv.ConvGeometry`): ``dilation``
        per axis, ``groups``, and ``padding`` as ``(before, after)`` per axis.
    backend : {"numba", "numpy"}
        What runs the direct sums: the numba kernels if they are installed and switched on
        (:func:`structops.set_accelerator`) when the family is built, else numpy. Fixed at
        construction, like ``method`` (whose cost model it enters): switching the accelerator
        later affects only families built afterwards.
    in_shape, out_shape : tuple of int
        ``(in_channels, *grid)`` and ``(out_channels, *grid_out)``.

    Notes
    -----
    With dilation :math:`d`, groups and padding :math:`p_-` before, output :math:`i` of channel
    :math:`o` is

    .. math::
        z_{o,i} = \sum_{c \in G(o)} \sum_j \theta_{o,c,j}\, x^p_{c,\ \mathrm{st}\,i + d(s - 1 - j)},

    :math:`x^p` the input padded by ``bc`` (index :math:`q` of :math:`x^p` is grid sample
    :math:`q - p_-`, mapped by the boundary) and :math:`G(o)` the input channels of
    :math:`o`'s group.

    :math:`\theta` is the array of shape ``(out_channels, in_channels // groups, *stencil)``
    (PyTorch's weight layout) flattened in C-order; examples are ``(in_channels, *grid)``
    flattened in C-order, and rows/columns of :meth:`~structops.kernels.ParametricKernel.matrix` follow that order.

    Nothing of size :math:`N^2` is ever built by :meth:`~structops.kernels.ParametricKernel.apply`,
    :meth:`~structops.kernels.ParametricKernel.op`, :meth:`~structops.kernels.ParametricKernel.jac` or
    :attr:`~structops.kernels.ParametricKernel.Q` (sparse, one entry per output position and in-grid tap:
    :math:`O(\operatorname{nnz})`); :meth:`~structops.kernels.ParametricKernel.matrix` raises ``MemoryError``
    for sizes whose dense form would not fit.

    Every boundary condition is a valid convolution on a padded grid,
    :math:`K = S\,C_\theta\,P_{bc}`; the adjoint :math:`K^\top = P_{bc}^\top C_\theta^\top S^\top`
    is a correlation followed by folding the padding back (for periodic: the conjugate
    spectrum, :math:`K^\top y = \mathrm{real}(F^{-1}(\bar\lambda \odot F y))`). The Jacobian
    with respect to :math:`\theta` is the convolution with the roles of stencil and signal
    exchanged; its adjoint is the correlation of the output cotangent with the padded input,
    summed over examples: the lecture notes' :math:`\mathrm{real}(Q^\top F((F^*Y^\top)\odot(FW^\top))e_n)`.

    **PyTorch.** With ``w = theta_to_torch(theta)`` (``θ`` flipped on the spatial axes),
    ``K(θ) x`` equals ``torch.nn.functional.conv{1,2,3}d(x, w, padding="same")`` for
    ``bc="zero"`` and stride 1 (any stencil size), and for odd stencils
    ``conv(F.pad(x, s//2, mode="circular"), w)`` for ``"periodic"``, ``mode="reflect"`` and
    ``mode="replicate"`` likewise; ``"valid"`` is ``padding=0``. Strides match torch's
    ``stride=`` for odd stencils. With ``dilation``, ``groups`` and ``padding`` given,
    ``K(θ) x`` equals ``nn.Conv{1,2,3}d(in_channels, out_channels, stencil, stride=stride,
    padding=padding, dilation=dilation, groups=groups, padding_mode=mode)`` with weight
    ``theta_to_torch(θ)`` for every bc but ``symmetric`` (mode ``zeros``, ``circular``,
    ``reflect``, ``replicate``). To use torch's weights and convention directly, pass
    ``theta_from_torch(module)`` (the module's geometry is checked against the family's).

    Examples
    --------
    The lecture notes' 4×4 Toeplitz matrix for a stencil :math:`(\theta_1, \theta_2, \theta_3)`:

    >>> Conv(4, 3).matrix(np.array([1.0, 2.0, 3.0]))
    array([[2., 1., 0., 0.],
           [3., 2., 1., 0.],
           [0., 3., 2., 1.],
           [0., 0., 3., 2.]])
    >>> Conv(4, 3, bc="periodic").matrix(np.array([1.0, 2.0, 3.0]))
    array([[2., 1., 0., 3.],
           [3., 2., 1., 0.],
           [0., 3., 2., 1.],
           [1., 0., 3., 2.]])
    """

    def __init__(
        self,
        grid: int | Sequence[int],
        stencil: int | Sequence[int],
        *,
        bc: str = "zero",
        in_channels: int = 1,
        out_channels: int = 1,
        stride: int | Sequence[int] = 1,
        method: str = "auto",
        jac_method: str | None = None,
        dilation: int | Sequence[int] = 1,
        groups: int = 1,
        padding: int | str | Sequence[int] | None = None,
    ) -> None:
        geometry = ConvGeometry(grid, stencil, stride, bc, in_channels, out_channels, dilation, groups, padding)
        self._setup(geometry, method, jac_method)

    @classmethod
    def from_geometry(cls, geometry: ConvGeometry, *, method: str = "auto", jac_method: str | None = None) -> Conv:
        """The convolution on an already validated :class:`~structops.kernels.conv.ConvGeometry`.

        Nothing is validated twice.

        Examples
        --------
        >>> geo = ConvGeometry((6, 6), 3, bc="periodic", cout=2)
        >>> Conv.from_geometry(geo).out_shape
        (2, 6, 6)
        """
        if not isinstance(geometry, ConvGeometry):
            raise TypeError(f"`geometry` must be a ConvGeometry, got {geometry!r}.")
        conv = cls.__new__(cls)
        conv._setup(geometry, method, jac_method)
        return conv

    def _setup(self, geometry: ConvGeometry, method: str, jac_method: str | None) -> None:
        if method not in METHODS:
            raise ValueError(f"`method` must be one of {METHODS!r}, got {method!r}.")
        jac_method = method if jac_method is None else jac_method
        if jac_method not in METHODS:
            raise ValueError(f"`jac_method` must be one of {METHODS!r}, got {jac_method!r}.")
        geo = self.geometry = geometry
        self.grid, self.stencil, self.stride, self.bc = geo.grid, geo.stencil, geo.stride, geo.bc
        self.in_channels, self.out_channels = geo.cin, geo.cout
        self.dilation, self.groups, self.padding = geo.dilation, geo.groups, geo.padding
        # fixed here, with the method: set_accelerator only affects families built afterwards
        self.backend = "numba" if have_numba() else "numpy"
        self.method = self._choose_method() if method == "auto" else method
        self.jac_method = self._choose_method() if jac_method == "auto" else jac_method
        nparams = int(np.prod(geo.theta_shape))
        super().__init__(nparams, (geo.cin, *geo.grid), (geo.cout, *geo.out_grid))

    def __repr__(self) -> str:
        geo = self.geometry
        extra = "" if all(d == 1 for d in geo.dilation) else f", dilation={geo.dilation}"
        extra += "" if geo.groups == 1 else f", groups={geo.groups}"
        extra += "" if geo.default_padding else f", padding={geo.padding}"
        return (
            f"Conv(grid={self.grid}, stencil={self.stencil}, bc={self.bc!r}, in_channels={self.in_channels}, "
            f"out_channels={self.out_channels}, stride={self.stride}{extra}, method={self.method!r})"
        )

    @property
    def theta_shape(self) -> tuple[int, ...]:
        """``(out_channels, in_channels // groups, *stencil)``: ``theta`` may be passed as this array."""
        return self.geometry.theta_shape

    # --------------------------------------------------------------- cost model
    def _choose_method(self) -> str:
        """Pick direct sums or FFTs with a cost model calibrated on measured times.

        Estimated nanoseconds per example (float64, one thread; float32 and more threads
        scale both alike)::

            direct = 0.09 cin cout S W + 0.6 (cin + cout) Lp
            fft    = a (cin + cout) L log2 L + 2 cin cout L + 0.6 (cin + cout) Lp

        with ``S = prod(stencil)``, ``Lp`` the padded grid, ``W`` the flat range of the
        direct sums (about ``prod(out_grid)``), ``L`` the transform size and ``a`` = 0.35 in
        1D, 0.75 in 2D/3D (pocketfft per point). An operator product transforms its input
        and its output; a gradient ``J^T w`` transforms the data and the cotangent (the
        transform of the stencil gradient is shared by all examples), the same count. Without
        numba the direct sums run through numpy (one GEMM
        over channels per stencil offset), costing about 1 ns per multiply-add in the
        single-channel case, 0.3 ns otherwise.
        """
        geo = self.geometry
        S = float(np.prod(geo.stencil))
        Lp = float(np.prod(geo.padded))
        width = float(np.prod(geo.out_grid) * np.prod(geo.stride))
        L = float(np.prod(core.fft_shape(geo)))
        cin, cout = geo.cin, geo.cout
        move = 0.6 * (cin + cout) * Lp
        per_fma = 0.09 if self.backend == "numba" else (1.0 if cin * cout == 1 else 0.3)
        direct = per_fma * cin * cout * S * width + move
        a = 0.35 if geo.ndim == 1 else 0.75
        fft = a * (cin + cout) * L * np.log2(max(L, 2.0)) + 2.0 * cin * cout * L + move
        return "fft" if fft < direct else "direct"

    # ------------------------------------------------------------------- hooks
    def _stencil(self, theta: np.ndarray) -> np.ndarray:
        return theta.reshape(self.geometry.theta_shape)

    def _prepare(self, theta):
        stencil = self._stencil(theta)
        spec = core.spectrum(stencil, self.geometry) if self.method == "fft" else None
        return stencil, spec

    def _state_dtype(self, state):
        return state[0].dtype

    def _apply(self, state, x, transpose):
        stencil, spec = state
        geo = self.geometry
        n = x.shape[0]
        if n == 0:  # an empty batch: nothing to transform (reshape(0, -1) is ambiguous)
            return np.zeros((0, self.shape[1] if transpose else self.shape[0]), dtype=x.dtype)
        if transpose:
            y = x.reshape((n, *self.out_shape))
            if spec is not None:
                out = core.fft_adjoint(spec, y, geo, workers=workers())
            elif self.backend == "numba":
                out = core.numba_adjoint(stencil, y, geo)
            else:
                out = core.pad_adjoint(core.direct_adjoint(stencil, y, geo), geo)
            return out.reshape(n, -1).astype(x.dtype, copy=False)
        xs = x.reshape((n, *self.in_shape))
        if spec is not None:
            z = core.fft_forward(spec, xs, geo, workers=workers())
        elif self.backend == "numba":
            z = core.numba_forward(stencil, xs, geo)
        else:
            z = core.direct_forward(stencil, core.pad(xs, geo), geo)
        return z.reshape(n, -1).astype(x.dtype, copy=False)

    def _prepare_data(self, x, transpose):
        """The data, and for an FFT Jacobian their half-spectrum (input side, or output side for ``K^T``)."""
        n, geo = x.shape[0], self.geometry
        if self.jac_method != "fft" or n == 0:
            return _ConvData(x, None)
        if transpose:
            return _ConvData(x, core.output_spectrum(x.reshape((n, *self.out_shape)), geo, workers=workers()))
        return _ConvData(x, core.input_spectrum(x.reshape((n, *self.in_shape)), geo, workers=workers()))

    def _jvp(self, state, data, v, transpose):
        xf = data.spectrum
        if xf is None:  # J v = K(v) x by direct sums
            stencil = self._stencil(v)
            return self._apply((stencil, None), data.x, transpose)
        # J v = K(v) x: the spectrum of v against the cached spectrum of x
        geo = self.geometry
        spec = core.spectrum(self._stencil(v), geo)
        if transpose:
            out = core.fft_adjoint_spectrum(spec, xf, geo, workers=workers())
        else:
            out = core.fft_forward_spectrum(spec, xf, geo, workers=workers())
        return out.reshape(xf.shape[0], -1).astype(v.dtype, copy=False)

    def _vjp(self, state, data, w, transpose, per_example):
        geo = self.geometry
        xf = data.spectrum
        if xf is not None:
            n = xf.shape[0]
            if transpose:
                # <w, K(θ)^T y> = <K(θ) w, y>: w is the input, the cached y the cotangent
                wf = core.input_spectrum(w.reshape((n, *self.in_shape)), geo, workers=workers())
                g = core.fft_gradient_spectra(wf, xf, geo, per_example, w.dtype, workers(), scratch="x")
            else:
                wf = core.output_spectrum(w.reshape((n, *self.out_shape)), geo, workers=workers())
                g = core.fft_gradient_spectra(xf, wf, geo, per_example, w.dtype, workers(), scratch="w")
            return g.reshape(n, -1) if per_example else g.reshape(-1)
        x = data.x
        # <w, K(θ)^T y> = <K(θ) w, y>: the transposed map swaps the roles of data and cotangent
        if transpose:
            x, w = w, x
        n = x.shape[0]
        xs = x.reshape((n, *self.in_shape))
        ws = w.reshape((n, *self.out_shape))
        if self.backend == "numba":
            g = core.numba_gradient(xs, ws, geo, per_example)
        else:
            g = core.direct_gradient(core.pad(xs, geo), ws, geo, per_example)
        return g.reshape(n, -1) if per_example else g.reshape(-1)

    def _build_Q(self):
        geo = self.geometry
        rows, cols = self.shape
        S, M, N = int(np.prod(self.stencil)), int(np.prod(geo.out_grid)), int(np.prod(self.grid))
        cg = geo.cin_group
        # Q holds at most M * S * cin/G * cout entries (fewer where the boundary drops taps): O(nnz)
        self._check_dense_size(M * S * cg * geo.cout, "Q")
        # for every output position i and stencil offset j: the grid index read (or -1)
        out_idx = np.indices(geo.out_grid).reshape(geo.ndim, -1)  # (d, M)
        j_idx = np.indices(self.stencil).reshape(geo.ndim, -1)  # (d, S)
        src = np.zeros((M, S), dtype=np.int64)
        valid = np.ones((M, S), dtype=bool)
        for a, (s, d, st, idx, g) in enumerate(zip(self.stencil, geo.dilation, self.stride, geo.maps, self.grid)):
            pos = st * out_idx[a][:, None] + d * (s - 1 - j_idx[a][None, :])
            sa = idx[pos]
            valid &= sa >= 0
            src = src * g + np.where(sa >= 0, sa, 0)
        m_i, s_j = np.nonzero(valid)
        src = src[m_i, s_j]
        o, c = np.meshgrid(np.arange(geo.cout), np.arange(cg), indexing="ij")
        o, c = o.reshape(-1, 1), c.reshape(-1, 1)
        row = o * M + m_i[None, :]
        col = ((o // geo.cout_group) * cg + c) * N + src[None, :]  # input channel: c of o's group
        param = (o * cg + c) * S + s_j[None, :]
        lin = (row + col.astype(np.int64) * rows).ravel()
        return csc_from_triplets(np.ones(lin.size), lin, param.ravel(), (rows * cols, self.nparams))

    # -------------------------------------------------------------- spectra
    def diagonalize(self, theta) -> Diagonalized | None:
        r"""``K(θ)`` diagonalised by a fast transform, when its structure gives one.

        * ``bc="periodic"``, stride 1, output on the input grid (the default padding), any
          channels, dilation and groups: a
          :class:`~structops.kernels.diagonalized.FourierMultiplier` of the per-frequency
          ``out × in`` blocks :math:`\hat K(\xi)` (its ``blocks`` on the ``rfftn`` half grid,
          ``full_blocks()`` on the whole ``fftn`` grid; stencils larger than the grid wrap
          around; groups: block-diagonal blocks; dilation: the symbol
          :math:`\sum_j \theta_j e^{-2\pi i \sum_a \xi_a (d_a j_a - e_a/\!/2)/n_a}` of the dilated
          stencil), whose singular values over all frequencies are those of ``K(θ)``;
        * ``bc="periodic"`` with a stride :math:`t` dividing the grid and output grid
          ``grid / t`` (the default padding): a
          :class:`~structops.kernels.conv.PolyphaseMultiplier`, rectangular per-frequency
          blocks of the polyphase components, whose singular values are exactly those of
          ``K(θ)``;
        * one channel, 2-D or 3-D, stride 1, no dilation, the default padding, a boundary
          other than ``"valid"``, and a stencil
          of numerical rank 1 (an outer product :math:`f_0 \otimes f_1 (\otimes f_2)` up to
          round-off): a :class:`~structops.kernels.diagonalized.KroneckerMultiplier` of the
          1-D convolutions :math:`K_a = C_{bc}(f_a)`, whose ``residual`` bounds the round-off
          (see :func:`~structops.kernels.conv.conv.kronecker_split`);
        * otherwise None.
        """
        theta = self.validate_theta(theta)
        geo = self.geometry
        if core.block_circulant(geo):
            return FourierMultiplier.from_full(core.periodic_symbol(self._stencil(theta), geo), dtype=theta.dtype)
        if polyphase_applies(geo):
            return PolyphaseMultiplier.from_stencil(self._stencil(theta), geo, dtype=theta.dtype)
        if (
            geo.cin == geo.cout == 1
            and geo.default_padding
            and all(d == 1 for d in geo.dilation)
            and geo.ndim >= 2
            and self.bc in KRONECKER_BCS
            and all(st == 1 for st in self.stride)
            and max(self.grid) <= KRONECKER_MAX_AXIS
        ):
            split = kronecker_split(self._stencil(theta)[0, 0])
            if split is not None:
                vectors, error = split
                residual = error * float(np.sqrt(np.prod([_max_multiplicity(m) for m in geo.maps])))
                return kronecker_of_vectors(self.grid, self.bc, vectors, residual, theta.dtype)
        return None

    def periodic_embedding(self, theta) -> PeriodicEmbedding | None:
        r"""The periodic convolution on a padded grid that contains ``K(θ)`` (bc ``"zero"``/``"valid"``, any stride).

        On a grid :math:`L_a \ge n_a + \max(p_{a,-} + p_{a,+},\ e_a - 1)` (a multiple of the
        stride; :math:`e_a` the dilated extent, :math:`p_a` the padding) the periodic
        convolution of the zero-embedded input never wraps a tap onto the image and the
        outputs, one polyphase component shifted by :math:`e_a - 1 - e_a/\!/2 - p_{a,-}`, are
        distinct, so ``K(θ)`` is a restriction of it (see
        :class:`~structops.kernels.diagonalized.PeriodicEmbedding`); dilation and groups carry
        over to the periodic convolution, and the embedding's ``stencil`` is the equivalent
        dense one (:meth:`~structops.kernels.conv.ConvGeometry.dense_stencil`: zeros between
        the dilated taps and off the groups). Other boundaries read samples twice (no
        isometric embedding): None.
        """
        theta = self.validate_theta(theta)
        if self.bc not in ("zero", "valid"):
            return None
        geo = self.geometry
        size = []
        for g, e, (lft, rgt), st in zip(geo.grid, geo.extent, geo.pads, geo.stride):
            n = sfft.next_fast_len(g + max(lft + rgt, e - 1), real=True)
            size.append(-(-n // st) * st)
        periodic = Conv(
            tuple(size), self.stencil, bc="periodic", in_channels=self.in_channels, out_channels=self.out_channels,
            dilation=geo.dilation, groups=geo.groups,
        )  # fmt: skip
        S = core.periodic_symbol(periodic._stencil(theta), periodic.geometry)
        multiplier = FourierMultiplier(half_spectrum(S, len(size)), tuple(size), dtype=theta.dtype, name="C_L(θ)")
        return PeriodicEmbedding(multiplier, self.grid, self.stride, geo.dense_stencil(self._stencil(theta)))

    def as_convolution(self) -> ConvStencil:
        """Itself: ``weights(theta)`` is ``theta`` as ``(out, in, *stencil)``, ``solve(w)`` flattens it back."""
        return ConvStencil(self, lambda t: self.validate_theta(t).reshape(self.theta_shape), lambda w: w.reshape(-1))

    def symbol(self, theta) -> np.ndarray:
        """Deprecated: use ``diagonalize(theta).full_blocks()``, the per-frequency blocks ``(*grid, out, in)``."""
        return deprecated_symbol(self, theta)

    def eigvals(self, theta) -> np.ndarray:
        r"""Eigenvalues :math:`\lambda = F(K(\theta)u_1)` of a single-channel periodic convolution.

        Parameters
        ----------
        theta : array_like, shape (p,)
            The stencil, flattened.

        Returns
        -------
        numpy.ndarray, complex, shape ``grid``
            ``fftn`` of the first column over the grid; :math:`K = F^{-1}\operatorname{diag}(\lambda)F`,
            so ``K y = real(ifftn(λ * fftn(y)))`` and ``K.T y = real(ifftn(conj(λ) * fftn(y)))``.
            Any stencil size (larger than the grid: it wraps), in :math:`O(N \log N)`.

        Raises
        ------
        ValueError
            If ``bc`` is not ``"periodic"``, a stride is not 1, or there is more than one
            channel (then ``diagonalize(theta).full_blocks()`` are the per-frequency blocks).

        Examples
        --------
        The lecture notes' circulant example: the eigenvalues of the 4×4 matrix, from the stencil alone.

        >>> k = Conv(4, 3, bc="periodic")
        >>> theta = np.array([1.0, 2.0, 3.0])
        >>> lam = k.eigvals(theta)
        >>> bool(np.allclose(np.sort_complex(lam), np.sort_complex(np.linalg.eigvals(k.matrix(theta)))))
        True
        """
        D = fourier_multiplier(self, theta, "eigvals")
        if self.in_channels != 1 or self.out_channels != 1:
            raise ValueError(
                f"`eigvals` needs in_channels = out_channels = 1, got {self.in_channels} and "
                f"{self.out_channels}; use `diagonalize(theta).full_blocks()` for the per-frequency blocks."
            )
        return D.eigenvalues()  # the notes' λ = F(K(θ)e₁)

    # -------------------------------------------------------------- PyTorch
    def theta_from_torch(self, weight, *, unchecked: bool = False) -> np.ndarray:
        """θ from a PyTorch convolution module (or its weight), flipping the spatial axes.

        Parameters
        ----------
        weight : torch.nn.Conv1d/2d/3d, or torch.Tensor or array_like
            The module, whose ``in_channels``, ``out_channels``, ``kernel_size``, ``stride``,
            ``dilation``, ``groups``, ``padding`` and ``padding_mode`` are checked against this
            family's geometry before its weight ``(out_channels, in_channels/groups, *stencil)`` is
            taken; or the weight alone with ``unchecked=True``.
        unchecked : bool, optional
            Take a bare weight (or a gradient with respect to one), the caller vouching that it comes
            from a module of this geometry. A bare weight without it is refused: its shape does not
            show the dilation, the padding or the stride, and another geometry would give another
            map with no error.

        Returns
        -------
        numpy.ndarray, shape (p,)
            ``θ`` such that :meth:`~structops.kernels.ParametricKernel.apply` computes torch's
            cross-correlation with ``weight`` on this geometry.

        Raises
        ------
        ValueError
            If the module's geometry differs (the message names the attribute and both values),
            ``weight`` has another shape or non-finite entries.
        TypeError
            If a bare weight is given without ``unchecked=True``, or it is not float32 or float64.
        """
        if hasattr(weight, "kernel_size") and hasattr(weight, "weight"):
            check_torch_module(self.geometry, weight)
            weight = weight.weight
        elif not unchecked:
            raise TypeError(
                "`weight` must be the torch.nn.Conv module, whose dilation, padding, stride and groups are "
                f"checked against {self!r}; a bare weight of shape {tuple(getattr(weight, 'shape', ()))} cannot be "
                "checked (pass unchecked=True to vouch for it, or use structops.torch.from_module)."
            )
        w = np.asarray(weight.detach().cpu().numpy() if hasattr(weight, "detach") else weight)
        expected = self.theta_shape
        if w.shape != expected:
            raise ValueError(f"`weight` must have shape {expected}, got {w.shape}.")
        axes = tuple(range(2, w.ndim))
        return check_theta(np.flip(w, axis=axes).reshape(-1), self.nparams, "weight")

    def theta_to_torch(self, theta) -> np.ndarray:
        """The PyTorch weight (shape ``(out_channels, in_channels, *stencil)``) computing the same map.

        Parameters
        ----------
        theta : array_like, shape (p,)

        Returns
        -------
        numpy.ndarray, shape ``(out_channels, in_channels, *stencil)``
            ``θ`` flipped on the spatial axes, C-contiguous (``torch.from_numpy`` accepts it).

        Examples
        --------
        >>> Conv(6, 3, out_channels=2).theta_to_torch(np.arange(6.0))
        array([[[2., 1., 0.]],
        <BLANKLINE>
               [[5., 4., 3.]]])
        """
        stencil = self._stencil(self.validate_theta(theta))
        # copy(): a flip over size-1 axes keeps negative strides, which torch.tensor rejects
        return np.flip(stencil, axis=tuple(range(2, stencil.ndim))).copy()


# ------------------------------------------------------------------ Kronecker structure
def kronecker_split(stencil: np.ndarray) -> tuple[tuple[np.ndarray, ...], float] | None:
    r"""Split a 2-D or 3-D stencil of numerical rank 1 into 1-D factors, or None.

    Parameters
    ----------
    stencil : numpy.ndarray, 2 or 3 axes

    Returns
    -------
    (vectors, error) or None
        ``vectors[a]`` of length ``stencil.shape[a]`` with
        :math:`w \approx f_0 \otimes f_1 (\otimes f_2)`, and
        ``error`` :math:`= \|w - f_0 \otimes \dots\|_1` (entrywise, computed in float64 and
        rounded up), when every unfolding of :math:`w` has
        :math:`\sigma_2 \le 100\,\varepsilon\,\sqrt{S}\,\sigma_1` (rank 1 to round-off);
        None otherwise.

    Notes
    -----
    The factors are the leading left singular vectors of the unfoldings (the higher-order SVD),
    the scale :math:`w` contracted with all of them goes to the first. For a convolution with
    a boundary whose padding reads each grid sample at most :math:`m_a` times per axis,
    :math:`\|K(w) - K(f_0 \otimes \dots)\|_2 \le \text{error}\cdot\sqrt{\prod_a m_a}`
    (:math:`\|K\|_2^2 \le \|K\|_1 \|K\|_\infty`; a row sums at most :math:`\|e\|_1`, a
    column at most :math:`\|e\|_1 \prod_a m_a`).
    """
    w = np.asarray(stencil, dtype=np.float64)
    eps = float(np.finfo(np.asarray(stencil).dtype).eps)
    tol = 100.0 * eps * np.sqrt(w.size)
    vectors = []
    for a in range(w.ndim):
        unfolded = np.moveaxis(w, a, 0).reshape(w.shape[a], -1)
        U, s, _ = np.linalg.svd(unfolded, full_matrices=False)
        if s.size > 1 and s[1] > tol * s[0]:
            return None
        vectors.append(U[:, 0])
    scale = w
    for f in reversed(vectors):
        scale = scale @ f
    vectors[0] = vectors[0] * float(scale)
    approx = vectors[0]
    for f in vectors[1:]:
        approx = np.multiply.outer(approx, f)
    error = float(np.abs(w - approx).sum()) * (1.0 + 4.0 * np.finfo(np.float64).eps * w.size)
    return tuple(vectors), error


def _max_multiplicity(index: np.ndarray) -> int:
    """How often the most read grid sample appears in a padding index map (``-1``: a zero, not counted)."""
    counts = np.bincount(index[index >= 0])
    return int(counts.max(initial=1))


def kronecker_of_vectors(
    grid: tuple[int, ...], bc: str, vectors: Sequence[np.ndarray], residual: float, dtype
) -> KroneckerMultiplier:
    """The :class:`KroneckerMultiplier` of the 1-D convolutions ``Conv(n_a, len(f_a), bc=bc)`` with stencils ``f_a``."""
    factors = [conv1d_matrix(n, np.asarray(f, dtype=np.float64), bc) for n, f in zip(grid, vectors)]
    return KroneckerMultiplier(factors, dtype=dtype, residual=residual, name="K(θ)")


def conv1d_matrix(n: int, stencil: np.ndarray, bc: str) -> np.ndarray:
    r"""The ``n × n`` matrix of the 1-D one-channel stride-1 :class:`Conv` with ``stencil`` (from the index maps).

    Output :math:`i` reads the padded position :math:`i + s - 1 - j` with tap :math:`j`, i.e. the
    grid sample ``source_index(bc)`` there (nothing for a zero).
    """
    s = stencil.size
    idx = core.source_index(bc, n, s - 1 - s // 2, s // 2)
    rows = np.repeat(np.arange(n), s)
    taps = np.tile(np.arange(s), n)
    src = idx[rows + s - 1 - taps]
    keep = src >= 0
    M = np.zeros((n, n), dtype=stencil.dtype)
    np.add.at(M, (rows[keep], src[keep]), stencil[taps[keep]])
    return M
