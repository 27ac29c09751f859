"""Shared fixtures: a seeded generator, the dtypes under test, and tolerances from eps."""

from __future__ import annotations

import os
import zlib

import numpy as np
import pytest
from hypothesis import settings

from structops.testing import default_rtol

DTYPES = (np.float32, np.float64)

# scripts that tests/test_distributed.py and tests/test_train_mpi.py run under `mpiexec`: not
# test modules, and --doctest-modules must not import them (they need mpi4py at import; the
# tests that run them skip cleanly without it)
collect_ignore = ["_mpi_checks.py", "_mpi_train_checks.py"]

# property tests draw the same examples on every run (reproducible CI, no flaky draws); set
# HYPOTHESIS_PROFILE=explore to search with fresh random examples
settings.register_profile("structops", derandomize=True, deadline=None)
settings.register_profile("explore", derandomize=False, deadline=None, max_examples=200)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "structops"))


@pytest.fixture
def rng(request) -> np.random.Generator:
    """A generator seeded from the test's id: reproducible, different per test case."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture(params=DTYPES, ids=lambda d: np.dtype(d).name)
def dtype(request) -> np.dtype:
    """float32 and float64."""
    return np.dtype(request.param)


def rtol_for(dtype, size: int = 1) -> float:
    """Tolerance for comparisons of results in ``dtype`` summing ``size`` terms."""
    return default_rtol(dtype, size)


def assert_close(actual, desired, dtype, size: int = 1) -> None:
    """Relative agreement in the Frobenius norm with a tolerance derived from eps of ``dtype``."""
    actual = np.asarray(actual, dtype=np.complex128 if np.iscomplexobj(actual) else np.float64)
    desired = np.asarray(desired, dtype=np.complex128 if np.iscomplexobj(desired) else np.float64)
    assert actual.shape == desired.shape, (actual.shape, desired.shape)
    scale = max(np.linalg.norm(desired), np.linalg.norm(actual), np.finfo(np.float64).tiny)
    err = np.linalg.norm(actual - desired) / scale
    assert err <= rtol_for(dtype, size), f"relative error {err:.3e} > {rtol_for(dtype, size):.3e}"


@pytest.fixture
def close():
    """``close(actual, desired, dtype, size)`` asserts agreement to eps-derived tolerance."""
    return assert_close
