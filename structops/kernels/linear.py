r"""The generic affine model :math:`\operatorname{vec}(K(\theta)) = Q\theta + q`."""

from __future__ import annotations

from functools import cached_property
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from .._validation import as_float_array, check_finite, check_int_tuple
from ._base import ParametricKernel
from ._sparse import csc_from_triplets

#: Above this fraction of nonzero entries ``K`` is stored dense and products use BLAS.
DENSE_FRACTION = 0.1
#: Number of pattern entries gathered at once in the sparse gradient (bounds temporaries).
_GATHER_CHUNK = 2**22


class Pattern(NamedTuple):
    """The nonzero pattern of an affine family.

    ``K[rows[l], cols[l]] = (QR @ theta)[l] + qR[l]`` for every pattern entry ``l``; all
    other entries of ``K`` are zero. ``QR`` holds the rows of ``Q`` that are not empty.
    """

    rows: np.ndarray
    cols: np.ndarray
    QR: sp.csr_array
    qR: np.ndarray | None


class PatternKernel(ParametricKernel):
    r"""Base of the affine families: ``K(θ)`` is scattered from ``Q_R θ + q_R`` onto a pattern.

    Memory stays :math:`O(\operatorname{nnz}(Q) + \text{data})`: ``K`` is a dense array only
    when the pattern fills more than ``DENSE_FRACTION`` of it (then it costs no more than the
    pattern), else a CSR matrix.

    Notes
    -----
    With :math:`K_{r_l c_l} = (Q_R\theta + q_R)_l`, the forward map is
    :math:`y_i = K x_i`; the Jacobian is :math:`Jv = (\operatorname{mat}(Qv)\,x_i)_i` and its
    adjoint :math:`J^\top W = Q_R^\top g` with :math:`g_l = \sum_i w_{i,r_l} x_{i,c_l}`, the
    lecture notes' :math:`Q^\top w` restricted to the pattern.
    """

    @cached_property
    def _pattern(self) -> Pattern:
        return self._build_pattern()

    def _build_pattern(self) -> Pattern:
        raise TypeError(f"{type(self).__name__} must define its pattern")  # pragma: no cover

    @cached_property
    def _is_dense(self) -> bool:
        rows, cols = self.shape
        return self._pattern.rows.size > DENSE_FRACTION * rows * cols

    @cached_property
    def _QR_by_dtype(self) -> dict:
        QR = self._pattern.QR
        return {dt: QR.astype(dt) for dt in (np.float32, np.float64)}

    def _values(self, theta: np.ndarray, offset: bool) -> np.ndarray:
        vals = self._QR_by_dtype[theta.dtype.type] @ theta
        if offset and self._pattern.qR is not None:
            vals = vals + self._pattern.qR.astype(theta.dtype)
        return vals

    def _assemble(self, theta: np.ndarray, offset: bool = True):
        """``K(theta)`` as a dense array or CSR matrix (``offset=False`` drops ``q``)."""
        pat = self._pattern
        vals = self._values(theta, offset)
        if self._is_dense:
            K = np.zeros(self.shape, dtype=theta.dtype)
            K[pat.rows, pat.cols] = vals
            return K
        return sp.csr_array((vals, (pat.rows, pat.cols)), shape=self.shape)

    @staticmethod
    def _product(K, x: np.ndarray, transpose: bool) -> np.ndarray:
        # Rows of x are examples: y = x @ K.T, or x @ K for the transpose.
        Kt = K if transpose else K.T
        if sp.issparse(Kt):
            return np.ascontiguousarray((Kt.T @ x.T).T)
        return x @ Kt

    # the state is K(theta) itself, assembled once per operator
    def _prepare(self, theta):
        return self._assemble(theta)

    def _state_dtype(self, state):
        return state.dtype

    def _apply(self, state, x, transpose):
        return self._product(state, x, transpose)

    def _jvp(self, state, data, v, transpose):
        return self._product(self._assemble(v, offset=False), data, transpose)

    def _dense(self, state):
        return state.toarray() if sp.issparse(state) else state

    def _vjp(self, state, data, w, transpose, per_example):
        pat = self._pattern
        QR = self._QR_by_dtype[w.dtype.type]
        x = data
        # d<w, y>/dK[r, c] = sum_i left[i, r] * right[i, c]
        left, right = (x, w) if transpose else (w, x)
        if per_example:
            prods = left[:, pat.rows] * right[:, pat.cols]
            return np.asarray((QR.T @ prods.T).T)
        if self._is_dense:
            g = (left.T @ right)[pat.rows, pat.cols]
        else:
            g = np.empty(pat.rows.size, dtype=w.dtype)
            step = max(1, _GATHER_CHUNK // max(1, x.shape[0]))
            for s in range(0, pat.rows.size, step):
                r, c = pat.rows[s : s + step], pat.cols[s : s + step]
                g[s : s + step] = np.einsum("il,il->l", left[:, r], right[:, c])
        return QR.T @ g

    def _build_Q(self):
        # row l of Q_R is row rows[l] + cols[l] * m of Q: scatter its triplets, O(nnz(Q_R))
        pat = self._pattern
        rows, cols = self.shape
        lin = pat.rows.astype(np.int64) + pat.cols.astype(np.int64) * rows
        QR = sp.coo_array(pat.QR)
        return csc_from_triplets(QR.data, lin[QR.row], QR.col, (rows * cols, self.nparams))

    @property
    def q(self) -> np.ndarray | None:
        """Dense ``q`` of length ``rows * cols`` (None when the family has no offset)."""
        pat = self._pattern
        if pat.qR is None:
            return None
        q = np.zeros(self.shape[0] * self.shape[1])
        q[pat.rows + pat.cols * self.shape[0]] = pat.qR
        return q


class LinearKernel(PatternKernel):
    r"""Generic affine family :math:`\operatorname{vec}(K(\theta)) = Q\theta + q`.

    Any user-defined sparsity pattern: the columns of :math:`Q` say where each parameter
    enters :math:`K`. ``vec`` stacks columns (column-major), as in the lecture notes.

    Parameters
    ----------
    Q : scipy.sparse matrix or array_like, shape (rows * cols, p)
        The linear part. Stored sparse (CSR restricted to its nonzero rows); never densified.
    shape : tuple of int
        ``(rows, cols)`` of ``K``.
    q : array_like or scipy.sparse, shape (rows * cols,), optional
        Constant part (default zero).

    Raises
    ------
    ValueError
        If ``Q`` does not have ``rows * cols`` rows, ``q`` has the wrong length, or either
        holds NaN/Inf.

    Notes
    -----
    The Jacobian follows the lecture notes: :math:`J_\theta(K(\theta)x)v = \operatorname{mat}(Qv)\,x`
    and the adjoint contracts the outer products :math:`w x^\top` with :math:`Q^\top`.

    Examples
    --------
    A 2×2 symmetric family with one parameter on the diagonal and one off it:

    >>> import numpy as np, scipy.sparse as sp
    >>> Q = sp.csr_array(np.array([[1, 0], [0, 1], [0, 1], [1, 0]]))
    >>> LinearKernel(Q, (2, 2)).matrix(np.array([2.0, 3.0]))
    array([[2., 3.],
           [3., 2.]])
    """

    def __init__(self, Q, shape, q=None) -> None:
        rows, cols = check_int_tuple(shape, "shape", ndim=2)
        if sp.issparse(Q):
            if Q.dtype.kind not in "biuf":
                raise TypeError(f"`Q` must be a real sparse matrix, got dtype {Q.dtype}.")
            # CSC: memory O(nnz + p); CSR would hold rows * cols + 1 row pointers
            Qs = sp.csc_array(Q, dtype=np.float64)
            check_finite(Qs.data, "Q")
        else:
            Qd = as_float_array(Q, "Q")
            if Qd.ndim != 2:
                raise ValueError(f"`Q` must be 2-D with shape (rows * cols, p), got shape {Qd.shape}.")
            check_finite(Qd, "Q")
            Qs = sp.csc_array(Qd.astype(np.float64))
        if Qs.shape[0] != rows * cols:
            raise ValueError(
                f"`Q` must have rows * cols = {rows * cols} rows for shape {(rows, cols)}, got shape {Qs.shape}."
            )
        Qs.sum_duplicates()
        qvec = None
        if q is not None:
            qd = np.asarray(q.toarray() if sp.issparse(q) else q)
            qd = as_float_array(qd, "q").reshape(-1).astype(np.float64)
            if qd.size != rows * cols:
                raise ValueError(f"`q` must have rows * cols = {rows * cols} entries, got {qd.size}.")
            check_finite(qd, "q")
            qvec = qd
        self._Q_user = Qs
        self._q_user = qvec
        super().__init__(Qs.shape[1], (cols,), (rows,))

    def _build_pattern(self) -> Pattern:
        Q = self._Q_user.tocoo()  # O(nnz): never an array over all rows * cols entries of K
        lin = np.unique(Q.row.astype(np.int64))
        if self._q_user is not None:
            lin = np.union1d(lin, np.flatnonzero(self._q_user))
        QR = sp.csr_array((Q.data, (np.searchsorted(lin, Q.row), Q.col)), shape=(lin.size, Q.shape[1]))
        rows = self.shape[0]
        qR = None if self._q_user is None else self._q_user[lin]
        return Pattern(lin % rows, lin // rows, QR, qR)

    def _build_Q(self):
        return sp.csc_array(self._Q_user)

    @property
    def q(self) -> np.ndarray | None:
        """The constant part ``q`` as given (None when zero)."""
        return self._q_user
