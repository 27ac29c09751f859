"""Data-parallel ``structops train`` under MPI: the same parameters as one process, one allreduce a step.

In-process tests run on one rank (a plain ``python``); the multi-rank test runs
``tests/_mpi_train_checks.py`` under ``mpiexec -n 2`` on IDX files written here and compares
its checkpoints with the same runs on one process.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pylops_mpi")
mpi4py = pytest.importorskip("mpi4py")

from structops.train import (  # noqa: E402
    LayerClassifier,
    load_checkpoint,
    load_digits,
    parallel,
)
from structops.train.cli import main  # noqa: E402
from structops.train.optimizers import Problem  # noqa: E402
from structops.train.trainer import TrainConfig, build_kernel  # noqa: E402

from .test_train_data import _write  # noqa: E402


def _digits_as_idx(folder: Path, ntrain: int = 240, ntest: int = 90) -> Path:
    """The shipped digits written as the four MNIST IDX files (8x8 uint8 images)."""
    d = load_digits()
    folder.mkdir()
    for split, x, y, n in (("train", d.x_train, d.y_train, ntrain), ("t10k", d.x_test, d.y_test, ntest)):
        _write(folder / f"{split}-images-idx3-ubyte", np.round(255 * x[:n, 0]).astype(np.uint8), 0x08)
        _write(folder / f"{split}-labels-idx1-ubyte", y[:n].astype(np.uint8), 0x08)
    return folder


class CountingComm:
    """``MPI.COMM_WORLD`` that counts the collective calls made through it."""

    def __init__(self, comm):
        self._comm, self.calls = comm, []

    def __getattr__(self, name):
        attr = getattr(self._comm, name)
        if callable(attr) and not name.startswith(("Get_", "Is_")):

            def counted(*args, **kwargs):
                self.calls.append(name)
                return attr(*args, **kwargs)

            return counted
        return attr


@pytest.fixture(scope="module")
def small_problem():
    d = load_digits().subset(120, 40)
    config = TrainConfig(kernel="conv", channels=2, stencil=3, pool=1, dtype="float64")
    model = LayerClassifier(build_kernel(config, d.image_shape), 10, reg_theta=1e-3, reg_W=1e-3)
    X = d.x_train.reshape(len(d.x_train), -1)
    return model, X, d.y_train, model.init_params(X, 0).ravel()


@pytest.mark.parametrize("batch", [None, np.array([7, 3, 119, 42, 0])])
def test_sharded_problem_on_one_rank_is_the_serial_objective(small_problem, batch):
    model, X, y, x = small_problem
    comm = CountingComm(mpi4py.MPI.COMM_WORLD)
    sharded = parallel.ShardedProblem(model, X, y, 0, X.shape[0], chunk=50, base_comm=comm)
    assert comm.calls == []  # nothing to set up across ranks
    loss, grad = sharded.loss_grad(x, batch)
    assert comm.calls == ["Allreduce"]  # the loss and the whole gradient in one reduction
    ref_loss, ref_grad = Problem(model, X, y).loss_grad(x, batch)
    assert loss == pytest.approx(ref_loss, rel=1e-13)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-12, atol=1e-14 * np.abs(ref_grad).max())
    assert sharded.X.shape[0] == X.shape[0]  # what the mini-batch optimisers draw their permutation from


def test_example_sums_match_evaluate_in_chunks(small_problem):
    model, X, y, x = small_problem
    data_sum, right = parallel.example_sums(model, x, X, y, chunk=37)
    loss, acc = model.evaluate(x, X, y)
    assert data_sum / X.shape[0] + parallel.tikhonov(model, x) == pytest.approx(loss, rel=1e-12)
    assert right == round(acc * X.shape[0])


def _mpiexec() -> str | None:
    here = Path(sys.executable).parent
    return shutil.which("mpiexec", path=f"{here}{os.pathsep}{os.environ.get('PATH', '')}")


def _params(folder: Path) -> dict[str, np.ndarray]:
    ck = load_checkpoint(folder / "checkpoint.npz")
    return {n: getattr(ck.params, n) for n in ("theta", "bias", "W", "c")}


# slow: five training runs on two ranks and two on one (20 s); the quick run keeps the one-rank
# sharded objective above and tests/test_distributed.py's two-rank operators
@pytest.mark.slow
@pytest.mark.skipif(_mpiexec() is None, reason="no mpiexec (pip install mpich)")
def test_two_ranks_train_the_same_parameters_as_one(tmp_path, capsys):
    data = _digits_as_idx(tmp_path / "idx")
    work = tmp_path / "mpi"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    script = Path(__file__).with_name("_mpi_train_checks.py")
    run = subprocess.run(
        [_mpiexec(), "-n", "2", sys.executable, str(script), str(data), str(work)],
        capture_output=True, text=True, timeout=500, env=env,
    )  # fmt: skip
    out = run.stdout
    assert run.returncode == 0, out[-3000:] + run.stderr[-3000:]
    assert [ln for ln in out.splitlines() if ln.startswith("rc ")] == [
        "rc lbfgs 0", "rc resumed 0", "rc resume 0", "rc adam 0", "rc gnk 2",
    ]  # fmt: skip
    # only rank 0 prints: one header per run, naming the split
    assert out.count("data: mnist:idx, 240 train / 90 test examples") == 4
    assert out.count("split over 2 MPI ranks") == 4
    # each rank on its share of the cores by default, not a pool as large as the machine
    share = max(1, (os.cpu_count() or 1) // 2)
    assert out.count(f"split over 2 MPI ranks ({share} thread{'' if share == 1 else 's'} each)") == 4
    assert "'gnk' does not run on several MPI ranks" in run.stderr
    assert run.stderr.count("structops: error:") == 1
    # the same runs on one process
    common = ["--data", str(data), "--channels", "2", "--stencil", "3", "--pool", "1", "--dtype", "float64", "-q"]
    serial = {
        "lbfgs": ["train", *common, "--optimizer", "lbfgs", "--iters", "6", "--epochs", "2"],
        "adam": ["train", *common, "--optimizer", "adam", "--batch-size", "16", "--epochs", "2"],
    }
    for name, argv in serial.items():
        assert main([*argv, "--out", str(tmp_path / name)]) == 0
        mine, theirs = _params(tmp_path / name), _params(work / name)
        for part, ref in mine.items():
            scale = np.abs(ref).max()
            np.testing.assert_allclose(theirs[part], ref, rtol=0, atol=1e-9 * scale, err_msg=f"{name} {part}")
    # stopped after one epoch and resumed under MPI: exactly the uninterrupted MPI run
    resumed, straight = _params(work / "resumed"), _params(work / "lbfgs")
    for part in straight:
        np.testing.assert_array_equal(resumed[part], straight[part])
    assert load_checkpoint(work / "resumed" / "checkpoint.npz").epoch == 2
    assert sorted(p.name for p in (work / "gnk").glob("*")) == []  # refused before writing anything
