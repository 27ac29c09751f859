"""The camera deblurring comparison of issue 18: α from the data against the best α, and scikit-image.

scikit-image's ``camera`` (512², [0, 1]) blurred by a 9×9 Gaussian (σ = 2) with zero boundaries,
plus 1 % noise (σ = 0.01). Restored by Tikhonov (``L = I``) with the zero-boundary model,
solved exactly through its Kronecker diagonalisation, with α

* the best on a grid of 25 weights (1e-5 ... 1e-1; an oracle: it needs the true image),
* from ``choose_alpha``: GCV, the discrepancy principle (τ = 1.01, the noise known), the L-curve,
* the old documentation's α = 1e-3, and α = 0 (refused when the system is numerically singular);

and, when scikit-image is installed, its Wiener filter (``balance`` best on a grid: an oracle),
unsupervised Wiener and Richardson--Lucy (best of 10/30/100 iterations: an oracle), which assume
periodic boundaries. Prints one Markdown table (PSNR in dB, seconds).

Run: ``python benchmarks/bench_deblur.py`` (``--size 256`` for a quicker run; without
scikit-image the shipped phantom is used and the scikit-image rows are skipped).
"""

from __future__ import annotations

import importlib.util
import time

import _common
import numpy as np

import structops
from structops.data import gaussian_stencil, phantom
from structops.solvers import choose_alpha, tikhonov


def psnr(x, ref) -> float:
    return float(10 * np.log10(1.0 / np.mean((np.reshape(x, ref.shape) - ref) ** 2)))


def main(argv=None) -> None:
    parser = _common.parser(__doc__)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--noise", type=float, default=0.01)
    args = _common.setup(parser, argv)
    have_skimage = importlib.util.find_spec("skimage") is not None
    if have_skimage:
        from skimage import data, restoration, transform

        x = data.camera().astype(np.float64) / 255.0
        if args.size != x.shape[0]:
            x = transform.resize(x, (args.size, args.size), anti_aliasing=True)
        source = "camera"
    else:
        x, source = phantom(args.size), "phantom"
    n = x.shape[0]
    g = gaussian_stencil(9, 2.0)
    k = structops.Conv((n, n), (9, 9))
    theta = g.ravel()
    b = k.apply(theta, x) + args.noise * np.random.default_rng(0).standard_normal((n, n))
    rows: list[tuple[str, str, str, float]] = [("blurred data", "-", f"{psnr(b, x):.2f}", 0.0)]

    def solve(label, alpha, seconds=0.0):
        t0 = time.perf_counter()
        z = tikhonov(k, theta, b, alpha=alpha)
        rows.append((label, f"{alpha:.3e}", f"{psnr(z, x):.2f}", seconds + time.perf_counter() - t0))

    grid = np.logspace(-5, -1, 25)
    t0 = time.perf_counter()
    best = max(grid, key=lambda a: psnr(tikhonov(k, theta, b, alpha=a), x))
    solve("zero model, best α on the grid (oracle, 25 solves)", best, time.perf_counter() - t0)
    for method in ("gcv", "discrepancy", "lcurve"):
        t0 = time.perf_counter()
        choice = choose_alpha(k, theta, b, method=method, noise=args.noise)
        solve(f"zero model, choose_alpha {method}", choice.alpha, time.perf_counter() - t0)
    solve("zero model, the old docs' α = 1e-3", 1e-3)
    try:
        solve("zero model, α = 0", 0.0)
    except ValueError as err:
        rows.append(("zero model, α = 0", "0", "refused: " + str(err).split(":")[0], 0.0))
    if have_skimage:
        t0 = time.perf_counter()
        bal = max(np.logspace(-4, 0, 13), key=lambda c: psnr(restoration.wiener(b, g, c, clip=False), x))
        w = restoration.wiener(b, g, bal, clip=False)
        rows.append(
            (f"scikit-image wiener, balance {bal:.1e} (oracle)", "-", f"{psnr(w, x):.2f}", time.perf_counter() - t0)
        )
        t0 = time.perf_counter()
        w, _ = restoration.unsupervised_wiener(b, g, clip=False, rng=0)
        rows.append(("scikit-image unsupervised_wiener", "-", f"{psnr(w, x):.2f}", time.perf_counter() - t0))
        t0 = time.perf_counter()
        its = max(
            (10, 30, 100), key=lambda m: psnr(restoration.richardson_lucy(np.clip(b, 0, None), g, m, clip=False), x)
        )
        rl = restoration.richardson_lucy(np.clip(b, 0, None), g, its, clip=False)
        rows.append(
            (f"scikit-image richardson_lucy, {its} it. (oracle)", "-", f"{psnr(rl, x):.2f}", time.perf_counter() - t0)
        )
    print(f"{source} {n}×{n}, 9×9 Gaussian σ=2, zero boundary, noise σ={args.noise:g}\n")
    print("| method | α | PSNR [dB] | time [s] |\n|---|---:|---:|---:|")
    for label, alpha, value, seconds in rows:
        print(f"| {label} | {alpha} | {value} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
