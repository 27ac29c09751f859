"""Wrapper families (Chain, Softplus) reuse the cached states of the family they wrap.

A convolution with an FFT Jacobian transforms its examples once per Jacobian; wrapped in a
pooling ``Chain`` or a ``Softplus`` reparametrisation it must still do so (not once per
product), and the cached products must equal the uncached hooks.
"""

from __future__ import annotations

import numpy as np
import pytest

from structops import AvgPool, Chain, Conv, Softplus
from structops.kernels.conv import _core as core
from structops.testing import check_kernel

from ._helpers import atol_for


def _conv(method="fft"):
    return Conv((8, 6), (3, 3), bc="periodic", out_channels=2, method=method)


WRAPPERS = {
    "chain": lambda method="fft": Chain(AvgPool((8, 6), 2, channels=2), _conv(method)),
    "softplus": lambda method="fft": Softplus(_conv(method)),
}


@pytest.fixture
def transforms(monkeypatch):
    """Counts the batched transforms of examples or cotangents (not of stencils)."""
    calls = {"n": 0}
    for name in ("input_spectrum", "output_spectrum"):
        real = getattr(core, name)

        def counted(*args, _real=real, **kwargs):
            calls["n"] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(core, name, counted)
    return calls


@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("wrapper", list(WRAPPERS))
def test_wrapped_jacobian_transforms_its_data_once(wrapper, transpose, transforms, rng):
    k = WRAPPERS[wrapper]()
    theta = rng.standard_normal(k.nparams)
    rows_in, rows_out = k.shape if transpose else k.shape[::-1]
    X = rng.standard_normal((5, rows_in))
    W = rng.standard_normal((5, rows_out))
    v = rng.standard_normal(k.nparams)
    J = k.jac(theta, X, transpose=transpose)
    first = (J.matvec(v), J.rmatvec(W.ravel()), J.per_example(W))
    n_first = transforms["n"]
    again = (J.matvec(v), J.rmatvec(W.ravel()), J.per_example(W))
    # the data once, then one transform of w per gradient (J v transforms the stencil v)
    assert (n_first, transforms["n"] - n_first) == (3, 2)
    Jref = WRAPPERS[wrapper]("direct").jac(theta, X, transpose=transpose)  # no spectra at all
    ref = (Jref.matvec(v), Jref.rmatvec(W.ravel()), Jref.per_example(W))
    for a, b, c in zip(first, again, ref):
        np.testing.assert_array_equal(a, b)  # a fixed operator: bitwise the same products
        np.testing.assert_allclose(a.ravel(), c.ravel(), rtol=0, atol=atol_for(c.ravel()))


@pytest.mark.parametrize("wrapper", list(WRAPPERS))
def test_wrapped_operator_uses_the_inner_spectrum(wrapper, rng):
    k = WRAPPERS[wrapper]()
    theta = rng.standard_normal(k.nparams)
    X = rng.standard_normal((3, k.shape[1]))
    np.testing.assert_allclose(
        k.op(theta).matmat(X.T).T,
        k.apply(theta, X).reshape(3, -1),
        rtol=0,
        atol=atol_for(k.apply(theta, X).reshape(3, -1)),
    )


@pytest.mark.parametrize("wrapper", list(WRAPPERS))
def test_wrapped_fft_convolutions_pass_check_kernel(wrapper, dtype):
    report = check_kernel(WRAPPERS[wrapper](), dtype=dtype, rng=0)
    assert report.passed, str(report)
