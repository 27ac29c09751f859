"""TrainConfig(lipschitz=L) / structops train --lipschitz L: the layer's norm stays certified <= L."""

from __future__ import annotations

import re

import numpy as np
import pytest

from structops.cli import main
from structops.solvers import certified_norm_bound
from structops.train import TrainConfig, train
from structops.train.model import LayerClassifier, certified_layer_norm


@pytest.mark.parametrize(("kernel", "bc"), [("conv", "zero"), ("symmetric", "periodic"), ("conv", "periodic")])
def test_training_keeps_the_certified_norm_below_the_bound(kernel, bc):
    config = TrainConfig(kernel=kernel, bc=bc, epochs=2, iters=3, limit=150, lipschitz=0.5, optimizer="adam")
    result = train(config)
    norm = certified_layer_norm(result.model.kernel, result.params.theta)
    assert norm <= 0.5
    dense = np.linalg.norm(result.model.kernel.matrix(result.params.theta.astype(np.float64)), 2)
    assert dense <= 0.5 * (1 + 1e-6)  # float32 parameters
    free = train(TrainConfig(kernel=kernel, bc=bc, epochs=2, iters=3, limit=150, optimizer="adam"))
    assert certified_norm_bound(free.model.kernel, free.params.theta) > 0.5  # the bound is active


def test_pooled_layer_bounds_the_family_before_the_pooling():
    config = TrainConfig(kernel="conv", pool=2, epochs=1, iters=2, limit=100, lipschitz=0.3)
    result = train(config)
    assert certified_norm_bound(result.model.kernel.kernel, result.params.theta) <= 0.3
    assert np.linalg.norm(result.model.kernel.matrix(result.params.theta.astype(np.float64)), 2) <= 0.3 * (1 + 1e-6)


def test_cli_flag_prints_the_certified_final_norm(capsys):
    assert main(["train", "--epochs", "1", "--iters", "3", "--limit", "150", "--lipschitz", "0.7", "--quiet"]) == 0
    text = capsys.readouterr().out
    match = re.search(r"^certified ‖K\(θ\)‖₂ <= (\S+) \(bound 0\.7\)$", text, re.M)
    assert match is not None and float(match.group(1)) <= 0.7


def test_lipschitz_is_validated(capsys):
    with pytest.raises(ValueError, match="`lipschitz` must be a finite number > 0"):
        TrainConfig(lipschitz=0.0)
    assert main(["train", "--kernel", "separable", "--lipschitz", "1", "--epochs", "1", "--quiet"]) == 2
    assert "`lipschitz` needs a family linear in θ" in capsys.readouterr().err


def test_every_optimiser_step_is_projected(monkeypatch):
    calls = []
    project = LayerClassifier.project

    def counting(self, x):
        y = project(self, x)
        calls.append(certified_layer_norm(self.kernel, self.unpack(y).theta))
        return y

    monkeypatch.setattr(LayerClassifier, "project", counting)
    config = TrainConfig(kernel="conv", epochs=1, limit=256, batch_size=32, lipschitz=0.4, optimizer="adam")
    train(config)
    assert len(calls) >= 256 // 32 * 0.8  # one projection per mini-batch step (the split keeps ~80 % for training)
    assert max(calls) <= 0.4


def test_project_is_the_identity_inside_and_certified_outside():
    from structops import Conv

    model = LayerClassifier(Conv((8, 8), (3, 3), bc="zero", out_channels=2), 10, lipschitz=1.0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(model.nparams)
    theta = model.unpack(x).theta
    theta *= 0.01 / certified_layer_norm(model.kernel, theta)  # well inside the bound
    np.testing.assert_array_equal(model.project(x), x)
    theta *= 500.0  # norm 5: outside
    y = model.project(x)
    assert certified_layer_norm(model.kernel, model.unpack(y).theta) <= 1.0
    rest = np.ones(model.nparams, bool)
    rest[: model.kernel.nparams] = False
    np.testing.assert_array_equal(y[rest], x[rest])  # only θ moves
