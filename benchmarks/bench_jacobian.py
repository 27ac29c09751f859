"""Case B's stencil gradient, direct sums against FFTs, fresh and with the Jacobian built.

Interleaved in one process, in a shuffled order per repeat (the VM's FFT throughput drifts by 2x within an hour, so only
side-by-side numbers compare): ``Jᵀ w`` for ``Conv((128, 128), (15, 15))``, n = 64, with

* ``direct`` / ``fft``: ``method=`` forced, the Jacobian built inside the timing (fresh) or once
  outside it (built);
* ``auto``: what ``method="auto"`` runs (direct operator, FFT Jacobian: the first product of
  a Jacobian by direct sums, the later ones on the cached spectrum).

Run: ``python benchmarks/bench_jacobian.py [--dtype float32] [--repeat 21] [--threads 2]``.
"""

from __future__ import annotations

import time

import _common
import numpy as np

import structops


def main(argv=None) -> dict:
    parser = _common.parser(__doc__, threads=2)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--repeat", type=int, default=21)
    parser.add_argument("--n", type=int, default=64, help="examples (default 64)")
    args = _common.setup(parser, argv)
    dtype = np.dtype(args.dtype)
    rng = np.random.default_rng(0)
    kernels = {m: structops.Conv((128, 128), (15, 15), method=m) for m in ("direct", "fft", "auto")}
    k = kernels["auto"]
    theta = rng.standard_normal(k.nparams).astype(dtype)
    X = rng.standard_normal((args.n, k.shape[1])).astype(dtype)
    w = rng.standard_normal(args.n * k.shape[0]).astype(dtype)
    built = {m: kk.jac(theta, X) for m, kk in kernels.items()}
    fns = {}
    for m, kk in kernels.items():
        fns[f"{m} fresh"] = lambda kk=kk: kk.jac(theta, X).rmatvec(w)
        fns[f"{m} built"] = lambda m=m: built[m].rmatvec(w)
    ref = fns["direct fresh"]()
    for f in fns.values():  # warm up (and transform the built Jacobians' data) and check
        f()
        np.testing.assert_allclose(f(), ref, rtol=1e-3 if dtype == np.float32 else 1e-9, atol=0)
    times = {name: [] for name in fns}
    order = list(fns)
    for _ in range(args.repeat):
        rng.shuffle(order)  # no row always follows the same (cache-cold, allocating) neighbour
        for name in order:
            t0 = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
    med = {name: float(np.median(t)) * 1e3 for name, t in times.items()}
    print(
        f"Conv((128, 128), (15, 15)), n={args.n}, {dtype.name}, {args.threads} threads, "
        f"median of {args.repeat} (ms); auto: method={k.method!r}, jac_method={k.jac_method!r}"
    )
    print("| method | Jᵀ fresh | Jᵀ (J built) |\n|---|---|---|")
    for m in kernels:
        print(f"| {m} | {med[f'{m} fresh']:.2f} | {med[f'{m} built']:.2f} |")
    return med


if __name__ == "__main__":
    main()
