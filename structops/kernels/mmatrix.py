r"""M-matrices: nonnegative couplings, rows summing to zero, like a differential operator."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .._validation import check_positive_int
from .constraints import Nonnegative
from .linear import Pattern, PatternKernel


class MMatrix(Nonnegative, PatternKernel):
    r"""M-matrix family with zero row sums, :math:`\theta \ge 0`.

    :math:`p = n(n-1)`. Row :math:`i` holds the off-diagonal entries :math:`-\theta_k`
    in column order (skipping the diagonal), and its diagonal entry is the sum of those
    :math:`\theta_k`. For :math:`n = 3` this is the lecture notes' layout

    .. math::
        K(\theta) = \begin{pmatrix} \theta_1+\theta_2 & -\theta_1 & -\theta_2 \\
        -\theta_3 & \theta_3+\theta_4 & -\theta_4 \\ -\theta_5 & -\theta_6 & \theta_5+\theta_6
        \end{pmatrix}

    with the lecture notes' :math:`9 \times 6` matrix ``Q``.

    Parameters
    ----------
    n : int
        Size of ``K``.

    Raises
    ------
    ValueError
        At every public entry point, when ``theta`` has a negative entry. To optimise
        without the constraint, use :class:`structops.Softplus` (``θ = softplus(φ)``) or
        pass :attr:`~structops.kernels.constraints.Nonnegative.bounds` to a bound-constrained optimiser.

    Notes
    -----
    :math:`K\mathbf{1} = 0`, and :math:`K` is diagonally dominant with nonpositive
    off-diagonal entries (like a discretised diffusion operator). The Jacobian adjoint is
    :math:`(J^\top W)_k = G_{ii} - G_{ij}` for the parameter :math:`k` at position
    :math:`(i, j)`, with :math:`G = \sum_k w_k x_k^\top`.

    Examples
    --------
    >>> MMatrix(3).matrix(np.arange(1.0, 7.0))
    array([[ 3., -1., -2.],
           [-3.,  7., -4.],
           [-5., -6., 11.]])
    """

    _reparametrise = "structops.Softplus(MMatrix(n))"

    def __init__(self, n: int) -> None:
        self.n = check_positive_int(n, "n")
        super().__init__(self.n * (self.n - 1), (self.n,), (self.n,))

    def __repr__(self) -> str:
        return f"MMatrix({self.n})"

    def _build_pattern(self) -> Pattern:
        n, p = self.n, self.nparams
        rows = np.repeat(np.arange(n), n - 1)
        skip = np.tile(np.arange(n - 1), n)
        cols = skip + (skip >= rows)  # column order, skipping the diagonal
        off = -sp.eye_array(p, format="csr")
        diag = sp.csr_array((np.ones(p), (rows, np.arange(p))), shape=(n, p))
        return Pattern(
            np.concatenate([rows, np.arange(n)]),
            np.concatenate([cols, np.arange(n)]),
            sp.vstack([off, diag], format="csr"),
            None,
        )
