"""The L-curve's α chosen in one Golub--Kahan run (hybrid regularisation, Chung, Nagy and O'Leary 2008).

Reference: the exact route's choice on a periodic blur (the L-curve of the full problem from its
FFT filter factors), computed by ``choose_alpha`` through the diagonalisation.
"""

from __future__ import annotations

import numpy as np
import pytest

from structops import Conv
from structops.data import gaussian_stencil, phantom
from structops.solvers import Deblurrer, choose_alpha
from structops.solvers._filters import spectrum


@pytest.mark.parametrize("noise", [0.01, 0.05])
def test_hybrid_lcurve_matches_the_exact_choice_and_stops_early(noise):
    n = 32
    k = Conv((n, n), (7, 7), bc="periodic")
    theta = gaussian_stencil(7, 1.5).ravel()
    b = k.apply(theta, phantom(n)) + noise * np.random.default_rng(0).standard_normal((n, n))
    exact = choose_alpha(k, theta, b, method="lcurve")
    assert exact.exact
    hybrid = Deblurrer(k, theta, solver="lsqr").choose_alpha(b, method="lcurve")  # no transform used
    assert not hybrid.exact
    # it stops once α_k and x_k settle, long before the Krylov space is the whole space
    assert 0 < hybrid.iterations < b.size // 8
    # Both maximise the same curvature: the hybrid on the projected problem, whose L-curve is the
    # full one wherever the Krylov solution x_k(α) has converged; its stopping rule (α_k and x_k
    # move by < 1e-4 in a step) leaves α within a small multiple of that, while the exact choice is
    # refined to 1e-6 in log α. So: α within 1 %, and the full problem's curvature at the hybrid α
    # within 1e-3 of its maximum (the criterion itself, not only its argument).
    assert abs(np.log(hybrid.alpha / exact.alpha)) < 1e-2
    s = spectrum(k.diagonalize(theta), None, b)
    assert s.curvature(hybrid.alpha) >= (1 - 1e-3) * s.curvature(exact.alpha)
