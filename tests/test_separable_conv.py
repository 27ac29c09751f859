"""structops.SeparableConv and structops.DepthwiseSeparableConv against references built in the test.

The full stencils are rebuilt here from the definitions (``np.multiply.outer`` of the 1-D
factors, summed over the rank; ``sum_m P[o, c*M + m] D[c*M + m]`` by loops), the operators are
compared with a plain :class:`structops.Conv` of that stencil and, where installed, with
PyTorch (``conv2d(padding="same")`` with the flipped weight; for the depthwise-separable
family the grouped depthwise ``conv2d`` and a 1x1 ``conv2d``, an independent formulation).
The separable path (one 1-D pass per axis; a depthwise pass and a GEMM) is compared with the
full path for every boundary and stride.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from structops import Conv, DepthwiseSeparableConv, SeparableConv
from structops.testing import check_kernel, default_rtol

from ._helpers import examples

BCS = ("zero", "periodic", "reflect", "replicate", "valid")


class SepCase(NamedTuple):
    """Geometry of a separable convolution."""

    grid: tuple[int, ...]
    stencil: tuple[int, ...]
    cin: int
    cout: int
    stride: tuple[int, ...]
    rank: int

    def kernel(self, bc: str, path: str = "auto") -> SeparableConv:
        return SeparableConv(
            self.grid, self.stencil, bc=bc, in_channels=self.cin, out_channels=self.cout, stride=self.stride,
            rank=self.rank, path=path,
        )  # fmt: skip

    def conv(self, bc: str) -> Conv:
        return Conv(
            self.grid, self.stencil, bc=bc, in_channels=self.cin, out_channels=self.cout, stride=self.stride
        )  # fmt: skip


CASES = {
    "1d-rank2": SepCase((9,), (3,), 2, 1, (1,), 2),
    "2d-odd-rank2-stride": SepCase((7, 6), (3, 5), 2, 2, (2, 1), 2),
    "2d-even-rank1": SepCase((6, 5), (2, 4), 1, 2, (1, 1), 1),
    "2d-nonsquare-1ch": SepCase((8, 3), (5, 3), 1, 1, (1, 3), 1),
    "3d-rank2-stride": SepCase((5, 4, 3), (3, 2, 3), 2, 1, (1, 2, 1), 2),
    "3d-size1-axis": SepCase((4, 1, 5), (3, 1, 2), 1, 2, (1, 1, 2), 1),
}
PATHS_2D = ("separable", "full")


def paths(case: SepCase) -> tuple[str, ...]:
    return ("full",) if len(case.grid) == 1 else PATHS_2D


def full_stencil(case: SepCase, theta: np.ndarray) -> np.ndarray:
    """sum_r f0 (x) f1 (x) ... from theta's documented layout (o, c, r, [f0, f1, ...])."""
    blocks = np.asarray(theta, dtype=np.float64).reshape(case.cout, case.cin, case.rank, sum(case.stencil))
    W = np.zeros((case.cout, case.cin, *case.stencil))
    for o, c, r in itertools.product(range(case.cout), range(case.cin), range(case.rank)):
        row, start, term = blocks[o, c, r], 0, np.ones(())
        for s in case.stencil:
            term = np.multiply.outer(term, row[start : start + s])
            start += s
        W[o, c] += term
    return W


def rel(a, b) -> float:
    kind = np.complex128 if np.iscomplexobj(a) or np.iscomplexobj(b) else np.float64
    a, b = np.asarray(a, dtype=kind), np.asarray(b, dtype=kind)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


@pytest.fixture(params=list(CASES), ids=list(CASES))
def case(request) -> SepCase:
    return CASES[request.param]


# ------------------------------------------------------------------ SeparableConv
def test_nparams_theta_shape_and_auto_path():
    k = SeparableConv((7, 6), (3, 5), in_channels=2, out_channels=3, rank=2)
    assert k.nparams == 3 * 2 * 2 * (3 + 5)
    assert k.theta_shape == (3, 2, 2, 8)
    assert k.linear is False
    assert SeparableConv((128, 128), (15, 15)).path == "separable"  # 30 < 225
    assert SeparableConv((8, 8), (3, 3), rank=1).path == "separable"  # 6 < 9
    assert SeparableConv((8, 8), (3, 3), rank=2).path == "full"  # 12 >= 9
    assert SeparableConv(16, 5).path == "full"  # nothing to separate in 1-D
    assert SeparableConv((6, 6, 6), 3, rank=2).path == "separable"  # 18 < 27
    assert SeparableConv((6, 6, 6), 3, rank=3).path == "full"  # 27 is not < 27


def test_has_no_Q():
    with pytest.raises(TypeError, match="not affine"):
        SeparableConv((5, 5), 3).Q  # noqa: B018


@pytest.mark.parametrize("bc", BCS)
def test_check_kernel(case, bc, dtype):
    for path in paths(case):
        report = check_kernel(case.kernel(bc, path), dtype=dtype, rng=1)
        assert report.passed, str(report)
        if dtype == np.float64 and len(case.grid) > 1:  # multilinear: the remainder falls as O(h^2)
            assert any(r.check.startswith("taylor") and r.note == "quadratic" for r in report.results), str(report)


def test_weights_are_sums_of_outer_products(case, rng):
    k = case.kernel("zero")
    theta = rng.standard_normal(k.nparams)
    tol = default_rtol(np.float64, k.nparams)
    assert rel(k.weights(theta), full_stencil(case, theta)) <= tol
    # theta in its natural shape, and the factors in the documented layout
    assert rel(k.weights(theta.reshape(k.theta_shape)), full_stencil(case, theta)) <= tol
    blocks = theta.reshape(k.theta_shape)
    starts = np.concatenate([[0], np.cumsum(case.stencil)])
    for a, f in enumerate(k.factors(theta)):
        assert np.array_equal(f, blocks[..., starts[a] : starts[a + 1]])


@pytest.mark.parametrize("bc", BCS)
def test_apply_equals_conv_of_the_full_stencil(case, bc, dtype, rng):
    conv = case.conv(bc)
    X = rng.standard_normal((3, *conv.in_shape)).astype(dtype)
    Y = rng.standard_normal((3, *conv.out_shape)).astype(dtype)
    tol = default_rtol(dtype, int(np.prod(case.stencil)) * case.cin * case.rank)
    for path in paths(case):
        k = case.kernel(bc, path)
        theta = rng.standard_normal(k.nparams).astype(dtype)
        W = full_stencil(case, theta).ravel()
        assert rel(k.apply(theta, X), conv.apply(W, X.astype(np.float64))) <= tol
        assert rel(k.apply(theta, Y, transpose=True), conv.apply(W, Y.astype(np.float64), transpose=True)) <= tol
        assert k.apply(theta, X).dtype == dtype


@pytest.mark.parametrize("bc", BCS)
def test_separable_path_equals_full_path(case, bc, dtype, rng):
    """Per-axis passes equal the full stencil for every boundary: padding and stride act axis by axis."""
    if len(case.grid) == 1:
        pytest.skip("a 1-D grid has only the full path")
    sep, full = case.kernel(bc, "separable"), case.kernel(bc, "full")
    assert (sep.path, full.path) == ("separable", "full")
    theta = sep.random_theta(rng, dtype)
    X = rng.standard_normal((4, *sep.in_shape)).astype(dtype)
    Y = rng.standard_normal((4, *sep.out_shape)).astype(dtype)
    tol = default_rtol(dtype, int(np.prod(case.stencil)) * case.cin * case.rank)
    assert rel(sep.apply(theta, X), full.apply(theta, X)) <= tol
    assert rel(sep.apply(theta, Y, transpose=True), full.apply(theta, Y, transpose=True)) <= tol
    assert rel(sep.op(theta).matvec(X[0].ravel()), full.op(theta).matvec(X[0].ravel())) <= tol
    assert sep.apply(theta, np.zeros((0, *sep.in_shape), dtype)).shape == (0, *sep.out_shape)
    # J v: the product rule on the passes against the full-stencil direction
    v = sep.random_theta(rng, dtype)
    for data, transpose in ((X, False), (Y, True)):
        Js, Jf = sep.jac(theta, data, transpose=transpose), full.jac(theta, data, transpose=transpose)
        assert rel(Js.matvec(v), Jf.matvec(v)) <= tol


def test_jacobian_is_the_product_rule(case, rng):
    """J v = C(Dw v) x with Dw v = sum_a (f0 (x) .. v_a .. (x) f_{d-1}), built here term by term."""
    k, conv = case.kernel("periodic"), case.conv("periodic")
    theta, v = rng.standard_normal(k.nparams), rng.standard_normal(k.nparams)
    X = rng.standard_normal((3, *k.in_shape))
    d, starts = len(case.stencil), np.concatenate([[0], np.cumsum(case.stencil)])
    tb, vb = theta.reshape(k.theta_shape), v.reshape(k.theta_shape)
    dW = np.zeros(conv.theta_shape)
    for o, c, r, a in itertools.product(range(case.cout), range(case.cin), range(case.rank), range(d)):
        term = np.ones(())
        for b in range(d):
            src = vb if b == a else tb
            term = np.multiply.outer(term, src[o, c, r, starts[b] : starts[b + 1]])
        dW[o, c] += term
    J = k.jac(theta, X)
    tol = default_rtol(np.float64, J.shape[0])
    assert rel(J.matvec(v), conv.apply(dW.ravel(), X).ravel()) <= tol
    # J^T w: the full-stencil gradient contracted with the other factors (the adjoint of the above)
    w = rng.standard_normal(J.shape[0])
    assert abs(w @ J.matvec(v) - v @ J.rmatvec(w)) <= tol * np.linalg.norm(w) * np.linalg.norm(J.matvec(v))


def test_per_example_gradients_are_the_single_example_gradients(rng, dtype):
    """Batched Dw^T (rows of shape (n, p_inner)) against one Jacobian per example."""
    k = SeparableConv((6, 5, 4), (3, 3, 2), in_channels=2, out_channels=2, rank=2, bc="reflect")
    theta = k.random_theta(rng, dtype)
    X = rng.standard_normal((3, *k.in_shape)).astype(dtype)
    w = rng.standard_normal((3, int(np.prod(k.out_shape)))).astype(dtype)
    per = k.jac(theta, X).per_example(w.ravel())
    assert per.shape == (3, k.nparams) and per.dtype == dtype
    for i in range(3):
        single = k.jac(theta, X[i : i + 1]).rmatvec(w[i])
        assert rel(per[i], single) <= default_rtol(dtype, 100)


@pytest.mark.parametrize("bc", ("zero", "periodic", "reflect", "replicate"))
def test_separable_equals_torch_conv2d(bc, dtype, rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    case = SepCase((9, 7), (5, 3), 2, 3, (1, 1), 2)
    k = case.kernel(bc, "separable")
    theta = k.random_theta(rng, dtype)
    X = rng.standard_normal((2, *k.in_shape)).astype(dtype)
    w = torch.from_numpy(np.flip(full_stencil(case, theta), axis=(2, 3)).astype(dtype).copy())
    x = torch.from_numpy(X)
    if bc == "zero":
        ref = F.conv2d(x, w, padding="same")
    else:
        mode = {"periodic": "circular", "reflect": "reflect", "replicate": "replicate"}[bc]
        ref = F.conv2d(F.pad(x, (1, 1, 2, 2), mode=mode), w)
    assert rel(k.apply(theta, X), ref.numpy()) <= default_rtol(dtype, 15 * 2 * 2)
    assert rel(k.theta_to_torch(theta), w.numpy()) <= default_rtol(dtype)


def test_periodic_eigvals_are_outer_products_of_1d_eigvals(rng):
    """A rank-1 periodic stencil u (x) v has the eigenvalues lambda_u (x) lambda_v."""
    k = SeparableConv((6, 5), (3, 3), bc="periodic")
    theta = rng.standard_normal(k.nparams)
    lam_u = Conv(6, 3, bc="periodic").eigvals(theta[:3])
    lam_v = Conv(5, 3, bc="periodic").eigvals(theta[3:])
    assert rel(k.eigvals(theta), np.multiply.outer(lam_u, lam_v)) <= default_rtol(np.float64, 30)


# ----------------------------------------------------------- DepthwiseSeparableConv
class DwCase(NamedTuple):
    grid: tuple[int, ...]
    stencil: tuple[int, ...]
    cin: int
    cout: int
    mult: int
    stride: tuple[int, ...]

    def kernel(self, bc: str, path: str = "auto") -> DepthwiseSeparableConv:
        return DepthwiseSeparableConv(
            self.grid, self.stencil, bc=bc, in_channels=self.cin, out_channels=self.cout, multiplier=self.mult,
            stride=self.stride, path=path,
        )  # fmt: skip

    def conv(self, bc: str) -> Conv:
        return Conv(self.grid, self.stencil, bc=bc, in_channels=self.cin, out_channels=self.cout, stride=self.stride)


DW_CASES = {
    "1d": DwCase((9,), (3,), 2, 3, 2, (1,)),
    "2d-stride": DwCase((7, 6), (3, 2), 3, 2, 1, (2, 1)),
    "2d-mult2": DwCase((5, 5), (3, 3), 2, 4, 2, (1, 1)),
    "3d": DwCase((4, 3, 5), (3, 1, 2), 2, 1, 3, (1, 1, 2)),
}


def dw_full_stencil(case: DwCase, theta: np.ndarray) -> np.ndarray:
    """W[o, c] = sum_m P[o, c*M + m] D[c*M + m], with theta = [D, P] in C-order, by loops."""
    S = int(np.prod(case.stencil))
    theta = np.asarray(theta, dtype=np.float64)
    D = theta[: case.cin * case.mult * S].reshape(case.cin * case.mult, *case.stencil)
    P = theta[case.cin * case.mult * S :].reshape(case.cout, case.cin * case.mult)
    W = np.zeros((case.cout, case.cin, *case.stencil))
    for o, c, m in itertools.product(range(case.cout), range(case.cin), range(case.mult)):
        W[o, c] += P[o, c * case.mult + m] * D[c * case.mult + m]
    return W


@pytest.fixture(params=list(DW_CASES), ids=list(DW_CASES))
def dw_case(request) -> DwCase:
    return DW_CASES[request.param]


def test_depthwise_nparams_and_path():
    k = DepthwiseSeparableConv((8, 8), (3, 3), in_channels=4, out_channels=8, multiplier=2)
    assert k.nparams == 4 * 2 * 9 + 8 * 4 * 2
    assert k.path == "separable"  # 2 * (9 + 8) < 8 * 9
    assert DepthwiseSeparableConv((8, 8), 3, in_channels=1, out_channels=1).path == "full"
    D, P = k.split(np.arange(k.nparams, dtype=float))
    assert D.shape == (8, 3, 3) and P.shape == (8, 8) and P[0, 0] == 72


@pytest.mark.parametrize("bc", BCS)
def test_depthwise_check_kernel(dw_case, bc, dtype):
    for path in ("separable", "full"):
        report = check_kernel(dw_case.kernel(bc, path), dtype=dtype, rng=2)
        assert report.passed, str(report)


@pytest.mark.parametrize("bc", BCS)
def test_depthwise_paths_equal_conv_of_the_full_stencil(dw_case, bc, dtype, rng):
    conv = dw_case.conv(bc)
    X = rng.standard_normal((3, *conv.in_shape)).astype(dtype)
    Y = rng.standard_normal((3, *conv.out_shape)).astype(dtype)
    tol = default_rtol(dtype, int(np.prod(dw_case.stencil)) * dw_case.cin * dw_case.mult)
    theta = dw_case.kernel(bc).random_theta(rng, dtype)
    W = dw_full_stencil(dw_case, theta).ravel()
    for path in ("separable", "full"):
        k = dw_case.kernel(bc, path)
        assert rel(k.weights(theta), W.reshape(conv.theta_shape)) <= default_rtol(dtype, dw_case.mult)
        assert rel(k.apply(theta, X), conv.apply(W, X.astype(np.float64))) <= tol
        assert rel(k.apply(theta, Y, transpose=True), conv.apply(W, Y.astype(np.float64), transpose=True)) <= tol
    v = dw_case.kernel(bc).random_theta(rng, dtype)
    Js = dw_case.kernel(bc, "separable").jac(theta, X)
    Jf = dw_case.kernel(bc, "full").jac(theta, X)
    assert rel(Js.matvec(v), Jf.matvec(v)) <= tol


def test_exported_from_the_package():
    import structops
    import structops.kernels

    for name, cls in (("SeparableConv", SeparableConv), ("DepthwiseSeparableConv", DepthwiseSeparableConv)):
        assert getattr(structops, name) is cls and getattr(structops.kernels, name) is cls
        assert name in structops.__all__ and name in structops.kernels.__all__


def test_depthwise_equals_torch_grouped_then_pointwise(dtype, rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    case = DwCase((9, 8), (3, 5), 3, 4, 2, (1, 1))
    k = case.kernel("zero", "separable")
    theta = k.random_theta(rng, dtype)
    D, P = k.split(theta)
    X = rng.standard_normal((2, *k.in_shape)).astype(dtype)
    depth = torch.from_numpy(np.flip(D, axis=(1, 2)).copy()[:, None])  # (C*M, 1, *stencil)
    t = F.conv2d(torch.from_numpy(X), depth, padding="same", groups=case.cin)
    ref = F.conv2d(t, torch.from_numpy(P.copy())[:, :, None, None])
    assert rel(k.apply(theta, X), ref.numpy()) <= default_rtol(dtype, 15 * 6)


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(rank=0), ValueError, r"`rank` must be an integer >= 1, got 0"),
        (dict(rank=1.5), TypeError, r"`rank` must be an integer, got 1.5"),
        (dict(rank=True), TypeError, r"`rank` must be an integer, got True"),
        (dict(stencil=(3,)), ValueError, r"`stencil` must have 2 entries"),
        (dict(stencil=(3, 0)), ValueError, r"`stencil` must be >= 1|every entry of `stencil`"),
        (dict(stencil=(3, 2.0)), TypeError, r"`stencil` must hold integers"),
        (dict(grid=(4, 4, 4, 4), stencil=3), ValueError, r"`grid` must have 1, 2 or 3 axes"),
        (dict(path="fast"), ValueError, r"`path` must be one of"),
        (dict(bc="mirror"), ValueError, r"`bc` must be one of"),
        (dict(stride=(1,)), ValueError, r"`stride` must have 2 entries"),
        (dict(stencil=(9, 3), bc="valid"), ValueError, r"bc='valid' needs stencil <= grid"),
        (dict(in_channels=0), ValueError, r"`in_channels` must be an integer >= 1"),
    ],
)
def test_separable_bad_input(kwargs, error, match):
    args = dict(grid=(6, 5), stencil=(3, 3)) | kwargs
    with pytest.raises(error, match=match):
        SeparableConv(args.pop("grid"), args.pop("stencil"), **args)


def test_separable_path_refused_in_1d():
    with pytest.raises(ValueError, match=r"`path` 'separable' needs a grid of 2 or 3 axes"):
        SeparableConv(9, 3, path="separable")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(multiplier=0), ValueError, r"`multiplier` must be an integer >= 1, got 0"),
        (dict(multiplier="2"), TypeError, r"`multiplier` must be an integer, got '2'"),
        (dict(out_channels=2.0), TypeError, r"`out_channels` must be an integer, got 2.0"),
        (dict(stencil=(3, 3, 3)), ValueError, r"`stencil` must have 2 entries"),
    ],
)
def test_depthwise_bad_input(kwargs, error, match):
    args = dict(stencil=(3, 3), in_channels=2, out_channels=3) | kwargs
    with pytest.raises(error, match=match):
        DepthwiseSeparableConv((6, 5), args.pop("stencil"), **args)


def test_depthwise_channels_are_required():
    with pytest.raises(TypeError, match="in_channels"):
        DepthwiseSeparableConv((6, 5), 3, out_channels=2)  # type: ignore[call-arg]


def test_theta_of_wrong_length_is_refused():
    k = SeparableConv((6, 5), 3)
    with pytest.raises(ValueError, match="theta"):
        k.apply(np.ones(5), np.ones((1, 30)))


# ------------------------------------------------------------------ properties
@st.composite
def separable_kernels(draw):
    ndim = draw(st.integers(2, 3))
    grid = [draw(st.integers(1, 6 if ndim == 2 else 4)) for _ in range(ndim)]
    stencil = [draw(st.integers(1, g)) for g in grid]
    stride = [draw(st.integers(1, 2)) for _ in grid]
    bc = draw(st.sampled_from(BCS))
    cin, cout, rank = draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(st.integers(1, 2))
    kw = dict(bc=bc, in_channels=cin, out_channels=cout, stride=stride, rank=rank)
    return SeparableConv(grid, stencil, path="separable", **kw), SeparableConv(grid, stencil, path="full", **kw)


@settings(max_examples=examples(15), deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(kernels=separable_kernels(), seed=st.integers(0, 2**16))
def test_property_separable_path_is_the_convolution_of_its_full_stencil(kernels, seed):
    sep, full = kernels
    rng = np.random.default_rng(seed)
    theta = sep.random_theta(rng)
    X = rng.standard_normal((2, *sep.in_shape))
    Y = rng.standard_normal((2, *sep.out_shape))
    tol = default_rtol(np.float64, 1000)
    ref = Conv(sep.grid, sep.stencil, bc=sep.bc, in_channels=sep.in_channels, out_channels=sep.out_channels,
               stride=sep.stride)  # fmt: skip
    W = sep.weights(theta).ravel()
    KX = sep.apply(theta, X)
    assert rel(KX, ref.apply(W, X)) <= tol
    assert rel(KX, full.apply(theta, X)) <= tol
    KtY = sep.apply(theta, Y, transpose=True)
    assert rel(KtY, ref.apply(W, Y, transpose=True)) <= tol
    # the adjoint identity <K x, y> = <x, K^T y>
    assert abs(np.vdot(KX, Y) - np.vdot(X, KtY)) <= tol * np.linalg.norm(KX) * np.linalg.norm(Y) + 1e-300
