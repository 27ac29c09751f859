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
import scipy.sparse as sp

from . import kernels
from .testing import check_kernel


def tridiagonal_kernel(n: int) -> kernels.LinearKernel:
    r"""A user-pattern :class:`~structops.LinearKernel`: :math:`K = I + \mathrm{tridiag}(\theta_1, \theta_2, \theta_3)`.

    Three parameters shared along the sub-, main and super-diagonal and the offset
    :math:`q = \operatorname{vec}(I)`, so ``Q`` has :math:`3n - 2` nonzeros.

    Parameters
    ----------
    n : int
        Size of ``K`` (``n >= 1``).

    Returns
    -------
    LinearKernel

    Examples
    --------
    >>> tridiagonal_kernel(3).matrix(np.array([1.0, 2.0, 3.0]))
    array([[3., 3., 0.],
           [1., 3., 3.],
           [0., 1., 3.]])
    """
    rows, cols, par = [], [], []
    for offset, which in ((-1, 0), (0, 1), (1, 2)):
        i = np.arange(max(0, -offset), min(n, n - offset))
        rows.append(i)
        cols.append(i + offset)
        par.append(np.full(i.size, which))
    r, c, k = (np.concatenate(a) for a in (rows, cols, par))
    Q = sp.csr_array((np.ones(r.size), (r + c * n, k)), shape=(n * n, 3))
    return kernels.LinearKernel(Q, (n, n), q=np.eye(n).ravel(order="F"))


def builtin_kernels(quick: bool = False) -> list[kernels.ParametricKernel]:
    """The families ``structops check`` covers, each at a few sizes.

    Parameters
    ----------
    quick : bool, optional
        One size per family (the full run adds sizes 1 and 7 and more shapes).

    Returns
    -------
    list of ParametricKernel
    """
    sizes = (3,) if quick else (1, 3, 7)
    fams: list[kernels.ParametricKernel] = []
    for n in sizes:
        fams += [
            kernels.Dense(n, n + 1),
            kernels.Diagonal(n),
            kernels.Antisymmetric(n),
            kernels.MMatrix(n),
            tridiagonal_kernel(n),
        ]
    fams.append(kernels.Softplus(kernels.MMatrix(4)))
    fams.append(kernels.Dense(2, 9))
    Conv = kernels.Conv
    fams += [Conv((8,), (3,)), Conv((5, 6), (3, 3), bc="periodic")]
    fams.append(kernels.Chain(kernels.AvgPool((6, 4), 2, channels=2), Conv((6, 4), 3, out_channels=2)))
    # the lecture notes' project ideas
    fams += [
        kernels.MMatrixConv((6, 5), 3, bc="periodic"),
        kernels.Softplus(kernels.MMatrixConv((6, 5), 3, channels=2)),
        kernels.SymmetricConv((7, 6), 3, bc="symmetric"),
        kernels.SeparableConv((7, 6), (3, 5), out_channels=2),
        kernels.DepthwiseSeparableConv((6, 6), 3, in_channels=2, out_channels=3),
        kernels.Wavelet((8, 8)),
        kernels.Sparse(np.eye(5, 6, dtype=bool) | np.eye(5, 6, k=2, dtype=bool)),
        kernels.Banded(6, 1, 2),
        # the antisymmetric kernel carried to convolutions, and its orthogonal Cayley transform
        kernels.AntisymmetricConv((6, 5), 3, bc="periodic", channels=2),
        kernels.CayleyConv((6, 5), 3),
    ]
    if not quick:
        fams += [
            Conv((6, 5), (3, 3), in_channels=2, out_channels=3),
            Conv((7,), (3,), bc="reflect"),
            Conv((9, 7), (4, 3), bc="replicate", stride=(2, 1), in_channels=2, out_channels=2),
            Conv((8, 8), (5, 5), bc="valid", stride=2),
            Conv((4, 5, 3), (3, 2, 3), bc="periodic", in_channels=2, out_channels=1),
            Conv((10, 9), (7, 7), bc="zero", method="fft"),
            kernels.Chain(kernels.AvgPool((8,), 4, channels=3), Conv((8,), 5, bc="periodic", out_channels=3)),
            kernels.Softplus(Conv((6, 6), (3, 3), bc="zero", method="fft")),  # a nonnegative stencil
            kernels.SymmetricConv((6, 6), 5, symmetry="isotropic", in_channels=2, out_channels=2, stride=2),
            kernels.SeparableConv((5, 4, 3), 3, bc="periodic", rank=2),
            kernels.DepthwiseSeparableConv((9,), 3, bc="reflect", in_channels=3, out_channels=2, multiplier=2),
            kernels.Wavelet(16, "db2", per="coefficient"),
            kernels.AntisymmetricConv((7, 6), (4, 3), channels=2),
            kernels.CayleyConv((4, 5, 3), (3, 2, 3), channels=2),
        ]
    return fams


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
