"""``structops check``: the table, the exit status, the module entry point."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from structops import Diagonal, MMatrix, cli
from structops.testing import check_kernel

FAMILIES = ("Dense", "Diagonal", "Antisymmetric", "MMatrix", "LinearKernel", "Softplus")
COLUMNS = ("family", "size", "dtype", "checks", "worst check", "error", "tol", "result")


class BrokenDiagonal(Diagonal):  # keeps Diagonal's repr
    """A family whose gradient is wrong by 10%: only the Jacobian checks can see it."""

    def _vjp(self, theta, x, w, transpose, per_example):
        return 1.1 * super()._vjp(theta, x, w, transpose, per_example)


def table_rows(out: str) -> list[str]:
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if set(line) == {"-"}) + 1
    return [line for line in lines[start:] if line.strip() and "family checks passed" not in line]


@pytest.mark.output
def test_check_quick_prints_a_table_and_returns_0(capsys):
    # no bound on the time: a first run compiles the numba kernels (again for each CPU target)
    assert cli.main(["check", "--quick"]) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0]
    positions = [header.index(c) for c in COLUMNS]
    assert positions == sorted(positions)
    for fam in FAMILIES:
        assert fam in out
    rows = table_rows(out)
    families = cli.builtin_kernels(quick=True)
    assert len(rows) == 2 * len(families)
    assert all(row.rstrip().endswith("ok") for row in rows)
    assert sum("float32" in row for row in rows) == sum("float64" in row for row in rows) == len(families)
    assert f"{2 * len(families)}/{2 * len(families)} family checks passed" in out
    # no Taylor row is shown as the worst check of a passing family
    assert not any("taylor" in row for row in rows)


@pytest.mark.output
def test_worst_check_is_the_largest_error_over_tol(capsys):
    k = MMatrix(3)
    report = check_kernel(k, dtype=np.float64, rng=0)
    rows = [r for r in report.results if not r.is_taylor and r.tol > 0]
    assert report.worst() is max(rows, key=lambda r: r.error / r.tol)
    cli.main(["check", "--quick", "--dtype", "float64"])
    line = next(row for row in table_rows(capsys.readouterr().out) if row.startswith("MMatrix(3)"))
    assert report.worst().check in line


def test_dtype_option_selects_rows(capsys):
    assert cli.main(["check", "--quick", "--dtype", "float32"]) == 0
    rows = table_rows(capsys.readouterr().out)
    assert rows and all("float32" in row and "float64" not in row for row in rows)


@pytest.mark.output
def test_verbose_prints_every_check(capsys):
    assert cli.main(["check", "--quick", "--dtype", "float64", "-v"]) == 0
    out = capsys.readouterr().out
    assert "adjoint jac(T)" in out and "taylor jac" in out and "roundoff" in out and "quadratic" in out


def test_broken_family_exits_nonzero(monkeypatch, capsys):
    monkeypatch.setattr(cli, "builtin_kernels", lambda quick=False: [Diagonal(3), BrokenDiagonal(4)])
    assert cli.main(["check", "--quick"]) == 1
    out = capsys.readouterr().out
    rows = table_rows(out)
    good = [row for row in rows if row.startswith("Diagonal(3)")]
    bad = [row for row in rows if row.startswith("Diagonal(4) ") and "p=" in row]
    assert len(good) == len(bad) == 2  # both dtypes
    assert all(row.rstrip().endswith("ok") for row in good)
    # the worst check of a failing family is a failed one, and its full report is printed
    assert all("FAIL (" in row and "jac" in row for row in bad)
    assert "Diagonal(4) [float64]" in out and "Diagonal(4) [float32]" in out
    assert "2/4 family checks passed" in out


def test_bad_arguments_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["check", "--dtype", "float16"])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        cli.main([])
    assert info.value.code == 2
    assert "usage: structops" in capsys.readouterr().err


@pytest.mark.slow  # a fresh interpreter (7 s); the quick run checks `check --quick` in process above
def test_python_dash_m_structops_check():
    proc = subprocess.run(
        # a fresh interpreter may compile the numba kernels first (minutes on a loaded or older machine)
        [sys.executable, "-m", "structops", "check", "--quick"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "family checks passed" in proc.stdout
    for fam in FAMILIES:
        assert fam in proc.stdout


def test_tridiagonal_example_kernel():
    k = cli.tridiagonal_kernel(4)
    theta = np.array([1.0, 2.0, 3.0])
    want = np.eye(4) + np.diag([2.0] * 4) + np.diag([1.0] * 3, -1) + np.diag([3.0] * 3, 1)
    np.testing.assert_array_equal(k.matrix(theta), want)
    assert k.Q.nnz == 3 * 4 - 2
    assert cli.tridiagonal_kernel(1).matrix(theta).tolist() == [[3.0]]


def test_structops_version(capsys):
    from structops import __version__

    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"structops {__version__}"
