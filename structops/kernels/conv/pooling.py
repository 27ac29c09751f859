r"""Average pooling :math:`A` as a pylops operator with its exact adjoint."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from ..._validation import as_float_array, check_batch, check_int_tuple, check_positive_int
from .._base import MAX_DENSE_ENTRIES, ParametricKernel
from ..operators import ColumnBatched

__all__ = ["AvgPool"]

_REMAINDERS = ("error", "drop")


class AvgPool(ColumnBatched):
    r"""Average pooling over non-overlapping windows, channel by channel.

    Every channel of a ``grid``-shaped example is cut into windows of shape ``window``
    (stride = window) and each window is replaced by its mean. One, two or three axes
    (signals, images, volumes) and any grid, square or not.

    Parameters
    ----------
    grid : int or sequence of int
        Shape of one channel of the input (1, 2 or 3 axes); an int means a 1-D signal.
    window : int or sequence of int
        Window shape, one entry per axis of ``grid`` (an int is used on every axis).
    channels : int, optional
        Number of channels, pooled independently (default 1).
    remainder : {"error", "drop"}, optional
        What to do when ``window`` does not divide ``grid`` on some axis. ``"error"``
        (default) raises ``ValueError``; ``"drop"`` ignores the trailing
        ``grid % window`` cells of that axis (PyTorch's ``ceil_mode=False``): they do not
        enter any output, and the adjoint gives them zero.
    dtype : numpy dtype, optional
        dtype the pylops operator advertises (default float64). Products compute in the
        dtype of their input, so float32 data stays float32.
    name : str, optional
        Name of the pylops operator.

    Attributes
    ----------
    grid_out : tuple of int
        ``grid // window`` per axis.
    in_shape, out_shape : tuple of int
        ``(channels, *grid)`` and ``(channels, *grid_out)`` (also pylops' ``dims``/``dimsd``).

    Raises
    ------
    ValueError
        If ``grid`` does not have 1--3 axes, ``grid`` or ``window`` has an entry < 1,
        ``window`` has the wrong number of
        entries, a window is larger than the grid, ``window`` does not divide ``grid`` with
        ``remainder="error"``, or ``remainder`` is unknown.
    TypeError
        If ``grid``, ``window`` or ``channels`` are not integers.

    Notes
    -----
    With :math:`|w| = \prod_k w_k`, :math:`G` the kept part of the grid and
    :math:`W(j) = \{i : \lfloor i_k / w_k \rfloor = j_k\ \forall k\}` the window of output
    cell :math:`j`, the forward map and its adjoint are

    .. math::
        (A x)_{c, j} = \frac{1}{|w|} \sum_{i \in W(j)} x_{c, i}, \qquad
        (A^\top y)_{c, i} = \begin{cases} y_{c, \lfloor i / w \rfloor} / |w| & i \in G, \\
        0 & \text{otherwise (dropped cells)}. \end{cases}

    The adjoint of averaging is nearest-neighbour upsampling scaled by :math:`1/|w|`.
    :math:`A A^\top = I / |w|`, so :math:`|w|^{1/2} A^\top` has orthonormal columns.
    Both directions are vectorised over examples, channels and windows: the forward map
    adds the ``w_k`` strided slabs of one axis at a time, the adjoint is one broadcast.

    Examples
    --------
    >>> pool = AvgPool((2, 4), 2)
    >>> pool.matrix().shape
    (2, 8)
    >>> pool.apply(np.arange(8.0).reshape(1, 1, 2, 4))
    array([[[[2.5, 4.5]]]])
    """

    def __init__(
        self,
        grid: int | Sequence[int],
        window: int | Sequence[int],
        *,
        channels: int = 1,
        remainder: str = "error",
        dtype=np.float64,
        name: str = "AvgPool",
    ) -> None:
        if isinstance(grid, (int, np.integer)) and not isinstance(grid, bool):
            grid = (grid,)
        self.grid = check_int_tuple(grid, "grid")
        if not 1 <= len(self.grid) <= 3:
            raise ValueError(f"`grid` must have 1, 2 or 3 axes, got {grid!r}.")
        ndim = len(self.grid)
        self.window = check_int_tuple(window, "window", ndim=ndim)
        self.channels = check_positive_int(channels, "channels")
        if remainder not in _REMAINDERS:
            raise ValueError(f"`remainder` must be one of {_REMAINDERS!r}, got {remainder!r}.")
        self.remainder = remainder
        for axis, (g, w) in enumerate(zip(self.grid, self.window)):
            if w > g:
                raise ValueError(
                    f"`window` {self.window!r} is larger than `grid` {self.grid!r} on axis {axis} "
                    f"({w} > {g}); every window must fit in the grid."
                )
            if g % w and remainder == "error":
                raise ValueError(
                    f"`window` {self.window!r} does not divide `grid` {self.grid!r} on axis {axis} "
                    f"({g} % {w} = {g % w}); pick a dividing window or pass remainder='drop' "
                    "to ignore the trailing cells."
                )
        self.grid_out = tuple(g // w for g, w in zip(self.grid, self.window))
        self._kept = tuple(go * w for go, w in zip(self.grid_out, self.window))
        self._crops = self._kept != self.grid
        self._scale = 1.0 / float(np.prod(self.window))
        # (n, C, go_1, w_1, go_2, w_2, ...): every output cell next to its window
        self._split = (self.channels, *(s for pair in zip(self.grid_out, self.window) for s in pair))
        self._expand = (self.channels, *(s for go in self.grid_out for s in (go, 1)))
        self.in_shape = (self.channels, *self.grid)
        self.out_shape = (self.channels, *self.grid_out)
        if np.dtype(dtype) not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise TypeError(f"`dtype` must be float32 or float64 (averages are not integers), got {np.dtype(dtype)}.")
        super().__init__(dtype=np.dtype(dtype), dims=self.in_shape, dimsd=self.out_shape, name=name)

    def __repr__(self) -> str:
        extra = ", remainder='drop'" if self.remainder == "drop" else ""
        return f"AvgPool({self.grid!r}, {self.window!r}, channels={self.channels}{extra})"

    # ----------------------------------------------------------- row kernels
    def _pool_rows(self, x: np.ndarray) -> np.ndarray:
        """Average every window of each row of ``x`` (shape ``(n, prod(in_shape))``).

        One axis at a time, last first: view the axis as ``(go, w)`` and add the ``w``
        strided slabs. Each pass shrinks the data by ``w`` and streams through memory,
        unlike a reduction over several small non-adjacent axes.
        """
        n = x.shape[0]
        shape = [n * self.channels, *self.grid]
        owned = False
        for k in range(len(self.grid), 0, -1):
            before, rest = int(np.prod(shape[:k])), int(np.prod(shape[k + 1 :]))
            go, w = self.grid_out[k - 1], self.window[k - 1]
            view = x.reshape(before, shape[k], rest)[:, : go * w].reshape(before, go, w, rest)
            if w == 1:
                x = view[:, :, 0]
            else:
                x = view[:, :, 0] + view[:, :, 1]
                for r in range(2, w):
                    x += view[:, :, r]
                owned = True
            shape[k] = go
        y = x.reshape(n, self.shape[0])
        if not owned:  # all windows are 1: never scale the caller's array in place
            y = y.copy()
        if y.dtype.kind in "fc":
            y *= y.dtype.type(self._scale)  # float32 stays float32
        else:
            y = y * self._scale
        return y

    def _spread_rows(self, y: np.ndarray) -> np.ndarray:
        """The adjoint on rows: copy each output cell over its window, times ``1/|w|``."""
        n = y.shape[0]
        scale = y.dtype.type(self._scale) if y.dtype.kind in "fc" else self._scale
        z = np.broadcast_to(y.reshape(n, *self._expand), (n, *self._split)) * scale
        if not self._crops:
            return z.reshape(n, self.shape[1])
        out = np.zeros((n, *self.in_shape), dtype=z.dtype)
        kept = (slice(None), slice(None), *(slice(0, k) for k in self._kept))
        out[kept] = z.reshape(n, self.channels, *self._kept)
        return out.reshape(n, self.shape[1])

    def _rows(self, x: np.ndarray, transpose: bool) -> np.ndarray:
        return self._spread_rows(x) if transpose else self._pool_rows(x)

    # ------------------------------------------------------------ pylops API
    def _columns(self, X, adjoint):
        return self._rows(np.ascontiguousarray(np.asarray(X).T), adjoint).T

    # ----------------------------------------------------- kernel-style API
    def apply(self, X, transpose: bool = False) -> np.ndarray:
        r"""Pool every example of a batch (or apply the adjoint with ``transpose=True``).

        Parameters
        ----------
        X : array_like, shape (n, *in_shape) or (n, prod(in_shape))
            Examples along the first axis, float32 or float64 (``out_shape`` with
            ``transpose=True``). The computation runs in the dtype of ``X``.
        transpose : bool, optional
            Apply :math:`A^\top` (upsampling by copies, scaled by ``1/|w|``).

        Returns
        -------
        numpy.ndarray, shape (n, *out_shape)
            ``A x_i`` for each example (``(n, *in_shape)`` with ``transpose``).

        Raises
        ------
        ValueError
            If ``X`` does not hold examples of the expected shape, e.g. the wrong number of
            channels.
        """
        x_shape, y_shape = (self.out_shape, self.in_shape) if transpose else (self.in_shape, self.out_shape)
        arr = as_float_array(X, "X")
        if arr.ndim == len(x_shape) + 1 and arr.shape[2:] == x_shape[1:] and arr.shape[1] != self.channels:
            raise ValueError(
                f"`X` has {arr.shape[1]} channels (shape {arr.shape}) but {self!r} pools "
                f"{self.channels}; expected shape (n, {', '.join(map(str, x_shape))})."
            )
        x = check_batch(arr, x_shape, arr.dtype)
        return self._rows(x, bool(transpose)).reshape(x.shape[0], *y_shape)

    def tosparse(self, dtype=None) -> sp.csr_array:
        """The pooling matrix as a CSR array built from the window structure (never densified).

        Parameters
        ----------
        dtype : numpy dtype, optional
            Default the operator's dtype.

        Returns
        -------
        scipy.sparse.csr_array, shape (prod(out_shape), prod(in_shape))
            One entry ``1/|w|`` per kept input cell.
        """
        dtype = self.dtype if dtype is None else np.dtype(dtype)
        kept = (self.channels, *self._kept)
        idx = np.indices(kept).reshape(len(kept), -1)
        cols = np.ravel_multi_index(tuple(idx), self.in_shape)
        out_idx = (idx[0], *(idx[1 + k] // w for k, w in enumerate(self.window)))
        rows = np.ravel_multi_index(out_idx, self.out_shape)
        vals = np.full(cols.size, self._scale, dtype=dtype)
        return sp.csr_array((vals, (rows, cols)), shape=self.shape)

    def matrix(self, dtype=None) -> np.ndarray:
        """The pooling matrix as a dense array (for checks and small sizes).

        Raises
        ------
        MemoryError
            If it would have more than ``MAX_DENSE_ENTRIES`` entries.
        """
        if self.shape[0] * self.shape[1] > MAX_DENSE_ENTRIES:
            raise MemoryError(
                f"matrix() of {self!r} would hold {self.shape[0] * self.shape[1]:,} dense entries (more "
                f"than {MAX_DENSE_ENTRIES:,}); use `apply`, the operator itself or `tosparse()`."
            )
        return self.tosparse(dtype).toarray()

    def todense(self, backend: str = "numpy") -> np.ndarray:
        """Dense matrix (same as :meth:`matrix`), for pylops compatibility."""
        return self.matrix()

    def __matmul__(self, other):
        """``pool @ kernel`` is the family :class:`~structops.kernels.Chain` ``(pool, kernel)``."""
        if isinstance(other, ParametricKernel):
            from ..compose import Chain

            return Chain(self, other)
        return super().__matmul__(other)
