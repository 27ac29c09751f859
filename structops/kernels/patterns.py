r"""Sparsity patterns: :math:`\theta` fills the nonzeros of a fixed pattern, in ``vec`` order.

The lecture notes (Lars Ruthotto, *Numerical Methods for Deep Learning*, "Parametric Models")
end with "other sparsity patterns" among the ideas for projects. Every family here is the
affine model :math:`K(\theta) = \operatorname{mat}(Q\theta)` whose :math:`Q` has a single one
per column: parameter :math:`k` is the :math:`k`-th nonzero of the pattern in column-major
(``vec``) order. :class:`Sparse` takes any pattern, :class:`Banded` the band of ``lower``
subdiagonals and ``upper`` superdiagonals.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .._validation import check_positive_int
from .linear import Pattern, PatternKernel

__all__ = ["Banded", "Sparse"]


class _EntryPattern(PatternKernel):
    r"""Base of the pattern families: :math:`K_{r_k c_k} = \theta_k`, every other entry zero.

    ``rows`` and ``cols`` (length ``p``, sorted column-major) are the positions of the
    parameters; memory is :math:`O(p)` for the pattern and :math:`O(p)` (sparse) or
    :math:`O(mn)` (when the pattern fills more than a tenth of ``K``) for the assembled matrix.
    """

    def __init__(self, rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> None:
        self._rows = np.ascontiguousarray(rows, dtype=np.int64)
        self._cols = np.ascontiguousarray(cols, dtype=np.int64)
        self._rows.setflags(write=False)
        self._cols.setflags(write=False)
        super().__init__(self._rows.size, (shape[1],), (shape[0],))

    @property
    def rows(self) -> np.ndarray:
        """Row index of each parameter, shape ``(p,)`` (read-only)."""
        return self._rows

    @property
    def cols(self) -> np.ndarray:
        """Column index of each parameter, shape ``(p,)`` (read-only)."""
        return self._cols

    @property
    def pattern(self) -> sp.csc_array:
        """The pattern as a boolean CSC array of shape ``shape`` (:math:`O(p)` memory)."""
        return sp.csc_array((np.ones(self.nparams, dtype=bool), (self._rows, self._cols)), shape=self.shape)

    def _build_pattern(self) -> Pattern:
        return Pattern(self._rows, self._cols, sp.eye_array(self.nparams, format="csr"), None)


def _pattern_entries(pattern) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Rows, columns (column-major order) and shape of the nonzeros of ``pattern``; O(nnz) for sparse input."""
    if sp.issparse(pattern):
        if pattern.ndim != 2:
            raise ValueError(f"`pattern` must be 2-D (the shape of K), got a sparse array of shape {pattern.shape}.")
        if pattern.dtype.kind not in "biuf":
            raise TypeError(f"`pattern` must be a boolean or real sparse matrix, got dtype {pattern.dtype}.")
        coo = sp.coo_array(pattern, copy=True)  # sum_duplicates works in place: never on the caller's data
        coo.sum_duplicates()
        if coo.dtype.kind == "f" and not np.isfinite(coo.data).all():
            raise ValueError("`pattern` must be finite: its nonzeros mark the parameters; got NaN or Inf entries.")
        keep = coo.data != 0  # explicitly stored zeros are not part of the pattern
        rows, cols = coo.row[keep], coo.col[keep]
        order = np.lexsort((rows, cols))  # by column, then by row: the order of vec
        rows, cols = rows[order], cols[order]
        shape = coo.shape
    else:
        arr = np.asarray(pattern)
        if arr.dtype.kind not in "biuf":
            raise TypeError(
                f"`pattern` must be a boolean (or real) array or a scipy sparse matrix, got dtype {arr.dtype}."
            )
        if arr.ndim != 2:
            raise ValueError(f"`pattern` must be 2-D (the shape of K), got an array of shape {arr.shape}.")
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise ValueError("`pattern` must be finite: its nonzeros mark the parameters; got NaN or Inf entries.")
        cols, rows = np.nonzero(arr.T)  # C-order over K^T is column-major order over K
        shape = arr.shape
    shape = (int(shape[0]), int(shape[1]))
    if 0 in shape:
        raise ValueError(f"`pattern` must not be empty: K needs at least one row and one column, got shape {shape}.")
    if rows.size == 0:
        raise ValueError(f"`pattern` must have at least one nonzero (one parameter), got none in shape {shape}.")
    return rows, cols, shape


class Sparse(_EntryPattern):
    r"""Affine family on a fixed sparsity pattern: :math:`\theta` fills the nonzeros in ``vec`` order.

    One of the lecture notes' "other sparsity patterns" (Lars Ruthotto, *Numerical Methods
    for Deep Learning*, "Parametric Models"): with the nonzero positions
    :math:`(r_k, c_k)_{k=1}^p` of ``pattern`` sorted column-major (by column, then row: the
    order in which ``vec`` stacks the columns),

    .. math::
        K(\theta)_{r_k c_k} = \theta_k, \qquad K(\theta)_{ij} = 0 \text{ elsewhere},

    i.e. :math:`\operatorname{vec}(K(\theta)) = Q\theta` with :math:`Q = [e_{r_1 + c_1 m},
    \dots, e_{r_p + c_p m}]` (one one per column) and :math:`p = \operatorname{nnz}`.

    Parameters
    ----------
    pattern : array_like of bool, shape (m, N), or scipy.sparse matrix/array
        The nonzeros (``True``, or any nonzero value) mark the free entries of ``K``. A sparse
        pattern is read in :math:`O(\operatorname{nnz})` memory (duplicates summed, explicitly
        stored zeros ignored); a dense one is read as given.

    Raises
    ------
    TypeError
        If ``pattern`` is neither a boolean/real array nor a scipy sparse matrix.
    ValueError
        If ``pattern`` is not 2-D, has a zero dimension, no nonzero, or NaN/Inf entries.

    Notes
    -----
    :math:`K` is stored sparse (CSR) unless the pattern fills more than a tenth of it. The
    adjoint is the same pattern transposed, :math:`(K^\top)_{c_k r_k} = \theta_k`. The
    Jacobian of :math:`y_i = K(\theta)x_i` is, as in the lecture notes,
    :math:`Jv = (\operatorname{mat}(Qv)\,x_i)_i` and :math:`J^\top W = Q^\top \sum_i
    \operatorname{vec}(w_i x_i^\top)`, i.e. :math:`(J^\top W)_k = \sum_i w_{i,r_k}\,x_{i,c_k}`.

    Examples
    --------
    >>> pattern = np.array([[True, False, True], [True, True, False]])
    >>> k = Sparse(pattern)
    >>> k.nparams
    4
    >>> k.matrix(np.array([1.0, 2.0, 3.0, 4.0]))  # column by column: (0,0), (1,0), (1,1), (0,2)
    array([[1., 0., 4.],
           [2., 3., 0.]])
    """

    def __init__(self, pattern) -> None:
        rows, cols, shape = _pattern_entries(pattern)
        super().__init__(rows, cols, shape)

    def __repr__(self) -> str:
        return f"Sparse(shape={self.shape}, nnz={self.nparams})"


class Banded(_EntryPattern):
    r"""Banded :math:`n \times n` family: every entry with :math:`-\text{upper} \le i - j \le \text{lower}` is free.

    One of the lecture notes' "other sparsity patterns" (Lars Ruthotto, *Numerical Methods
    for Deep Learning*, "Parametric Models"): ``lower`` subdiagonals, the diagonal and
    ``upper`` superdiagonals, each entry its own parameter. ``Banded(n, 1, 1)`` is the
    tridiagonal family with :math:`p = 3n - 2`; in general

    .. math::
        p = n(\text{lower} + \text{upper} + 1) - \tfrac{\text{lower}(\text{lower}+1)}{2}
            - \tfrac{\text{upper}(\text{upper}+1)}{2}.

    Parameters
    ----------
    n : int
        Size of ``K`` (``n >= 1``).
    lower, upper : int
        Number of sub- and superdiagonals, each in ``[0, n - 1]``.

    Raises
    ------
    TypeError
        If ``n``, ``lower`` or ``upper`` is not an integer.
    ValueError
        If ``n < 1`` or ``lower``/``upper`` lies outside ``[0, n - 1]``.

    Notes
    -----
    **Order of** :math:`\theta`: column-major over the band, the order of ``vec`` restricted to
    the band. Column :math:`j` contributes rows :math:`\max(0, j - \text{upper}), \dots,
    \min(n - 1, j + \text{lower})` in turn; for the tridiagonal :math:`3 \times 3` family

    .. math::
        K(\theta) = \begin{pmatrix} \theta_1 & \theta_3 & \\ \theta_2 & \theta_4 & \theta_6 \\
        & \theta_5 & \theta_7 \end{pmatrix}.

    ``rows`` and ``cols`` give the position of each parameter. :math:`K` is a :class:`Sparse`
    pattern: stored as CSR in :math:`O(p)` memory, :math:`K^\top` is banded with ``lower`` and
    ``upper`` exchanged, and :math:`(J^\top W)_k = \sum_i w_{i,r_k} x_{i,c_k}`.

    Examples
    --------
    >>> Banded(3, 1, 1).matrix(np.arange(1.0, 8.0))
    array([[1., 3., 0.],
           [2., 4., 6.],
           [0., 5., 7.]])
    >>> Banded(5, 1, 1).nparams == 3 * 5 - 2
    True
    """

    def __init__(self, n: int, lower: int, upper: int) -> None:
        self.n = check_positive_int(n, "n")
        self.lower = check_positive_int(lower, "lower", 0, maximum=self.n - 1)
        self.upper = check_positive_int(upper, "upper", 0, maximum=self.n - 1)
        j = np.arange(self.n, dtype=np.int64)
        first = np.maximum(0, j - self.upper)
        counts = np.minimum(self.n - 1, j + self.lower) + 1 - first
        cols = np.repeat(j, counts)
        starts = np.cumsum(counts) - counts  # where each column's run begins in theta
        rows = first[cols] + np.arange(cols.size, dtype=np.int64) - starts[cols]
        super().__init__(rows, cols, (self.n, self.n))

    def __repr__(self) -> str:
        return f"Banded({self.n}, {self.lower}, {self.upper})"
