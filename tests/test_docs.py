"""The documentation: its maths renders, and the user guide names what the code accepts.

The full nitpicky build (``sphinx-build -n -W -b html docs docs/_build/html``) runs in CI
(``.ci/run``) and in ``make docs``; here a one-page build of docs/contract.md with the real
configuration checks that MyST's dollar maths reaches MathJax, and docs/guide.md is checked
against the ``structops train`` parser, the families it builds and the boundary conditions.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

from structops.cli import build_parser
from structops.kernels.conv._core import BOUNDARY_CONDITIONS
from structops.train import KERNELS, TrainConfig, build_kernel

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
GUIDE = (DOCS / "guide.md").read_text(encoding="utf-8")

# $...$ on one line, not part of a $$...$$ display
INLINE_MATH = re.compile(r"(?<![$\\])\$(?!\$)([^$\n]+?)(?<!\\)\$")
MATH_SPAN = re.compile(r'<span class="math notranslate nohighlight">\\\((.*?)\\\)</span>', re.S)


@pytest.fixture(scope="module")
def contract_html(tmp_path_factory) -> str:
    """docs/contract.md built alone with docs/conf.py, in nitpicky mode with warnings as errors."""
    pytest.importorskip("sphinx")
    pytest.importorskip("myst_parser")
    pytest.importorskip("numpydoc")
    pytest.importorskip("pydata_sphinx_theme")
    others = sorted(
        str(p.relative_to(DOCS)) for p in DOCS.rglob("*") if p.suffix in {".rst", ".md"} and p.name != "contract.md"
    )
    out = tmp_path_factory.mktemp("docs")
    argv = [sys.executable, "-m", "sphinx", "-n", "-W", "-q", "-b", "html"]
    argv += ["-D", "root_doc=contract", "-D", f"exclude_patterns={','.join(['_build', *others])}"]
    argv += ["-d", str(out / "doctrees"), str(DOCS), str(out / "html")]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return (out / "html" / "contract.html").read_text(encoding="utf-8")


def test_the_contract_page_renders_its_dollar_maths_with_mathjax(contract_html):
    source = (DOCS / "contract.md").read_text(encoding="utf-8")
    expected = [m.strip() for m in INLINE_MATH.findall(source)]
    assert r"\theta \mapsto K(\theta)" in expected
    rendered = [m.strip() for m in MATH_SPAN.findall(contract_html)]
    # every $...$ of the page is a MathJax span, in order, and none is left as text
    assert [m for m in rendered if m in expected] == expected
    assert "$\\theta" not in contract_html
    assert "mathjax" in contract_html.lower()


def _train_parser() -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["train"]


def _choices() -> dict[str, tuple[str, ...]]:
    """``{"--kernel": (...), "--bc": (...), ...}``: every ``structops train`` option with choices."""
    return {
        action.option_strings[-1]: tuple(action.choices)
        for action in _train_parser()._actions
        if action.choices is not None and action.option_strings
    }


def test_the_guide_lists_every_choice_of_every_train_option_it_names():
    listed = dict(re.findall(r"`(--[a-z-]+) \{([^}`]*)\}`", GUIDE))
    choices = _choices()
    assert {"--kernel", "--bc", "--optimizer", "--dtype"} <= set(listed)
    for option, names in listed.items():
        assert option in choices, f"docs/guide.md lists {option}, which structops train does not take"
        assert names.split(",") == list(choices[option]), f"docs/guide.md's {option} is stale"


@pytest.mark.parametrize("name", KERNELS)
def test_the_guide_names_the_family_each_kernel_option_builds(name):
    assert _choices()["--kernel"] == KERNELS
    rows = dict(re.findall(r"^\| `([a-z]+)` \| `structops\.([A-Za-z]+)` \|", GUIDE, re.M))
    assert name in rows, f"docs/guide.md's --kernel table has no row for {name!r}"
    built = build_kernel(TrainConfig(kernel=name), (1, 8, 8))  # 8×8: no pooling
    assert type(built).__name__ == rows[name]


@pytest.mark.parametrize("bc", BOUNDARY_CONDITIONS)
def test_the_guide_describes_every_boundary_condition(bc):
    conv_section = GUIDE.split("## Convolutions", 1)[1].split("\n## ", 1)[0]
    assert f'`"{bc}"`' in conv_section, f"docs/guide.md's Conv section does not describe bc={bc!r}"
    assert bc in _choices()["--bc"]
