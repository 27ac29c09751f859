"""Certified spectral norms of convolution layers and a 10-layer CNN, against power iteration and the reshaped weight.

For each layer: the certified upper bound (``certified_norm_bound``), the guaranteed Lanczos
lower bound (``spectral_norm(..., full_output=True).lower``), their ratio and time; in the same
run, 50 steps of power iteration on the torch layer (``conv2d`` / ``conv_transpose2d``, a lower
estimate) and the spectral norm of the reshaped weight matrix ``(out, in·k·k)`` (not a bound).
Medians over ``--repeat`` runs, CPU (process) time next to wall time: the machine may be loaded.

Run with ``python benchmarks/bench_lipschitz.py [--quick] [--repeat R]``.
"""

from __future__ import annotations

import time
import warnings

import _common
import numpy as np
import torch

import structops
import structops.torch as st
from structops.solvers import EstimateWarning, certified_norm_bound, spectral_norm


def _timed(fn, repeat: int):
    walls, cpus = [], []
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return out, float(np.median(walls)), float(np.median(cpus))


def _bounds(kernel, theta):
    upper = certified_norm_bound(kernel, theta)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EstimateWarning)
        est = spectral_norm(kernel, theta, tol=1e-4, full_output=True)
    return upper, est.lower


def _power(module: torch.nn.Conv2d, shape, steps: int = 50) -> float:
    weight = module.weight.detach().double()
    x = torch.randn(1, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    pad, stride = module.padding, module.stride
    sigma = 0.0
    for _ in range(steps):
        x = x / x.norm()
        y = torch.nn.functional.conv2d(x, weight, padding=pad, stride=stride)
        sigma = float(y.norm())
        x = torch.nn.grad.conv2d_input(x.shape, weight, y, padding=pad, stride=stride)
    return sigma


def _reshaped(module: torch.nn.Conv2d) -> float:
    w = module.weight.detach().double().numpy()
    return float(np.linalg.norm(w.reshape(w.shape[0], -1), 2))


def layer_row(name: str, module: torch.nn.Conv2d, shape, repeat: int) -> dict:
    layer = st.from_module(module.double(), shape)
    theta = layer.theta.detach().numpy()
    (upper, lower), wall, cpu = _timed(lambda: _bounds(layer.kernel, theta), repeat)
    power, power_wall, _ = _timed(lambda: _power(module, shape), repeat)
    row = {"layer": name, "upper": upper, "lower": lower, "ratio": upper / lower, "wall": wall, "cpu": cpu}
    return {**row, "power/upper": power / upper, "power wall": power_wall, "reshaped/upper": _reshaped(module) / upper}


def cnn(quick: bool) -> torch.nn.Sequential:
    widths = [3, 16, 16, 32, 32, 32, 64, 64, 64, 64, 64]
    strides = [1, 1, 2, 1, 1, 2, 1, 1, 2, 1]
    if quick:
        widths, strides = widths[:4], strides[:3]
    layers: list[torch.nn.Module] = []
    for cin, cout, s in zip(widths[:-1], widths[1:], strides):
        layers += [torch.nn.Conv2d(cin, cout, 3, padding=1, stride=s), torch.nn.BatchNorm2d(cout), torch.nn.ReLU()]
    net = torch.nn.Sequential(*layers).double()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 2.0)
    return net.eval()


def main() -> None:
    parser = _common.parser(__doc__, what="structops and torch")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeat", type=int, default=3)
    args = _common.setup(parser, torch=True)
    torch.manual_seed(0)
    print(f"torch threads {torch.get_num_threads()}")
    c, n = (16, 16) if args.quick else (64, 32)
    rows = [layer_row(f"{c}->{c} 3x3 {n}x{n} zero", torch.nn.Conv2d(c, c, 3, padding=1), (c, n, n), args.repeat)]
    rows.append(layer_row(f"{c}->{c} 3x3 {n}x{n} zero stride 2", torch.nn.Conv2d(c, c, 3, padding=1, stride=2),
                          (c, n, n), args.repeat))  # fmt: skip
    try:
        structops.Conv((8, 8), 3, dilation=2)
        rows.append(layer_row(f"{c}->{c} 3x3 dilation 2", torch.nn.Conv2d(c, c, 3, padding=2, dilation=2),
                              (c, n, n), args.repeat))  # fmt: skip
    except TypeError:
        print("dilated layer: skipped (structops.Conv does not take dilation yet)")
    for r in rows:
        print("  ".join(f"{k}={v:.5g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()))
    net = cnn(args.quick)
    (report, wall, cpu) = _timed(lambda: st.certify(net, (3, n, n)), 1)
    print(report)
    worst = max(r.ratio for r in report.rows if r.family == "Conv")
    print(
        f"CNN ({len(report.rows)} rows): certified in {wall:.2f} s wall, {cpu:.2f} s CPU; worst conv ratio {worst:.5f}"
    )


if __name__ == "__main__":
    main()
