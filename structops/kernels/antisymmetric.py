r"""Antisymmetric kernels :math:`K(\theta) = -K(\theta)^\top`."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .._validation import check_positive_int
from .linear import Pattern, PatternKernel


class Antisymmetric(PatternKernel):
    r"""Antisymmetric family :math:`K(\theta) = U(\theta) - U(\theta)^\top`.

    :math:`\theta \in \mathbb{R}^{n(n-1)/2}` fills the strict upper triangle :math:`U` row by
    row. For :math:`n = 3` this is the lecture notes' example

    .. math::
        K(\theta) = \begin{pmatrix} 0 & \theta_1 & \theta_2 \\ -\theta_1 & 0 & \theta_3 \\
        -\theta_2 & -\theta_3 & 0 \end{pmatrix},

    whose eigenvalues are purely imaginary: :math:`\operatorname{real}(\lambda_i(K)) = 0`,
    so :math:`\dot z = K z` neither grows nor decays.

    Parameters
    ----------
    n : int
        Size of ``K`` (``n >= 1``; ``n = 1`` has no parameters).

    Notes
    -----
    The adjoint is the negation, :math:`K^\top = -K`. Jacobian:
    :math:`J^\top W = \left(G_{ij} - G_{ji}\right)_{i<j}` with :math:`G = \sum_k w_k x_k^\top`.

    Examples
    --------
    >>> Antisymmetric(3).matrix(np.array([1.0, 2.0, 3.0]))
    array([[ 0.,  1.,  2.],
           [-1.,  0.,  3.],
           [-2., -3.,  0.]])
    """

    def __init__(self, n: int) -> None:
        self.n = check_positive_int(n, "n")
        super().__init__(self.n * (self.n - 1) // 2, (self.n,), (self.n,))

    def __repr__(self) -> str:
        return f"Antisymmetric({self.n})"

    def _build_pattern(self) -> Pattern:
        upper_r, upper_c = np.triu_indices(self.n, 1)
        eye = sp.eye_array(self.nparams, format="csr")
        return Pattern(
            np.concatenate([upper_r, upper_c]),
            np.concatenate([upper_c, upper_r]),
            sp.vstack([eye, -eye], format="csr"),
            None,
        )
