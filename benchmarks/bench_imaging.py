"""Imaging at scale (issue 24): reuse, the exact Kronecker route, preconditioners for every boundary, hybrid α.

Five measurements, each against its peer in the same run (the shipped phantom stands in for the
camera when scikit-image is not installed; noise σ = 0.01):

1. **reuse** -- three ``size``² zero-boundary 9×9 Gaussian (σ = 2) deblurrings: three fresh
   ``tikhonov`` calls against one :class:`structops.solvers.Deblurrer` and three ``solve``;
2. **kronecker** -- the exact Kronecker route of ``tikhonov`` at ``kron-size``² against a plain
   SVD solution written with numpy (the 1-D blur matrix's SVD, then ``V (F ∘ (UᵀBU)) Vᵀ``): wall
   time and peak traced memory (``tracemalloc``, which sees numpy's buffers);
3. **circulant** -- ``cg`` on the normal equations of a zero-boundary 9×9 Gaussian at ``size``²
   (α = 1e-4), without and with T. Chan's circulant built from the stencil's FFT alone;
4. **mirror** -- symmetric boundary, 256²: a 15×15 anisotropic Gaussian (σ 3 and 1) rotated by 30°
   with ``L = I``, α = 1e-3, and the 15×15 diagonal line with the Laplacian ``L``, α = 2e-3:
   lsqr/cgls iterations to ``rtol = 1e-6`` with no preconditioner, ``"dct"`` and ``"auto"``;
5. **hybrid** -- ``choose_alpha(method="discrepancy")`` on the 256² symmetric-boundary line blur:
   seconds and the discrepancy of the chosen α over the target;
6. **pcg** (only when asked: ``--only pcg``) -- plain against preconditioned ``cg`` side by side at
   ``--pcg-sizes`` (default 256, 512, 1024): ``tikhonov(solver="cg")`` without a preconditioner,
   with ``"auto"`` (Strang's, ``edge_cg``) and ``"chan"``, and the generic preconditioned loop
   ``normal_cg`` with float64 and float32 FFTs; iterations, medians of wall and CPU time over ``--repeat``
   interleaved rounds, and the ratios to plain CG;
7. **kron32** (``--only kron32``, not in the default set) -- the exact Kronecker route of ``tikhonov`` at
   ``kron-size``² in float32 (float32 factors, SVDs and GEMMs) against float64: median CPU time
   (``time.process_time``, so that load on a shared machine counts less) and peak traced memory;
8. **wgcv** (``--only wgcv``, not in the default set) -- the weighted GCV of Chung, Nagy and O'Leary
   (2008) on the Golub--Kahan projected problem (adaptive ω, HyBR's stopping rules) against the
   exact GCV choice of the full problem and against the iterative grid route, on zero and
   mirrored 9×9 Gaussian blurs (σ = 2) at ``--wgcv-sizes``, noise 0.01 and 0.001, and the shipped
   hybrid GCV (``choose_alpha(method="gcv")`` off the exact routes: 1 + 4 Golub--Kahan runs): α,
   the relative error of the image against the truth and against the exact GCV image, CPU time.

Run: ``python benchmarks/bench_imaging.py [--size 512] [--kron-size 2048] [--repeat 3]``;
``python benchmarks/bench_imaging.py --only pcg --threads 1 --repeat 5`` for the pcg table.
"""

from __future__ import annotations

import time
import tracemalloc

import _common
import numpy as np
from scipy.optimize import minimize_scalar

import structops
from structops.data import anisotropic_gaussian_stencil, gaussian_stencil, phantom
from structops.solvers import Deblurrer, choose_alpha, tikhonov
from structops.solvers._choice import default_grid
from structops.solvers._hybrid import golub_kahan_steps
from structops.solvers._krylov import build_model, normal_cg, normal_operator

LAPLACE = np.array([0.0, -1.0, 0.0, -1.0, 4.0, -1.0, 0.0, -1.0, 0.0])


def median_time(fn, repeat: int, clock=time.perf_counter) -> float:
    """Median over ``repeat`` calls of ``fn`` on ``clock`` (wall time; ``time.process_time`` for CPU time)."""
    times = []
    for _ in range(repeat):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return float(np.median(times))


def blurred(k, theta, x, seed: int = 0) -> np.ndarray:
    return k.apply(theta, x) + 0.01 * np.random.default_rng(seed).standard_normal(x.shape)


def bench_reuse(n: int, repeat: int) -> None:
    k = structops.Conv((n, n), (9, 9))
    theta = gaussian_stencil(9, 2.0).ravel()
    B = np.stack([blurred(k, theta, phantom(n), s) for s in range(3)])

    def fresh():
        return [tikhonov(k, theta, b, alpha=1e-3) for b in B]

    def reused():
        d = Deblurrer(k, theta)
        return [d.solve(b, alpha=1e-3) for b in B]

    t_fresh, t_reuse = median_time(fresh, repeat), median_time(reused, repeat)
    t_stack = median_time(lambda: tikhonov(k, theta, B, alpha=1e-3), repeat)
    print(
        f"| reuse, 3 × {n}² (Kronecker exact) | three tikhonov calls | {t_fresh:.2f} s | Deblurrer + 3 solves "
        f"{t_reuse:.2f} s (ratio {t_reuse / t_fresh:.2f}); one stack call {t_stack:.2f} s |"
    )


def plain_svd(n: int, b: np.ndarray, alpha: float) -> np.ndarray:
    f = gaussian_stencil(9, 2.0, ndim=1)
    T = np.zeros((n, n))
    for j, w in enumerate(f):
        T += w * np.eye(n, k=j - 4)
    U, s, Vt = np.linalg.svd(T)
    S = np.outer(s, s)
    F = S / (S**2 + alpha)
    return Vt.T @ ((U.T @ b @ U) * F) @ Vt


def traced(fn):
    tracemalloc.start()
    t0 = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return out, seconds, peak / 2**20


def bench_kronecker(n: int) -> None:
    k = structops.Conv((n, n), (9, 9))
    theta = np.outer(gaussian_stencil(9, 2.0, ndim=1), gaussian_stencil(9, 2.0, ndim=1)).ravel()
    b = blurred(k, theta, phantom(n))
    x_plain, t_plain, m_plain = traced(lambda: plain_svd(n, b, 1e-3))
    x_ours, t_ours, m_ours = traced(lambda: tikhonov(k, theta, b, alpha=1e-3))
    err = np.linalg.norm(x_ours - x_plain) / np.linalg.norm(x_plain)
    print(
        f"| Kronecker exact, {n}² | plain SVD solution | {t_plain:.2f} s, {m_plain:.0f} MiB | tikhonov "
        f"{t_ours:.2f} s, {m_ours:.0f} MiB (ratios {t_ours / t_plain:.2f}, {m_ours / m_plain:.2f}; "
        f"relative difference {err:.1e}) |"
    )


def apply_costs(k, theta, n: int) -> None:
    """CPU medians of one product each: ``KᵀK + αI``, the preconditioner as a FourierMultiplier and as applied."""
    d = Deblurrer(k, theta, solver="cg", preconditioner="chan")
    A = normal_operator(d.K, d.reg, 1e-4)
    model = build_model(k, d.theta, d.reg, "chan")
    old, new = model.operator(1e-4, 1.0, np.float64), model.applier(1e-4, 1.0, np.float64)
    x = np.random.default_rng(2).standard_normal(n * n)
    t_a, t_old, t_new = (median_time(lambda op=op: op.matvec(x), 21, time.process_time) for op in (A, old, new))
    print(
        f"| one product, {n}² (CPU medians of 21) | KᵀK + αI (9×9 stencil) {1e3 * t_a:.2f} ms | "
        f"preconditioner as FourierMultiplier {1e3 * t_old:.2f} ms | as applied (real FFTs, half-grid symbol) "
        f"{1e3 * t_new:.2f} ms (ratios to KᵀK + αI: {t_old / t_a:.2f}, {t_new / t_a:.2f}) |"
    )


def bench_circulant(n: int) -> None:
    k = structops.Conv((n, n), (9, 9))
    theta = gaussian_stencil(9, 2.0).ravel() + 1e-3 * np.random.default_rng(1).standard_normal(81)  # not separable
    b = blurred(k, theta, phantom(n))
    rows = {}
    for p in (None, "chan"):
        t0, c0 = time.perf_counter(), time.process_time()
        r = tikhonov(k, theta, b, alpha=1e-4, solver="cg", preconditioner=p, rtol=1e-6, full_output=True)
        rows[p] = (time.perf_counter() - t0, time.process_time() - c0, r.iterations)
    (t0_, c0_, i0), (t1, c1, i1) = rows[None], rows["chan"]
    apply_costs(k, theta, n)
    print(
        f"| cg, zero boundary, {n}² | plain, {i0} it | {t0_:.2f} s (CPU {c0_:.2f} s) | +chan {i1} it, {t1:.2f} s "
        f"(CPU {c1:.2f} s; time ratio {t1 / t0_:.2f}, CPU ratio {c1 / c0_:.2f}, iteration ratio {i1 / i0:.2f}) |"
    )


def pcg_cases(k, theta, b):
    """The timed solves of ``bench_pcg``: label -> a function returning ``(x, iterations)``."""
    d = Deblurrer(k, theta, solver="cg", preconditioner="chan")
    A = normal_operator(d.K, d.reg, 1e-4)
    rhs = d.K.H @ b.ravel()
    chan = build_model(k, d.theta, d.reg, "chan")

    def tik(p):
        r = tikhonov(k, theta, b, alpha=1e-4, solver="cg", preconditioner=p, rtol=1e-6, full_output=True)
        return r.x.ravel(), r.iterations

    def loop(fft_dtype):
        M = chan.applier(1e-4, 1.0, np.float64, fft_dtype=fft_dtype)
        x, iterations, converged = normal_cg(A, rhs, M, 1e-6, 5000)
        assert converged
        return x, iterations

    return {
        "plain: tikhonov(cg, None)": lambda: tik(None),
        "tikhonov(cg, 'auto')": lambda: tik("auto"),
        "tikhonov(cg, 'chan')": lambda: tik("chan"),
        "chan, stencil-pass loop": lambda: loop(None),
        "chan, float32 FFTs": lambda: loop(np.float32),
    }


def bench_pcg(sizes: list[int], repeat: int) -> None:
    """Plain against preconditioned ``cg`` at each size, interleaved rounds.

    Per size: the 9×9 zero-boundary Gaussian (σ = 2, perturbed so it is not separable) of
    ``bench_circulant``, α = 1e-4, rtol = 1e-6. ``tikhonov(solver="cg")`` with no preconditioner, with
    ``"auto"`` (Strang's circulant and ``edge_cg`` where its edge strips pay, 256² and up for 9×9) and
    with ``"chan"`` (``edge_cg`` with a second inverse FFT from 512², else the generic loop): what a
    user calls, setup included; then the generic preconditioned loop ``normal_cg`` with T. Chan's
    preconditioner in float64 and with float32 FFTs (operator built outside the timing). ``repeat``
    rounds, each running every case once in turn; medians of wall and CPU time, ratios to plain CG,
    each solution's difference from plain's.
    """
    print(
        "| size | case | iterations | wall (median) | CPU (median) | wall ratio | CPU ratio | iteration ratio "
        "| ‖x − x_plain‖/‖x_plain‖ |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for n in sizes:
        k = structops.Conv((n, n), (9, 9))
        theta = gaussian_stencil(9, 2.0).ravel() + 1e-3 * np.random.default_rng(1).standard_normal(81)
        cases = pcg_cases(k, theta, blurred(k, theta, phantom(n)))
        runs: dict[str, list] = {label: [] for label in cases}
        for _ in range(repeat):
            for label, fn in cases.items():
                t0, c0 = time.perf_counter(), time.process_time()
                x, iterations = fn()
                runs[label].append((time.perf_counter() - t0, time.process_time() - c0, iterations, x))
        first = next(iter(runs))
        wall0, cpu0 = (float(np.median([r[j] for r in runs[first]])) for j in (0, 1))
        it0, x0 = runs[first][0][2], runs[first][0][3]
        for label, rows in runs.items():
            wall, cpu = (float(np.median([r[j] for r in rows])) for j in (0, 1))
            it, x = rows[0][2], rows[0][3]
            gap = np.linalg.norm(x - x0) / np.linalg.norm(x0)
            print(
                f"| {n}² | {label} | {it} | {wall:.3f} s | {cpu:.3f} s | {wall / wall0:.2f} | {cpu / cpu0:.2f} | "
                f"{it / it0:.2f} | {gap:.1e} |",
                flush=True,
            )


def bench_mirror() -> None:
    n = 256
    x = phantom(n)
    k = structops.Conv((n, n), (15, 15), bc="symmetric")
    lap = structops.Conv((n, n), (3, 3), bc="symmetric").op(LAPLACE)
    cases = [
        ("rotated Gaussian, L = I, α = 1e-3", anisotropic_gaussian_stencil(15, (3, 1), 30), None, 1e-3),
        ("diagonal line, Laplacian L, α = 2e-3", np.eye(15) / 15, lap, 2e-3),
    ]
    for label, w, L, alpha in cases:
        b = blurred(k, w.ravel(), x)
        for solver in ("lsqr", "cgls"):
            its = {}
            for p in (None, "dct", "auto"):
                r = tikhonov(k, w.ravel(), b, alpha=alpha, L=L, solver=solver, preconditioner=p, full_output=True)
                its[p] = (r.iterations, r.method)
            print(
                f"| symmetric bc 256², {label} | {solver} none: {its[None][0]} it | dct: {its['dct'][0]} it "
                f"(ratio {its['dct'][0] / its[None][0]:.2f}) | auto → {its['auto'][1]}: {its['auto'][0]} it |"
            )


def bench_hybrid() -> None:
    n = 256
    k = structops.Conv((n, n), (15, 15), bc="symmetric")
    w = (np.eye(15) / 15).ravel()
    b = blurred(k, w, phantom(n))
    t0 = time.perf_counter()
    c = choose_alpha(k, w, b, method="discrepancy", noise=0.01)
    seconds = time.perf_counter() - t0
    x = tikhonov(k, w, b, alpha=c.alpha)
    ratio = np.linalg.norm(k.apply(w, x) - b) / c.target
    print(
        f"| hybrid discrepancy, line blur 256² symmetric | α = {c.alpha:.3e} in {c.iterations} Golub-Kahan steps | "
        f"{seconds:.2f} s | discrepancy / target = {ratio:.4f} |"
    )


def bench_kron32(n: int, repeat: int) -> None:
    """The exact Kronecker route in float32 (float32 factors and SVDs) against float64: CPU time, peak memory."""
    k = structops.Conv((n, n), (9, 9))
    theta = np.outer(gaussian_stencil(9, 2.0, ndim=1), gaussian_stencil(9, 2.0, ndim=1)).ravel()
    b = blurred(k, theta, phantom(n))
    rows = {}
    for dtype in (np.float64, np.float32):
        t, bb = theta.astype(dtype), b.astype(dtype)
        x = tikhonov(k, t, bb, alpha=1e-3)
        cpu = median_time(lambda t=t, bb=bb: tikhonov(k, t, bb, alpha=1e-3), repeat, time.process_time)
        peak = traced(lambda t=t, bb=bb: tikhonov(k, t, bb, alpha=1e-3))[2]
        rows[dtype] = (x, cpu, peak)
    (x64, c64, m64), (x32, c32, m32) = rows[np.float64], rows[np.float32]
    err = np.linalg.norm(x32 - x64) / np.linalg.norm(x64)
    print(
        f"| Kronecker exact, {n}², float32 vs float64 (CPU medians of {repeat}) | float64 | {c64:.2f} s CPU, "
        f"{m64:.0f} MiB | float32 {c32:.2f} s CPU, {m32:.0f} MiB (ratios {c32 / c64:.2f}, {m32 / m64:.2f}; "
        f"x dtype {x32.dtype}, relative difference {err:.1e}) |"
    )


# ------------------------------------------- weighted GCV on the projected problem (Chung, Nagy & O'Leary 2008)
def projected_wgcv(s, c, off: float, alpha: float, omega: float) -> float:
    """G_ω(α) = k‖(I − B_k B_k^α)β₁e₁‖² / trace(I_{k+1} − ω B_k B_k^α)² from the SVD of B_k."""
    f = alpha / (s**2 + alpha)  # 1 − the projected filter factors
    return s.size * (float(np.sum((f * c) ** 2)) + off) / (s.size + 1 - omega * float(np.sum(1 - f))) ** 2


def adaptive_omega(s, c, off: float) -> float:
    """ω_k making α = s_min² a stationary point of G_ω (their section 3.3): dG_ω/dα = 0 solved for ω."""
    a = float(s[-1]) ** 2
    t = 1.0 / (s**2 + a)
    trace_f, dtrace = float(np.sum(s**2 * t)), float(np.sum(s**2 * t**2))  # Σφ, −dΣφ/dα
    rho = float(np.sum((a * c * t) ** 2)) + off  # ‖r_k(α)‖²
    drho = 2.0 * a * float(np.sum((c * s) ** 2 * t**3))  # dρ/dα
    # d/dα [ρ / (k+1 − ωΣφ)²] = 0  ⇔  drho·(k+1 − ωΣφ) = 2ρ·ω·dtrace
    return (s.size + 1) * drho / (trace_f * drho + 2.0 * rho * dtrace)


def krylov_gcv(s, c, off: float, alpha: float, m: int) -> float:
    """The full problem's GCV with the Krylov residual and trace, m‖r_k‖²/(m − Σφ)²: the stopping function."""
    f = alpha / (s**2 + alpha)
    return m * (float(np.sum((f * c) ** 2)) + off) / (m - float(np.sum(1 - f))) ** 2


def wgcv_alpha(s, c, off: float, omega: float) -> float:
    """The minimiser of G_ω over α in [s_min²·1e-9, 10·s_max²]: a log grid, then a bounded scalar search."""
    t = np.linspace(np.log(float(s[-1]) ** 2) - 20.0, np.log(float(s[0]) ** 2) + 2.0, 200)
    g = [projected_wgcv(s, c, off, float(np.exp(x)), omega) for x in t]
    i = int(np.argmin(g))
    res = minimize_scalar(
        lambda x: projected_wgcv(s, c, off, float(np.exp(x)), omega),
        bounds=(t[max(i - 1, 0)], t[min(i + 1, t.size - 1)]),
        method="bounded",
        options={"xatol": 1e-6},
    )
    return float(np.exp(res.x))


def hybrid_wgcv(K, b: np.ndarray, maxiter: int = 400, flat: float = 1e-6, window: int = 3):
    """HyBR's weighted GCV: ω the running mean of min(1, ω_j); stop on a flat or a window-minimal Krylov GCV.

    Returns ``(alpha, x, steps, why, omega, step)`` at the stopping step.
    """
    kept, omegas, gcv = [], [], []
    low = None  # the step of a candidate minimum of the Krylov GCV
    for step in golub_kahan_steps(K, b, maxiter):
        if step.k < 2:
            continue
        omegas.append(min(1.0, adaptive_omega(step.s, step.c, step.off)))
        omega = float(np.mean(omegas))
        alpha = wgcv_alpha(step.s, step.c, step.off, omega)
        kept.append((alpha, step, omega))
        gcv.append(krylov_gcv(step.s, step.c, step.off, alpha, b.size))
        j = len(gcv) - 1
        if j and abs(gcv[j] - gcv[j - 1]) / gcv[0] < flat:
            return (*_pick(kept[j]), "flat")
        if low is None and j and gcv[j - 1] < gcv[j]:
            low = j - 1
        elif low is not None and j >= low + window:
            if all(gcv[low] < g for g in gcv[low + 1 : low + window + 1]):
                return (*_pick(kept[low]), "minimum")
            low = None
    return (*_pick(kept[-1]), "maxiter")


def _pick(kept):
    alpha, step, omega = kept
    return alpha, step.solution(alpha), step.k, omega, step


def bench_wgcv(sizes: list[int], grid: bool) -> None:
    """Hybrid weighted GCV against the exact GCV choice (and the grid route) on zero and mirrored 9×9 blurs."""
    print(
        "| problem | exact GCV: α, error | hybrid WGCV: α (ratio), steps, stop, ω, error (ratio), vs GCV image, "
        "CPU | α at that step for ω = 1, 0.9, 0.8, 0.5 (ratios) | hybrid GCV (shipped): α (ratio), steps of the "
        "5 runs, error (ratio), vs GCV image, CPU | grid route: α, error (ratio), vs GCV image, CPU |"
    )
    print("|---|---|---|---|---|---|")
    for n in sizes:
        for bc in ("zero", "symmetric"):
            for noise in (0.01, 0.001):
                k = structops.Conv((n, n), (9, 9), bc=bc)
                theta, x = gaussian_stencil(9, 2.0).ravel(), phantom(n)
                b = k.apply(theta, x) + noise * np.random.default_rng(0).standard_normal((n, n))
                exact = choose_alpha(k, theta, b, method="gcv")
                x_gcv = tikhonov(k, theta, b, alpha=exact.alpha)
                e_gcv = _rel(x_gcv, x)
                c0 = time.process_time()
                alpha, xh, steps, omega, step, why = hybrid_wgcv(k.op(theta), b.ravel())
                cpu = time.process_time() - c0
                sens = ", ".join(
                    f"{wgcv_alpha(step.s, step.c, step.off, w) / exact.alpha:.2g}" for w in (1, 0.9, 0.8, 0.5)
                )
                row = (
                    f"| {bc} {n}², σ = {noise:g} | {exact.alpha:.2e}, {e_gcv:.4f} | {alpha:.2e} "
                    f"({alpha / exact.alpha:.1f}×), {steps}, {why}, {omega:.2f}, {_rel(xh, x):.4f} "
                    f"({_rel(xh, x) / e_gcv:.3f}), {_rel(xh, x_gcv):.3f}, {cpu:.2f} s | {sens} |"
                )
                c0 = time.process_time()
                d = Deblurrer(k, theta, solver="lsqr")
                h = d.choose_alpha(b, method="gcv")  # the hybrid GCV route (1 + 4 Golub-Kahan runs)
                xk = tikhonov(k, theta, b, alpha=h.alpha)
                cpu = time.process_time() - c0
                row += (
                    f" {h.alpha:.2e} ({h.alpha / exact.alpha:.2f}×), {h.iterations}, {_rel(xk, x):.4f} "
                    f"({_rel(xk, x) / e_gcv:.3f}), {_rel(xk, x_gcv):.4f}, {cpu:.1f} s |"
                )
                if grid:
                    c0 = time.process_time()
                    g = d.choose_alpha(b, method="gcv", alphas=default_grid(None, d._grid_scale()))
                    xg = d.solve(b, g.alpha)
                    cpu = time.process_time() - c0
                    row += (
                        f" {g.alpha:.2e}, {_rel(xg, x):.4f} ({_rel(xg, x) / e_gcv:.3f}), {_rel(xg, x_gcv):.3f}, "
                        f"{cpu:.1f} s |"
                    )
                print(row, flush=True)


def _rel(a: np.ndarray, ref: np.ndarray) -> float:
    return float(np.linalg.norm(np.ravel(a) - np.ravel(ref)) / np.linalg.norm(ref))


def main(argv=None) -> None:
    parser = _common.parser(__doc__)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--kron-size", type=int, default=2048)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", default="reuse,kronecker,circulant,mirror,hybrid")
    parser.add_argument("--wgcv-sizes", default="64,128,256", help="grid sizes of the wgcv section")
    parser.add_argument("--no-grid", action="store_true", help="wgcv section: skip the (slow) grid route")
    parser.add_argument("--pcg-sizes", default="256,512,1024", help="sizes of the pcg section (comma-separated)")
    args = _common.setup(parser, argv)
    only = set(args.only.split(","))
    print("| case | peer | peer cost | ours |\n|---|---|---|---|")
    if "reuse" in only:
        bench_reuse(args.size, args.repeat)
    if "kronecker" in only:
        bench_kronecker(args.kron_size)
    if "circulant" in only:
        bench_circulant(args.size)
    if "mirror" in only:
        bench_mirror()
    if "pcg" in only:
        bench_pcg([int(v) for v in args.pcg_sizes.split(",")], args.repeat)
    if "hybrid" in only:
        bench_hybrid()
    if "kron32" in only:
        bench_kron32(args.kron_size, args.repeat)
    if "wgcv" in only:
        bench_wgcv([int(v) for v in args.wgcv_sizes.split(",")], not args.no_grid)


if __name__ == "__main__":
    main()
