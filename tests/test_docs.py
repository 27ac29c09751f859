"""The documentation: its maths renders, and the user guide names what the code accepts.

The full nitpicky build (``sphinx-build -n -W -b html docs docs/_build/html``) runs in CI
(``.ci/run``) and in ``make docs``; here a one-page build of docs/contract.md with the real
configuration checks that MyST's dollar maths reaches MathJax, and docs/guide.md is checked
against the ``structops train`` parser, the families it builds and the boundary conditions.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
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
    # docs/conf.py writes the example pages into _autoexamples during the build: in a fresh clone
    # they are not there yet for the list above
    argv += ["-D", "root_doc=contract", "-D", f"exclude_patterns={','.join(['_build', '_autoexamples', *others])}"]
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


def _docs_conf():
    """docs/conf.py as a module (it imports structops and writes docs/_autoexamples, nothing else)."""
    spec = importlib.util.spec_from_file_location("structops_docs_conf", DOCS / "conf.py")
    conf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conf)
    return conf


DIRECTIVE = re.compile(r"^\.\. (auto(?:class|function|data|exception|module)|currentmodule):: ([\w.]+)", re.M)


def _api_targets() -> list[str]:
    """The full names of everything docs/api/*.rst documents (``structops.Sparse``, ...)."""
    targets = []
    for page in sorted((DOCS / "api").glob("*.rst")):
        current = ""
        for directive, name in DIRECTIVE.findall(page.read_text(encoding="utf-8")):
            if directive in {"currentmodule", "automodule"}:
                current = name
            if directive != "currentmodule":
                targets.append(name if "." in name or directive == "automodule" else f"{current}.{name}")
    return targets


@pytest.mark.parametrize(
    "module",
    ["structops", "structops.kernels", "structops.solvers", "structops.testing", "structops.train", "structops.data"],
)
def test_the_api_reference_documents_every_exported_name(module):
    documented = {name.rpartition(".")[2] for name in _api_targets()}
    exported = [name for name in importlib.import_module(module).__all__ if not name.startswith("__")]
    assert [name for name in exported if name not in documented] == []


def test_the_api_reference_shows_no_private_base():
    conf = _docs_conf()
    shown = {}
    for target in _api_targets():
        module, _, name = target.rpartition(".")
        obj = getattr(importlib.import_module(module), name, None) if module else None
        if isinstance(obj, type):
            shown[name] = [base.__name__ for base in conf.public_bases(obj.__bases__)]
    assert [(name, bases) for name, bases in shown.items() if any(b.startswith("_") for b in bases)] == []
    # a private base gives way to its own bases, so the chain shown stays true
    assert shown["Sparse"] == shown["Banded"] == ["PatternKernel"]
    assert shown["SGD"] == shown["Adam"] == ["Optimizer"]
    assert shown["SeparableConv"] == ["ConvBased", "Reparametrized"]
