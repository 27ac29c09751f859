"""The solver examples and the preconditioner benchmark run end to end at small sizes."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(script: str, *args: str, cwd: Path) -> str:
    proc = subprocess.run(
        [sys.executable, str(ROOT / script), *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def iterations(out: str, label: str) -> int:
    match = re.search(rf"^\s*{re.escape(label)}\s+(\d+)\s", out, flags=re.MULTILINE)
    assert match, f"no line for {label!r} in:\n{out}"
    return int(match.group(1))


def psnr_of(out: str, label: str) -> float:
    match = re.search(rf"^\s*{re.escape(label)}\s+\S+\s+(-?[0-9.]+)\s+[0-9.]+$", out, flags=re.MULTILINE)
    assert match, f"no line for {label!r} in:\n{out}"
    return float(match.group(1))


@pytest.mark.slow  # a fresh interpreter and a figure (14 s); the quick run keeps the benchmarks in process
def test_deblur_example_chooses_alpha_and_beats_the_blurred_data(tmp_path):
    png = tmp_path / "deblur.png"
    out = run("examples/deblur.py", "--size", "64", "--out", str(png), cwd=tmp_path)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    blurred = psnr_of(out, "blurred data")
    for method in ("gcv", "discrepancy"):  # the model that made the data, α from the data
        assert psnr_of(out, f"zero      L=I         {method}") > blurred + 1.0, out
    iterative = re.search(r"^\s*zero\s+L=I\s+lsqr\+chan \((\d+) it\.\)\s+\S+\s+([0-9.]+)", out, flags=re.MULTILINE)
    assert iterative and abs(float(iterative.group(2)) - psnr_of(out, "zero      L=I         discrepancy")) < 0.1


@pytest.mark.slow  # long: the quick run keeps the smaller example runs
def test_deblur_example_runs_on_the_shipped_phantom(tmp_path):
    out = run("examples/deblur.py", "--size", "48", "--phantom", "--out", str(tmp_path / "p.png"), cwd=tmp_path)
    assert "structops.data.phantom" in out
    assert psnr_of(out, "symmetric L=Laplacian discrepancy") > 0


@pytest.mark.slow  # a fresh interpreter (8 s); tests/test_solvers_learn.py learns stencils in process
def test_learn_stencil_example_recovers_the_stencils(tmp_path):
    out = run("examples/learn_stencil.py", "--size", "16", cwd=tmp_path)
    for line in out.splitlines()[1:]:
        err = float(line.split()[-2])
        assert err < (1e-10 if "noise-free" in line else 5e-2), line


def test_preconditioner_benchmark_runs(capsys):
    # in-process (the examples above cover the subprocess route): saves an interpreter start-up
    _load("bench_preconditioners").main(["--size", "40"])
    out = capsys.readouterr().out
    assert iterations(out, "chan") < iterations(out, "none")
    assert iterations(out, "strang") < iterations(out, "none")


def _load(name: str):
    """A benchmark script as a module; its ``import _common`` finds benchmarks/ as ``python benchmarks/...`` does."""
    if str(ROOT / "benchmarks") not in sys.path:
        sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_iteration_count_benchmark_runs_and_preconditioning_helps(capsys):
    _load("bench_iterations").main(["--sizes1d", "128", "--sizes2d", "24"])
    out = capsys.readouterr().out
    for row in re.findall(r"^\| (?:128|24) \|.*$", out, flags=re.MULTILINE):
        counts = [int(c) for c in re.findall(r"(\d+)\+? \(", row)]
        cg_none, cg_strang, cg_chan, lsqr_none, lsqr_strang, lsqr_chan = counts
        assert max(cg_strang, cg_chan) < cg_none and max(lsqr_strang, lsqr_chan) < lsqr_none, row


@pytest.mark.slow  # long: the quick run keeps the smaller example runs
def test_camera_benchmark_runs(capsys):
    _load("bench_deblur").main(["--size", "48"])
    out = capsys.readouterr().out
    assert "choose_alpha discrepancy" in out and "α = 0" in out
