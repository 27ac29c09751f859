"""Iteration counts of preconditioned Krylov solvers against the grid size N, in 1-D and 2-D.

The Tikhonov problem ``min ||T x - y||² + α ||x||²`` of a zero-boundary Gaussian blur ``T``
(Toeplitz in 1-D, BTTB in 2-D; stencil 9 or 9×9, σ = 2) of the phantom with 1 % noise is solved by

* ``cg`` on the normal equations ``(TᵀT + αI) x = Tᵀy``, without and with the circulant
  preconditioner ``M = (CᵀC + αI)⁻¹`` (Strang's or T. Chan's ``C``),
* ``lsqr`` on ``[T; √α I] P z = [y; 0]``, ``x = P z``, without and with the split (right)
  preconditioner ``P = (CᵀC + αI)^{-1/2}``,

all through ``structops.solvers.tikhonov(..., solver=..., preconditioner=...)``, to ``rtol``.
It prints one Markdown table of iteration counts (and seconds) per dimension.

Run: ``python benchmarks/bench_iterations.py`` (defaults: α = 1e-4, rtol = 1e-6, 1-D N = 256 ...
16384, 2-D N = 64² ... 512²); ``--quick`` for small sizes.
"""

from __future__ import annotations

import time

import _common
import numpy as np

import structops
from structops.data import gaussian_stencil, phantom
from structops.solvers import tikhonov


def problem(n: int, ndim: int, noise: float, rng: np.random.Generator):
    grid = (n,) * ndim
    kernel = structops.Conv(grid, (9,) * ndim)
    theta = gaussian_stencil(9, 2.0, ndim=ndim).ravel()
    if ndim == 2:
        img = phantom(n)
    else:  # the middle row of a 512² phantom, sampled on n points
        row = phantom(512)[256]
        img = row[np.minimum((np.arange(n) * 512) // n, 511)]
    y = kernel.apply(theta, img)
    return kernel, theta, y + noise * rng.standard_normal(y.shape)


def table(ndim: int, sizes: list[int], args) -> None:
    rng = np.random.default_rng(0)
    runs = [(s, p) for s in ("cg", "lsqr") for p in (None, "strang", "chan")]
    label = "N" if ndim == 1 else "N (side)"
    print(f"\n{ndim}-D, α = {args.alpha:g}, rtol = {args.rtol:g}: iterations (seconds)\n")
    print(f"| {label} | " + " | ".join(f"{s} {p or 'none'}" for s, p in runs) + " |")
    print("|---:|" + "---:|" * len(runs))
    for n in sizes:
        kernel, theta, y = problem(n, ndim, args.noise, rng)
        cells = []
        for solver, prec in runs:
            t0 = time.perf_counter()
            res = tikhonov(
                kernel,
                theta,
                y,
                alpha=args.alpha,
                solver=solver,
                preconditioner=prec,
                rtol=args.rtol,
                maxiter=args.maxiter,
                full_output=True,
            )
            flag = "" if res.converged else "+"
            cells.append(f"{res.iterations}{flag} ({time.perf_counter() - t0:.2f})")
        print(f"| {n} | " + " | ".join(cells) + " |", flush=True)


def main(argv=None) -> None:
    parser = _common.parser(__doc__)
    parser.add_argument("--alpha", type=float, default=1e-4)
    parser.add_argument("--rtol", type=float, default=1e-6)
    parser.add_argument("--noise", type=float, default=0.01)
    parser.add_argument("--maxiter", type=int, default=5000)
    parser.add_argument("--sizes1d", type=int, nargs="+", default=[256, 1024, 4096, 16384])
    parser.add_argument("--sizes2d", type=int, nargs="+", default=[64, 128, 256, 512])
    parser.add_argument("--quick", action="store_true", help="small sizes (CI)")
    args = _common.setup(parser, argv)
    if args.quick:
        args.sizes1d, args.sizes2d = [128, 512], [32, 64]
    table(1, args.sizes1d, args)
    table(2, args.sizes2d, args)


if __name__ == "__main__":
    main()
