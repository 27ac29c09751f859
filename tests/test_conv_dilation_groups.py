"""structops.Conv with torch's ``dilation``, ``groups`` and ``padding``, every bc, 1-3-D, with stride.

References: torch's own ``nn.Conv{1,2,3}d`` modules (value, input gradient and weight gradient,
built from the same constructor arguments, so torch resolves padding itself); a dense matrix
built entry by entry from the definition (every bc, including ``symmetric`` which torch lacks);
dense LAPACK eigen- and singular values for the spectra.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import structops
from structops import Conv, _backend
from structops.kernels.conv import ConvGeometry, PolyphaseMultiplier
from structops.solvers import spectral_norm, svdvals
from structops.testing import check_kernel, default_rtol

torch = pytest.importorskip("torch")

TORCH_MODE = {"zero": "zeros", "periodic": "circular", "reflect": "reflect", "replicate": "replicate"}


class Case(NamedTuple):
    grid: tuple[int, ...]
    stencil: tuple[int, ...]
    cin: int
    cout: int
    groups: int
    dilation: int | tuple[int, ...]
    stride: int | tuple[int, ...]
    padding: object

    def kernel(self, bc: str, method: str = "auto") -> Conv:
        return Conv(
            self.grid, self.stencil, bc=bc, in_channels=self.cin, out_channels=self.cout, stride=self.stride,
            dilation=self.dilation, groups=self.groups, padding=self.padding, method=method,
        )  # fmt: skip


CASES = {
    "1d-dil2-g2-pad2-st2": Case((13,), (3,), 4, 6, 2, 2, 2, 2),
    "1d-even-dil3-same": Case((11,), (4,), 2, 2, 2, 3, 1, "same"),
    "2d-dil2-g2-same": Case((9, 8), (3, 3), 4, 4, 2, 2, 1, "same"),
    "2d-dil-axis-pad-axis-st": Case((10, 9), (3, 2), 3, 6, 3, (1, 2), (2, 1), (1, 0)),
    "2d-depthwise-valid": Case((8, 7), (3, 3), 4, 8, 4, (2, 1), 1, "valid"),
    "2d-g4-dil3-pad3": Case((9, 9), (3, 3), 8, 8, 4, 3, 1, 3),
    "2d-g2-pad0-st2": Case((9, 10), (3, 3), 4, 2, 2, 1, 2, 0),
    "3d-dil2-g2-pad1": Case((5, 6, 5), (3, 2, 3), 2, 4, 2, (1, 2, 2), (1, 2, 1), 1),
}
BCS = ("zero", "periodic", "reflect", "replicate")
METHODS = ("numba", "numpy", "fft")


def _module(case: Case, bc: str, weight: np.ndarray):
    d = len(case.grid)
    dtype = torch.float64 if weight.dtype == np.float64 else torch.float32
    cls = {1: torch.nn.Conv1d, 2: torch.nn.Conv2d, 3: torch.nn.Conv3d}[d]
    m = cls(
        case.cin, case.cout, case.stencil, stride=case.stride, padding=case.padding, dilation=case.dilation,
        groups=case.groups, bias=False, padding_mode=TORCH_MODE[bc], dtype=dtype,
    )  # fmt: skip
    with torch.no_grad():
        m.weight.copy_(torch.from_numpy(weight))
    return m


def _build(case: Case, bc: str, method: str) -> Conv:
    if method == "numpy":
        _backend.set_accelerator("numpy")
        try:
            return case.kernel(bc, "direct")
        finally:
            _backend.set_accelerator("numba")
    return case.kernel(bc, "fft" if method == "fft" else "direct")


def rel(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def _against_torch(case: Case, bc: str, method: str, dtype, rng) -> None:
    k = _build(case, bc, method)
    assert k.backend == ("numpy" if method == "numpy" else k.backend)
    theta = rng.standard_normal(k.nparams).astype(dtype)
    weight = k.theta_to_torch(theta)
    assert weight.shape == (case.cout, case.cin // case.groups, *case.stencil)
    m = _module(case, bc, weight)
    X = rng.standard_normal((3, *k.in_shape)).astype(dtype)
    xt = torch.tensor(X, requires_grad=True)
    out = m(xt)
    assert tuple(out.shape[1:]) == k.out_shape
    Y = rng.standard_normal(tuple(out.shape)).astype(dtype)
    rt = default_rtol(dtype, max(k.shape))
    assert rel(k.apply(theta, X), out.detach().numpy()) <= rt
    gx, gw = torch.autograd.grad(out, (xt, m.weight), grad_outputs=torch.tensor(Y))
    assert rel(k.apply(theta, Y, transpose=True), gx.numpy()) <= rt
    grad_theta = k.theta_from_torch(gw, unchecked=True)  # d/dθ = flip(d/dw), the same flip as the weights
    J = k.jac(theta, X)
    assert rel(J.H @ Y.ravel(), grad_theta) <= rt
    assert rel(J.per_example(Y).sum(0), grad_theta) <= rt


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_value_and_both_gradients_equal_torch_modules(case, method, dtype, rng):
    bc = ("zero", "periodic", "reflect", "replicate")[list(CASES).index(case) % 4]
    if bc == "reflect" and CASES[case].grid[0] < 6:
        bc = "zero"
    _against_torch(CASES[case], bc, method, dtype, rng)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("bc", BCS)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_every_case_bc_and_method_equals_torch(case, bc, method, dtype, rng):
    try:
        CASES[case].kernel(bc)
    except ValueError:
        pytest.skip("the padding is too wide for this bc (refused, as torch does)")
    _against_torch(CASES[case], bc, method, dtype, rng)


# ------------------------------------------------------------------- dense by definition
def _source(bc: str, p: int, n: int) -> int:
    """The grid sample feeding padded position ``p`` (grid coordinates), -1 for a zero: by the definitions."""
    if 0 <= p < n:
        return p
    if bc in ("zero", "valid"):
        return -1
    if bc == "periodic":
        return p % n
    if bc == "replicate":
        return min(max(p, 0), n - 1)
    while not 0 <= p < n:  # mirror until inside: symmetric repeats the edge sample, reflect does not
        if bc == "symmetric":
            p = -p - 1 if p < 0 else 2 * n - 1 - p
        else:
            p = -p if p < 0 else 2 * (n - 1) - p
    return p


def dense_by_definition(k: Conv, theta: np.ndarray) -> np.ndarray:
    """``z[o, i] = sum_{c in group(o), j} θ[o, c, j] x[g(o) cg + c, src(st i + d (s - 1 - j) - p_before)]``."""
    geo = k.geometry
    w = theta.reshape(geo.theta_shape)
    cg, og = geo.cin // geo.groups, geo.cout // geo.groups
    A = np.zeros((geo.cout, *geo.out_grid, geo.cin, *geo.grid))
    for o, i in itertools.product(range(geo.cout), itertools.product(*(range(m) for m in geo.out_grid))):
        for c, j in itertools.product(range(cg), itertools.product(*(range(s) for s in geo.stencil))):
            src = []
            for a in range(geo.ndim):
                p = geo.stride[a] * i[a] + geo.dilation[a] * (geo.stencil[a] - 1 - j[a]) - geo.padding[a][0]
                src.append(_source(geo.bc, p, geo.grid[a]))
            if min(src) >= 0:
                A[(o, *i, (o // og) * cg + c, *src)] += w[(o, c, *j)]
    return A.reshape(k.shape)


SMALL = {
    "1d-dil2-g2-pad1-st2": Case((9,), (3,), 2, 4, 2, 2, 2, 1),
    "1d-even-dil2": Case((8,), (2,), 3, 3, 3, 2, 1, None),
    "2d-dil-g2-st": Case((6, 5), (3, 2), 4, 2, 2, (2, 1), (1, 2), (2, 1)),
    "2d-same-dil2": Case((6, 6), (3, 3), 2, 2, 1, 2, 1, "same"),
    "3d-g2-dil2": Case((4, 3, 4), (2, 2, 3), 2, 2, 2, (2, 1, 1), 1, None),
}


@pytest.mark.parametrize("bc", ["zero", "periodic", "reflect", "symmetric", "replicate"])
@pytest.mark.parametrize("case", SMALL, ids=str)
def test_matrix_equals_the_dense_matrix_built_entry_by_entry(case, bc, rng):
    try:
        k = SMALL[case].kernel(bc)
    except ValueError:
        pytest.skip("too wide a padding for this bc")
    theta = rng.standard_normal(k.nparams)
    A = dense_by_definition(k, theta)
    tol = default_rtol(np.float64, max(k.shape))
    assert rel(k.matrix(theta), A) <= tol
    # Q in O(nnz): at most one entry per output, in-grid tap and channel pair of a group
    M = int(np.prod(k.geometry.out_grid))
    assert k.Q.nnz <= M * int(np.prod(k.stencil)) * k.geometry.cin_group * k.out_channels
    assert rel((k.Q @ theta).reshape(k.shape, order="F"), A) <= tol
    for method in ("direct", "fft"):  # symmetric has no torch counterpart: every path against A
        km = SMALL[case].kernel(bc, method)
        X = rng.standard_normal((2, k.shape[1]))
        assert rel(km.apply(theta, X).reshape(2, -1), X @ A.T) <= tol
        Y = rng.standard_normal((2, k.shape[0]))
        assert rel(km.apply(theta, Y, transpose=True).reshape(2, -1), Y @ A) <= tol


ALL_BCS = ("zero", "periodic", "reflect", "symmetric", "replicate", "valid")


@pytest.mark.parametrize("case", SMALL, ids=str)
def test_check_kernel_passes_in_both_dtypes(case, dtype):
    bc = ALL_BCS[list(SMALL).index(case) % len(ALL_BCS)]
    _check(SMALL[case], bc, dtype)


@pytest.mark.slow
@pytest.mark.parametrize("bc", ALL_BCS)
@pytest.mark.parametrize("case", SMALL, ids=str)
def test_check_kernel_passes_for_every_bc(case, bc, dtype):
    _check(SMALL[case], bc, dtype)


def _check(c: Case, bc: str, dtype) -> None:
    if bc == "valid":
        c = c._replace(padding=None)
    try:
        k = c.kernel(bc)
    except ValueError:
        pytest.skip("too wide a padding for this bc")
    report = check_kernel(k, dtype=dtype, rng=3)
    assert report.passed, str(report)


# ----------------------------------------------------------------------------- spectra
def test_periodic_dilated_grouped_diagonalize_gives_block_diagonal_symbol_and_exact_spectra(rng):
    k = Conv((8, 6), (3, 3), bc="periodic", in_channels=4, out_channels=6, groups=2, dilation=(2, 3))
    theta = rng.standard_normal(k.nparams)
    A = k.matrix(theta)
    D = k.diagonalize(theta)
    assert D is not None and D.transform == "fft"
    blocks = D.full_blocks()
    assert blocks.shape == (8, 6, 6, 4)
    assert np.all(blocks[..., :3, 2:] == 0) and np.all(blocks[..., 3:, :2] == 0)  # off-group blocks vanish
    tol = default_rtol(np.float64, A.shape[0])
    np.testing.assert_allclose(D.singular_values(), np.linalg.svd(A, compute_uv=False)[: A.shape[1]], atol=tol * 10)
    sq = Conv(7, 3, bc="periodic", in_channels=2, out_channels=2, groups=2, dilation=3)
    t = rng.standard_normal(sq.nparams)
    ev = np.sort_complex(sq.diagonalize(t).eigenvalues().ravel())
    np.testing.assert_allclose(ev, np.sort_complex(np.linalg.eigvals(sq.matrix(t))), atol=tol * 10)


STRIDED = [
    ((8,), (3,), 1, 2, 1, 2, 2),
    ((12,), (4,), 2, 3, 1, 3, 1),
    ((8, 6), (3, 3), 2, 3, 1, 2, 1),
    ((6, 8), (3, 2), 4, 4, 2, (2, 4), (1, 2)),
    ((4, 4), (5, 5), 1, 1, 1, 2, 1),  # a stencil wider than the grid: the taps wrap
    ((4, 6, 4), (3, 3, 3), 2, 2, 2, (2, 3, 1), 1),
    ((6, 6), (3, 3), 6, 1, 1, 3, 2),  # cout < m·cin: wide blocks
    ((6, 6), (3, 3), 1, 6, 1, 3, 2),  # cout > m·cin: tall blocks
]


@pytest.mark.parametrize("case", STRIDED, ids=str)
def test_strided_periodic_singular_values_are_exact(case, dtype, rng):
    grid, stencil, cin, cout, groups, stride, dilation = case
    k = Conv(grid, stencil, bc="periodic", in_channels=cin, out_channels=cout, groups=groups, stride=stride,
             dilation=dilation)  # fmt: skip
    theta = rng.standard_normal(k.nparams).astype(dtype)
    A = k.matrix(theta).astype(np.float64)
    D = k.diagonalize(theta)
    assert isinstance(D, PolyphaseMultiplier) and D.unitary and not D.has_eigenvalues
    exact = np.linalg.svd(A, compute_uv=False)
    tol = default_rtol(dtype, max(A.shape)) * exact[0]
    np.testing.assert_allclose(D.singular_values(), exact, atol=tol)
    np.testing.assert_allclose(svdvals(k, theta, dense_limit=0), exact, atol=tol)
    est = spectral_norm(k, theta, dense_limit=0, full_output=True)
    assert est.method == "fourier" and est.exact and abs(est.value - exact[0]) <= tol
    # the multiplier is the operator, and its adjoint the transpose
    X = rng.standard_normal((A.shape[1], 2))
    Y = rng.standard_normal((A.shape[0], 2))
    assert rel(D @ X, A @ X) <= default_rtol(dtype, max(A.shape))
    assert rel(D.H @ Y, A.T @ Y) <= default_rtol(dtype, max(A.shape))


def test_polyphase_with_blocks_gives_pseudo_inverse_and_normal_operator(rng):
    k = Conv((6, 4), (3, 3), bc="periodic", in_channels=2, out_channels=3, stride=2)
    theta = rng.standard_normal(k.nparams)
    A, D = k.matrix(theta), k.diagonalize(theta)
    B = D.blocks
    P = D.with_blocks(np.linalg.pinv(B), swap=True)
    N = D.with_blocks(np.conj(np.swapaxes(B, -1, -2)) @ B, normal=True)
    assert D.same_basis(P) and D.same_basis(N)
    tol = default_rtol(np.float64, A.size)
    np.testing.assert_allclose(P @ np.eye(A.shape[0]), np.linalg.pinv(A), atol=tol * np.abs(np.linalg.pinv(A)).max())
    np.testing.assert_allclose(N @ np.eye(A.shape[1]), A.T @ A, atol=tol * np.abs(A.T @ A).max())


@pytest.mark.parametrize(
    "kw",
    [
        dict(dilation=2, groups=2, in_channels=4, out_channels=4),
        dict(dilation=(1, 3), padding=1, in_channels=2, out_channels=2, stride=2),
        dict(padding=0, in_channels=1, out_channels=3),
        dict(padding=3, groups=3, in_channels=3, out_channels=3, dilation=2),
    ],
    ids=str,
)
def test_zero_padding_certificate_holds_for_dilated_and_grouped(kw, rng):
    k = Conv((9, 8), (3, 3), **kw)
    theta = rng.standard_normal(k.nparams)
    true = np.linalg.norm(k.matrix(theta), 2)
    emb = k.periodic_embedding(theta)
    assert emb is not None and emb.stencil.shape[:2] == (k.out_channels, k.in_channels)
    assert true <= emb.upper_bound() <= 1.5 * true
    est = spectral_norm(k, theta, dense_limit=0, full_output=True)
    assert est.lower <= true * (1 + 1e-12) and est.upper >= true


# -------------------------------------------------------------------------- properties
@st.composite
def geometries(draw):
    d = draw(st.integers(1, 3))
    G = draw(st.sampled_from([1, 2]))
    cin, cout = G * draw(st.integers(1, 2)), G * draw(st.integers(1, 2))
    stencil = tuple(draw(st.integers(1, 3)) for _ in range(d))
    dilation = tuple(draw(st.integers(1, 3)) for _ in range(d))
    stride = tuple(draw(st.integers(1, 2)) for _ in range(d))
    padding = draw(st.sampled_from([None, "valid", 0, 1, 2]))
    bc = draw(st.sampled_from(["zero", "periodic", "reflect", "symmetric", "replicate", "valid"]))
    grid = tuple(draw(st.integers(3, 7 if d < 3 else 4)) for _ in range(d))
    if bc == "valid":
        padding = None
    return dict(grid=grid, stencil=stencil, bc=bc, in_channels=cin, out_channels=cout, stride=stride,
                dilation=dilation, groups=G, padding=padding)  # fmt: skip


@settings(max_examples=8)
@given(geo=geometries(), method=st.sampled_from(["direct", "fft"]))
def test_random_geometries_pass_the_adjoint_and_taylor_tests(geo, method):
    _random_geometry(geo, method)


@pytest.mark.slow
@settings(max_examples=150)
@given(geo=geometries(), method=st.sampled_from(["direct", "fft"]))
def test_many_random_geometries_pass_the_adjoint_and_taylor_tests(geo, method):
    _random_geometry(geo, method)


def _random_geometry(geo: dict, method: str) -> None:
    try:
        k = Conv(**geo, method=method)
    except ValueError as err:  # refused: the message names an argument
        assert any(f"`{name}`" in str(err) for name in ("stencil", "padding")), str(err)
        return
    report = check_kernel(k, dtype=np.float64, rng=0, nexamples=2)
    assert report.passed, str(report)
    emb = k.periodic_embedding(k.random_theta(0))
    assert (emb is not None) == (geo["bc"] in ("zero", "valid"))


# -------------------------------------------------------------------------- validation
BAD = [
    (dict(groups=3, in_channels=4, out_channels=6), ValueError, r"`groups` must divide"),
    (dict(groups=0), ValueError, r"`groups`"),
    (dict(dilation=0), ValueError, r"`dilation`"),
    (dict(dilation=(1, 2, 3)), ValueError, r"`dilation` must have 2 entries"),
    (dict(dilation=1.5), TypeError, r"`dilation`"),
    (dict(padding=-1), ValueError, r"`padding`"),
    (dict(padding="full"), ValueError, r"`padding` must be None, 'same', 'valid'"),
    (dict(padding="same", stride=2), ValueError, r"`padding`='same' needs stride 1"),
    (dict(padding=1, bc="valid"), ValueError, r"`padding` must be 0 with bc='valid'"),
    (dict(dilation=4, padding=0), ValueError, r"dilated to extent .* larger than the padded grid"),
    (dict(dilation=3, bc="reflect", padding=6), ValueError, r"too large for bc='reflect'"),
]


@pytest.mark.parametrize(("change", "error", "message"), BAD, ids=[str(c) for c, _, _ in BAD])
def test_bad_arguments_are_refused_naming_them(change, error, message):
    args = {"grid": (8, 6), "stencil": (3, 3), **change}
    with pytest.raises(error, match=message):
        Conv(**args)
    geo_args = {k: v for k, v in args.items() if k not in ("in_channels", "out_channels")}
    geo_args.setdefault("cin", args.get("in_channels", 1))
    geo_args.setdefault("cout", args.get("out_channels", 1))
    with pytest.raises(error, match=message):
        ConvGeometry(**geo_args)


def test_geometry_is_exposed_for_torch_forms_and_default_padding_is_unchanged():
    k = Conv((10, 9), (4, 3), in_channels=4, out_channels=2, groups=2, dilation=(2, 1), padding=(1, 0), stride=(1, 2))
    assert (k.dilation, k.groups, k.padding) == ((2, 1), 2, ((1, 1), (0, 0)))
    assert k.geometry.dilation == k.dilation and k.geometry.padding == k.padding
    assert k.nparams == 2 * 2 * 12 and k.theta_shape == (2, 2, 4, 3)
    assert k.out_shape == (2, 10 + 2 - 7 + 1, (9 - 3) // 2 + 1)
    plain = Conv((10, 9), (4, 3), in_channels=2)
    assert plain.geometry == ConvGeometry((10, 9), (4, 3), cin=2, padding=None)
    assert plain.padding == ((1, 2), (1, 1)) and plain.geometry.default_padding
    assert "dilation=(2, 1)" in repr(k) and "groups=2" in repr(k)
    sym = structops.SymmetricConv((6, 6), (3, 3))
    assert (sym.dilation, sym.groups) == ((1, 1), 1)
