"""Command line: ``structops check`` (and the later sub-commands)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import numpy as np

from . import kernels
from .testing import check_kernel


def builtin_kernels(quick: bool = False) -> list[kernels.ParametricKernel]:
    """The families ``structops check`` covers, each at a few sizes."""
    sizes = (1, 3, 7) if not quick else (3,)
    fams: list[kernels.ParametricKernel] = []
    for n in sizes:
        fams += [kernels.Dense(n, n + 1), kernels.Diagonal(n), kernels.Antisymmetric(n), kernels.MMatrix(n)]
    fams.append(kernels.Softplus(kernels.MMatrix(4)))
    fams.append(kernels.Dense(2, 9))
    return fams


def _cmd_check(args: argparse.Namespace) -> int:
    families = builtin_kernels(quick=args.quick)
    dtypes = [np.dtype(d) for d in args.dtype]
    header = f"{'family':<34} {'dtype':<8} {'checks':>6} {'worst check':<28} {'error':>9} {'tol':>9}  result"
    print(header)
    print("-" * len(header))
    failures = 0
    start = time.perf_counter()
    for fam in families:
        for dtype in dtypes:
            report = check_kernel(fam, dtype=dtype, rng=args.seed)
            worst = max(report.results, key=lambda r: (not r.passed, r.error / r.tol if r.tol else 0.0))
            status = "ok" if report.passed else "FAIL"
            failures += not report.passed
            print(
                f"{fam!r:<34} {dtype.name:<8} {len(report.results):>6} {worst.check:<28} "
                f"{worst.error:9.2e} {worst.tol:9.2e}  {status}"
            )
            if not report.passed or args.verbose:
                print(report)
    total = len(families) * len(dtypes)
    print(f"\n{total - failures}/{total} family checks passed in {time.perf_counter() - start:.1f} s")
    return 1 if failures else 0


def build_parser() -> argparse.ArgumentParser:
    """The ``structops`` argument parser."""
    parser = argparse.ArgumentParser(prog="structops", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="run check_kernel on every built-in family, both dtypes")
    check.add_argument("--dtype", nargs="+", default=["float64", "float32"], choices=["float64", "float32"])
    check.add_argument("--seed", type=int, default=0)
    check.add_argument("--quick", action="store_true", help="one size per family")
    check.add_argument("--verbose", "-v", action="store_true", help="print every check of every family")
    check.set_defaults(func=_cmd_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``structops`` console script."""
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
