"""The quick-start and training examples run end to end (CI runs every example)."""

import itertools
import os
import re
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
    assert not list(scratch.iterdir()), f"{script} left {sorted(p.name for p in scratch.iterdir())} behind"
    scratch.rmdir()
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


def test_training_example_checks_the_gradient_and_learns(tmp_path):
    out = _run("train_digits.py", "--quick", cwd=tmp_path)
    assert "Taylor test of the objective: quadratic" in out
    accuracy = float(re.search(r"GNK test accuracy: ([0-9.]+)%", out).group(1))
    assert accuracy > 50.0  # ten classes: chance is 10 %
    losses = [float(v) for v in re.search(r"Gauss-Newton-Krylov losses: (.*)", out).group(1).split()]
    assert all(b < a for a, b in itertools.pairwise(losses))


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
