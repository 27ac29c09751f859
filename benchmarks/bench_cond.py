"""Bounded spectral estimates of the README's zero-boundary blur: ``cond`` and ``spectral_norm``.

The operator is a 256×256 image blurred by a 9×9 Gaussian stencil (σ = 2) with zero
boundaries (a BTTB matrix ``T`` with 65,536 unknowns and no symbol), so
:func:`structops.solvers.spectral_norm` and :func:`structops.solvers.cond` estimate by
Golub--Kahan--Lanczos with at most ``maxiter`` steps. Prints, per estimate, the wall time, the
value, the interval it is known to lie in, the steps taken and whether it converged (a
non-converged ``cond`` -- the usual case for a blur -- returns its guaranteed lower bound and
warns). The periodic blur's exact ``cond`` from the symbol is printed for comparison.

Run: ``python benchmarks/bench_cond.py`` (options: ``--size``, ``--stencil``, ``--sigma``,
``--maxiter``, ``--tol``, ``--dtype``).
"""

from __future__ import annotations

import time
import warnings

import _common

import structops
from structops.data import gaussian_stencil
from structops.solvers import EstimateWarning, cond, spectral_norm


def main(argv=None) -> None:
    parser = _common.parser(__doc__)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--stencil", type=int, default=9)
    parser.add_argument("--sigma", type=float, default=2.0)
    parser.add_argument("--maxiter", type=int, default=200)
    parser.add_argument("--tol", type=float, default=1e-6)
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    args = _common.setup(parser, argv)

    n, s = args.size, args.stencil
    theta = gaussian_stencil(s, args.sigma).ravel().astype(args.dtype)
    zero = structops.Conv((n, n), (s, s), bc="zero")
    periodic = structops.Conv((n, n), (s, s), bc="periodic")
    print(f"{n}×{n} grid ({n * n} unknowns), {s}×{s} Gaussian (σ={args.sigma}), {args.dtype}, ")
    print(f"maxiter={args.maxiter}, tol={args.tol:g}")
    print(f"{'estimate':<28}{'time [s]':>9}{'value':>13}{'lower':>13}{'upper':>13}{'steps':>7}  converged")
    for name, func, kernel in (
        ("spectral_norm, zero bc", spectral_norm, zero),
        ("cond, zero bc", cond, zero),
        ("spectral_norm, periodic bc", spectral_norm, periodic),
        ("cond, periodic bc", cond, periodic),
    ):
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", EstimateWarning)
            est = func(kernel, theta, maxiter=args.maxiter, tol=args.tol, full_output=True)
        elapsed = time.perf_counter() - t0
        print(
            f"{name:<28}{elapsed:>9.2f}{est.value:>13.6e}{est.lower:>13.6e}{est.upper:>13.6e}"
            f"{est.iterations:>7}  {est.converged} ({est.method})"
        )


if __name__ == "__main__":
    main()
