"""``structops train`` / ``structops compare`` end to end on small budgets."""

import csv

import pytest

from structops.train import load_checkpoint
from structops.train.cli import main, register


def test_train_writes_every_output(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--bc", "periodic", "--channels", "3", "--epochs", "1", "--iters", "5", "--limit", "200"]
    argv += ["--optimizer", "lbfgs", "--dtype", "float64"]
    assert main([*argv, "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "27 in K(θ)" in text and "test accuracy" in text and "time" in text
    names = sorted(p.name for p in out.iterdir())
    assert names == ["checkpoint.npz", "curves.png", "metrics.csv", "spectrum.png", "stencils.png"]
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 2000
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [r["epoch"] for r in rows] == ["1"]
    assert 0.5 < float(rows[0]["test_acc"]) <= 1.0
    ck = load_checkpoint(out / "checkpoint.npz")
    assert ck.epoch == 1 and ck.config["bc"] == "periodic" and ck.params.theta.shape == (27,)

    # resume to two epochs in the same folder
    assert main(["train", "--resume", str(out), "--epochs", "2", "--quiet"]) == 0
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert load_checkpoint(out / "checkpoint.npz").epoch == 2


@pytest.mark.parametrize(
    "args",
    [
        ["--kernel", "mmatrix", "--optimizer", "gnk", "--iters", "2"],
        ["--kernel", "linear", "--channels", "1", "--dtype", "float32"],
        ["--stride", "2", "--optimizer", "adam"],
        ["--pool", "2", "--optimizer", "sgd"],
        ["--kernel", "dense", "--hidden", "16"],
    ],
)
def test_train_options(args, capsys):
    assert main(["train", *args, "--epochs", "1", "--iters", "3", "--limit", "150"]) == 0
    text = capsys.readouterr().out
    assert "train accuracy" in text
    if "mmatrix" in args:
        assert "constraint: min(θ - lower bound)" in text


def test_train_reports_clear_errors(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "nowhere"), "--quiet"]) == 2
    assert "--data must be a directory holding the MNIST IDX files" in capsys.readouterr().err
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04garbage")
    assert main(["train", "--resume", str(bad)]) == 2
    assert "truncated or corrupted" in capsys.readouterr().err
    assert main(["train", "--kernel", "dense", "--hidden", "10", "--pool", "2", "--epochs", "1"]) == 2
    assert "--pool needs a layer whose output is an image" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--epochs", "-1"], "--epochs must be an integer >= 1, got -1"),
        (["--epochs", "0"], "--epochs must be an integer >= 1, got 0"),
        (["--batch-size", "0"], "--batch-size must be an integer >= 1"),
        (["--iters", "0"], "--iters must be an integer >= 1"),
        (["--limit", "0"], "--limit must be an integer >= 1"),
        (["--channels", "0"], "--channels must be an integer >= 1"),
        (["--lr", "-0.1"], "--lr must be a finite number > 0"),
        (["--reg-theta", "nan"], "--reg-theta must be a finite number >= 0, got nan"),
        (["--reg-w", "-1"], "--reg-w must be a finite number >= 0"),
    ],
)
def test_train_rejects_bad_numbers_before_training(args, message, capsys):
    assert main(["train", *args, "--quiet"]) == 2
    assert message in capsys.readouterr().err


def test_train_config_validates_python_callers_too():
    from structops.train import TrainConfig

    with pytest.raises(ValueError, match="`dtype` must be 'float64' or 'float32'"):
        TrainConfig(dtype="float16")
    with pytest.raises(TypeError, match="`epochs` must be an integer"):
        TrainConfig(epochs=2.5)


def test_compare_prints_a_table(capsys):
    argv = ["compare", "--epochs", "1", "--iters", "4", "--limit", "150", "--families", "dense", "mmatrix", "conv"]
    argv += ["--optimizer", "lbfgs", "--dtype", "float64"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [ln for ln in lines if ln.startswith(("dense", "mmatrix", "conv"))]
    assert len(rows) == 4
    dense = next(r for r in rows if r.startswith("dense"))
    assert "4,096" in dense
    assert "θ >= 0 held" in next(r for r in rows if r.startswith("mmatrix"))
    accs = [float(tok.rstrip("%")) for r in rows for tok in r.split() if tok.endswith("%")]
    assert len(accs) == 8 and min(accs) > 30


def test_register_adds_both_subcommands():
    import argparse

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    assert parser.parse_args(["train", "--kernel", "dense"]).kernel == "dense"
    assert parser.parse_args(["compare", "--epochs", "2"]).epochs == 2
    assert parser.parse_args(["train", "--stencil", "3x5"]).stencil == [3, 5]
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--stencil", "0"])
    assert parser.parse_args(["train"]).stencil is None  # resolved from the grid (TrainConfig.resolved)


def test_train_refuses_an_unwritable_out_folder_before_training(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert main(["train", "--out", str(blocker / "sub"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "`--out`" in err and "is not a folder structops can write to" in err


def test_compare_reports_bad_numbers_without_a_traceback(capsys):
    assert main(["compare", "--epochs", "0"]) == 2
    assert "--epochs must be an integer >= 1, got 0" in capsys.readouterr().err


def test_stencil_flag_rejects_empty_parts(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--stencil", "3x", "--quiet"])
    assert "expected an integer or integers like 3,3 or 3x3, got '3x'" in capsys.readouterr().err


def test_resume_refuses_options_that_conflict_with_the_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--kernel", "diagonal", "--epochs", "1", "--limit", "200", "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--epochs", "2", "--dtype", "float64", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "these options conflict with it: --dtype 'float64' (saved: 'float32')" in err
    # options equal to the saved ones (or left at their defaults) are fine
    assert main(["train", "--resume", str(out), "--epochs", "2", "--kernel", "diagonal", "--quiet"]) == 0
