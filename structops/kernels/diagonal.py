r"""Diagonal scaling :math:`K(\theta) = \operatorname{diag}(\theta)`."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .._validation import check_positive_int
from .linear import Pattern, PatternKernel


class Diagonal(PatternKernel):
    r"""Diagonal scaling :math:`K(\theta) = \operatorname{diag}(\theta) \in \mathbb{R}^{n \times n}`.

    Preserves the size and structure of the data; :math:`p = n`.

    Parameters
    ----------
    n : int
        Size of ``K``.

    Notes
    -----
    :math:`K x = \theta \odot x`, :math:`K^\top = K`, :math:`Jv = (v \odot x_i)_i`,
    :math:`J^\top W = \sum_i w_i \odot x_i`. ``Q`` has a single one per column, at the
    position :math:`k + kn` of the diagonal entry in column-major ``vec``.

    Examples
    --------
    >>> Diagonal(3).matrix(np.array([1.0, 2.0, 3.0]))
    array([[1., 0., 0.],
           [0., 2., 0.],
           [0., 0., 3.]])
    """

    def __init__(self, n: int) -> None:
        self.n = check_positive_int(n, "n")
        super().__init__(self.n, (self.n,), (self.n,))

    def __repr__(self) -> str:
        return f"Diagonal({self.n})"

    def _build_pattern(self) -> Pattern:
        idx = np.arange(self.n)
        return Pattern(idx, idx, sp.eye_array(self.n, format="csr"), None)

    # the state is theta itself: K x = theta * x needs nothing assembled
    def _prepare(self, theta):
        return theta

    def _state_dtype(self, state):
        return state.dtype

    def _apply(self, state, x, transpose):
        return x * state

    def _jvp(self, state, data, v, transpose):
        return data * v

    def _dense(self, state):
        return np.diag(state)

    def _vjp(self, state, data, w, transpose, per_example):
        return w * data if per_example else np.einsum("ij,ij->j", w, data)
