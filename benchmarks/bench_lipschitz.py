"""Certified spectral norms of convolution layers and a 10-layer CNN, against power iteration and the reshaped weight.

For each layer: the certified upper bound and the guaranteed Lanczos lower bound, both from one
``spectral_norm(..., full_output=True)`` call (``.upper``, ``.lower``), their ratio and time; in the same
run, 50 steps of power iteration on the torch layer (``conv2d`` / ``conv_transpose2d``, a lower
estimate) and the spectral norm of the reshaped weight matrix ``(out, in·k·k)`` (not a bound).
Medians over ``--repeat`` runs, CPU (process) time next to wall time: the machine may be loaded.

Projection at training speed: ``project_spectral_norm`` of a 16→16 3×3 zero-padded layer on
28×28, and a small CNN of three ``Layer(Conv)`` (16 channels, 28×28, bias) trained by Adam on the
shipped digits (upsampled to 28×28, batches of 64), with and without ``Layer.project_(lipschitz=1)``
of every layer after each step: median per-step wall and CPU times and their ratio.

Run with ``python benchmarks/bench_lipschitz.py [--quick] [--repeat R] [--only bounds,cnn,project]``.
"""

from __future__ import annotations

import time
import warnings

import _common
import numpy as np
import torch

import structops
import structops.torch as st
from structops.solvers import EstimateWarning, certified_norm_bound, project_spectral_norm, spectral_norm
from structops.train import load_digits


def _bounds(kernel, theta):
    """The certified upper and the Lanczos lower bound, from one ``spectral_norm`` call (the route's certificate)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EstimateWarning)
        est = spectral_norm(kernel, theta, tol=1e-4, full_output=True)
    return est.upper, est.lower


def _power(module: torch.nn.Conv2d, shape, steps: int = 50) -> float:
    weight = module.weight.detach().double()
    x = torch.randn(1, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    geometry = {"padding": module.padding, "stride": module.stride, "dilation": module.dilation}
    sigma = 0.0
    for _ in range(steps):
        x = x / x.norm()
        y = torch.nn.functional.conv2d(x, weight, **geometry)
        sigma = float(y.norm())
        x = torch.nn.grad.conv2d_input(x.shape, weight, y, **geometry)
    return sigma


def _reshaped(module: torch.nn.Conv2d) -> float:
    w = module.weight.detach().double().numpy()
    return float(np.linalg.norm(w.reshape(w.shape[0], -1), 2))


def layer_row(name: str, module: torch.nn.Conv2d, shape, repeat: int) -> dict:
    layer = st.from_module(module.double(), shape)
    theta = layer.theta.detach().numpy()
    (upper, lower), wall, cpu = _common.timed(lambda: _bounds(layer.kernel, theta), repeat)
    power, power_wall, _ = _common.timed(lambda: _power(module, shape), repeat)
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


def projection_rows(steps: int, repeat: int) -> list[dict]:
    """The projection of one 16→16 layer, and per-step times of a training loop with and without projecting."""
    kernel = structops.Conv((28, 28), 3, in_channels=16, out_channels=16)
    theta = np.random.default_rng(0).standard_normal(kernel.nparams) / 12  # certified norm about 2
    _, wall, cpu = _common.timed(lambda: project_spectral_norm(kernel, theta, 1.0), repeat)
    rows = [{"case": "project_spectral_norm 16->16 3x3 28x28 zero", "wall": wall, "cpu": cpu}]
    data = load_digits()
    x = torch.nn.functional.interpolate(torch.from_numpy(data.x_train).float(), size=(28, 28), mode="bilinear")
    y = torch.from_numpy(data.y_train).long()
    per_step = {}
    for project in (False, True):
        torch.manual_seed(0)
        convs = [st.Layer(structops.Conv((28, 28), 3, in_channels=c, out_channels=16), bias=True) for c in (1, 16, 16)]
        model = torch.nn.Sequential(
            convs[0], torch.nn.ReLU(), convs[1], torch.nn.ReLU(), convs[2], torch.nn.ReLU(),
            torch.nn.AvgPool2d(7), torch.nn.Flatten(), torch.nn.Linear(16 * 4 * 4, 10),
        )  # fmt: skip
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        batches = torch.randint(0, x.shape[0], (steps, 64), generator=torch.Generator().manual_seed(1))

        def step(batch, model=model, optimizer=optimizer):
            loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        def projection(convs=convs) -> tuple[int, list[float]]:
            changed, cpu = 0, []
            for layer in convs:
                before, start = layer.theta.detach().clone(), time.process_time()
                layer.project_(lipschitz=1.0)
                cpu.append(time.process_time() - start)
                changed += int(not torch.equal(before, layer.theta.detach()))
            return changed, cpu

        times, layers, moved = [], [], 0
        for batch in batches:
            w, c = time.perf_counter(), time.process_time()
            step(batch)
            w2, c2 = time.perf_counter(), time.process_time()
            if project:
                changed, cpu = projection()
                moved += changed
                layers.append(cpu)
            times.append((w2 - w, c2 - c, time.perf_counter() - w2, time.process_time() - c2))
        skip = min(2, steps - 1)  # the first steps build the torch forms
        per_step[project] = np.median(np.array(times[skip:]), axis=0)
        for i, cpu in enumerate(np.median(np.array(layers[skip:]), axis=0) if project else []):
            rows.append({"case": f"project_ of layer {i} ({(1, 16, 16)[i]}->16), CPU median", "cpu": float(cpu)})
        if project:
            worst = max(certified_norm_bound(c.kernel, c.theta.detach().numpy()) for c in convs)
            rows.append({"case": "largest certified layer norm after the projected loop", "value": worst})
            rows.append({"case": "projections that moved theta", "value": f"{moved} of {3 * steps}"})
    plain, proj = per_step[False], per_step[True]
    rows.append({"case": "training step (3x Layer(Conv) 16ch 28x28, batch 64)", "wall": plain[0], "cpu": plain[1]})
    rows.append({"case": "project_ of the 3 layers after a step", "wall": proj[2], "cpu": proj[3]})
    rows.append({"case": "ratio (plain step + projection) / plain step", "wall": 1 + proj[2] / plain[0],
                 "cpu": 1 + proj[3] / plain[1]})  # fmt: skip
    return rows


def _print(rows: list[dict]) -> None:
    for r in rows:
        print("  ".join(f"{k}={v:.5g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()))


def boundary_rows(quick: bool, repeat: int) -> list[dict]:
    """3×3 layers on 32×32 per boundary: the certificate (verified positive definiteness for reflect/replicate).

    ``lower`` is the guaranteed Lanczos lower bound (a Ritz value, ``spectral_norm(...).lower``).
    64→64 takes the nested-dissection factorisation (about 25 s of CPU).
    """
    rows = []
    cases = [(1, "reflect"), (16, "reflect"), (16, "replicate"), (16, "zero")]
    cases += [] if quick else [(1, "replicate"), (64, "reflect")]
    for c, bc in cases:
        kernel = structops.Conv((32, 32), 3, bc=bc, in_channels=c, out_channels=c)
        theta = kernel.random_theta(0)
        (upper, lower), wall, cpu = _common.timed(lambda k=kernel, t=theta: _bounds(k, t), repeat)
        row = {"layer": f"{c}->{c} 3x3 32x32 {bc}", "upper": upper, "lower": lower, "ratio": upper / lower}
        rows.append({**row, "wall": wall, "cpu": cpu})
    return rows


def main() -> None:
    parser = _common.parser(__doc__, what="structops and torch")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", default="bounds,cnn,project", help="comma-separated: bounds, cnn, project")
    parser.add_argument("--boundaries", action="store_true", help="only the per-boundary rows (boundary_rows)")
    args = _common.setup(parser, torch=True)
    only = set(args.only.split(","))
    torch.manual_seed(0)
    print(f"torch threads {torch.get_num_threads()}")
    if args.boundaries:
        _print(boundary_rows(args.quick, args.repeat))
        return
    c, n = (16, 16) if args.quick else (64, 32)
    if "bounds" in only:
        rows = [layer_row(f"{c}->{c} 3x3 {n}x{n} zero", torch.nn.Conv2d(c, c, 3, padding=1), (c, n, n), args.repeat)]
        rows.append(layer_row(f"{c}->{c} 3x3 {n}x{n} zero stride 2", torch.nn.Conv2d(c, c, 3, padding=1, stride=2),
                              (c, n, n), args.repeat))  # fmt: skip
        rows.append(layer_row(f"{c}->{c} 3x3 dilation 2", torch.nn.Conv2d(c, c, 3, padding=2, dilation=2),
                              (c, n, n), args.repeat))  # fmt: skip
        _print(rows)
    if "cnn" in only:
        net = cnn(args.quick)
        (report, wall, cpu) = _common.timed(lambda: st.certify(net, (3, n, n)), 1)
        print(report)
        worst = max(r.ratio for r in report.rows if r.family == "Conv")
        print(
            f"CNN ({len(report.rows)} rows): certified in {wall:.2f} s wall, {cpu:.2f} s CPU; "
            f"worst conv ratio {worst:.5f}"
        )
    if "project" in only:
        _print(projection_rows(6 if args.quick else 20, args.repeat))


if __name__ == "__main__":
    main()
