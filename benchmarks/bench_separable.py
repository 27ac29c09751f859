"""Benchmark ``structops.SeparableConv`` (one 1-D pass per axis) against ``Conv`` with the full stencil.

Case B of ``bench_conv.py``: n=64 images 128x128, 1 -> 1 channel, 15x15 stencil, ``bc="zero"``,
here with a rank-1 separable stencil ``w = u v^T`` (30 parameters instead of 225). Compared,
on the same θ and the same batch:

* ``SeparableConv`` on its separable path (a 15x1 and a 1x15 convolution: 30 multiply-adds
  per pixel);
* ``Conv`` with the full 15x15 stencil ``w`` (225 multiply-adds per pixel), ``method="direct"``
  and ``method="fft"``.

Operations: forward ``apply(θ, X)``, adjoint ``apply(θ, Y, transpose=True)`` and ``J v`` on a
Jacobian built once (``jac(θ, X).matvec(v)``; for ``Conv`` with a full-stencil direction, the
product-rule direction ``Dw(θ) v`` of the separable one). Every result
is checked against the full-stencil ``Conv`` before timing. The methods are interleaved within
each repeat (so all see the same machine load) and the table gives medians over the repeats.

Usage::

    python benchmarks/bench_separable.py                       # float32, markdown table
    python benchmarks/bench_separable.py --dtype float64 --repeats 41 --threads 2
"""

from __future__ import annotations

import os
import sys

# BLAS capped at one thread before numpy is imported (it never competes with numba's threads,
# which --threads sets through structops.set_num_threads)
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", os.environ["OMP_NUM_THREADS"])

import platform
import statistics
import time

import _common
import numpy as np

import structops
from structops._backend import have_numba


def main(argv: list[str] | None = None) -> int:
    parser = _common.parser(__doc__, threads=1, what="structops (numba)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--n", type=int, default=64, help="batch size (default 64)")
    parser.add_argument("--grid", type=int, default=128, help="image side (default 128)")
    parser.add_argument("--stencil", type=int, default=15, help="stencil side (default 15)")
    parser.add_argument("--rank", type=int, default=1, help="separable rank (default 1)")
    parser.add_argument("--repeats", type=int, default=21, help="timed repeats per method (default 21)")
    args = _common.setup(parser, argv)
    dtype = np.dtype(args.dtype)
    rng = np.random.default_rng(0)
    grid, s = (args.grid, args.grid), (args.stencil, args.stencil)
    sep = structops.SeparableConv(grid, s, rank=args.rank)
    theta = sep.random_theta(rng, dtype)
    w = sep.weights(theta).ravel()
    full = {m: structops.Conv(grid, s, method=m) for m in ("direct", "fft")}
    X = rng.standard_normal((args.n, *sep.in_shape)).astype(dtype)
    Y = rng.standard_normal((args.n, *sep.out_shape)).astype(dtype)

    v = sep.random_theta(rng, dtype)
    Jsep = sep.jac(theta, X)
    dw = sep._push(theta, v)  # the full-stencil direction Dw(θ) v
    Jfull = {m: k.jac(w, X) for m, k in full.items()}
    runs = {
        ("forward", f"SeparableConv ({sep.path})"): lambda: sep.apply(theta, X),
        ("adjoint", f"SeparableConv ({sep.path})"): lambda: sep.apply(theta, Y, transpose=True),
        ("J v", f"SeparableConv ({sep.path})"): lambda: Jsep.matvec(v),
    }
    for m, k in full.items():
        runs[("forward", f"Conv full {m}")] = lambda k=k: k.apply(w, X)
        runs[("adjoint", f"Conv full {m}")] = lambda k=k: k.apply(w, Y, transpose=True)
        runs[("J v", f"Conv full {m}")] = lambda m=m: Jfull[m].matvec(dw)

    # correctness first: every method against the full-stencil direct Conv (float64 reference)
    ref = {
        "forward": full["direct"].apply(w.astype(np.float64), X.astype(np.float64)),
        "adjoint": full["direct"].apply(w.astype(np.float64), Y.astype(np.float64), transpose=True),
        "J v": full["direct"].apply(dw.astype(np.float64), X.astype(np.float64)).ravel(),
    }
    tol = 1e-4 if dtype == np.float32 else 1e-10
    for (op, name), fn in runs.items():
        out = fn()
        err = float(np.linalg.norm(out - ref[op]) / np.linalg.norm(ref[op]))
        if err > tol:
            print(f"{name} {op}: relative error {err:.2e} > {tol:.0e}", file=sys.stderr)
            return 1
        fn()  # warm (numba compilation, FFT plans)

    times: dict[tuple[str, str], list[float]] = {key: [] for key in runs}
    for _ in range(args.repeats):  # interleaved: every method once per repeat
        for key, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - t0)

    print(
        f"# SeparableConv vs Conv, case B: n={args.n}, grid {grid}, stencil {s}, rank {args.rank}, "
        f"{dtype.name}, bc='zero'"
    )
    print(
        f"# structops.set_num_threads({args.threads}); OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, "
        f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}; numba: {have_numba()}; "
        f"medians of {args.repeats} interleaved repeats; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores"
    )
    print(f"# parameters: SeparableConv {sep.nparams}, Conv {full['direct'].nparams}")
    print()
    print("| op | method | median ms | min ms | full direct / this |")
    print("|---|---|---:|---:|---:|")
    for op in ("forward", "adjoint", "J v"):
        base = statistics.median(times[(op, "Conv full direct")])
        for (o, name), ts in times.items():
            if o != op:
                continue
            med = statistics.median(ts)
            print(f"| {op} | {name} | {1e3 * med:.2f} | {1e3 * min(ts):.2f} | {base / med:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
