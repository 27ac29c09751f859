"""The data source of a training run: its examples in the run's dtype, as an objective and as metrics.

:class:`TrainingData` hides whether the examples are float arrays in memory, uint8 images
converted a batch at a time (:class:`~structops.train.data.ScaledImages`, for the mini-batch
optimisers), or one MPI rank's share of them: the training loop asks it for the objective
the optimiser minimises (:meth:`TrainingData.problem`) and for the loss and both accuracies
after an epoch (:meth:`TrainingData.metrics`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..distributed.comm import RankSum
from .data import HEAD, Dataset, ScaledImages
from .model import LayerClassifier
from .optimizers import Problem
from .parallel import ShardedProblem, example_sums, tikhonov

__all__ = ["STREAMING_OPTIMIZERS", "TrainingData"]

#: Optimisers that read the training examples a mini-batch at a time (the others see all of them at every step).
STREAMING_OPTIMIZERS = ("sgd", "adam")


def _as_rows(X, dtype: np.dtype) -> np.ndarray:
    """Examples as an ``(n, features)`` array of ``dtype`` (no copy when they already are)."""
    return np.asarray(X).reshape(X.shape[0], -1).astype(dtype, copy=False)


class TrainingData:
    """The examples of a run in its dtype: the optimiser's objective and the per-epoch metrics.

    Parameters
    ----------
    data : Dataset
        On several ranks, this rank's share (``data.share`` set).
    dtype : float32 or float64
    optimizer : str
        The optimiser's name: the mini-batch ones (:data:`STREAMING_OPTIMIZERS`) keep uint8
        images as they are and convert a batch at a time.
    comm : mpi4py.MPI.Comm, optional
        The ranks that share the examples; None for one process.
    """

    def __init__(self, data: Dataset, dtype, optimizer: str, comm=None) -> None:
        self.data, self.comm = data, comm
        self.dtype = np.dtype(dtype)
        self.streamed = comm is not None or (
            isinstance(data.x_train, ScaledImages) and optimizer in STREAMING_OPTIMIZERS
        )
        if not self.streamed:
            self.X_train, self.X_test = _as_rows(data.x_train, self.dtype), _as_rows(data.x_test, self.dtype)
            self.head = self.X_train
            return
        X_train: Any = data.x_train
        X_test: Any = data.x_test
        if isinstance(X_train, ScaledImages) and X_train.dtype != self.dtype:
            raw_test = X_test.raw if isinstance(X_test, ScaledImages) else X_test
            X_train, X_test = ScaledImages(X_train.raw, self.dtype), ScaledImages(raw_test, self.dtype)
        elif not isinstance(X_train, ScaledImages):
            X_train, X_test = _as_rows(X_train, self.dtype), _as_rows(X_test, self.dtype)
        self.X_train, self.X_test = X_train, X_test
        self.head = data.share.head if data.share is not None else X_train[:HEAD]

    def problem(self, model: LayerClassifier) -> Problem:
        """The training objective of ``model`` on these examples (summed over the ranks under MPI)."""
        if self.comm is None:
            return Problem(model, self.X_train, self.data.y_train)
        assert self.data.share is not None  # a rank's share, by construction
        start = self.data.share.train.start
        return ShardedProblem(model, self.X_train, self.data.y_train, start, self.data.ntrain, base_comm=self.comm)

    def metrics(self, model: LayerClassifier, x: np.ndarray) -> tuple[float, float, float]:
        """The training objective, training accuracy and test accuracy at ``x`` (collective under MPI)."""
        data = self.data
        if not self.streamed:
            loss, train_acc = model.evaluate(x, self.X_train, data.y_train)
            return float(loss), float(train_acc), float(model.accuracy(x, self.X_test, data.y_test))
        sums = np.array(
            [*example_sums(model, x, self.X_train, data.y_train), example_sums(model, x, self.X_test, data.y_test)[1]],
            dtype=np.float64,
        )  # a chunk at a time
        if self.comm is not None:
            sums = RankSum(3, np.float64, self.comm)(sums)
        data_sum, right_train, right_test = sums
        loss = data_sum / max(data.ntrain, 1) + tikhonov(model, x)
        train_acc = right_train / data.ntrain if data.ntrain else float("nan")
        test_acc = right_test / data.ntest if data.ntest else float("nan")
        return float(loss), float(train_acc), float(test_acc)
