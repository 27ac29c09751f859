r"""Orthogonal convolutions: the Cayley transform of a periodic antisymmetric convolution.

Trockman & Kolter 2021, "Orthogonalizing convolutional layers with the Cayley transform": with
:math:`A` antisymmetric, :math:`K = (I + A)^{-1}(I - A)` is orthogonal, and for a periodic
convolution :math:`A` both inverse and product are per-frequency ``channels × channels``
blocks, so :math:`K` is computed exactly through the FFT.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple, TypeVar

import numpy as np
import scipy.fft as sfft

from ..._backend import blas_threads_for, have_numba, workers
from ..._scratch import WORKSPACE_BYTES, Lease, lease, workspace
from .._base import ParametricKernel
from ..diagonalized import FourierMultiplier
from ._core import ConvGeometry
from .antisymmetric_conv import AntisymmetricConv
from .based import ConvView
from .conv import deprecated_symbol, fourier_multiplier

__all__ = ["CayleyConv", "fast_transforms", "parseval_weights", "tap_factors"]

_T = TypeVar("_T")


class _CayleyState(NamedTuple):
    """What :class:`CayleyConv` prepares for a ``theta``: the generator's state and the half-spectrum blocks."""

    generator: object  # the state of the periodic AntisymmetricConv A(θ)
    blocks: np.ndarray  # K̂(ξ) = (I + Â)^{-1}(I - Â), shape (*half, c, c)
    resolvent: np.ndarray  # (I + Â(ξ))^{-1}, shape (*half, c, c)


def cayley_blocks(skew: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""The Cayley transforms :math:`(I + B)^{-1}(I - B)` and resolvents :math:`(I + B)^{-1}` of skew-Hermitian blocks.

    Parameters
    ----------
    skew : numpy.ndarray, complex, shape ``(..., c, c)``
        Blocks with :math:`B^H = -B`; :math:`I + B` then has singular values
        :math:`\sqrt{1 + \sigma^2} \ge 1`, so the batched solve is always well conditioned.

    Returns
    -------
    transform, resolvent : numpy.ndarray, shape ``(..., c, c)``
        Unitary blocks :math:`2(I + B)^{-1} - I` and :math:`(I + B)^{-1}`: complex64 blocks with
        numba by Gauss--Jordan on all blocks at once, in float64
        (:mod:`structops.kernels.conv._numba_resolvent`: no pivoting is needed, as the Hermitian
        part of :math:`I + B` is :math:`I`), else one batched ``numpy.linalg.inv``.
    """
    eye = np.eye(skew.shape[-1], dtype=skew.dtype)
    if have_numba() and skew.dtype == np.complex64 and skew.size:
        from ._numba_resolvent import resolvents

        resolvent, transform = resolvents(skew)  # all blocks at once, no per-block LAPACK call
        return transform, resolvent
    resolvent = np.linalg.inv(eye + skew)
    return 2 * resolvent - eye, resolvent  # (I + B)^{-1}(I - B) = 2 (I + B)^{-1} - I


#: The examples are transformed in chunks whose half spectrum takes at most this many bytes
#: (cache-sized pieces: no large temporaries, hence no page faults; see benchmarks/README.md).
#: The numba kernels take chunks of up to :data:`structops._scratch.WORKSPACE_BYTES` instead: their rows
#: go to scratch memory each thread reuses (no page faults either), and they split a chunk over
#: their threads, which a cache-sized chunk is too little work for (one thread at 2 MB).
CHUNK_BYTES = 2**21


def _chunks(shape: tuple[int, ...], scale: int = 1) -> list[tuple[int, int]]:
    """``(start, stop)`` of the chunks of ``shape[0]`` examples ``(c, *grid)``: ``scale`` × :data:`CHUNK_BYTES` each."""
    n, c, *grid = shape
    step = max(1, scale * CHUNK_BYTES // (16 * c * math.prod(grid[:-1]) * (grid[-1] // 2 + 1)))
    return [(start, min(n, start + step)) for start in range(0, n, step)]


def real_right_factors(blocks: np.ndarray, adjoint: bool = False) -> np.ndarray:
    r"""The real ``2c × 2c`` forms of complex ``c × c`` blocks ``B`` acting on rows: ``row @ M`` is ``z @ B``.

    A row holds the complex ``z`` as ``2c`` reals, (re, im) interleaved per entry; shape
    ``(..., c, c)`` in, ``(F, 2c, 2c)`` out (leading axes flattened), real of the blocks' precision.
    ``adjoint``: the forms of :math:`\bar B` instead (``z @ conj(B)``).
    """
    c = blocks.shape[-1]
    re, im = blocks.real.reshape(-1, c, c), blocks.imag.reshape(-1, c, c)
    rows = np.empty((re.shape[0], c, 2, c, 2), re.dtype)  # [f, ci, p, co, q]
    rows[:, :, 0, :, 0] = rows[:, :, 1, :, 1] = re
    if adjoint:
        rows[:, :, 1, :, 0] = im
        np.negative(im, out=rows[:, :, 0, :, 1])
    else:
        rows[:, :, 0, :, 1] = im
        np.negative(im, out=rows[:, :, 1, :, 0])
    return rows.reshape(-1, 2 * c, 2 * c)


def fast_transforms(grid: tuple[int, ...], dtype: np.dtype) -> bool:
    """Whether the numba kernels (:mod:`._numba_fft`) transform examples on ``grid`` in ``dtype``.

    Numba is the accelerator (:func:`structops.set_accelerator`), ``dtype`` float32 or float64,
    and the grid has two axes whose lengths factor into 2, 3, 5 and 7.
    """
    if not have_numba() or dtype not in (np.float32, np.float64):
        return False
    from . import _numba_fft

    return _numba_fft.supported(tuple(grid))


def parseval_weights(grid: tuple[int, ...]) -> np.ndarray:
    r"""The weights :math:`w_\xi/N` of the real DFTs' adjoints on the ``rfftn`` half grid, ``(F,)`` float64.

    C order of the half grid (the halved axis fastest); :math:`N` the grid's size and :math:`w_\xi`
    the weight of ``irfftn`` on the halved axis: 1 at :math:`k = 0` and :math:`k = g/2`, else 2.
    So :math:`\langle u, v\rangle = \operatorname{Re}\sum_\xi (w_\xi/N)\,\hat u_\xi^H \hat v_\xi` (Parseval).
    """
    g = grid[-1]
    k = np.arange(g // 2 + 1)
    return np.tile(np.where((k == 0) | (2 * k == g), 1.0, 2.0) / math.prod(grid), math.prod(grid[:-1]))


def tap_factors(geometry: ConvGeometry) -> np.ndarray:
    r"""The stencil taps' Fourier factors on the ``rfftn`` half spectrum, complex128 of shape ``(T, F)``.

    Tap :math:`j` (C order over the stencil) sits at offset :math:`o_a = j_a - \lfloor s_a/2 \rfloor`
    on axis ``a`` (periodic, as in the first columns of :func:`~structops.kernels.conv._core.first_columns`),
    so its factor at frequency :math:`k` (C order over the half grid ``(*grid[:-1], grid[-1]//2 + 1)``)
    is :math:`\exp(-2\pi i \sum_a k_a o_a / g_a)`: the generator's half spectrum is
    :math:`\hat S(\xi_f) = \sum_j \Theta_j\, \phi_{jf}` for the ``c × c`` tap matrices :math:`\Theta_j`.
    """
    *rest, g = geometry.grid
    freqs = np.meshgrid(*[np.arange(gi) for gi in rest], np.arange(g // 2 + 1), indexing="ij")
    taps = np.meshgrid(*[np.arange(s) - s // 2 for s in geometry.stencil], indexing="ij")
    phase = sum(np.outer(t.ravel(), k.ravel()) / gi for t, k, gi in zip(taps, freqs, geometry.grid, strict=True))
    return np.exp(-2j * np.pi * phase)


class CayleyConv(ConvView, ParametricKernel):
    r"""Orthogonal convolution :math:`K(\theta) = (I + A(\theta))^{-1}(I - A(\theta))` (Cayley transform).

    :math:`A(\theta)` is the periodic :class:`~structops.AntisymmetricConv`
    :math:`C(\theta) - C(\theta)^\top` of the same grid, stencil and channels (Trockman &
    Kolter 2021, "Orthogonalizing convolutional layers with the Cayley transform").
    :math:`K(\theta)^\top K(\theta) = I` for every :math:`\theta`: a layer that preserves
    norms, :math:`\|K x\| = \|x\|`, with spectral norm exactly 1.

    Parameters
    ----------
    grid : int or sequence of int
        Shape of one image (1, 2 or 3 axes); the boundary is periodic.
    stencil : int or sequence of int
        Stencil shape of :math:`C` (larger than the grid: it wraps).
    channels : int
        Number of channels of the input and of the output.

    Raises
    ------
    ValueError
        For any reason :class:`~structops.Conv` gives (``grid``, ``stencil``).
    TypeError
        If a size or ``channels`` is not an integer.

    Attributes
    ----------
    nparams : int
        ``channels**2 * prod(stencil)``: the stencils of :math:`C`, as for
        :class:`~structops.AntisymmetricConv`.
    generator : AntisymmetricConv
        The periodic :math:`A(\theta)`.

    Notes
    -----
    **Per frequency.** :math:`A` has skew-Hermitian blocks :math:`\hat A(\xi)`, so

    .. math::
        \hat K(\xi) = (I + \hat A(\xi))^{-1}(I - \hat A(\xi)), \qquad
        K x = \operatorname{irfftn}\big(\hat K(\xi)\,\operatorname{rfftn}(x)(\xi)\big),

    one batched ``channels × channels`` solve per frequency of the ``rfftn`` half spectrum
    (:math:`I + \hat A` has singular values at least 1). Each :math:`\hat K(\xi)` is unitary,
    hence :math:`K^\top K = I` to round-off, and :math:`K^\top = K^{-1}` is the multiplier of
    :math:`\hat K(\xi)^H`.

    **Speed.** With numba (``structops.set_accelerator``), a 2-D grid whose sides factor into 2,
    3, 5 and 7 is transformed by numba kernels that write the per-frequency rows directly
    (``structops.kernels.conv._numba_fft``; compiled on first use, about 20 s per dtype, then
    cached on disk), and float32 blocks are inverted all at once by Gauss--Jordan in float64;
    other grids use ``scipy.fft`` and ``numpy.linalg.inv``.

    **Jacobian.** Not affine in :math:`\theta` (so no ``Q``). Differentiating
    :math:`(I + A)K = I - A` in direction :math:`v` gives, with :math:`A(v)` the
    antisymmetric convolution of the stencils :math:`v`,

    .. math::
        J v = -(I + A)^{-1} A(v)\,(I + K)x, \qquad
        J^\top w = -\nabla_\theta \big\langle (I - A)^{-1} w,\; A(\theta)\,(I + K)x \big\rangle,

    (using :math:`(I + A)^{-\top} = (I - A)^{-1}`), and for the transposed map
    :math:`K^\top = (I + A)(I - A)^{-1}`:
    :math:`J v = (I + K^\top) A(v) (I - A)^{-1} y`. The gradients in :math:`\theta` of
    :math:`\langle z, A(\theta)u\rangle` are the generator's (a convolution's and a
    correlation's), so nothing dense is built.

    Examples
    --------
    >>> k = CayleyConv((8, 8), 3, channels=2)
    >>> theta = k.random_theta(0)
    >>> K = k.matrix(theta)
    >>> bool(np.allclose(K.T @ K, np.eye(128)))
    True
    """

    linear = False

    def __init__(self, grid: int | Sequence[int], stencil: int | Sequence[int], *, channels: int = 1) -> None:
        self.generator = AntisymmetricConv(grid, stencil, bc="periodic", channels=channels)  # validates the geometry
        self.channels = self.generator.channels
        self._axes = tuple(range(2, 2 + len(self.generator.grid)))
        gen = self.generator
        super().__init__(gen.nparams, gen.in_shape, gen.out_shape)

    def __repr__(self) -> str:
        return f"CayleyConv(grid={self.grid}, stencil={self.stencil}, channels={self.channels})"

    @property
    def geometry(self) -> ConvGeometry:
        """The validated geometry of the generator :math:`A` (periodic, ``channels → channels``)."""
        return self.generator.geometry

    @property
    def theta_shape(self) -> tuple[int, ...]:
        """``(channels, channels, *stencil)``: ``theta`` may be passed as this array."""
        return self.generator.theta_shape

    # ------------------------------------------------------------------- hooks
    def _half_generator(self, theta: np.ndarray) -> np.ndarray:
        r""":math:`\hat A(\xi)` on the ``rfftn`` half grid, shape ``(*half, c, c)``, in ``theta``'s precision.

        :math:`\hat A = \hat S - \hat S^H` with :math:`\hat S(\xi_f) = \sum_j \Theta_j \phi_{jf}`: two real
        products of the taps with their Fourier factors (:func:`tap_factors`), no FFT of the
        mostly-zero first columns.
        """
        c, T = self.channels, int(np.prod(self.stencil))
        taps = np.asarray(theta).reshape(c * c, T)
        re, im = self._factor_parts(taps.dtype)
        spec = np.empty((c, c, re.shape[1]), np.result_type(taps.dtype, np.complex64))
        with blas_threads_for(re.shape[1]):  # (small: one BLAS thread, see _skew_gradient)
            spec.real = (taps @ re).reshape(c, c, -1)
            spec.imag = (taps @ im).reshape(c, c, -1)
        spec = np.moveaxis(spec, -1, 0).reshape(*self.grid[:-1], self.grid[-1] // 2 + 1, c, c)
        return spec - np.conj(np.swapaxes(spec, -1, -2))

    def _blocks(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r"""The half spectrum's Cayley blocks and resolvents, each ``(*half, c, c)`` (:func:`cayley_blocks`).

        For float32 ``theta`` with numba, one parallel kernel sums the generator's spectrum and
        inverts it, slice by slice (:func:`._numba_resolvent.tap_resolvents`); else
        :meth:`_half_generator` and :func:`cayley_blocks`.
        """
        theta = np.asarray(theta)
        if not (have_numba() and theta.dtype == np.float32):
            return cayley_blocks(self._half_generator(theta))
        from ._numba_resolvent import tap_resolvents

        c = self.channels
        re, im = self._factor_parts(np.dtype(np.float64))
        resolvent, blocks = tap_resolvents(theta.reshape(c, c, -1), re, im, np.dtype(np.complex64))
        half = (*self.grid[:-1], self.grid[-1] // 2 + 1, c, c)
        return blocks.reshape(half), resolvent.reshape(half)

    def _prepare(self, theta):
        return _CayleyState(self.generator._prepare(theta), *self._blocks(theta))

    def _state_dtype(self, state):
        return np.dtype(state.blocks.real.dtype)

    def _multiply(self, blocks: np.ndarray, x: np.ndarray, adjoint: bool) -> np.ndarray:
        """``x`` (rows of examples) through the multiplier of ``blocks`` (of their conjugate transposes).

        Chunk by chunk (:data:`CHUNK_BYTES`, :meth:`_chunk_scale`): ``rfftn``, the half spectrum as real rows
        ``(F, chunk, 2c)``, the products with the blocks' real forms and ``irfftn``
        (:meth:`_from_rows`: inside the numba kernel, else :func:`real_right_factors` and one
        stacked product).
        """
        n, c = x.shape[0], self.channels
        x = x.reshape(n, c, *self.grid)  # (explicit: n may be 0)
        y = np.empty(x.shape, dtype=np.result_type(x.dtype, blocks.real.dtype))
        for start, stop in _chunks(x.shape, self._chunk_scale(x.dtype)):
            part = x[start:stop]
            self._from_rows(self._rows(part, self._scratch(part, "rows")), y[start:stop], blocks, adjoint)
        return y.reshape(n, math.prod(x.shape[1:])).astype(x.dtype, copy=False)

    def _chunk_scale(self, dtype: np.dtype) -> int:
        """Chunks of this many :data:`CHUNK_BYTES`: one, or with the numba kernels up to their workspaces' size."""
        return WORKSPACE_BYTES // CHUNK_BYTES if self._fast_fft(dtype) else 1

    @staticmethod
    def _right(blocks: np.ndarray, adjoint: bool) -> np.ndarray:
        """The real right factors of the blocks' multiplier (of its adjoint), :func:`real_right_factors`."""
        return real_right_factors(blocks, True) if adjoint else real_right_factors(np.swapaxes(blocks, -1, -2))

    def _fast_fft(self, dtype: np.dtype) -> bool:
        """Whether the transforms run on the numba kernels (:func:`fast_transforms`)."""
        return fast_transforms(self.grid, dtype)

    def _rows(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The ``rfftn`` half spectrum of ``x`` ``(n, c, *grid)`` as real rows ``(F, n, 2c)``, (re, im) interleaved.

        Written into ``out`` when given (C-contiguous, of that shape and the precision of ``x``), else into a new array.
        """
        if self._fast_fft(x.dtype):
            from . import _numba_fft

            return _numba_fft.rfft2_rows(np.ascontiguousarray(x), out)
        spec = sfft.rfftn(x, axes=self._axes, workers=workers())
        if out is None:
            out = np.empty(self._rows_shape(x.shape[0]), spec.real.dtype)
        rows = out.view(spec.dtype).reshape(*spec.shape[2:], *spec.shape[:2])  # (*half, n, c), complex
        np.copyto(rows, np.moveaxis(spec, (0, 1), (-2, -1)))
        return out

    def _rows_shape(self, n: int) -> tuple[int, int, int]:
        """The shape ``(F, n, 2c)`` of the rows of ``n`` examples (:meth:`_rows`)."""
        return (math.prod(self.grid[:-1]) * (self.grid[-1] // 2 + 1), n, 2 * self.channels)

    def _scratch(self, x: np.ndarray, slot: str) -> np.ndarray | None:
        """Room for the rows of ``x`` in the calling thread's scratch ``slot`` (:func:`structops._scratch.workspace`).

        With the numba kernels; else None (a new array).
        """
        return workspace(self._rows_shape(x.shape[0]), x.dtype, slot) if self._fast_fft(x.dtype) else None

    def _from_rows(self, rows: np.ndarray, out: np.ndarray, blocks: np.ndarray, adjoint: bool) -> None:
        """``irfftn`` of the rows ``(F, n, 2c)`` through the blocks' multiplier (its adjoint) into ``out``.

        ``blocks`` ``(*half, c, c)``; ``out`` ``(n, c, *grid)``, C-contiguous, of the rows' dtype or wider. With numba
        the products run inside the inverse transform's kernel, on its threads; else one stacked
        product with the real right factors (:meth:`_right`).
        """
        if self._fast_fft(rows.dtype) and out.dtype == rows.dtype:
            from . import _numba_fft

            c = self.channels
            _numba_fft.irfft2_rows(np.ascontiguousarray(rows), self.grid, out, blocks.reshape(-1, c, c), adjoint)
            return
        rows = rows @ self._right(blocks, adjoint)
        half = (*self.grid[:-1], self.grid[-1] // 2 + 1)
        n = rows.shape[1]
        spec = rows.reshape(*half, n, self.channels, 2).view(np.result_type(rows.dtype, np.complex64))[..., 0]
        spec = np.ascontiguousarray(np.moveaxis(spec, (-2, -1), (0, 1)))
        out[...] = sfft.irfftn(spec, s=self.grid, axes=self._axes, workers=workers())

    def _apply(self, state, x, transpose):
        return self._multiply(state.blocks, x, transpose)

    def _generator_jvp(self, v: np.ndarray, u: np.ndarray) -> np.ndarray:
        r""":math:`A(v)\,u` for the examples ``u`` (A is linear in its stencils)."""
        gen = self.generator
        return gen._apply(gen._prepare(v), u, False)

    def _generator_vjp(self, state, u: np.ndarray, z: np.ndarray, per_example: bool) -> np.ndarray:
        r""":math:`\nabla_\theta \langle z, A(\theta)u\rangle` (summed, or per example)."""
        gen = self.generator
        return gen._vjp(state.generator, gen._prepare_data(u, False), z, False, per_example)

    def _jvp(self, state, data, v, transpose):
        x = data
        if transpose:  # (I + K^T) A(v) (I - A)^{-1} y
            a = self._generator_jvp(v, self._multiply(state.resolvent, x, True))
            return a + self._multiply(state.blocks, a, True)
        # -(I + A)^{-1} A(v) (I + K) x
        a = self._generator_jvp(v, x + self._multiply(state.blocks, x, False))
        return -self._multiply(state.resolvent, a, False)

    def _vjp(self, state, data, w, transpose, per_example):
        x = data
        if not per_example:  # <w, K x> = <x, K^T w>: the same spectral gradient with the roles swapped
            return self._spectral_vjp(state, w, x) if transpose else self._spectral_vjp(state, x, w)
        if transpose:
            s = self._multiply(state.resolvent, x, True)
            return self._generator_vjp(state, s, w + self._multiply(state.blocks, w, False), per_example)
        u = x + self._multiply(state.blocks, x, False)
        return -self._generator_vjp(state, u, self._multiply(state.resolvent, w, True), per_example)

    def _spectral_vjp(self, state, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        r""":math:`\nabla_\theta \langle w, K(\theta)x\rangle` summed over the examples, through the blocks.

        By Parseval on the half spectrum (weights :math:`\omega_\xi = 1` on the last axis'
        self-conjugate bins, else 2), :math:`\langle w, Kx\rangle = \operatorname{Re}\sum_\xi
        \operatorname{tr}(\hat K_\xi P_\xi)` with :math:`P_\xi = (\omega_\xi/N)\sum_n \hat x_n \hat w_n^H`
        (one stacked product of the spectra's rows, chunk by chunk). With
        :math:`R = (I + \hat A)^{-1}`, :math:`\hat K = 2R - I` and :math:`\hat A = \hat S - \hat S^H`:
        :math:`d\hat K = -2R\,d\hat A\,R`, so :math:`Q = -2RPR`, :math:`E = Q - Q^H` and
        :math:`\partial/\partial\theta_{abj} = \operatorname{Re}\sum_\xi E_\xi[b, a]\,\phi_{j\xi}`
        (:func:`tap_factors`). No generator convolution runs.
        """
        c, grid = self.channels, self.grid
        xs, ws = x.reshape(-1, c, *grid), w.reshape(-1, c, *grid)
        E = np.zeros(state.resolvent.shape, np.result_type(state.resolvent, x.dtype, w.dtype)).reshape(-1, c, c)
        # E is linear in the Gram: summed chunk by chunk (larger chunks, the Grams' inner size)
        for start, stop in _chunks(xs.shape, max(4, self._chunk_scale(xs.dtype))):
            a, b = xs[start:stop], ws[start:stop]
            E += self._skew(state, self._rows(a, self._scratch(a, "rows")), self._rows(b, self._scratch(b, "rows-w")))
        return self._skew_gradient(E).astype(np.result_type(x.dtype, w.dtype), copy=False)

    def _weights(self, dtype: np.dtype) -> np.ndarray:
        r"""The Parseval weights :math:`\omega_\xi` per frequency ``(F,)``.

        With the -2 of :math:`d\hat K = -2R\,d\hat A\,R` and the :math:`1/N` folded in; built once
        per precision.
        """
        return self._per_precision(
            "_weights_by_precision", dtype, lambda key: (-2 * parseval_weights(self.grid)).astype(key)
        )

    def _skew(self, state, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        r"""The blocks :math:`E = Q - Q^H`, :math:`Q = RPR`, of rows ``a``, ``b`` ``(F, n, 2c)``.

        :math:`P` in the rows' precision: with numba by one parallel kernel over the frequencies
        (:func:`._numba_gram.pair_grams`), else from the real Gram :math:`a^\top b` of one stacked
        product. The gradient is linear in :math:`E`, so chunks of examples add their :math:`E`.
        """
        c = self.channels
        R = state.resolvent.reshape(-1, c, c)
        dtype = np.result_type(a.dtype, b.dtype, np.complex64)
        if self._fast_fft(a.dtype) and a.dtype == b.dtype:
            from ._numba_gram import pair_grams

            P = pair_grams(np.ascontiguousarray(a), np.ascontiguousarray(b), self._weights(a.dtype), dtype)
        else:
            gram = (np.swapaxes(a, -1, -2) @ b).reshape(-1, c, 2, c, 2)
            # P[a, b] = sum_n x_a conj(w_b): the (re, im) parts of the real Gram, in its precision
            P = np.empty((gram.shape[0], c, c), dtype)
            P.real = gram[:, :, 0, :, 0] + gram[:, :, 1, :, 1]
            P.imag = gram[:, :, 1, :, 0] - gram[:, :, 0, :, 1]
            P *= self._weights(gram.dtype)[:, None, None]
        Q = R @ P @ R
        return Q - np.conj(np.swapaxes(Q, -1, -2))

    def _skew_gradient(self, E: np.ndarray) -> np.ndarray:
        r"""The gradient in :math:`\theta` from the blocks :math:`E` ``(F, c, c)`` of :meth:`_skew`."""
        c = self.channels
        real = E.real.dtype
        re, im = self._factor_parts(real)
        # grad[a, b, j] = Re sum_f E[f, b, a] phi[j, f], from E's (re, im) pairs as contiguous real columns
        pairs = np.ascontiguousarray(E).view(real).reshape(E.shape[0], 2 * c * c)
        # One BLAS thread: OpenBLAS threads a product this size, and its idle workers then spin for
        # milliseconds, taking a core from the numba kernels (and torch) that run next.
        with blas_threads_for(pairs.shape[0]):
            G = (re @ pairs)[:, 0::2] - (im @ pairs)[:, 1::2]  # [j, (b, a)]
        return G.reshape(-1, c, c).transpose(2, 1, 0).reshape(-1)

    # ------------------------------------------- transform-domain hooks (the torch bridge)
    def _transform(self, x: np.ndarray, transpose: bool) -> Lease:
        """The half spectrum of a flattened batch as real rows ``(F, n, 2c)`` (:meth:`_rows`), held by a lease.

        The bridge keeps it from the forward to the backward; pooled memory
        (:func:`structops._scratch.lease`) is not faulted in again at every step, and goes back to
        the pool when the autograd graph lets go of it.
        """
        x = x.reshape(x.shape[0], self.channels, *self.grid)
        held = lease(self._rows_shape(x.shape[0]), x.dtype)
        self._rows(x, held.array)
        return held

    def _apply_transformed(self, state, held: Lease, transpose: bool) -> np.ndarray:
        """:meth:`_apply` from the batch's rows (:meth:`_transform`): one product, one ``irfftn``."""
        rows = held.array
        y = np.empty((rows.shape[1], self.channels, *self.grid), rows.dtype)
        self._from_rows(rows, y, state.blocks.astype(np.result_type(rows.dtype, np.complex64), copy=False), transpose)
        return y.reshape(rows.shape[1], -1)

    def _vjp_transformed(self, state, rows_x: Lease, rows_w: Lease, transpose: bool) -> np.ndarray:
        r""":meth:`_vjp` summed over the examples from both batches' rows: one Gram, no transform."""
        a, b = (rows_w.array, rows_x.array) if transpose else (rows_x.array, rows_w.array)
        return self._skew_gradient(self._skew(state, a, b)).astype(a.dtype, copy=False)

    def _factor_parts(self, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
        """The real and imaginary parts of :func:`tap_factors`, C-contiguous in ``dtype``, built once per precision."""

        def build(key: np.dtype) -> tuple[np.ndarray, np.ndarray]:
            phi = tap_factors(self.geometry)
            return np.ascontiguousarray(phi.real, key), np.ascontiguousarray(phi.imag, key)

        return self._per_precision("_factor_parts_by_precision", dtype, build)

    def _per_precision(self, name: str, dtype: np.dtype, build: Callable[[np.dtype], _T]) -> _T:
        """``build(dtype)``, made once per kernel and precision (kept in the instance's ``__dict__[name]``)."""
        cache = self.__dict__.setdefault(name, {})
        key = np.dtype(dtype)
        if key not in cache:
            cache[key] = build(key)
        return cache[key]

    # -------------------------------------------------------------- spectra
    def symbol(self, theta) -> np.ndarray:
        """Deprecated: use ``diagonalize(theta).full_blocks()``, the unitary blocks ``(*grid, channels, channels)``."""
        return deprecated_symbol(self, theta)

    def diagonalize(self, theta) -> FourierMultiplier:
        r"""``K(θ)`` block-diagonalised by the FFT: the multiplier of its unitary blocks.

        The blocks are the Cayley transforms :math:`(I - \hat A(\xi))^{-1}(I + \hat A(\xi))` of
        the generator's skew-Hermitian ones (``full_blocks()``, shape ``(*grid, channels, channels)``).
        The spectral solvers take this route: every singular value is 1 (``spectral_norm`` and
        ``cond`` are 1 to round-off), the eigenvalues lie on the unit circle, and
        :math:`K^{-1} = K^\top` is the multiplier of the conjugate-transposed blocks.
        """
        theta = self.validate_theta(theta)
        generator = fourier_multiplier(self.generator, theta, "diagonalize").full_blocks()
        return FourierMultiplier.from_full(cayley_blocks(generator)[0], dtype=theta.dtype)

    def eigvals(self, theta) -> np.ndarray:
        r"""Every eigenvalue of :math:`K(\theta)`, on the unit circle: shape ``grid`` or ``(*grid, channels)``.

        Raises
        ------
        ValueError
            If ``theta`` is invalid.
        """
        S = self.diagonalize(theta).full_blocks()
        return S[..., 0, 0] if self.channels == 1 else np.linalg.eigvals(S)
