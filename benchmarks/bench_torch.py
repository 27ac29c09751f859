"""Benchmark structops.torch's backends: the torch forms and the numpy bridge against ``torch.nn.Conv2d``.

Five measurements, each interleaved in one process (every round runs all contenders, in a
rotating order, so all see the same machine load), medians over ``--repeat`` rounds and the
median of the per-round ratios (robust on a loaded machine):

* **case A** (512×8×28×28, 3×3, 8→8, zero boundary, float32): ``Layer(Conv)`` forward and
  backward (``y.backward(W)`` with ``x.requires_grad``) with ``backend="torch"``, ``"auto"`` and
  ``"numpy"`` (the bridge as it was before the torch forms) beside ``nn.Conv2d(8, 8, 3,
  padding=1, bias=False)``. Targets (issue 21): torch ÷ Conv2d ≤ 1.1, auto ÷ numpy ≤ 1.05.
* **per-example gradients** of the same layer with ``torch.func.vmap(torch.func.grad(...))``
  over ``--per-example`` images, beside ``nn.Conv2d`` through ``torch.func.functional_call``.
* **small dense families** (``--only dense``): ``Layer(Dense(256, 256))`` and ``Layer(MMatrix(256))``
  through the bridge, forward, ReLU and backward on ``--n-dense`` examples, beside
  ``nn.Linear(256, 256)`` and beside the same bridge with its BLAS rule switched off (the numpy
  side keeping BLAS's threads: OpenBLAS's spinning workers then stall torch's next parallel
  operation; ninth session).
* **CayleyConv** (16 channels, 28×28, 3×3, ``--n-cayley`` images, float32) forward and
  backward on both backends beside ``nn.Conv2d(16, 16, 3, padding=1)``, and the torch form on
  torch's operations alone (``set_accelerator("numpy")``; by default its plain eager CPU call
  runs the numba kernels of the bridge). Target: ≤ 1.5×. 2-core AVX-512 machine, eleventh
  session, ``--steady-heap``: one thread (CPU time) bridge 1.35–1.39×, torch form 1.39–1.42×,
  torch's operations alone 1.73–1.76×; two threads (wall time, a noisy day: ``nn.Conv2d`` itself
  10–13 ms) bridge 1.33–1.62×, torch form 1.39–1.77×, torch's operations alone 2.1× (3.1–3.4×
  in processes where that time doubles; benchmarks/README.md, tenth and eleventh sessions). The
  ratio of the two backends in the same rounds is the steadier figure: 1.01–1.08.

* **CayleyConv without autograd** (``--only cayley-apply``, the same layer and batch): a
  ``no_grad`` forward through the bridge and the torch form beside ``nn.Conv2d``'s, and the numpy API's
  ``kernel.apply`` and summed θ-gradient ``J(θ, X)ᵀ W`` beside the same calls on scipy's FFTs
  and LAPACK (``structops.set_accelerator("numpy")``).

``--steady-heap`` asks glibc to keep freed memory, so that no contender pays page faults for its
large temporaries (which contender does depends on the heap left by the others, up to 40 % in
one process); use it with ``--cpu-time`` for comparisons on a loaded machine.

Before timing, each contender's output and gradients are checked against its peer.

Usage::

    python benchmarks/bench_torch.py                  # 2 threads, 9 rounds
    python benchmarks/bench_torch.py --threads 1 --repeat 15
    python benchmarks/bench_torch.py --only cayley --repeat 5 --cpu-time   # CPU seconds (loaded machines)
    python benchmarks/bench_torch.py --only cayley --threads 1 --cpu-time --steady-heap
"""

from __future__ import annotations

import contextlib
import platform
import statistics
import sys
import time
from collections.abc import Callable
from unittest import mock

import _common
import numpy as np
import torch

import structops
from structops.torch import Layer

#: The clock of every measurement: wall time, or the process's CPU time with ``--cpu-time``.
CLOCK: list[Callable[[], float]] = [time.perf_counter]


def steady_heap() -> bool:
    """Ask glibc to keep freed memory (no trimming, no ``mmap`` below 32 MiB): no contender pays page faults.

    By default glibc returns large freed blocks to the kernel, and the next large allocation
    faults its pages in again (about 1 ms per 6 MB here); whose allocations fault depends on the
    heap's layout left by the others, which moves ratios by up to 40 % in one process. Returns
    whether ``mallopt`` took the settings (False off glibc).
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(-1, 1 << 30)) and bool(libc.mallopt(-3, 32 << 20))  # M_TRIM_, M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False


def _timed(fn: Callable[[], object]) -> float:
    start = CLOCK[0]()
    fn()
    return CLOCK[0]() - start


def interleaved(contenders: dict[str, Callable[[], object]], repeat: int) -> dict[str, list[float]]:
    """Seconds per round for every contender, the order rotating from round to round (one warm-up round)."""
    names = list(contenders)
    for name in names:
        contenders[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeat):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            times[name].append(_timed(contenders[name]))
    return times


def report(title: str, times: dict[str, list[float]], ratios: list[tuple[str, str, float | None]]) -> None:
    """A markdown table of medians, then each ``a ÷ b`` as the ratio of medians and the median of per-round ratios."""
    print(f"\n### {title}\n\n| contender | median ms |\n|---|---|")
    for name, t in times.items():
        print(f"| {name} | {1e3 * statistics.median(t):.2f} |")
    print("\n| ratio | of medians | median per round | target |\n|---|---|---|---|")
    for a, b, target in ratios:
        of_medians = statistics.median(times[a]) / statistics.median(times[b])
        per_round = statistics.median(x / y for x, y in zip(times[a], times[b], strict=True))
        print(f"| {a} ÷ {b} | {of_medians:.2f} | {per_round:.2f} | {'' if target is None else f'≤ {target}'} |")


def _fwd_bwd(module: torch.nn.Module, x: torch.Tensor, w: torch.Tensor) -> Callable[[], object]:
    def run():
        module.zero_grad(set_to_none=True)
        xg = x.detach().requires_grad_()
        module(xg).backward(w)
        return xg.grad

    return run


def case_a(n: int, repeat: int) -> None:
    k = structops.Conv((28, 28), 3, in_channels=8, out_channels=8)
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(8, 8, 3, padding=1, bias=False)
    theta = k.theta_from_torch(conv)
    layers = {b: Layer(k, theta, backend=b) for b in ("torch", "auto", "numpy")}
    x, w = torch.randn(n, 8, 28, 28), torch.randn(n, 8, 28, 28)
    for layer in layers.values():  # the same values and gradients as nn.Conv2d
        torch.testing.assert_close(layer(x), conv(x), rtol=1e-4, atol=1e-4)
    contenders = {"nn.Conv2d": _fwd_bwd(conv, x, w), **{f"Layer {b}": _fwd_bwd(m, x, w) for b, m in layers.items()}}
    times = interleaved(contenders, repeat)
    report(
        f"Case A: Layer(Conv) forward+backward, {n}×8×28×28, 3×3, float32",
        times,
        [("Layer torch", "nn.Conv2d", 1.1), ("Layer auto", "Layer numpy", 1.05), ("Layer numpy", "nn.Conv2d", None)],
    )


def per_example(n: int, repeat: int) -> None:
    k = structops.Conv((28, 28), 3, in_channels=8, out_channels=8)
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(8, 8, 3, padding=1, bias=False)
    layer = Layer(k, k.theta_from_torch(conv))
    x, w = torch.randn(n, 8, 28, 28), torch.randn(n, 8, 28, 28)

    def gradients(module: torch.nn.Module) -> Callable[[], torch.Tensor]:
        params = {name: p.detach() for name, p in module.named_parameters()}

        def loss(p, xi, wi):
            return (torch.func.functional_call(module, p, (xi[None],))[0] * wi).sum()

        per = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0, 0))
        return lambda: next(iter(per(params, x, w).values()))

    ours, theirs = gradients(layer), gradients(conv)
    flipped = theirs().flip((-1, -2)).reshape(n, -1)  # torch's weight layout -> θ
    torch.testing.assert_close(ours(), flipped, rtol=1e-4, atol=1e-4)
    times = interleaved({"nn.Conv2d vmap(grad)": theirs, "Layer vmap(grad)": ours}, repeat)
    report(
        f"Per-example gradients with torch.func.vmap(grad), {n}×8×28×28, 3×3, float32",
        times,
        [("Layer vmap(grad)", "nn.Conv2d vmap(grad)", None)],
    )


def _on_scipy(run: Callable[[], object]) -> Callable[[], object]:
    """``run`` under ``structops.set_accelerator("numpy")``: scipy's FFTs and LAPACK, torch forms on torch ops."""

    def run_scipy():
        with structops.set_accelerator("numpy"):
            return run()

    return run_scipy


def cayley(n: int, repeat: int) -> None:
    k = structops.CayleyConv((28, 28), 3, channels=16)
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(16, 16, 3, padding=1)
    theta = Layer(k).theta.detach()
    layers = {b: Layer(k, theta, backend=b) for b in ("torch", "numpy")}
    x, w = torch.randn(n, 16, 28, 28), torch.randn(n, 16, 28, 28)
    torch.testing.assert_close(layers["torch"](x), layers["numpy"](x), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(_on_scipy(lambda: layers["torch"](x))(), layers["numpy"](x), rtol=1e-4, atol=1e-4)
    contenders = {
        "nn.Conv2d": _fwd_bwd(conv, x, w),
        **{f"Cayley {b}": _fwd_bwd(m, x, w) for b, m in layers.items()},
        "Cayley torch, torch ops": _on_scipy(_fwd_bwd(layers["torch"], x, w)),
    }
    times = interleaved(contenders, repeat)
    report(
        f"CayleyConv forward+backward, {n}×16×28×28, 3×3, float32",
        times,
        [
            ("Cayley torch", "nn.Conv2d", 1.5),
            ("Cayley numpy", "nn.Conv2d", 1.5),
            ("Cayley torch, torch ops", "nn.Conv2d", None),
            ("Cayley torch", "Cayley numpy", None),
        ],
    )


def cayley_apply(n: int, repeat: int) -> None:
    """CayleyConv without autograd: a ``no_grad`` forward and the numpy API, beside ``nn.Conv2d``'s ``no_grad`` one."""
    k = structops.CayleyConv((28, 28), 3, channels=16)
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(16, 16, 3, padding=1)
    layer = Layer(k, backend="numpy")
    form = Layer(k, layer.theta.detach(), backend="torch")
    theta = layer.theta.detach().numpy().copy()
    x = torch.randn(n, 16, 28, 28)
    xs, ws = x.reshape(n, -1).numpy(), np.random.default_rng(0).standard_normal((n, k.shape[0]), np.float32)

    def apply():
        return k.apply(theta, xs)

    def gradient():
        return k.jac(theta, xs).H @ ws.ravel()

    np.testing.assert_allclose(apply(), _on_scipy(apply)(), rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        for module in (layer, form):
            np.testing.assert_allclose(module(x).reshape(n, -1).numpy(), apply().reshape(n, -1), rtol=1e-4, atol=1e-4)
    contenders = {
        "nn.Conv2d no_grad": torch.no_grad()(lambda: conv(x)),
        "Layer numpy no_grad": torch.no_grad()(lambda: layer(x)),
        "Layer torch no_grad": torch.no_grad()(lambda: form(x)),
        "apply": apply,
        "apply, scipy": _on_scipy(apply),
        "J^T w": gradient,
        "J^T w, scipy": _on_scipy(gradient),
    }
    times = interleaved(contenders, repeat)
    report(
        f"CayleyConv without autograd, {n}×16×28×28, 3×3, float32: no_grad forward and the numpy API",
        times,
        [
            ("Layer numpy no_grad", "nn.Conv2d no_grad", None),
            ("Layer torch no_grad", "nn.Conv2d no_grad", None),
            ("apply", "apply, scipy", None),
            ("J^T w", "J^T w, scipy", None),
        ],
    )


def _uncapped(run: Callable[[], object]) -> Callable[[], object]:
    """``run`` with the bridge's BLAS rule switched off (its numpy side keeps BLAS's threads)."""
    import structops.torch as st
    from structops.torch import _bridge

    def uncapped():
        with (
            mock.patch.object(_bridge, "numpy_side", lambda kernel: contextlib.nullcontext()),
            mock.patch.object(st, "numpy_side", lambda kernel: contextlib.nullcontext()),
        ):
            return run()

    return uncapped


def small_dense(n: int, repeat: int) -> None:
    """Training steps of small dense families through the bridge, with and without its BLAS rule."""
    torch.manual_seed(0)
    x, w = torch.randn(n, 256), torch.randn(n, 256)

    def step(module: torch.nn.Module) -> Callable[[], object]:
        def run():  # an activation after the layer: a parallel torch operation, as in a network
            module.zero_grad(set_to_none=True)
            xg = x.detach().requires_grad_()
            torch.relu(module(xg)).backward(w)
            return xg.grad

        return run

    linear = torch.nn.Linear(256, 256, bias=False)
    for name, k in (("Dense(256, 256)", structops.Dense(256, 256)), ("MMatrix(256)", structops.MMatrix(256))):
        layer = Layer(k, backend="numpy")
        run = step(layer)
        torch.testing.assert_close(run(), _uncapped(run)())
        contenders = {"nn.Linear": step(linear), "bridge": run, "bridge, BLAS uncapped": _uncapped(run)}
        times = interleaved(contenders, repeat)
        report(
            f"Layer({name}) forward+relu+backward through the bridge, {n} examples, float32",
            times,
            [("bridge", "nn.Linear", None), ("bridge, BLAS uncapped", "bridge", None)],
        )


def main(argv: list[str] | None = None) -> int:
    parser = _common.parser(__doc__, threads=2, what="numpy/BLAS, structops and torch")
    parser.add_argument("--repeat", type=int, default=9, help="interleaved rounds (medians)")
    parser.add_argument("--n", type=int, default=512, help="images of case A")
    parser.add_argument("--per-example", type=int, default=128, help="images of the per-example gradients")
    parser.add_argument("--n-cayley", type=int, default=128, help="images of the CayleyConv case")
    parser.add_argument("--n-dense", type=int, default=256, help="examples of the small dense families")
    parser.add_argument("--cpu-time", action="store_true", help="time in process CPU seconds instead of wall seconds")
    parser.add_argument(
        "--steady-heap", action="store_true", help="glibc keeps freed memory: no page faults in any contender"
    )
    parser.add_argument(
        "--only",
        choices=("case-a", "per-example", "cayley", "cayley-apply", "dense"),
        action="append",
        help="run only these cases (repeatable)",
    )
    args = _common.setup(parser, argv, torch=True)
    if args.cpu_time:
        CLOCK[0] = time.process_time
    heap = "steady heap (mallopt)" if args.steady_heap and steady_heap() else "default heap"
    print(
        f"structops {structops.__version__}, torch {torch.__version__}, numpy {np.__version__}; "
        f"{platform.machine()}, {args.threads} threads; structops accelerator {structops.accelerator()!r}; "
        f"median of {args.repeat} interleaved rounds, {'CPU' if args.cpu_time else 'wall'} time, {heap}"
    )
    only = set(args.only or ("case-a", "per-example", "cayley", "cayley-apply", "dense"))
    if "case-a" in only:
        case_a(args.n, args.repeat)
    if "per-example" in only:
        per_example(args.per_example, args.repeat)
    if "cayley" in only:
        cayley(args.n_cayley, args.repeat)
    if "cayley-apply" in only:
        cayley_apply(args.n_cayley, args.repeat)
    if "dense" in only:
        small_dense(args.n_dense, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
