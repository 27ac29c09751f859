"""The README works as written: its Python runs, its commands are CI's, its quoted output is real.

* the Python blocks run in order, sharing one namespace, like a notebook (and those of the
  user guide, docs/guide.md);
* the output blocks between ``<!-- output: CMD -->`` and ``<!-- end output -->`` are what
  ``docs/update_readme.py`` writes, and the numbers they quote are what the commands print now;
* the generator finds, rewrites and refuses markers correctly (on small fake commands).
"""

from __future__ import annotations

import ast
import configparser
import functools
import importlib.util
import re
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest

from structops import cli

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
TEXT = README.read_text(encoding="utf-8")
BLOCKS = re.findall(r"```python\n(.*?)```", TEXT, re.S)


def _load_generator():
    spec = importlib.util.spec_from_file_location("update_readme", ROOT / "docs" / "update_readme.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("update_readme", module)
    spec.loader.exec_module(module)
    return module


gen = _load_generator()


def _quoted(command: str) -> list[str]:
    """The lines the README quotes as the output of ``command`` (without the ``$`` prompt)."""
    block = next(b for b in gen.find_blocks(TEXT) if b.command == command)
    lines = TEXT[block.start : block.stop].strip().splitlines()
    assert lines[0] == "```text" and lines[1] == f"$ {command}" and lines[-1] == "```", lines[:2]
    return lines[2:-1]


# --- the README as a newcomer reads it --------------------------------------------------------


def test_the_readme_is_short_and_cites_what_it_implements():
    assert len(TEXT.splitlines()) < 300
    flat = " ".join(TEXT.split())
    assert 'Lars Ruthotto\'s lecture notes *Numerical Methods for Deep Learning*, "Parametric Models"' in flat
    for vague in ("the seed", "seed's", "the notes'", "round 4", "issue 3"):
        assert vague not in TEXT, vague
    assert "## Writing your own family" in TEXT


def test_the_three_commands_and_ci_runs_the_readme_test_command():
    commands = re.search(r"## The three commands\n\n```bash\n(.*?)```", TEXT, re.S).group(1).splitlines()
    install, main_job, tests = (line.split("#")[0].strip() for line in commands)
    assert install == 'pip install -e ".[test]"'
    assert main_job == "structops train"
    assert tests == "pytest"
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    # CI installs exactly what the README says, then runs exactly its test command, before any
    # other install: a test dependency missing from the README's extra fails CI as it fails a newcomer
    project_installs = [i for i, line in enumerate(ci) if line.startswith("pip install -e")]
    assert project_installs and ci[project_installs[0]] == install, ci
    assert ci.index(tests) == project_installs[0] + 1, "the README's test command must follow its install"
    before = [line for line in ci[: project_installs[0]] if line.startswith(("pip install", "python -m pip install"))]
    assert before == ["python -m pip install --upgrade pip >/dev/null", 'pip install "torch==2.13.0"'], before
    # then the slow tests, then the output-comparing tests again under one and two threads and an
    # AVX2-only numba target, then the README's suite with numpy, OpenBLAS and numba restricted to AVX2
    commands = [line for line in ci if line and not line.startswith("#")]
    assert commands[commands.index(tests) + 1] == "pytest -m slow", commands
    reruns = [line for line in ci if line.endswith("pytest -m output")]
    for setting in ("OMP_NUM_THREADS=1", "OMP_NUM_THREADS=2", "NUMBA_CPU_NAME=haswell"):
        assert any(line.startswith(setting) for line in reruns), setting
    start = next(i for i, line in enumerate(commands) if line.startswith("AVX2=(env NPY_DISABLE_CPU_FEATURES="))
    avx2 = " ".join(commands[start : start + 2])
    for setting in ("X86_V4 AVX512_ICL AVX512_SPR", "OPENBLAS_CORETYPE=Haswell", "NUMBA_CPU_NAME=haswell"):
        assert setting in avx2, setting
    assert "NUMBA_CPU_FEATURES= " in avx2 and "NUMBA_CACHE_DIR=" in avx2, avx2
    whole = commands.index('"${AVX2[@]}" pytest')
    last_rerun = max(i for i, line in enumerate(commands) if line.endswith("pytest -m output"))
    assert last_rerun < whole < commands.index('pip install -e ".[dev]"'), commands
    # the developer extra repeats the others (extras cannot portably name each other)
    extras = configparser.ConfigParser()
    extras.read(ROOT / "setup.cfg")
    section = extras["options.extras_require"]

    def requirements(names: str) -> set[str]:
        return {req for name in names.split(",") for req in section[name.strip()].split()}

    assert requirements("test,mpi,docs") <= requirements("dev")
    assert requirements("mpi") <= requirements("test")  # the suite's MPI tests run after the README's install


def test_the_readme_has_python_examples():
    assert len(BLOCKS) >= 1


@pytest.mark.output
def test_readme_examples_run_in_order():
    namespace: dict = {}
    for i, block in enumerate(BLOCKS):
        if "pylops_mpi" in block and importlib.util.find_spec("pylops_mpi") is None:
            continue  # an MPI example needs the `mpi` extra
        if "structops.torch" in block and importlib.util.find_spec("torch") is None:
            continue  # the PyTorch example needs the `torch` extra
        try:
            exec(compile(block, f"README.md python block {i}", "exec"), namespace)
        except Exception as exc:  # pragma: no cover - the failure is the report
            pytest.fail(f"README python block {i} raised {type(exc).__name__}: {exc}\n{block}")
    # what the tour claims: the stencil fitted from the examples is the blur that made them,
    # and a short training run learns the digits
    np.testing.assert_allclose(namespace["fit"], namespace["theta"], atol=1e-8)
    assert namespace["result"].test_acc > 0.9


def test_the_user_guide_examples_run_in_order():
    # docs/guide.md holds the long-form examples that used to be in the README
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "guide.md").read_text(encoding="utf-8"), re.S)
    assert len(blocks) >= 3
    namespace: dict = {}
    for i, block in enumerate(blocks):
        if "pylops_mpi" in block and importlib.util.find_spec("pylops_mpi") is None:
            continue  # the MPI example needs the `mpi` extra
        try:
            exec(compile(block, f"docs/guide.md python block {i}", "exec"), namespace)
        except Exception as exc:  # pragma: no cover - the failure is the report
            pytest.fail(f"docs/guide.md python block {i} raised {type(exc).__name__}: {exc}\n{block}")
    # what the last examples claim: the fitted stencil is the blur that made the data
    fit = namespace["fit"]
    if "distributed" in namespace:
        np.testing.assert_allclose(fit.theta, namespace["gaussian_stencil"](7, 1.0).ravel(), atol=1e-6)
    else:
        np.testing.assert_allclose(fit.theta, namespace["theta"], atol=1e-6)


# --- the generated output blocks --------------------------------------------------------------


def test_the_readme_quotes_the_main_job_and_the_quick_check():
    commands = [b.command for b in gen.find_blocks(TEXT)]
    assert "structops train" in commands and "structops check --quick" in commands


def _check_rows(lines: list[str]) -> tuple[list[tuple[str, ...]], str]:
    """The rows of a ``structops check`` table (cells are separated by two or more spaces)."""
    assert re.split(r"\s{2,}", lines[0].strip()) == [
        "family", "size", "dtype", "checks", "worst check", "error", "tol", "result"
    ]  # fmt: skip
    rows = []
    for line in lines[2:]:
        if "family checks passed" in line:
            return rows, re.sub(r" in [0-9.]+ s$", "", line)
        if line.strip():
            cells = tuple(re.split(r"\s{2,}", line.strip()))
            assert len(cells) == 8, line
            rows.append(cells)
    raise AssertionError("no summary line")


@pytest.mark.output
def test_the_quoted_quick_check_is_what_structops_check_prints(capsys):
    quoted, quoted_summary = _check_rows(_quoted("structops check --quick"))
    for family, _size, _dtype, _n, _worst, error, tol, result in quoted:
        assert result == "ok" and float(error) <= float(tol), family
    assert cli.main(shlex.split("check --quick")) == 0
    now, now_summary = _check_rows(capsys.readouterr().out.splitlines())
    assert quoted_summary == now_summary
    # family, size, dtype, number of checks and verdict are exact. Which check is the worst is
    # round-off (it depends on the BLAS, the thread count and the instruction set), and the
    # tolerance printed is that check's: each row's error must pass its own tolerance, which
    # is of the order of the quoted one (all of a row's tolerances scale with the same dtype).
    keep = (0, 1, 2, 3, 7)
    assert [tuple(r[i] for i in keep) for r in quoted] == [tuple(r[i] for i in keep) for r in now]
    for q_row, n_row in zip(quoted, now):
        assert float(n_row[5]) <= float(n_row[6]), n_row
        assert 0.1 < float(n_row[6]) / float(q_row[6]) < 10, (q_row, n_row)


def _without_times(lines: list[str]) -> list[str]:
    return [re.sub(r"\([0-9.]+ s\)|time [0-9.]+ s", "(time)", line) for line in lines]


@pytest.mark.output
def test_the_quoted_training_run_is_what_structops_train_prints(capsys):
    # the default run takes a few seconds (in process: no second import, numba already compiled);
    # every number but the times must match
    quoted = _without_times(_quoted("structops train"))
    assert re.match(r"train accuracy [0-9.]+%, test accuracy [0-9.]+% after \d+ epochs", quoted[-1])
    assert cli.main(["train"]) == 0
    assert _without_times(capsys.readouterr().out.strip().splitlines()) == quoted


# --- the generator on fake commands -----------------------------------------------------------

FAKE = """# title

<!-- output: echo one -->
```text
$ echo one
stale
```
<!-- end output -->

text between

<!-- output: echo two -->
<!-- end output -->
tail
"""


def test_the_generator_finds_the_blocks_in_order():
    blocks = gen.find_blocks(FAKE)
    assert [b.command for b in blocks] == ["echo one", "echo two"]
    assert FAKE[blocks[0].start : blocks[0].stop] == "```text\n$ echo one\nstale\n```\n"
    assert FAKE[blocks[1].start : blocks[1].stop] == ""


def test_the_generator_rewrites_only_between_the_markers():
    new = gen.update(FAKE, run=lambda cmd: f"ran {cmd}\nline 2\n")
    assert new == FAKE.replace("stale", "ran echo one\nline 2").replace(
        "<!-- output: echo two -->\n", "<!-- output: echo two -->\n```text\n$ echo two\nran echo two\nline 2\n```\n"
    )
    assert gen.update(new, run=lambda cmd: f"ran {cmd}\nline 2\n") == new  # idempotent
    partial = gen.update(FAKE, run=lambda cmd: "new\n", only=["echo two"])
    assert "stale" in partial and "$ echo two\nnew\n" in partial


def test_the_generator_runs_a_real_command(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text('a\n<!-- output: python -c "print(6 * 7)" -->\n<!-- end output -->\nb\n', encoding="utf-8")
    assert gen.main(["--readme", str(readme)]) == 0
    assert readme.read_text(encoding="utf-8") == (
        'a\n<!-- output: python -c "print(6 * 7)" -->\n```text\n$ python -c "print(6 * 7)"\n42\n```\n'
        "<!-- end output -->\nb\n"
    )


def test_a_failing_command_leaves_the_readme_alone(tmp_path, capsys):
    readme = tmp_path / "README.md"
    text = '<!-- output: python -c "raise SystemExit(3)" -->\nold\n<!-- end output -->\n'
    readme.write_text(text, encoding="utf-8")
    assert gen.main(["--readme", str(readme)]) == 3
    assert readme.read_text(encoding="utf-8") == text
    assert "README unchanged" in capsys.readouterr().err


@pytest.mark.parametrize(
    "text",
    [
        "<!-- output: echo a -->\nno end\n",
        "<!-- output: echo a -->\n<!-- output: echo b -->\n<!-- end output -->\n",
        "<!-- end output -->\n<!-- output: echo a -->\n<!-- end output -->\n",
        "<!-- output: echo a -->\n<!-- end output -->\n<!-- end output -->\n",
    ],
)
def test_malformed_markers_are_refused(text):
    with pytest.raises(gen.MarkerError, match="README line"):
        gen.find_blocks(text)


def test_pytest_collects_without_the_mpi_extra():
    # `--doctest-modules` imports every module under tests/; the scripts run under mpiexec import
    # mpi4py at the top, so they are not collected (the tests that run them skip without mpi4py)
    from tests import conftest

    for path in sorted((ROOT / "tests").glob("*.py")):
        tree = _tree(path)
        top = {a.name.split(".")[0] for node in tree.body if isinstance(node, ast.Import) for a in node.names}
        top |= {node.module.split(".")[0] for node in tree.body if isinstance(node, ast.ImportFrom) and node.module}
        if top & {"mpi4py", "pylops_mpi"}:
            assert path.name in conftest.collect_ignore, f"{path.name} needs mpi4py at import"


def test_the_readme_families_table_is_the_registry():
    # docs/update_readme.py writes it from structops.families.FAMILIES: one entry per built-in family
    from structops.families import FAMILIES, families_table

    assert gen.update_table(TEXT) == TEXT
    table = families_table()
    assert all(f.table[0] in table for f in FAMILIES)
    with pytest.raises(gen.MarkerError, match="families table"):
        gen.update_table("<!-- families table -->\nno end\n", table)
    assert gen.update_table("no table\n", table) == "no table\n"


@functools.cache
def _tree(path: Path) -> ast.Module:
    """A test module's syntax tree (parsed once for the two tests that read them all)."""
    return ast.parse(path.read_text(encoding="utf-8"))


def _quick_tests(path: Path) -> list[str]:
    """The test functions of a test module that are not marked slow as a whole (nor is their module).

    tests/conftest.py keeps at least one case of each of these in the quick run (every word of every
    parameter id, or the single case of an unparametrised test).
    """
    tree = _tree(path)
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "pytestmark" for t in node.targets):
            if "mark.slow" in ast.unparse(node.value):
                return []
    nodes = [*tree.body, *(n for c in tree.body if isinstance(c, ast.ClassDef) for n in c.body)]
    return [
        node.name
        for node in nodes
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.name.startswith("test")
        and not any("mark.slow" in ast.unparse(d) for d in node.decorator_list)
    ]


def test_the_quick_run_keeps_a_test_of_every_module_and_every_family():
    # the README's `pytest` is the quick run: what it leaves to `pytest -m slow` must not empty a
    # test module, nor leave out a built-in family
    quick = {path.name: _quick_tests(path) for path in sorted((ROOT / "tests").glob("test_*.py"))}
    assert len(quick) > 50 and all(quick.values()), sorted(name for name, tests in quick.items() if not tests)
    # every built-in family: `structops check --quick` runs check_kernel on instances of each, in
    # process, in two quick tests
    assert "test_check_quick_prints_a_table_and_returns_0" in quick["test_cli.py"]
    assert "test_the_quoted_quick_check_is_what_structops_check_prints" in quick["test_readme.py"]
    from structops.families import FAMILIES

    assert [f.name for f in FAMILIES if not [*f.check_per_size(3), *f.check()]] == []


def test_the_quick_test_finder_sees_function_and_module_marks(tmp_path):
    module = tmp_path / "test_m.py"
    module.write_text(
        "import pytest\n\n@pytest.mark.slow\ndef test_a(): pass\n\n"
        "@pytest.mark.parametrize('n', [1])\ndef test_b(n): pass\n"
    )
    assert _quick_tests(module) == ["test_b"]
    slow_module = tmp_path / "test_slow.py"
    slow_module.write_text("import pytest\npytestmark = [pytest.mark.slow]\n\ndef test_a(): pass\n")
    assert _quick_tests(slow_module) == []
