r"""Training the lecture notes' parametric layer :math:`E(\sigma(YK(\theta) + b)W, C)` for any kernel family.

* :mod:`~structops.train.model` -- :class:`LayerClassifier` (forward, loss, gradient through
  ``kernel.jac``, Gauss--Newton operator) and :class:`Params`;
* :mod:`~structops.train.optimizers` -- L-BFGS-B (scipy), SGD, Adam and Gauss--Newton--Krylov;
* :mod:`~structops.train.data` -- the shipped 8×8 digits and an MNIST IDX reader;
* :mod:`~structops.train.checkpoint` -- atomic ``.npz`` checkpoints with exact resume
  (:class:`~structops.train.checkpoint.ResumePoint`, :class:`~structops.train.checkpoint.CheckpointFolder`);
* :mod:`~structops.train.metrics` -- the per-epoch history, progress and ``metrics.csv``;
* :mod:`~structops.train.source` -- the examples of a run as an objective and as metrics;
* :mod:`~structops.train.parallel` -- data-parallel training over MPI ranks;
* :mod:`~structops.train.trainer` -- :class:`TrainConfig`, :func:`prepare`, :class:`TrainingRun`
  and :func:`train`;
* :mod:`~structops.train.plots` -- loss/accuracy curves, learned stencils, spectra;
* :mod:`~structops.train.cli` -- the ``structops train`` and ``structops compare`` commands.
"""

from .checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from .data import Dataset, IDXError, load_digits, load_mnist, read_idx
from .model import ACTIVATIONS, LayerClassifier, Params
from .optimizers import (
    LBFGS,
    OPTIMIZERS,
    SGD,
    Adam,
    GaussNewtonKrylov,
    Optimizer,
    Problem,
    TrainingDiverged,
    make_optimizer,
)
from .trainer import (
    KERNELS,
    TrainConfig,
    TrainingRun,
    TrainResult,
    build_kernel,
    load_data,
    locally_connected,
    prepare,
    train,
)

__all__ = [
    "ACTIVATIONS",
    "KERNELS",
    "OPTIMIZERS",
    "Adam",
    "Checkpoint",
    "CheckpointError",
    "Dataset",
    "GaussNewtonKrylov",
    "IDXError",
    "LBFGS",
    "LayerClassifier",
    "Optimizer",
    "Params",
    "Problem",
    "SGD",
    "TrainConfig",
    "TrainResult",
    "TrainingRun",
    "TrainingDiverged",
    "build_kernel",
    "load_checkpoint",
    "load_data",
    "load_digits",
    "load_mnist",
    "locally_connected",
    "make_optimizer",
    "prepare",
    "read_idx",
    "save_checkpoint",
    "train",
]
