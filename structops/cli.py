r"""Command line: ``structops check`` (and the later sub-commands).

``structops check`` runs :func:`structops.testing.check_kernel` on every built-in family at a
few sizes and both dtypes, prints one line per family and dtype, and exits with status 1 when
any check fails (0 otherwise).

Examples
--------
>>> main(["check", "--quick", "--dtype", "float64"])  # doctest: +ELLIPSIS
family ...
... family checks passed in ... s
0
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import numpy as np

from . import kernels
from .families import check_instances, tridiagonal_kernel
from .testing import check_kernel

__all__ = ["build_parser", "builtin_kernels", "main", "tridiagonal_kernel"]


def builtin_kernels(quick: bool = False) -> list[kernels.ParametricKernel]:
    """The families ``structops check`` covers, each at a few sizes (:func:`structops.families.check_instances`).

    Parameters
    ----------
    quick : bool, optional
        One size per family (the full run adds sizes 1 and 7 and more shapes).

    Returns
    -------
    list of ParametricKernel
    """
    return check_instances(quick)


def _label(kernel: kernels.ParametricKernel) -> str:
    """A short name of a family for the table (its repr when short)."""
    if isinstance(kernel, kernels.LinearKernel):
        return f"LinearKernel(nnz(Q)={kernel.Q.nnz}{', q' if kernel.q is not None else ''})"
    conv = kernel if isinstance(kernel, kernels.Conv) else getattr(kernel, "conv", None)
    if isinstance(conv, kernels.Conv):  # Conv, or a family built on one (ConvBased)
        stride = f", stride {conv.stride}" if any(st != 1 for st in conv.stride) else ""
        how = conv.method if conv is kernel else getattr(kernel, "path", None) or getattr(kernel, "symmetry", "")
        channels = f"{conv.in_channels}->{conv.out_channels} ch"
        tail = f", {how}" if how else ""
        return f"{type(kernel).__name__}({conv.grid}, {conv.stencil}, {conv.bc}, {channels}{stride}{tail})"
    if isinstance(kernel, kernels.Chain):
        return f"AvgPool∘{_label(kernel.kernel)}"
    if isinstance(kernel, kernels.Softplus):
        return f"Softplus({_label(kernel.kernel)})"
    return repr(kernel)


def _size(kernel: kernels.ParametricKernel) -> str:
    m, n = kernel.shape
    return f"{m}x{n}, p={kernel.nparams}"


def _cmd_check(args: argparse.Namespace) -> int:
    families = builtin_kernels(quick=args.quick)
    dtypes = [np.dtype(d) for d in args.dtype]
    width = max(len(_label(f)) for f in families) + 1
    header = (
        f"{'family':<{width}} {'size':<14} {'dtype':<8} {'checks':>6}  {'worst check':<30} "
        f"{'error':>9} {'tol':>9}  result"
    )
    print(header)
    print("-" * len(header))
    failures = 0
    start = time.perf_counter()
    for fam in families:
        for dtype in dtypes:
            report = check_kernel(fam, dtype=dtype, rng=args.seed)
            worst = report.worst()
            assert worst is not None  # every report has rows
            status = "ok" if report.passed else f"FAIL ({len(report.failures)})"
            failures += not report.passed
            print(
                f"{_label(fam):<{width}} {_size(fam):<14} {dtype.name:<8} {len(report.results):>6}  "
                f"{worst.check:<30} {worst.error:9.2e} {worst.tol:9.2e}  {status}"
            )
            if not report.passed or args.verbose:
                print(report)
    total = len(families) * len(dtypes)
    print(f"\n{total - failures}/{total} family checks passed in {time.perf_counter() - start:.1f} s")
    return 1 if failures else 0


def build_parser() -> argparse.ArgumentParser:
    """The ``structops`` argument parser."""
    from . import __version__

    parser = argparse.ArgumentParser(prog="structops", description="Parametric structured linear operators.")
    parser.add_argument("--version", action="version", version=f"structops {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser(
        "check",
        help="run check_kernel on every built-in family, both dtypes",
        description="Run structops.testing.check_kernel on every built-in family at a few sizes and both "
        "dtypes; print one line per family (worst check: the failed one, else the largest error/tol "
        "among non-Taylor checks); exit 1 on any failure.",
    )
    check.add_argument("--dtype", nargs="+", default=["float64", "float32"], choices=["float64", "float32"])
    check.add_argument("--seed", type=int, default=0, help="seed of theta and of the random examples")
    check.add_argument("--quick", action="store_true", help="one size per family")
    check.add_argument("--verbose", "-v", action="store_true", help="print every check of every family")
    check.set_defaults(func=_cmd_check)
    from .train.cli import register as _register_train

    _register_train(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``structops`` console script.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name (default ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit status: 0 when every check passed.
    """
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
