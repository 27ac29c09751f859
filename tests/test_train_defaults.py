"""Training defaults (issue 11): data-dependent pooling and stencil, Adam float32 with a cosine schedule."""

import dataclasses

import numpy as np
import pytest

from structops import AvgPool, Conv
from structops.kernels.compose import Chain
from structops.train import Adam, TrainConfig, build_kernel, load_digits, train
from structops.train.trainer import AUTO_POOL_MIN_GRID


def test_defaults_are_adam_float32_with_a_cosine_schedule():
    c = TrainConfig()
    assert (c.optimizer, c.dtype, c.schedule, c.epochs) == ("adam", "float32", "cosine", 15)
    assert c.pool is None and c.stencil is None  # resolved from the data


@pytest.mark.parametrize(
    ("image_shape", "pool", "stencil"),
    [((1, 28, 28), 2, 7), ((1, AUTO_POOL_MIN_GRID, AUTO_POOL_MIN_GRID), 2, 7), ((1, 8, 8), 1, 3), ((1, 15, 40), 1, 3)],
)
def test_pool_and_stencil_resolve_from_the_grid(image_shape, pool, stencil):
    r = TrainConfig().resolved(image_shape)
    assert (r.pool, r.stencil) == (pool, stencil)
    k = build_kernel(TrainConfig(), image_shape)
    if pool == 1:
        assert isinstance(k, Conv) and k.stencil == (stencil, stencil)
    else:
        assert isinstance(k, Chain) and isinstance(k.outer, AvgPool) and k.kernel.stencil == (stencil, stencil)
        assert k.out_shape == (8, image_shape[1] // 2, image_shape[2] // 2)


def test_explicit_choices_are_kept_and_pool_1_means_none():
    c = TrainConfig(pool=1, stencil=3)
    assert c.resolved((1, 28, 28)) == c
    assert isinstance(build_kernel(c, (1, 28, 28)), Conv)
    assert TrainConfig(pool=4).resolved((1, 28, 28)).pool == 4
    dense = TrainConfig(kernel="dense").resolved((1, 28, 28))
    assert (dense.pool, dense.stencil) == (1, 3)  # pooling only after a convolution
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(schedule="step")


def test_default_run_trains_float32_with_the_schedule_and_stores_the_resolved_config(tmp_path):
    data = load_digits(dtype=np.float32).subset(300, 200)
    res = train(TrainConfig(epochs=3), data, out=tmp_path)
    assert res.config.pool == 1 and res.config.stencil == 3
    assert res.params.theta.dtype == np.float32 and res.params.W.dtype == np.float32
    opt = res.optimizer
    assert isinstance(opt, Adam) and opt.epoch == 3 and opt.m.dtype == np.float32
    assert opt.lr_at(0) > opt.lr_at(1) > opt.lr_at(2) > 0
    assert res.test_acc > 0.5
    from structops.train import load_checkpoint

    saved = load_checkpoint(tmp_path / "checkpoint.npz").config
    assert saved["pool"] == 1 and saved["stencil"] == 3 and saved["schedule"] == "cosine"


def test_training_leaves_the_blas_thread_limit_as_it_was():
    threadpoolctl = pytest.importorskip("threadpoolctl")

    def blas():
        return [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]

    before = blas()
    train(dataclasses.replace(TrainConfig(), epochs=1), load_digits(dtype=np.float32).subset(100, 50))
    assert blas() == before
