"""Sphinx configuration for the structops documentation.

Build with ``make docs`` or ``sphinx-build -n -W -b html docs docs/_build/html`` (needs the
``docs`` extra: ``pip install -e ".[docs]"``). ``-n`` (nitpicky) turns every cross-reference
that finds no target into a warning and ``-W`` into an error, so a reference to a structops
name must point at a documented object; only other packages' names are exempt (below).
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))

import structops  # noqa: E402

project = "structops"
author = "The structops developers"
copyright = "2026, The structops developers"
release = structops.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# autodoc: document what a user imports; MPI is imported lazily by structops.distributed,
# mocking it lets the reference build without the `mpi` extra.
autodoc_mock_imports = ["mpi4py", "pylops_mpi"]
autodoc_default_options = {"members": True, "show-inheritance": True, "exclude-members": "symbol"}  # symbol: deprecated alias
autodoc_member_order = "bysource"
autodoc_typehints = "none"  # the numpydoc Parameters sections carry the types
autosummary_generate = False

# numpydoc renders the Parameters/Returns/Notes sections; member tables would duplicate
# the autodoc member entries.
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_validation_checks: set[str] = set()

# No intersphinx: CI and the development machines reach no documentation hosts. In nitpicky
# mode the references to other packages' objects (bases such as pylops.LinearOperator and
# abc.ABC, ``:func:`scipy.sparse.linalg.cg``` in a docstring) therefore find no target; they are
# exempt by package, and only other packages': a structops name must resolve.
nitpicky = True
EXTERNAL_PACKAGES = (
    "abc", "collections", "os", "typing", "numbers", "pathlib",  # the standard library
    "numpy", "np", "scipy", "pylops", "pylops_mpi", "mpi4py", "numba", "torch", "jax",
    "sklearn", "pywt", "matplotlib",
)  # fmt: skip
nitpick_ignore_regex = [
    (r"py:.*", rf"(?:{'|'.join(EXTERNAL_PACKAGES)})\..*"),
]

# $...$ and $$...$$ in the Markdown pages (docs/contract.md) are maths, rendered by MathJax.
myst_enable_extensions = ["dollarmath"]
myst_heading_anchors = 3

html_theme = "pydata_sphinx_theme"
html_title = f"structops {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
}
html_static_path: list[str] = []


# --- the examples as pages -------------------------------------------------------------------
# One page per examples/*.py, written at build time into docs/_autoexamples/ (not tracked), so a
# new example appears in the docs without editing them.
EXAMPLES = ROOT / "examples"
GENERATED = DOCS / "_autoexamples"


def _summary(path: Path) -> tuple[str, str]:
    """The first line of a script's docstring and the rest of it."""
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    first, _, rest = doc.partition("\n")
    return first.strip().rstrip(".") or path.stem, rest.strip()


def write_example_pages(app=None) -> None:
    """Write ``docs/_autoexamples/<name>.rst`` for every example script."""
    GENERATED.mkdir(exist_ok=True)
    wanted = set()
    for script in sorted(EXAMPLES.glob("*.py")):
        title, _ = _summary(script)
        heading = f"{script.name}: {title}"
        page = (
            f"{heading}\n{'=' * len(heading)}\n\n"
            f"``python examples/{script.name}``\n\n"
            f".. literalinclude:: ../../examples/{script.name}\n"
            "   :language: python\n"
            "   :linenos:\n"
        )
        target = GENERATED / f"{script.stem}.rst"
        wanted.add(target.name)
        if not target.exists() or target.read_text(encoding="utf-8") != page:
            target.write_text(page, encoding="utf-8")
    for stale in GENERATED.glob("*.rst"):
        if stale.name not in wanted:
            stale.unlink()


write_example_pages()


# --- numpydoc type lines ---------------------------------------------------------------------
# numpydoc copies a parameter's type (``X : array_like, shape (n, *in_shape)``) into reST as it
# is, where ``*in_shape`` opens an emphasis that never closes. Escape such stars in the type
# lines of the numpydoc sections before numpydoc reads the docstring.
_TYPED_SECTIONS = {
    "Parameters", "Other Parameters", "Attributes", "Returns", "Yields", "Receives", "Raises", "Warns"
}  # fmt: skip
_STAR = re.compile(r"(?<![*\\])\*(?=[A-Za-z_(])")


def _escape_type_stars(app, what, name, obj, options, lines: list[str]) -> None:
    section, indent = None, None
    for i, line in enumerate(lines):
        if i + 1 < len(lines) and lines[i + 1].strip() and set(lines[i + 1].strip()) == {"-"}:
            section, indent = line.strip(), None
            continue
        if section not in _TYPED_SECTIONS or not line.strip() or set(line.strip()) == {"-"}:
            continue
        here = len(line) - len(line.lstrip())
        if indent is None:
            indent = here
        if here != indent:
            continue  # a description line
        head, sep, kind = line.partition(" : ")
        if sep:
            lines[i] = head + sep + _STAR.sub(r"\\*", kind)
        elif section in {"Returns", "Yields", "Receives"}:
            lines[i] = _STAR.sub(r"\\*", line)


# --- bases ------------------------------------------------------------------------------------
# ``show-inheritance`` lists a class's bases; a private base (``_EntryPattern``, ``_PassedConv``,
# ``_MiniBatch``) is no part of the API and has no page, so show its own bases in its place.


def public_bases(bases) -> list:
    """``bases`` with every private class replaced by its bases, recursively, without repeats."""
    shown: list = []
    for base in bases:
        if getattr(base, "__name__", "").startswith("_"):
            candidates = [b for b in public_bases(base.__bases__) if b is not object]
        else:
            candidates = [base]
        shown.extend(b for b in candidates if b not in shown)
    return shown


def _drop_private_bases(app, name, obj, options, bases: list) -> None:
    bases[:] = public_bases(bases)


def setup(app):
    """Run the star escaping before numpydoc (priority < 500); hide private bases."""
    app.connect("autodoc-process-docstring", _escape_type_stars, priority=400)
    app.connect("autodoc-process-bases", _drop_private_bases)
    return {"parallel_read_safe": True}
