r"""Data-parallel training: ``mpiexec -n R structops train ...``.

Each rank holds a contiguous share of the training examples (see
:func:`structops.train.load_mnist` with ``shard``). The gradient over all examples is

.. math::
    \nabla E = \sum_r \big[J_r^\top G_r,\ \text{classifier part on rank } r\text{'s examples}\big],

the adjoint of the vertical stack of the ranks' local maps (as
:func:`structops.distributed.jacobian`): each rank applies its own Jacobian adjoint
(``kernel.jac(theta, X_r).rmatvec``, inside the model's gradient) and the classifier's to its
own cotangent, and :class:`~structops.distributed.RankSum` adds the packed results -- the
gradient and the loss in one vector -- over the ranks: one allreduce per evaluation.

This module sits above :mod:`structops.distributed` (the communicator, the sum over ranks)
and :mod:`structops.train.optimizers` (the serial :class:`~structops.train.optimizers.Problem`).
"""

from __future__ import annotations

import numpy as np

from .._validation import check_positive_int
from ..distributed.comm import RankSum, world
from .model import LayerClassifier
from .optimizers import Problem

__all__ = ["MPI_OPTIMIZERS", "ShardedProblem", "check_mpi_optimizer", "example_sums", "tikhonov"]

#: Optimisers that run under MPI (data-parallel); GNK's Gauss--Newton products are not distributed.
MPI_OPTIMIZERS = ("lbfgs", "sgd", "adam")


def check_mpi_optimizer(name: str) -> str:
    """``name`` if the optimiser runs on several ranks, else a ``ValueError`` saying which do."""
    if name not in MPI_OPTIMIZERS:
        raise ValueError(
            f"`optimizer` {name!r} does not run on several MPI ranks (its Gauss-Newton products are not "
            f"distributed); use one of {MPI_OPTIMIZERS}, or run it on one rank."
        )
    return name


def _converted(X, rows) -> np.ndarray:
    """Rows of an example array as floats (a ``ScaledImages`` is converted here, a batch at a time)."""
    return X[rows]


class ShardedProblem(Problem):
    r"""The training objective over examples split across ranks (a :class:`~structops.train.optimizers.Problem`).

    Rank ``r`` holds the examples ``offset .. offset + n_r - 1`` of ``n`` (``X_local``,
    ``y_local``; a float array or a :class:`~structops.train.data.ScaledImages`, converted a
    chunk at a time). :meth:`loss_grad` takes *global* example indices (a mini-batch drawn the
    same on every rank) or None (all examples); each rank computes the sums of the loss and
    of its gradient over the indices it holds, and one :class:`~structops.distributed.RankSum` adds them up:

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
        self.comm = world(base_comm)
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
    examples. Local: add the sums of several ranks with :class:`~structops.distributed.RankSum`.
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
