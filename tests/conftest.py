"""Shared fixtures: a seeded generator, the dtypes under test, tolerances from eps; the quick/slow split.

The default run (the README's ``pytest``) is quick: of every parametrised test it keeps a subset
of cases in which every word of every parameter id (family, boundary condition, dimension, dtype,
stride, ...) appears at least once, and marks the other cases of the product ``slow``; property tests draw a
fifth of their examples. ``pytest -m slow`` runs what the default run leaves out and the property
tests again with their full budgets; ``pytest --runslow`` runs everything (full budgets). See docs/guide.md.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zlib

import numpy as np
import pytest
from hypothesis import settings

from structops.testing import default_rtol

DTYPES = (np.float32, np.float64)

# scripts that tests/test_distributed.py and tests/test_train_mpi.py run under `mpiexec`: not
# test modules, and --doctest-modules must not import them (they need mpi4py at import; the
# tests that run them skip cleanly without it)
collect_ignore = ["_mpi_checks.py", "_mpi_train_checks.py", "_numba_warmup.py"]

# property tests draw the same examples on every run (reproducible CI, no flaky draws); set
# HYPOTHESIS_PROFILE=explore to search with fresh random examples. A test that sets its own budget
# writes it as ``max_examples=examples(n)`` (tests/_helpers.py): n times the profile's
# max_examples / 100, so n under the slow run (hypothesis' default of 100), n / 5 by default.
settings.register_profile("structops", derandomize=True, deadline=None, max_examples=20)
settings.register_profile("structops-slow", derandomize=True, deadline=None, max_examples=100)
settings.register_profile("explore", derandomize=False, deadline=None, max_examples=200)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--runslow",
        action="store_true",
        default=False,
        help="run the slow tests too (the exhaustive parameter matrices); `-m slow` runs only them",
    )


def pytest_sessionstart(session: pytest.Session) -> None:
    """Compile the numba kernels in a second process while this one collects and runs tests.

    Only for a whole run (no paths or node ids on the command line: the README's ``pytest``,
    ``-m slow``, ``--runslow``), where it takes a cold run's kernel compilation (about a minute
    of one core) off the critical path on two cores; see tests/_numba_warmup.py.
    """
    config = session.config
    if config.args_source is not pytest.Config.ArgsSource.TESTPATHS or hasattr(config, "workerinput"):
        return
    script = os.path.join(os.path.dirname(__file__), "_numba_warmup.py")
    config._structops_warmup = subprocess.Popen(  # type: ignore[attr-defined]
        [sys.executable, script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def pytest_sessionfinish(session: pytest.Session) -> None:
    warmup = getattr(session.config, "_structops_warmup", None)
    if warmup is not None and warmup.poll() is None:
        warmup.terminate()  # a short run (-m output, say) need not wait for it
        warmup.wait()


def _slow_selected(config: pytest.Config) -> bool:
    """Whether this run asked for slow tests: --runslow, or a -m expression that names them."""
    return bool(config.getoption("runslow")) or "slow" in (config.getoption("markexpr") or "")


def pytest_configure(config: pytest.Config) -> None:
    default = "structops-slow" if _slow_selected(config) else "structops"
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", default))


def pytest_report_header(config: pytest.Config) -> str:
    if _slow_selected(config):
        return "structops: slow tests selected (full parameter matrices, full hypothesis budgets)"
    return "structops: quick run; the slow cases are deselected (run them with -m slow, or all with --runslow)"


def _tokens(item: pytest.Item) -> set[tuple[int, str]]:
    """What one case exercises: the words of each parameter's id, with the parameter's position.

    An id such as ``Conv-3d-reflect-s2`` names a family, a dimension, a boundary and a stride;
    covering its words (rather than whole ids) keeps one case per family *and* per dimension,
    boundary and stride, not one per combination.
    """
    # pytest keeps one id per parametrize call (and per parametrised fixture) in callspec._idlist;
    # without it, each parameter's index stands for its value
    ids = getattr(item.callspec, "_idlist", None)
    if ids is None:
        return {(hash(name) % 10**6, str(index)) for name, index in item.callspec.indices.items()}
    return {(pos, word) for pos, part in enumerate(ids) for word in str(part).split("-") if word}


def covering_subset(items: list[pytest.Item]) -> set[int]:
    """Indices of a small subset of one test's cases in which every word of every id occurs.

    Greedy set cover: each round keeps the case that covers the most words not yet covered (the
    first such case in collection order), so the subset has about as many cases as the longest
    parameter list, not their product.
    """
    words = [_tokens(item) for item in items]
    uncovered = set().union(*words)
    keep: set[int] = set()
    while uncovered:
        best = max(range(len(items)), key=lambda i: (len(words[i] & uncovered), -i))
        keep.add(best)
        uncovered -= words[best]
    return keep


@pytest.hookimpl(tryfirst=True)  # before pytest's own -m selection, which then sees the slow marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    groups: dict[tuple[str, str], list[pytest.Item]] = {}
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is None or not callspec.params or any(item.get_closest_marker(m) for m in ("output", "slow")):
            continue  # the output tests stay whole: CI reruns them under other threads and CPUs
        groups.setdefault((str(item.path), item.originalname), []).append(item)
    for cases in groups.values():
        if len(cases) > 1:
            keep = covering_subset(cases)
            for i, item in enumerate(cases):
                if i not in keep:
                    item.add_marker(pytest.mark.slow)
    if _slow_selected(config):
        # the property tests ran with a fifth of their budget in the quick run: -m slow reruns them in full
        for item in items:
            if getattr(getattr(item, "obj", None), "is_hypothesis_test", False):
                item.add_marker(pytest.mark.slow)
        return
    named = {arg.replace("\\", "/") for arg in config.args}  # a case named on the command line runs
    quick, slow = [], []
    for item in items:
        (slow if item.get_closest_marker("slow") is not None and item.nodeid not in named else quick).append(item)
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = quick


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
