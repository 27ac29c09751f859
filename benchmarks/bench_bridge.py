"""Benchmark the PyTorch bridge: ``structops.torch.Layer(Conv)`` forward+backward against structops' own products.

Case A of ``bench_conv.py``: 512 images 28x28, ``Conv`` 8 -> 8 channels, 3x3 stencil, zero
boundary, float32. Three timings, interleaved in one process (every repeat runs all three, in
a rotating order, so all see the same machine load), medians over ``--repeat`` rounds:

* **structops own**: the three products a training step needs, called as a user would:
  ``k.apply(θ, X)``, ``k.apply(θ, W, transpose=True)`` and ``k.jac(θ, X).H @ w``;
* **bridge**: ``y = layer(x)`` then ``y.backward(W)`` with ``layer = structops.torch.Layer(k)``
  and ``x.requires_grad`` (the same three products through autograd);
* **torch Conv2d**: ``torch.nn.Conv2d(8, 8, 3, padding=1, bias=False)``, the same forward and
  backward (with ``x.requires_grad``).

The target (issue 15) is bridge / structops own <= 1.15. The ratio is reported both as the
ratio of the medians and as the median of the per-round ratios (more robust on a loaded
machine). Before timing, the bridge's output and both gradients are checked against the
structops products and against torch's convolution.

Usage::

    python benchmarks/bench_bridge.py                 # 2 threads, 15 rounds
    python benchmarks/bench_bridge.py --threads 1 --repeat 31
"""

from __future__ import annotations

import platform
import statistics
import sys
import time

import _common
import numpy as np
import torch

import structops
from structops.torch import Layer


def main(argv: list[str] | None = None) -> int:
    parser = _common.parser(__doc__, threads=2, what="numpy/BLAS, structops and torch")
    parser.add_argument("--repeat", type=int, default=15, help="interleaved rounds (medians)")
    parser.add_argument("--n", type=int, default=512, help="number of images")
    args = _common.setup(parser, argv, torch=True)
    print(
        f"structops {structops.__version__}, torch {torch.__version__}, numpy {np.__version__}; "
        f"{platform.machine()}, torch threads {torch.get_num_threads()}; "
        f"structops accelerator {structops.accelerator()!r}"
    )

    rng = np.random.default_rng(0)
    k = structops.Conv((28, 28), 3, in_channels=8, out_channels=8)
    torch.manual_seed(0)
    layer = Layer(k)
    theta = layer.theta.detach().numpy()
    X = rng.standard_normal((args.n, *k.in_shape)).astype(np.float32)
    W = rng.standard_normal((args.n, *k.out_shape)).astype(np.float32)
    Xt, Wt = torch.from_numpy(X), torch.from_numpy(W)
    conv = torch.nn.Conv2d(8, 8, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(k.theta_to_torch(theta)))

    def own():
        y = k.apply(theta, X)
        gx = k.apply(theta, W, transpose=True)
        gt = k.jac(theta, X).H @ W.ravel()
        return y, gx, gt

    def bridge():
        layer.zero_grad()
        x = Xt.detach().requires_grad_(True)
        y = layer(x)
        y.backward(Wt)
        return y.detach().numpy(), x.grad.numpy(), layer.theta.grad.numpy()

    def torch_conv():
        conv.zero_grad()
        x = Xt.detach().requires_grad_(True)
        y = conv(x)
        y.backward(Wt)
        return y.detach().numpy(), x.grad.numpy(), conv.weight.grad.flip((2, 3)).reshape(-1).numpy()

    runs = {"structops own": own, "bridge": bridge, "torch Conv2d": torch_conv}
    reference = own()
    for name in ("bridge", "torch Conv2d"):
        for a, b, what in zip(runs[name](), reference, ("y", "grad x", "grad theta"), strict=True):
            err = np.linalg.norm(a - b) / np.linalg.norm(b)
            if err > 1e-4:
                print(f"{name}: {what} differs from structops by {err:.2e}", file=sys.stderr)
                return 1
    times: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for r in range(args.repeat):
        for name in names[r % 3 :] + names[: r % 3]:
            t0 = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - t0)
    med = {name: statistics.median(t) for name, t in times.items()}
    paired = [b / o for b, o in zip(times["bridge"], times["structops own"], strict=True)]
    paired_torch = [b / t for b, t in zip(times["bridge"], times["torch Conv2d"], strict=True)]
    print(
        f"\ncase A: n={args.n}, 8->8 channels, 28x28, 3x3, zero bc, float32; median of {args.repeat} interleaved rounds"
    )
    print("\n| forward+backward | median ms | min ms | max ms |\n|---|---|---|---|")
    for name, t in times.items():
        print(f"| {name} | {1e3 * med[name]:.1f} | {1e3 * min(t):.1f} | {1e3 * max(t):.1f} |")
    print(
        f"\nbridge / structops own: {med['bridge'] / med['structops own']:.3f} (ratio of medians), "
        f"{statistics.median(paired):.3f} (median of per-round ratios); target <= 1.15"
    )
    print(
        f"bridge / torch Conv2d: {med['bridge'] / med['torch Conv2d']:.3f} (ratio of medians), "
        f"{statistics.median(paired_torch):.3f} (median of per-round ratios)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
