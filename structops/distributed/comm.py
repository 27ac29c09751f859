"""MPI for structops: the communicator, the ranks of a launch, each rank's rows and threads, a sum over ranks.

The bottom of :mod:`structops.distributed`: it imports nothing from structops but the input
checks, and mpi4py only on first use (importing mpi4py initialises MPI).
"""

from __future__ import annotations

import os

import numpy as np

from .._validation import check_positive_int

__all__ = ["RankSum", "launched_ranks", "local_rows", "mpi", "threads_per_rank", "training_comm", "world"]

#: Environment variables through which MPI launchers announce the number of processes.
_WORLD_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", "PMIX_SIZE")


def mpi():
    """``(MPI, pylops_mpi)``, imported on first use.

    Raises
    ------
    ImportError
        Naming the ``mpi`` extra, when pylops-mpi or mpi4py is not installed.
    """
    try:
        import pylops_mpi
        from mpi4py import MPI
    except ImportError as err:  # pragma: no cover - exercised without the extra
        raise ImportError(
            'structops.distributed needs pylops-mpi and mpi4py: `pip install "structops[mpi]"`, '
            "plus an MPI library (the system's, or `pip install mpich`)."
        ) from err
    return MPI, pylops_mpi


def world(base_comm=None):
    """``base_comm``, or ``MPI.COMM_WORLD`` when it is None."""
    MPI, _ = mpi()
    return MPI.COMM_WORLD if base_comm is None else base_comm


def threads_per_rank(base_comm=None) -> int:
    """The cores of this machine divided among the ranks running on it (at least 1).

    Pass it to :func:`structops.set_num_threads` (and set ``OMP_NUM_THREADS`` likewise
    before starting, for BLAS): ranks sharing a machine must not oversubscribe its cores.
    ``mpiexec -n R structops train`` does so by default.
    """
    MPI, _ = mpi()
    comm = world(base_comm)
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
    n = check_positive_int(n, "n", minimum=0)
    comm = world(base_comm)
    size, rank = comm.Get_size(), comm.Get_rank()
    base, extra = divmod(n, size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))


def launched_ranks() -> int:
    """The number of processes an MPI launcher (``mpiexec -n R``) started, read from its environment (1 if none).

    Reading the environment, not ``MPI.COMM_WORLD``, keeps a plain ``structops train`` from
    initialising MPI (or needing mpi4py) at all.
    """
    for var in _WORLD_SIZE_VARS:
        value = os.environ.get(var, "")
        if value.isdigit():
            return max(int(value), 1)
    return 1


def training_comm():
    """``MPI.COMM_WORLD`` when the process runs under an MPI launcher with several ranks, else None.

    Raises
    ------
    ImportError
        If several ranks were launched but mpi4py / pylops-mpi are not installed (otherwise
        every rank would train the whole problem on its own and write the same files).
    """
    if launched_ranks() < 2:
        return None
    comm = world()
    return comm if comm.Get_size() > 1 else None


class RankSum:
    r"""The sum over ranks of a vector of length ``m`` that every rank holds: one ``MPI_Allreduce``.

    Mathematically the adjoint of the vertical stack of the ranks' local maps,
    :math:`[A_1; \dots; A_R]^\top w = \sum_r A_r^\top w_r`, once each rank has applied its own
    :math:`A_r^\top` (what :func:`~structops.distributed.jacobian`'s ``MPIVStack`` computes).
    The sum is done with a single in-place allreduce rather than through
    ``MPIVStack.rmatvec``: in pylops-mpi 0.8 that product issues nine collectives (a shape
    check, six ghost-cell ``allgather`` and a broadcast of the result around the one
    ``Allreduce``), too many for every step of an optimiser or a Krylov solver.

    Parameters
    ----------
    m : int
        Length of the vector.
    dtype : float32 or float64
    base_comm : mpi4py.MPI.Comm, optional
    """

    def __init__(self, m: int, dtype, base_comm=None) -> None:
        self.comm = world(base_comm)
        self.m = check_positive_int(m, "m")
        self.dtype = np.dtype(dtype)

    def __call__(self, local) -> np.ndarray:
        """The sum over ranks of every rank's ``local`` (shape ``(m,)``), on every rank (collective)."""
        MPI, _ = mpi()
        buf = np.array(local, dtype=self.dtype).reshape(self.m)
        self.comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        return buf
