"""Benchmark ``structops.Conv`` against PyTorch (CPU) and pylops in one run.

Cases (issue 3):

* ``A``: n=512 images 28x28, 8 -> 8 channels, 3x3 stencil, ``bc`` zero and periodic;
* ``B``: n=64 images 128x128, 1 -> 1 channel, 15x15 stencil, zero;
* ``C``: n=1024 signals of length 4096, stencil 7, zero and periodic;
* ``A-dilated`` and ``A-grouped`` (issue 22): case A (zero) with ``dilation=2`` (torch
  ``padding=2``), and with ``groups=4`` (two input channels per output channel).

Operations: forward ``k.apply(θ, X)``, adjoint ``k.apply(θ, Y, transpose=True)``,
``Jᵀ`` ``k.jac(θ, X).rmatvec(w)`` (the gradient with respect to the stencil, summed over
examples, building the Jacobian each time) and ``Jᵀ (J built)`` ``J.rmatvec(w)`` on a
Jacobian built once (it caches what depends only on ``X``, e.g. the FFT of the examples;
the peers' ``Jᵀ`` times are repeated on that row), in float64 and float32.

Peers, same thread count:

* PyTorch standard calls: ``conv{1,2}d`` (forward), ``conv_transpose`` (zero) or autograd
  (periodic) for the adjoint, autograd weight gradient for ``Jᵀ``;
* PyTorch's fastest formulation we know of: the adjoint as a forward convolution with the
  flipped, channel-transposed kernel; single-channel cases with the batch folded into the
  channels (``groups=n``); ``Jᵀ`` as a convolution with the batch as the contracted axis.
  "torch best" is the faster of the standard and the best formulation;
* pylops: a ``Block`` of ``Convolve2D``/``Convolve1D`` over channel pairs applied to each
  example (zero boundary only: its time is also used for the periodic rows); ``Jᵀ`` is the
  adjoint of ``Convolve`` with the example as the filter. pylops is timed on a subset of the
  examples and scaled to ``n`` (marked ``*``).

Every peer's result is checked against structops before timing. Floors: bandwidth (bytes of
input and output copied once at the measured ``memcpy`` rate) and FLOPs
(``2·prod(stencil)·cin·cout·prod(grid)·n`` at the measured GEMM rate); ``floor`` is the larger.

Usage::

    python benchmarks/bench_conv.py                 # everything, markdown table
    python benchmarks/bench_conv.py --quick --cases A --dtype float32 --threads 2
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time

import _common
import numpy as np

import structops
from structops.kernels.conv import _core as core

CASES = {
    "A-zero": dict(n=512, grid=(28, 28), cin=8, cout=8, stencil=(3, 3), bc="zero"),
    "A-periodic": dict(n=512, grid=(28, 28), cin=8, cout=8, stencil=(3, 3), bc="periodic"),
    "B-zero": dict(n=64, grid=(128, 128), cin=1, cout=1, stencil=(15, 15), bc="zero"),
    "C-zero": dict(n=1024, grid=(4096,), cin=1, cout=1, stencil=(7,), bc="zero"),
    "C-periodic": dict(n=1024, grid=(4096,), cin=1, cout=1, stencil=(7,), bc="periodic"),
    "A-dilated": dict(n=512, grid=(28, 28), cin=8, cout=8, stencil=(3, 3), bc="zero", dilation=2),
    "A-grouped": dict(n=512, grid=(28, 28), cin=8, cout=8, stencil=(3, 3), bc="zero", groups=4),
}
OPS = ("forward", "adjoint", "Jᵀ", "Jᵀ (J built)")


# ------------------------------------------------------------------------ timing
#: The clock of :func:`median_time`: wall time, or the process's CPU time with ``--cpu-time``
#: (steadier on a shared machine; compare at ``--threads 1``, where no pool spins).
CLOCK = time.perf_counter


def median_time(fn, repeat: int, warmup: int = 1, budget: float | None = None) -> float:
    """Median time (:data:`CLOCK`) of ``fn()`` in seconds over ``repeat`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    for _ in range(repeat):
        t0 = CLOCK()
        fn()
        times.append(CLOCK() - t0)
        if budget is not None and time.perf_counter() - start > budget and len(times) >= 3:
            break
    return statistics.median(times)


def memcpy_rate(threads: int) -> float:
    """Bytes per second copied by ``np.copyto`` on 256 MiB arrays (pages already touched)."""
    src = np.ones(2**25)
    dst = np.empty_like(src)
    t = median_time(lambda: np.copyto(dst, src), 5)
    return src.nbytes / t


def gemm_rate(dtype) -> float:
    """FLOP/s of a 2048x2048 matrix product in ``dtype``."""
    a = np.random.default_rng(0).standard_normal((2048, 2048)).astype(dtype)
    b = a.T.copy()
    t = median_time(lambda: a @ b, 5)
    return 2 * 2048**3 / t


# ------------------------------------------------------------------------- torch
def torch_impls(cfg, theta, x, y, w, dtype):
    """Closures (standard, best) per operation computing the same results as structops."""
    import torch
    import torch.nn.functional as F

    nd = len(cfg["grid"])
    conv = {1: F.conv1d, 2: F.conv2d}[nd]
    conv_t = {1: F.conv_transpose1d, 2: F.conv_transpose2d}[nd]
    n, cin, cout, s = cfg["n"], cfg["cin"], cfg["cout"], cfg["stencil"]
    dil, G = cfg.get("dilation", 1), cfg.get("groups", 1)
    p = tuple(dil * (si // 2) for si in s)  # odd stencils only
    circ = tuple(v for pi in reversed(p) for v in (pi, pi))
    periodic = cfg["bc"] == "periodic"
    spatial = tuple(range(2, 2 + nd))
    wt = torch.from_numpy(np.ascontiguousarray(np.flip(theta.reshape(cout, cin // G, *s), spatial)))
    # the adjoint as a forward convolution: channels transposed within each group, flipped
    wadj = wt.view(G, cout // G, cin // G, *s).transpose(1, 2).reshape(cin, cout // G, *s).flip(spatial).contiguous()
    X, Y, W = (torch.from_numpy(a) for a in (x, y, w))

    def fwd(inp, weight, groups=G):
        if periodic:
            return conv(F.pad(inp, circ, mode="circular"), weight, groups=groups, dilation=dil)
        return conv(inp, weight, padding=p, groups=groups, dilation=dil)

    impls = {}
    with torch.no_grad():
        # forward
        std = lambda: fwd(X, wt)  # noqa: E731
        best = [std]
        if cin == cout == 1:
            wg = wt.expand(n, 1, *s).contiguous()
            best.append(lambda: fwd(X.view(1, n, *cfg["grid"]), wg, groups=n).view(n, 1, *cfg["grid"]))
        impls["forward"] = (std, best)
        if G > 1:  # the same channel mix as one dense convolution with zero blocks (faster in some builds)
            wd = torch.from_numpy(np.ascontiguousarray(_dense_blocks(wt.numpy(), G)))
            best.append(lambda: fwd(X, wd, groups=1))
        # adjoint
        if periodic:
            Xg = X.clone().requires_grad_(True)
            with torch.enable_grad():
                out = fwd(Xg, wt)

            def std():
                return torch.autograd.grad(out, Xg, Y, retain_graph=True)[0]
        else:

            def std():
                return conv_t(Y, wt, padding=p, dilation=dil, groups=G)

        best = [std, lambda: fwd(Y, wadj)]
        if cin == cout == 1:
            wag = wadj.expand(n, 1, *s).contiguous()
            best.append(lambda: fwd(Y.view(1, n, *cfg["grid"]), wag, groups=n).view(n, 1, *cfg["grid"]))
        impls["adjoint"] = (std, best)
        # J^T: gradient with respect to the torch weight, flipped back to theta
        wtg = wt.clone().requires_grad_(True)
        with torch.enable_grad():
            outw = fwd(X, wtg)

        def std():
            return torch.autograd.grad(outw, wtg, W, retain_graph=True)[0]

        def batch_contracted():
            # the batch as the contracted axis; stride = dilation samples the dilated taps
            xp = F.pad(X, circ, mode="circular") if periodic else F.pad(X, circ)
            full = conv(xp.transpose(0, 1), W.transpose(0, 1), stride=dil).transpose(0, 1)
            if G == 1:
                return full
            og, cg = cout // G, cin // G
            return torch.cat([full[g * og : (g + 1) * og, g * cg : (g + 1) * cg] for g in range(G)])

        best = [std, batch_contracted]
        if G > 1:

            def grouped_batch_contracted():
                # (cg, G*n, H) against (G*og, n, H) with groups=G: only the diagonal blocks
                xp = F.pad(X, circ, mode="circular") if periodic else F.pad(X, circ)
                og, cg = cout // G, cin // G
                grid5 = tuple(range(3, 3 + nd))
                xin = xp.view(n, G, cg, *xp.shape[2:]).permute(2, 1, 0, *grid5).reshape(cg, G * n, *xp.shape[2:])
                wk = W.view(n, G, og, *W.shape[2:]).permute(1, 2, 0, *grid5).reshape(G * og, n, *W.shape[2:])
                return conv(xin, wk, stride=dil, groups=G).transpose(0, 1)

            best.append(grouped_batch_contracted)
        if cin == cout == 1:

            def grouped():
                xp = F.pad(X, circ, mode="circular") if periodic else F.pad(X, circ)
                return conv(xp.view(1, n, *xp.shape[2:]), W.view(n, 1, *cfg["grid"]), groups=n).sum(1, keepdim=True)

            best.append(grouped)
        impls["Jᵀ"] = (std, best)
    return impls


def _dense_blocks(w: np.ndarray, G: int) -> np.ndarray:
    """A grouped weight ``(cout, cin/G, *s)`` as the dense ``(cout, cin, *s)`` with zero off-group blocks."""
    cout, cg = w.shape[:2]
    og = cout // G
    full = np.zeros((cout, cg * G, *w.shape[2:]), dtype=w.dtype)
    for g in range(G):
        full[g * og : (g + 1) * og, g * cg : (g + 1) * cg] = w[g * og : (g + 1) * og]
    return full


def torch_result(op, r, cfg):
    """Convert a torch result to structops' layout (flip weight gradients back to θ)."""
    a = r.detach().numpy()
    if op == "Jᵀ":
        return np.flip(a, tuple(range(2, a.ndim))).reshape(-1)
    return a.reshape(cfg["n"], -1)


# ------------------------------------------------------------------------ pylops
def pylops_impls(cfg, theta, x, y, w, dtype, subset):
    """Closures over the first ``subset`` examples (zero boundary: pylops has no other)."""
    import pylops
    from pylops.signalprocessing import Convolve1D, Convolve2D

    nd = len(cfg["grid"])
    grid, s, cin, cout = cfg["grid"], cfg["stencil"], cfg["cin"], cfg["cout"]
    th = theta.reshape(cout, cin, *s)
    c = tuple(si // 2 for si in s)

    def convolve(h, offset):
        if nd == 1:
            return Convolve1D(grid[0], h=h, offset=offset[0], dtype=dtype)
        return Convolve2D(grid, h=h, offset=offset, dtype=dtype)

    block = pylops.Block([[convolve(th[o, ci], c) for ci in range(cin)] for o in range(cout)], dtype=dtype)
    xs, ys = x.reshape(x.shape[0], -1)[:subset], y.reshape(y.shape[0], -1)[:subset]
    xg, wg = x.reshape(x.shape[0], cin, -1)[:subset], w.reshape(w.shape[0], cout, -1)[:subset]
    window = tuple(slice(0, si) for si in s)

    def fwd():
        return np.stack([block.matvec(xi) for xi in xs])

    def adj():
        return np.stack([block.rmatvec(yi) for yi in ys])

    def jt():
        # J(θ) for one example and channel pair is the convolution with the example as the filter
        g = np.zeros((cout, cin, *s), dtype=dtype)
        for xi, wi in zip(xg, wg):
            for ci in range(cin):
                op = convolve(xi[ci].reshape(grid), c)
                for o in range(cout):
                    g[o, ci] += op.rmatvec(wi[o]).reshape(grid)[window]
        return g.reshape(-1)

    return {"forward": fwd, "adjoint": adj, "Jᵀ": jt}


# ------------------------------------------------------------------------- main
def run_case(name, cfg, dtype, args, rates, rows):
    rng = np.random.default_rng(0)
    k = structops.Conv(
        cfg["grid"], cfg["stencil"], bc=cfg["bc"], in_channels=cfg["cin"], out_channels=cfg["cout"],
        dilation=cfg.get("dilation", 1), groups=cfg.get("groups", 1),
    )  # fmt: skip
    n = cfg["n"]
    theta = rng.standard_normal(k.nparams).astype(dtype)
    x = rng.standard_normal((n, *k.in_shape)).astype(dtype)
    y = rng.standard_normal((n, *k.out_shape)).astype(dtype)
    wflat = y.reshape(-1)
    jac = k.jac(theta, x)
    ours = {
        "forward": lambda: k.apply(theta, x),
        "adjoint": lambda: k.apply(theta, y, transpose=True),
        "Jᵀ": lambda: k.jac(theta, x).rmatvec(wflat),
        # the Jacobian built once (what depends only on X is cached in it), as in a training loop
        "Jᵀ (J built)": lambda: jac.rmatvec(wflat),
    }
    ref = {op: fn().reshape(-1) for op, fn in ours.items()}
    rtol = 2e-3 if dtype == np.float32 else 1e-8

    def check(op, got, who):
        got = np.asarray(got).reshape(-1)
        err = np.linalg.norm(got - ref[op]) / max(np.linalg.norm(ref[op]), 1e-30)
        if err > rtol:
            raise AssertionError(f"{name} {np.dtype(dtype)} {op}: {who} differs from structops (rel. error {err:.2e})")

    timp = None
    if not args.no_torch:
        timp = torch_impls(cfg, theta, x, y, y, dtype)
    pimp, subset = None, None
    if not args.no_pylops and "dilation" not in cfg and "groups" not in cfg:  # pylops: plain stencils only
        subset = min(n, args.pylops_subset)
        pimp = pylops_impls(cfg, theta, x, y, y, dtype, subset)

    itemsize = np.dtype(dtype).itemsize
    nin, nout = x.size * itemsize, y.size * itemsize
    flops = 2 * np.prod(cfg["stencil"]) * cfg["cin"] // cfg.get("groups", 1) * cfg["cout"] * np.prod(cfg["grid"]) * n
    peers = {}
    for op in OPS:
        t_ours = median_time(ours[op], args.repeat, warmup=2)
        t_std = t_best = float("nan")
        if op == "Jᵀ (J built)":  # the peers have nothing to cache: their Jᵀ times
            t_std, t_best, t_pyl = peers["Jᵀ"]
        elif timp is not None:
            std, best = timp[op]
            check(op, torch_result(op, std(), cfg), "torch standard")
            t_std = median_time(std, args.repeat, warmup=2)
            tb = []
            for fn in best[1:]:
                check(op, torch_result(op, fn(), cfg), "torch best")
                tb.append(median_time(fn, args.repeat, warmup=2))
            t_best = min([t_std, *tb])
        if op != "Jᵀ (J built)":
            t_pyl = float("nan")
        if pimp is not None and op != "Jᵀ (J built)":
            if subset == n:
                check(op, pimp[op](), "pylops")
            t_pyl = median_time(pimp[op], max(1, args.repeat // 2), warmup=1, budget=10.0) * n / subset
        peers[op] = (t_std, t_best, t_pyl)
        bytes_ = nin + nout
        floor_bw = bytes_ / rates["memcpy"]
        floor_fl = flops / rates[np.dtype(dtype).name]
        rows.append(
            dict(
                case=name,
                dtype=np.dtype(dtype).name,
                op=op,
                method=_method_used(k, op),
                ours=t_ours,
                torch_std=t_std,
                torch_best=t_best,
                pylops=t_pyl,
                scaled=subset is not None and subset < n,
                floor=max(floor_bw, floor_fl),
                floor_kind="bw" if floor_bw >= floor_fl else "flop",
            )
        )
        print_row(rows[-1], sys.stderr)


def _method_used(k, op: str) -> str:
    """The method a row runs: a Jacobian's first product stays direct unless the operator is FFT."""
    if op == "Jᵀ (J built)":
        return k.jac_method
    if op == "Jᵀ":
        return "fft" if k.jac_method == "fft" and k.method == "fft" else "direct"
    return k.method


def fmt_ms(t: float) -> str:
    if t != t:  # nan
        return "–"
    return f"{t * 1e3:.3g}" if t < 1 else f"{t * 1e3:.0f}"


def fmt_ratio(a: float, b: float) -> str:
    if a != a or b != b:
        return "–"
    r = a / b
    return f"{r:.2f}" if r >= 0.01 else f"{r:.1e}"


HEADER = (
    "| case | dtype | op | method | structops ms | torch std ms | torch best ms | pylops ms "
    "| ÷ torch best | ÷ pylops | floor ms | ÷ floor |"
)


def print_row(r, file=sys.stdout):
    pyl = fmt_ms(r["pylops"]) + ("*" if r["scaled"] and r["pylops"] == r["pylops"] else "")
    print(
        f"| {r['case']} | {r['dtype']} | {r['op']} | {r['method']} | {fmt_ms(r['ours'])} | {fmt_ms(r['torch_std'])} "
        f"| {fmt_ms(r['torch_best'])} | {pyl} | {fmt_ratio(r['ours'], r['torch_best'])} "
        f"| {fmt_ratio(r['ours'], r['pylops'])} | {fmt_ms(r['floor'])} ({r['floor_kind']}) "
        f"| {fmt_ratio(r['ours'], r['floor'])} |",
        file=file,
        flush=True,
    )


def main(argv=None):
    parser = _common.parser(__doc__, threads=os.cpu_count(), what="every library")
    parser.add_argument("--quick", action="store_true", help="fewer repeats (3) and a smaller pylops subset")
    parser.add_argument("--cases", default="A,B,C", help="comma-separated: A, B, C or full names like A-zero")
    parser.add_argument("--dtype", default="both", choices=("both", "float64", "float32"))
    parser.add_argument("--repeat", type=int, default=None, help="timed calls per measurement (default 7)")
    parser.add_argument("--pylops-subset", type=int, default=None, help="examples timed through pylops")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--no-pylops", action="store_true")
    parser.add_argument("--cpu-time", action="store_true", help="time in process CPU time, not wall time")
    args = parser.parse_args(argv)
    args.repeat = args.repeat or (3 if args.quick else 7)
    args.pylops_subset = args.pylops_subset or (4 if args.quick else 16)
    if args.cpu_time:
        global CLOCK
        CLOCK = time.process_time
    wanted = [c.strip() for c in args.cases.split(",") if c.strip()]
    names = [nm for nm in CASES if any(nm == w or nm.split("-")[0] == w for w in wanted)]
    if not names:
        parser.error(f"--cases {args.cases!r} matches none of {list(CASES)}")
    dtypes = [np.float64, np.float32] if args.dtype == "both" else [np.dtype(args.dtype).type]

    _common.set_threads(args.threads, torch=not args.no_torch)
    print(_common.thread_line(args.threads))
    if not args.no_torch:
        import torch
    rates = {"memcpy": memcpy_rate(args.threads)}
    for dt in dtypes:
        rates[np.dtype(dt).name] = gemm_rate(dt)

    import numpy
    import scipy

    versions = f"numpy {numpy.__version__}, scipy {scipy.__version__}"
    if not args.no_torch:
        versions += f", torch {torch.__version__}"
    if not args.no_pylops:
        import pylops

        versions += f", pylops {pylops.__version__}"
    accel = structops.accelerator()
    if hasattr(core._nb, "vector_registers") and accel.startswith("numba"):
        import numba

        regs = core._nb.vector_registers()
        accel += f", target {numba.config.CPU_NAME or 'host'}, {regs} vector registers"
    print(
        f"structops {getattr(structops, '__version__', '?')} ({accel}); {versions}; "
        f"{platform.processor() or platform.machine()}, "
        f"{args.threads} threads; memcpy {rates['memcpy'] / 1e9:.1f} GB/s; GEMM "
        + ", ".join(f"{dt} {rates[dt] / 1e9:.0f} GFLOP/s" for dt in rates if dt != "memcpy")
        + f"; median of {args.repeat}{' (CPU time)' if args.cpu_time else ''}."
    )
    rows = []
    for name in names:
        for dt in dtypes:
            run_case(name, CASES[name], dt, args, rates, rows)
    print()
    print(HEADER)
    print("|" + "---|" * (HEADER.count("|") - 1))
    for r in rows:
        print_row(r)
    if any(r["scaled"] for r in rows):
        print(
            f"\n`*` pylops timed on {args.pylops_subset} examples and scaled to n; "
            "periodic rows use pylops' zero boundary."
        )
    return rows


if __name__ == "__main__":
    main()
