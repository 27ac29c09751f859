"""The process-wide switches (threads, accelerator) as calls and as context managers that restore.

And the thread policy of issue 24: the default configuration never oversubscribes the cores
(checked in fresh processes, against the one-thread configuration, on facts that do not depend
on the machine's speed or load).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import structops
from structops import _backend


def _blas_threads() -> list[int]:
    threadpoolctl = pytest.importorskip("threadpoolctl")
    return [pool["num_threads"] for pool in threadpoolctl.threadpool_info() if pool["user_api"] == "blas"]


def _numba_threads() -> int | None:
    return _backend._numba_threads()


@pytest.fixture(autouse=True)
def _every_core_after():
    yield
    structops.set_num_threads(None)


def test_set_num_threads_as_a_context_manager_restores_the_previous_counts():
    structops.set_num_threads(None)
    numba_before = _numba_threads()
    with structops.set_num_threads(1) as setting:
        assert isinstance(setting, _backend.Setting)
        assert (_backend.num_threads(), _backend.workers()) == (1, 1)
        assert _numba_threads() in (1, None)
    assert (_backend.num_threads(), _backend.workers()) == (None, 1)  # one FFT worker by default
    assert _numba_threads() == numba_before


def test_settings_nest_and_restore_on_an_exception():
    with structops.set_num_threads(2):
        with pytest.raises(RuntimeError, match="boom"):
            with structops.set_num_threads(1):
                assert _backend.num_threads() == 1
                raise RuntimeError("boom")
        assert _backend.num_threads() == 2
    assert _backend.num_threads() is None


def test_the_call_form_keeps_its_setting_until_restored_once():
    setting = structops.set_num_threads(1)  # today's form: the setting stays
    assert _backend.num_threads() == 1
    structops.set_num_threads(2)
    setting.restore()  # back to what it was before *this* call
    assert _backend.num_threads() is None
    structops.set_num_threads(3)
    setting.restore()  # a second restore does nothing
    assert _backend.num_threads() == 3


def test_blas_cap_is_undone_on_exit():
    before = _blas_threads()
    if not before:
        pytest.skip("no BLAS pool visible to threadpoolctl")
    with structops.set_num_threads(None, blas_threads=1):
        assert set(_blas_threads()) == {1}
    assert _blas_threads() == before


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_bad_counts_change_nothing(bad):
    with structops.set_num_threads(2):
        with pytest.raises((TypeError, ValueError), match="threads"):
            structops.set_num_threads(bad)
        assert _backend.num_threads() == 2


@pytest.mark.skipif(not _backend._NUMBA_INSTALLED, reason="numba is not installed")
@pytest.mark.parametrize("inner", ["numpy", "numba"])
def test_set_accelerator_as_a_context_manager_restores_the_backend(inner, rng):
    before = _backend.have_numba()
    k = structops.Diagonal(5)
    theta, x = rng.standard_normal(5), rng.standard_normal((2, 5))
    with structops.set_accelerator(inner):
        assert _backend.have_numba() == (inner == "numba")
        np.testing.assert_allclose(k.apply(theta, x), theta * x)
    assert _backend.have_numba() == before
    with pytest.raises(ValueError, match="name"), structops.set_accelerator("cuda"):
        pass  # pragma: no cover - refused before the block
    assert _backend.have_numba() == before


# ------------------------------------------------------------------ the thread policy (issue 24)
_PROBE = """
import json, numpy as np, numba, structops
from structops import _backend
from structops.kernels.conv import _core

seen = {}

class Recorder:  # stands in for the numba kernels: records the counts they would run with
    def forward(self, *args):
        seen.setdefault("inside", []).append([numba.get_num_threads(), *_backend._blas_counts()])

_core._nb = Recorder()
small = structops.Conv((256, 256), (9, 9)).geometry  # the cgls problem of issue 24: one 256² image
big = structops.Conv((128, 128), (9, 9)).geometry
_core.numba_forward(np.ones(81), np.zeros((1, 1, 256, 256)), small)
_core.numba_forward(np.ones(81), np.zeros((64, 1, 128, 128)), big)
safe = []
for name in ("tbb", "omp"):
    try:
        __import__("numba.np.ufunc." + name + "pool")
        safe.append(name)
    except ImportError:
        pass
report = _backend.thread_report()
print(json.dumps({"report": report, "inside": seen["inside"], "after": _backend._blas_counts(),
                  "layer": numba.threading_layer(), "safe_layers": safe}))
"""

_ONE = {"OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
_USER_ENV = ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_THREADING_LAYER")


def _probe(*configs: dict[str, str]) -> list[dict]:
    """Run :data:`_PROBE` in fresh interpreters (at once) with the user's thread variables replaced by each config."""
    root = str(Path(structops.__file__).resolve().parent.parent)
    runs = []
    for extra in configs:
        env = {k: v for k, v in os.environ.items() if k not in _USER_ENV and not k.startswith("NUMBA_THREADING")}
        env.update(extra, PYTHONPATH=os.pathsep.join([root, env.get("PYTHONPATH", "")]))
        runs.append(
            subprocess.Popen(
                [sys.executable, "-c", _PROBE], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    reports = []
    for run in runs:
        out, err = run.communicate(timeout=300)
        assert run.returncode == 0, err
        reports.append(json.loads(out.strip().splitlines()[-1]))
    return reports


@pytest.mark.skipif(not _backend._NUMBA_INSTALLED, reason="numba is not installed")
def test_default_threads_never_oversubscribe_and_one_thread_is_respected():
    default, one = _probe({}, {**_ONE, "NUMBA_THREADING_LAYER": "workqueue"})
    cores = default["report"]["cores"]
    assert default["report"]["budget_source"] == "cores" and default["report"]["budget"] == cores
    # numba picks a thread-safe layer when one loads (structops runs kernels from any thread)
    assert default["layer"] in (default["safe_layers"] or ["workqueue"])
    (small_numba, *small_blas), (big_numba, *big_blas) = default["inside"]
    assert small_numba == 1  # one 256² image: below the work threshold, and one part only
    assert 1 <= big_numba <= min(cores, 64)
    # numba threads x BLAS threads while a kernel runs never exceed the cores
    assert all(big_numba * b <= cores for b in big_blas)
    assert default["after"] == default["report"]["blas_threads"]  # BLAS put back after the kernel
    assert default["report"]["fft_workers"] == 1
    if cores >= 2:
        assert big_numba >= 2  # 64 examples of 1.5e6 multiply-adds each do run in parallel
    # the one-thread configuration: every pool at one, the user's layer kept
    assert one["report"]["budget_source"] == "environment"
    assert (one["report"]["budget"], one["report"]["numba_pool"], one["report"]["fft_workers"]) == (1, 1, 1)
    assert one["inside"] == [[1, *[1] * len(small_blas)], [1, *[1] * len(big_blas)]]
    assert one["layer"] == "workqueue"


@pytest.mark.parametrize(
    ("work", "units", "threads", "expected"),
    [
        (256 * 256 * 81, 1, None, 1),  # one image: one part
        (1e12, 1, None, 1),
        (_backend.PARALLEL_WORK_MIN * 64, 3, 8, 3),  # no more threads than parts
        (_backend.PARALLEL_WORK_MIN * 2.5, 64, 8, 2),  # every thread gets PARALLEL_WORK_MIN
        (_backend.PARALLEL_WORK_MIN * 64, 64, 5, 5),  # the budget caps
        (_backend.PARALLEL_WORK_MIN * 0.9, 64, 8, 1),
    ],
)
@pytest.mark.skipif(not _backend._NUMBA_INSTALLED, reason="numba is not installed")
def test_kernel_thread_count_follows_work_parts_and_budget(work, units, threads, expected, monkeypatch):
    monkeypatch.setattr(_backend, "_numba_most", lambda: 16)
    with structops.set_num_threads(threads) if threads else structops.set_num_threads(None):
        if threads is None:
            monkeypatch.setattr(_backend, "_BUDGET", 8)
        assert _backend.kernel_thread_count(work, units) == expected


@pytest.mark.skipif(not _backend._NUMBA_INSTALLED, reason="numba is not installed")
def test_a_kernel_beside_another_running_kernel_stays_on_one_thread(monkeypatch):
    import numba

    monkeypatch.setattr(_backend, "kernel_thread_count", lambda work, units: min(2, _backend._numba_most()))
    expected = min(2, _backend._numba_most())
    started, release, seen = threading.Event(), threading.Event(), {}

    def caller() -> None:
        with _backend.kernel_threads(1e12, 64) as count:
            seen["first"] = (count, numba.get_num_threads())
            started.set()
            release.wait(30)

    worker = threading.Thread(target=caller)
    worker.start()
    assert started.wait(30)
    try:
        with _backend.kernel_threads(1e12, 64) as count:  # the caller's second thread
            seen["second"] = (count, numba.get_num_threads())
    finally:
        release.set()
        worker.join(30)
    assert seen == {"first": (expected, expected), "second": (1, 1)}
    with _backend.kernel_threads(1e12, 64) as count:  # alone again
        assert count == expected


def test_dense_steps_below_the_blas_threshold_run_on_one_blas_thread():
    before = _blas_threads()
    if not before:
        pytest.skip("no BLAS pool visible to threadpoolctl")
    with _backend.blas_threads_for(_backend.BLAS_SIDE_MIN - 1):
        assert set(_backend._blas_counts()) == {1}
    with _backend.blas_threads_for(4 * _backend.BLAS_SIDE_MIN):
        assert all(c <= max(b, _backend.thread_budget()) for c, b in zip(_backend._blas_counts(), before))
    assert _blas_threads() == before


def test_the_default_budget_follows_the_environment_and_multiprocessing(monkeypatch):
    import multiprocessing

    for name in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(multiprocessing, "parent_process", lambda: None)
    assert _backend._default_budget() == (_backend._cores(), "cores")
    monkeypatch.setenv("OMP_NUM_THREADS", "3,2")  # nested OpenMP lists: the outer count
    assert _backend._default_budget() == (3, "environment")
    monkeypatch.setenv("NUMBA_NUM_THREADS", "2")  # numba's own variable first
    assert _backend._default_budget() == (2, "environment")
    for name in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.setenv(name, "0")  # not a positive count: ignored
    monkeypatch.setattr(multiprocessing, "parent_process", lambda: object())  # a pool worker
    assert _backend._default_budget() == (1, "multiprocessing child")


@pytest.mark.parametrize("solver", ["cg", "lsqr", "cgls", "hybrid"])
def test_krylov_loops_run_their_vector_operations_on_one_blas_thread(solver):
    """Inside the Krylov loops of ``tikhonov`` and ``choose_alpha`` BLAS has one thread (its vector
    operations would fight the numba kernels' threads for the cores); the count is put back afterwards."""
    import pylops

    from structops.solvers._filters import as_regularizer
    from structops.solvers._hybrid import hybrid_choice
    from structops.solvers._krylov import krylov_solve

    before = _blas_threads()
    if not before or max(before) < 2:
        pytest.skip("BLAS already runs on one thread here")
    seen: list[list[int]] = []
    kernel = structops.Conv((12, 12), (3, 3))
    theta = np.full(9, 1.0 / 9.0)
    inner = kernel.op(theta)

    class Watching(pylops.LinearOperator):
        def __init__(self):
            super().__init__(dtype=inner.dtype, shape=inner.shape)

        def _matvec(self, x):
            seen.append(_blas_threads())
            return inner.matvec(x)

        def _rmatvec(self, y):
            return inner.rmatvec(y)

    b = np.random.default_rng(0).standard_normal(144)
    reference = np.linalg.solve(inner.todense().T @ inner.todense() + 1e-2 * np.eye(144), inner.rmatvec(b))
    if solver == "hybrid":  # the discrepancy principle on the Golub-Kahan projected problem
        found = hybrid_choice(Watching(), b, "discrepancy", target=0.5 * float(np.linalg.norm(b)))
        assert found.reachable and found.alpha > 0
    else:
        x, _, converged = krylov_solve(Watching(), as_regularizer(None, kernel), 1e-2, b, solver, None, 1e-10, 500)
        assert converged
        assert np.linalg.norm(x - reference) <= 1e-5 * np.linalg.norm(reference)
    assert seen and all(set(counts) == {1} for counts in seen)
    assert _blas_threads() == before
