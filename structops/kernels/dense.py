r"""The unstructured layer: every entry of :math:`K` is a parameter."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .._validation import check_positive_int
from .linear import Pattern, PatternKernel


class Dense(PatternKernel):
    r"""Dense family :math:`K(\theta) = \operatorname{mat}(\theta) \in \mathbb{R}^{rows \times cols}`.

    :math:`\theta` is :math:`K` stacked column by column (``vec`` is column-major), so
    :math:`Q = I` and :math:`p = rows \cdot cols`: the lecture notes' MNIST layer
    ``Dense(784, 784)`` has 614,656 unknowns. Nothing is built at construction.

    Parameters
    ----------
    rows, cols : int
        Shape of ``K``.

    Notes
    -----
    Forward :math:`y_i = K x_i`, adjoint :math:`K^\top y`, Jacobian
    :math:`Jv = (\operatorname{mat}(v)\,x_i)_i` and :math:`J^\top W = \operatorname{vec}(\sum_i w_i x_i^\top)`.

    Examples
    --------
    >>> Dense(784, 784).nparams
    614656
    >>> Dense(2, 3).matrix(np.arange(6.0))
    array([[0., 2., 4.],
           [1., 3., 5.]])
    """

    def __init__(self, rows: int, cols: int) -> None:
        self.rows = check_positive_int(rows, "rows")
        self.cols = check_positive_int(cols, "cols")
        super().__init__(self.rows * self.cols, (self.cols,), (self.rows,))

    def __repr__(self) -> str:
        return f"Dense({self.rows}, {self.cols})"

    def _build_pattern(self) -> Pattern:
        lin = np.arange(self.nparams)
        return Pattern(lin % self.rows, lin // self.rows, sp.eye_array(self.nparams, format="csr"), None)

    def _assemble(self, theta, offset=True):
        return theta.reshape((self.rows, self.cols), order="F")

    def _vjp(self, state, data, w, transpose, per_example):
        left, right = (data, w) if transpose else (w, data)
        if per_example:
            # row i: vec(left_i right_i^T), column-major
            return (right[:, :, None] * left[:, None, :]).reshape(w.shape[0], self.nparams)
        return (left.T @ right).ravel(order="F")

    def _build_Q(self):
        return sp.eye_array(self.nparams, format="csc")
