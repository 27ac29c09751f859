"""The training loop's steps: prepare(), TrainingRun, the thread share, and the layering of train/ and distributed/."""

from __future__ import annotations

import ast
import dataclasses
import pathlib

import numpy as np
import pytest

import structops
from structops import _backend
from structops.train import TrainConfig, trainer
from structops.train.cli import main
from structops.train.metrics import METRICS_NAME, MetricsSink

PACKAGE = pathlib.Path(structops.__file__).parent
QUICK = TrainConfig(kernel="diagonal", optimizer="lbfgs", iters=2, epochs=2, limit=100)


class FakeComm:
    """A communicator of ``size`` ranks as far as the thread share asks."""

    def __init__(self, size):
        self.size = size

    def Get_rank(self):
        return 0

    def Get_size(self):
        return self.size


@pytest.fixture(autouse=True)
def _every_core_after():
    yield
    structops.set_num_threads(None)


def _threads_seen(threads=None, config=QUICK):
    """The thread count and BLAS pools seen at every epoch's log line of a run, and after it."""
    seen = []

    def log(_line):
        seen.append(_backend.num_threads())

    trainer.train(config, threads=threads, log=log, plots=False)
    return seen, _backend.num_threads()


def test_threads_hold_during_the_run_and_are_restored_after():
    structops.set_num_threads(None)
    assert _threads_seen(threads=1) == ([1, 1], None)
    structops.set_num_threads(2)  # a count set before the run is kept by default
    assert _threads_seen() == ([2, 2], 2)


def test_each_rank_gets_its_share_of_the_cores_by_default(monkeypatch):
    run = trainer.prepare(QUICK)
    assert run.comm is None and run.threads() == _backend.num_threads()
    shares = {}
    monkeypatch.setattr(trainer, "threads_per_rank", lambda comm: shares.setdefault(comm.size, 3))
    on_ranks = dataclasses.replace(run, comm=FakeComm(4))
    assert on_ranks.threads() == 3 and shares == {4: 3}  # asked of the ranks' communicator
    assert on_ranks.threads(2) == 2  # --threads wins
    with on_ranks.thread_limits():
        assert _backend.num_threads() == 3
    assert _backend.num_threads() is None
    with pytest.raises(ValueError, match="`threads` must be an integer >= 1"):
        run.threads(0)


def test_threads_option_is_validated_and_used(capsys, monkeypatch):
    assert main(["train", "--kernel", "diagonal", "--threads", "0", "--quiet"]) == 2
    assert "structops: error: --threads must be an integer >= 1, got 0" in capsys.readouterr().err
    asked = []
    real = trainer.TrainingRun.thread_limits

    def recorded(self, threads=None):
        asked.append(threads)
        return real(self, threads)

    monkeypatch.setattr(trainer.TrainingRun, "thread_limits", recorded)
    argv = ["train", "--kernel", "diagonal", "--optimizer", "lbfgs", "--iters", "2", "--epochs", "1", "--limit", "50"]
    assert main([*argv, "--threads", "1", "--quiet"]) == 0
    assert asked == [1]


def test_prepare_does_every_check_before_the_first_epoch(tmp_path):
    run = trainer.prepare(QUICK)
    assert run.config.stencil == 3 and run.config.pool == 1  # resolved for the 8x8 digits
    assert run.complete is None and run.resume is None and run.rank0
    res = run.train(out=tmp_path, plots=False)
    assert [p.name for p in res.outputs] == ["checkpoint.npz", METRICS_NAME]
    again = trainer.prepare(dataclasses.replace(QUICK, epochs=2), resume=tmp_path)
    assert (
        again.complete == f"the run in {tmp_path / 'checkpoint.npz'} is already complete: 2 epochs of 2; nothing to do"
    )
    done = again.train(out=tmp_path)
    assert done.outputs == [] and done.history == res.history
    np.testing.assert_array_equal(done.params.ravel(), res.params.ravel())
    with pytest.raises(ValueError, match="larger than the 8x8 grid"):
        trainer.prepare(dataclasses.replace(QUICK, kernel="conv", stencil=9))


def test_metrics_sink_keeps_the_history_and_writes_it_atomically(tmp_path):
    lines = []
    sink = MetricsSink({"epoch": [1.0], "loss": [2.0], "train_acc": [0.5], "test_acc": [0.4], "seconds": [0.1]},
                       epochs=3, log=lines.append, folder=tmp_path)  # fmt: skip
    sink.record(2, 1.5, 0.75, 0.5, 0.25)
    assert sink.history["epoch"] == [1.0, 2.0] and lines == [
        "epoch 2/3: loss 1.5000, train acc 0.7500, test acc 0.5000 (0.2 s)"
    ]
    assert sink.write() == tmp_path / METRICS_NAME
    assert (tmp_path / METRICS_NAME).read_text().splitlines() == [
        "epoch,loss,train_acc,test_acc,seconds", "1,2,0.5,0.4,0.1", "2,1.5,0.75,0.5,0.25",
    ]  # fmt: skip
    assert MetricsSink(epochs=1).write() is None  # no folder, no file


def _imports(path: pathlib.Path) -> set[str]:
    """Every structops module ``path`` imports, at module level or inside a function (absolute names)."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if path.name == "__init__.py":
        package += ".__init__"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: -node.level] if node.level else []
            found.add(".".join([*base, *(node.module.split(".") if node.module else [])]))
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("structops")}


def test_distributed_never_imports_train_not_even_lazily():
    for path in sorted((PACKAGE / "distributed").rglob("*.py")):
        assert not any(name.startswith("structops.train") for name in _imports(path)), path


def test_the_command_line_imports_no_private_name_of_the_training_modules():
    tree = ast.parse((PACKAGE / "train" / "cli.py").read_text())
    private = [
        (node.module, alias.name)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.level == 1  # structops.train's own modules
        for alias in node.names
        if alias.name.startswith("_")
    ]
    assert private == []


def test_no_context_manager_is_entered_or_exited_by_hand():
    calls = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                if node.func.attr in ("__enter__", "__exit__"):
                    calls.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert calls == []
