r"""Optimisers for :class:`~structops.train.model.LayerClassifier`, one epoch at a time.

Every optimiser works on the packed parameter vector ``Params.ravel()`` and exposes

* ``run_epoch(problem, x, rng, callback)`` -- one epoch from ``x``, returning the new ``x``;
* ``state_dict()`` / ``load_state_dict(state)`` -- the state carried from one epoch to the
  next, as a dict of numpy arrays (what a checkpoint stores), so that resuming from a
  checkpoint continues exactly as an uninterrupted run.

Bounds (``kernel.bounds``, e.g. :class:`~structops.MMatrix`'s :math:`\theta \ge 0`) are
honoured by every method: L-BFGS-B natively, the others by projection onto the box after each
step, so every iterate is feasible.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.optimize as sopt
import scipy.sparse.linalg as spla

from .._validation import check_choice, check_number, check_positive_int
from .model import LayerClassifier

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "TrainingDiverged",
    "Problem",
    "Optimizer",
    "LBFGS",
    "SGD",
    "Adam",
    "GaussNewtonKrylov",
    "make_optimizer",
]

#: Names accepted by :func:`make_optimizer` (and ``structops train --optimizer``).
OPTIMIZERS = ("lbfgs", "sgd", "adam", "gnk")


class TrainingDiverged(RuntimeError):
    """The objective became NaN or Inf; the parameters of the last good epoch are kept."""


@dataclass
class Problem:
    """A model and its training examples: the objective the optimisers minimise.

    Attributes
    ----------
    model : LayerClassifier
    X : numpy.ndarray, shape (n, *in_shape)
    y : numpy.ndarray of int, shape (n,)
    """

    model: LayerClassifier
    X: Any  # an (n, N) array, or a ScaledImages converting its uint8 rows a batch at a time
    y: np.ndarray

    @property
    def dtype(self) -> np.dtype:
        """Dtype of the computation (that of ``X``)."""
        return self.X.dtype

    def loss_grad(self, x: np.ndarray, idx: np.ndarray | None = None) -> tuple[float, np.ndarray]:
        """Objective and gradient (packed, dtype of ``x``) at ``x`` on all examples or on the rows ``idx``."""
        X, y = (self.X, self.y) if idx is None else (self.X[idx], self.y[idx])
        loss, grad = self.model.loss_and_gradient_vector(x, X, y)
        assert grad is not None  # need_gradient=True
        return float(loss), grad

    def loss(self, x: np.ndarray) -> float:
        """Objective on all examples."""
        return float(self.model.loss(x, self.X, self.y))

    def project(self, x: np.ndarray) -> np.ndarray:
        """Project ``x`` onto the model's feasible set (:meth:`LayerClassifier.project`: bounds, norm bound)."""
        return self.model.project(x)


Callback = Callable[[float], None]


def _diverged(where: str, value: float) -> TrainingDiverged:
    return TrainingDiverged(
        f"training diverged: the loss became {value!r} {where}; the parameters of the last good "
        "epoch are kept. Lower the learning rate (--lr) or raise the regularisation."
    )


class Optimizer(abc.ABC):
    """Base class: an optimiser that runs one epoch at a time and can save its state."""

    name = "optimizer"

    @abc.abstractmethod
    def run_epoch(self, problem: Problem, x: np.ndarray, rng: np.random.Generator, callback: Callback | None = None):
        """One epoch from ``x``; returns the new parameter vector (same dtype as ``x``)."""

    @abc.abstractmethod
    def iterations_per_epoch(self, problem: Problem) -> int:
        """Number of ``callback`` calls in one epoch (for progress bars)."""

    def state_dict(self) -> dict[str, np.ndarray]:
        """The state carried between epochs (empty for stateless methods)."""
        return {}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`state_dict` returned."""
        if state:
            raise ValueError(f"{type(self).__name__} has no state, got keys {sorted(state)!r}.")


class LBFGS(Optimizer):
    r"""Full-batch L-BFGS-B through :func:`scipy.optimize.minimize`.

    One epoch is one call of ``minimize(method="L-BFGS-B", options={"maxiter": iters})``
    started from the parameters of the previous epoch, so the curvature memory restarts every
    epoch -- in an uninterrupted run and after resuming alike, which makes resumption exact.
    ``bounds`` come from ``kernel.bounds`` (e.g. :math:`\theta \ge 0` for ``MMatrix``);
    L-BFGS-B keeps every iterate inside them.

    Parameters
    ----------
    iters : int, optional
        Iterations per epoch.
    memory : int, optional
        Number of correction pairs (``maxcor``).
    """

    name = "lbfgs"

    def __init__(self, iters: int = 50, memory: int = 10) -> None:
        self.iters = check_positive_int(iters, "iters")
        self.memory = check_positive_int(memory, "memory")
        #: Iterations and objective evaluations of each epoch run by this object.
        self.nit_history: list[int] = []
        self.nfev_history: list[int] = []

    def iterations_per_epoch(self, problem: Problem) -> int:  # noqa: D102
        return self.iters

    def run_epoch(self, problem, x, rng, callback=None):  # noqa: D102
        dtype = x.dtype
        bounds = problem.model.bounds()

        def fun(z):
            # scipy iterates in float64: one cast of the vector each way for a float32 model, none for float64
            loss, grad = problem.loss_grad(z.astype(dtype, copy=False))
            if not np.isfinite(loss):
                # L-BFGS-B backtracks from an infinite value; a NaN gradient would poison it.
                return np.inf, np.zeros_like(z)
            return loss, grad.astype(np.float64, copy=False)

        def step(intermediate_result):
            if callback is not None:
                callback(float(intermediate_result.fun))

        res = sopt.minimize(
            fun,
            x.astype(np.float64, copy=False),
            jac=True,
            method="L-BFGS-B",
            bounds=None if bounds is None else sopt.Bounds(*bounds),
            callback=step,
            options={"maxiter": self.iters, "maxcor": self.memory},
        )
        self.nit_history.append(int(res.nit))
        self.nfev_history.append(int(res.nfev))
        if not np.isfinite(res.fun):
            raise _diverged("in an L-BFGS epoch", float(res.fun))
        return problem.project(res.x.astype(dtype, copy=False))


#: Learning-rate schedules of the mini-batch methods (:class:`SGD`, :class:`Adam`).
SCHEDULES = ("constant", "cosine")


class _MiniBatch(Optimizer):
    r"""Shared loop of the mini-batch methods: a seeded shuffle, one step per batch.

    The step size of epoch :math:`e` (counted from 0, carried in the state) is ``lr`` for
    ``schedule="constant"`` and :math:`\eta_e = \tfrac{\eta}{2}(1 + \cos(\pi e / E))` for
    ``"cosine"`` over :math:`E` = ``epochs`` (PyTorch's ``CosineAnnealingLR`` stepped once
    per epoch, with ``eta_min=0`` and ``T_max=epochs``).
    """

    def __init__(self, lr: float, batch_size: int, schedule: str = "constant", epochs: int | None = None) -> None:
        self.lr = check_number(lr, "lr", above=0)
        self.batch_size = check_positive_int(batch_size, "batch_size")
        check_choice(schedule, "schedule", SCHEDULES)
        if schedule != "constant" and epochs is None:
            raise ValueError(f"`schedule={schedule!r}` needs `epochs`, the length of the schedule.")
        self.schedule = schedule
        self.epochs = None if epochs is None else check_positive_int(epochs, "epochs")
        self.epoch = 0
        self.t = 0  # steps taken with the current buffers
        for name in self.buffers:
            setattr(self, name, None)

    #: Names of the per-parameter buffers the step keeps (its moments), checkpointed under these names.
    buffers: tuple[str, ...] = ()

    def _moments(self, x: np.ndarray) -> list[np.ndarray]:
        """The step's buffers for parameters ``x``, counting the step in ``t``.

        Zero (and ``t`` restarts) on first use or for parameters of a new shape; cast to the
        dtype of ``x`` when it changed (a run resumed in another precision).
        """
        held = [getattr(self, name) for name in self.buffers]
        if held[0] is None or held[0].shape != x.shape:
            held, self.t = [np.zeros_like(x) for _ in self.buffers], 0
        elif held[0].dtype != x.dtype:
            held = [b.astype(x.dtype) for b in held]
        for name, buffer in zip(self.buffers, held):
            setattr(self, name, buffer)
        self.t += 1
        return held

    def iterations_per_epoch(self, problem: Problem) -> int:
        return -(-problem.X.shape[0] // self.batch_size)

    def lr_at(self, epoch: int) -> float:
        """The step size of epoch ``epoch`` (from 0) under the schedule."""
        if self.schedule == "cosine":
            assert self.epochs is not None  # checked in __init__
            return self.lr * 0.5 * (1.0 + np.cos(np.pi * min(epoch, self.epochs) / self.epochs))
        return self.lr

    @abc.abstractmethod
    def _step(self, x: np.ndarray, grad: np.ndarray, lr: float) -> None:
        """Update ``x`` in place from the mini-batch gradient ``grad`` (which it may overwrite)."""

    def run_epoch(self, problem, x, rng, callback=None):
        perm = rng.permutation(problem.X.shape[0])
        lr = self.lr_at(self.epoch)
        x = np.array(x, copy=True)  # updated in place below; the caller's vector stays as it was
        for start in range(0, perm.size, self.batch_size):
            loss, grad = problem.loss_grad(x, perm[start : start + self.batch_size])
            if not (np.isfinite(loss) and np.all(np.isfinite(grad))):
                raise _diverged(f"at mini-batch {start // self.batch_size} of a {self.name} epoch", loss)
            self._step(x, grad, lr)
            x = problem.project(x)
            if callback is not None:
                callback(loss)
        self.epoch += 1
        return x

    def state_dict(self):
        state = {"epoch": np.array(self.epoch)}
        if self.buffers and getattr(self, self.buffers[0]) is not None:
            state.update({name: getattr(self, name).copy() for name in self.buffers})
            state["t"] = np.array(self.t)
        return state

    def load_state_dict(self, state):
        self.epoch = int(state["epoch"]) if "epoch" in state else 0
        saved = bool(self.buffers) and self.buffers[0] in state
        for name in self.buffers:
            setattr(self, name, np.array(state[name]) if saved else None)
        self.t = int(state["t"]) if saved and "t" in state else 0


class SGD(_MiniBatch):
    r"""Mini-batch stochastic gradient descent with heavy-ball momentum.

    :math:`v \leftarrow \mu v + g,\; x \leftarrow P(x - \eta v)` with :math:`P` the projection
    onto the bounds. Batches come from a permutation drawn from the trainer's seeded
    generator every epoch, so runs are reproducible.

    Parameters
    ----------
    lr : float, optional
        Step size :math:`\eta` (of the first epoch under a schedule).
    momentum : float, optional
        :math:`\mu \in [0, 1)`.
    batch_size : int, optional
    schedule : {"constant", "cosine"}, optional
        Step size per epoch: :math:`\eta` throughout (``"constant"``) or
        :math:`\eta_e = \tfrac{\eta}{2}(1 + \cos(\pi e / E))` in epoch :math:`e` of :math:`E` = ``epochs``
        (``"cosine"``, PyTorch's ``CosineAnnealingLR``).
    epochs : int, optional
        Length of the schedule (needed for ``"cosine"``).
    """

    name = "sgd"

    def __init__(
        self,
        lr: float = 0.1,
        momentum: float = 0.9,
        batch_size: int = 64,
        schedule: str = "constant",
        epochs: int | None = None,
    ) -> None:
        super().__init__(lr, batch_size, schedule, epochs)
        self.momentum = check_number(momentum, "momentum", minimum=0, below=1)

    buffers = ("velocity",)

    def _step(self, x, grad, lr):
        dt = x.dtype.type
        (v,) = self._moments(x)
        v *= dt(self.momentum)
        v += grad
        grad[...] = v
        grad *= dt(lr)
        x -= grad


class Adam(_MiniBatch):
    r"""Adam (Kingma & Ba) on mini-batches, with projection onto the bounds.

    .. math::
        m \leftarrow \beta_1 m + (1-\beta_1) g,\quad v \leftarrow \beta_2 v + (1-\beta_2) g^2,\quad
        x \leftarrow P\Bigl(x - \eta\,\frac{m/(1-\beta_1^t)}{\sqrt{v/(1-\beta_2^t)} + \epsilon}\Bigr).

    The update runs in place in the dtype of the parameters (PyTorch's ``Adam`` formula).

    Parameters
    ----------
    lr, beta1, beta2, eps : float, optional
    batch_size, schedule, epochs : optional
        As for :class:`SGD`.
    """

    name = "adam"

    def __init__(
        self,
        lr: float = 0.01,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        batch_size: int = 64,
        schedule: str = "constant",
        epochs: int | None = None,
    ) -> None:
        super().__init__(lr, batch_size, schedule, epochs)
        self.beta1 = check_number(beta1, "beta1", minimum=0, below=1)
        self.beta2 = check_number(beta2, "beta2", minimum=0, below=1)
        self.eps = check_number(eps, "eps", above=0)

    buffers = ("m", "v")

    def _step(self, x, grad, lr):
        dt = x.dtype.type
        m, v = self._moments(x)
        m *= dt(self.beta1)
        m += dt(1 - self.beta1) * grad
        v *= dt(self.beta2)
        grad *= grad
        grad *= dt(1 - self.beta2)
        v += grad
        # x -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps), with grad as the buffer
        np.sqrt(v, out=grad)
        grad *= dt(1.0 / np.sqrt(1 - self.beta2**self.t))
        grad += dt(self.eps)
        np.divide(m, grad, out=grad)
        grad *= dt(lr / (1 - self.beta1**self.t))
        x -= grad


class GaussNewtonKrylov(Optimizer):
    r"""Gauss--Newton--Krylov: each step solves :math:`(J^\top H J + R + \lambda I)\,d = -g` by CG.

    The matrix is :meth:`LayerClassifier.gauss_newton`, a ``scipy.sparse.linalg.LinearOperator``
    assembled from ``kernel.jac`` and its adjoint -- never a dense matrix -- and the inner solve
    is :func:`scipy.sparse.linalg.cg` (truncated at ``cg_iters``). A projected backtracking
    line search (:math:`x_+ = P(x + t d)`, Armijo condition) globalises the step; the
    Levenberg--Marquardt damping :math:`\lambda` shrinks after a full step and grows after a
    backtracked one, and is the state carried between epochs.

    Parameters
    ----------
    iters : int, optional
        Gauss--Newton steps per epoch.
    cg_iters : int, optional
        Maximum CG iterations per step.
    damping : float, optional
        Initial :math:`\lambda > 0`.
    """

    name = "gnk"

    def __init__(self, iters: int = 5, cg_iters: int = 30, damping: float = 1e-2) -> None:
        self.iters = check_positive_int(iters, "iters")
        self.cg_iters = check_positive_int(cg_iters, "cg_iters")
        self.damping = check_number(damping, "damping", above=0)
        self.cg_history: list[int] = []

    def iterations_per_epoch(self, problem: Problem) -> int:  # noqa: D102
        return self.iters

    def run_epoch(self, problem, x, rng, callback=None):  # noqa: D102
        dtype = x.dtype
        for it in range(self.iters):
            loss, grad = problem.loss_grad(x)
            if not np.isfinite(loss):
                raise _diverged(f"at Gauss-Newton step {it}", loss)
            G = problem.model.gauss_newton(x, problem.X, problem.y, damping=self.damping)
            count = [0]

            def counter(_xk, count=count):
                count[0] += 1

            d, _ = spla.cg(G, -grad, rtol=1e-3, maxiter=self.cg_iters, callback=counter)
            self.cg_history.append(count[0])
            d = d.astype(dtype)
            slope = float(grad @ d)
            if not slope < 0:  # CG returns a descent direction for SPD G; guard round-off anyway
                d, slope = -grad, -float(grad @ grad)
            t, accepted = 1.0, False
            for _ in range(20):
                xn = problem.project(x + dtype.type(t) * d)
                fn = problem.loss(xn)
                if np.isfinite(fn) and fn <= loss + 1e-4 * float(grad @ (xn - x)):
                    accepted = True
                    break
                t *= 0.5
            if accepted:
                x = xn
                self.damping = max(self.damping / 3, 1e-8) if t == 1.0 else min(self.damping * 4, 1e8)
                loss = fn
            else:
                self.damping = min(self.damping * 10, 1e8)
            if callback is not None:
                callback(loss)
        return x

    def state_dict(self):  # noqa: D102
        return {"damping": np.array(self.damping)}

    def load_state_dict(self, state):  # noqa: D102
        if "damping" in state:
            self.damping = float(state["damping"])


def make_optimizer(
    name: str,
    *,
    lr: float | None = None,
    batch_size: int = 64,
    iters: int | None = None,
    schedule: str = "constant",
    epochs: int | None = None,
) -> Optimizer:
    """An optimiser by name (``"lbfgs"``, ``"sgd"``, ``"adam"``, ``"gnk"``) with its defaults.

    ``lr``, ``batch_size``, ``schedule`` and ``epochs`` (the length of the schedule) apply to
    SGD/Adam, ``iters`` (iterations per epoch) to L-BFGS and GNK; None keeps each method's
    default.
    """
    check_choice(name, "optimizer", OPTIMIZERS)
    if name == "lbfgs":
        return LBFGS() if iters is None else LBFGS(iters=iters)
    if name == "gnk":
        return GaussNewtonKrylov() if iters is None else GaussNewtonKrylov(iters=iters)
    cls = SGD if name == "sgd" else Adam
    kwargs: dict = {"batch_size": batch_size, "schedule": schedule, "epochs": epochs}
    if lr is not None:
        kwargs["lr"] = lr
    return cls(**kwargs)
