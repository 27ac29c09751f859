"""Deblurring with structops: exact FFT solves, preconditioned CG, lsqr and pylops' cgls.

A piecewise-constant phantom is blurred by a Gaussian stencil (``structops.Conv``) with
periodic and with zero boundaries, and noise is added. The Tikhonov-regularised solution

    x_α = argmin ||K x - y||² + α ||x||²  =  (KᵀK + α I)⁻¹ Kᵀ y

is computed with

(a) the exact O(N log N) FFT solve ``structops.solvers.inverse(K, θ, alpha=α, normal=True)``
    (periodic boundaries; next to the unregularised K⁻¹, which amplifies the noise -- or is
    refused when the Gaussian symbol is numerically zero),
(b) ``scipy.sparse.linalg.cg`` on the normal equations (zero boundaries), without and with
    Strang's and T. Chan's circulant preconditioners ``(CᵀC + α I)⁻¹``,
(c) ``scipy.sparse.linalg.lsqr`` with ``damp = sqrt(α)``,
(d) pylops' ``cgls`` with ``damp = sqrt(α)``,

and the errors, iteration counts and times are printed; with ``--out`` a PNG compares the images.

Run: ``python examples/deblur.py --size 128 --out deblur.png`` (``--size 64`` for a quick run).
"""

from __future__ import annotations

import argparse
import time

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pylops
import scipy.sparse.linalg as spla
from pylops.optimization.basic import cgls

import structops
from structops.data import gaussian_stencil, phantom
from structops.solvers import circulant_preconditioner, cond, inverse


def rel_error(x: np.ndarray, ref: np.ndarray) -> float:
    return float(np.linalg.norm(x.ravel() - ref.ravel()) / np.linalg.norm(ref))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128, help="image side (default 128)")
    parser.add_argument("--stencil", type=int, default=9, help="stencil side (default 9)")
    parser.add_argument("--sigma", type=float, default=2.0, help="Gaussian width in pixels (default 2)")
    parser.add_argument("--noise", type=float, default=0.01, help="noise level relative to the data RMS")
    parser.add_argument("--alpha", type=float, default=1e-3, help="Tikhonov weight (default 1e-3)")
    parser.add_argument("--rtol", type=float, default=1e-6, help="relative tolerance of the iterative solvers")
    parser.add_argument("--maxiter", type=int, default=3000)
    parser.add_argument("--out", default=None, help="PNG file for the comparison figure (none without it)")
    args = parser.parse_args(argv)

    n, alpha, rng = args.size, args.alpha, np.random.default_rng(0)
    x_true = phantom(n)
    theta = gaussian_stencil(args.stencil, args.sigma).ravel()
    damp = float(np.sqrt(alpha))
    results: dict[str, dict] = {}

    def noisy(y):
        return y + args.noise * np.sqrt(np.mean(y**2)) * rng.standard_normal(y.shape)

    def record(name, x, iterations, seconds):
        results[name] = {"x": x.reshape(n, n), "error": rel_error(x, x_true), "iterations": iterations, "time": seconds}
        its = "-" if iterations is None else str(iterations)
        print(f"  {name:<28}{its:>11}{seconds:>10.3f}{results[name]['error']:>12.4g}")

    blur = f"{args.stencil}×{args.stencil} Gaussian blur (σ={args.sigma})"
    print(f"{n}×{n} phantom, {blur}, noise {args.noise:g}, α={alpha:g}")
    header = f"  {'method':<28}{'iterations':>11}{'time [s]':>10}{'error':>12}"

    # (a) periodic boundaries: the exact FFT solve
    Kp = structops.Conv((n, n), (args.stencil, args.stencil), bc="periodic")
    y_per = noisy(Kp.op(theta) @ x_true.ravel())
    print(f"periodic boundary (BCCB), cond(K) = {cond(Kp, theta):.3e}:")
    print(header)
    try:  # without regularisation the noise is amplified by up to 1/min|λ|, or K is numerically singular
        t0 = time.perf_counter()
        record("(a) exact FFT solve, α = 0", inverse(Kp, theta) @ y_per, None, time.perf_counter() - t0)
    except np.linalg.LinAlgError as err:
        print(f"  plain K⁻¹ refused: {str(err).split(' Regularise')[0]}")
    t0 = time.perf_counter()
    x = inverse(Kp, theta, alpha=alpha, normal=True) @ (Kp.op(theta).H @ y_per)
    record("(a) exact FFT solve, α > 0", x, None, time.perf_counter() - t0)
    results["blurred (periodic)"] = {"x": y_per.reshape(n, n), "error": rel_error(y_per, x_true)}

    # (b)-(d) zero boundaries: Krylov methods on the BTTB system
    Kz = structops.Conv((n, n), (args.stencil, args.stencil), bc="zero")
    T = Kz.op(theta)
    y = noisy(T @ x_true.ravel())
    results["blurred (zero)"] = {"x": y.reshape(n, n), "error": rel_error(y, x_true)}
    A = T.H @ T + alpha * pylops.Identity(n * n)
    b = T.H @ y
    print("zero boundary (BTTB):")
    print(header)
    for kind in (None, "strang", "chan"):
        count = [0]

        def callback(xk, count=count):
            count[0] += 1

        t0 = time.perf_counter()
        M = None if kind is None else circulant_preconditioner(Kz, theta, kind=kind, alpha=alpha, normal=True)
        x, info = spla.cg(A, b, rtol=args.rtol, maxiter=args.maxiter, M=M, callback=callback)
        label = "(b) cg" if kind is None else f"(b) cg + {kind} preconditioner"
        record(label, x, count[0], time.perf_counter() - t0)
        if info != 0:
            print(f"    (cg did not reach rtol={args.rtol:g}: info={info})")

    t0 = time.perf_counter()
    out = spla.lsqr(T, y, damp=damp, atol=args.rtol, btol=args.rtol, iter_lim=args.maxiter)
    record("(c) scipy lsqr", out[0], int(out[2]), time.perf_counter() - t0)

    t0 = time.perf_counter()
    out = cgls(T, y, niter=args.maxiter, damp=damp, tol=(args.rtol * np.linalg.norm(b)) ** 2)
    record("(d) pylops cgls", np.asarray(out[0]).ravel(), int(out[2]), time.perf_counter() - t0)

    if args.out is None:
        print("no figure: pass --out FILE.png to draw one")
        return results
    panels = [
        ("original", None),
        ("blurred (periodic)", "blurred (periodic)"),
        ("(a) exact FFT solve", "(a) exact FFT solve, α > 0"),
        ("blurred (zero)", "blurred (zero)"),
        ("(b) cg", "(b) cg"),
        ("(b) cg + T. Chan", "(b) cg + chan preconditioner"),
        ("(c) scipy lsqr", "(c) scipy lsqr"),
        ("(d) pylops cgls", "(d) pylops cgls"),
    ]
    fig, axes = plt.subplots(2, 4, figsize=(13, 7.8))
    for ax, (title, key) in zip(axes.ravel(), panels):
        res = {"x": x_true} if key is None else results[key]
        ax.imshow(res["x"], cmap="gray", vmin=0, vmax=1)
        if "error" in res:
            title += f"\nerror {res['error']:.3f}"
        if res.get("iterations") is not None:
            title += f", {res['iterations']} iterations"
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(args.out, dpi=80)
    plt.close(fig)
    print(f"figure written to {args.out}")
    return results


if __name__ == "__main__":
    main()
