"""The project ideas of the lecture notes, trained: cheaper and structured parametric layers.

Lars Ruthotto, *Numerical Methods for Deep Learning*, "Parametric Models", ends with ideas for
projects: an M-matrix for convolution, cheaper convolution models (doubly symmetric and
separable stencils), wavelets and other sparsity patterns. Each is a structops family; this
script trains every one of them as the layer of the same classifier on the shipped 8x8 digits
(same optimiser, epochs and seed), prints a table and, with ``--out DIR``, writes
``DIR/project_ideas.png`` with what
each family learned: the stencils of the convolution families, the subband weights of the
wavelet family and the diagonals of the banded matrix.

Run: ``python examples/project_ideas.py [--out DIR] [--epochs N]`` (about 10 s).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from structops import Banded, Chain, Conv, Wavelet
from structops.train import TrainConfig, load_digits, train

FAMILIES = (
    ("MMatrixConv 3x3", {"kernel": "mmatrixconv"}),
    ("SymmetricConv 3x3, 4 ch", {"kernel": "symmetric", "channels": 4}),
    ("SeparableConv 3x3, 4 ch", {"kernel": "separable", "channels": 4}),
    ("DepthwiseSeparable 3x3, 4 ch", {"kernel": "depthwise", "channels": 4}),
    ("Wavelet haar", {"kernel": "wavelet"}),
    ("Banded (tridiagonal)", {"kernel": "banded"}),
    ("Sparse 3x3 pattern", {"kernel": "sparse"}),
    ("Conv 3x3, 4 ch (reference)", {"kernel": "conv", "channels": 4}),
)


def learned_picture(kernel, theta: np.ndarray) -> tuple[np.ndarray, str]:
    """What to show of a trained family: stencils side by side, subband weights, or diagonals."""
    inner = kernel.kernel if isinstance(kernel, Chain) else kernel  # a pooled family is Chain(AvgPool, K)
    if isinstance(inner, Conv) or hasattr(inner, "weights"):  # a convolution family: its stencils
        w = theta.reshape(inner.theta_shape) if isinstance(inner, Conv) else inner.weights(theta)
        tiles = [np.pad(w[o, o if w.shape[1] > 1 else 0], 1, constant_values=np.nan) for o in range(min(w.shape[0], 4))]
        return np.concatenate(tiles, axis=1), "stencils, one per output channel"
    if isinstance(inner, Wavelet):  # one weight per subband: K's eigenvalue at each coefficient
        return np.asarray(inner.diagonal(theta)).reshape(inner.grid), "eigenvalue per wavelet coefficient"
    M = kernel.matrix(theta)
    if isinstance(inner, Banded):  # its three diagonals, as rows
        return np.stack([np.pad(np.diag(M, k), (0, abs(k))) for k in (-1, 0, 1)]), "diagonals -1, 0, +1"
    return M, "K(θ)"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="folder for project_ideas.png (the table only without it)")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--no-plot", action="store_true", help="print the table only, even with --out")
    args = parser.parse_args(argv)
    data = load_digits(dtype=np.float32)
    rows, pictures = [], []
    for label, overrides in FAMILIES:
        config = TrainConfig(epochs=args.epochs, seed=0, **overrides)
        res = train(config, data)
        theta = res.params.theta
        rows.append((label, res.model.kernel.nparams, res.train_acc, res.test_acc, res.seconds))
        pictures.append((label, *learned_picture(res.model.kernel, theta)))
    print(f"{'family':<30} {'params in K':>11} {'train':>8} {'test':>8} {'time':>6}")
    for label, p, tr, te, sec in rows:
        print(f"{label:<30} {p:>11,} {100 * tr:>7.2f}% {100 * te:>7.2f}% {sec:>5.1f}s")
    if args.no_plot:
        return 0
    if args.out is None:
        print("no figure: pass --out DIR to draw project_ideas.png there")
        return 0
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 4, figsize=(13, 6), layout="constrained")
    for ax, (label, image, what) in zip(axes.ravel(), pictures):
        lim = np.nanmax(np.abs(image)) or 1.0
        im = ax.imshow(image, cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest", aspect="auto")
        ax.set_title(f"{label}\n{what}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(im, ax=ax, shrink=0.7)
    path = Path(args.out) / "project_ideas.png"
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
