"""structops.torch: every family a differentiable PyTorch function and layer (skipped without torch).

The references are independent of the bridge: torch's own finite differences
(``gradcheck``/``gradgradcheck``), the family's numpy Jacobian transposes (``jac(...).H``,
``apply(..., transpose=True)``) and ``torch.nn.functional.conv{1,2,3}d`` with
``theta_to_torch`` weights.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pytest

import structops
from structops.testing import default_rtol

torch = pytest.importorskip("torch")
st = pytest.importorskip("structops.torch")
F = torch.nn.functional

TORCH_DTYPE = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}


class Family(NamedTuple):
    """A family of the bridge's table: an id and a (cheap) constructor of a tiny instance."""

    name: str
    build: Callable[[], structops.ParametricKernel]


def _conv_families() -> list[Family]:
    """Conv in 1, 2 and 3 dimensions, every boundary condition, strides 1 and 2."""
    geometry = {1: ((5,), (3,)), 2: ((4, 3), (3, 2)), 3: ((3, 3, 2), (2, 3, 1))}
    out = []
    for ndim, (grid, stencil) in geometry.items():
        for bc in ("zero", "periodic", "reflect", "symmetric", "replicate", "valid"):
            for stride in (1, 2):
                out.append(
                    Family(
                        f"Conv-{ndim}d-{bc}-s{stride}",
                        lambda g=grid, s=stencil, bc=bc, st=stride: structops.Conv(
                            g, s, bc=bc, stride=st, in_channels=1 + (g[0] % 2), out_channels=2
                        ),
                    )
                )
    return out


#: The families the bridge is checked on; append a row to cover a new family.
FAMILIES: list[Family] = [
    Family("Dense", lambda: structops.Dense(3, 4)),
    Family("Diagonal", lambda: structops.Diagonal(4)),
    Family("Antisymmetric", lambda: structops.Antisymmetric(4)),
    Family("MMatrix", lambda: structops.MMatrix(4)),
    *_conv_families(),
    Family("Conv-fft", lambda: structops.Conv((5, 4), 3, method="fft", out_channels=2)),
    Family(
        "Chain-AvgPool-Conv",
        lambda: structops.Chain(structops.AvgPool((4, 4), 2, channels=2), structops.Conv((4, 4), 3, out_channels=2)),
    ),
    Family("SymmetricConv", lambda: structops.SymmetricConv((5, 4), 3, bc="symmetric")),
    Family("MMatrixConv", lambda: structops.MMatrixConv((4, 4), 3, bc="periodic", channels=2)),
    Family("SeparableConv", lambda: structops.SeparableConv((5, 4), (3, 3), out_channels=2)),
    Family(
        "DepthwiseSeparableConv", lambda: structops.DepthwiseSeparableConv((4, 4), 3, in_channels=2, out_channels=3)
    ),
    Family("Wavelet", lambda: structops.Wavelet((8,))),
    Family("Sparse", lambda: structops.Sparse(np.eye(4, 5, dtype=bool) | np.eye(4, 5, k=2, dtype=bool))),
    Family("Banded", lambda: structops.Banded(5, 1, 2)),
    Family(
        "LinearKernel-offset",
        lambda: structops.LinearKernel(np.random.default_rng(5).standard_normal((12, 4)), (3, 4), q=np.arange(12.0)),
    ),
    Family("Softplus-MMatrix", lambda: structops.Softplus(structops.MMatrix(3))),
    Family("Softplus-MMatrixConv", lambda: structops.Softplus(structops.MMatrixConv((4, 3), 3))),
    Family("AntisymmetricConv-zero", lambda: structops.AntisymmetricConv((4, 3), 3, channels=2)),
    Family("AntisymmetricConv-periodic", lambda: structops.AntisymmetricConv((5,), 3, bc="periodic")),
    Family("CayleyConv", lambda: structops.CayleyConv((4, 3), 3, channels=2)),
    Family("CayleyConv-1d", lambda: structops.CayleyConv((6,), 3)),
]


@pytest.fixture(params=FAMILIES, ids=[f.name for f in FAMILIES])
def family(request) -> structops.ParametricKernel:
    return request.param.build()


def _inputs(kernel, transpose: bool, dtype, rng, n: int = 2, grad: bool = True):
    """A feasible ``theta`` and a batch for ``kernel`` as tensors of ``dtype``."""
    x_shape, y_shape = kernel._io_shapes(transpose)
    theta = torch.tensor(kernel.random_theta(rng, dtype), requires_grad=grad)
    x = torch.tensor(rng.standard_normal((n, *x_shape)).astype(dtype), requires_grad=grad)
    w = rng.standard_normal((n, *y_shape)).astype(dtype)
    return theta, x, w


# --------------------------------------------------------------------- gradients
# gradcheck's finite differences on the two-channel 2-D Cayley layer take 10 s: slow; its 1-D sibling
# keeps the family in the quick run
@pytest.mark.parametrize("transpose", [False, True], ids=["K", "KT"])
@pytest.mark.parametrize(
    "family",
    [pytest.param(f, id=f.name, marks=pytest.mark.slow if f.name == "CayleyConv" else ()) for f in FAMILIES],
    indirect=True,
)
def test_gradcheck_in_theta_and_x_for_every_family(family, transpose, rng):
    theta, x, _ = _inputs(family, transpose, np.float64, rng)
    assert torch.autograd.gradcheck(lambda t, z: st.apply(family, t, z, transpose=transpose), (theta, x))


@pytest.mark.parametrize("transpose", [False, True], ids=["K", "KT"])
def test_gradients_are_the_jacobian_transposes_in_the_input_dtype(family, transpose, dtype, rng):
    theta, x, w = _inputs(family, transpose, dtype, rng, n=3)
    y = st.apply(family, theta, x, transpose=transpose)
    assert y.dtype == TORCH_DTYPE[dtype]
    th, X = theta.detach().numpy(), x.detach().numpy()
    rt = default_rtol(dtype, max(family.shape))
    np.testing.assert_allclose(y.detach().numpy(), family.apply(th, X, transpose=transpose), rtol=rt, atol=rt)
    (y * torch.from_numpy(w)).sum().backward()
    assert theta.grad.dtype == x.grad.dtype == TORCH_DTYPE[dtype]
    grad_theta = family.jac(th, X, transpose=transpose).H @ w.ravel()
    grad_x = family.apply(th, w, transpose=not transpose)
    scale = np.linalg.norm(grad_theta) + np.linalg.norm(grad_x)
    assert np.linalg.norm(theta.grad.numpy() - grad_theta) <= rt * scale
    assert np.linalg.norm(x.grad.numpy() - grad_x) <= rt * scale


def test_an_empty_batch_has_zero_gradients(rng):
    k = structops.Conv((4, 4), 3, out_channels=2)
    theta, x, _ = _inputs(k, False, np.float64, rng, n=0)
    y = st.apply(k, theta, x)
    assert tuple(y.shape) == (0, *k.out_shape)
    y.sum().backward()
    assert torch.equal(theta.grad, torch.zeros_like(theta))


def test_the_backward_pass_reuses_the_forward_state_and_neither_densifies_nor_redoes_the_product(monkeypatch, rng):
    k = structops.Conv((6, 6), 3, in_channels=2, out_channels=2)
    calls = {"prepare": 0, "apply": []}
    prepare, apply_ = k._prepare, k._apply

    def counted_prepare(theta):
        calls["prepare"] += 1
        return prepare(theta)

    def counted_apply(state, x, transpose):
        calls["apply"].append(transpose)
        return apply_(state, x, transpose)

    def no_dense(state):
        raise AssertionError("the bridge must not densify K")

    monkeypatch.setattr(k, "_prepare", counted_prepare)
    monkeypatch.setattr(k, "_apply", counted_apply)
    monkeypatch.setattr(k, "_dense", no_dense)
    theta, x, _ = _inputs(k, False, np.float64, rng, n=3)
    st.apply(k, theta, x).square().sum().backward()
    assert calls == {"prepare": 1, "apply": [False, True]}


def test_thenumpy_side_of_a_small_operator_runs_on_one_blas_thread(monkeypatch, rng):
    """Every hook the bridge calls for an operator of side below ``BLAS_SIDE_MIN`` sees one BLAS thread.

    A multi-threaded OpenBLAS product leaves its workers spinning, and torch's next parallel
    operation waits for the core they hold; the pools are put back afterwards.
    """
    from structops import _backend

    before = _backend._blas_counts()
    if not before:
        pytest.skip("no BLAS pool visible to threadpoolctl")
    k = structops.Dense(5, 4)
    seen = []
    for name in ("_prepare", "_apply", "_vjp"):
        hook = getattr(k, name)

        def counted(*args, _hook=hook, **kwargs):
            seen.append(tuple(_backend._blas_counts()))
            return _hook(*args, **kwargs)

        monkeypatch.setattr(k, name, counted)
    theta, x, _ = _inputs(k, False, np.float64, rng, n=3)
    with structops.set_num_threads(2, blas_threads=2):
        st.apply(k, theta, x).square().sum().backward()
        after = _backend._blas_counts()
    assert len(seen) >= 4 and set(seen) == {tuple(1 for _ in before)}  # prepare, forward, both gradients
    assert after == [2] * len(before)  # put back


@pytest.mark.parametrize("transpose", [False, True], ids=["K", "KT"])
def test_a_family_with_transform_hooks_transforms_each_batch_once(transpose, dtype, rng, monkeypatch):
    """CayleyConv through the bridge: x in the forward, w in the backward, nothing twice; gradients exact.

    With theta trainable the forward keeps the transform of x for the gradient in theta and the
    backward transforms w once for both gradients; with theta frozen the plain products run.
    """
    k = structops.CayleyConv((7, 6), 3, channels=2)
    calls = {"transform": 0, "apply": 0}
    transform, apply_ = k._transform, k._apply

    def counted_transform(x, transpose):
        calls["transform"] += 1
        return transform(x, transpose)

    def counted_apply(state, x, transpose):
        calls["apply"] += 1
        return apply_(state, x, transpose)

    monkeypatch.setattr(k, "_transform", counted_transform)
    monkeypatch.setattr(k, "_apply", counted_apply)
    theta, x, w = _inputs(k, transpose, dtype, rng, n=3)
    y = st.apply(k, theta, x, transpose=transpose, backend="numpy")
    (y * torch.from_numpy(w)).sum().backward()
    assert calls == {"transform": 2, "apply": 0}
    th, X = theta.detach().numpy(), x.detach().numpy()
    rt = default_rtol(dtype, k.shape[0])
    grad_theta = k.jac(th, X, transpose=transpose).H @ w.ravel()
    grad_x = k.apply(th, w, transpose=not transpose)
    assert np.linalg.norm(y.detach().numpy() - k.apply(th, X, transpose=transpose)) <= rt * np.linalg.norm(X)
    assert np.linalg.norm(theta.grad.numpy() - grad_theta) <= rt * (np.linalg.norm(grad_theta) + np.linalg.norm(w))
    assert np.linalg.norm(x.grad.numpy() - grad_x) <= rt * np.linalg.norm(w)
    calls.update(transform=0, apply=0)
    x.grad = None
    y = st.apply(k, theta.detach(), x, transpose=transpose, backend="numpy")
    (y * torch.from_numpy(w)).sum().backward()
    assert calls == {"transform": 0, "apply": 2}
    assert np.linalg.norm(x.grad.numpy() - grad_x) <= rt * np.linalg.norm(w)


def test_kept_transforms_survive_other_graphs_and_reused_memory(rng):
    """Two graphs alive at once, a third dropped (its pooled transforms reused by a fourth): exact gradients.

    The bridge keeps each forward's transform of x in leased memory (``structops._scratch``)
    until its graph lets go of it; memory given back by the dropped graph must not be that of a
    graph still alive.
    """
    k = structops.CayleyConv((8, 6), 3, channels=2)
    theta = torch.tensor(k.random_theta(rng), requires_grad=True)
    xs = [torch.from_numpy(rng.standard_normal((3, k.shape[1]))) for _ in range(4)]
    ws = [rng.standard_normal((3, k.shape[0])) for _ in range(2)]
    y1, y2 = (st.apply(k, theta, x, backend="numpy") for x in xs[:2])
    y3 = st.apply(k, theta, xs[2], backend="numpy")
    del y3  # its graph and its leases go
    y4 = st.apply(k, theta, xs[3], backend="numpy")  # may reuse them
    th = theta.detach().numpy()
    rt = default_rtol(np.float64, k.shape[0])
    for y, x, w in ((y2, xs[1], ws[1]), (y1, xs[0], ws[0])):
        theta.grad = None
        (y * torch.from_numpy(w).reshape(y.shape)).sum().backward()
        want = k.jac(th, x.numpy()).H @ w.ravel()
        assert np.linalg.norm(theta.grad.numpy() - want) <= rt * (np.linalg.norm(want) + np.linalg.norm(w))
    y4 = y4.detach().numpy().reshape(3, -1)
    assert np.linalg.norm(y4 - k.apply(th, xs[3].numpy()).reshape(3, -1)) <= rt * np.linalg.norm(xs[3].numpy())


# ------------------------------------------------------------ torch's own convolutions
CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


@pytest.mark.parametrize(
    ("grid", "stencil", "stride", "bc", "mode"),
    [
        ((7, 6), (3, 3), 1, "zero", "constant"),
        ((8, 7), (3, 2), 2, "periodic", "circular"),
        ((9,), (5,), 1, "replicate", "replicate"),
        ((5, 4, 4), (3, 3, 3), 1, "valid", None),
    ],
)
def test_conv_through_the_bridge_is_torch_conv_in_value_and_both_gradients(grid, stencil, stride, bc, mode, dtype, rng):
    k = structops.Conv(grid, stencil, bc=bc, stride=stride, in_channels=2, out_channels=3)
    theta, x, w = _inputs(k, False, dtype, rng, n=3)
    weight = torch.tensor(k.theta_to_torch(theta.detach().numpy()), requires_grad=True)
    xt = x.detach().clone().requires_grad_(True)
    widths = [p for s in reversed(stencil) for p in (s - 1 - s // 2, s // 2)]
    padded = xt if mode is None else F.pad(xt, widths, mode=mode)
    reference = CONV[len(grid)](padded, weight, stride=stride)
    ours = st.apply(k, theta, x)
    rt = default_rtol(dtype, max(k.shape))
    torch.testing.assert_close(ours, reference, rtol=rt, atol=rt)
    (ours * torch.from_numpy(w)).sum().backward()
    (reference * torch.from_numpy(w)).sum().backward()
    torch.testing.assert_close(x.grad, xt.grad, rtol=rt, atol=rt)
    # theta is the torch weight flipped on the spatial axes: so is its gradient
    spatial = tuple(range(2, weight.ndim))
    torch.testing.assert_close(theta.grad, weight.grad.flip(spatial).reshape(-1), rtol=rt, atol=rt)


# ------------------------------------------------------------------ bad input
def test_bad_input_names_the_argument_the_value_and_what_was_expected():
    k = structops.Conv((5, 5), 3)
    theta, x = torch.zeros(9), torch.zeros(2, 1, 5, 5)
    with pytest.raises(TypeError, match=r"`x` has dtype torch.float64 but `theta` has dtype torch.float32"):
        st.apply(k, theta, x.double())
    with pytest.raises(ValueError, match=r"`x` must hold examples .* shape \(n, 1, 5, 5\) .* got shape \(2, 1, 5, 4\)"):
        st.apply(k, theta, torch.zeros(2, 1, 5, 4))
    with pytest.raises(ValueError, match=r"`theta` must have shape \(9,\) .* got shape \(8,\)"):
        st.apply(k, torch.zeros(8), x)
    with pytest.raises(ValueError, match=r"`theta` must have shape \(9,\) .* got shape \(3, 3\)"):
        st.apply(k, torch.zeros(3, 3), x)
    with pytest.raises(TypeError, match=r"`theta` must have a floating dtype .* got dtype torch.int32"):
        st.apply(k, theta.int(), x.int())
    with pytest.raises(NotImplementedError, match=r"backend='numpy' runs only on plain CPU float32/float64"):
        st.apply(k, theta.half(), x.half(), backend="numpy")
    with pytest.raises(TypeError, match=r"`x` must be a torch.Tensor, got ndarray"):
        st.apply(k, theta, np.zeros((2, 1, 5, 5), np.float32))
    with pytest.raises(TypeError, match="`kernel` must be a structops kernel family"):
        st.apply("conv", theta, x)
    with pytest.raises(TypeError, match="`transpose` must be True or False"):
        st.apply(k, theta, x, transpose="no")
    with pytest.raises(ValueError, match=r"`theta` must be finite, but theta\[4\] = nan"):
        st.apply(k, torch.where(torch.arange(9) == 4, torch.nan, theta), x)
    with pytest.raises(ValueError, match=r"`theta` must be >= 0 .* theta\[1\] = -1.0"):
        st.apply(structops.MMatrix(2), torch.tensor([1.0, -1.0]), torch.zeros(1, 2))


def test_tensors_off_the_cpu_take_the_torch_form_and_the_bridge_refuses_them():
    k = structops.Diagonal(3)
    assert st.apply(k, torch.ones(3, device="meta"), torch.ones(2, 3, device="meta")).device.type == "meta"
    with pytest.raises(NotImplementedError, match=r"backend='numpy' runs only on plain CPU .* on 'meta'"):
        st.apply(k, torch.ones(3, device="meta"), torch.ones(2, 3, device="meta"), backend="numpy")


# ------------------------------------------------------------------------ Layer
def test_layer_has_one_parameter_theta_and_forward_is_apply(rng):
    k = structops.Conv((6, 6), 3, in_channels=2, out_channels=3)
    layer = st.Layer(k)
    assert [(name, tuple(p.shape)) for name, p in layer.named_parameters()] == [("theta", (k.nparams,))]
    assert layer.theta.dtype == torch.get_default_dtype()
    x = torch.randn(4, *k.in_shape)
    torch.testing.assert_close(layer(x), st.apply(k, layer.theta, x))
    assert "Conv(grid=(6, 6)" in repr(layer) and f"p={k.nparams}" in repr(layer)
    layer.double()
    assert layer(x.double()).dtype == torch.float64
    layer.float()
    with pytest.raises(TypeError, match="dtype"):
        layer(x.double())


def test_layer_copies_a_given_theta_and_validates_it():
    k = structops.Diagonal(3)
    theta = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    layer = st.Layer(k, theta)
    theta.zero_()
    assert layer.theta.dtype == torch.float64 and layer.theta.tolist() == [1.0, 2.0, 3.0]
    assert st.Layer(k, np.arange(3)).theta.dtype == torch.float32
    with pytest.raises(ValueError, match="`theta` must have length nparams = 3, got length 2"):
        st.Layer(k, [1.0, 2.0])


@pytest.mark.parametrize("family", FAMILIES, ids=[f.name for f in FAMILIES])
def test_the_initialisation_is_feasible_and_reproducible(family):
    k = family.build()
    torch.manual_seed(0)
    a = st.Layer(k).theta.detach().numpy()
    torch.manual_seed(0)
    b = st.Layer(k).theta.detach().numpy()
    np.testing.assert_array_equal(a, b)
    assert k.is_feasible(a) and np.isfinite(a).all()


def test_the_initialisation_preserves_the_variance_of_a_convolution():
    k = structops.Conv((16, 16), 3, bc="periodic", in_channels=4, out_channels=4)
    torch.manual_seed(1)
    theta = st.Layer(k).theta.detach().numpy()
    x = np.random.default_rng(2).standard_normal((64, *k.in_shape)).astype(np.float32)
    assert 0.7 < np.sqrt(np.mean(k.apply(theta, x) ** 2)) < 1.4


def test_project_clamps_onto_the_bounds_and_is_a_noop_when_unbounded():
    layer = st.Layer(structops.MMatrixConv((5, 5), 3))
    assert "bounds=[0, inf)" in repr(layer)
    with torch.no_grad():  # as an optimiser step might leave it
        layer.theta.copy_(torch.tensor([0.5, -0.25, 2.0, -1.0, 0.0, 3.0, -0.0, -1e-9]))
    assert layer.project_() is layer
    assert layer.theta.tolist() == [0.5, 0.0, 2.0, 0.0, 0.0, 3.0, 0.0, 0.0]
    free = st.Layer(structops.Diagonal(2), torch.tensor([-3.0, 4.0]))
    assert free.project_().theta.tolist() == [-3.0, 4.0]


def test_adam_with_project_keeps_an_mmatrix_conv_feasible():
    torch.manual_seed(0)
    k = structops.MMatrixConv((6, 6), 3)
    layer = st.Layer(k)
    opt = torch.optim.Adam(layer.parameters(), lr=0.5)
    x = torch.randn(8, *k.in_shape)
    for _ in range(5):
        opt.zero_grad()
        (layer(x) - x).square().sum().backward()  # pulls theta to zero, overshooting below 0
        opt.step()
        layer.project_()
    assert k.is_feasible(layer.theta.detach().numpy())


# ----------------------------------------------------------------- torch.compile
# inductor compiles C++ for the layers around the graph break (slow on a cold cache); the break at
# the structops layer is dynamo's and AOT autograd's, which aot_eager runs in the quick run
@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_torch_compile_gives_the_eager_values_and_gradients(backend):
    torch.manual_seed(0)
    k = structops.Conv((8, 8), 3, in_channels=2, out_channels=2)
    model = torch.nn.Sequential(st.Layer(k), torch.nn.Tanh(), torch.nn.Flatten(), torch.nn.Linear(128, 3))
    x = torch.randn(5, *k.in_shape)

    def loss_and_grads(m):
        m.zero_grad()
        loss = m(x).square().mean()
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in m.parameters()]

    eager_loss, eager_grads = loss_and_grads(model)
    compiled = torch.compile(model, backend=backend)  # a graph break at the layer
    loss, grads = loss_and_grads(compiled)
    torch.testing.assert_close(loss, eager_loss)
    for g, e in zip(grads, eager_grads, strict=True):
        torch.testing.assert_close(g, e)


# ----------------------------------------------------------------- double backward
@pytest.mark.parametrize(
    "build",
    [
        lambda: structops.Conv((5, 4), 3, bc="reflect", stride=(2, 1), in_channels=2, out_channels=2),
        lambda: structops.MMatrix(3),
        lambda: structops.Sparse(np.eye(3, 4, dtype=bool) | np.eye(3, 4, k=1, dtype=bool)),
        lambda: structops.LinearKernel(  # an affine family with a constant part q
            np.random.default_rng(5).standard_normal((12, 4)), (3, 4), q=np.arange(12.0)
        ),
    ],
    ids=["Conv", "MMatrix", "Sparse", "LinearKernel-offset"],
)
@pytest.mark.parametrize("transpose", [False, True], ids=["K", "KT"])
def test_double_backward_is_exact_for_affine_families(build, transpose, rng):
    k = build()
    theta, x, _ = _inputs(k, transpose, np.float64, rng)
    assert torch.autograd.gradgradcheck(lambda t, z: st.apply(k, t, z, transpose=transpose), (theta, x))


class _Squared(structops.kernels.Reparametrized):
    """``K(φ²)``: a non-affine family of the test's own, with no torch form."""

    def _map(self, phi):
        return phi**2

    def _push(self, phi, v):
        return 2 * phi * v

    def _pull(self, phi, u):
        return 2 * phi * u


@pytest.mark.parametrize(
    "build",
    [lambda: structops.Softplus(structops.MMatrix(3)), lambda: structops.CayleyConv((4, 3), 3, channels=2)],
    ids=["Softplus-MMatrix", "CayleyConv"],
)
@pytest.mark.parametrize("transpose", [False, True], ids=["K", "KT"])
def test_double_backward_of_a_nonlinear_family_is_the_torch_forms(build, transpose, rng):
    """The bridge's theta-gradient differentiated again: by finite differences, and equal to the torch form's.

    The loss is a squared distance, so the output gradient depends on theta too (it must not be
    differentiated through); a third order is checked by finite differences of the theta-gradient's own gradients.
    """
    k = build()
    theta, x, _ = _inputs(k, transpose, np.float64, rng)
    assert torch.autograd.gradgradcheck(
        lambda t, z: st.apply(k, t, z, transpose=transpose, backend="numpy"), (theta, x)
    )
    v, r = torch.tensor(rng.standard_normal(k.nparams)), torch.tensor(rng.standard_normal(x.shape))
    hvps = []
    for backend in ("numpy", "torch"):  # a Hessian-vector product of a loss, and its mixed part in x
        t, z = theta.detach().requires_grad_(), x.detach().requires_grad_()
        # (not |Kx|^2: CayleyConv is orthogonal, so that loss does not depend on theta)
        loss = (st.apply(k, t, z, transpose=transpose, backend=backend) - r).square().sum()
        (g,) = torch.autograd.grad(loss, t, create_graph=True)
        hvps.append(torch.autograd.grad((g * v).sum(), (t, z)))
    for got, ref in zip(*hvps, strict=True):
        torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12 * float(ref.abs().max()))

    def theta_gradient(t, z):
        loss = st.apply(k, t, z, transpose=transpose, backend="numpy").square().sum()
        return torch.autograd.grad(loss, t, create_graph=True)[0]

    if isinstance(k, structops.Softplus):  # (cheap: one family is enough for the third order)
        assert torch.autograd.gradgradcheck(theta_gradient, (theta, x))


def test_double_backward_of_a_nonlinear_family_without_a_torch_form_is_a_clear_error_in_theta(rng):
    k = _Squared(structops.MMatrix(3), structops.MMatrix(3).nparams)
    theta, x, _ = _inputs(k, False, np.float64, rng)
    # through the x-gradient (e.g. a gradient penalty), second derivatives are first derivatives of the family
    assert torch.autograd.gradgradcheck(lambda z: st.apply(k, theta.detach(), z), (x,))
    grad_theta = torch.autograd.grad(st.apply(k, theta, x).square().sum(), theta, create_graph=True)[0]
    with pytest.raises(RuntimeError, match=r"double backward through the theta-gradient .* no torch form"):
        grad_theta.sum().backward()
