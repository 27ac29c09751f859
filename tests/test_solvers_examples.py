"""The solver examples and the preconditioner benchmark run end to end at small sizes."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

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


def test_deblur_example_writes_figure_and_preconditioning_helps(tmp_path):
    png = tmp_path / "deblur.png"
    out = run("examples/deblur.py", "--size", "40", "--out", str(png), cwd=tmp_path)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plain = iterations(out, "(b) cg")
    assert iterations(out, "(b) cg + chan preconditioner") < plain
    assert iterations(out, "(b) cg + strang preconditioner") < plain
    errors = [float(e) for e in re.findall(r"^\s*\((?:a|b|c|d)\).*?\s(\S+)$", out, flags=re.MULTILINE)]
    regularised = errors[1:]  # every regularised reconstruction is closer to the truth than the blurred data
    assert all(e < 0.35 for e in regularised), out


def test_learn_stencil_example_recovers_the_stencils(tmp_path):
    out = run("examples/learn_stencil.py", "--size", "16", cwd=tmp_path)
    for line in out.splitlines()[1:]:
        err = float(line.split()[-2])
        assert err < (1e-10 if "noise-free" in line else 5e-2), line


def test_preconditioner_benchmark_runs(capsys):
    # in-process (the examples above cover the subprocess route): saves an interpreter start-up
    spec = importlib.util.spec_from_file_location("bench_preconditioners", ROOT / "benchmarks/bench_preconditioners.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["--size", "40"])
    out = capsys.readouterr().out
    assert iterations(out, "chan") < iterations(out, "none")
    assert iterations(out, "strang") < iterations(out, "none")
