"""Property-based tests of structops.Conv (hypothesis).

Over 1-3 axes, grid sizes 1-12 (odd and even, prod(grid) <= 200), stencil sizes 1 up to the
grid (odd and even), every bc, 1-3 channels in and out, stride 1-3, float32 and float64:

* ``check_kernel`` passes (dense agreement of op/Q/apply/jac, adjoint tests, Taylor tests,
  per-example gradients, dtypes);
* the stride-s operator is the restriction of the stride-1 operator to rows 0, s, 2s, ...;
* direct sums and FFTs give the same operator.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from structops import Conv
from structops.testing import check_kernel, default_rtol

from ._helpers import examples

BCS = ("zero", "periodic", "reflect", "replicate", "valid")
MAX_GRID = 200
#: entries of check_kernel's dense Jacobian reference (rows * cols * nparams, from Q.toarray())
MAX_DENSE_JACOBIAN = 1_500_000

SETTINGS = settings(
    max_examples=examples(60),
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@st.composite
def conv_kernels(draw, max_dense_jacobian: int | None = None) -> Conv:
    """A Conv with every knob drawn; products of sizes kept small so dense references stay cheap."""
    ndim = draw(st.integers(1, 3))
    grid: list[int] = []
    for _ in range(ndim):
        room = MAX_GRID // int(np.prod(grid))
        grid.append(draw(st.integers(1, min(12, room))))
    stencil = [draw(st.integers(1, g)) for g in grid]
    bc = draw(st.sampled_from(BCS))
    cin, cout = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = [draw(st.integers(1, 3)) for _ in grid]
    method = draw(st.sampled_from(["auto", "direct", "fft"]))
    k = Conv(grid, stencil, bc=bc, in_channels=cin, out_channels=cout, stride=stride, method=method)
    if max_dense_jacobian is not None:
        # shrink the channels, then the stencil, until check_kernel's dense references are small
        while k.shape[0] * k.shape[1] * k.nparams > max_dense_jacobian:
            if cin > 1 or cout > 1:
                cin, cout = max(1, cin - 1), max(1, cout - 1)
            else:
                stencil = [max(1, s // 2) for s in stencil]
            k = Conv(grid, stencil, bc=bc, in_channels=cin, out_channels=cout, stride=stride, method=method)
    return k


@SETTINGS
@given(k=conv_kernels(MAX_DENSE_JACOBIAN), dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**16))
def test_check_kernel_passes(k, dtype, seed):
    report = check_kernel(k, dtype=dtype, nexamples=2, rng=seed)
    assert report.passed, str(report)
    assert not any(r.note.startswith("skipped") for r in report.results)  # the dense checks ran


@SETTINGS
@given(k=conv_kernels(), seed=st.integers(0, 2**16))
def test_strided_operator_is_restriction_of_stride_one(k, seed):
    k1 = Conv(k.grid, k.stencil, bc=k.bc, in_channels=k.in_channels, out_channels=k.out_channels, method=k.method)
    theta = np.random.default_rng(seed).standard_normal(k.nparams)
    full = k1.matrix(theta).reshape((*k1.out_shape, -1))
    rows = (slice(None), *(slice(None, None, st_) for st_ in k.stride))
    want = full[rows].reshape(k.shape[0], -1)
    got = k.matrix(theta)
    assert got.shape == want.shape
    assert np.abs(got - want).max(initial=0.0) <= default_rtol(np.float64, max(k.shape)) * np.abs(theta).sum()


@SETTINGS
@given(k=conv_kernels(), seed=st.integers(0, 2**16))
def test_direct_and_fft_are_the_same_operator(k, seed):
    kw = dict(bc=k.bc, in_channels=k.in_channels, out_channels=k.out_channels, stride=k.stride)
    kd = Conv(k.grid, k.stencil, method="direct", **kw)
    kf = Conv(k.grid, k.stencil, method="fft", **kw)
    rng = np.random.default_rng(seed)
    theta = rng.standard_normal(k.nparams)
    X = rng.standard_normal((2, *k.in_shape))
    Y = rng.standard_normal((2, *k.out_shape))
    rt = default_rtol(np.float64, max(k.shape))

    def close(a, b):
        return np.linalg.norm(a - b) <= rt * max(np.linalg.norm(b), 1e-300)

    assert close(kf.apply(theta, X), kd.apply(theta, X))
    assert close(kf.apply(theta, Y, transpose=True), kd.apply(theta, Y, transpose=True))
    assert close(kf.jac(theta, X).rmatvec(Y.ravel()), kd.jac(theta, X).rmatvec(Y.ravel()))
    assert close(kf.jac(theta, Y, transpose=True).per_example(X), kd.jac(theta, Y, transpose=True).per_example(X))
