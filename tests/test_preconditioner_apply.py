"""The Krylov route's circulant preconditioner: applied by real FFTs, built without SVDs.

References: the :class:`~structops.solvers.FourierMultiplier` of the same symbol (densified), and
the dense symmetric positive definite matrix :math:`(C^\\top C + \\alpha I)^{-1}` built from the
circulant's eigenvalues by ``numpy.fft``.
"""

from __future__ import annotations

import numpy as np
import pytest

from structops import Conv
from structops.data import gaussian_stencil
from structops.solvers import Deblurrer, circulant_eigvals, split_preconditioner, tikhonov
from structops.solvers._filters import as_regularizer
from structops.solvers._krylov import RealSymbolMultiplier, build_model
from structops.testing import default_rtol


@pytest.mark.parametrize("power", [0.5, 1.0])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_real_symbol_multiplier_is_the_circulant_preconditioner(dtype, power, rng, close):
    k = Conv((6, 5), (3, 3))
    theta = (gaussian_stencil(3, 0.8).ravel() + 0.05 * rng.standard_normal(9)).astype(dtype)
    model = build_model(k, theta, as_regularizer(None, k), "chan")
    P = model.applier(1e-2, power, dtype)
    assert isinstance(P, RealSymbolMultiplier) and P.half.dtype == dtype
    # dense reference: F^-1 diag((|λ|² + α)^-p) F from the circulant's eigenvalues, column by column
    lam = circulant_eigvals(k, theta.astype(np.float64), "chan")
    eye = np.eye(30).reshape(30, 6, 5)
    dense = np.stack([np.fft.ifft2((np.abs(lam) ** 2 + 1e-2) ** -power * np.fft.fft2(e)).real.ravel() for e in eye], 1)
    close(P.todense(), dense, dtype, 30)
    close(P.todense(), split_preconditioner(k, theta, alpha=1e-2, kind="chan", power=power).todense(), dtype, 30)
    x = rng.standard_normal(30).astype(dtype)
    assert (P @ x).dtype == dtype
    close(P.H @ x, P @ x, dtype, 30)  # symmetric


def test_iterative_route_builds_no_large_svd(monkeypatch, rng, close):
    """The preconditioner of a zero-boundary blur comes from the stencil's FFT: no SVD of an n × n factor."""
    n = 24
    k = Conv((n, n), (5, 5))
    theta = gaussian_stencil(5, 1.0).ravel()  # separable: the exact route would take the 1-D SVDs
    b = k.apply(theta, rng.standard_normal((n, n)))
    sizes: list[int] = []
    svd = np.linalg.svd

    def recording(a, *args, **kwargs):
        sizes.append(max(np.shape(a)))
        return svd(a, *args, **kwargs)

    monkeypatch.setattr(np.linalg, "svd", recording)
    for solver in ("cg", "lsqr"):
        x = Deblurrer(k, theta, solver=solver, preconditioner="chan", rtol=1e-10).solve(b, 1e-3)
        assert max(sizes, default=0) < n, sizes
    exact = tikhonov(k, theta, b, alpha=1e-3)
    assert max(sizes) >= n  # the recorder sees the exact route's 1-D SVDs
    err = np.linalg.norm(x - exact) / np.linalg.norm(exact)
    assert err < 1e-8 + 1e3 * default_rtol(np.float64, n * n)
