"""The exact Kronecker route in float32: float32 factors and SVDs, the float64 route's answer to float32 accuracy.

References: ``numpy.kron`` of the float64 1-D blur matrices (built entry by entry from the index
maps), ``numpy.linalg.svd`` of that dense product, and the float64 route of the same solve.
"""

from __future__ import annotations

import numpy as np
import pytest

from structops import Conv
from structops.data import gaussian_stencil, phantom
from structops.kernels.diagonalized import KroneckerMultiplier
from structops.solvers import Deblurrer, choose_alpha, inverse, tikhonov
from structops.testing import default_rtol


def _blur(shape=(12, 10), size: int = 5, sigma: float = 1.2):
    k = Conv(shape, (size, size))
    return k, gaussian_stencil(size, sigma).ravel()


def test_float32_operator_keeps_float32_bases_and_a_certified_residual(rng):
    T0, T1 = rng.standard_normal((7, 7)), rng.standard_normal((5, 5))
    K64 = KroneckerMultiplier([T0, T1])
    K32 = KroneckerMultiplier([T0, T1], dtype=np.float32)
    assert K64.residual == 0.0 and K64.left[0].dtype == np.float64
    assert all(m.dtype == np.float32 for m in (*K32.left, *K32.right, *K32.factor_singular_values))
    assert K32.dtype == np.float32 and K32.blocks.dtype == np.float32
    dense = np.kron(T0, T1)
    # the residual bounds what rounding the factors moved: ‖kron(T0, T1) - kron(fl(T0), fl(T1))‖₂
    moved = np.linalg.norm(dense - np.kron(T0.astype(np.float32), T1.astype(np.float32)).astype(np.float64), 2)
    assert 0 < moved <= K32.residual <= 10 * np.finfo(np.float32).eps * np.linalg.norm(dense) * 4
    # Weyl: every singular value of the float32 operator within its residual (plus SVD round-off) of the true one
    sv = np.sort(K32.singular_values().ravel().astype(np.float64))[::-1]
    want = np.linalg.svd(dense, compute_uv=False)
    slack = K32.residual + default_rtol(np.float32, dense.shape[0]) * want[0]
    assert np.max(np.abs(sv - want)) <= slack
    # a float64 operator is never rounded, and a float32 one built from float32 factors is not re-rounded
    again = KroneckerMultiplier([T0.astype(np.float32), T1.astype(np.float32)], dtype=np.float32)
    assert again.residual == 0.0


@pytest.mark.parametrize("alpha", [1e-3, 1e-1])
def test_float32_tikhonov_matches_the_float64_route(alpha, rng):
    k, theta = _blur()
    b = k.apply(theta, rng.uniform(size=k.in_shape[1:])) + 0.01 * rng.standard_normal(k.out_shape[1:])
    x64 = tikhonov(k, theta, b, alpha=alpha, full_output=True)
    d32 = Deblurrer(k, theta.astype(np.float32))
    x32 = d32.solve(b.astype(np.float32), alpha, full_output=True)
    assert x64.method == x32.method == "exact"
    assert d32.diagonal is not None and d32.diagonal.left[0].dtype == np.float32
    assert x32.x.dtype == np.float32
    # Tikhonov's filter k/(k² + α) magnifies the rounding of the data and of the float32 bases by
    # up to max k/(k² + α) ≤ 1/(2√α) relative to ‖b‖; the tolerance scales with that conditioning
    gain = 1.0 / (2.0 * np.sqrt(alpha)) * np.linalg.norm(b) / np.linalg.norm(x64.x)
    err = np.linalg.norm(x32.x - x64.x) / np.linalg.norm(x64.x)
    assert err <= gain * default_rtol(np.float32, b.size), (err, gain)
    # ... and it is float32's accuracy, not float64's: the float32 route is a genuinely different computation
    assert err > default_rtol(np.float64, b.size)


def test_float32_stack_inverse_and_choice_follow_the_float64_ones(rng):
    k, theta = _blur((16, 16), 7, 1.5)
    X = np.stack([phantom(16), phantom(16, ring=False)])
    B = np.stack([k.apply(theta, x) for x in X]) + 0.01 * rng.standard_normal((2, 16, 16))
    B32, t32 = B.astype(np.float32), theta.astype(np.float32)
    c64, c32 = choose_alpha(k, theta, B, method="gcv"), choose_alpha(k, t32, B32, method="gcv")
    assert c32.exact
    # GCV's minimiser is flat in log α: the choices agree to float32's resolution of the criterion
    np.testing.assert_allclose(c32.alpha, c64.alpha, rtol=1e-2)
    A32, A64 = inverse(k, t32, alpha=0.05, normal=True), inverse(k, theta, alpha=0.05, normal=True)
    Y32, Y64 = A32 @ B32, A64 @ B
    assert Y32.dtype == np.float32
    gain = 1.0 / 0.05 * np.linalg.norm(B) / np.linalg.norm(Y64)  # ‖(KᵀK + αI)⁻¹‖ ≤ 1/α
    assert np.linalg.norm(Y32 - Y64) / np.linalg.norm(Y64) <= gain * default_rtol(np.float32, 256)
