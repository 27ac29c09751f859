r"""Data parallelism over MPI: a batch of examples split across ranks, with pylops-mpi.

When one machine cannot hold (or process fast enough) the whole batch ``X`` of ``n``
examples, each MPI rank holds a contiguous share ``X_r`` of the examples and the stacked
maps become `pylops-mpi <https://pylops.github.io/pylops-mpi/>`_ operators:

* the layer over the whole batch, :math:`I_n \otimes K(\theta)`, is block diagonal with one
  block :math:`I_{n_r} \otimes K(\theta)` per rank: :func:`operator` returns a
  ``pylops_mpi.MPIBlockDiag`` (input and output scattered by examples);
* the Jacobian with respect to :math:`\theta` stacks the ranks' Jacobians vertically,
  :math:`J = [J_1; \dots; J_R]`: :func:`jacobian` returns a ``pylops_mpi.MPIVStack``, whose
  forward product takes :math:`\theta`-directions broadcast to every rank and whose adjoint
  :math:`J^\top w = \sum_r J_r^\top w_r` is the stencil gradient summed over *all* examples,
  reduced across ranks (one ``allreduce`` of ``p`` numbers per product);
* :func:`learn_stencil` fits an affine family to the distributed examples with
  ``pylops_mpi.cgls`` on that Jacobian (the distributed counterpart of
  :func:`structops.solvers.learn_stencil`).

Every rank runs the same script (``mpiexec -n 4 python script.py``) and calls these functions
collectively with its own examples; within a rank the structops operators stay batched
(no loop over examples). Nothing here is home-made communication: scattering, reductions and
the solver are pylops-mpi's.

Needs the ``mpi`` extra (``pip install "structops[mpi]"``: pylops-mpi and mpi4py) and an MPI
library: the system's on a cluster, or ``pip install mpich`` on a workstation.

Examples
--------
A stencil fitted to examples spread over the ranks (run with ``mpiexec -n 2``)::

    import numpy as np, structops
    from structops import distributed

    k = structops.Conv((64, 64), (5, 5), bc="periodic")
    rows = distributed.local_rows(1000)            # this rank's share of 1000 examples
    X = load_inputs(rows)                          # (n_r, 1, 64, 64), this rank's examples
    Y = load_outputs(rows)
    fit = distributed.learn_stencil(k, X, Y)       # the same theta on every rank
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ._validation import as_float_array, check_positive_int, check_real_scalar
from .kernels import BatchOperator
from .kernels._base import ParametricKernel, as_kernel
from .solvers.learn import least_squares_problem

if TYPE_CHECKING:  # pragma: no cover
    import pylops_mpi

__all__ = [
    "BatchOperator",
    "DistributedFit",
    "broadcast",
    "jacobian",
    "learn_stencil",
    "local_rows",
    "operator",
    "scatter",
    "threads_per_rank",
]


def _mpi():
    """``(MPI, pylops_mpi)``, imported on first use (importing mpi4py initialises MPI)."""
    try:
        import pylops_mpi
        from mpi4py import MPI
    except ImportError as err:  # pragma: no cover - exercised without the extra
        raise ImportError(
            'structops.distributed needs pylops-mpi and mpi4py: `pip install "structops[mpi]"`, '
            "plus an MPI library (the system's, or `pip install mpich`)."
        ) from err
    return MPI, pylops_mpi


def _comm(base_comm):
    MPI, _ = _mpi()
    return MPI.COMM_WORLD if base_comm is None else base_comm


def _count(n, name: str) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"`{name}` must be a non-negative integer, got {n!r}.")
    return int(n)


def threads_per_rank(base_comm=None) -> int:
    """The cores of this machine divided among the ranks running on it (at least 1).

    Pass it to :func:`structops.set_num_threads` (and set ``OMP_NUM_THREADS`` likewise
    before starting, for BLAS): ranks sharing a machine must not oversubscribe its cores.
    """
    MPI, _ = _mpi()
    comm = _comm(base_comm)
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        return max(1, (os.cpu_count() or 1) // node.Get_size())
    finally:
        node.Free()


def local_rows(n: int, base_comm=None) -> slice:
    """The contiguous share of ``n`` examples held by this rank (pylops-mpi's ``SCATTER`` split).

    The first ``n % size`` ranks hold ``n // size + 1`` examples, the others ``n // size``.

    Parameters
    ----------
    n : int
        Number of examples in the whole batch.
    base_comm : mpi4py.MPI.Comm, optional
        Communicator; default ``MPI.COMM_WORLD``.
    """
    n = _count(n, "n")
    comm = _comm(base_comm)
    size, rank = comm.Get_size(), comm.Get_rank()
    base, extra = divmod(int(n), size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))


def scatter(local, base_comm=None) -> pylops_mpi.DistributedArray:
    """A ``pylops_mpi.DistributedArray`` made of every rank's ``local`` array, flattened.

    Collective: each rank passes its own share (e.g. its examples ``(n_r, ...)``); the global
    vector is their concatenation in rank order, partitioned ``SCATTER`` with the ranks' sizes
    (as :func:`operator` and :func:`jacobian` expect). ``.asarray()`` gathers it back.
    """
    _, pylops_mpi = _mpi()
    comm = _comm(base_comm)
    local = np.ascontiguousarray(as_float_array(local, "local")).ravel()
    sizes = comm.allgather(local.size)
    dtypes = set(comm.allgather(local.dtype.str))
    if len(dtypes) > 1:
        raise TypeError(f"`local` must have the same dtype on every rank, got {sorted(dtypes)}.")
    out = pylops_mpi.DistributedArray(
        global_shape=int(sum(sizes)),
        base_comm=comm,
        partition=pylops_mpi.Partition.SCATTER,
        local_shapes=[(s,) for s in sizes],
        dtype=local.dtype,
    )
    out[:] = local
    return out


def broadcast(theta, base_comm=None) -> pylops_mpi.DistributedArray:
    """``theta`` (the same on every rank) as a ``BROADCAST`` ``DistributedArray``."""
    _, pylops_mpi = _mpi()
    theta = np.ascontiguousarray(as_float_array(theta, "theta")).ravel()
    out = pylops_mpi.DistributedArray(
        global_shape=theta.size, base_comm=_comm(base_comm), partition=pylops_mpi.Partition.BROADCAST, dtype=theta.dtype
    )
    out[:] = theta
    return out


def operator(kernel: ParametricKernel, theta, n_local: int, *, transpose: bool = False, base_comm=None):
    r""":math:`I_n \otimes K(\theta)` over a batch split across ranks: a ``pylops_mpi.MPIBlockDiag``.

    Collective. Rank ``r`` passes the number ``n_local`` of examples it holds; input and
    output are ``SCATTER`` ``DistributedArray`` (see :func:`scatter`) of every rank's
    examples flattened C-order. The adjoint (``.H``) and pylops-mpi's solvers (``cgls``,
    ``cg``) work on it, e.g. to deblur a distributed stack of images.
    """
    _, pylops_mpi = _mpi()
    op = BatchOperator(kernel, theta, n_local, transpose=transpose)
    return pylops_mpi.MPIBlockDiag([op], base_comm=_comm(base_comm), dtype=op.dtype)


def jacobian(kernel: ParametricKernel, theta, X_local, *, transpose: bool = False, base_comm=None):
    r"""The Jacobian of :math:`\theta \mapsto (K(\theta)x_i)_i` over examples split across ranks.

    Collective. A ``pylops_mpi.MPIVStack`` of the ranks' ``kernel.jac(theta, X_local)``:
    ``J @ v`` takes a ``BROADCAST`` direction ``v`` (see :func:`broadcast`) and returns the
    ``SCATTER`` array of every rank's :math:`J_r v`; ``J.H @ w`` takes a ``SCATTER`` cotangent
    (see :func:`scatter`) and returns :math:`\sum_r J_r^\top w_r`, the gradient summed over all
    examples, on every rank. What each rank's Jacobian caches (e.g. the spectra of its
    examples) is computed once and reused by every product.

    Parameters
    ----------
    kernel : ParametricKernel
    theta : array_like, shape (p,)
        The same parameters on every rank.
    X_local : array_like, shape (n_r, *in_shape) or (n_r, prod(in_shape))
        This rank's examples (``out_shape`` with ``transpose``).
    transpose : bool
        Differentiate :math:`K(\theta)^\top x` instead.
    base_comm : mpi4py.MPI.Comm, optional
    """
    _, pylops_mpi = _mpi()
    kernel = as_kernel(kernel)
    J = kernel.jac(theta, X_local, transpose=transpose)
    return pylops_mpi.MPIVStack([J], base_comm=_comm(base_comm), dtype=J.dtype)


@dataclass(frozen=True)
class DistributedFit:
    r"""What :func:`learn_stencil` returns (the same on every rank).

    Attributes
    ----------
    theta : numpy.ndarray, shape (p,)
        The fitted parameters, in the dtype of ``X_local``.
    itn : int
        CGLS iterations run.
    residual_norm : float
        :math:`\|J\theta - b\|_2` over all examples (the misfit, without damping).
    relative_residual : float
        ``residual_norm / ||b||`` (0 when ``b`` is zero).
    """

    theta: np.ndarray
    itn: int
    residual_norm: float
    relative_residual: float


def learn_stencil(
    kernel: ParametricKernel,
    X_local,
    Y_local,
    *,
    damp: float = 0.0,
    transpose: bool = False,
    niter: int | None = None,
    tol: float | None = None,
    theta0=None,
    base_comm=None,
) -> DistributedFit:
    r"""Fit an affine family to examples spread over the ranks: :math:`y_i \approx K(\theta)x_i`.

    Collective; the distributed :func:`structops.solvers.learn_stencil`. Each rank passes its
    own examples; ``pylops_mpi.cgls`` solves
    :math:`\min_\theta \|J\theta - b\|^2 + d^2\|\theta\|^2` on the stacked Jacobian
    (:func:`jacobian`), so every iteration costs one batched product per rank and one
    ``allreduce`` of ``p`` numbers.

    Parameters
    ----------
    kernel : ParametricKernel
        An affine family (``kernel.linear``), the same on every rank.
    X_local, Y_local : array_like
        This rank's inputs ``(n_r, *in_shape)`` and outputs ``(n_r, *out_shape)`` (swapped with
        ``transpose``); float32 or float64, the dtype of the result.
    damp : float
        Tikhonov damping :math:`d \ge 0`.
    transpose : bool
        Fit :math:`y_i \approx K(\theta)^\top x_i` instead.
    niter : int, optional
        CGLS iterations; default :math:`2p + 20`.
    tol : float, optional
        Stop when :math:`\|J^\top r - d^2\theta\|^2` falls below ``tol``; default
        :math:`(100\,\varepsilon\,\|J^\top b\|)^2` of the dtype.
    theta0 : array_like, optional
        Where the Jacobian and the family's offset are evaluated (see
        :func:`structops.solvers.learn_stencil`).
    base_comm : mpi4py.MPI.Comm, optional

    Returns
    -------
    DistributedFit

    Raises
    ------
    TypeError, ValueError
        As :func:`structops.solvers.learn_stencil` (on the rank whose examples are wrong;
        the others then wait in the next collective call, as with any MPI program). Also
        ``ValueError`` on every rank when a family with bounds (``MMatrix``) is fitted
        outside them: unlike the serial solver, there is no bounded solver to redo the fit.
    """
    _, pylops_mpi = _mpi()
    comm = _comm(base_comm)
    damp = check_real_scalar(damp, "damp", minimum=0.0)
    J, b, dtype = least_squares_problem(kernel, X_local, Y_local, transpose=transpose, theta0=theta0, allow_empty=True)
    if comm.allreduce(J.shape[0]) == 0:
        raise ValueError("`X_local` and `Y_local` hold no examples on any rank: there is nothing to fit theta to.")
    niter = 2 * kernel.nparams + 20 if niter is None else check_positive_int(niter, "niter")
    Op = pylops_mpi.MPIVStack([J], base_comm=comm, dtype=dtype)
    bd = scatter(b.astype(dtype, copy=False), comm)
    if tol is None:
        g = Op.rmatvec(bd).local_array
        tol = float((100 * np.finfo(dtype).eps * np.linalg.norm(g)) ** 2)
    tol = check_real_scalar(tol, "tol", minimum=0.0)
    x0 = broadcast(np.zeros(kernel.nparams, dtype=dtype), comm)
    # pylops-mpi's cgls squares damp itself: (J^T J + d^2 I) theta = J^T b, as scipy's lsqr
    x, _, itn, _, _, _ = pylops_mpi.cgls(Op, bd, x0=x0, niter=niter, damp=damp, tol=tol)
    theta = np.array(x.local_array, dtype=dtype)
    if not kernel.is_feasible(theta):
        # the same theta on every rank, so every rank raises
        raise ValueError(
            f"the least-squares fit leaves the bounds of {kernel!r} (e.g. theta >= 0) and pylops-mpi has no "
            "bounded solver: fit structops.Softplus(kernel) with a gradient-based optimiser on "
            "distributed.jacobian, or gather the examples and use structops.solvers.learn_stencil."
        )
    r = Op.matvec(broadcast(theta, comm)) - bd
    residual = float(r.norm())
    bnorm = float(bd.norm())
    return DistributedFit(theta, int(itn), residual, residual / bnorm if bnorm else 0.0)
