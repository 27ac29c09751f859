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
  :func:`structops.solvers.learn_stencil`);
* data-parallel training (``mpiexec -n R structops train ...``): :class:`ShardedProblem` is
  the training objective over examples split across ranks, its loss and gradient summed by
  :class:`RankSum` (the section at the end of this module).

Every rank runs the same script (``mpiexec -n 4 python script.py``) and calls these functions
collectively with its own examples; within a rank the structops operators stay batched
(no loop over examples). Scattering, the stacked operators and the solver are pylops-mpi's;
the training step's sum over ranks is one direct ``MPI_Allreduce`` (:class:`RankSum` says
why).

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


# =====================================================================================
# Data-parallel training: ``mpiexec -n R structops train ...``
#
# Each rank holds a contiguous share of the training examples (see
# ``structops.train.data.load_mnist(shard=...)``). The gradient over all examples is
#     sum_r [J_r^T G_r, classifier part on rank r's examples],
# the adjoint of the vertical stack of the ranks' local maps (as ``jacobian`` above): each
# rank applies its own Jacobian adjoint (``kernel.jac(theta, X_r).rmatvec``, inside the
# model's gradient) and the classifier's to its own cotangent, and ``RankSum`` adds the
# packed results -- the gradient and the loss in one vector -- over the ranks: one
# allreduce per evaluation.
# =====================================================================================

from .train.model import LayerClassifier  # noqa: E402
from .train.optimizers import Problem  # noqa: E402

#: Environment variables through which MPI launchers announce the number of processes.
_WORLD_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", "PMIX_SIZE")


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
    MPI, _ = _mpi()
    comm = MPI.COMM_WORLD
    return comm if comm.Get_size() > 1 else None


class RankSum:
    r"""The sum over ranks of a vector of length ``m`` that every rank holds: one ``MPI_Allreduce``.

    Mathematically the adjoint of the vertical stack of the ranks' local maps,
    :math:`[A_1; \dots; A_R]^\top w = \sum_r A_r^\top w_r`, once each rank has applied its own
    :math:`A_r^\top` (what :func:`jacobian`'s ``MPIVStack`` computes). The sum is done with a
    single in-place allreduce rather than through ``MPIVStack.rmatvec``: in pylops-mpi 0.8
    that product issues nine collectives (a shape check, six ghost-cell ``allgather`` and a
    broadcast of the result around the one ``Allreduce``), too many for every step of an
    optimiser.

    Parameters
    ----------
    m : int
        Length of the vector.
    dtype : float32 or float64
    base_comm : mpi4py.MPI.Comm, optional
    """

    def __init__(self, m: int, dtype, base_comm=None) -> None:
        self.comm = _comm(base_comm)
        self.m = int(m)
        self.dtype = np.dtype(dtype)

    def __call__(self, local) -> np.ndarray:
        """The sum over ranks of every rank's ``local`` (shape ``(m,)``), on every rank (collective)."""
        MPI, _ = _mpi()
        buf = np.array(local, dtype=self.dtype).reshape(self.m)
        self.comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        return buf


def _converted(X, rows) -> np.ndarray:
    """Rows of an example array as floats (a ``ScaledImages`` is converted here, a batch at a time)."""
    return X[rows]


class ShardedProblem(Problem):
    r"""The training objective over examples split across ranks (a :class:`~structops.train.optimizers.Problem`).

    Rank ``r`` holds the examples ``offset .. offset + n_r - 1`` of ``n`` (``X_local``,
    ``y_local``; a float array or a :class:`~structops.train.data.ScaledImages`, converted a
    chunk at a time). :meth:`loss_grad` takes *global* example indices (a mini-batch drawn the
    same on every rank) or None (all examples); each rank computes the sums of the loss and
    of its gradient over the indices it holds, and one :class:`RankSum` adds them up:

    .. math::
        E = \frac{1}{|B|}\sum_r \sum_{i \in B \cap I_r} \ell_i + R, \qquad
        \nabla E = \frac{1}{|B|}\sum_r \sum_{i \in B \cap I_r} \nabla \ell_i + \nabla R,

    the same batch objective as one process on all examples, up to the order of the sums.
    ``X`` is a stand-in with the *global* shape (what the mini-batch optimisers draw their
    permutation from); it holds no data.

    Parameters
    ----------
    model : LayerClassifier
    X_local, y_local
        This rank's examples and labels.
    offset : int
        Global index of this rank's first example.
    n : int
        Examples on all ranks together.
    chunk : int, optional
        Examples converted and processed at a time (bounds the memory of full-batch
        evaluations).
    base_comm : mpi4py.MPI.Comm, optional
    """

    def __init__(self, model: LayerClassifier, X_local, y_local, offset: int, n: int, *, chunk: int = 1024,
                 base_comm=None) -> None:  # fmt: skip
        self.model = model
        self.X_local, self.y_local = X_local, np.asarray(y_local)
        self.offset, self.n = int(offset), int(n)
        self.chunk = check_positive_int(chunk, "chunk")
        self.comm = _comm(base_comm)
        dtype = np.dtype(X_local.dtype)
        self.X = np.broadcast_to(np.zeros((), dtype), (self.n, *X_local.shape[1:]))  # the global shape, no data
        self.y = self.y_local
        # the data term alone, per example: the Tikhonov terms are added once, after the sum
        self._data_model = LayerClassifier(
            model.kernel, model.nclasses, activation=model.activation, bias=model.bias_mode
        )
        self._sum = RankSum(model.nparams + 1, dtype, self.comm)

    def _local_rows(self, idx):
        n_local = self.X_local.shape[0]
        if idx is None:
            return None, n_local
        idx = np.asarray(idx)
        mine = idx[(idx >= self.offset) & (idx < self.offset + n_local)] - self.offset
        return mine, mine.size

    def loss_grad(self, x: np.ndarray, idx: np.ndarray | None = None) -> tuple[float, np.ndarray]:
        """Objective and gradient at ``x`` over all examples, or over the global indices ``idx``: collective."""
        dt = x.dtype
        rows, n_mine = self._local_rows(idx)
        total = self.n if idx is None else int(np.asarray(idx).size)
        packed = np.zeros(self.model.nparams + 1, dtype=dt)
        parts = (
            [slice(s, min(s + self.chunk, n_mine)) for s in range(0, n_mine, self.chunk)]
            if rows is None
            else [rows[s : s + self.chunk] for s in range(0, n_mine, self.chunk)]
        )
        for part in parts:
            Xb, yb = _converted(self.X_local, part), self.y_local[part]
            loss, grad = self._data_model.loss_and_gradient_vector(x, Xb, yb)
            assert grad is not None  # need_gradient=True
            m = dt.type(yb.shape[0])
            packed[:-1] += m * grad  # the batch means back to sums
            packed[-1] += m * loss
        packed = self._sum(packed)
        scale = dt.type(1.0 / max(total, 1))
        grad = packed[:-1] * scale
        loss = float(packed[-1] * scale)
        p, g = self.model.unpack(x), self.model.unpack(grad)
        if self.model.reg_theta:
            g.theta += dt.type(self.model.reg_theta) * p.theta
        if self.model.reg_W:
            g.W += dt.type(self.model.reg_W) * p.W
        return loss + tikhonov(self.model, x), grad

    def loss(self, x: np.ndarray) -> float:
        """Objective over all examples (collective)."""
        return self.loss_grad(x)[0]


def tikhonov(model: LayerClassifier, x) -> float:
    r"""The Tikhonov terms :math:`\tfrac{\alpha_\theta}{2}\|\theta\|^2 + \tfrac{\alpha_W}{2}\|W\|_F^2` at ``x``."""
    p = model.unpack(np.asarray(x))
    w = p.W.ravel()
    return 0.5 * model.reg_theta * float(p.theta @ p.theta) + 0.5 * model.reg_W * float(w @ w)


def example_sums(model: LayerClassifier, x, X, y, *, chunk: int = 1024) -> tuple[float, int]:
    """The sum over the examples ``(X, y)`` of the data term of the loss, and the number classified right.

    ``X`` may be a :class:`~structops.train.data.ScaledImages`: it is converted ``chunk``
    examples at a time, so the memory held is that of one chunk whatever the number of
    examples. Local: add the sums of several ranks with :class:`RankSum`.
    """
    data_model = LayerClassifier(model.kernel, model.nclasses, activation=model.activation, bias=model.bias_mode)
    data_sum, correct = 0.0, 0
    n = X.shape[0]
    for s in range(0, n, chunk):
        Xc, yc = _converted(X, slice(s, min(s + chunk, n))), np.asarray(y[s : s + chunk])
        loss, acc = data_model.evaluate(x, Xc, yc)
        data_sum += float(loss) * yc.shape[0]
        correct += round(acc * yc.shape[0])
    return data_sum, correct
