"""Optimisers: loss decreases, accuracy far above chance, bounds respected, reproducibility, divergence."""

import itertools

import numpy as np
import pytest

from structops import Conv, Dense, MMatrix
from structops.train import (
    LBFGS,
    SGD,
    Adam,
    GaussNewtonKrylov,
    LayerClassifier,
    Problem,
    TrainingDiverged,
    load_digits,
    make_optimizer,
)

from ._helpers import atol_for


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    return d.subset(300, 200)


def _setup(kernel, digits, seed=0, dtype=np.float64, **kw):
    model = LayerClassifier(kernel, 10, reg_theta=1e-3, reg_W=1e-3, **kw)
    X = digits.x_train.reshape(len(digits.x_train), -1).astype(dtype)
    rng = np.random.default_rng(seed)
    x = model.init_params(X, rng, dtype).ravel()
    return model, Problem(model, X, digits.y_train), x, rng


@pytest.mark.parametrize(
    "opt",
    [
        lambda: LBFGS(iters=15),
        lambda: SGD(lr=0.1, batch_size=32),
        lambda: Adam(lr=0.02, batch_size=32),
        lambda: GaussNewtonKrylov(iters=4),
    ],
    ids=["lbfgs", "sgd", "adam", "gnk"],
)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_short_run_decreases_loss_and_beats_chance(opt, dtype, digits):
    opt = opt()
    model, prob, x, rng = _setup(Conv((8, 8), 3, out_channels=4), digits, dtype=dtype)
    loss0 = prob.loss(x)
    losses = []
    for _ in range(2):
        x = opt.run_epoch(prob, x, rng)
        assert x.dtype == dtype
        losses.append(prob.loss(x))
    assert losses[0] < loss0 and losses[1] < loss0 / 2
    Xte = digits.x_test.reshape(len(digits.x_test), -1).astype(dtype)
    assert model.accuracy(x, Xte, digits.y_test) > 0.8  # chance is 0.1


def test_gnk_decreases_loss_every_step_and_uses_cg(digits):
    _model, prob, x, rng = _setup(Dense(16, 64), digits)
    opt = GaussNewtonKrylov(iters=5, cg_iters=20)
    losses = [prob.loss(x)]
    opt.run_epoch(prob, x, rng, callback=losses.append)
    assert all(b < a for a, b in itertools.pairwise(losses)), losses
    assert losses[-1] < 0.3 * losses[0]
    assert len(opt.cg_history) == 5 and all(1 <= k <= 20 for k in opt.cg_history)


def test_lbfgs_with_bounds_keeps_mmatrix_theta_nonnegative_throughout(digits):
    kernel = MMatrix(64)
    _model, prob, x, rng = _setup(kernel, digits)
    seen = []
    orig = prob.loss_grad

    def spy(z, idx=None):
        seen.append(float(z[: kernel.nparams].min()))
        return orig(z, idx)

    prob.loss_grad = spy
    loss0 = prob.loss(x)
    opt = LBFGS(iters=30)
    for _ in range(2):
        x = opt.run_epoch(prob, x, rng)
    assert len(seen) > 30 and min(seen) >= 0.0
    theta = x[: kernel.nparams]
    assert theta.min() >= 0 and np.any(theta == 0)  # the bound is active somewhere: it mattered
    assert prob.loss(x) < 0.3 * loss0


@pytest.mark.parametrize("name", ["sgd", "adam", "gnk"])
def test_projected_methods_keep_theta_feasible(name, digits):
    kernel = MMatrix(64)
    _model, prob, x, rng = _setup(kernel, digits)
    opt = make_optimizer(name, lr=0.05, iters=3)
    for _ in range(2):
        x = opt.run_epoch(prob, x, rng)
        assert x[: kernel.nparams].min() >= 0


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_minibatch_runs_are_reproducible_with_the_seed(name, digits):
    runs = []
    for seed in (5, 5, 6):
        _model, prob, x, rng = _setup(Dense(8, 64), digits, seed=0)
        rng = np.random.default_rng(seed)
        opt = make_optimizer(name)
        for _ in range(2):
            x = opt.run_epoch(prob, x, rng)
        runs.append(x)
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])  # the shuffle depends on the seed


def test_divergence_raises_a_clear_error(digits):
    _model, prob, x, rng = _setup(Dense(8, 64), digits, activation="identity")
    with pytest.raises(TrainingDiverged, match=r"diverged.*learning rate"):
        for _ in range(20):
            x = SGD(lr=1e6, momentum=0.0).run_epoch(prob, x, rng)


def test_optimizer_validation():
    with pytest.raises(ValueError, match="optimizer"):
        make_optimizer("newton")
    with pytest.raises(ValueError, match="lr"):
        SGD(lr=-1)
    with pytest.raises(ValueError, match="momentum"):
        SGD(momentum=1.0)
    with pytest.raises(ValueError, match="iters"):
        LBFGS(iters=0)
    with pytest.raises(ValueError, match="damping"):
        GaussNewtonKrylov(damping=0)


def test_adam_in_place_update_matches_torch_adam():
    """Three Adam steps from the same gradients as torch.optim.Adam (same formula, float64)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    x = rng.standard_normal(11)
    grads = [rng.standard_normal(11) for _ in range(3)]
    opt = Adam(lr=0.05)
    xt = torch.tensor(x.copy(), requires_grad=True)
    topt = torch.optim.Adam([xt], lr=0.05)
    for g in grads:
        opt._step(x, g.copy(), opt.lr)
        xt.grad = torch.tensor(g)
        topt.step()
    np.testing.assert_allclose(x, xt.detach().numpy(), rtol=0, atol=atol_for(xt.detach().numpy()))


def test_cosine_schedule_matches_torch_cosine_annealing():
    torch = pytest.importorskip("torch")
    opt = make_optimizer("adam", lr=0.02, schedule="cosine", epochs=7)
    p = torch.nn.Parameter(torch.zeros(1))
    topt = torch.optim.SGD([p], lr=0.02)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(topt, T_max=7)
    for epoch in range(7):
        assert opt.lr_at(epoch) == pytest.approx(topt.param_groups[0]["lr"], rel=1e-12)
        topt.step()
        sched.step()
    assert make_optimizer("sgd", lr=0.3).lr_at(5) == 0.3
    with pytest.raises(ValueError, match="epochs"):
        Adam(schedule="cosine")
    with pytest.raises(ValueError, match="schedule"):
        SGD(schedule="step", epochs=3)


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_minibatch_epoch_stays_float32_and_leaves_the_callers_vector(name, digits):
    _model, prob, x, rng = _setup(Conv((8, 8), 3, out_channels=2), digits, dtype=np.float32)
    x0 = x.copy()
    opt = make_optimizer(name, lr=0.01, batch_size=50, schedule="cosine", epochs=3)
    x1 = opt.run_epoch(prob, x, rng)
    np.testing.assert_array_equal(x, x0)
    assert x1.dtype == np.float32 and not np.shares_memory(x1, x)
    state = opt.state_dict()
    assert int(state["epoch"]) == 1
    assert all(v.dtype == np.float32 for k, v in state.items() if k in ("m", "v", "velocity"))


def test_schedule_resumes_at_the_saved_epoch(digits):
    """Two epochs in one object equal one epoch, a save/load into a fresh object, and the second epoch."""
    _model, prob, x, _ = _setup(Conv((8, 8), 3, out_channels=2), digits)
    a = make_optimizer("adam", batch_size=64, schedule="cosine", epochs=4)
    rng_a = np.random.default_rng(5)
    xa = a.run_epoch(prob, a.run_epoch(prob, x, rng_a), rng_a)
    b = make_optimizer("adam", batch_size=64, schedule="cosine", epochs=4)
    rng_b = np.random.default_rng(5)
    xb = b.run_epoch(prob, x, rng_b)
    c = make_optimizer("adam", batch_size=64, schedule="cosine", epochs=4)
    c.load_state_dict(b.state_dict())
    assert c.epoch == 1
    np.testing.assert_array_equal(c.run_epoch(prob, xb, rng_b), xa)


def test_lbfgs_records_iterations_and_evaluations(digits):
    _model, prob, x, rng = _setup(Conv((8, 8), 3, out_channels=2), digits)
    opt = LBFGS(iters=5)
    opt.run_epoch(prob, opt.run_epoch(prob, x, rng), rng)
    assert len(opt.nit_history) == len(opt.nfev_history) == 2
    assert all(1 <= it <= 5 and ev >= it for it, ev in zip(opt.nit_history, opt.nfev_history))
