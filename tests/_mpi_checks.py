"""Checks of :mod:`structops.distributed` run on several ranks (``mpiexec -n 2 python this``).

Every rank builds the same global batch from a shared seed, keeps its share, and compares the
distributed products with the serial structops operators on the whole batch. Exits non-zero
(an ``AssertionError`` on some rank) on any mismatch; rank 0 prints ``ok <size>`` at the end.
"""

from __future__ import annotations

import os

import numpy as np
from mpi4py import MPI
from pylops_mpi.utils import dottest

import structops
from structops import distributed as D

comm = MPI.COMM_WORLD


def close(a, b, rtol):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    scale = max(np.abs(b).max(), 1e-30)
    assert np.abs(a - b).max() <= rtol * scale, (np.abs(a - b).max(), scale)


def check(kernel, n, dtype, transpose):
    rng = np.random.default_rng(7)  # the same global data on every rank
    rows_in, rows_out = kernel.shape[::-1] if not transpose else kernel.shape
    X = rng.standard_normal((n, rows_in)).astype(dtype)
    W = rng.standard_normal((n, rows_out)).astype(dtype)
    theta = kernel.random_theta(rng, dtype=dtype)
    v = rng.standard_normal(kernel.nparams).astype(dtype)
    rtol = 1e-12 if dtype == np.float64 else 1e-4
    mine = D.local_rows(n)

    # the Jacobian: J v scattered by examples, J^T w reduced over the ranks
    J = D.jacobian(kernel, theta, X[mine], transpose=transpose)
    Jref = kernel.jac(theta, X, transpose=transpose)
    close(J.matvec(D.broadcast(v)).asarray(), Jref.matvec(v), rtol)
    close(J.rmatvec(D.scatter(W[mine])).local_array, Jref.rmatvec(W.ravel()), rtol)
    assert dottest(J, D.broadcast(v), D.scatter(W[mine]), rtol=10 * rtol)

    # the layer over the batch, I_n (x) K(theta)
    op = D.operator(kernel, theta, mine.stop - mine.start, transpose=transpose)
    close(op.matvec(D.scatter(X[mine])).asarray(), kernel.apply(theta, X, transpose=transpose).ravel(), rtol)
    close(op.rmatvec(D.scatter(W[mine])).asarray(), kernel.apply(theta, W, transpose=not transpose).ravel(), rtol)

    # the distributed fit recovers theta from noiseless data
    Y = kernel.apply(theta, X, transpose=transpose).reshape(n, -1)
    if n * Y.shape[1] >= 2 * kernel.nparams:
        fit = D.learn_stencil(kernel, X[mine], Y[mine], transpose=transpose)
        close(fit.theta, theta, 1e-9 if dtype == np.float64 else 1e-3)
        assert fit.theta.dtype == dtype
        every = comm.allgather(fit.theta)
        assert all(np.array_equal(t, fit.theta) for t in every), "ranks disagree on theta"


kernels = [
    structops.Conv((12, 10), (3, 3), in_channels=2, out_channels=3),
    structops.Conv(32, 5, bc="periodic", stride=2),
    structops.Conv((6, 7, 5), (3, 2, 3), bc="reflect"),
    structops.Diagonal(11),
]


def check_threads():
    """The ranks on one machine share its cores: together no more threads than cores (at least one each)."""
    share = D.threads_per_rank()
    assert share >= 1
    assert comm.allreduce(share) <= max(os.cpu_count() or 1, comm.size), (share, os.cpu_count(), comm.size)


try:
    check_threads()
    for kernel in kernels:
        for n in (5, 1):  # an uneven split, and ranks holding no example
            for dtype in (np.float64, np.float32):
                for transpose in (False, True):
                    check(kernel, n, dtype, transpose)
except BaseException as err:  # one failing rank must not leave the others waiting
    print(f"rank {comm.rank}: {type(err).__name__}: {err}", flush=True)
    import traceback

    traceback.print_exc()
    comm.Abort(1)

if comm.rank == 0:
    print(f"ok {comm.size}")
