r"""Training the lecture notes' parametric layer :math:`E(\sigma(YK(\theta) + b)W, C)` for any kernel family.

* :mod:`~structops.train.model` -- :class:`LayerClassifier` (forward, loss, gradient through
  ``kernel.jac``, Gauss--Newton operator) and :class:`Params`;
* :mod:`~structops.train.optimizers` -- L-BFGS-B (scipy), SGD, Adam and Gauss--Newton--Krylov;
* :mod:`~structops.train.data` -- the shipped 8×8 digits and an MNIST IDX reader;
* :mod:`~structops.train.checkpoint` -- atomic ``.npz`` checkpoints with exact resume;
* :mod:`~structops.train.trainer` -- :func:`train` and :class:`TrainConfig`;
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
from .trainer import KERNELS, TrainConfig, TrainResult, build_kernel, load_data, locally_connected, train

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
    "TrainingDiverged",
    "build_kernel",
    "load_checkpoint",
    "load_data",
    "load_digits",
    "load_mnist",
    "locally_connected",
    "make_optimizer",
    "read_idx",
    "save_checkpoint",
    "train",
]
