r"""Operators over a batch of examples split across MPI ranks, and the distributed stencil fit.

* :func:`~structops.distributed.operator` -- the layer over the whole batch, :math:`I_n \otimes K(\theta)`, block
  diagonal with one block :math:`I_{n_r} \otimes K(\theta)` per rank: a
  ``pylops_mpi.MPIBlockDiag`` (input and output scattered by examples);
* :func:`~structops.distributed.jacobian` -- the Jacobian with respect to :math:`\theta`, the ranks' Jacobians
  stacked vertically, :math:`J = [J_1; \dots; J_R]`: a ``pylops_mpi.MPIVStack``, whose forward
  product takes :math:`\theta`-directions broadcast to every rank and whose adjoint
  :math:`J^\top w = \sum_r J_r^\top w_r` is the stencil gradient summed over *all* examples;
* :func:`~structops.distributed.learn_stencil` -- :func:`structops.solvers.learn_stencil` on examples spread over the
  ranks: the same keywords and the same :class:`~structops.solvers.LearnResult`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .._validation import as_float_array, check_positive_int, check_real_scalar
from ..kernels import BatchOperator
from ..kernels._base import ParametricKernel, as_kernel
from ..solvers.learn import LearnResult, least_squares_problem
from .comm import RankSum, mpi, world

if TYPE_CHECKING:  # pragma: no cover
    import pylops_mpi

__all__ = ["broadcast", "jacobian", "learn_stencil", "operator", "scatter"]


def scatter(local, base_comm=None) -> pylops_mpi.DistributedArray:
    """A ``pylops_mpi.DistributedArray`` made of every rank's ``local`` array, flattened.

    Collective: each rank passes its own share (e.g. its examples ``(n_r, ...)``); the global
    vector is their concatenation in rank order, partitioned ``SCATTER`` with the ranks' sizes
    (as :func:`operator` and :func:`jacobian` expect). ``.asarray()`` gathers it back.
    """
    _, pylops_mpi = mpi()
    comm = world(base_comm)
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
    _, pylops_mpi = mpi()
    theta = np.ascontiguousarray(as_float_array(theta, "theta")).ravel()
    out = pylops_mpi.DistributedArray(
        global_shape=theta.size, base_comm=world(base_comm), partition=pylops_mpi.Partition.BROADCAST, dtype=theta.dtype
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
    _, pylops_mpi = mpi()
    op = BatchOperator(kernel, theta, n_local, transpose=transpose)
    return pylops_mpi.MPIBlockDiag([op], base_comm=world(base_comm), dtype=op.dtype)


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
    _, pylops_mpi = mpi()
    kernel = as_kernel(kernel)
    J = kernel.jac(theta, X_local, transpose=transpose)
    return pylops_mpi.MPIVStack([J], base_comm=world(base_comm), dtype=J.dtype)


def learn_stencil(
    kernel: ParametricKernel,
    X_local,
    Y_local,
    *,
    damp: float = 0.0,
    transpose: bool = False,
    atol: float | None = None,
    btol: float | None = None,
    maxiter: int | None = None,
    theta0=None,
    base_comm=None,
) -> LearnResult:
    r"""Fit an affine family to examples spread over the ranks: :math:`y_i \approx K(\theta)x_i`.

    Collective; :func:`structops.solvers.learn_stencil` with the examples split across ranks:
    the same keywords (``damp``, ``transpose``, ``atol``, ``btol``, ``maxiter``, ``theta0``),
    the same :class:`~structops.solvers.LearnResult` on every rank. Each rank passes its own
    examples; CGLS solves :math:`\min_\theta \|J\theta - b\|^2 + d^2\|\theta\|^2` on the Jacobian
    stacked over the ranks (:func:`jacobian`), so an iteration costs one product
    :math:`J_r p` and one :math:`J_r^\top r_r` per rank and two ``allreduce`` (a scalar, then
    :math:`p + 1` numbers).

    Parameters
    ----------
    kernel : ParametricKernel
        An affine family (``kernel.linear``), the same on every rank.
    X_local, Y_local : array_like
        This rank's inputs ``(n_r, *in_shape)`` and outputs ``(n_r, *out_shape)`` (swapped with
        ``transpose``); float32 or float64, the dtype of the result. A rank may hold none.
    damp : float
        Tikhonov damping :math:`d \ge 0`.
    transpose : bool
        Fit :math:`y_i \approx K(\theta)^\top x_i` instead.
    atol, btol : float, optional
        LSQR's stopping tests, on the damped system :math:`\bar J = [J; dI]`,
        :math:`\bar b = [b; 0]`: stop with ``istop=1`` when
        :math:`\|\bar r\| \le \mathrm{btol}\,\|b\| + \mathrm{atol}\,\|\bar J\|\,\|\theta\|`, with
        ``istop=2`` when :math:`\|\bar J^\top \bar r\| \le \mathrm{atol}\,\|\bar J\|\,\|\bar r\|`
        (:math:`\|\bar J\|` estimated from below by the products so far); default
        :math:`100\,\varepsilon` of the dtype.
    maxiter : int, optional
        Iteration limit (``istop=7``); default :math:`2p + 20`.
    theta0 : array_like, optional
        Where the Jacobian and the family's offset are evaluated (see
        :func:`structops.solvers.learn_stencil`).
    base_comm : mpi4py.MPI.Comm, optional

    Returns
    -------
    LearnResult
        ``solver="cgls"``; ``theta`` in the dtype of ``X_local``; ``residual_norm`` is
        :math:`\|J\theta - b\|_2` over all examples (without damping).

    Raises
    ------
    TypeError, ValueError
        As :func:`structops.solvers.learn_stencil` (on the rank whose examples are wrong;
        the others then wait in the next collective call, as with any MPI program). Also
        ``ValueError`` on every rank when no rank holds an example, and when a family with
        bounds (``MMatrix``) is fitted outside them: unlike the serial solver, there is no
        bounded solver to redo the fit.

    Notes
    -----
    Like scipy's ``lsqr`` in the serial fit, CGLS iterates in float64 whatever the dtype of
    the examples; the result is cast back.
    """
    comm = world(base_comm)
    damp = check_real_scalar(damp, "damp", minimum=0.0)
    J, b, dtype = least_squares_problem(kernel, X_local, Y_local, transpose=transpose, theta0=theta0, allow_empty=True)
    if comm.allreduce(J.shape[0]) == 0:
        raise ValueError("`X_local` and `Y_local` hold no examples on any rank: there is nothing to fit theta to.")
    eps = float(np.finfo(dtype).eps)
    atol = 100 * eps if atol is None else check_real_scalar(atol, "atol", minimum=0.0)
    btol = 100 * eps if btol is None else check_real_scalar(btol, "btol", minimum=0.0)
    maxiter = 2 * kernel.nparams + 20 if maxiter is None else check_positive_int(maxiter, "maxiter")
    b = b.astype(np.float64)
    theta, istop, itn = _cgls(J, b, damp, atol, btol, maxiter, RankSum(kernel.nparams + 1, np.float64, comm))
    theta = theta.astype(dtype, copy=False)
    if not kernel.is_feasible(theta):
        # the same theta on every rank, so every rank raises
        raise ValueError(
            f"the least-squares fit leaves the bounds of {kernel!r} (e.g. theta >= 0) and there is no "
            "distributed bounded solver: fit structops.Softplus(kernel) with a gradient-based optimiser on "
            "distributed.jacobian, or gather the examples and use structops.solvers.learn_stencil."
        )
    r = J.matvec(theta) - b
    residual, bnorm = np.sqrt(comm.allreduce(np.array([float(r @ r), float(b @ b)])))
    return LearnResult(
        theta=theta,
        solver="cgls",
        istop=istop,
        iterations=itn,
        residual_norm=float(residual),
        relative_residual=float(residual / bnorm) if bnorm else 0.0,
        converged=istop in (0, 1, 2),
    )


def _cgls(J, b: np.ndarray, damp: float, atol: float, btol: float, maxiter: int, ranksum: RankSum):
    r"""Damped CGLS over the rows of ``J`` split across ranks, with LSQR's stopping tests.

    Each rank holds its rows of :math:`J` and :math:`b`; :math:`\theta` and every
    :math:`p`-vector are the same on every rank. ``ranksum`` adds
    :math:`[J_r^\top r_r, \|r_r\|^2]` over the ranks. Returns ``(theta, istop, itn)`` with
    LSQR's codes: 0 (:math:`b = 0`), 1, 2 (see :func:`learn_stencil`) or 7 (``maxiter``).
    """
    comm, d2 = ranksum.comm, damp * damp
    theta = np.zeros(J.shape[1])
    r = b.copy()
    summed = ranksum(np.append(J.rmatvec(r), r @ r))
    s, bnorm = summed[:-1], float(np.sqrt(summed[-1]))
    p, gamma = s.copy(), float(s @ s)
    if bnorm == 0.0 or gamma == 0.0:
        return theta, 0, 0
    anorm = 0.0
    for itn in range(1, maxiter + 1):
        q = J.matvec(p)
        pp = float(p @ p)
        delta = comm.allreduce(float(q @ q)) + d2 * pp
        anorm = max(anorm, float(np.sqrt(delta / pp)))
        alpha = gamma / delta
        theta += alpha * p
        r -= alpha * q
        summed = ranksum(np.append(J.rmatvec(r), r @ r))
        s = summed[:-1] - d2 * theta
        xnorm = float(np.linalg.norm(theta))
        rnorm = float(np.sqrt(summed[-1] + d2 * xnorm * xnorm))
        gamma_new = float(s @ s)
        if rnorm <= btol * bnorm + atol * anorm * xnorm:
            return theta, 1, itn
        if np.sqrt(gamma_new) <= atol * anorm * rnorm:
            return theta, 2, itn
        p = s + (gamma_new / gamma) * p
        gamma = gamma_new
    return theta, 7, maxiter
