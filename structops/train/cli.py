"""The ``structops train`` and ``structops compare`` sub-commands.

Hook them into the main parser with :func:`register`; :func:`main` runs them stand-alone
(``python -m structops.train.cli train ...``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .. import _backend
from .._validation import check_optional_int
from ..distributed.comm import training_comm
from ..families import BOUNDARY_CONDITIONS, LAYER_OPTIONS, compare_rows, family_names
from ..kernels import conv as conv_package
from .checkpoint import CHECKPOINT_NAME, CheckpointError, ResumePoint
from .data import IDXError
from .metrics import METRICS_NAME, count
from .model import ACTIVATIONS, certified_layer_norm
from .optimizers import OPTIMIZERS, SCHEDULES, TrainingDiverged
from .trainer import (
    AUTO_POOL_MIN_GRID,
    KERNELS,
    TrainConfig,
    TrainingRun,
    load_data,
    prepare,
    train,
)

__all__ = ["register", "add_train_parser", "add_compare_parser", "main", "COMPARE_FAMILIES"]

_DEFAULT = TrainConfig()

#: The families each family-specific option of ``structops train`` applies to (from :mod:`structops.families`).
FLAG_FAMILIES: dict[str, tuple[str, ...]] = {option: family_names(option) for option in LAYER_OPTIONS}
#: Files a training run writes into ``--out``.
RUN_FILES = (CHECKPOINT_NAME, METRICS_NAME, "curves.png", "stencils.png", "spectrum.png")
#: Argument names of the library (as its error messages quote them, `` `reg_W` ``) and the flags that set them:
#: an error of the library names the flag the user typed.
_FLAGS = {
    "folder": "--data",
    "reg_W": "--reg-w",
    "reg_theta": "--reg-theta",
    "batch_size": "--batch-size",
    "kernel": "--kernel",
    "channels": "--channels",
    "stencil": "--stencil",
    "bc": "--bc",
    "stride": "--stride",
    "pool": "--pool",
    "hidden": "--hidden",
    "epochs": "--epochs",
    "iters": "--iters",
    "lr": "--lr",
    "limit": "--limit",
    "dtype": "--dtype",
    "optimizer": "--optimizer",
    "schedule": "--schedule",
    "activation": "--activation",
    "seed": "--seed",
    "threads": "--threads",
}


def _flagged(msg: str) -> str:
    """A library error message with the argument names ``_FLAGS`` lists (`` `pool` ``) as their flags (``--pool``)."""
    for name, flag in _FLAGS.items():
        msg = msg.replace(f"`{name}`", flag)
    return msg


def _article(n: int) -> str:
    """``"an"`` before a number said with a leading vowel (8, 11, 18, 80..89, 800..), else ``"a"``."""
    s = str(n)
    return "an" if s.startswith("8") or (s.startswith(("11", "18")) and len(s) % 3 == 2) else "a"


def kernels_need_compiling() -> bool:
    """Whether the numba convolution kernels are not yet in numba's on-disk cache (so the first call compiles them).

    Looks for the cache index files (``*.nbi``) numba writes for the three entry points
    (forward, adjoint, gradient) of ``structops/kernels/conv/_numba.py``, in its ``__pycache__``
    folder or under ``NUMBA_CACHE_DIR``: an index that is missing, or older than the source
    (the source changed since), means a compilation. False when numba is not installed.
    """
    if not _backend.have_numba():
        return False
    source = Path(conv_package.__file__).with_name("_numba.py")
    custom = os.environ.get("NUMBA_CACHE_DIR")
    # under NUMBA_CACHE_DIR numba keeps one folder per source folder, named after it and a hash of its path
    folders = sorted(Path(custom).glob(f"{source.parent.name}_*")) if custom else [source.parent / "__pycache__"]
    stamp = source.stat().st_mtime
    for entry in ("forward", "adjoint", "gradient"):
        index = [f for folder in folders for f in folder.glob(f"_numba.{entry}-*.nbi")]
        if not any(f.stat().st_size and f.stat().st_mtime >= stamp for f in index):
            return True
    return False


def _int_tuple(text: str) -> int | list[int]:
    """``"3"`` -> 3, ``"3,5"`` or ``"3x5"`` -> [3, 5]."""
    parts = text.replace("x", ",").split(",")
    try:
        vals = [int(p) for p in parts]  # an empty part ("3x", "3,,3") is an error too
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or integers like 3,3 or 3x3, got {text!r}") from None
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return vals[0] if len(vals) == 1 else vals


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=_DEFAULT.optimizer, help="default: %(default)s")
    p.add_argument(
        "--epochs", type=int, default=None, help=f"epochs in all (default {_DEFAULT.epochs}; with --resume: as saved)"
    )
    p.add_argument(
        "--iters", type=int, default=_DEFAULT.iters, help="L-BFGS / GNK iterations per epoch (default: %(default)s)"
    )
    p.add_argument("--lr", type=float, default=None, help="SGD / Adam step size (default: the optimiser's)")
    p.add_argument("--batch-size", type=int, default=_DEFAULT.batch_size, help="SGD / Adam (default: %(default)s)")
    p.add_argument(
        "--schedule",
        choices=SCHEDULES,
        default=_DEFAULT.schedule,
        help="SGD / Adam step schedule (default: %(default)s)",
    )
    p.add_argument("--activation", choices=ACTIVATIONS, default=_DEFAULT.activation)
    p.add_argument("--reg-theta", type=float, default=_DEFAULT.reg_theta, help="Tikhonov weight on θ")
    p.add_argument("--reg-w", type=float, default=_DEFAULT.reg_W, help="Tikhonov weight on W")
    p.add_argument("--dtype", choices=("float64", "float32"), default=_DEFAULT.dtype)
    p.add_argument("--data", metavar="PATH", default=None, help="folder with MNIST IDX files (default: shipped digits)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N training and test examples")
    p.add_argument("--seed", type=int, default=_DEFAULT.seed)
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar and no per-epoch lines")


def add_train_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``train`` to an ``argparse`` sub-parser collection and return its parser."""
    p = subparsers.add_parser(
        "train",
        help="train the parametric layer Z = σ(K(θ)y + b) and a softmax classifier on digits or MNIST",
        description="Train one parametric layer followed by a linear softmax classifier. Default: "
        f"{_article(_DEFAULT.channels)} {_DEFAULT.channels}-channel "
        "convolution (3x3 on the shipped 8x8 digits; 7x7 with 2x2 average pooling on "
        f"grids of {AUTO_POOL_MIN_GRID} pixels or more) trained by {_DEFAULT.optimizer} in {_DEFAULT.dtype}.",
    )
    p.add_argument("--kernel", choices=KERNELS, default=_DEFAULT.kernel, help="family of K(θ) (default: %(default)s)")
    p.add_argument(
        "--channels",
        type=int,
        default=None,
        help=f"output channels of the convolutions and linear (default: {_DEFAULT.channels})",
    )
    p.add_argument(
        "--stencil", type=_int_tuple, default=_DEFAULT.stencil, help="stencil, e.g. 3 or 3,3 (default: from the grid)"
    )
    p.add_argument(
        "--bc",
        choices=BOUNDARY_CONDITIONS,
        default=None,
        help=f"boundary condition of the convolutions (default: {_DEFAULT.bc})",
    )
    p.add_argument("--stride", type=_int_tuple, default=None, help="stride of the convolutions, e.g. 2 (default: 1)")
    p.add_argument(
        "--pool", type=_int_tuple, default=None, help="average-pooling window after the layer, e.g. 2 (1: none)"
    )
    p.add_argument("--hidden", type=int, default=None, help="rows of dense (default: square)")
    p.add_argument(
        "--lipschitz", type=float, default=None, metavar="L", help="keep ‖K(θ)‖₂ <= L (certified) after every step"
    )
    _common(p)
    p.add_argument("--out", metavar="DIR", default=None, help="write checkpoint, metrics.csv and PNG plots here")
    p.add_argument("--resume", metavar="PATH", default=None, help="continue from a checkpoint (file or --out folder)")
    p.add_argument("--force", action="store_true", help="replace an earlier run's files in --out")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="threads of the convolutions (default: every core; under mpiexec, each rank its share of the machine)",
    )
    p.set_defaults(func=_cmd_train)
    return p


#: The families ``structops compare`` trains: (label, configuration overrides), from :mod:`structops.families`.
COMPARE_FAMILIES: tuple[tuple[str, dict], ...] = compare_rows()


def add_compare_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``compare`` to an ``argparse`` sub-parser collection and return its parser."""
    p = subparsers.add_parser(
        "compare",
        help="train every family on the same data and budget and print a table",
        description="Train every kernel family (" + ", ".join(lbl for lbl, _ in COMPARE_FAMILIES) + ") with the "
        "same data, optimiser, epochs and seed; print #params in K, accuracies and time.",
    )
    _common(p)
    p.add_argument("--families", nargs="+", default=None, help="subset of the labels' first words, e.g. dense conv")
    p.set_defaults(func=_cmd_compare)
    return p


def register(subparsers) -> None:
    """Add the ``train`` and ``compare`` sub-commands to the ``structops`` parser."""
    add_train_parser(subparsers)
    add_compare_parser(subparsers)


def _config(args: argparse.Namespace, **overrides) -> TrainConfig:
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {k: v for k, v in vars(args).items() if k in fields and v is not None}  # None: the default
    values["reg_theta"], values["reg_W"] = args.reg_theta, args.reg_w
    if values.get("epochs") is None:
        values["epochs"] = _DEFAULT.epochs
    values.update(overrides)
    return TrainConfig(**values)


def _fail(msg: str, *, show: bool = True) -> int:
    if show:
        print(f"structops: error: {_flagged(msg)}", file=sys.stderr)
    return 2


def _check_family_flags(args: argparse.Namespace, kernel: str) -> None:
    """Options given for another family than ``kernel`` are an error, not silently ignored."""
    for name, families in FLAG_FAMILIES.items():
        if getattr(args, name, None) is not None and kernel not in families:
            raise ValueError(
                f"--{name} does not apply to --kernel {kernel}: it sets the {', '.join(families)} families only. "
                "Drop it."
            )


def _earlier_run(out: str) -> list[str]:
    """The files of a training run already in ``out``."""
    return [name for name in RUN_FILES if os.path.exists(os.path.join(out, name))]


def _check_resume_flags(asked: TrainConfig, saved: TrainConfig) -> None:
    """A resumed run keeps its saved configuration: options set to something else are an error."""
    conflicts = [
        f"--{name.lower().replace('_', '-')} {getattr(asked, name)!r} (saved: {getattr(saved, name)!r})"
        for name in (f.name for f in dataclasses.fields(TrainConfig))
        if name != "epochs"
        and getattr(asked, name) != getattr(_DEFAULT, name)
        and getattr(asked, name) != getattr(saved, name)
    ]
    if conflicts:
        raise ValueError(
            "--resume continues the saved run with its own configuration (only --epochs may change); "
            f"these options conflict with it: {', '.join(conflicts)}. Drop them, or start a new run."
        )


def _writable_folder(path: str) -> None:
    """Create ``path`` if needed and check that files can be written in it."""
    try:
        os.makedirs(path, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".structops-", delete=True)
        probe.close()
    except OSError as exc:
        raise ValueError(f"`--out` {path!r} is not a folder structops can write to: {exc.strerror or exc}.") from None


def _prepare(args: argparse.Namespace) -> tuple[TrainingRun, str | None]:
    """The run the options describe and its output folder, every check done (errors raise)."""
    check_optional_int(args.threads, "threads")
    resume = ResumePoint.load(args.resume) if args.resume is not None else None
    config = _config(args)
    if resume is not None:
        _check_resume_flags(config, TrainConfig.from_dict(resume.checkpoint.config))
        config = dataclasses.replace(config, epochs=resume.epochs if args.epochs is None else args.epochs)
    out = str(resume.path.parent) if args.out is None and resume is not None else args.out
    run = prepare(config, resume=resume)
    if run.complete is not None:
        return run, out
    _check_family_flags(args, run.config.kernel)
    if out is not None:
        same = resume is not None and os.path.realpath(resume.path.parent) == os.path.realpath(out)
        earlier = [] if same else _earlier_run(out)
        if earlier and not args.force:
            raise ValueError(
                f"--out {out!r} holds an earlier run ({', '.join(earlier)}): continue it with --resume {out}, "
                "replace it with --force, or choose another folder."
            )
        if run.rank0:  # before training, not after: a folder we cannot write is an error now
            _writable_folder(out)
    return run, out


def _describe(run: TrainingRun, threads: int | None, show) -> None:
    """The lines printed before training: data (under MPI: ranks, threads each), layer, parameters, optimiser."""
    data, kernel, config = run.data.data, run.model.kernel, run.config
    nclass_params = int(np.prod(kernel.out_shape)) * data.nclasses + data.nclasses
    ranks = ""
    if run.comm is not None:
        ranks = f", split over {run.comm.Get_size()} MPI ranks ({count(threads or 1, 'thread')} each)"
    show(f"data: {data.name}, {data.ntrain} train / {data.ntest} test examples of shape "
         f"{data.image_shape}, {data.nclasses} classes{ranks}")  # fmt: skip
    show(f"layer: {kernel!r}")
    rows, cols = kernel.shape
    show(f"parameters: {kernel.nparams:,} in K(θ) ({_article(rows)} dense {rows}x{cols} K would need "
         f"{rows * cols:,}), {nclass_params:,} in the classifier")  # fmt: skip
    show(f"optimizer: {config.optimizer}, {count(config.epochs, 'epoch')}, {config.dtype}, seed {config.seed}")
    if config.kernel in FLAG_FAMILIES["bc"] and kernels_need_compiling():
        show("compiling kernels, once per install…", flush=True)


def _summarise(res, out: str | None, show) -> None:
    """The lines printed after training: accuracies, the constraint, the files written."""
    if res.history["epoch"]:
        show(f"train accuracy {100 * res.train_acc:.2f}%, test accuracy {100 * res.test_acc:.2f}% "
             f"after {count(int(res.history['epoch'][-1]), 'epoch')}; time {res.seconds:.1f} s")  # fmt: skip
    if res.config.lipschitz is not None:
        norm = certified_layer_norm(res.model.kernel, res.params.theta)
        show(f"certified ‖K(θ)‖₂ <= {norm:.6g} (bound {res.config.lipschitz:g})")
    if res.model.kernel.bounds is not None:
        lo = res.model.kernel.bounds[0]
        show(f"constraint: min(θ - lower bound) = {float(np.min(res.params.theta - lo)):.3g} (>= 0)")
    for path in res.outputs:
        show(f"wrote {path}")
    if out is not None:
        from .plots import matplotlib_missing

        missing = matplotlib_missing()
        if missing is not None:
            show(missing)


def _cmd_train(args: argparse.Namespace) -> int:
    try:
        comm = training_comm()  # None unless started by mpiexec with several ranks
    except ImportError as exc:
        return _fail(str(exc))
    rank0 = comm is None or comm.Get_rank() == 0
    show = print if rank0 else (lambda *_a, **_k: None)
    error = None
    try:
        run, out = _prepare(args)
    except (CheckpointError, IDXError, ValueError, TypeError) as exc:
        error = str(exc)
    if comm is not None:  # every rank stops, or none: a rank left alone would wait forever
        error = next((e for e in comm.allgather(error) if e is not None), None)
    if error is not None:
        return _fail(error, show=rank0)
    if run.complete is not None:
        show(f"{run.complete} (pass a larger --epochs to train further)")
        return 0
    if out is not None and args.force and rank0 and args.resume is None:
        for name in _earlier_run(out):
            os.remove(os.path.join(out, name))
    threads = run.threads(args.threads)  # collective under MPI: after every rank's checks passed
    _describe(run, threads, show)
    progress = not args.quiet and sys.stderr.isatty()
    try:
        res = run.train(out=out, progress=progress, log=None if args.quiet else print, threads=threads)
    except TrainingDiverged as exc:
        if rank0:
            print(f"structops: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        where = f"; resume with --resume {out}" if out else ""
        if rank0:
            print(f"\nstructops: interrupted; the last finished epoch's checkpoint is kept{where}", file=sys.stderr)
        return 130
    _summarise(res, out, show)
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    chosen = COMPARE_FAMILIES
    if args.families:
        chosen = tuple(f for f in COMPARE_FAMILIES if f[0].split()[0] in args.families)
        if not chosen:
            return _fail(f"--families {args.families!r} matches none of {[f[0] for f in COMPARE_FAMILIES]!r}")
    try:
        base = _config(args)
        data = load_data(base)
    except (IDXError, ValueError, TypeError) as exc:
        return _fail(str(exc))
    budget = (
        f"{count(base.epochs, 'epoch')} x {count(base.iters or 0, 'iteration')}"
        if base.optimizer in ("lbfgs", "gnk")
        else (f"{count(base.epochs, 'epoch')} of batches of {base.batch_size}")
    )
    print(f"data: {data.name}, {data.x_train.shape[0]} train / {data.x_test.shape[0]} test; optimizer "
          f"{base.optimizer}, {budget}, {base.dtype}, seed {base.seed}")  # fmt: skip
    width = max(len(label) for label, _ in chosen)
    header = (
        f"{'family':<{width}} {'K shape':>10} {'params in K':>12} {'train acc':>10} {'test acc':>9} {'time':>7}  note"
    )
    print(header)
    print("-" * len(header))
    failed = 0
    t_all = time.perf_counter()
    for label, overrides in chosen:
        config = dataclasses.replace(base, **overrides)
        try:
            res = train(config, data, progress=False)
        except (TrainingDiverged, ValueError) as exc:
            failed += 1
            print(f"{label:<{width}} failed: {exc}")
            continue
        k = res.model.kernel
        note = ""
        if k.bounds is not None:
            ok = bool(np.all(res.params.theta >= k.bounds[0]))
            note = "θ >= 0 held" if ok else "BOUND VIOLATED"
            failed += not ok
        shape = f"{k.shape[0]}x{k.shape[1]}"
        print(f"{label:<{width}} {shape:>10} {k.nparams:>12,} {100 * res.train_acc:>9.2f}% {100 * res.test_acc:>8.2f}% "
              f"{res.seconds:>6.1f}s  {note}", flush=True)  # fmt: skip
    print(f"total {time.perf_counter() - t_all:.1f} s")
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``train`` or ``compare`` stand-alone: ``main(["train", "--epochs", "1"])``."""
    from .. import __version__

    parser = argparse.ArgumentParser(prog="structops")
    parser.add_argument("--version", action="version", version=f"structops {__version__}")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
