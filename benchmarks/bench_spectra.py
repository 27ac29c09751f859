"""Exact and certified spectra (issue 17): the routes of ``structops.solvers`` timed and checked.

Cases (256×256 grids unless said otherwise):

* ``cond`` of the zero-boundary 9×9 Gaussian blur (σ = 2), as ``Conv`` and as
  ``SeparableConv(rank=1)`` (Kronecker route), against ``cond(T)²`` of the dense 1-D Toeplitz ``T``;
* ``cond`` of ``SymmetricConv(bc="symmetric")`` (cosine route) and of
  ``Softplus(Conv(bc="periodic"))`` (Fourier route);
* ``spectral_norm`` of zero-boundary 9×9 convolutions that no transform diagonalises (a rank-2
  blur, a random stencil; certified route: upper certificate / Lanczos lower bound);
* ``svdvals`` of a periodic 8→16-channel 3×3 convolution on 64×64 (one batched SVD of the blocks);
* ``project_spectral_norm`` of a periodic 16-channel and a zero-boundary 1→8-channel convolution.

Each row prints the route, the wall time (best of ``--repeat``), the value and its bounds. The
thread settings are printed first (set them with ``--threads``).

Run: ``python benchmarks/bench_spectra.py`` (``--threads 1``, ``--repeat 3``).
"""

from __future__ import annotations

import time
import warnings

import _common
import numpy as np

import structops
from structops.data import gaussian_stencil
from structops.solvers import (
    EstimateWarning,
    certified_norm_bound,
    cond,
    project_spectral_norm,
    route,
    spectral_norm,
    svdvals,
)


def best_of(repeat: int, func):
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = func()
        times.append(time.perf_counter() - t0)
    return min(times), out


def row(name: str, seconds: float, est, extra: str = "") -> None:
    print(
        f"| {name} | {est.method} | {seconds * 1e3:.1f} | {est.value:.6e} | {est.lower:.6e} | {est.upper:.6e} | "
        f"{est.upper / est.lower if est.lower > 0 else float('inf'):.5f} | {extra} |"
    )


def spectra_cases(n: int, repeat: int) -> None:
    g = gaussian_stencil(9, 2.0)
    f = g.sum(axis=1)
    T = structops.Conv(n, 9).matrix(f)
    truth = np.linalg.cond(T) ** 2
    print("| case | route | ms | value | lower | upper | upper/lower | note |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for name, kernel, theta in (
        ("cond, Gaussian blur as Conv", structops.Conv((n, n), (9, 9)), g.ravel()),
        ("cond, Gaussian blur as SeparableConv", structops.SeparableConv((n, n), (9, 9)), np.concatenate([f, f])),
    ):
        seconds, est = best_of(repeat, lambda k=kernel, t=theta: cond(k, t, full_output=True))
        row(name, seconds, est, f"rel. err vs cond(T)² = {abs(est.value / truth - 1):.1e}")
    sym = structops.SymmetricConv((n, n), (9, 9), bc="symmetric")
    theta = sym.random_theta(0)
    seconds, est = best_of(repeat, lambda: cond(sym, theta, full_output=True))
    row("cond, SymmetricConv 9×9 bc=symmetric", seconds, est)
    soft = structops.Softplus(structops.Conv((n, n), (3, 3), bc="periodic"))
    phi = np.random.default_rng(0).standard_normal(9)
    seconds, est = best_of(repeat, lambda: cond(soft, phi, full_output=True))
    row("cond, Softplus(Conv periodic 3×3)", seconds, est)
    zero = structops.Conv((n, n), (9, 9))
    for name, theta in (
        ("spectral_norm, rank-2 blur 9×9 zero", (0.5 * (g + gaussian_stencil(9, 1.0))).ravel()),
        ("spectral_norm, random 9×9 zero", np.random.default_rng(0).standard_normal(81)),
    ):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", EstimateWarning)
            seconds, est = best_of(repeat, lambda t=theta: spectral_norm(zero, t, full_output=True))
        row(name, seconds, est, f"{est.iterations} Lanczos steps, converged={est.converged}")


def other_cases(repeat: int) -> None:
    periodic = structops.Conv((64, 64), (3, 3), bc="periodic", in_channels=8, out_channels=16)
    theta = periodic.random_theta(0)
    seconds, sv = best_of(repeat, lambda: svdvals(periodic, theta))
    print(f"\nsvdvals, periodic 64×64 3×3 8→16 channels ({sv.size} values, {route(periodic, theta, 'svdvals').name}):")
    print(f"  {seconds * 1e3:.1f} ms, σ_max = {sv[0]:.6f}, σ_min = {sv[-1]:.3e}")
    for name, kernel in (
        ("periodic 64×64 3×3 16→16", structops.Conv((64, 64), (3, 3), bc="periodic", in_channels=16, out_channels=16)),
        ("zero 28×28 3×3 1→8", structops.Conv((28, 28), (3, 3), out_channels=8)),
    ):
        theta = kernel.random_theta(1)
        norm = certified_norm_bound(kernel, theta)
        seconds, proj = best_of(repeat, lambda k=kernel, t=theta, b=0.5 * norm: project_spectral_norm(k, t, b))
        plain = np.linalg.norm(theta * 0.5 - theta)
        print(
            f"project_spectral_norm to half the norm, {name}: {seconds * 1e3:.1f} ms, certified norm after "
            f"{certified_norm_bound(kernel, proj):.6f} <= {0.5 * norm:.6f}, distance / plain rescaling's = "
            f"{np.linalg.norm(proj - theta) / plain:.3f}"
        )


def main(argv=None) -> None:
    parser = _common.parser(__doc__)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    args = _common.setup(parser, argv)
    spectra_cases(args.size, args.repeat)
    other_cases(args.repeat)


if __name__ == "__main__":
    main()
