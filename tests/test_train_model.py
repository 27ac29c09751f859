"""LayerClassifier: objective, gradient (Taylor test, torch autograd), Gauss-Newton operator, validation."""

from typing import NamedTuple

import numpy as np
import pytest

from structops import Antisymmetric, Conv, Dense, Diagonal, MMatrix, Softplus
from structops.testing import adjoint_test, taylor_test
from structops.train import LayerClassifier, Params, locally_connected

from ._helpers import atol_for


class Case(NamedTuple):
    name: str
    make: object  # () -> kernel
    in_shape: tuple


CASES = [
    Case("dense", lambda: Dense(5, 12), (12,)),
    Case("diagonal", lambda: Diagonal(12), (12,)),
    Case("antisymmetric", lambda: Antisymmetric(12), (12,)),
    Case("mmatrix", lambda: MMatrix(12), (12,)),
    Case("softplus-mmatrix", lambda: Softplus(MMatrix(6)), (6,)),
    Case("conv-2ch", lambda: Conv((4, 5), (3, 3), out_channels=3, in_channels=2), (2, 4, 5)),
    Case("conv-periodic-stride", lambda: Conv((6, 6), (3, 3), bc="periodic", out_channels=2, stride=2), (1, 6, 6)),
    Case("linear-local", lambda: locally_connected((1, 4, 4), 3, 2), (16,)),
]


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def _problem(case, dtype, rng, activation="tanh", n=7, nclasses=4, bias="channel"):
    kernel = case.make()
    model = LayerClassifier(kernel, nclasses, activation=activation, bias=bias, reg_theta=0.3, reg_W=0.2)
    X = rng.standard_normal((n, *case.in_shape)).astype(dtype)
    y = rng.integers(0, nclasses, n)
    p = model.init_params(X, rng, dtype)
    # nonzero biases so every term of the gradient is exercised
    p.bias[:] = rng.standard_normal(p.bias.shape).astype(dtype) * dtype(0.1)
    p.c[:] = rng.standard_normal(p.c.shape).astype(dtype) * dtype(0.1)
    return model, X, y, p


def _direction(model, rng, dtype):
    v = rng.standard_normal(model.nparams).astype(dtype)
    if model.kernel.bounds is not None:  # stay feasible along the ray
        v[: model.kernel.nparams] = np.abs(v[: model.kernel.nparams])
    return (v / np.linalg.norm(v)).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_objective_gradient_passes_taylor_test(case, dtype, rng):
    model, X, y, p = _problem(case, dtype, rng)
    x0 = p.ravel()
    g = model.gradient(x0, X, y).ravel().astype(np.float64)
    v = _direction(model, rng, dtype)
    res = taylor_test(
        lambda t: np.array([model.loss(t, X, y)]),
        lambda d: np.array([g @ d.astype(np.float64)]),
        x0,
        v,
        h0=0.5,
        nsteps=10 if dtype == np.float64 else 7,
    )
    assert res.passed and res.regime == "quadratic", str(res)


@pytest.mark.parametrize("activation", ["relu", "identity"])
@pytest.mark.parametrize("bias", ["channel", "scalar"])
def test_taylor_other_activations_and_bias_layouts(activation, bias, rng):
    case = CASES[5]
    model, X, y, p = _problem(case, np.float64, rng, activation=activation, bias=bias)
    assert p.bias.shape == ((3,) if bias == "channel" else (1,))
    x0 = p.ravel()
    g = model.gradient(x0, X, y).ravel()
    res = taylor_test(lambda t: np.array([model.loss(t, X, y)]), lambda d: np.array([g @ d]), x0, h0=1e-2)
    assert res.passed, str(res)


def _torch_reference(model, p, X, y):
    """Loss and gradient of the same objective built with torch from K = mat(Q θ) (column-major)."""
    torch = pytest.importorskip("torch")
    rows, cols = model.kernel.shape
    Q = torch.tensor(model.kernel.Q.toarray())
    th = torch.tensor(p.theta.astype(np.float64), requires_grad=True)
    b = torch.tensor(p.bias.astype(np.float64), requires_grad=True)
    W = torch.tensor(p.W.astype(np.float64), requires_grad=True)
    c = torch.tensor(p.c.astype(np.float64), requires_grad=True)
    K = (Q @ th).reshape(cols, rows).T
    Xt = torch.tensor(X.reshape(X.shape[0], -1).astype(np.float64))
    A = (Xt @ K.T).reshape(X.shape[0], model.nbias, -1) + b[None, :, None]
    Z = {"relu": torch.relu, "tanh": torch.tanh, "identity": lambda a: a}[model.activation](A)
    S = Z.reshape(X.shape[0], -1) @ W + c
    loss = torch.nn.functional.cross_entropy(S, torch.tensor(y)) + 0.5 * model.reg_theta * (th @ th)
    loss = loss + 0.5 * model.reg_W * (W * W).sum()
    loss.backward()
    return float(loss.detach()), Params(th.grad.numpy(), b.grad.numpy(), W.grad.numpy(), c.grad.numpy())


@pytest.mark.parametrize("activation", ["relu", "tanh", "identity"])
@pytest.mark.parametrize("case", [c for c in CASES if c.name != "softplus-mmatrix"], ids=lambda c: c.name)
def test_loss_and_gradient_match_torch_autograd(case, activation, rng):
    model, X, y, p = _problem(case, np.float64, rng, activation=activation)
    loss, grad = model.loss_and_gradient(p, X, y)
    ref_loss, ref = _torch_reference(model, p, X, y)
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    for name in ("theta", "bias", "W", "c"):
        np.testing.assert_allclose(getattr(grad, name), getattr(ref, name), rtol=1e-10, atol=1e-13, err_msg=name)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_dtype_preserved(dtype, rng):
    model, X, y, p = _problem(CASES[5], dtype, rng)
    loss, grad = model.loss_and_gradient(p, X, y)
    assert np.asarray(loss).dtype == dtype
    assert all(a.dtype == dtype for a in (grad.theta, grad.bias, grad.W, grad.c))
    assert model.forward(p, X).dtype == dtype
    assert model.gauss_newton(p, X, y, 1e-3).matvec(np.ones(model.nparams, dtype)).dtype == dtype


def test_multichannel_features_are_flattened_channels_first(rng):
    model, X, _y, p = _problem(CASES[5], np.float64, rng, activation="identity")
    Z = model.features(p, X)
    ref = model.kernel.apply(p.theta, X) + p.bias[None, :, None, None]
    np.testing.assert_allclose(Z, ref.reshape(X.shape[0], -1), rtol=0, atol=atol_for(ref.reshape(X.shape[0], -1)))


def test_gauss_newton_matches_dense_jacobian_from_finite_differences(rng):
    """G v = J_S^T H J_S v + R v + λ v with J_S from central differences and H built entry by entry."""
    case = Case("conv-small", lambda: Conv((3, 4), (3, 3), out_channels=2), (1, 3, 4))
    model, X, y, p = _problem(case, np.float64, rng, n=4, nclasses=3)
    x0 = p.ravel()
    lam = 0.05
    G = model.gauss_newton(x0, X, y, damping=lam)
    N = model.nparams
    eps = 1e-6
    JS = np.empty((X.shape[0] * 3, N))
    for k in range(N):
        e = np.zeros(N)
        e[k] = eps
        JS[:, k] = ((model.forward(x0 + e, X) - model.forward(x0 - e, X)) / (2 * eps)).ravel()
    S = model.forward(x0, X)
    P = np.exp(S - S.max(1, keepdims=True))
    P /= P.sum(1, keepdims=True)
    H = np.zeros((JS.shape[0], JS.shape[0]))
    for i in range(X.shape[0]):
        blk = slice(3 * i, 3 * i + 3)
        H[blk, blk] = (np.diag(P[i]) - np.outer(P[i], P[i])) / X.shape[0]
    R = np.zeros(N)
    R[: model.kernel.nparams] = model.reg_theta
    sl = slice(sum(model.sizes[:2]), sum(model.sizes[:3]))
    R[sl] = model.reg_W
    Gref = JS.T @ H @ JS + np.diag(R + lam)
    Gdense = np.stack([G.matvec(col) for col in np.eye(N)], axis=1)
    np.testing.assert_allclose(Gdense, Gref, atol=1e-7 * np.abs(Gref).max())
    adjoint_test(G, rng=rng)
    assert np.linalg.eigvalsh((Gdense + Gdense.T) / 2).min() >= lam * (1 - 1e-8)


def test_init_scales_preactivations_to_unit_rms(rng):
    X = rng.uniform(0, 1, (50, 16))
    for kernel in (Dense(16, 16), MMatrix(16), Diagonal(16)):
        model = LayerClassifier(kernel, 3)
        p = model.init_params(X, rng)
        rms = np.sqrt(np.mean(kernel.apply(p.theta, X) ** 2))
        assert rms == pytest.approx(1.0, rel=1e-10)
        if kernel.bounds is not None:
            assert p.theta.min() >= 0


def test_pack_unpack_roundtrip(rng):
    model, _X, _y, p = _problem(CASES[0], np.float64, rng)
    q = model.unpack(p.ravel())
    for name in ("theta", "bias", "W", "c"):
        np.testing.assert_array_equal(getattr(q, name), getattr(p, name))


def test_validation_errors_name_the_argument(rng):
    kernel = Diagonal(4)
    with pytest.raises(ValueError, match="activation"):
        LayerClassifier(kernel, 3, activation="sigmoid")
    with pytest.raises(ValueError, match="bias"):
        LayerClassifier(kernel, 3, bias="pixel")
    with pytest.raises(ValueError, match="nclasses"):
        LayerClassifier(kernel, 1)
    with pytest.raises(ValueError, match="reg_W"):
        LayerClassifier(kernel, 3, reg_W=-1.0)
    with pytest.raises(TypeError, match="kernel"):
        LayerClassifier(np.eye(4), 3)
    model = LayerClassifier(kernel, 3)
    p = model.init_params(np.ones((2, 4)), rng)
    with pytest.raises(ValueError, match="`y`"):
        model.loss(p, np.ones((2, 4)), np.array([0, 3]))
    with pytest.raises(ValueError, match="`X`"):
        model.loss(p, np.ones((2, 5)), np.array([0, 1]))
    with pytest.raises(TypeError, match="`X`"):
        model.loss(p, np.ones((2, 4), np.float32), np.array([0, 1]))
    with pytest.raises(ValueError, match="`vec`"):
        model.unpack(np.ones(3))


class _DtypeSpy:
    """Wraps a kernel's ``apply`` and ``jac`` to record the dtypes they are called with."""

    def __init__(self, kernel):
        self.seen: list[np.dtype] = []
        apply, jac = kernel.apply, kernel.jac

        def spy_apply(theta, X, *a, **k):
            self.seen += [np.asarray(theta).dtype, np.asarray(X).dtype]
            return apply(theta, X, *a, **k)

        def spy_jac(theta, X, *a, **k):
            self.seen += [np.asarray(theta).dtype, np.asarray(X).dtype]
            return jac(theta, X, *a, **k)

        kernel.apply, kernel.jac = spy_apply, spy_jac


@pytest.mark.parametrize("activation", ["relu", "tanh", "identity"])
def test_float32_objective_runs_in_float32_throughout(activation, rng):
    """No float64 round trip: the kernel sees float32, the packed gradient and evaluation are float32."""
    model, X, y, p = _problem(CASES[5], np.float32, rng, activation=activation)
    spy = _DtypeSpy(model.kernel)
    x = p.ravel()
    loss, g = model.loss_and_gradient_vector(x, X, y)
    assert g.dtype == np.float32 and g.shape == (model.nparams,)
    assert np.asarray(loss).dtype == np.float32
    assert spy.seen and all(dt == np.float32 for dt in spy.seen)
    # the packed vector is exactly what loss_and_gradient returns as Params
    np.testing.assert_array_equal(g, model.gradient(x, X, y).ravel())


def test_objective_leaves_its_inputs_untouched(rng):
    """The in-place forward/backward never writes into the caller's parameters or examples."""
    for case in (CASES[1], CASES[5]):
        model, X, y, p = _problem(case, np.float64, rng, activation="relu")
        x = p.ravel()
        x0, X0 = x.copy(), X.copy()
        model.loss_and_gradient_vector(x, X, y)
        model.evaluate(x, X, y)
        model.gauss_newton(x, X, y, 1e-2).matvec(np.ones(model.nparams))
        np.testing.assert_array_equal(x, x0)
        np.testing.assert_array_equal(X, X0)


@pytest.mark.parametrize("chunk", [1, 3, 1024])
def test_evaluate_is_loss_and_accuracy_in_one_pass(chunk, rng):
    model, X, y, p = _problem(CASES[5], np.float64, rng, activation="relu", n=7)
    loss, acc = model.evaluate(p, X, y, chunk=chunk)
    assert loss == pytest.approx(float(model.loss(p, X, y)), rel=1e-12)
    assert acc == model.accuracy(p, X, y)


def test_relu_gradient_of_pooled_conv_matches_central_differences(rng):
    """The fused ReLU derivative (read off Z) through Chain(AvgPool, Conv): every entry against finite differences."""
    from structops import AvgPool
    from structops.kernels.compose import Chain

    kernel = Chain(AvgPool((4, 4), 2, channels=2), Conv((4, 4), 3, out_channels=2))
    model = LayerClassifier(kernel, 3, activation="relu", reg_theta=0.1, reg_W=0.2)
    X = rng.standard_normal((5, 1, 4, 4))
    y = rng.integers(0, 3, 5)
    x0 = model.init_params(X, rng).ravel()
    g = model.loss_and_gradient_vector(x0, X, y)[1]
    h = 1e-6
    fd = np.empty_like(x0)
    for k in range(x0.size):
        e = np.zeros_like(x0)
        e[k] = h
        fd[k] = (model.loss(x0 + e, X, y) - model.loss(x0 - e, X, y)) / (2 * h)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8)


def test_as_params_checks_shapes_and_dtypes(rng):
    model, _X, _y, p = _problem(CASES[0], np.float64, rng)
    assert model.as_params(p) is p
    q = model.as_params(p.ravel())
    np.testing.assert_array_equal(q.W, p.W)
    with pytest.raises(ValueError, match=r"params\.bias"):
        model.as_params(Params(p.theta, p.bias[:-1] if p.bias.size > 1 else np.zeros(2), p.W, p.c))
    with pytest.raises(TypeError, match="float32 or float64"):
        model.as_params(Params(p.theta.astype(np.float16), p.bias, p.W, p.c))
