"""The process-wide switches (threads, accelerator) as calls and as context managers that restore."""

from __future__ import annotations

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
    assert (_backend.num_threads(), _backend.workers()) == (None, -1)
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
