r""":math:`I_n \otimes K(\theta)`: a family's operator on a batch of examples, as one pylops operator.

It sits above the contract (:mod:`._base`, which checks that ``kernel`` is a family) and the
operators the contract hands out (:mod:`.operators`), so that every import points down.
"""

from __future__ import annotations

import numpy as np

from .._validation import check_positive_int
from ._base import ParametricKernel, as_kernel
from .operators import ColumnBatched

__all__ = ["BatchOperator"]


class BatchOperator(ColumnBatched):
    r""":math:`I_n \otimes K(\theta)`: the operator applied to ``n`` examples at once.

    A pylops ``LinearOperator`` of shape ``(n * rows, n * cols)`` acting on the examples
    flattened C-order from ``(n, *in_shape)`` (``out_shape`` with ``transpose``); every product
    is one batched call of the family (no loop over examples), and ``matmat`` over ``k``
    columns is one call on ``n k`` examples.

    Parameters
    ----------
    kernel : ParametricKernel
    theta : array_like, shape (p,)
    n : int
        Number of examples (``>= 0``).
    transpose : bool, optional
        :math:`I_n \otimes K(\theta)^\top` instead.
    """

    def __init__(self, kernel: ParametricKernel, theta, n: int, transpose: bool = False) -> None:
        kernel = as_kernel(kernel)
        self.n = check_positive_int(n, "n", minimum=0)
        self.op = kernel.op(theta)
        if transpose:
            self.op = self.op.H
        rows, cols = self.op.shape
        self._rows, self._cols = rows, cols
        shape = (self.n * rows, self.n * cols)
        super().__init__(dtype=self.op.dtype, shape=shape, name=f"Batch[{type(kernel).__name__}]")

    def _columns(self, X: np.ndarray, adjoint: bool) -> np.ndarray:
        """Columns of ``X`` (each ``n`` stacked examples) through ``K`` (or ``K^T``) in one call."""
        size = self._rows if adjoint else self._cols
        k = X.shape[1]
        rows = np.ascontiguousarray(X.T.reshape(k * self.n, size).T)
        out = self.op.rmatmat(rows) if adjoint else self.op.matmat(rows)
        return np.ascontiguousarray(out.T.reshape(k, -1).T)
