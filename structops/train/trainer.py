r"""The training loop: configuration, kernel construction, epochs, checkpoints, metrics.

:func:`train` builds the family named in a :class:`TrainConfig`, the
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
import csv
import dataclasses
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from .. import _backend, kernels
from .._validation import check_int_tuple, check_positive_int
from ..kernels._base import ParametricKernel
from ..kernels.compose import Chain
from ..solvers.lipschitz import certified_norm_bound, project_spectral_norm
from .checkpoint import CHECKPOINT_NAME, Checkpoint, load_checkpoint, resolve_checkpoint, save_checkpoint
from .data import HEAD, Dataset, ScaledImages, load_digits, load_mnist
from .model import LayerClassifier, Params
from .optimizers import SCHEDULES, Optimizer, Problem, TrainingDiverged, make_optimizer

__all__ = [
    "KERNELS",
    "TrainConfig",
    "TrainResult",
    "build_kernel",
    "certified_layer_norm",
    "locally_connected",
    "load_data",
    "train",
    "CHECKPOINT_NAME",
    "METRICS_NAME",
]

#: Families ``structops train --kernel`` accepts.
KERNELS = (
    "dense",
    "diagonal",
    "antisymmetric",
    "mmatrix",
    "linear",
    "conv",
    "mmatrixconv",
    "symmetric",
    "separable",
    "depthwise",
    "wavelet",
    "sparse",
    "banded",
)
#: The convolution families among :data:`KERNELS` (``channels`` output channels, a stencil, a boundary, a stride).
CONV_FAMILIES = ("conv", "symmetric", "separable", "depthwise")
#: File names written into ``out``.
METRICS_NAME = "metrics.csv"
_HISTORY_COLUMNS = ("epoch", "loss", "train_acc", "test_acc", "seconds")
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
        for 7 after ``conv`` on grids of at least :data:`AUTO_POOL_MIN_GRID` pixels per axis
        and 3 otherwise (see :meth:`resolved`).
    bc : str
        Boundary condition of ``conv``.
    stride : int or list of int
        Stride of ``conv``.
    pool : int or list of int or None
        Average-pooling window after the layer (``Chain(AvgPool(...), K)``); 1 for none; None
        (default) for 2 after ``conv`` on grids of at least :data:`AUTO_POOL_MIN_GRID` pixels
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
        Keep the spectral norm of ``K(θ)`` at most ``lipschitz`` (certified): after every
        optimiser epoch the layer's parameters are projected by
        :func:`structops.solvers.project_spectral_norm` (for a pooled layer, the family before
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
            if getattr(self, name) is not None:
                check_positive_int(getattr(self, name), name)
        for name in ("reg_theta", "reg_W"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float, np.floating)) and np.isfinite(value) and value >= 0):
                raise ValueError(f"`{name}` must be a finite number >= 0, got {value!r}.")
        if self.lr is not None and not (
            isinstance(self.lr, (int, float, np.floating)) and np.isfinite(self.lr) and self.lr > 0
        ):
            raise ValueError(f"`lr` must be a finite number > 0, got {self.lr!r}.")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"`schedule` must be one of {SCHEDULES}, got {self.schedule!r}.")
        if self.dtype not in ("float64", "float32"):
            raise ValueError(f"`dtype` must be 'float64' or 'float32', got {self.dtype!r}.")
        bound = self.lipschitz
        if bound is not None and not (
            isinstance(bound, (int, float, np.floating)) and np.isfinite(bound) and bound > 0
        ):
            raise ValueError(f"`lipschitz` must be a finite number > 0 or None, got {self.lipschitz!r}.")

    def resolved(self, image_shape) -> TrainConfig:
        """The configuration with its data-dependent defaults made concrete, for examples of shape ``image_shape``.

        After a convolution layer (:data:`CONV_FAMILIES`) on grids of at least
        :data:`AUTO_POOL_MIN_GRID` pixels per axis (28×28 MNIST), ``pool=None`` means a 2×2
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


def locally_connected(image_shape, stencil, out_channels: int = 1) -> kernels.LinearKernel:
    r"""A locally connected layer as a :class:`~structops.LinearKernel` (an untied convolution).

    Like a zero-boundary convolution, output pixel :math:`i` of channel :math:`o` combines the
    input pixels of a ``stencil`` neighbourhood of :math:`i` in every input channel, but every
    output pixel has its own weights: ``vec(K) = Q θ`` with one parameter per (output channel,
    output pixel, input channel, stencil tap inside the grid). It sits between ``Conv``
    (weights shared across pixels) and ``Dense`` (every pixel connected).

    Parameters
    ----------
    image_shape : sequence of int
        ``(in_channels, *grid)``.
    stencil : int or sequence of int
    out_channels : int, optional

    Examples
    --------
    >>> k = locally_connected((1, 8, 8), 3)
    >>> k.shape, k.nparams
    ((64, 64), 484)
    """
    cin, *rest = check_int_tuple(image_shape, "image_shape")
    grid = tuple(rest)
    stencil = check_int_tuple(stencil, "stencil", ndim=len(grid))
    cout = int(out_channels)
    G = int(np.prod(grid))
    rows_n, cols_n = cout * G, cin * G
    pix = np.stack(np.unravel_index(np.arange(G), grid), axis=1)  # (G, ndim)
    taps = np.stack(np.unravel_index(np.arange(int(np.prod(stencil))), stencil), axis=1)  # (S, ndim)
    centre = np.array([s // 2 for s in stencil])
    src = pix[:, None, :] + centre - taps[None, :, :]  # convolution: x_{i + c - j}
    inside = np.all((src >= 0) & (src < np.array(grid)), axis=2)  # (G, S)
    gi, sj = np.nonzero(inside)
    src_lin = np.ravel_multi_index(tuple(src[gi, sj].T), grid)
    o = np.repeat(np.arange(cout), gi.size * cin)
    c = np.tile(np.repeat(np.arange(cin), gi.size), cout)
    g = np.tile(gi, cout * cin)
    s = np.tile(src_lin, cout * cin)
    rows = o * G + g
    cols = c * G + s
    p = rows.size
    Q = sp.csr_array((np.ones(p), (rows + cols * rows_n, np.arange(p))), shape=(rows_n * cols_n, p))
    return kernels.LinearKernel(Q, (rows_n, cols_n))


def _pool(kernel: ParametricKernel, window, image_shape) -> ParametricKernel:
    try:
        from ..kernels import AvgPool
        from ..kernels.compose import Chain
    except ImportError as exc:  # pragma: no cover - pooling ships with structops
        raise ValueError(f"`pool` needs structops.AvgPool, which this installation lacks ({exc}).") from exc
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
    return Chain(AvgPool(grid, window, channels=channels), kernel)


def _sparse_neighbourhood(image_shape: tuple[int, ...], stencil) -> kernels.Sparse:
    """:class:`~structops.Sparse` on the pattern of a stencil: each output pixel reads its neighbourhood.

    The pattern is where a zero-boundary convolution's ``K`` has entries (the rows of its
    ``Q`` that are not empty), so it is built in O(nnz), and every entry gets its own weight.
    """
    conv = kernels.Conv(image_shape[1:], stencil, in_channels=image_shape[0])
    lin = np.unique(conv.Q.tocoo().row)
    m = conv.shape[0]
    return kernels.Sparse(sp.csc_array((np.ones(lin.size, dtype=bool), (lin % m, lin // m)), shape=conv.shape))


def _layer(config: TrainConfig, image_shape: tuple[int, ...]) -> ParametricKernel:
    """The family ``config.kernel`` for examples of shape ``image_shape = (C, *grid)``, before pooling."""
    N = int(np.prod(image_shape))
    cin, grid = image_shape[0], image_shape[1:]
    stencil: int | Sequence[int] = 3 if config.stencil is None else config.stencil
    conv: dict[str, Any] = {"bc": config.bc, "in_channels": cin, "out_channels": config.channels}
    conv["stride"] = config.stride
    builders: dict[str, Callable[[], ParametricKernel]] = {
        "dense": lambda: kernels.Dense(config.hidden or N, N),
        "diagonal": lambda: kernels.Diagonal(N),
        "antisymmetric": lambda: kernels.Antisymmetric(N),
        "mmatrix": lambda: kernels.MMatrix(N),
        "linear": lambda: locally_connected(image_shape, config.stencil, config.channels),
        "conv": lambda: kernels.Conv(grid, stencil, **conv),
        "mmatrixconv": lambda: kernels.MMatrixConv(grid, stencil, bc=config.bc, channels=cin),
        "symmetric": lambda: kernels.SymmetricConv(grid, stencil, **conv),
        "separable": lambda: kernels.SeparableConv(grid, stencil, **conv),
        "depthwise": lambda: kernels.DepthwiseSeparableConv(
            grid, stencil, bc=config.bc, in_channels=cin, out_channels=config.channels, stride=config.stride
        ),
        "wavelet": lambda: kernels.Wavelet(grid if cin == 1 else image_shape),
        "sparse": lambda: _sparse_neighbourhood(image_shape, config.stencil),
        "banded": lambda: kernels.Banded(N, 1, 1),
    }
    if config.kernel not in builders:
        raise ValueError(f"`kernel` must be one of {KERNELS}, got {config.kernel!r}.")
    return builders[config.kernel]()


def build_kernel(config: TrainConfig, image_shape) -> ParametricKernel:
    """The family a :class:`TrainConfig` names, for examples of shape ``image_shape = (C, *grid)``.

    Square families (``diagonal``, ``antisymmetric``, ``mmatrix``, ``banded``, ``wavelet``,
    ``sparse``) and ``dense`` by default map ``prod(image_shape)`` pixels to as many features;
    the convolution families (``conv``, ``symmetric``, ``separable``, ``depthwise``) map
    ``(C, *grid)`` to ``(channels, *grid_out)`` and ``mmatrixconv`` (depthwise) ``(C, *grid)``
    to itself; ``linear`` is :func:`locally_connected` and ``sparse`` the same
    neighbourhood pattern with one parameter per nonzero. With ``pool`` (as
    :meth:`TrainConfig.resolved` makes it concrete) the family is
    ``Chain(AvgPool(grid_out, pool, channels), K)``; ``pool=1`` is no pooling.
    """
    image_shape = tuple(int(s) for s in image_shape)
    config = config.resolved(image_shape)
    kernel = _layer(config, image_shape)
    if config.pool is not None and not np.all(np.asarray(config.pool) == 1):
        kernel = _pool(kernel, config.pool, image_shape)
    family = _lipschitz_family(kernel)
    if config.lipschitz is not None and (not family.linear or family.q is not None):
        raise ValueError(f"`lipschitz` needs a family linear in θ (conv, symmetric, mmatrixconv, ...), got {family!r}.")
    return kernel


def load_data(config: TrainConfig, *, stream: bool = False, shard: tuple[int, int] | None = None) -> Dataset:
    """The data set of a configuration: the shipped digits, or MNIST IDX files from ``config.data``.

    ``stream`` keeps MNIST images as uint8 (:class:`~structops.train.data.ScaledImages`,
    converted a batch at a time); ``shard=(rank, size)`` keeps only that process's share of
    the examples (of IDX files, only that share is read). See
    :func:`~structops.train.data.load_mnist`.
    """
    if config.data is None:
        data = load_digits(dtype=config.dtype)
        data = data.subset(config.limit, config.limit) if config.limit is not None else data
        return data.shard(*shard) if shard is not None else data
    return load_mnist(config.data, dtype=config.dtype, limit=config.limit, stream=stream, shard=shard)


#: Optimisers that run under MPI (data-parallel); GNK's Gauss--Newton products are not distributed.
MPI_OPTIMIZERS = ("lbfgs", "sgd", "adam")


def _check_mpi_optimizer(name: str) -> None:
    if name not in MPI_OPTIMIZERS:
        raise ValueError(
            f"`optimizer` {name!r} does not run on several MPI ranks (its Gauss-Newton products are not "
            f"distributed); use one of {MPI_OPTIMIZERS}, or run it on one rank."
        )


def _lipschitz_family(kernel: ParametricKernel) -> ParametricKernel:
    """The family whose norm ``TrainConfig.lipschitz`` bounds: the layer, before its pooling (of norm <= 1)."""
    return kernel.kernel if isinstance(kernel, Chain) else kernel


def certified_layer_norm(kernel: ParametricKernel, theta: np.ndarray) -> float:
    """A certified bound on the norm that ``TrainConfig.lipschitz`` controls (see ``certified_norm_bound``)."""
    return certified_norm_bound(_lipschitz_family(kernel), theta)


def _project_lipschitz(model: LayerClassifier, x: np.ndarray, bound: float) -> np.ndarray:
    """``x`` with its ``theta`` part projected onto ``‖K(θ)‖₂ <= bound`` (certified), in place."""
    theta = model.unpack(x).theta
    theta[...] = project_spectral_norm(_lipschitz_family(model.kernel), theta, bound)
    return x


def _count(n: int, noun: str) -> str:
    """``"1 epoch"``, ``"2 epochs"``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _write_metrics(path: Path, history: dict[str, list]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(_HISTORY_COLUMNS)
        for row in zip(*(history[c] for c in _HISTORY_COLUMNS)):
            writer.writerow([int(row[0]), *(f"{v:.10g}" for v in row[1:])])
    os.replace(tmp, path)


def _one_thread_pool():
    """Cap BLAS at one thread while the numba kernels run (they use every core), if threadpoolctl is installed.

    On few cores an OpenBLAS pool that spins after a matrix product slows the next numba
    kernel several times over (an Adam epoch on 28×28 MNIST took 4 s instead of 0.3 s on 2
    cores); the cap is scoped to the training loop, so BLAS is left as it was afterwards.
    """
    if not _backend.have_numba():
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl ships with the [train] extra
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def _progress(total: int, enabled: bool):
    """A tqdm bar on stderr, or None when disabled or tqdm is not installed."""
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is in the [train] extra
        return None
    return tqdm(total=total, unit="it", dynamic_ncols=True, file=sys.stderr, leave=True)


def train(
    config: TrainConfig | None = None,
    data: Dataset | None = None,
    *,
    out: str | os.PathLike | None = None,
    resume: str | os.PathLike | None = None,
    progress: bool = False,
    plots: bool = True,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train the layer a configuration describes.

    Parameters
    ----------
    config : TrainConfig, optional
        Default ``TrainConfig()`` (multi-channel ``Conv`` on the digits with L-BFGS). With
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
    from .. import distributed

    comm = distributed.training_comm()  # None unless started by mpiexec with several ranks
    rank0 = comm is None or comm.Get_rank() == 0
    say = log if (log is not None and rank0) else (lambda _msg: None)
    config = TrainConfig() if config is None else config
    ckpt = None
    if resume is not None:
        ckpt = load_checkpoint(resolve_checkpoint(resume))
        config = dataclasses.replace(TrainConfig.from_dict(ckpt.config), epochs=config.epochs)
    if comm is not None:
        _check_mpi_optimizer(config.optimizer)
        shard = (comm.Get_rank(), comm.Get_size())
        data = load_data(config, stream=True, shard=shard) if data is None else data
        data = data.shard(*shard) if data.share is None else data
    elif data is None:
        data = load_data(config, stream=config.optimizer in ("sgd", "adam"))
    if not rank0:
        out = None  # rank 0 writes every file
    config = config.resolved(data.image_shape)
    dtype = np.dtype(config.dtype)
    kernel = build_kernel(config, data.image_shape)
    model = LayerClassifier(
        kernel,
        data.nclasses,
        activation=config.activation,
        bias=config.bias,
        reg_theta=config.reg_theta,
        reg_W=config.reg_W,
    )
    streamed = isinstance(data.x_train, ScaledImages) and config.optimizer in ("sgd", "adam")
    if comm is not None or streamed:  # uint8 images converted a batch at a time, or a share of the examples
        Xtr, Xte = data.x_train, data.x_test
        if isinstance(Xtr, ScaledImages) and Xtr.dtype != dtype:
            Xte_raw = data.x_test.raw if isinstance(data.x_test, ScaledImages) else data.x_test
            Xtr, Xte = ScaledImages(Xtr.raw, dtype), ScaledImages(Xte_raw, dtype)
        elif not isinstance(Xtr, ScaledImages):
            Xtr = np.asarray(Xtr).reshape(Xtr.shape[0], -1).astype(dtype, copy=False)
            Xte = np.asarray(Xte).reshape(Xte.shape[0], -1).astype(dtype, copy=False)
        head = data.share.head if data.share is not None else Xtr[:HEAD]
    else:
        Xtr = np.asarray(data.x_train).reshape(data.x_train.shape[0], -1).astype(dtype, copy=False)
        Xte = np.asarray(data.x_test).reshape(data.x_test.shape[0], -1).astype(dtype, copy=False)
        head = Xtr
    if comm is not None:
        assert data.share is not None  # sharded above
        problem: Problem = distributed.ShardedProblem(
            model, Xtr, data.y_train, data.share.train.start, data.ntrain, base_comm=comm
        )
        metrics_sum = distributed.RankSum(3, np.float64, comm)
    else:
        problem = Problem(model, Xtr, data.y_train)
    optimizer: Optimizer = make_optimizer(
        config.optimizer,
        lr=config.lr,
        batch_size=config.batch_size,
        iters=config.iters,
        schedule=config.schedule,
        epochs=config.epochs,
    )
    rng = np.random.default_rng(config.seed)
    history: dict[str, list] = {c: [] for c in _HISTORY_COLUMNS}
    if ckpt is not None:
        params = model.as_params(ckpt.params)
        rng.bit_generator.state = ckpt.rng_state
        optimizer.load_state_dict(ckpt.optimizer_state)
        history = {c: [float(v) for v in ckpt.history.get(c, [])] for c in _HISTORY_COLUMNS}
        start = ckpt.epoch
        if start >= config.epochs:  # a finished run: nothing to train, nothing to rewrite
            say(f"the run is already complete: {_count(start, 'epoch')} of {config.epochs}; nothing to do")
            return TrainResult(model, params.copy(), history, config, 0.0, None, [], optimizer)
        say(f"resuming from epoch {start} of {config.epochs}")
    else:
        params = model.init_params(head, rng, dtype)
        start = 0
    out_dir = Path(out) if out is not None else None
    ckpt_path = out_dir / CHECKPOINT_NAME if out_dir is not None else None
    outputs: list[Path] = []
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    x = params.ravel()
    t_start = time.perf_counter()
    per_epoch = optimizer.iterations_per_epoch(problem)
    bar = _progress(max(config.epochs - start, 0) * per_epoch, progress and rank0)
    threads = _one_thread_pool()
    threads.__enter__()
    try:
        for epoch in range(start, config.epochs):
            if bar is not None:
                bar.set_description(f"epoch {epoch + 1}/{config.epochs}")

            def tick(loss, bar=bar):
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

            t0 = time.perf_counter()
            try:
                x_new = optimizer.run_epoch(problem, x, rng, tick)
                if config.lipschitz is not None:
                    x_new = _project_lipschitz(model, x_new, config.lipschitz)
                seconds = time.perf_counter() - t0
                if comm is not None:
                    comm.Bcast(x_new, root=0)  # every rank continues from rank 0's parameters, bit for bit
                if comm is None and not streamed:
                    loss, train_acc = model.evaluate(x_new, Xtr, data.y_train)
                    test_acc = model.accuracy(x_new, Xte, data.y_test)
                else:  # a chunk at a time, summed over the ranks
                    sums = np.array(
                        [*distributed.example_sums(model, x_new, Xtr, data.y_train),
                         distributed.example_sums(model, x_new, Xte, data.y_test)[1]],
                        dtype=np.float64,
                    )  # fmt: skip
                    data_sum, right_train, right_test = sums if comm is None else metrics_sum(sums)
                    loss = data_sum / max(data.ntrain, 1) + distributed.tikhonov(model, x_new)
                    train_acc = right_train / data.ntrain if data.ntrain else float("nan")
                    test_acc = right_test / data.ntest if data.ntest else float("nan")
                if not np.isfinite(loss):
                    raise TrainingDiverged(f"training diverged: the training loss is {loss!r} after epoch {epoch + 1}.")
            except TrainingDiverged as exc:
                kept = (
                    f"; the last good checkpoint (epoch {epoch}) is kept at {ckpt_path}"
                    if ckpt_path is not None and ckpt_path.exists()
                    else ""
                )
                raise TrainingDiverged(f"{exc} Stopped in epoch {epoch + 1} of {config.epochs}{kept}.") from exc
            x = x_new
            for col, val in zip(_HISTORY_COLUMNS, (epoch + 1, loss, train_acc, test_acc, seconds)):
                history[col].append(float(val))
            if bar is not None:
                bar.set_postfix(loss=f"{loss:.4f}", train=f"{train_acc:.3f}", test=f"{test_acc:.3f}")
            else:
                say(
                    f"epoch {epoch + 1}/{config.epochs}: loss {loss:.4f}, train acc {train_acc:.4f}, "
                    f"test acc {test_acc:.4f} ({seconds:.1f} s)"
                )
            if out_dir is not None and ckpt_path is not None:
                state = Checkpoint(
                    model.unpack(x).copy(),
                    config.to_dict(),
                    epoch + 1,
                    dict(rng.bit_generator.state),
                    optimizer.state_dict(),
                    {c: np.asarray(v) for c, v in history.items()},
                )
                save_checkpoint(ckpt_path, state)
                _write_metrics(out_dir / METRICS_NAME, history)
    finally:
        threads.__exit__(None, None, None)
        if bar is not None:
            bar.close()
    elapsed = time.perf_counter() - t_start
    params = model.unpack(x).copy()
    if out_dir is not None and ckpt_path is not None:
        if ckpt_path.exists():
            outputs += [ckpt_path, out_dir / METRICS_NAME]
        if plots and history["epoch"]:
            from .plots import matplotlib_missing, write_plots

            if matplotlib_missing() is None:  # else the caller says so (the command line does)
                outputs += write_plots(out_dir, model, params, history)
    if comm is not None:
        comm.Barrier()  # every rank returns once rank 0's files are written (a resume may read them next)
    return TrainResult(model, params, history, config, elapsed, ckpt_path, outputs, optimizer)
