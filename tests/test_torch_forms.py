"""structops.torch on torch's own operations: the torch forms against the families' numpy products.

The references are independent of the torch forms: the numpy bridge over the families' own
hooks, the numpy Jacobians (``jac``) and dense matrices (``matrix``), torch's finite
differences (``gradcheck``/``gradgradcheck``), a loop over examples, and ``torch.nn.Conv2d``.
The table of families is the bridge's (tests/test_torch_bridge.py); the default run covers
one geometry per family class, the whole table runs with ``-m slow``.
"""

from __future__ import annotations

import numpy as np
import pytest

import structops

torch = pytest.importorskip("torch")
st = pytest.importorskip("structops.torch")

from structops._backend import have_numba  # noqa: E402

from .test_torch_bridge import FAMILIES, Family  # noqa: E402

HAVE_NUMBA = have_numba()

#: Relative agreement of the two backends (the issue's figures): float64 and float32.
AGREE = {torch.float64: 1e-12, torch.float32: 1e-5}
#: The convolution geometries the default run keeps (the rest of the Conv table is slow).
QUICK_CONV = {"Conv-1d-reflect-s2", "Conv-2d-symmetric-s2", "Conv-2d-periodic-s1", "Conv-3d-replicate-s1"}


def _quick(f: Family) -> bool:
    return not f.name.startswith("Conv-") or f.name in QUICK_CONV or f.name == "Conv-fft"


#: The families the torch.func and second-derivative tests run on by default (every one with -m slow).
SAMPLE = {"Conv-2d-symmetric-s2", "CayleyConv", "Wavelet", "Sparse", "Softplus-MMatrixConv", "Chain-AvgPool-Conv"}
TABLE = [pytest.param(f, id=f.name, marks=() if _quick(f) else pytest.mark.slow) for f in FAMILIES]
SAMPLED = [pytest.param(f, id=f.name, marks=() if f.name in SAMPLE else pytest.mark.slow) for f in FAMILIES]
QUICK = [pytest.param(f, id=f.name, marks=() if f.name in SAMPLE else pytest.mark.slow) for f in FAMILIES if _quick(f)]


def _data(kernel, transpose, dtype, seed=0, n=3):
    rng = np.random.default_rng(seed)
    x_shape, y_shape = (kernel.out_shape, kernel.in_shape) if transpose else (kernel.in_shape, kernel.out_shape)
    theta = torch.tensor(kernel.random_theta(rng), dtype=dtype)
    x = torch.tensor(rng.standard_normal((n, *x_shape)), dtype=dtype)
    w = torch.tensor(rng.standard_normal((n, *y_shape)), dtype=dtype)
    return theta, x, w


def _value_and_grads(kernel, theta, x, w, transpose, backend):
    theta, x = theta.clone().requires_grad_(), x.clone().requires_grad_()
    y = st.apply(kernel, theta, x, transpose=transpose, backend=backend)
    gt, gx = torch.autograd.grad((y * w).sum(), (theta, x))
    return y.detach(), gt, gx


def _dense_jacobian(kernel, theta, x, transpose=False):
    """The family's Jacobian ``J(θ, x)`` as a dense ``(n·rows, p)`` array, from its numpy ``jac``."""
    J = kernel.jac(np.asarray(theta), np.asarray(x), transpose=transpose) @ np.eye(kernel.nparams)
    return np.asarray(J).reshape(-1, kernel.nparams)


def _relative(a, b):
    scale = b.abs().max().clamp_min(torch.finfo(b.dtype).tiny)
    return float((a - b).abs().max() / scale) if b.numel() else 0.0


# ---------------------------------------------------------------- agreement
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("transpose", [False, True], ids=["K", "KT"])
@pytest.mark.parametrize("family", TABLE)
def test_both_backends_agree_in_value_and_both_gradients(family, transpose, dtype):
    k = family.build()
    theta, x, w = _data(k, transpose, dtype)
    ref = _value_and_grads(k, theta, x, w, transpose, "numpy")
    out = _value_and_grads(k, theta, x, w, transpose, "torch")
    for name, a, b in zip(("value", "theta-grad", "x-grad"), out, ref, strict=True):
        assert a.dtype == dtype and a.shape == b.shape, name
        assert _relative(a, b) <= AGREE[dtype], (name, _relative(a, b))


@pytest.mark.parametrize("transpose", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["K", "KT"])
@pytest.mark.parametrize("family", SAMPLED)
def test_gradcheck_and_gradgradcheck_on_the_torch_form(family, transpose):
    k = family.build()
    theta, x, _ = _data(k, transpose, torch.float64, n=1)
    theta.requires_grad_(), x.requires_grad_()

    def f(t, z):
        return st.apply(k, t, z, transpose=transpose, backend="torch")

    # fast mode: the Jacobians against finite differences along random directions (torch's default check
    # of every entry costs minutes for the larger families of the table)
    assert torch.autograd.gradcheck(f, (theta, x), fast_mode=True)
    assert torch.autograd.gradgradcheck(f, (theta, x), fast_mode=True)  # exact second derivatives, non-affine too


@pytest.mark.parametrize(
    ("grid", "channels"),
    [((6, 5), 2), pytest.param((9, 4, 3), 2, marks=pytest.mark.slow), pytest.param((7, 4), 3, marks=pytest.mark.slow)],
    ids=["6x5", "9x4x3", "7x4"],
)
def test_cayley_torch_form_is_the_dense_matrix_on_every_grid(grid, channels, close):
    """The Cayley form (rfftn, per-frequency real blocks, irfftn; even and odd axes) against a dense K."""
    k = structops.CayleyConv(grid, 3, channels=channels)
    theta, x, _ = _data(k, False, torch.float64)
    K = k.matrix(theta.numpy())
    flat = x.reshape(x.shape[0], -1).numpy()
    for transpose, ref in ((False, flat @ K.T), (True, flat @ K)):
        y = st.apply(k, theta, x, transpose=transpose, backend="torch")
        close(y.reshape(x.shape[0], -1).numpy(), ref, np.float64, size=K.shape[0])
    assert st.apply(k, theta, x[:0], backend="torch").shape == (0, *k.out_shape)  # an empty batch


def _spy(monkeypatch, module, names, ran):
    """Record in ``ran`` the name of every call of ``module``'s functions ``names`` (still running them)."""
    for name in names:
        original = getattr(module, name)

        def spy(*args, _name=name, _original=original, **kwargs):
            ran.add(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(module, name, spy)


#: The eager CPU path of the Cayley form: torch's operations by chunks, or the numba kernels.
EAGER_PATHS = [
    pytest.param("chunks", id="chunks"),
    pytest.param("kernels", id="numba-kernels", marks=pytest.mark.skipif(not HAVE_NUMBA, reason="needs numba")),
]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("path", EAGER_PATHS)
@pytest.mark.parametrize("transpose", [False, True], ids=["K", "KT"])
def test_cayley_eager_paths_are_the_dense_product_and_jacobian(path, transpose, dtype, monkeypatch, close):
    """Both eager CPU paths give K x, K^T w and J^T w of the dense K, on a grid of odd width.

    The chunks (3 examples each, a partial last one) run with ``set_accelerator("numpy")``; with
    numba, the kernels of the numpy bridge (11 examples: a full block of 8 and a partial one), the
    float32 blocks from their own inverse. A ``no_grad`` call (its rows dropped at once) gives the same
    K x. The reference is float64 from the same (rounded) theta.
    """
    from structops.torch import _forms, _fused

    k = structops.CayleyConv((6, 5), 3, channels=2)
    monkeypatch.setattr(_forms, "CAYLEY_CHUNK_BYTES", 3 * 8 * 2 * 6 * 3)  # 3 examples of the half spectrum a thread
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    ran: set[str] = set()
    _spy(monkeypatch, _forms, ["_chunked_product", "_chunked_backward"], ran)
    _spy(monkeypatch, _fused, ["forward", "backward", "cayley_factors"], ran)
    theta, x, w = _data(k, transpose, dtype, n=11)
    with structops.set_accelerator("numba" if path == "kernels" else "numpy"):
        y, gt, gx = _value_and_grads(k, theta, x, w, transpose, "torch")
        with torch.no_grad():  # no backward to follow: the leased rows go back at once
            y_inference = st.apply(k, theta, x, transpose=transpose, backend="torch")
    expected = {"forward", "backward"} | ({"cayley_factors"} if dtype == torch.float32 else set())
    assert ran == (expected if path == "kernels" else {"_chunked_product", "_chunked_backward"})
    theta, x, w, dtype = theta.double(), x.double(), w.double(), np.dtype(str(dtype).removeprefix("torch."))
    K, n = k.matrix(theta.numpy()), x.shape[0]
    K = K.T if transpose else K
    flat, wf = x.reshape(n, -1).numpy(), w.reshape(n, -1).numpy()
    for value in (y, y_inference):
        close(value.reshape(n, -1).numpy(), flat @ K.T, dtype, size=K.shape[0])
    close(gx.reshape(n, -1).numpy(), wf @ K, dtype, size=K.shape[0])
    J = _dense_jacobian(k, theta.numpy(), x.numpy(), transpose)
    close(gt.numpy(), J.T @ wf.reshape(-1), dtype, size=J.shape[0])


@pytest.mark.skipif(not HAVE_NUMBA, reason="needs numba")
def test_cayley_backward_without_the_kernels_after_a_forward_with_them(close):
    """A forward on the numba kernels, its backward on torch's operations (numba switched off in between)."""
    k = structops.CayleyConv((6, 5), 3, channels=2)
    theta, x, w = _data(k, False, torch.float64, n=4)
    theta.requires_grad_()
    y = st.apply(k, theta, x, backend="torch")
    with structops.set_accelerator("numpy"):
        (gt,) = torch.autograd.grad((y * w).sum(), theta)
    J = _dense_jacobian(k, theta.detach().numpy(), x.numpy())
    close(gt.numpy(), J.T @ w.numpy().reshape(-1), np.float64, size=J.shape[0])


@pytest.mark.parametrize("family", TABLE)
def test_every_family_runs_on_the_meta_device(family):
    """Nothing on the torch path reads host memory: meta tensors have none."""
    k = family.build()
    for transpose in (False, True):
        theta, x, _ = _data(k, transpose, torch.float32)
        y = st.apply(k, theta.to("meta"), x.to("meta"), transpose=transpose)
        assert y.device.type == "meta"
        assert tuple(y.shape) == (3, *(k.in_shape if transpose else k.out_shape))


# ----------------------------------------------------------------- torch.func
@pytest.mark.parametrize("family", QUICK)
def test_vmap_over_examples_and_over_a_batch_of_theta(family):
    k = family.build()
    theta, x, _ = _data(k, False, torch.float64)
    ref = st.apply(k, theta, x, backend="numpy")
    per_example = torch.func.vmap(lambda xi: st.apply(k, theta, xi[None])[0])(x)
    torch.testing.assert_close(per_example, ref, rtol=1e-12, atol=1e-12)
    thetas = torch.stack([theta, torch.tensor(k.random_theta(7))])
    ensemble = torch.func.vmap(lambda t: st.apply(k, t, x))(thetas)
    for t, y in zip(thetas, ensemble, strict=True):
        torch.testing.assert_close(y, st.apply(k, t, x, backend="numpy"), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("family", QUICK)
def test_jacrev_in_theta_is_the_family_jacobian_and_in_x_its_matrix(family):
    k = family.build()
    theta, x, _ = _data(k, False, torch.float64, n=2)
    J = torch.func.jacrev(lambda t: st.apply(k, t, x))(theta).reshape(-1, k.nparams)
    J_ref = _dense_jacobian(k, theta.numpy(), x.numpy())
    np.testing.assert_allclose(J.numpy(), J_ref, rtol=1e-12, atol=1e-12 * np.abs(J_ref).max())
    Jx = torch.func.jacrev(lambda z: st.apply(k, theta, z[None])[0])(x[0]).reshape(k.shape)
    np.testing.assert_allclose(Jx.numpy(), k.matrix(theta.numpy()), rtol=1e-12, atol=1e-12)
    g = torch.func.grad(lambda t: st.apply(k, t, x).square().sum())(theta)
    y = k.apply(theta.numpy(), x.numpy()).reshape(-1)
    # (atol: CayleyConv is orthogonal, so this gradient is round-off of the size of |J| |y|)
    np.testing.assert_allclose(
        g.numpy(), 2 * J_ref.T @ y, rtol=1e-12, atol=1e-12 * np.abs(J_ref).max() * np.abs(y).sum()
    )


@pytest.mark.parametrize(
    "family",
    [pytest.param(f, id=f.name) for f in FAMILIES if f.name in {"Conv-2d-symmetric-s2", "CayleyConv", "Wavelet"}],
)
def test_per_example_gradients_with_vmap_grad_equal_a_loop(family):
    k = family.build()
    theta, x, w = _data(k, False, torch.float64, n=4)

    def loss(t, xi, wi):
        return (st.apply(k, t, xi[None])[0] * wi).sum()

    batched = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0, 0))(theta, x, w)
    loop = torch.stack([torch.func.grad(loss)(theta, xi, wi) for xi, wi in zip(x, w, strict=True)])
    torch.testing.assert_close(batched, loop, rtol=1e-12, atol=1e-12)
    # and both are the family's own per-example gradients J(θ, x_i)^T w_i
    ref = k.jac(theta.numpy(), x.numpy()).per_example(w.numpy().reshape(-1))
    np.testing.assert_allclose(batched.numpy(), ref, rtol=1e-10, atol=1e-12)


def test_functional_call_swaps_the_parameters_of_a_network():
    k = structops.Conv((6, 6), 3, in_channels=2, out_channels=2)
    net = torch.nn.Sequential(
        st.Layer(k, bias=True),
        torch.nn.Tanh(),
        st.Layer(structops.SymmetricConv((6, 6), 3, in_channels=2, out_channels=1)),
    )
    x = torch.randn(3, *k.in_shape)
    params = {name: torch.randn_like(p) for name, p in net.named_parameters()}
    y = torch.func.functional_call(net, params, (x,))
    first = st.apply(k, params["0.theta"], x) + params["0.bias"].reshape(2, 1, 1)
    torch.testing.assert_close(y, st.apply(net[2].kernel, params["2.theta"], torch.tanh(first)))


# ------------------------------------------------------------ export, compile
def _network() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        st.Layer(structops.Conv((8, 8), 3, bc="reflect", in_channels=2, out_channels=3), bias=True),
        torch.nn.ReLU(),
        st.Layer(
            structops.Chain(
                structops.AvgPool((8, 8), 2, channels=3), structops.MMatrixConv((8, 8), 3, bc="periodic", channels=3)
            )
        ),
        torch.nn.Flatten(),
        torch.nn.Linear(48, 2),
    )


def test_export_of_a_small_network_gives_the_same_outputs():
    net = _network()
    x = torch.randn(4, 2, 8, 8)
    program = torch.export.export(net, (x,))
    x2 = torch.randn(4, 2, 8, 8)
    torch.testing.assert_close(program.module()(x2), net(x2))


def test_compile_fullgraph_of_a_training_step_has_no_graph_break():
    torch.manual_seed(0)
    k = structops.Conv((6, 6), 3, bc="symmetric", in_channels=2, out_channels=2)
    net = torch.nn.Sequential(st.Layer(k, bias=True), torch.nn.Tanh(), torch.nn.Flatten(), torch.nn.Linear(72, 2))
    x, target = torch.randn(4, 2, 6, 6), torch.randn(4, 2)

    def forward_loss(inputs):
        return torch.nn.functional.mse_loss(net(inputs), target)

    explanation = torch._dynamo.explain(forward_loss)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    compiled = torch.compile(forward_loss, fullgraph=True, backend="eager")  # dynamo only: the default run stays quick
    loss, eager = compiled(x), forward_loss(x)
    torch.testing.assert_close(loss, eager)
    grads = torch.autograd.grad(loss, list(net.parameters()))
    for g, e in zip(grads, torch.autograd.grad(eager, list(net.parameters())), strict=True):
        torch.testing.assert_close(g, e)


def _sgd_step(net, params, x, target, lr=0.1):
    """One functional SGD step: the loss and the updated parameters (torch.func.grad_and_value)."""

    def loss_fn(p):
        return torch.nn.functional.mse_loss(torch.func.functional_call(net, p, (x,)), target)

    grads, loss = torch.func.grad_and_value(loss_fn)(params)
    return loss, {name: value - lr * grads[name] for name, value in params.items()}


@pytest.mark.slow
def test_compile_fullgraph_with_inductor_trains_like_eager():
    """A whole training step (forward, gradients, update) in one inductor graph, three steps like eager."""
    net = _network()
    x, target = torch.randn(4, 2, 8, 8), torch.randn(4, 2)
    params = {name: p.detach().clone() for name, p in net.named_parameters()}
    eager = dict(params)
    step = torch.compile(_sgd_step, fullgraph=True)
    for _ in range(3):
        loss, params = step(net, params, x, target)
        loss_eager, eager = _sgd_step(net, eager, x, target)
        torch.testing.assert_close(loss, loss_eager, rtol=1e-5, atol=1e-6)
    for name in params:
        torch.testing.assert_close(params[name], eager[name], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_a_cayley_network_exports_and_compiles_fullgraph_like_eager(backend):
    """The Cayley form's autograd Functions (complex blocks, chunk-free traced path) under export and compile."""
    torch.manual_seed(0)
    k = structops.CayleyConv((6, 5), 3, channels=2)
    net = torch.nn.Sequential(st.Layer(k), torch.nn.Tanh(), st.Layer(k), torch.nn.Flatten(), torch.nn.Linear(60, 2))
    x, target = torch.randn(4, 2, 6, 5), torch.randn(4, 2)

    def forward_loss(inputs):
        return torch.nn.functional.mse_loss(net(inputs), target)

    explanation = torch._dynamo.explain(forward_loss)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    x2 = torch.randn(4, 2, 6, 5)
    torch.testing.assert_close(torch.export.export(net, (x,)).module()(x2), net(x2))
    loss, eager = torch.compile(forward_loss, fullgraph=True, backend=backend)(x), forward_loss(x)
    torch.testing.assert_close(loss, eager)
    params = list(net.parameters())
    for g, e in zip(torch.autograd.grad(loss, params), torch.autograd.grad(eager, params), strict=True):
        torch.testing.assert_close(g, e)


# ----------------------------------------------------------- dtypes, backends
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_on_the_cpu_follows_torch_conv(dtype):
    k = structops.Conv((8, 8), 3, bc="periodic", in_channels=2, out_channels=3)
    theta, x, _ = _data(k, False, torch.float32)
    y = st.apply(k, theta.to(dtype), x.to(dtype))
    assert y.dtype == dtype
    ref = st.apply(k, theta.to(dtype).float(), x.to(dtype).float(), backend="numpy")
    eps = torch.finfo(dtype).eps
    assert _relative(y.float(), ref) <= 8 * eps * k.nparams**0.5


def test_auto_takes_the_bridge_for_plain_cpu_calls_and_the_torch_form_elsewhere(monkeypatch):
    from structops.torch import _dispatch

    k = structops.Conv((6, 6), 3)
    theta, x, _ = _data(k, False, torch.float32)
    assert _dispatch.choose_backend(k, theta, x, "auto") == "numpy"
    assert _dispatch.choose_backend(k, theta.to("meta"), x.to("meta"), "auto") == "torch"
    assert _dispatch.choose_backend(k, theta.half(), x.half(), "auto") == "torch"
    seen = []
    torch.func.vmap(lambda xi: seen.append(_dispatch.choose_backend(k, theta, xi[None], "auto")) or xi)(x)
    assert seen == ["torch"]
    with pytest.raises(ValueError, match=r"`backend` must be one of \('auto', 'torch', 'numpy'\), got 'jax'"):
        st.apply(k, theta, x, backend="jax")
    with pytest.raises(NotImplementedError, match=r"backend='numpy' runs only on plain CPU"):
        st.apply(k, theta.to("meta"), x.to("meta"), backend="numpy")


class _Scale(structops.ParametricKernel):
    """A user family ``K(θ) = θ₀ I`` written against the hooks only (no torch form)."""

    def __init__(self, n):
        super().__init__(1, (n,), (n,))

    def _apply(self, state, x, transpose):
        return x * state[0]

    def _vjp(self, state, data, w, transpose, per_example):
        g = np.einsum("ij,ij->i", w, data)
        return g[:, None] if per_example else np.array([g.sum()])


class _TorchScale(_Scale):
    """The same family with the documented hook: its own torch form."""

    def torch_apply(self, theta, x, transpose):
        return x * theta[0]


def test_a_user_family_gives_its_torch_form_by_the_hook_and_without_one_stays_on_the_bridge():
    theta, x = torch.tensor([2.0]), torch.randn(3, 4)
    plain, hooked = _Scale(4), _TorchScale(4)
    assert not st.has_torch_form(plain) and st.has_torch_form(hooked)
    torch.testing.assert_close(st.apply(plain, theta, x), 2 * x)  # the bridge, on the CPU
    y = torch.func.vmap(lambda xi: st.apply(hooked, theta, xi[None])[0])(x)
    torch.testing.assert_close(y, 2 * x)
    assert st.apply(hooked, theta.to("meta"), x.to("meta")).device.type == "meta"
    with pytest.raises(NotImplementedError, match=r"has no torch form.*torch_apply"):
        st.apply(plain, theta.to("meta"), x.to("meta"))
    with pytest.raises(NotImplementedError, match=r"backend='torch' needs a torch form"):
        st.apply(plain, theta, x, backend="torch")


def test_nan_in_x_propagates_on_both_backends():
    k = structops.Conv((5, 5), 3)
    theta, x = torch.ones(9), torch.zeros(2, 1, 5, 5)
    x[0, 0, 2, 2] = torch.nan
    for backend in ("numpy", "torch"):
        y = st.apply(k, theta, x, backend=backend)
        assert torch.isnan(y[0, 0, 1:4, 1:4]).all() and torch.isfinite(y[1]).all()


# ------------------------------------------------------------------- Layer
def test_layer_with_bias_is_nn_conv2d_with_its_weights():
    torch.manual_seed(1)
    conv = torch.nn.Conv2d(3, 4, 3, padding=1)
    k = structops.Conv((7, 7), 3, in_channels=3, out_channels=4)
    for backend in ("numpy", "torch"):
        layer = st.Layer(k, k.theta_from_torch(conv), backend=backend, bias=True)
        with torch.no_grad():
            layer.bias.copy_(conv.bias)
        x = torch.randn(2, 3, 7, 7)
        torch.testing.assert_close(layer(x), conv(x), rtol=1e-5, atol=1e-5)
    dense = st.Layer(structops.Dense(3, 5), bias=True)
    assert dense.bias.shape == (3,) and "bias=True" in repr(dense)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.trace is deprecated, still used
def test_torch_jit_trace_of_a_cayley_layer_passes_its_check_and_runs_like_eager():
    """The trace records the Cayley Functions; its check traces twice and compares the graphs."""
    layer = st.Layer(structops.CayleyConv((6, 5), 3, channels=2), backend="torch")
    traced = torch.jit.trace(layer, torch.randn(3, 2, 6, 5))  # check_trace=True: raises on a graph difference
    x = torch.randn(4, 2, 6, 5)
    torch.testing.assert_close(traced(x), layer(x))


def test_torch_jit_script_of_a_layer_names_torch_compile_and_torch_export():
    with pytest.raises(RuntimeError, match=r"torch.jit.script.*torch.compile.*torch.export.export"):
        torch.jit.script(st.Layer(structops.Conv((4, 4), 3)))
