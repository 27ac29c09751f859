"""Batch-sized scratch memory that is not faulted in again at every call.

A fresh array of a few MB on every step is fresh memory: glibc returns large freed blocks to
the kernel, and touching the next one faults its pages in again. Two kinds of reuse:

* :func:`workspace`: scratch a call uses and drops, one buffer per thread and named slot;
* :func:`lease`: arrays that outlive a call, leased from a pool and given back when dropped.

The torch bridge keeps a batch's transform from the forward to the backward (the
transform-domain hooks of ``docs/contract.md``). Made fresh, such an array faults its pages in
at every step (on a 2-core VM about 1 ms per 6 MB; a 128-image step of a 28×28
``CayleyConv`` of 16 channels faulted 3,200 pages for its two kept transforms, 19–23 ms a step
against 15 ms without them). :func:`lease` hands out such arrays from memory that earlier,
dropped leases gave back.

**Safe by construction.** Memory goes back to the pool only when its :class:`Lease` is garbage:
whoever keeps the lease (an autograd context, a tuple in a backward) keeps the memory, and a
graph that is kept alive keeps its leases. Code that takes ``lease.array`` must not keep that
array (or a view of it) beyond the lease's lifetime: the family hooks use it within the call.
"""

from __future__ import annotations

import math
import threading
import weakref

import numpy as np

__all__ = ["POOL_BYTES", "WORKSPACE_BYTES", "Lease", "lease", "workspace"]

#: At most this many bytes of given-back memory wait in the pool; beyond it, memory is freed.
POOL_BYTES = 2**27

_LOCK = threading.Lock()
_FREE: list[np.ndarray] = []  # flat buffers given back, most recent last
_FREE_BYTES = [0]


class Lease:
    """An array in pooled memory (``array``); the memory returns to the pool when the lease is garbage.

    ``numpy.asarray(lease)`` is a view whose base is the lease itself, so that the memory stays
    leased while that view (or a tensor made from it by ``torch.from_numpy``) lives.
    """

    __slots__ = ("__weakref__", "array")

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    @property
    def __array_interface__(self) -> dict:
        return self.array.__array_interface__


def lease(shape: tuple[int, ...], dtype: np.dtype) -> Lease:
    """A C-contiguous array of ``shape`` and ``dtype`` (uninitialised), in memory from the pool when it has some.

    A given-back buffer is taken when it has the dtype and holds at least the size and at most
    twice it (so that a small array never pins a large buffer); else a new one is made.
    """
    dtype = np.dtype(dtype)
    size = math.prod(shape)
    buffer = None
    with _LOCK:
        for i in range(len(_FREE) - 1, -1, -1):
            candidate = _FREE[i]
            if candidate.dtype == dtype and size <= candidate.size <= 2 * size:
                buffer = _FREE.pop(i)
                _FREE_BYTES[0] -= buffer.nbytes
                break
    if buffer is None:
        buffer = np.empty(size, dtype)
    held = Lease(buffer[:size].reshape(shape))
    weakref.finalize(held, _give_back, buffer)
    return held


def _give_back(buffer: np.ndarray) -> None:
    """Put ``buffer`` in the pool (the oldest ones leave first beyond :data:`POOL_BYTES`)."""
    with _LOCK:
        _FREE.append(buffer)
        _FREE_BYTES[0] += buffer.nbytes
        while _FREE_BYTES[0] > POOL_BYTES:
            _FREE_BYTES[0] -= _FREE.pop(0).nbytes


#: Scratch arrays up to this many bytes are kept for the next call (:func:`workspace`), and a
#: thread keeps at most twice this in all.
WORKSPACE_BYTES = 2**26

_WORKSPACES = threading.local()


def workspace(shape: tuple[int, ...], dtype: np.dtype, slot: str = "products") -> np.ndarray:
    """A C-contiguous scratch array of ``shape`` and ``dtype`` in memory the calling thread reuses.

    Each thread keeps one buffer per ``slot`` and dtype, grown to the largest size asked for up
    to :data:`WORKSPACE_BYTES` (larger arrays are not kept), and at most twice that in all (a
    buffer that does not fit drops the thread's others); the result is a view of its start,
    valid until the thread's next call with the same ``slot``: a caller that needs two scratch
    arrays at once names two slots. (The numba inverse FFT puts its per-frequency products in
    slot ``"products"``; ``CayleyConv`` its half spectra in ``"rows"`` and ``"rows-w"``, and the
    fused path of its torch form an output gradient's in ``"rows"``.)
    """
    cache = _WORKSPACES.__dict__.setdefault("buffers", {})
    dtype = np.dtype(dtype)
    size = math.prod(shape)
    if size * dtype.itemsize > WORKSPACE_BYTES:
        return np.empty(shape, dtype)
    key = (slot, dtype.str)
    buffer = cache.get(key)
    if buffer is None or buffer.size < size:
        others = sum(b.nbytes for k, b in cache.items() if k != key)
        if others + size * dtype.itemsize > 2 * WORKSPACE_BYTES:
            cache.clear()  # (the views handed out keep their memory alive)
        buffer = cache[key] = np.empty(size, dtype)
    return buffer[:size].reshape(shape)
