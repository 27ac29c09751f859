r"""PNG plots of a training run (matplotlib's Agg canvas; no display, no global pyplot state).

* ``curves.png`` -- loss and train/test accuracy per epoch;
* ``stencils.png`` -- the learned stencils of a convolution as images (one per output/input
  channel pair), or the learned matrix :math:`K(\theta)` of any other family;
* ``spectrum.png`` -- for periodic convolutions, the spectrum :math:`|\lambda|` of the learned
  operator: ``eigvals`` (single channel) or the moduli of the symbol's per-frequency entries.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..kernels._base import ParametricKernel
from .model import LayerClassifier, Params

__all__ = ["matplotlib_missing", "plot_curves", "plot_kernel", "plot_spectrum", "write_plots"]

#: At most this many channel pairs are drawn.
_MAX_PANELS = 32


def matplotlib_missing() -> str | None:
    """None when matplotlib can be imported; else one line saying that the plots are skipped and what installs them."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return 'plots skipped: matplotlib is not installed (pip install "structops[plot]" adds it)'
    return None


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def plot_curves(history: dict, path: str | Path) -> Path:
    """Loss (log scale) and train/test accuracy against the epoch, saved as PNG."""
    fig = _figure(9, 3.5)
    ax1, ax2 = fig.subplots(1, 2)
    ep = np.asarray(history["epoch"])
    ax1.semilogy(ep, np.asarray(history["loss"]), "o-")
    ax1.set(xlabel="epoch", ylabel="training objective", title="loss")
    ax2.plot(ep, 100 * np.asarray(history["train_acc"]), "o-", label="train")
    ax2.plot(ep, 100 * np.asarray(history["test_acc"]), "s-", label="test")
    ax2.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    ax2.legend()
    from matplotlib.ticker import MaxNLocator

    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)


def _conv_of(kernel: ParametricKernel):
    """The convolution inside ``kernel`` (itself, or the inner family of a ``Chain``), or None."""
    while kernel is not None and not hasattr(kernel, "stencil"):
        kernel = getattr(kernel, "kernel", None)
    return kernel


def plot_kernel(kernel: ParametricKernel, theta: np.ndarray, path: str | Path) -> Path:
    r"""The learned stencils as images (convolutions), else the learned matrix :math:`K(\theta)`."""
    conv = _conv_of(kernel)
    if conv is not None:
        st = np.asarray(theta, dtype=np.float64).reshape(conv.out_channels, conv.in_channels, *conv.stencil)
        pairs = [(o, i) for o in range(conv.out_channels) for i in range(conv.in_channels)][:_MAX_PANELS]
        ncol = min(8, len(pairs))
        nrow = -(-len(pairs) // ncol)
        fig = _figure(1.6 * ncol + 1, 1.6 * nrow + 0.6)
        axes = np.atleast_1d(fig.subplots(nrow, ncol, squeeze=False)).ravel()
        vmax = float(np.abs(st).max()) or 1.0
        for ax, (o, i) in zip(axes, pairs):
            s = st[o, i]
            if s.ndim == 1:
                ax.bar(np.arange(s.size) - s.size // 2, s)
                ax.set_ylim(-vmax, vmax)
            else:
                img = s if s.ndim == 2 else s[s.shape[0] // 2]  # 3-D: the middle slice
                im = ax.imshow(img, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
                ax.set_xticks([])
                ax.set_yticks([])
            ax.set_title(f"out {o}, in {i}", fontsize=8)
        for ax in axes[len(pairs) :]:
            ax.axis("off")
        if st.ndim > 3:
            fig.colorbar(im, ax=list(axes), shrink=0.8)
        fig.suptitle(f"learned stencils of {type(conv).__name__} {conv.stencil}")
    else:
        fig = _figure(6, 5)
        ax = fig.subplots()
        rows, cols = kernel.shape
        if rows * cols <= 4_000_000:
            M = kernel.matrix(theta)
            vmax = float(np.abs(M).max()) or 1.0
            im = ax.imshow(M, cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
            fig.colorbar(im, ax=ax)
            ax.set_title(f"learned K(θ) of {kernel!r}", fontsize=9)
        else:
            ax.hist(np.asarray(theta, dtype=np.float64), bins=60)
            ax.set(title=f"learned θ of {kernel!r}", xlabel="θ")
    fig.savefig(path)
    return Path(path)


def plot_spectrum(kernel: ParametricKernel, theta: np.ndarray, path: str | Path) -> Path | None:
    r"""The spectrum :math:`|\lambda|` of a learned periodic convolution; None for other families.

    Single channel: :math:`|\lambda| = |\mathrm{fftn}(K(\theta)u_1)|` from ``eigvals``, shown
    over the grid with zero frequency at the centre. Multi-channel: the modulus of each
    entry :math:`|\hat K_{oc}(\xi)|` of the symbol (each block's eigenvalues).
    """
    conv = _conv_of(kernel)
    if conv is None or getattr(conv, "bc", None) != "periodic" or any(s != 1 for s in conv.stride):
        return None
    if conv is not kernel:
        return None  # a pooled convolution is not circulant
    sym = conv.symbol(theta)  # (*grid, out, in)
    pairs = [(o, i) for o in range(conv.out_channels) for i in range(conv.in_channels)][:_MAX_PANELS]
    ncol = min(8, len(pairs))
    nrow = -(-len(pairs) // ncol)
    fig = _figure(1.8 * ncol + 1, 1.8 * nrow + 0.6)
    axes = np.atleast_1d(fig.subplots(nrow, ncol, squeeze=False)).ravel()
    for ax, (o, i) in zip(axes, pairs):
        lam = np.abs(conv.eigvals(theta) if len(pairs) == 1 else sym[..., o, i])
        lam = np.fft.fftshift(lam)
        if lam.ndim == 1:
            ax.plot(np.arange(lam.size) - lam.size // 2, lam)
        else:
            img = lam if lam.ndim == 2 else lam[lam.shape[0] // 2]
            im = ax.imshow(img, cmap="viridis")
            fig.colorbar(im, ax=ax, shrink=0.7)
            ax.set_xticks([])
            ax.set_yticks([])
        ax.set_title(f"|λ| out {o}, in {i}", fontsize=8)
    for ax in axes[len(pairs) :]:
        ax.axis("off")
    fig.suptitle("spectrum |λ| of the learned periodic convolution (zero frequency at the centre)")
    fig.savefig(path)
    return Path(path)


def write_plots(out: str | Path, model: LayerClassifier, params: Params, history: dict) -> list[Path]:
    """Write ``curves.png``, ``stencils.png`` and (periodic convolutions) ``spectrum.png`` into ``out``."""
    out = Path(out)
    written = [plot_curves(history, out / "curves.png"), plot_kernel(model.kernel, params.theta, out / "stencils.png")]
    spec = plot_spectrum(model.kernel, params.theta, out / "spectrum.png")
    if spec is not None:
        written.append(spec)
    return written
