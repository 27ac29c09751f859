"""``structops train`` / ``structops compare`` end to end on small budgets."""

import csv

import pytest

from structops.train import load_checkpoint
from structops.train.cli import main, register


@pytest.mark.output
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

    with pytest.raises(ValueError, match=r"`dtype` must be one of \('float64', 'float32'\), got 'float16'"):
        TrainConfig(dtype="float16")
    with pytest.raises(TypeError, match="`epochs` must be an integer"):
        TrainConfig(epochs=2.5)


@pytest.mark.output
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


def _files(folder):
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


QUICK = ["--kernel", "diagonal", "--optimizer", "lbfgs", "--iters", "2", "--epochs", "1", "--limit", "100"]


def test_out_without_matplotlib_trains_and_says_in_one_line_that_plots_were_skipped(tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ImportError
    assert main(["train", *QUICK, "--out", str(tmp_path / "run"), "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["checkpoint.npz", "metrics.csv"]
    skipped = [ln for ln in out.splitlines() if "plots skipped" in ln]
    assert skipped == ['plots skipped: matplotlib is not installed (pip install "structops[plot]" adds it)']
    assert "Traceback" not in out + err and err == ""


def test_out_holding_an_earlier_run_is_refused_unless_force(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *QUICK, "--out", str(out), "--quiet"]) == 0
    (out / "spectrum.png").write_bytes(b"from an older run")
    before = _files(out)
    capsys.readouterr()
    assert main(["train", *QUICK, "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"--out {str(out)!r} holds an earlier run (checkpoint.npz, metrics.csv" in err
    assert f"continue it with --resume {out}, replace it with --force" in err
    assert _files(out) == before  # untouched
    assert main(["train", *QUICK, "--out", str(out), "--force", "--quiet"]) == 0
    assert "spectrum.png" not in _files(out)  # the earlier run's files are replaced, none left stale
    assert load_checkpoint(out / "checkpoint.npz").epoch == 1


@pytest.mark.parametrize(
    ("args", "flag", "kernel"),
    [
        (["--kernel", "diagonal", "--bc", "periodic"], "--bc", "diagonal"),
        (["--kernel", "dense", "--stride", "2"], "--stride", "dense"),
        (["--kernel", "diagonal", "--channels", "3"], "--channels", "diagonal"),
        (["--kernel", "dense", "--stencil", "3"], "--stencil", "dense"),
        (["--kernel", "conv", "--hidden", "10"], "--hidden", "conv"),
    ],
)
def test_options_of_another_family_are_errors_naming_the_flag(args, flag, kernel, capsys):
    assert main(["train", *args, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"structops: error: {flag} does not apply to --kernel {kernel}" in err


@pytest.mark.parametrize("bc", ["zero", "periodic", "reflect"])
def test_a_stencil_larger_than_the_grid_is_an_error_before_training(bc, capsys):
    import time

    start = time.perf_counter()
    assert main(["train", "--stencil", "99", "--bc", bc, "--quiet"]) == 2
    assert time.perf_counter() - start < 30  # refused at once, not after minutes of training
    assert "--stencil 99x99 is larger than the 8x8 grid of the examples" in capsys.readouterr().err
    assert main(["train", "--stencil", "9,3", "--bc", bc, "--quiet"]) == 2
    assert "--stencil 9x3 is larger than the 8x8 grid" in capsys.readouterr().err


@pytest.mark.output
def test_resume_of_a_finished_run_says_so_and_changes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *QUICK, "--out", str(out), "--quiet"]) == 0
    before = _files(out)
    capsys.readouterr()
    assert main(["train", "--resume", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"the run in {out / 'checkpoint.npz'} is already complete: 1 epoch of 1; nothing to do" in text
    assert "resuming" not in text and "wrote" not in text
    assert _files(out) == before  # not rewritten
    # the Python API does the same
    from structops.train import TrainConfig, train

    res = train(TrainConfig(epochs=1), resume=out, out=out)
    assert res.outputs == [] and _files(out) == before


def test_outputs_share_one_file_mode(tmp_path):
    import os

    out = tmp_path / "run"
    mask = os.umask(0o027)
    try:
        assert main(["train", *QUICK, "--out", str(out), "--quiet"]) == 0
    finally:
        os.umask(mask)
    modes = {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()}
    assert set(modes.values()) == {0o640}, modes  # 0o666 less the umask, the checkpoint included


def test_first_run_says_once_that_kernels_compile(monkeypatch, capsys):
    import structops.train.cli as tcli

    argv = ["train", "--bc", "periodic", "--channels", "2", "--optimizer", "lbfgs", "--iters", "2", "--epochs", "1"]
    monkeypatch.setattr(tcli, "kernels_need_compiling", lambda: True)
    assert main([*argv, "--limit", "100", "--quiet"]) == 0
    assert capsys.readouterr().out.count("compiling kernels, once per install…") == 1
    monkeypatch.setattr(tcli, "kernels_need_compiling", lambda: False)
    assert main([*argv, "--limit", "100", "--quiet"]) == 0
    assert "compiling" not in capsys.readouterr().out
    monkeypatch.undo()
    from structops import _backend

    if _backend.have_numba():  # the kernels just ran, so numba's cache holds them now
        assert tcli.kernels_need_compiling() is False


@pytest.mark.output
def test_one_epoch_and_an_8_channel_read_right(tmp_path, capsys):
    assert main(["train", "--bc", "periodic", "--pool", "2", "--epochs", "1", "--limit", "100", "--out",
                 str(tmp_path / "run"), "--quiet"]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert ", 1 epoch, " in text and "after 1 epoch;" in text and "1 epochs" not in text
    assert (tmp_path / "run" / "spectrum.png").exists()  # a periodic convolution, also when pooled
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "Default: an 8-channel convolution" in capsys.readouterr().out.replace("\n", " ")


def test_version(capsys):
    from structops import __version__

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"structops {__version__}"
