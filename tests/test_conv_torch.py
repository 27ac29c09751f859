"""structops.Conv against PyTorch (skipped cleanly when torch is not installed).

The documented correspondence: with ``w = k.theta_to_torch(theta)`` (theta flipped on the
spatial axes), ``K(theta) x`` is ``conv{1,2,3}d(pad(x), w, stride=stride)`` with padding
``(s - 1 - s // 2, s // 2)`` per axis in torch's mode for the bc (constant, circular,
reflect, replicate; none for valid). Adjoints are checked against torch autograd's input
vjp and against ``conv_transpose``; the stencil gradient against autograd's weight gradient.
"""

from __future__ import annotations

import numpy as np
import pytest

from structops import Conv
from structops.testing import default_rtol

from ._helpers import ConvCase as Case

torch = pytest.importorskip("torch")
F = torch.nn.functional

BCS = ("zero", "periodic", "reflect", "replicate", "valid")
TORCH_MODE = {"zero": "constant", "periodic": "circular", "reflect": "reflect", "replicate": "replicate"}
CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


CASES = {
    "1d-odd": Case((9,), (3,), 2, 3, (2,)),
    "1d-even": Case((8,), (4,), 1, 1, (1,)),
    "2d-odd": Case((7, 6), (3, 5), 3, 2, (2, 1)),
    "2d-even": Case((6, 5), (2, 4), 1, 2, (1, 3)),
    "3d-odd": Case((5, 4, 3), (3, 3, 1), 2, 1, (1, 2, 1)),
    "3d-even": Case((4, 4, 3), (2, 4, 2), 1, 2, (2, 2, 2)),
}


def torch_pad(x, stencil, bc: str):
    """Pad (s - 1 - s//2, s//2) per axis; torch's pad list runs from the last axis backwards."""
    if bc == "valid":
        return x
    widths = []
    for s in reversed(stencil):
        widths += [s - 1 - s // 2, s // 2]
    if bc == "zero":
        return F.pad(x, widths, mode="constant", value=0.0)
    return F.pad(x, widths, mode=TORCH_MODE[bc])


def torch_conv(x, w, case: Case, bc: str):
    return CONV[len(case.grid)](torch_pad(x, case.stencil, bc), w, stride=case.stride)


def rel(a, b) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


@pytest.fixture(params=list(CASES), ids=list(CASES))
def case(request) -> Case:
    return CASES[request.param]


@pytest.mark.parametrize("bc", BCS)
def test_forward_adjoint_and_gradient_equal_torch(case, bc, dtype, rng):
    k = case.kernel(bc)
    theta = rng.standard_normal(k.nparams).astype(dtype)
    X = rng.standard_normal((3, *k.in_shape)).astype(dtype)
    Y = rng.standard_normal((3, *k.out_shape)).astype(dtype)
    rt = default_rtol(dtype, max(k.shape))

    w = torch.tensor(k.theta_to_torch(theta), requires_grad=True)
    assert tuple(w.shape) == (case.cout, case.cin, *case.stencil)
    xt = torch.tensor(X, requires_grad=True)
    out = torch_conv(xt, w, case, bc)
    assert tuple(out.shape[1:]) == k.out_shape
    assert rel(k.apply(theta, X), out.detach().numpy()) <= rt

    # adjoint in x (vjp) and gradient in the stencil, both from autograd
    gx, gw = torch.autograd.grad(out, (xt, w), grad_outputs=torch.tensor(Y))
    assert rel(k.apply(theta, Y, transpose=True), gx.numpy()) <= rt
    grad_theta = np.flip(gw.numpy(), axis=tuple(range(2, 2 + len(case.grid)))).ravel()  # d/dtheta = flip(d/dw)
    J = k.jac(theta, X)
    assert rel(J.H @ Y.ravel(), grad_theta) <= rt
    assert rel(J.per_example(Y).sum(0), grad_theta) <= rt


@pytest.mark.parametrize("bc", ["zero", "valid"])
def test_adjoint_equals_conv_transpose(case, bc, dtype, rng):
    # conv_transpose is the adjoint of the valid convolution on the padded grid; zero padding crops back
    k = case.kernel(bc)
    theta = rng.standard_normal(k.nparams).astype(dtype)
    Y = rng.standard_normal((2, *k.out_shape)).astype(dtype)
    w = torch.tensor(k.theta_to_torch(theta))
    left = [0 if bc == "valid" else s - 1 - s // 2 for s in case.stencil]
    padded = [g + (0 if bc == "valid" else s - 1) for g, s in zip(case.grid, case.stencil)]
    extra = [(gp - s) % st for gp, s, st in zip(padded, case.stencil, case.stride)]
    xp = CONV_T[len(case.grid)](torch.tensor(Y), w, stride=case.stride, output_padding=extra).numpy()
    assert xp.shape[2:] == tuple(padded)
    crop = (slice(None), slice(None), *(slice(lo, lo + g) for lo, g in zip(left, case.grid)))
    assert rel(k.apply(theta, Y, transpose=True), xp[crop]) <= default_rtol(dtype, max(k.shape))


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")
@pytest.mark.parametrize("stencil", [(1, 1), (2, 3), (4, 4), (5, 2)], ids=str)
def test_zero_bc_stride_one_equals_torch_padding_same(stencil, dtype, rng):
    # the convention in the docstring: padding="same" for zero bc, any stencil size (odd or even)
    k = Conv((7, 6), stencil, in_channels=2, out_channels=3)
    theta = rng.standard_normal(k.nparams).astype(dtype)
    X = rng.standard_normal((2, *k.in_shape)).astype(dtype)
    out = F.conv2d(torch.tensor(X), torch.tensor(k.theta_to_torch(theta)), padding="same").numpy()
    assert rel(k.apply(theta, X), out) <= default_rtol(dtype, max(k.shape))


@pytest.mark.parametrize("bc", ["zero", "periodic", "reflect", "replicate"])
def test_odd_stencil_with_symmetric_padding_and_stride_equals_torch(bc, rng):
    # odd stencils: padding s // 2 on both sides and torch's own stride= (the documented recipe)
    k = Conv((9, 8), (3, 5), bc=bc, in_channels=2, out_channels=2, stride=(2, 3))
    theta = rng.standard_normal(k.nparams)
    X = rng.standard_normal((2, *k.in_shape))
    w = torch.tensor(k.theta_to_torch(theta))
    x = torch.tensor(X)
    if bc == "zero":
        out = F.conv2d(x, w, stride=(2, 3), padding=(1, 2))
    else:
        out = F.conv2d(F.pad(x, (2, 2, 1, 1), mode=TORCH_MODE[bc]), w, stride=(2, 3))
    assert rel(k.apply(theta, X), out.numpy()) <= 1e-13


def test_theta_from_torch_round_trip(rng):
    k = Conv((6, 5), (3, 2), in_channels=2, out_channels=3)
    weight = torch.randn(3, 2, 3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    theta = k.theta_from_torch(weight, unchecked=True)
    assert theta.shape == (k.nparams,) and theta.dtype == np.float64
    np.testing.assert_array_equal(k.theta_to_torch(theta), weight.numpy())
    np.testing.assert_array_equal(k.theta_from_torch(weight.numpy(), unchecked=True), theta)  # numpy weights too
    # strides torch accepts, also when every flipped axis has size 1
    for shape in ((2, 3), (1, 1)):
        k1 = Conv((6, 5), shape, in_channels=2, out_channels=3)
        assert torch.tensor(k1.theta_to_torch(rng.standard_normal(k1.nparams))).shape == (3, 2, *shape)
    theta2 = rng.standard_normal(k.nparams)
    np.testing.assert_array_equal(k.theta_from_torch(k.theta_to_torch(theta2), unchecked=True), theta2)
    # torch's convention used directly: conv2d(x, weight, padding="same") == apply(theta_from_torch(weight), x)
    X = rng.standard_normal((2, *k.in_shape))
    out = F.conv2d(torch.tensor(X), weight, padding="same").numpy()
    assert rel(k.apply(theta, X), out) <= 1e-13
    # a weight that needs gradients is accepted (detached)
    w32 = torch.randn(3, 2, 3, 2, requires_grad=True)
    assert k.theta_from_torch(w32, unchecked=True).dtype == np.float32


def test_theta_from_torch_rejects_wrong_shape():
    k = Conv((6, 5), (3, 2), in_channels=2, out_channels=3)
    with pytest.raises(ValueError, match=r"`weight` must have shape \(3, 2, 3, 2\), got \(2, 3, 3, 2\)"):
        k.theta_from_torch(torch.zeros(2, 3, 3, 2), unchecked=True)
    with pytest.raises(ValueError, match=r"`theta` must have length nparams = 36"):
        k.theta_to_torch(np.zeros(35))


@pytest.mark.parametrize(
    "options, attribute",
    [
        ({"dilation": 2, "padding": 2}, "dilation"),
        ({"stride": 2, "padding": 1}, "stride"),
        ({"padding": 0}, "padding"),
        ({"padding": 1, "padding_mode": "circular"}, "padding_mode"),
        ({"padding": 1, "groups": 2}, "groups"),
    ],
)
def test_theta_from_torch_checks_the_module_geometry(options, attribute, rng):
    """A module of another geometry is refused by name; one of the same geometry gives the same map."""
    k = Conv((6, 5), 3, in_channels=2, out_channels=4)
    other = torch.nn.Conv2d(2, 4, 3, bias=False, **options).double()
    with pytest.raises(ValueError, match=rf"the module's `{attribute}` is"):
        k.theta_from_torch(other)
    same = torch.nn.Conv2d(2, 4, 3, padding=1, bias=False).double()
    X = rng.standard_normal((2, *k.in_shape))
    assert rel(k.apply(k.theta_from_torch(same), X), same(torch.tensor(X)).detach().numpy()) <= default_rtol(
        np.float64, 18
    )
    with pytest.raises(TypeError, match="cannot be checked"):
        k.theta_from_torch(same.weight)
