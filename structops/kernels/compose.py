r"""Composition of a fixed linear map with a kernel family: :math:`\theta \mapsto A\,K(\theta)`."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import pylops
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from .._validation import as_float_array, check_finite
from ._base import ParametricKernel, as_kernel
from ._sparse import lift_rows

__all__ = ["Chain", "LinearMap"]

#: Columns of the identity pushed through a generic map at once when building its sparse form.
_SPARSE_BLOCK = 256


@runtime_checkable
class LinearMap(Protocol):
    r"""A fixed linear map :math:`A` acting on batches: the protocol :class:`~structops.Chain` needs.

    Attributes
    ----------
    in_shape, out_shape : tuple of int
        Shape of one input and one output example (flattened in C-order).

    Notes
    -----
    ``apply(X, transpose=False)`` takes ``X`` of shape ``(n, prod(in_shape))`` and returns
    ``A x_i`` for every row, shape ``(n, *out_shape)`` or ``(n, prod(out_shape))``; with
    ``transpose=True`` it takes ``(n, prod(out_shape))`` rows and returns :math:`A^\top y_i`.
    It must compute in the dtype of ``X``. An optional ``tosparse()`` returning ``A`` as a
    scipy sparse matrix lets :attr:`Chain.Q <structops.kernels.ParametricKernel.Q>` stay sparse
    without probing ``A`` column by column. :class:`~structops.AvgPool` implements the whole protocol.
    """

    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]

    def apply(self, X, transpose: bool = False) -> np.ndarray:
        """Apply ``A`` (or ``A^T``) to every row of ``X``."""
        ...  # pragma: no cover


class _OperatorMap:
    """:class:`LinearMap` view of a pylops/scipy ``LinearOperator``, a sparse matrix or an array."""

    def __init__(self, A) -> None:
        if isinstance(A, pylops.LinearOperator):
            self.in_shape = tuple(int(s) for s in A.dims)
            self.out_shape = tuple(int(s) for s in A.dimsd)
        else:
            if not (sp.issparse(A) or isinstance(A, spla.LinearOperator)):
                A = as_float_array(A, "outer")
                if A.ndim != 2:
                    raise ValueError(f"`outer` given as an array must be 2-D, got shape {A.shape}.")
                check_finite(A, "outer")
            elif sp.issparse(A):
                check_finite(np.asarray(A.data), "outer.data")
            self.in_shape = (int(A.shape[1]),)
            self.out_shape = (int(A.shape[0]),)
        self.A = A

    def __repr__(self) -> str:
        if isinstance(self.A, np.ndarray):
            return f"array(shape={self.A.shape})"
        return repr(self.A)

    def apply(self, X, transpose: bool = False) -> np.ndarray:
        X = np.asarray(X)
        size = int(np.prod(self.out_shape if transpose else self.in_shape))
        rows = np.ascontiguousarray(X.reshape(X.shape[0], size).T)
        A = self.A
        if isinstance(A, (spla.LinearOperator, pylops.LinearOperator)):
            out = A.rmatmat(rows) if transpose else A.matmat(rows)
        else:
            out = (A.T @ rows) if transpose else (A @ rows)
        return np.asarray(out).T.astype(X.dtype, copy=False)

    def tosparse(self) -> sp.csr_array:
        if sp.issparse(self.A):
            return sp.csr_array(self.A, dtype=np.float64)
        if isinstance(self.A, np.ndarray):
            return sp.csr_array(self.A.astype(np.float64))
        return _probe_sparse(self)


def _probe_sparse(outer) -> sp.csr_array:
    """Sparse form of a map that offers only ``apply``: push the identity through in column blocks."""
    rows, cols = int(np.prod(outer.out_shape)), int(np.prod(outer.in_shape))
    blocks = []
    for start in range(0, cols, _SPARSE_BLOCK):
        stop = min(cols, start + _SPARSE_BLOCK)
        eye = np.zeros((stop - start, cols))
        eye[np.arange(stop - start), np.arange(start, stop)] = 1.0
        blocks.append(sp.csr_array(np.asarray(outer.apply(eye)).reshape(stop - start, rows)))
    if not blocks:
        return sp.csr_array((rows, cols))
    return sp.csr_array(sp.vstack(blocks).T)


def _as_map(outer):
    if isinstance(outer, ParametricKernel):
        raise TypeError(
            f"`outer` must be a fixed linear map, got the kernel family {outer!r}; pass `outer.op(theta)` "
            "to compose with it at a fixed theta."
        )
    if all(hasattr(outer, attr) for attr in ("apply", "in_shape", "out_shape")):
        return outer
    if isinstance(outer, (pylops.LinearOperator, spla.LinearOperator, np.ndarray)) or sp.issparse(outer):
        return _OperatorMap(outer)
    raise TypeError(
        f"`outer` must have `apply(X, transpose)`, `in_shape` and `out_shape` (e.g. structops.AvgPool), "
        f"or be a pylops/scipy LinearOperator, a scipy sparse matrix or a 2-D array; got {outer!r}."
    )


class Chain(ParametricKernel):
    r"""The family :math:`\theta \mapsto A\,K(\theta)`: a fixed linear map after a kernel family.

    Typical use is pooling after a convolution, ``Chain(AvgPool(grid, 2, channels=c), conv)``
    (also written ``pool @ conv``). The result is again a :class:`~structops.kernels.ParametricKernel`, so it has
    ``op``, ``apply``, ``jac``, ``Q`` and passes :func:`structops.testing.check_kernel`.

    Parameters
    ----------
    outer : LinearMap, pylops or scipy LinearOperator, sparse matrix or 2-D array
        The fixed map :math:`A`: anything with ``apply(X, transpose)``, ``in_shape`` and
        ``out_shape`` (see :class:`~structops.kernels.LinearMap`; :class:`~structops.AvgPool` qualifies), or an
        operator/matrix, which is wrapped. To compose with another family at a fixed
        :math:`\theta'`, pass ``other.op(theta_prime)``.
    kernel : ParametricKernel
        The inner family :math:`K(\theta)`.

    Raises
    ------
    TypeError
        If ``kernel`` is not a ``ParametricKernel`` or ``outer`` is none of the above.
    ValueError
        If ``outer.in_shape`` does not match ``kernel.out_shape`` (equal shapes, or equal
        sizes when one side is flat).

    Notes
    -----
    Forward and transpose on a batch:

    .. math::
        y_i = A\,K(\theta)\,x_i, \qquad K(\theta)^\top A^\top y_i .

    With :math:`J_K(X)` the Jacobian of :math:`\theta \mapsto (K(\theta)x_i)_i`, the chain
    rule gives, for :math:`n` examples,

    .. math::
        J(X) = (I_n \otimes A)\,J_K(X), \qquad J(X)^\top W = J_K(X)^\top (I_n \otimes A^\top) W,

    so the gradient is the inner family's gradient at the pulled-back residual
    :math:`A^\top w_i`. With ``transpose=True`` the map is
    :math:`\theta \mapsto K(\theta)^\top (A^\top y_i)`, whose Jacobian is the inner family's
    transposed Jacobian at the data :math:`A^\top y_i`. In the column-major ``vec``,
    :math:`\operatorname{vec}(A K) = (I_N \otimes A)\operatorname{vec}(K)`, hence
    :math:`Q = (I_N \otimes A)\,Q_K` and :math:`q = (I_N \otimes A)\,q_K`, built sparse from
    ``outer.tosparse()``. ``linear``, ``bounds``, constraints and ``random_theta`` are the
    inner family's.

    Examples
    --------
    >>> from structops.kernels import Diagonal
    >>> from structops.kernels import AvgPool
    >>> chain = Chain(AvgPool(4, 2), Diagonal(4))
    >>> chain.matrix(np.array([1.0, 2.0, 3.0, 4.0]))
    array([[0.5, 1. , 0. , 0. ],
           [0. , 0. , 1.5, 2. ]])
    """

    def __init__(self, outer, kernel: ParametricKernel) -> None:
        kernel = as_kernel(kernel)
        outer = _as_map(outer)
        a_in = tuple(int(s) for s in outer.in_shape)
        a_out = tuple(int(s) for s in outer.out_shape)
        k_out = kernel.out_shape
        same_size = int(np.prod(a_in)) == int(np.prod(k_out))
        if not (a_in == k_out or (same_size and (len(a_in) == 1 or len(k_out) == 1))):
            raise ValueError(
                f"`outer` takes examples of shape {a_in} but `kernel` {kernel!r} returns examples of "
                f"shape {k_out}; they must match (or have the same size when one of them is flat)."
            )
        self.outer = outer
        self._outer_sizes = (int(np.prod(a_in)), int(np.prod(a_out)))
        self.kernel = kernel
        self.linear = kernel.linear
        super().__init__(kernel.nparams, kernel.in_shape, a_out)

    def __repr__(self) -> str:
        return f"Chain({self.outer!r}, {self.kernel!r})"

    # ----------------------------------------------------------------- pieces
    def _outer(self, y: np.ndarray, transpose: bool) -> np.ndarray:
        """``A y_i`` (or ``A^T y_i``) for every row of ``y``, flat rows in ``y``'s dtype."""
        out = np.asarray(self.outer.apply(y, transpose=transpose))
        size = self._outer_sizes[0 if transpose else 1]
        return out.reshape(y.shape[0], size).astype(y.dtype, copy=False)

    @property
    def bounds(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The inner family's bounds on ``theta``."""
        return self.kernel.bounds

    def random_theta(self, rng: np.random.Generator | int | None = None, dtype=np.float64) -> np.ndarray:
        """A random feasible ``theta`` of the inner family."""
        return self.kernel.random_theta(rng, dtype)

    def _check_constraints(self, theta):
        self.kernel._check_constraints(theta)

    # ------------------------------------------------------------------ hooks
    # plain delegation: the inner family's states pass through (what depends only on theta,
    # e.g. its spectrum, once per operator; what depends only on the data, e.g. the spectrum of
    # the examples and A^T y for the transposed map, once per Jacobian)
    def _prepare(self, theta):
        return self.kernel._prepare(theta)

    def _state_dtype(self, state):
        return self.kernel._state_dtype(state)

    def _apply(self, state, x, transpose):
        if transpose:
            return self.kernel._apply(state, self._outer(x, True), True)
        return self._outer(self.kernel._apply(state, x, False), False)

    def _prepare_data(self, x, transpose):
        return self.kernel._prepare_data(self._outer(x, True) if transpose else x, transpose)

    def _jvp(self, state, data, v, transpose):
        y = self.kernel._jvp(state, data, v, transpose)
        return y if transpose else self._outer(y, False)

    def _vjp(self, state, data, w, transpose, per_example):
        return self.kernel._vjp(state, data, w if transpose else self._outer(w, True), transpose, per_example)

    def _dense(self, state):
        inner = self.kernel._dense(state)  # (m_K, N)
        return np.ascontiguousarray(self._outer(np.ascontiguousarray(inner.T), False).T)

    # ---------------------------------------------------------------- Q and q
    def _outer_sparse(self) -> sp.csr_array:
        to_sparse = getattr(self.outer, "tosparse", None)
        if to_sparse is not None:
            A = to_sparse()
        else:
            rows, cols = int(np.prod(self.outer.out_shape)), int(np.prod(self.outer.in_shape))
            self._check_dense_size(max(rows, cols) * _SPARSE_BLOCK, "the sparse form of `outer`")
            A = _probe_sparse(self.outer)
        return sp.csr_array(A, dtype=np.float64)

    def _build_Q(self):
        # (I_N ⊗ A) Q_K, never forming I_N ⊗ A: O(nnz) in memory and time
        return lift_rows(self._outer_sparse(), self.kernel.Q, self.kernel.shape[0])

    @property
    def q(self) -> np.ndarray | None:
        """``(I_N ⊗ A) q_K = vec(A mat(q_K))`` (None when the inner family has no constant part)."""
        q_inner = self.kernel.q
        if q_inner is None:
            return None
        Q_inner = np.asarray(q_inner, dtype=np.float64).reshape(self.kernel.shape, order="F")
        return np.asarray(self._outer_sparse() @ Q_inner).ravel(order="F")
