"""The Jacobian's data state (built once from X) gives the same products as a fresh computation."""

import numpy as np
import pytest

import structops
from structops.testing import default_rtol


@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("bc", ["zero", "periodic", "reflect"])
def test_cached_fft_jacobian_matches_the_direct_method_on_repeated_products(bc, transpose, dtype, rng):
    kw = dict(bc=bc, in_channels=2, out_channels=3)
    fft = structops.Conv((9, 8), (5, 3), method="fft", **kw)
    direct = structops.Conv((9, 8), (5, 3), method="direct", **kw)
    theta = rng.standard_normal(fft.nparams).astype(dtype)
    shape_x = fft.out_shape if transpose else fft.in_shape
    x = rng.standard_normal((4, *shape_x)).astype(dtype)
    J, Jref = fft.jac(theta, x, transpose=transpose), direct.jac(theta, x, transpose=transpose)
    tol = default_rtol(dtype, J.shape[0])
    for _ in range(2):  # the second round reuses the cached spectrum of x
        w = rng.standard_normal(J.shape[0]).astype(dtype)
        v = rng.standard_normal(J.shape[1]).astype(dtype)
        for got, want in [
            (J.rmatvec(w), Jref.rmatvec(w)),
            (J.matvec(v), Jref.matvec(v)),
            (J.per_example(w), Jref.per_example(w)),
        ]:
            assert got.dtype == dtype
            np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max())
    assert J.per_example(w).shape == (4, fft.nparams)


def test_a_float64_vector_into_a_float32_jacobian_is_computed_in_float64(rng):
    k = structops.Conv((8, 8), (7, 7), method="fft")
    theta = rng.standard_normal(k.nparams).astype(np.float32)
    x = rng.standard_normal((3, *k.in_shape)).astype(np.float32)
    J = k.jac(theta, x)
    w = rng.standard_normal(J.shape[0])
    J.rmatvec(w.astype(np.float32))  # builds the float32 cache
    wide = J.rmatvec(w)
    ref = structops.Conv((8, 8), (7, 7), method="direct").jac(theta.astype(np.float64), x.astype(np.float64)).rmatvec(w)
    assert wide.dtype == np.float64
    np.testing.assert_allclose(wide, ref, rtol=1e-10, atol=1e-10 * np.abs(ref).max())
