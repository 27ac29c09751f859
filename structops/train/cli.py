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

import numpy as np

from .checkpoint import CheckpointError, load_checkpoint
from .data import IDXError
from .optimizers import OPTIMIZERS, TrainingDiverged
from .trainer import KERNELS, TrainConfig, _resolve_checkpoint, build_kernel, load_data, train

__all__ = ["register", "add_train_parser", "add_compare_parser", "main", "COMPARE_FAMILIES"]

_BCS = ("zero", "periodic", "reflect", "replicate", "valid")
_DEFAULT = TrainConfig()


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
    p.add_argument("--activation", choices=("relu", "tanh", "identity"), default=_DEFAULT.activation)
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
        description="Train one parametric layer followed by a linear softmax classifier. Default: a "
        f"{_DEFAULT.channels}-channel 3x3 convolution on the shipped 8x8 digits with L-BFGS.",
    )
    p.add_argument("--kernel", choices=KERNELS, default=_DEFAULT.kernel, help="family of K(θ) (default: %(default)s)")
    p.add_argument("--channels", type=int, default=_DEFAULT.channels, help="output channels of conv/linear")
    p.add_argument("--stencil", type=_int_tuple, default=_DEFAULT.stencil, help="stencil, e.g. 3 or 3,3")
    p.add_argument("--bc", choices=_BCS, default=_DEFAULT.bc, help="boundary condition of conv")
    p.add_argument("--stride", type=_int_tuple, default=_DEFAULT.stride, help="stride of conv, e.g. 2")
    p.add_argument("--pool", type=_int_tuple, default=None, help="average-pooling window after the layer, e.g. 2")
    p.add_argument("--hidden", type=int, default=None, help="rows of dense (default: square)")
    _common(p)
    p.add_argument("--out", metavar="DIR", default=None, help="write checkpoint, metrics.csv and PNG plots here")
    p.add_argument("--resume", metavar="PATH", default=None, help="continue from a checkpoint (file or --out folder)")
    p.set_defaults(func=_cmd_train)
    return p


#: The families ``structops compare`` trains: (label, configuration overrides).
COMPARE_FAMILIES: tuple[tuple[str, dict], ...] = (
    ("dense", {"kernel": "dense"}),
    ("diagonal", {"kernel": "diagonal"}),
    ("antisymmetric", {"kernel": "antisymmetric"}),
    ("mmatrix", {"kernel": "mmatrix"}),
    ("linear (local 3x3)", {"kernel": "linear", "channels": 1}),
    ("conv 3x3, 1 channel", {"kernel": "conv", "channels": 1}),
    ("conv 3x3, 8 channels", {"kernel": "conv", "channels": 8}),
)


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
    values = {k: v for k, v in vars(args).items() if k in fields}
    values["reg_theta"], values["reg_W"] = args.reg_theta, args.reg_w
    if values.get("epochs") is None:
        values["epochs"] = _DEFAULT.epochs
    values.update(overrides)
    return TrainConfig(**values)


def _fail(msg: str) -> int:
    print(f"structops: error: {msg}", file=sys.stderr)
    return 2


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


def _cmd_train(args: argparse.Namespace) -> int:
    progress = not args.quiet and sys.stderr.isatty()
    say = (lambda _m: None) if args.quiet else print
    try:
        if args.resume is not None:
            saved = load_checkpoint(_resolve_checkpoint(args.resume)).config
            config = TrainConfig.from_dict(saved)
            _check_resume_flags(_config(args), config)
            if args.epochs is not None:
                config = dataclasses.replace(config, epochs=args.epochs)
            out = args.out if args.out is not None else str(_resolve_checkpoint(args.resume).parent)
        else:
            config = _config(args)
            out = args.out
        data = load_data(config)
        kernel = build_kernel(config, data.image_shape)
        if out is not None:  # before training, not after: a folder we cannot write is an error now
            _writable_folder(out)
    except (CheckpointError, IDXError, ValueError, TypeError) as exc:
        return _fail(str(exc))
    nclass_params = int(np.prod(kernel.out_shape)) * data.nclasses + data.nclasses
    print(f"data: {data.name}, {data.x_train.shape[0]} train / {data.x_test.shape[0]} test examples of shape "
          f"{data.image_shape}, {data.nclasses} classes")  # fmt: skip
    print(f"layer: {kernel!r}")
    print(f"parameters: {kernel.nparams:,} in K(θ) (a dense {kernel.shape[0]}x{kernel.shape[1]} K would need "
          f"{kernel.shape[0] * kernel.shape[1]:,}), {nclass_params:,} in the classifier")  # fmt: skip
    print(f"optimizer: {config.optimizer}, {config.epochs} epochs, {config.dtype}, seed {config.seed}")
    try:
        res = train(config, data, out=out, resume=args.resume, progress=progress, log=say)
    except TrainingDiverged as exc:
        print(f"structops: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        where = f"; resume with --resume {out}" if out else ""
        print(f"\nstructops: interrupted; the last finished epoch's checkpoint is kept{where}", file=sys.stderr)
        return 130
    if res.history["epoch"]:
        print(f"train accuracy {100 * res.train_acc:.2f}%, test accuracy {100 * res.test_acc:.2f}% "
              f"after {int(res.history['epoch'][-1])} epochs; time {res.seconds:.1f} s")  # fmt: skip
    else:
        print(f"nothing to do: the checkpoint already holds {config.epochs} epochs")
    if res.model.kernel.bounds is not None:
        lo = res.model.kernel.bounds[0]
        print(f"constraint: min(θ - lower bound) = {float(np.min(res.params.theta - lo)):.3g} (>= 0)")
    for path in res.outputs:
        print(f"wrote {path}")
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
        f"{base.epochs} epochs x {base.iters} iterations"
        if base.optimizer in ("lbfgs", "gnk")
        else (f"{base.epochs} epochs of batches of {base.batch_size}")
    )
    print(f"data: {data.name}, {data.x_train.shape[0]} train / {data.x_test.shape[0]} test; optimizer "
          f"{base.optimizer}, {budget}, {base.dtype}, seed {base.seed}")  # fmt: skip
    header = f"{'family':<22} {'K shape':>10} {'params in K':>12} {'train acc':>10} {'test acc':>9} {'time':>7}  note"
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
            print(f"{label:<22} failed: {exc}")
            continue
        k = res.model.kernel
        note = ""
        if k.bounds is not None:
            ok = bool(np.all(res.params.theta >= k.bounds[0]))
            note = "θ >= 0 held" if ok else "BOUND VIOLATED"
            failed += not ok
        shape = f"{k.shape[0]}x{k.shape[1]}"
        print(f"{label:<22} {shape:>10} {k.nparams:>12,} {100 * res.train_acc:>9.2f}% {100 * res.test_acc:>8.2f}% "
              f"{res.seconds:>6.1f}s  {note}", flush=True)  # fmt: skip
    print(f"total {time.perf_counter() - t_all:.1f} s")
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``train`` or ``compare`` stand-alone: ``main(["train", "--epochs", "1"])``."""
    parser = argparse.ArgumentParser(prog="structops")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
