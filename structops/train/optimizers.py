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

import numpy as np
import scipy.optimize as sopt
import scipy.sparse.linalg as spla

from .model import LayerClassifier

__all__ = [
    "OPTIMIZERS",
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
    X: np.ndarray
    y: np.ndarray

    @property
    def dtype(self) -> np.dtype:
        """Dtype of the computation (that of ``X``)."""
        return self.X.dtype

    def loss_grad(self, x: np.ndarray, idx: np.ndarray | None = None) -> tuple[float, np.ndarray]:
        """Objective and gradient (packed) at ``x`` on all examples or on the rows ``idx``."""
        X, y = (self.X, self.y) if idx is None else (self.X[idx], self.y[idx])
        loss, grad = self.model.loss_and_gradient(x, X, y)
        return float(loss), grad.ravel()

    def loss(self, x: np.ndarray) -> float:
        """Objective on all examples."""
        return float(self.model.loss(x, self.X, self.y))

    def project(self, x: np.ndarray) -> np.ndarray:
        """Project ``x`` onto the model's bounds (identity when unconstrained)."""
        b = self.model.bounds()
        return x if b is None else np.clip(x, b[0].astype(x.dtype), b[1].astype(x.dtype))


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


def _check_positive(value, name: str) -> float:
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"`{name}` must be a finite number > 0, got {value!r}.")
    return float(value)


def _check_iters(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}.")
    return int(value)


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
        self.iters = _check_iters(iters, "iters")
        self.memory = _check_iters(memory, "memory")

    def iterations_per_epoch(self, problem: Problem) -> int:  # noqa: D102
        return self.iters

    def run_epoch(self, problem, x, rng, callback=None):  # noqa: D102
        dtype = x.dtype
        bounds = problem.model.bounds()

        def fun(z):
            loss, grad = problem.loss_grad(z.astype(dtype))
            if not np.isfinite(loss):
                # L-BFGS-B backtracks from an infinite value; a NaN gradient would poison it.
                return np.inf, np.zeros_like(z)
            return loss, grad.astype(np.float64)

        def step(intermediate_result):
            if callback is not None:
                callback(float(intermediate_result.fun))

        res = sopt.minimize(
            fun,
            x.astype(np.float64),
            jac=True,
            method="L-BFGS-B",
            bounds=None if bounds is None else sopt.Bounds(*bounds),
            callback=step,
            options={"maxiter": self.iters, "maxcor": self.memory},
        )
        if not np.isfinite(res.fun):
            raise _diverged("in an L-BFGS epoch", float(res.fun))
        return problem.project(res.x.astype(dtype))


class _MiniBatch(Optimizer):
    """Shared loop of the mini-batch methods: a seeded shuffle, one step per batch."""

    def __init__(self, lr: float, batch_size: int) -> None:
        self.lr = _check_positive(lr, "lr")
        self.batch_size = _check_iters(batch_size, "batch_size")

    def iterations_per_epoch(self, problem: Problem) -> int:
        return -(-problem.X.shape[0] // self.batch_size)

    @abc.abstractmethod
    def _step(self, x: np.ndarray, grad: np.ndarray) -> np.ndarray:
        """One update of ``x`` from the mini-batch gradient ``grad``."""

    def run_epoch(self, problem, x, rng, callback=None):
        perm = rng.permutation(problem.X.shape[0])
        for start in range(0, perm.size, self.batch_size):
            loss, grad = problem.loss_grad(x, perm[start : start + self.batch_size])
            if not (np.isfinite(loss) and np.all(np.isfinite(grad))):
                raise _diverged(f"at mini-batch {start // self.batch_size} of a {self.name} epoch", loss)
            x = problem.project(self._step(x, grad.astype(x.dtype)))
            if callback is not None:
                callback(loss)
        return x


class SGD(_MiniBatch):
    r"""Mini-batch stochastic gradient descent with heavy-ball momentum.

    :math:`v \leftarrow \mu v + g,\; x \leftarrow P(x - \eta v)` with :math:`P` the projection
    onto the bounds. Batches come from a permutation drawn from the trainer's seeded
    generator every epoch, so runs are reproducible.

    Parameters
    ----------
    lr : float, optional
        Step size :math:`\eta`.
    momentum : float, optional
        :math:`\mu \in [0, 1)`.
    batch_size : int, optional
    """

    name = "sgd"

    def __init__(self, lr: float = 0.1, momentum: float = 0.9, batch_size: int = 64) -> None:
        super().__init__(lr, batch_size)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"`momentum` must lie in [0, 1), got {momentum!r}.")
        self.momentum = float(momentum)
        self.velocity: np.ndarray | None = None

    def _step(self, x, grad):
        if self.velocity is None or self.velocity.shape != x.shape:
            self.velocity = np.zeros_like(x)
        self.velocity = self.velocity.astype(x.dtype, copy=False)
        self.velocity = x.dtype.type(self.momentum) * self.velocity + grad
        return x - x.dtype.type(self.lr) * self.velocity

    def state_dict(self):  # noqa: D102
        return {} if self.velocity is None else {"velocity": self.velocity.copy()}

    def load_state_dict(self, state):  # noqa: D102
        self.velocity = None if "velocity" not in state else np.array(state["velocity"])


class Adam(_MiniBatch):
    r"""Adam (Kingma & Ba) on mini-batches, with projection onto the bounds.

    .. math::
        m \leftarrow \beta_1 m + (1-\beta_1) g,\quad v \leftarrow \beta_2 v + (1-\beta_2) g^2,\quad
        x \leftarrow P\Bigl(x - \eta\,\frac{m/(1-\beta_1^t)}{\sqrt{v/(1-\beta_2^t)} + \epsilon}\Bigr).

    Parameters
    ----------
    lr, beta1, beta2, eps : float, optional
    batch_size : int, optional
    """

    name = "adam"

    def __init__(
        self, lr: float = 0.01, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8, batch_size: int = 64
    ) -> None:
        super().__init__(lr, batch_size)
        for nm, val in (("beta1", beta1), ("beta2", beta2)):
            if not 0.0 <= val < 1.0:
                raise ValueError(f"`{nm}` must lie in [0, 1), got {val!r}.")
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), _check_positive(eps, "eps")
        self.m: np.ndarray | None = None
        self.v: np.ndarray | None = None
        self.t = 0

    def _step(self, x, grad):
        dt = x.dtype.type
        if self.m is None or self.v is None or self.m.shape != x.shape:
            self.m, self.v, self.t = np.zeros_like(x), np.zeros_like(x), 0
        self.m, self.v = self.m.astype(x.dtype, copy=False), self.v.astype(x.dtype, copy=False)
        self.t += 1
        self.m = dt(self.beta1) * self.m + dt(1 - self.beta1) * grad
        self.v = dt(self.beta2) * self.v + dt(1 - self.beta2) * grad * grad
        mhat = self.m / dt(1 - self.beta1**self.t)
        vhat = self.v / dt(1 - self.beta2**self.t)
        return x - dt(self.lr) * mhat / (np.sqrt(vhat) + dt(self.eps))

    def state_dict(self):  # noqa: D102
        if self.m is None:
            return {}
        return {"m": self.m.copy(), "v": self.v.copy(), "t": np.array(self.t)}

    def load_state_dict(self, state):  # noqa: D102
        if not state:
            self.m = self.v = None
            self.t = 0
            return
        self.m, self.v, self.t = np.array(state["m"]), np.array(state["v"]), int(state["t"])


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
        self.iters = _check_iters(iters, "iters")
        self.cg_iters = _check_iters(cg_iters, "cg_iters")
        self.damping = _check_positive(damping, "damping")
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


def make_optimizer(name: str, *, lr: float | None = None, batch_size: int = 64, iters: int | None = None) -> Optimizer:
    """An optimiser by name (``"lbfgs"``, ``"sgd"``, ``"adam"``, ``"gnk"``) with its defaults.

    ``lr`` applies to SGD/Adam, ``batch_size`` to SGD/Adam, ``iters`` (iterations per epoch)
    to L-BFGS and GNK; None keeps each method's default.
    """
    if name == "lbfgs":
        return LBFGS() if iters is None else LBFGS(iters=iters)
    if name == "gnk":
        return GaussNewtonKrylov() if iters is None else GaussNewtonKrylov(iters=iters)
    if name == "sgd":
        return SGD(batch_size=batch_size) if lr is None else SGD(lr=lr, batch_size=batch_size)
    if name == "adam":
        return Adam(batch_size=batch_size) if lr is None else Adam(lr=lr, batch_size=batch_size)
    raise ValueError(f"`optimizer` must be one of {OPTIMIZERS}, got {name!r}.")
