"""from_module, to_module, Layer.project_(lipschitz=) and certify, against torch itself and dense SVDs."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import structops  # noqa: E402
import structops.torch as st  # noqa: E402
from structops.solvers import certified_norm_bound  # noqa: E402

RTOL = {torch.float64: 1e-12, torch.float32: 1e-5}

CONVS = [
    (torch.nn.Conv1d, {"padding": 1}, (2, 11)),
    (torch.nn.Conv1d, {"padding": "same", "kernel_size": 4}, (2, 9)),
    (torch.nn.Conv2d, {"padding": 1, "padding_mode": "circular"}, (2, 7, 8)),
    (torch.nn.Conv2d, {"padding": 1, "padding_mode": "reflect", "stride": 2}, (2, 7, 8)),
    (torch.nn.Conv2d, {"padding": 1, "padding_mode": "replicate", "bias": False}, (2, 6, 5)),
    (torch.nn.Conv2d, {"padding": 0, "stride": 2}, (2, 9, 8)),
    (torch.nn.Conv3d, {"padding": 1, "stride": (1, 2, 1)}, (2, 5, 4, 6)),
    (torch.nn.ConvTranspose2d, {"padding": 1, "stride": 2, "output_padding": 1}, (2, 4, 5)),
    (torch.nn.ConvTranspose1d, {"padding": 1}, (2, 7)),
]


def _close(got, want, dtype):
    got, want = got.detach(), want.detach()
    scale = float(want.abs().max())
    assert got.shape == want.shape and float((got - want).abs().max()) <= RTOL[dtype] * scale


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(("cls", "options", "shape"), CONVS, ids=[f"{c.__name__}-{o}" for c, o, _ in CONVS])
def test_from_module_and_to_module_reproduce_the_torch_module(cls, options, shape, dtype):
    torch.manual_seed(0)
    options = {"kernel_size": 3, **options}
    module = cls(shape[0], 3, dtype=dtype, **options)
    layer = st.from_module(module, shape)
    x = torch.randn(3, *shape, dtype=dtype)
    with torch.no_grad():
        _close(layer(x), module(x), dtype)
        _close(layer.to_module()(x), module(x), dtype)
    assert (getattr(layer, "bias", None) is None) == (module.bias is None)


def test_from_module_linear_is_dense_and_differentiable():
    module = torch.nn.Linear(5, 3, dtype=torch.float64)
    layer = st.from_module(module)
    assert isinstance(layer.kernel, structops.Dense)
    x = torch.randn(4, 5, dtype=torch.float64)
    _close(layer(x), module(x), torch.float64)
    layer(x).sum().backward()
    assert layer.theta.grad is not None and layer.bias.grad is not None


@pytest.mark.parametrize(
    ("module", "attribute"),
    [
        (torch.nn.Conv2d(2, 2, 3, dilation=2, padding=2), "dilation"),
        (torch.nn.Conv2d(2, 2, 3, groups=2, padding=1), "groups"),
        (torch.nn.Conv2d(2, 2, 3, padding=2), "padding"),
    ],
)
def test_from_module_names_what_it_cannot_represent(module, attribute):
    try:
        layer = st.from_module(module, (2, 8, 8))
    except ValueError as err:
        assert f"`{attribute}`=" in str(err)
        return
    x = torch.randn(2, 2, 8, 8)  # Conv took the keyword: then it must be exact
    _close(layer(x).detach(), module(x).detach(), torch.float32)


def test_from_module_refuses_other_modules_and_bad_shapes():
    with pytest.raises(TypeError, match="got LSTM"):
        st.from_module(torch.nn.LSTM(2, 2), (2,))
    with pytest.raises(ValueError, match="input_shape"):
        st.from_module(torch.nn.Conv2d(2, 2, 3, padding=1), (3, 8, 8))


def test_to_module_refuses_a_family_without_a_fixed_stencil():
    layer = st.Layer(structops.Diagonal(4))
    with pytest.raises(ValueError, match="not a convolution with a fixed stencil"):
        layer.to_module()


@pytest.mark.parametrize("bc", ["zero", "periodic"])
def test_project_lipschitz_is_certified_in_place(bc):
    torch.manual_seed(1)
    layer = st.Layer(structops.Conv((10, 10), 3, bc=bc, in_channels=3, out_channels=3))
    with torch.no_grad():
        layer.theta.mul_(5.0)
    assert layer.project_(lipschitz=0.7) is layer
    theta = layer.theta.detach().numpy()
    assert (
        np.linalg.norm(layer.kernel.matrix(theta.astype(np.float64)), 2)
        <= certified_norm_bound(layer.kernel, theta)
        <= 0.7
    )
    before = theta.copy()
    layer.project_(lipschitz=0.7)  # feasible: the identity
    np.testing.assert_array_equal(layer.theta.detach().numpy(), before)


# ------------------------------------------------------------------ certify
def _network():
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 3, 3, padding=1),
        torch.nn.BatchNorm2d(3),
        torch.nn.ReLU(),
        st.Residual(torch.nn.Sequential(torch.nn.Conv2d(3, 3, 3, padding=1, padding_mode="circular"), torch.nn.Tanh())),
        torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3, padding=1, stride=2), torch.nn.LeakyReLU(0.1)),
        torch.nn.AvgPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Dropout(0.3),
        torch.nn.Linear(2 * 2 * 2, 3),
    ).double()
    with torch.no_grad():
        net[1].running_var.uniform_(0.5, 2.0)
        net[1].weight.uniform_(0.5, 1.5)
    return net.eval()


def _dense(layer: st.Layer) -> np.ndarray:
    return layer.kernel.matrix(layer.theta.detach().double().numpy())


def test_certify_rows_match_dense_svds_and_the_network_bound_composes_them():
    net = _network()
    shape = (1, 8, 8)
    report = st.certify(net, shape, inputs=torch.randn(3, *shape, dtype=torch.float64))
    rows = {r.name: r for r in report.rows}
    # Conv + BatchNorm folded: diag(γ/√(σ²+ε)) K
    conv = st.from_module(net[0], shape)
    scale = (net[1].weight / torch.sqrt(net[1].running_var + net[1].eps)).detach().numpy()
    folded = np.repeat(scale, 64)[:, None] * _dense(conv)
    truth = np.linalg.norm(folded, 2)
    assert rows["0+1"].lower <= truth <= rows["0+1"].upper <= truth * (1 + 1e-9)
    branch = np.linalg.norm(_dense(st.from_module(net[3].branch[0], (3, 8, 8))), 2)
    assert rows["3"].upper == pytest.approx(1 + branch, rel=1e-9)
    pool = structops.Conv((4, 4), 2, bc="valid", stride=2)
    assert rows["5"].upper == pytest.approx(np.linalg.norm(pool.matrix(np.full(4, 0.25)), 2), rel=1e-9)  # 1/2
    product = np.prod([r.upper for r in report.rows if not r.name.startswith("3.")])
    assert report.upper == pytest.approx(product, rel=1e-12)
    # the measured lower bound lies below the certified upper bound and the dense Jacobian's norm
    x = torch.randn(1, *shape, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(net, x).reshape(3, -1).numpy()
    assert np.linalg.norm(jac, 2) <= report.upper
    assert report.lower is not None and report.lower <= report.upper
    text = str(report)
    assert "certified Lipschitz upper bound" in text and "0+1" in text
    assert report.to_dict()["rows"][0]["ratio"] == pytest.approx(rows["0+1"].ratio)


def test_certify_measured_lower_bound_is_the_jacobian_norm_of_a_linear_network():
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.Flatten(), torch.nn.Linear(32, 4)).double()
    net.eval()
    x = torch.randn(1, 1, 4, 4, dtype=torch.float64)
    report = st.certify(net, (1, 4, 4), inputs=x)
    jac = torch.autograd.functional.jacobian(net, x).reshape(4, -1).numpy()
    truth = np.linalg.norm(jac, 2)
    assert report.lower == pytest.approx(truth, rel=1e-6) and truth <= report.upper


def test_certify_names_unknown_modules_and_takes_given_bounds():
    net = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.GELU()).eval()
    with pytest.raises(TypeError, match="GELU"):
        st.certify(net, (3,))
    report = st.certify(net, (3,), bounds={torch.nn.GELU: 1.13})
    assert report.rows[-1].route == "given" and report.rows[-1].upper == 1.13
    with pytest.raises(ValueError, match="eval mode"):
        st.certify(net.train(), (3,))
