"""Deblurring as an imaging scientist does it: a boundary model, α chosen from the data, PSNR.

A test image -- scikit-image's ``camera`` (512×512, public domain; install the optional extra
``pip install structops[imaging]``) or, without scikit-image, the phantom shipped with
structops (``structops.data.phantom``) -- is blurred by a 9×9 Gaussian (σ = 2) with zero
boundaries (an object on a dark background) and 1 % noise (σ = 0.01 of the [0, 1] range) is
added. It is restored by Tikhonov regularisation

    x_α = argmin ||K x - b||² + α ||L x||²,     structops.solvers.tikhonov(K, θ, b, alpha=α, L=L)

with three boundary models of the same blur, each solved exactly through its diagonalisation:

* periodic  -- ``Conv(..., bc="periodic")``, the FFT;
* zero      -- ``Conv(..., bc="zero")``, the Kronecker product of the 1-D Toeplitz factors (SVDs);
* symmetric -- ``SymmetricConv(..., bc="symmetric")``, the DCT-II;

(``--data-bc`` makes the data with another boundary: the model that matches the data wins, and
a mismatched one is far worse than the blurred data, because α chosen from the data cannot
absorb a model error at the edges);

and α chosen from the data by ``structops.solvers.choose_alpha`` with GCV and with the
discrepancy principle (the noise level known). L is the identity, and for the periodic and
symmetric models also the Laplacian of the same boundary (same basis: still exact). The zero
model is solved once more by lsqr with the split Chan preconditioner (the route any ``L``
takes), and scikit-image's unsupervised Wiener filter and Richardson-Lucy (30 iterations) are
run when it is installed. PSNR and times are printed; one PNG shows the images.

Run: ``python examples/deblur.py --out deblur.png`` (``--size 128`` for a quick run,
``--phantom`` to use the shipped phantom).
"""

from __future__ import annotations

import argparse
import importlib.util
import time

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np

import structops
from structops.data import gaussian_stencil, phantom
from structops.solvers import choose_alpha, tikhonov

LAPLACE = np.array([0.0, -1.0, 0.0, -1.0, 4.0, -1.0, 0.0, -1.0, 0.0])
LAPLACE_ORTHANT = np.array([4.0, -1.0, -1.0, 0.0])  # SymmetricConv's first orthant (centre, axis 1, axis 0, corner)


def load_image(size: int, use_phantom: bool) -> tuple[np.ndarray, str]:
    """``camera`` resized to ``size`` when scikit-image is installed, else the shipped phantom."""
    if not use_phantom and importlib.util.find_spec("skimage") is not None:
        from skimage import data, transform

        img = data.camera().astype(np.float64) / 255.0
        if size != img.shape[0]:
            img = transform.resize(img, (size, size), anti_aliasing=True)
        return img, "scikit-image camera"
    return phantom(size), "structops.data.phantom"


def psnr(x: np.ndarray, ref: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((x - ref) ** 2)))


def models(n: int, stencil: np.ndarray) -> dict[str, tuple]:
    """(kernel, θ, Laplacian L or None) per boundary model."""
    s = stencil.shape[0]
    sym = structops.SymmetricConv((n, n), s, bc="symmetric")
    return {
        "periodic": (
            structops.Conv((n, n), (s, s), bc="periodic"),
            stencil.ravel(),
            structops.Conv((n, n), 3, bc="periodic").op(LAPLACE),
        ),
        "zero": (structops.Conv((n, n), (s, s), bc="zero"), stencil.ravel(), None),
        "symmetric": (
            sym,
            stencil[s // 2 :, s // 2 :].ravel(),
            structops.SymmetricConv((n, n), 3, bc="symmetric").op(LAPLACE_ORTHANT),
        ),
    }


def restore(models_, b, noise, x_true, record) -> None:
    """Every boundary model with α from GCV and from the discrepancy principle (L = I, and the Laplacian)."""
    for name, (kernel, theta, lap) in models_.items():
        for L, lname in ((None, "I"), (lap, "Laplacian")):
            if L is None and lname != "I":
                continue
            if lname == "Laplacian" and lap is None:
                continue
            for method in ("gcv", "discrepancy"):
                t0 = time.perf_counter()
                choice = choose_alpha(kernel, theta, b, method=method, L=L, noise=noise)
                x = tikhonov(kernel, theta, b, alpha=choice.alpha, L=L)
                record(f"{name:<9} L={lname:<9} {method:<11}", x, choice.alpha, time.perf_counter() - t0)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="image side (default 512)")
    parser.add_argument("--sigma", type=float, default=2.0, help="Gaussian width in pixels (default 2)")
    parser.add_argument("--noise", type=float, default=0.01, help="noise standard deviation (default 0.01)")
    parser.add_argument("--phantom", action="store_true", help="use structops.data.phantom, not camera")
    parser.add_argument(
        "--data-bc", default="zero", choices=("zero", "periodic", "symmetric"), help="boundary that makes the data"
    )
    parser.add_argument("--out", default=None, help="PNG file for the figure (none without it)")
    args = parser.parse_args(argv)

    x_true, source = load_image(args.size, args.phantom)
    n = x_true.shape[0]
    stencil = gaussian_stencil(9, args.sigma)
    blur = structops.Conv((n, n), (9, 9), bc=args.data_bc)
    rng = np.random.default_rng(0)
    b = blur.apply(stencil.ravel(), x_true) + args.noise * rng.standard_normal((n, n))
    results: dict[str, dict] = {}

    def record(label, x, alpha, seconds):
        results[label.strip()] = {"x": x, "psnr": psnr(x, x_true), "alpha": alpha, "time": seconds}
        a = "-" if alpha is None else f"{alpha:.3e}"
        print(f"  {label:<40}{a:>11}{results[label.strip()]['psnr']:>9.2f}{seconds:>9.2f}")

    print(f"{source}, {n}×{n}; 9×9 Gaussian blur (σ={args.sigma:g}), {args.data_bc} boundary; noise σ={args.noise:g}")
    print(f"  {'model':<40}{'alpha':>11}{'PSNR dB':>9}{'time s':>9}")
    record("blurred data", b, None, 0.0)
    restore(models(n, stencil), b, args.noise, x_true, record)

    kernel, theta = structops.Conv((n, n), (9, 9)), stencil.ravel()
    alpha = results["zero      L=I         discrepancy"]["alpha"]
    t0 = time.perf_counter()
    it = tikhonov(kernel, theta, b, alpha=alpha, solver="lsqr", preconditioner="chan", rtol=1e-4, full_output=True)
    record(f"zero      L=I  lsqr+chan ({it.iterations} it.)", it.x, alpha, time.perf_counter() - t0)

    if importlib.util.find_spec("skimage") is not None:
        from skimage import restoration

        t0 = time.perf_counter()
        w, _ = restoration.unsupervised_wiener(b, stencil, clip=False, rng=0)
        record("scikit-image unsupervised_wiener", w, None, time.perf_counter() - t0)
        t0 = time.perf_counter()
        rl = restoration.richardson_lucy(np.clip(b, 0, None), stencil, num_iter=30, clip=False)
        record("scikit-image richardson_lucy (30)", rl, None, time.perf_counter() - t0)
    else:
        print("  (scikit-image not installed: no Wiener / Richardson-Lucy comparison)")

    if args.out is None:
        print("no figure: pass --out FILE.png to draw one")
    else:
        figure(results, x_true, args.out)
    return results


def figure(results: dict, x_true: np.ndarray, out: str) -> None:
    ranked = sorted((k for k in results if k != "blurred data"), key=lambda k: -results[k]["psnr"])
    keys = ["blurred data", *ranked[:6]]
    fig, axes = plt.subplots(2, 4, figsize=(14, 7.6))
    panels = [("original", x_true, None), *((k, results[k]["x"], results[k]["psnr"]) for k in keys)]
    for ax, (title, img, value) in zip(axes.ravel(), panels):
        ax.imshow(img, cmap="gray", vmin=0, vmax=1)
        ax.set_title(title if value is None else f"{' '.join(title.split())}\n{value:.2f} dB", fontsize=8)
        ax.axis("off")
    for ax in axes.ravel()[len(panels) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=72)
    plt.close(fig)
    print(f"figure written to {out}")


if __name__ == "__main__":
    main()
