"""The scratch memory of ``structops._scratch``: per-thread workspaces, and leases.

A workspace is one buffer per thread, slot and dtype, bounded per thread. The torch bridge
keeps a batch's transform from the forward to the backward in a lease; a later lease may reuse
the memory only once nothing holds the earlier one (an autograd graph kept alive keeps its
leases), and the pool is bounded.
"""

from __future__ import annotations

import gc
import threading
from unittest import mock

import numpy as np
import pytest

from structops import _scratch


@pytest.fixture(autouse=True)
def empty_pool():
    with mock.patch.object(_scratch, "_FREE", []), mock.patch.object(_scratch, "_FREE_BYTES", [0]):
        yield


def test_a_lease_is_an_array_of_the_shape_and_dtype():
    held = _scratch.lease((3, 4, 5), np.float32)
    assert held.array.shape == (3, 4, 5) and held.array.dtype == np.float32 and held.array.flags.c_contiguous
    held.array[...] = 1.0  # writable


def test_memory_is_reused_only_after_its_lease_is_dropped():
    first = _scratch.lease((100,), np.float64)
    second = _scratch.lease((100,), np.float64)
    assert not np.shares_memory(first.array, second.array)  # both held: distinct memory
    first.array[...] = 7.0
    kept = first.array.copy()
    third = _scratch.lease((100,), np.float64)
    assert not np.shares_memory(third.array, first.array)
    np.testing.assert_array_equal(first.array, kept)  # untouched while held
    address = first.array.__array_interface__["data"][0]
    del first
    gc.collect()
    again = _scratch.lease((90,), np.float64)  # given back: reused (90 <= 100 <= 180)
    assert again.array.__array_interface__["data"][0] == address
    assert again.array.shape == (90,)
    del second, third


def test_a_view_of_the_lease_keeps_it_and_so_does_a_tensor_made_from_the_view():
    """``numpy.asarray(lease)`` holds the lease: its memory is not handed out again while the view lives."""
    views = [np.asarray(_scratch.lease((100,), np.float64))]  # the lease itself is dropped at once
    torch = pytest.importorskip("torch")
    views.append(torch.from_numpy(np.asarray(_scratch.lease((100,), np.float64))))
    for view in views:
        view[:] = 3.0
    gc.collect()
    others = [_scratch.lease((100,), np.float64) for _ in range(2)]
    for view in views:
        assert not any(np.shares_memory(np.asarray(view), other.array) for other in others)
        assert (np.asarray(view) == 3.0).all()
    addresses = {np.asarray(view).__array_interface__["data"][0] for view in views}
    del views, view, others
    gc.collect()
    again = [_scratch.lease((100,), np.float64) for _ in range(4)]  # given back once the views are gone
    assert addresses <= {held.array.__array_interface__["data"][0] for held in again}


def test_a_buffer_is_taken_only_for_its_dtype_and_a_close_size():
    held = _scratch.lease((100,), np.float64)
    address = held.array.__array_interface__["data"][0]
    del held
    gc.collect()
    for shape, dtype in (((100,), np.float32), ((40,), np.float64), ((101,), np.float64)):
        other = _scratch.lease(shape, dtype)
        assert other.array.__array_interface__["data"][0] != address, (shape, dtype)
        del other
        gc.collect()


def test_the_pool_is_bounded():
    with mock.patch.object(_scratch, "POOL_BYTES", 1000):
        leases = [_scratch.lease((50,), np.float64) for _ in range(4)]  # 400 bytes each
        del leases
        gc.collect()
        assert _scratch._FREE_BYTES[0] <= 1000 and len(_scratch._FREE) == 2
        assert sum(b.nbytes for b in _scratch._FREE) == _scratch._FREE_BYTES[0]


def test_workspaces_are_per_thread_slot_and_dtype():
    a = _scratch.workspace((3, 4), np.float32)
    assert a.shape == (3, 4) and a.dtype == np.float32 and a.flags.c_contiguous
    assert np.shares_memory(_scratch.workspace((3, 4), np.float32), a)
    assert np.shares_memory(_scratch.workspace((2, 5), np.float32), a)  # a smaller one: the same buffer
    grown = _scratch.workspace((5, 7), np.float32)  # a larger one grows it
    assert grown.shape == (5, 7) and np.shares_memory(_scratch.workspace((3, 4), np.float32), grown)
    assert not np.shares_memory(_scratch.workspace((3, 4), np.float64), grown)
    assert not np.shares_memory(_scratch.workspace((3, 4), np.float32, "rows"), grown)
    other = []
    thread = threading.Thread(target=lambda: other.append(_scratch.workspace((3, 4), np.float32)))
    thread.start()
    thread.join()
    assert not np.shares_memory(other[0], grown)  # another thread has its own
    big = (_scratch.WORKSPACE_BYTES // 8 + 1,)
    assert not np.shares_memory(_scratch.workspace(big, np.float64), _scratch.workspace(big, np.float64))


def test_a_thread_keeps_at_most_twice_the_workspace_cap():
    def body():  # in a new thread: its own, empty cache
        a = _scratch.workspace((100,), np.float64, "cap-a")  # 800 bytes each: two fit
        b = _scratch.workspace((100,), np.float64, "cap-b")
        assert np.shares_memory(_scratch.workspace((100,), np.float64, "cap-a"), a)
        c = _scratch.workspace((100,), np.float64, "cap-c")  # a third drops the others
        assert np.shares_memory(_scratch.workspace((100,), np.float64, "cap-c"), c)
        again = _scratch.workspace((100,), np.float64, "cap-a")
        assert not np.shares_memory(again, a) and not np.shares_memory(again, b)
        a[...] = 1.0  # the arrays handed out before stay valid memory
        assert np.all(a == 1.0)
        done.append(True)

    done: list[bool] = []
    with mock.patch.object(_scratch, "WORKSPACE_BYTES", 800):
        thread = threading.Thread(target=body)
        thread.start()
        thread.join()
    assert done == [True]
