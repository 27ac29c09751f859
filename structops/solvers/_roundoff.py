r"""Float64 round-off constants of the verified certificates, and the bound a completed Cholesky proves.

:mod:`structops.solvers._verified` (banded), :mod:`structops.solvers._dissection` (nested
dissection) and :mod:`structops.solvers._fastclip` (per-frequency blocks) derive their
allowances from the same few quantities (Higham, *Accuracy and Stability of Numerical
Algorithms*, §3.1 and Thm. 10.3; Rump, *BIT* 46 (2006)): the unit round-off :math:`u = 2^{-53}`,
:math:`\gamma_j = ju/(1-ju)`, the smallest subnormal :math:`\eta`, and Rump's constant
:math:`\alpha_k = \gamma_k/(1-\gamma_k)` of a Cholesky factorisation that runs to completion.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ETA", "U", "cholesky_alpha", "cholesky_root", "gamma"]

#: The unit round-off of float64, :math:`u = 2^{-53}`.
U = float(np.finfo(np.float64).eps) / 2
#: The smallest positive subnormal float64, :math:`\eta` (Rump's underflow term).
ETA = float(np.nextafter(0.0, 1.0))


def gamma(j: float) -> float:
    r""":math:`\gamma_j = ju/(1-ju)`: the relative error bound of a sum or inner product of ``j`` terms."""
    return j * U / (1 - j * U)


def cholesky_alpha(j: float) -> float:
    r""":math:`\alpha = \gamma_j/(1-\gamma_j)`, Rump's (2006, Lemma 2.1) Cholesky constant.

    A factorisation that completes has :math:`|\Delta_{ik}| \le \alpha\sqrt{\tilde a_{ii}\tilde a_{kk}}`.
    """
    return gamma(j) / (1 - gamma(j))


def cholesky_root(t: float, delta: float, n: int, terms: int, top: float, gram_error: float) -> float:
    r""":math:`\sqrt{t + E}` rounded up: the bound on :math:`\|\hat K\|_2` that a completed Cholesky proves.

    The factorisation is that of :math:`\mathrm{fl}(tI - \hat G)`, and
    :math:`E = \|\Delta\|_2 + 4n(2\,\mathrm{terms} + \max_i\tilde a_{ii})\eta + 2u\max_i\tilde a_{ii}
    + \|\hat G - \hat K^\top\hat K\|_2`: ``delta`` bounds :math:`\|\Delta\|_2` (the factorisation's
    backward error), the second term is Rump's underflow term (``terms`` the :math:`\gamma` index
    of the factorisation), ``top`` :math:`= \max_i \tilde a_{ii}` (the rounding of the diagonal of
    :math:`tI - \hat G`) and ``gram_error`` bounds the Gram's rounding.
    """
    chol = delta + 4 * n * (2 * terms + top) * ETA
    total = t + chol + 2 * U * top + gram_error
    return float(np.sqrt(total)) * (1 + 4 * U)
