"""The quick-start and training examples run end to end (CI runs every example)."""

import itertools
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, *args: str, cwd: Path) -> str:
    """Run an example in ``cwd``; it must leave nothing there nor in its temporary folder."""
    scratch = cwd / "tmp"
    scratch.mkdir()
    before = set(cwd.iterdir())
    env = {**os.environ, "TMPDIR": str(scratch)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    # torch's own compile cache (torchinductor_<user>) is made by importing torch._dynamo, which
    # structops.torch does (torch.compiler.disable): torch's, not the example's
    left = sorted(p.name for p in scratch.iterdir() if not p.name.startswith("torchinductor_"))
    assert not left, f"{script} left {left} behind"
    shutil.rmtree(scratch)
    made = {p.name for p in set(cwd.iterdir()) - before}
    out = {Path(a).name for a in args}
    assert made <= out, f"{script} wrote {sorted(made - out)} into the working folder"
    return proc.stdout


def test_the_distributed_example_without_the_mpi_extra_names_it():
    # mpi4py and pylops-mpi made unimportable, whether or not they are installed
    code = (
        "import runpy, sys; sys.modules['mpi4py'] = sys.modules['pylops_mpi'] = None; "
        f"runpy.run_path({str(ROOT / 'examples' / 'distributed_deblur.py')!r}, run_name='__main__')"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "ModuleNotFoundError" not in proc.stderr, proc.stderr
    assert "needs the `mpi` extra" in proc.stderr and 'pip install "structops[mpi]"' in proc.stderr


@pytest.mark.output
def test_quickstart_prints_the_lecture_notes_matrices_and_passing_checks(tmp_path):
    out = _run("quickstart.py", cwd=tmp_path)
    assert "[[ 3. -1. -2.]" in out  # the lecture notes' M-matrix for theta = 1..6
    assert "regime: roundoff; passed: True" in out
    assert "FAIL" not in out
    assert "gmres info: 0" in out


@pytest.mark.slow  # 6 s; the quick run keeps the quick-start example (tests/test_train_* train in process)
def test_training_example_checks_the_gradient_and_learns(tmp_path):
    out = _run("train_digits.py", "--quick", cwd=tmp_path)
    assert "Taylor test of the objective: quadratic" in out
    accuracy = float(re.search(r"GNK test accuracy: ([0-9.]+)%", out).group(1))
    assert accuracy > 50.0  # ten classes: chance is 10 %
    losses = [float(v) for v in re.search(r"Gauss-Newton-Krylov losses: (.*)", out).group(1).split()]
    assert all(b < a for a, b in itertools.pairwise(losses))


@pytest.mark.slow  # long: the quick run keeps the smaller example runs
def test_project_ideas_trains_every_new_family_and_draws_them(tmp_path):
    figures = tmp_path / "figures"
    figures.mkdir()
    out = _run("project_ideas.py", "--epochs", "3", "--out", str(figures), cwd=tmp_path)
    rows = [ln for ln in out.splitlines() if ln.endswith("s") and "%" in ln]
    assert len(rows) == 8
    for row in rows:  # ten classes: chance is 10 %; every family learns
        test_acc = float(row.split()[-2].rstrip("%"))
        assert test_acc > 60.0, row
    png = figures / "project_ideas.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


@pytest.mark.slow  # long: the quick run keeps the smaller example runs
def test_stable_resnet_trains_every_block_and_measures_stability(tmp_path):
    out = _run("stable_resnet.py", "--quick", "--out", str(tmp_path / "fig"), cwd=tmp_path)
    rows = {ln[:24].strip(): ln[24:].split() for ln in out.splitlines() if re.search(r"%\s+[0-9.]+%", ln)}
    names = {"Conv (structops)", "nn.Conv2d (torch)", "AntisymmetricConv - γI", "parabolic, Conv", "CayleyConv"}
    assert set(rows) == names
    for name, cols in rows.items():  # ten classes: chance is 10 %
        assert float(cols[0].rstrip("%")) > 60.0, name
        growth = [float(c) for c in cols[4:8]]
        assert all(math.isfinite(g) for g in growth) and min(growth) > 0, name
    gap = float(re.search(r"test accuracies differ by ([0-9.]+) points", out).group(1))
    assert gap <= 1.0
    # the parabolic block I - h K^T D K has eigenvalues at most 1: perturbations do not grow
    assert float(rows["parabolic, Conv"][5]) <= 1.0
    png = tmp_path / "fig" / "stable_resnet.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list(tmp_path.iterdir()) == [tmp_path / "fig"]  # nothing written into the working directory


@pytest.mark.slow  # 6 s; the quick run keeps the quick-start example (tests/test_torch_modules.py certifies in process)
def test_certify_model_prints_both_tables_and_a_bound_below_one(tmp_path):
    out = _run("certify_model.py", "--quick", cwd=tmp_path)
    assert "== trained network ==" in out and "== projected to 1-Lipschitz layers ==" in out
    assert out.count("network: certified Lipschitz upper bound") == 2
    assert "(<= 1: True)" in out
