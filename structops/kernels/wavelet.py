r"""Wavelet-domain diagonal kernels :math:`K(\theta) = W^\top \operatorname{diag}(Q\theta)\, W`.

The lecture notes (Lars Ruthotto, *Numerical Methods for Deep Learning*, "Parametric Models")
list wavelets among the ideas for projects. :math:`W` is the orthonormal periodic discrete
wavelet transform (DWT) of a 1-D, 2-D or 3-D grid, written here in numpy and batched over
examples; PyWavelets supplies the filter coefficients only (and is the independent reference
of the tests, with ``mode="periodization"``).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from .._validation import as_float_array, check_batch, check_choice, check_int_tuple, check_optional_int
from ._base import ParametricKernel

__all__ = ["SUPPORTED_WAVELETS", "Subband", "Wavelet"]

#: Orthogonal wavelets :class:`Wavelet` accepts (names as in PyWavelets). PyWavelets' symlets
#: are left out: their filters are orthonormal only to about 1e-12, so ``W W^T = I`` would not
#: hold to float64 round-off.
SUPPORTED_WAVELETS: tuple[str, ...] = (
    "haar",
    *(f"db{k}" for k in range(1, 11)),
    *(f"coif{k}" for k in range(1, 6)),
)
_SUPPORTED_TEXT = "'haar', 'db1'...'db10', 'coif1'...'coif5'"
_PER = ("subband", "coefficient")


class Subband(NamedTuple):
    """One block of the coefficient vector ``W x``.

    ``orientation`` has one letter per axis: ``"a"`` (low-pass, approximation) or ``"d"``
    (high-pass, detail) along that axis, e.g. ``"da"`` is the detail along axis 0 (pywt's
    horizontal detail ``cH`` in 2-D); all ``"a"`` is the coarse approximation. ``level`` runs
    from 1 (finest) to ``levels`` (coarsest; the approximation has ``level == levels``).
    The block is ``coefficients[..., start:stop]``, reshaped to ``shape`` in C-order.
    """

    level: int
    orientation: str
    shape: tuple[int, ...]
    start: int
    stop: int


def _pywt_wavelet(name: str):
    """PyWavelets' description of ``name`` (its filters); PyWavelets is imported only here."""
    try:
        import pywt
    except ImportError as err:  # pragma: no cover - PyWavelets is installed with the test extra
        raise ImportError(
            "structops.Wavelet takes its filter coefficients from PyWavelets: `pip install PyWavelets`."
        ) from err
    return pywt.Wavelet(name)


def _check_grid(grid) -> tuple[int, ...]:
    """``grid`` (an int is one axis) as a tuple of 1 to 3 positive ints."""
    one_axis = isinstance(grid, (int, np.integer)) and not isinstance(grid, bool)
    items = check_int_tuple(grid, "grid", ndim=1 if one_axis else None)
    if not 1 <= len(items) <= 3:
        raise ValueError(f"`grid` must have 1, 2 or 3 axes, got {grid!r}.")
    return items


def _level_obstacle(grid: tuple[int, ...], level: int, name: str, flen: int) -> str | None:
    """Why level ``level`` (1-based) cannot be applied to ``grid`` (None when it can)."""
    shape = tuple(s >> (level - 1) for s in grid)  # what reaches the level, if every earlier one halved
    for axis, s in enumerate(shape):
        if s % 2:
            return (
                f"level {level} cannot halve axis {axis}: it has odd length {s} there (grid {grid}); "
                "every level halves every axis, so each must be even at each level"
            )
        if s < flen:
            return (
                f"level {level} would see length {s} on axis {axis} (grid {grid}), shorter than the "
                f"filter length {flen} of {name!r}; each level needs every axis even and >= {flen}"
            )
    return None


def max_levels(grid: Sequence[int], wavelet: str = "haar") -> int:
    r"""The most levels a periodic DWT with ``wavelet`` can apply to ``grid``.

    Level :math:`j` acts on a grid of shape ``grid / 2**(j-1)``; it needs every axis **even**
    (it halves them) and **at least the filter length** :math:`L` of the wavelet (2 for Haar,
    4 for db2), so that the periodised filter wraps around the grid at most once and every
    basis function is a shifted copy of the wavelet, not an alias of it.

    Examples
    --------
    >>> max_levels((28, 28)), max_levels(16, "haar"), max_levels(16, "db2")
    (2, 4, 3)
    """
    grid = _check_grid(grid)
    flen = _pywt_wavelet(_check_wavelet(wavelet)).dec_len
    level = 0
    while _level_obstacle(grid, level + 1, wavelet, flen) is None:
        level += 1
    return level


def _check_wavelet(wavelet) -> str:
    if not isinstance(wavelet, str):
        raise TypeError(f"`wavelet` must be the name of a wavelet (one of {_SUPPORTED_TEXT}), got {wavelet!r}.")
    if wavelet not in SUPPORTED_WAVELETS:
        family = re.sub(r"[^a-z].*$", "", wavelet)  # "bior2.2" -> "bior"
        hint = {
            "bior": " (a biorthogonal wavelet: W would not be orthonormal)",
            "rbio": " (a biorthogonal wavelet: W would not be orthonormal)",
            "sym": " (PyWavelets' symlet filters are orthonormal only to about 1e-12)",
        }.get(family, "")
        raise ValueError(f"`wavelet` must be one of {_SUPPORTED_TEXT} (orthogonal), got {wavelet!r}{hint}.")
    return wavelet


class Wavelet(ParametricKernel):
    r"""Diagonal kernel in an orthonormal wavelet basis, :math:`K(\theta) = W^\top \operatorname{diag}(Q\theta)\, W`.

    The lecture notes' wavelet idea (Lars Ruthotto, *Numerical Methods for Deep Learning*,
    "Parametric Models", ideas for projects): scale every wavelet coefficient of the input,
    one weight per subband (a learned multiscale filter, :math:`p = 1 + (2^d - 1)J` on a
    :math:`d`-dimensional grid with :math:`J` levels) or one per coefficient
    (:math:`p = N`). ``W`` is the orthonormal periodic DWT, so :math:`WW^\top = W^\top W = I`,
    :math:`K` is symmetric, :math:`\theta = \mathbf{1}` gives :math:`K = I` and the eigenvalues
    of :math:`K` are the entries of :math:`Q\theta`.

    Parameters
    ----------
    grid : int or tuple of int
        Shape of one example, 1-D, 2-D or 3-D; ``K`` is :math:`N \times N` with
        :math:`N = \prod` ``grid``.
    wavelet : str, optional
        Name of an orthogonal wavelet: ``"haar"`` (default), ``"db1"``-``"db10"``,
        ``"coif1"``-``"coif5"`` (:data:`~structops.kernels.wavelet.SUPPORTED_WAVELETS`).
    levels : int, optional
        Number :math:`J \ge 1` of decomposition levels; default the most the grid allows
        (:func:`~structops.kernels.wavelet.max_levels`): every level halves every axis, which must be even and at least
        the filter length there.
    per : {"subband", "coefficient"}, optional
        One parameter per subband (the approximation, then each level's details from the
        coarsest to the finest, see ``subbands``) or one per wavelet coefficient, in the
        order of :meth:`transform`.

    Attributes
    ----------
    grid : tuple of int
        The grid of one example (``in_shape == out_shape == grid``).
    wavelet, per : str
        As given.
    levels : int
        The number of levels :math:`J` (the default resolved).
    subbands : tuple of Subband
        The blocks of the coefficient vector: level, orientation, shape, ``start:stop``.

    Raises
    ------
    TypeError
        If ``grid`` or ``levels`` is not integer, or ``wavelet`` is not a string.
    ValueError
        If ``grid`` has not 1-3 axes, the wavelet is not supported, ``levels`` is below 1 or
        more than the grid allows (an odd length, or one below the filter length, at some
        level), or ``per`` is unknown.

    Notes
    -----
    **Transform.** One level along one axis maps :math:`x \in \mathbb{R}^{M}` (:math:`M`
    even) to the low- and high-pass halves

    .. math::
        a_k = \sum_{m=0}^{L-1} h_m\, x_{(2k + L/2 - m) \bmod M}, \qquad
        d_k = \sum_{m=0}^{L-1} g_m\, x_{(2k + L/2 - m) \bmod M}, \qquad k < M/2,

    with PyWavelets' decomposition filters :math:`h` = ``dec_lo`` and :math:`g` = ``dec_hi``
    of length :math:`L` (the alignment of ``pywt.dwt(..., mode="periodization")``). A level
    applies this along every axis, giving :math:`2^d` subbands; the next level transforms the
    approximation again. The coefficient vector :math:`Wx` lists the coarse approximation,
    then the details of level :math:`J, J-1, \dots, 1`, orientations in the order of
    ``pywt.wavedecn`` (``"d"``; ``"ad"``, ``"da"``, ``"dd"``; ...), each block flattened in
    C-order. The rows of one level are shifts by two of the orthonormal filters, so
    :math:`W` is orthogonal and :math:`W^\top` (:meth:`inverse_transform`, the same filters
    scattered back) is its inverse.

    **Kernel, adjoint, Jacobian.** With :math:`Q` the :math:`N \times p` 0/1 matrix assigning
    coefficients to parameters (the identity with ``per="coefficient"``),

    .. math::
        K(\theta)x = W^\top (Q\theta \odot Wx), \qquad
        J v = \bigl(W^\top (Qv \odot Wx_i)\bigr)_i, \qquad
        J^\top (w_i)_i = Q^\top \sum_i (W w_i) \odot (W x_i).

    The adjoint is :math:`K` itself (analysis, scaling, synthesis read backwards is the same
    chain), and the gradient with respect to a subband's weight is the correlation of the
    input's and the output gradient's coefficients in that subband. As in the lecture notes
    :math:`K` is linear, :math:`\operatorname{vec}(K(\theta)) = \mathcal{Q}\theta`: column
    :math:`k` of :math:`\mathcal{Q}` is :math:`\operatorname{vec}(W_k^\top W_k)`, the
    orthogonal projection onto subband :math:`k` (:math:`W_k` its rows of :math:`W`), or
    :math:`\operatorname{vec}(w_c w_c^\top)` for the basis function :math:`w_c` of one
    coefficient. :attr:`~structops.kernels.ParametricKernel.Q` is sparse but holds up to :math:`N^2` entries per
    subband (Haar's
    coarse approximation spans the whole grid): it is for small grids, and raises
    ``MemoryError`` above ``MAX_DENSE_ENTRIES``. ``op``, ``apply`` and ``jac`` cost
    :math:`O(NLd)` per example and never build a matrix.

    Examples
    --------
    >>> k = Wavelet(8, "haar")
    >>> k.levels, k.nparams
    (3, 4)
    >>> x = np.arange(8.0)[None]
    >>> bool(np.allclose(k.apply(np.ones(4), x), x))  # theta = 1: the identity
    True
    >>> k.apply(np.array([1.0, 0.0, 0.0, 0.0]), x)  # keep the coarse approximation: the mean
    array([[3.5, 3.5, 3.5, 3.5, 3.5, 3.5, 3.5, 3.5]])
    """

    def __init__(
        self,
        grid: int | Sequence[int],
        wavelet: str = "haar",
        *,
        levels: int | None = None,
        per: str = "subband",
    ) -> None:
        self.grid = _check_grid(grid)
        self.wavelet = _check_wavelet(wavelet)
        filters = _pywt_wavelet(self.wavelet)
        flen = int(filters.dec_len)
        most = max_levels(self.grid, self.wavelet)
        levels = check_optional_int(levels, "levels")
        if levels is None:
            if most == 0:
                raise ValueError(
                    f"`grid` {self.grid} admits no level of the {self.wavelet!r} wavelet: "
                    f"{_level_obstacle(self.grid, 1, self.wavelet, flen)}."
                )
            levels = most
        if levels > most:
            raise ValueError(
                f"`levels`={levels!r} is out of range for grid {self.grid} and {self.wavelet!r} "
                f"(at most {most}): {_level_obstacle(self.grid, most + 1, self.wavelet, flen)}."
            )
        check_choice(per, "per", _PER)
        self.levels = int(levels)
        self.per = per
        lo, hi = np.asarray(filters.dec_lo, dtype=np.float64), np.asarray(filters.dec_hi, dtype=np.float64)
        self._filters: dict[np.dtype, tuple[np.ndarray, np.ndarray]] = {
            np.dtype(dt): (lo.astype(dt), hi.astype(dt)) for dt in (np.float32, np.float64)
        }
        self._shift = flen // 2
        self.subbands = self._layout()
        size = int(np.prod(self.grid))
        self._counts = np.array([b.stop - b.start for b in self.subbands])
        self._starts = np.array([b.start for b in self.subbands])
        super().__init__(len(self.subbands) if per == "subband" else size, self.grid, self.grid)

    def __repr__(self) -> str:
        return f"Wavelet({self.grid}, {self.wavelet!r}, levels={self.levels}, per={self.per!r})"

    def _layout(self) -> tuple[Subband, ...]:
        ndim, J = len(self.grid), self.levels
        details = ["".join(o) for o in itertools.product("ad", repeat=ndim)][1:]
        blocks = [(J, "a" * ndim)] + [(j, o) for j in range(J, 0, -1) for o in details]
        out, start = [], 0
        for level, orientation in blocks:
            shape = tuple(s >> level for s in self.grid)
            stop = start + int(np.prod(shape))
            out.append(Subband(level, orientation, shape, start, stop))
            start = stop
        return tuple(out)

    # ------------------------------------------------------------ the transform
    def _split(self, x: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
        """One analysis step along ``axis``: the low- and high-pass halves."""
        lo, hi = self._filters[x.dtype]
        xm = np.moveaxis(x, axis, -1)
        M = xm.shape[-1]
        even = 2 * np.arange(M // 2)
        a = np.zeros((*xm.shape[:-1], M // 2), dtype=x.dtype)
        d = np.zeros_like(a)
        for m in range(lo.size):  # a few taps; everything else is vectorised
            tap = xm[..., (even + self._shift - m) % M]
            a += lo[m] * tap
            d += hi[m] * tap
        return np.moveaxis(a, -1, axis), np.moveaxis(d, -1, axis)

    def _merge(self, a: np.ndarray, d: np.ndarray, axis: int) -> np.ndarray:
        """The adjoint (and inverse) of :meth:`_split`: scatter both halves back with the same taps."""
        lo, hi = self._filters[a.dtype]
        am, dm = np.moveaxis(a, axis, -1), np.moveaxis(d, axis, -1)
        half = am.shape[-1]
        M = 2 * half
        even = 2 * np.arange(half)
        x = np.zeros((*am.shape[:-1], M), dtype=a.dtype)
        for m in range(lo.size):
            # for one tap the targets (2k + L/2 - m) mod M are distinct: no index is hit twice
            x[..., (even + self._shift - m) % M] += lo[m] * am + hi[m] * dm
        return np.moveaxis(x, -1, axis)

    def _forward(self, x: np.ndarray) -> np.ndarray:
        """``W x_i`` for every row of ``x`` (shape ``(n, N)``), in the order of :attr:`subbands`."""
        n, ndim = x.shape[0], len(self.grid)
        out = np.empty_like(x)
        blocks = {(b.level, b.orientation): b for b in self.subbands}
        approx = x.reshape((n, *self.grid))
        for level in range(1, self.levels + 1):
            bands = {"": approx}
            for axis in range(ndim):
                new = {}
                for key, b in bands.items():
                    new[key + "a"], new[key + "d"] = self._split(b, axis + 1)
                bands = new
            approx = bands.pop("a" * ndim)
            for orientation, b in bands.items():
                blk = blocks[(level, orientation)]
                out[:, blk.start : blk.stop] = b.reshape(n, blk.stop - blk.start)
        top = self.subbands[0]
        out[:, top.start : top.stop] = approx.reshape(n, top.stop - top.start)
        return out

    def _inverse(self, c: np.ndarray) -> np.ndarray:
        """``W^T c_i`` for every row of ``c`` (shape ``(n, N)``), flattened to ``(n, N)``."""
        n, ndim = c.shape[0], len(self.grid)
        top = self.subbands[0]
        approx = c[:, top.start : top.stop].reshape((n, *top.shape))
        blocks = {(b.level, b.orientation): b for b in self.subbands}
        for level in range(self.levels, 0, -1):
            bands = {"a" * ndim: approx}
            for (lev, orientation), blk in blocks.items():
                if lev == level and "d" in orientation:
                    bands[orientation] = c[:, blk.start : blk.stop].reshape((n, *blk.shape))
            for axis in reversed(range(ndim)):
                prefixes = sorted({key[:axis] for key in bands})
                bands = {p: self._merge(bands[p + "a"], bands[p + "d"], axis + 1) for p in prefixes}
            approx = bands[""]
        return approx.reshape(n, self.shape[0])

    def transform(self, X) -> np.ndarray:
        r"""The wavelet coefficients :math:`W x_i` of every example.

        Parameters
        ----------
        X : array_like, shape (n, *grid) or (n, N)
            Examples along the first axis; float32 stays float32, integers become float64.

        Returns
        -------
        numpy.ndarray, shape (n, N)
            Coefficients in the order of ``subbands`` (as ``pywt.wavedecn`` with
            ``mode="periodization"``, each block flattened in C-order).

        Examples
        --------
        >>> Wavelet(4, "haar").transform(np.array([[1.0, 1.0, 1.0, 1.0]]))
        array([[2., 0., 0., 0.]])
        """
        x = as_float_array(X, "X")
        return self._forward(check_batch(x, self.grid, x.dtype, name="X", source="X"))

    def inverse_transform(self, C) -> np.ndarray:
        r"""The inverse (and adjoint) transform :math:`W^\top c_i` of every row of ``C``.

        Parameters
        ----------
        C : array_like, shape (n, N)
            Coefficients in the order of :meth:`transform`.

        Returns
        -------
        numpy.ndarray, shape (n, *grid)
        """
        c = as_float_array(C, "C")
        size = int(np.prod(self.grid))
        c = check_batch(c, (size,), c.dtype, name="C", source="C")
        return self._inverse(c).reshape((c.shape[0], *self.grid))

    def diagonal(self, theta) -> np.ndarray:
        r"""The wavelet-domain weights :math:`Q\theta` (the eigenvalues of :math:`K(\theta)`), shape ``(N,)``."""
        return self._prepare(self.validate_theta(theta))

    # ------------------------------------------------------------------ hooks
    def _prepare(self, theta):
        # the state is the diagonal d = Q theta, in the dtype of theta
        return np.repeat(theta, self._counts) if self.per == "subband" else theta

    def _apply(self, state, x, transpose):
        return self._inverse(state * self._forward(x))  # symmetric: K^T = K

    def _prepare_data(self, x, transpose):
        return self._forward(x)

    def _jvp(self, state, data, v, transpose):
        return self._inverse(self._prepare(v) * data)

    def _vjp(self, state, data, w, transpose, per_example):
        if per_example:
            prods = self._forward(w) * data
            return np.add.reduceat(prods, self._starts, axis=1) if self.per == "subband" else prods
        g = np.einsum("ij,ij->j", self._forward(w), data)
        return np.add.reduceat(g, self._starts) if self.per == "subband" else g

    def _analysis_matrix(self, M: int, band: str) -> sp.csr_array:
        """One level along one axis of length ``M`` as a sparse ``(M/2, M)`` matrix (low or high pass)."""
        lo, hi = self._filters[np.dtype(np.float64)]
        f = lo if band == "a" else hi
        k = np.arange(M // 2)
        cols = (2 * k[:, None] + self._shift - np.arange(f.size)[None, :]) % M
        return sp.csr_array((np.tile(f, k.size), (np.repeat(k, f.size), cols.ravel())), shape=(M // 2, M))

    def _sparse_W(self) -> sp.csr_array:
        """``W`` as a CSR matrix, level by level as Kronecker products of the 1-D steps; row c is ``w_c``."""
        N, ndim = self.shape[0], len(self.grid)
        blocks: dict[tuple[int, str], sp.csr_array] = {}
        approx = sp.eye_array(N, format="csr")  # from the grid to the current approximation
        shape = self.grid
        for level in range(1, self.levels + 1):
            steps = {band: [self._analysis_matrix(s, band) for s in shape] for band in "ad"}
            for orientation in ("".join(o) for o in itertools.product("ad", repeat=ndim)):
                op = steps[orientation[0]][0]
                for axis in range(1, ndim):  # C-order: axis 0 is the outermost Kronecker factor
                    op = sp.kron(op, steps[orientation[axis]][axis], format="csr")
                if "d" in orientation:
                    blocks[(level, orientation)] = sp.csr_array(op @ approx)
                else:
                    low = op
            approx = sp.csr_array(low @ approx)
            shape = tuple(s // 2 for s in shape)
        blocks[(self.levels, "a" * ndim)] = approx
        return sp.csr_array(sp.vstack([blocks[(b.level, b.orientation)] for b in self.subbands], format="csr"))

    def _Q_entries_bound(self) -> int:
        """An upper bound of the entries ``Q`` stores (the MemoryError guard checks it before building).

        A level-``j`` basis function spans at most ``(L - 1)(2**j - 1) + 1`` samples per axis
        (the cascade of ``j`` filters of length ``L``), never more than the axis; column ``k``
        of ``Q`` holds at most ``sum_{c in k} |supp w_c|**2`` entries, and at most ``N**2``.
        """
        N = self.shape[0]
        flen = self._filters[np.dtype(np.float64)][0].size
        total = 0
        for b in self.subbands:
            span = int(np.prod([min(s, (flen - 1) * (2**b.level - 1) + 1) for s in self.grid]))
            entries = int(np.prod(b.shape)) * span**2
            total += entries if self.per == "coefficient" else min(N * N, entries)
        return total

    def _build_Q(self) -> sp.csc_array:
        N = self.shape[0]
        self._check_dense_size(self._Q_entries_bound(), "Q")
        W = self._sparse_W()
        W.eliminate_zeros()
        if self.per == "subband":
            # column k is vec(W_k^T W_k), the projection onto subband k (W_k: its rows of W)
            parts = []
            for k, b in enumerate(self.subbands):
                Wk = W[b.start : b.stop]
                P = sp.coo_array(Wk.T @ Wk)
                parts.append((P.row.astype(np.int64) + P.col.astype(np.int64) * N, P.data, np.full(P.nnz, k)))
            rows, vals, param = (np.concatenate(a) for a in zip(*parts))
        else:
            # column c is vec(w_c w_c^T): every pair (a, b) of the support of w_c contributes
            # w_c[a] w_c[b] at row a + b N of the column-major vec
            support = np.diff(W.indptr).astype(np.int64)
            squares = support**2
            param = np.repeat(np.arange(N), squares)
            offset = np.arange(int(squares.sum()), dtype=np.int64) - np.repeat(np.cumsum(squares) - squares, squares)
            ia = W.indptr[param] + offset % support[param]
            ib = W.indptr[param] + offset // support[param]
            rows = W.indices[ia].astype(np.int64) + W.indices[ib].astype(np.int64) * N
            vals = W.data[ia] * W.data[ib]
        Q = sp.coo_array((vals, (rows, param)), shape=(N * N, self.nparams)).tocsc()
        Q.sum_duplicates()
        return Q
