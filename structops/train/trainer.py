r"""The training loop: configuration, kernel construction, epochs, checkpoints, metrics.

:func:`~structops.train.train` builds the family named in a :class:`TrainConfig`, the
:class:`~structops.train.model.LayerClassifier` on top of it and an optimiser, and runs
epochs. After every epoch it evaluates the full training objective and both accuracies,
stops with :class:`~structops.train.optimizers.TrainingDiverged` when the loss is NaN/Inf
(keeping the last good parameters and checkpoint) and, given an output folder, writes the
checkpoint atomically and the metrics file. One seeded generator drives the initialisation
and the mini-batch shuffles, and its state is checkpointed, so a resumed run continues
exactly as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import _backend, kernels
from .._validation import check_choice, check_int_tuple, check_number, check_optional_int, check_positive_int
from ..distributed.comm import threads_per_rank, training_comm
from ..families import LayerOptions, family, family_names, locally_connected
from ..kernels._base import ParametricKernel
from .checkpoint import CHECKPOINT_NAME, Checkpoint, CheckpointFolder, ResumePoint
from .data import Dataset, load_digits, load_mnist
from .metrics import METRICS_NAME, MetricsSink
from .model import LayerClassifier, Params
from .optimizers import SCHEDULES, Optimizer, Problem, TrainingDiverged, make_optimizer
from .parallel import check_mpi_optimizer
from .source import STREAMING_OPTIMIZERS, TrainingData

__all__ = [
    "KERNELS",
    "TrainConfig",
    "TrainResult",
    "build_kernel",
    "locally_connected",
    "load_data",
    "prepare",
    "train",
    "TrainingRun",
    "CHECKPOINT_NAME",
    "METRICS_NAME",
]

#: Families ``structops train --kernel`` accepts (the names of :data:`structops.families.FAMILIES`).
KERNELS = family_names()
#: The convolution families among :data:`~structops.train.KERNELS` (output channels, a stencil, a boundary, a stride).
CONV_FAMILIES = family_names("stride")
#: The families among :data:`KERNELS` built on a stencil.
STENCIL_FAMILIES = family_names("stencil")
#: Smallest grid (pixels per axis) on which ``pool=None`` means a 2x2 average pooling.
AUTO_POOL_MIN_GRID = 16


@dataclass
class TrainConfig:
    """Everything that defines a training run (stored in the checkpoint as JSON).

    Attributes
    ----------
    kernel : str
        One of :data:`KERNELS`.
    channels : int
        Output channels of ``conv`` and ``linear``.
    stencil : int or list of int or None
        Stencil shape of ``conv`` / ``linear`` (an int is used on every axis); None (default)
        for 7 after ``conv`` on grids of at least :data:`~structops.train.trainer.AUTO_POOL_MIN_GRID` pixels per axis
        and 3 otherwise (see :meth:`resolved`).
    bc : str
        Boundary condition of ``conv``.
    stride : int or list of int
        Stride of ``conv``.
    pool : int or list of int or None
        Average-pooling window after the layer (``Chain(AvgPool(...), K)``); 1 for none; None
        (default) for 2 after ``conv`` on grids of at least :data:`~structops.train.trainer.AUTO_POOL_MIN_GRID` pixels
        per axis and none otherwise (see :meth:`resolved`).
    hidden : int or None
        Rows of ``dense`` (default: as many as input pixels, a square layer).
    activation, bias, reg_theta, reg_W
        See :class:`~structops.train.model.LayerClassifier`.
    optimizer : str
        ``lbfgs``, ``sgd``, ``adam`` or ``gnk``.
    epochs : int
        Total number of epochs (a resumed run continues up to it).
    iters, lr, batch_size
        Iterations per epoch (L-BFGS, GNK), step size and batch size (SGD, Adam); None keeps
        the optimiser's default.
    dtype : str
        ``float64`` or ``float32``.
    data : str or None
        None for the shipped digits, else a folder with the MNIST IDX files.
    limit : int or None
        Keep only the first ``limit`` training and test examples.
    seed : int
        Seed of the initialisation and of the mini-batch order (the digits split is fixed).
    lipschitz : float or None
        Keep the spectral norm of ``K(θ)`` at most ``lipschitz``, certified, after every
        optimiser step: the parameters are projected by
        :func:`structops.solvers.project_spectral_norm` (see
        :meth:`~structops.train.LayerClassifier.project`; for a pooled layer the family before
        the pooling, whose norm is at most 1). None (default): no bound. Needs a family linear
        in θ without offset (``conv``, ``symmetric``, ``mmatrixconv``, ``dense``, ...).
    """

    kernel: str = "conv"
    channels: int = 8
    stencil: int | list[int] | None = None
    bc: str = "zero"
    stride: int | list[int] = 1
    pool: int | list[int] | None = None
    hidden: int | None = None
    activation: str = "relu"
    bias: str = "channel"
    reg_theta: float = 1e-3
    reg_W: float = 1e-3
    optimizer: str = "adam"
    epochs: int = 15
    iters: int | None = 25
    lr: float | None = None
    schedule: str = "cosine"
    batch_size: int = 64
    dtype: str = "float32"
    data: str | None = None
    limit: int | None = None
    seed: int = 0
    lipschitz: float | None = None

    def __post_init__(self) -> None:
        for name in ("channels", "epochs", "batch_size"):
            check_positive_int(getattr(self, name), name)
        for name in ("hidden", "iters", "limit"):
            check_optional_int(getattr(self, name), name)
        for name in ("reg_theta", "reg_W"):
            check_number(getattr(self, name), name, minimum=0)
        for name in ("lr", "lipschitz"):
            if getattr(self, name) is not None:
                check_number(getattr(self, name), name, above=0)
        check_choice(self.schedule, "schedule", SCHEDULES)
        check_choice(self.dtype, "dtype", ("float64", "float32"))

    def resolved(self, image_shape) -> TrainConfig:
        """The configuration with its data-dependent defaults made concrete, for examples of shape ``image_shape``.

        After a convolution layer (:data:`~structops.train.trainer.CONV_FAMILIES`) on grids of at least
        :data:`~structops.train.trainer.AUTO_POOL_MIN_GRID` pixels per axis (28×28 MNIST), ``pool=None`` means a 2×2
        average pooling (a 14×14 output per channel) and ``stencil=None`` a 7×7 stencil;
        otherwise (the 8×8 digits, other families) no pooling and a 3×3 stencil. ``pool=1``
        is no pooling. The resolved values are what the checkpoint stores.

        Why (runs on 4,000 / 1,000 real MNIST digits, Adam float32, cosine schedule, 15
        epochs; see ``benchmarks/README.md``): 3×3 without pooling reaches 92.3 % test (train
        100 %), 2×2 pooling 92.3 %, a 5×5 stencil with pooling 94.2 %, 7×7 with pooling
        95.1 % (seeds 0, 1, 2: 95.1, 95.1, 94.5 %) at about 0.15 s an epoch on 2 cores; on
        the 8×8 digits a 3×3 stencil without pooling already gives 98.6 %.
        """
        grid = tuple(int(s) for s in image_shape)[1:]
        large = self.kernel in CONV_FAMILIES and len(grid) >= 1 and min(grid) >= AUTO_POOL_MIN_GRID
        changes: dict = {}
        if self.pool is None:
            changes["pool"] = 2 if large else 1
        if self.stencil is None:
            changes["stencil"] = 7 if large else 3
        return dataclasses.replace(self, **changes) if changes else self

    def to_dict(self) -> dict:
        """A JSON-compatible dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown training configuration keys {unknown!r}; known: {sorted(names)!r}.")
        return cls(**d)


@dataclass
class TrainResult:
    """Outcome of :func:`train`.

    Attributes
    ----------
    model : LayerClassifier
    params : Params
    history : dict of str to list
        Per-epoch ``epoch, loss, train_acc, test_acc, seconds`` (``seconds``: wall time of the
        epoch's optimisation).
    config : TrainConfig
    seconds : float
        Wall time of this call (not counting earlier runs that were resumed).
    checkpoint : pathlib.Path or None
    outputs : list of pathlib.Path
        Every file written into ``out``.
    optimizer : Optimizer or None
        The optimiser after the run (its state, and for L-BFGS ``nit_history`` / ``nfev_history``).
    """

    model: LayerClassifier
    params: Params
    history: dict[str, list]
    config: TrainConfig
    seconds: float
    checkpoint: Path | None = None
    outputs: list[Path] = field(default_factory=list)
    optimizer: Optimizer | None = None

    @property
    def train_acc(self) -> float:
        """Training accuracy after the last epoch."""
        return float(self.history["train_acc"][-1]) if self.history["train_acc"] else float("nan")

    @property
    def test_acc(self) -> float:
        """Test accuracy after the last epoch."""
        return float(self.history["test_acc"][-1]) if self.history["test_acc"] else float("nan")


def _pool(kernel: ParametricKernel, window, image_shape) -> ParametricKernel:
    out = kernel.out_shape
    if len(out) >= 2:
        channels, grid = out[0], out[1:]
    elif out[0] == int(np.prod(image_shape)):
        channels, grid = image_shape[0], tuple(image_shape[1:])
    else:
        raise ValueError(
            f"`pool` needs a layer whose output is an image; {kernel!r} returns vectors of length {out[0]} "
            f"that are not images of shape {tuple(image_shape)}."
        )
    window = check_int_tuple(window, "pool", ndim=len(grid))
    return kernels.Chain(kernels.AvgPool(grid, window, channels=channels), kernel)


def _layer(config: TrainConfig, image_shape: tuple[int, ...]) -> ParametricKernel:
    """The family ``config.kernel`` for examples of shape ``image_shape = (C, *grid)``, before pooling."""
    options = LayerOptions(
        image_shape=image_shape,
        channels=config.channels,
        stencil=3 if config.stencil is None else config.stencil,
        bc=config.bc,
        stride=config.stride,
        hidden=config.hidden,
    )
    return family(config.kernel).build(options)


def _check_stencil_fits(config: TrainConfig, image_shape: tuple[int, ...]) -> None:
    """A stencil larger than the grid wraps or drops taps (and runs for minutes): an error for every boundary."""
    if config.kernel not in STENCIL_FAMILIES:
        return
    grid = image_shape[1:]
    stencil = config.stencil
    st = (stencil,) * len(grid) if isinstance(stencil, int) else tuple(stencil or ())
    if len(st) == len(grid) and any(s > g for s, g in zip(st, grid)):
        raise ValueError(
            f"`stencil` {'x'.join(map(str, st))} is larger than the {'x'.join(map(str, grid))} grid of the "
            "examples: choose at most the grid on every axis."
        )


def build_kernel(config: TrainConfig, image_shape) -> ParametricKernel:
    """The family a :class:`TrainConfig` names, for examples of shape ``image_shape = (C, *grid)``.

    Square families (``diagonal``, ``antisymmetric``, ``mmatrix``, ``banded``, ``wavelet``,
    ``sparse``) and ``dense`` by default map ``prod(image_shape)`` pixels to as many features;
    the convolution families (``conv``, ``symmetric``, ``separable``, ``depthwise``) map
    ``(C, *grid)`` to ``(channels, *grid_out)`` and ``mmatrixconv`` (depthwise) ``(C, *grid)``
    to itself, as do ``antisymmetricconv`` and ``cayley`` (orthogonal, periodic); ``linear`` is
    :func:`locally_connected` and ``sparse`` the same neighbourhood pattern with one parameter
    per nonzero. With ``pool`` (as :meth:`TrainConfig.resolved` makes it concrete) the family is
    ``Chain(AvgPool(grid_out, pool, channels), K)``; ``pool=1`` is no pooling. A stencil
    larger than the grid on some axis is an error (``ValueError``), whatever the boundary.
    """
    image_shape = tuple(int(s) for s in image_shape)
    config = config.resolved(image_shape)
    _check_stencil_fits(config, image_shape)
    kernel = _layer(config, image_shape)
    if config.pool is not None and not np.all(np.asarray(config.pool) == 1):
        kernel = _pool(kernel, config.pool, image_shape)
    return kernel


def load_data(config: TrainConfig, *, stream: bool = False, shard: tuple[int, int] | None = None) -> Dataset:
    """The data set of a configuration: the shipped digits, or MNIST IDX files from ``config.data``.

    ``stream`` keeps MNIST images as uint8 (:class:`~structops.train.data.ScaledImages`,
    converted a batch at a time); ``shard=(rank, size)`` keeps only that process's share of
    the examples (of IDX files, only that share is read). See
    :func:`~structops.train.load_mnist`.
    """
    if config.data is None:
        data = load_digits(dtype=config.dtype)
        data = data.subset(config.limit, config.limit) if config.limit is not None else data
        return data.shard(*shard) if shard is not None else data
    return load_mnist(config.data, dtype=config.dtype, limit=config.limit, stream=stream, shard=shard)


@dataclass
class TrainingRun:
    """A training run ready to start: what :func:`prepare` decides before the first epoch.

    Attributes
    ----------
    config : TrainConfig
        With its data-dependent defaults made concrete (:meth:`TrainConfig.resolved`); on
        resume, the checkpoint's configuration with the requested ``epochs``.
    data : TrainingData
        The examples (this rank's share under MPI) in the run's dtype.
    model : LayerClassifier
    optimizer : Optimizer
    comm : mpi4py.MPI.Comm or None
        The ranks training together (``mpiexec -n R``); None for one process.
    resume : ResumePoint or None
        The checkpoint the run continues from.
    """

    config: TrainConfig
    data: TrainingData
    model: LayerClassifier
    optimizer: Optimizer
    comm: Any = None
    resume: ResumePoint | None = None

    @property
    def rank0(self) -> bool:
        """Whether this process writes the files and prints (rank 0, or the only process)."""
        return self.comm is None or self.comm.Get_rank() == 0

    @property
    def complete(self) -> str | None:
        """The sentence saying a resumed run has nothing left to do, or None."""
        return None if self.resume is None else self.resume.complete(self.config.epochs)

    def threads(self, threads: int | None = None) -> int | None:
        """The thread count the run uses: ``threads``, else this rank's share of the cores under MPI, else as set."""
        if threads is not None:
            return check_positive_int(threads, "threads")
        return _backend.num_threads() if self.comm is None else threads_per_rank(self.comm)

    def thread_limits(self, threads: int | None = None) -> _backend.Setting:
        """Thread counts for the run's duration (a :class:`~structops._backend.Setting`, restored on exit).

        ``threads`` for the FFTs and numba kernels (default: this rank's share of the cores
        under MPI, else as set), and BLAS capped at one thread while the numba kernels run (at
        ``threads`` without numba). On few cores an OpenBLAS pool that spins after a matrix
        product slows the next numba kernel several times over (an Adam epoch on 28×28 MNIST
        took 4 s instead of 0.3 s on 2 cores); ranks sharing a machine each get their share
        (:func:`structops.distributed.threads_per_rank`) instead of a pool as large as the
        machine.
        """
        threads = self.threads(threads)
        blas = 1 if _backend.have_numba() else threads
        if importlib.util.find_spec("threadpoolctl") is None:  # pragma: no cover - in the [train] extra
            blas = None
        return _backend.set_num_threads(threads, blas_threads=blas)

    def train(
        self,
        *,
        out: str | os.PathLike | None = None,
        progress: bool = False,
        plots: bool = True,
        log: Callable[[str], None] | None = None,
        threads: int | None = None,
    ) -> TrainResult:
        """Run the epochs left (once: the optimiser carries its state); see :func:`train` for the arguments."""
        config, model, optimizer = self.config, self.model, self.optimizer
        say = log if self.rank0 else None
        rng = np.random.default_rng(config.seed)
        if self.resume is not None:
            params, start = self.resume.restore(model, rng, optimizer), self.resume.checkpoint.epoch
        else:
            params, start = model.init_params(self.data.head, rng, np.dtype(config.dtype)), 0
        history = None if self.resume is None else self.resume.checkpoint.history
        if self.complete is not None:  # a finished run: nothing to train, nothing to rewrite
            if say is not None:
                say(self.complete)
            return TrainResult(model, params.copy(), MetricsSink(history, epochs=config.epochs).history, config, 0.0,
                               optimizer=optimizer)  # fmt: skip
        if self.resume is not None and say is not None:
            say(f"resuming from epoch {start} of {config.epochs}")
        folder = CheckpointFolder(out if self.rank0 else None)  # rank 0 writes every file
        problem = self.data.problem(model)
        iterations = max(config.epochs - start, 0) * optimizer.iterations_per_epoch(problem)
        sink = MetricsSink(history, epochs=config.epochs, iterations=iterations, progress=progress and self.rank0,
                           log=say, folder=folder.folder)  # fmt: skip
        x = params.ravel()
        t_start = time.perf_counter()
        with contextlib.closing(sink), self.thread_limits(threads):
            for epoch in range(start, config.epochs):
                x = self._epoch(problem, x, rng, epoch, sink, folder)
        elapsed = time.perf_counter() - t_start
        params = model.unpack(x).copy()
        outputs = self._outputs(folder, sink, params, plots)
        if self.comm is not None:
            self.comm.Barrier()  # every rank returns once rank 0's files are written (a resume may read them next)
        return TrainResult(model, params, sink.history, config, elapsed, folder.path, outputs, optimizer)

    def _epoch(self, problem: Problem, x, rng, epoch: int, sink: MetricsSink, folder: CheckpointFolder):
        """Epoch ``epoch`` (from 0) from ``x``: optimise, evaluate, record, checkpoint; the new parameters."""
        sink.begin(epoch)
        t0 = time.perf_counter()
        try:
            x_new = self.optimizer.run_epoch(problem, x, rng, sink.tick)
            seconds = time.perf_counter() - t0
            if self.comm is not None:
                self.comm.Bcast(x_new, root=0)  # every rank continues from rank 0's parameters, bit for bit
            loss, train_acc, test_acc = self.data.metrics(self.model, x_new)
            if not np.isfinite(loss):
                raise TrainingDiverged(f"training diverged: the training loss is {loss!r} after epoch {epoch + 1}.")
        except TrainingDiverged as exc:
            raise TrainingDiverged(
                f"{exc} Stopped in epoch {epoch + 1} of {self.config.epochs}{folder.kept(epoch)}."
            ) from exc
        sink.record(epoch + 1, loss, train_acc, test_acc, seconds)
        state = Checkpoint(self.model.unpack(x_new).copy(), self.config.to_dict(), epoch + 1,
                           dict(rng.bit_generator.state), self.optimizer.state_dict(),
                           {c: np.asarray(v) for c, v in sink.history.items()})  # fmt: skip
        folder.save(state)
        sink.write()
        return x_new

    def _outputs(self, folder: CheckpointFolder, sink: MetricsSink, params: Params, plots: bool) -> list[Path]:
        """The files in the run's folder: checkpoint, metrics and (with ``plots``) the PNG plots written now."""
        if folder.folder is None or not folder.exists():
            return []
        assert folder.path is not None and sink.path is not None  # a folder was given
        outputs = [folder.path, sink.path]
        if plots and sink.history["epoch"]:
            from .plots import matplotlib_missing, write_plots

            if matplotlib_missing() is None:  # else the caller says so (the command line does)
                outputs += write_plots(folder.folder, self.model, params, sink.history)
        return outputs


def prepare(
    config: TrainConfig | None = None,
    data: Dataset | None = None,
    *,
    resume: str | os.PathLike | ResumePoint | None = None,
) -> TrainingRun:
    """Everything a training run decides before its first epoch, every check included.

    Reads the checkpoint to resume from (its configuration, with ``config.epochs`` as the new
    total), refuses an optimiser that does not run on several MPI ranks, loads the data
    (under MPI, this rank's share), builds the layer, the model and the optimiser. Parameters
    as :func:`train`; ``resume`` may also be an already loaded :class:`~structops.train.checkpoint.ResumePoint`.

    Raises
    ------
    CheckpointError
        When ``resume`` points at a missing or corrupted checkpoint.
    ValueError, TypeError
        For a configuration that cannot be trained (also ``IDXError`` for unreadable data).
    """
    comm = training_comm()  # None unless started by mpiexec with several ranks
    config = TrainConfig() if config is None else config
    point = resume if isinstance(resume, ResumePoint) or resume is None else ResumePoint.load(resume)
    if point is not None:
        config = dataclasses.replace(TrainConfig.from_dict(point.checkpoint.config), epochs=config.epochs)
    if comm is not None:
        check_mpi_optimizer(config.optimizer)
    if data is None:
        shard = None if comm is None else (comm.Get_rank(), comm.Get_size())
        data = load_data(config, stream=comm is not None or config.optimizer in STREAMING_OPTIMIZERS, shard=shard)
    elif comm is not None and data.share is None:
        data = data.shard(comm.Get_rank(), comm.Get_size())
    config = config.resolved(data.image_shape)
    model = LayerClassifier(build_kernel(config, data.image_shape), data.nclasses, activation=config.activation,
                            bias=config.bias, reg_theta=config.reg_theta, reg_W=config.reg_W,
                            lipschitz=config.lipschitz)  # fmt: skip
    optimizer = make_optimizer(config.optimizer, lr=config.lr, batch_size=config.batch_size, iters=config.iters,
                               schedule=config.schedule, epochs=config.epochs)  # fmt: skip
    return TrainingRun(config, TrainingData(data, config.dtype, config.optimizer, comm), model, optimizer, comm, point)


def train(
    config: TrainConfig | None = None,
    data: Dataset | None = None,
    *,
    out: str | os.PathLike | None = None,
    resume: str | os.PathLike | None = None,
    progress: bool = False,
    plots: bool = True,
    log: Callable[[str], None] | None = None,
    threads: int | None = None,
) -> TrainResult:
    """Train the layer a configuration describes: :func:`prepare`, then :meth:`TrainingRun.train`.

    Parameters
    ----------
    config : TrainConfig, optional
        Default ``TrainConfig()`` (multi-channel ``Conv`` on the digits with Adam). With
        ``resume`` the checkpoint's configuration is used and only ``config.epochs`` (the
        total to reach) is taken from this argument.
    data : Dataset, optional
        Default :func:`load_data` of the configuration.
    out : path-like, optional
        Folder for ``checkpoint.npz`` (after every epoch), ``metrics.csv`` and the PNG plots.
    resume : path-like, optional
        A checkpoint file, or a folder holding ``checkpoint.npz``, to continue from.
    progress : bool, optional
        Show a tqdm progress bar on stderr.
    plots : bool, optional
        Write the PNG plots into ``out`` at the end.
    log : callable, optional
        Receives one line per message (e.g. ``print``).
    threads : int, optional
        Threads of the FFTs and numba kernels while training (see
        :func:`structops.set_num_threads`); default: as set, or under MPI this rank's share
        of the machine's cores (:func:`structops.distributed.threads_per_rank`). BLAS runs on
        one thread while the numba kernels run. Restored afterwards.

    Returns
    -------
    TrainResult

    Raises
    ------
    TrainingDiverged
        When the loss becomes NaN/Inf; the checkpoint of the last good epoch stays in ``out``.
    CheckpointError
        When ``resume`` points at a missing or corrupted checkpoint.
    """
    run = prepare(config, data, resume=resume)
    return run.train(out=out, progress=progress, plots=plots, log=log, threads=threads)
