"""The README's Python examples run as written (in order, sharing one namespace, like a notebook)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_the_readme_has_python_examples():
    assert len(BLOCKS) >= 4


def test_readme_examples_run_in_order():
    namespace: dict = {}
    for i, block in enumerate(BLOCKS):
        if "pylops_mpi" in block and importlib.util.find_spec("pylops_mpi") is None:
            continue  # the MPI example needs the `mpi` extra
        try:
            exec(compile(block, f"README.md python block {i}", "exec"), namespace)
        except Exception as exc:  # pragma: no cover - the failure is the report
            pytest.fail(f"README python block {i} raised {type(exc).__name__}: {exc}\n{block}")
    # what the last examples claim: the fitted stencil is the blur that made the data
    fit = namespace["fit"]
    if "distributed" in namespace:
        np.testing.assert_allclose(fit.theta, namespace["gaussian_stencil"](7, 1.0).ravel(), atol=1e-6)
    else:
        np.testing.assert_allclose(fit.theta, namespace["theta"], atol=1e-6)
