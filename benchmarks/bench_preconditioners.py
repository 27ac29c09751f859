"""Circulant preconditioners on a zero-boundary deblurring system: CG on the normal equations.

The system is the Tikhonov-regularised normal equations of a 256×256 image blurred by a 9×9
Gaussian stencil with zero boundaries (a BTTB matrix ``T``),

    (TᵀT + α I) x = Tᵀ y,        α = 1e-3,

solved by ``scipy.sparse.linalg.cg`` without a preconditioner and with Strang's and
T. Chan's circulant preconditioners ``M = (CᵀC + α I)⁻¹`` (one FFT pair per iteration).
Prints iterations, wall times and errors.

Run: ``python benchmarks/bench_preconditioners.py`` (options: ``--size``, ``--alpha``,
``--sigma``, ``--rtol``, ``--dtype``).
"""

from __future__ import annotations

import time

import _common
import numpy as np
import pylops
import scipy.sparse.linalg as spla

import structops
from structops.data import gaussian_stencil, phantom
from structops.solvers import circulant_preconditioner


def main(argv=None) -> None:
    parser = _common.parser(__doc__)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--stencil", type=int, default=9)
    parser.add_argument("--sigma", type=float, default=2.0)
    parser.add_argument("--alpha", type=float, default=1e-3)
    parser.add_argument("--noise", type=float, default=1e-2)
    parser.add_argument("--rtol", type=float, default=1e-6)
    parser.add_argument("--maxiter", type=int, default=5000)
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    args = _common.setup(parser, argv)

    dtype = np.dtype(args.dtype)
    n = args.size
    kernel = structops.Conv((n, n), (args.stencil, args.stencil), bc="zero")
    theta = gaussian_stencil(args.stencil, args.sigma).ravel().astype(dtype)
    T = kernel.op(theta)
    rng = np.random.default_rng(0)
    x_true = phantom(n, ring=False).ravel().astype(dtype)
    y = T @ x_true
    y = (y + args.noise * np.linalg.norm(y) / np.sqrt(y.size) * rng.standard_normal(y.size)).astype(dtype)
    A = T.H @ T + args.alpha * pylops.Identity(n * n, dtype=dtype)
    b = T.H @ y

    print(f"deblurring system: {n}×{n} image, {args.stencil}×{args.stencil} Gaussian (σ={args.sigma}), zero boundary,")
    print(f"CG on (TᵀT + αI) x = Tᵀy with α={args.alpha:g}, rtol={args.rtol:g}, {dtype}, method={kernel.method!r}")
    print(f"{'preconditioner':<16}{'iterations':>11}{'setup [s]':>11}{'solve [s]':>11}{'residual':>11}{'error':>9}")
    reference = None
    for kind in (None, "strang", "chan"):
        t0 = time.perf_counter()
        M = None if kind is None else circulant_preconditioner(kernel, theta, kind=kind, alpha=args.alpha, normal=True)
        setup = time.perf_counter() - t0
        count = [0]

        def callback(xk, count=count):
            count[0] += 1

        t0 = time.perf_counter()
        x, info = spla.cg(A, b, rtol=args.rtol, maxiter=args.maxiter, M=M, callback=callback)
        solve = time.perf_counter() - t0
        residual = np.linalg.norm(A @ x - b) / np.linalg.norm(b)
        error = np.linalg.norm(x - x_true) / np.linalg.norm(x_true)
        label = "none" if kind is None else kind
        flag = "" if info == 0 else f"  (info={info})"
        print(f"{label:<16}{count[0]:>11d}{setup:>11.3f}{solve:>11.3f}{residual:>11.2e}{error:>9.4f}{flag}")
        if reference is None:
            reference = x
        else:  # same system, so the same solution up to cond(A) * rtol <= (||T||² + α)/α * rtol
            gap = np.linalg.norm(x - reference) / np.linalg.norm(reference)
            bound = (1 + args.alpha) / args.alpha * args.rtol * 2
            assert gap < bound, f"the preconditioned solution differs from the plain one by {gap:.2e} > {bound:.2e}"


if __name__ == "__main__":
    main()
