r"""PNG plots of a training run (matplotlib's Agg canvas; no display, no global pyplot state).

* ``curves.png`` -- loss and train/test accuracy per epoch;
* ``stencils.png`` -- the learned stencils of a convolution as images (one per output/input
  channel pair), or the learned matrix :math:`K(\theta)` of any other family;
* ``spectrum.png`` -- for periodic convolutions (also before a pooling), the spectrum
  :math:`|\lambda|` of the learned operator: ``eigvals`` (single channel) or the moduli of the
  symbol's per-frequency entries, every panel on one colour scale.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..kernels._base import ParametricKernel
from ..kernels.diagonalized import FourierMultiplier
from .model import LayerClassifier, Params

__all__ = [
    "curves_figure",
    "matplotlib_missing",
    "plot_curves",
    "plot_kernel",
    "plot_spectrum",
    "spectrum_panels",
    "write_plots",
]

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

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")  # panels fill the figure
    FigureCanvasAgg(fig)
    return fig


def _log_ticks(ax, values) -> None:
    """Few, plainly labelled ticks on a log axis: 1-2-5 per decade over short ranges, one a decade over long ones."""
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v) & (v > 0)]
    decades = float(np.log10(v.max() / v.min())) if v.size else 0.0
    if decades < 0.5:  # less than half a decade: log ticks would leave the axis unlabelled
        ax.yaxis.set_major_locator(MaxNLocator(nbins=4))
    else:
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if decades < 2 else (1.0,), numticks=8))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _pos: f"{y:.3g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def curves_figure(history: dict):
    """The figure of :func:`plot_curves` (a ``matplotlib.figure.Figure``)."""
    fig = _figure(9, 3.5)
    ax1, ax2 = fig.subplots(1, 2)
    ep = np.asarray(history["epoch"])
    loss = np.asarray(history["loss"])
    ax1.semilogy(ep, loss, "o-")
    _log_ticks(ax1, loss)
    ax1.set(xlabel="epoch", ylabel="training objective", title="loss")
    ax2.plot(ep, 100 * np.asarray(history["train_acc"]), "o-", label="train")
    ax2.plot(ep, 100 * np.asarray(history["test_acc"]), "s-", label="test")
    ax2.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    ax2.legend()
    from matplotlib.ticker import MaxNLocator

    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig


def plot_curves(history: dict, path: str | Path) -> Path:
    """Loss (log scale) and train/test accuracy against the epoch, saved as PNG."""
    curves_figure(history).savefig(path)
    return Path(path)


def _conv_of(kernel: ParametricKernel) -> Any:
    """The convolution inside ``kernel`` (itself, or the inner family of a ``Chain``), or None."""
    found: Any = kernel
    while found is not None and not hasattr(found, "stencil"):
        found = getattr(found, "kernel", None)
    return found


def _grid_of_panels(npanels: int, size: float, extra_width: float = 0.0):
    """Columns, rows and figure size for ``npanels`` square panels of ``size`` inches (at most 8 a row)."""
    ncol = min(8, npanels)
    nrow = -(-npanels // ncol)
    return ncol, nrow, (size * ncol + extra_width, size * nrow + 0.5)


def _stencils_of(conv, theta) -> np.ndarray | None:
    """The stencils ``(out, in, *stencil)`` of a convolution whose parameters are its taps, else None."""
    theta = np.asarray(theta, dtype=np.float64)
    shape = (conv.out_channels, conv.in_channels, *conv.stencil)
    return theta.reshape(shape) if theta.size == int(np.prod(shape)) else None


def plot_kernel(kernel: ParametricKernel, theta: np.ndarray, path: str | Path) -> Path:
    r"""The learned stencils as images (convolutions), else the learned matrix :math:`K(\theta)`."""
    conv = _conv_of(kernel)
    st = _stencils_of(conv, theta) if conv is not None else None
    if st is not None:
        pairs = [(o, i) for o in range(conv.out_channels) for i in range(conv.in_channels)][:_MAX_PANELS]
        ncol, nrow, figsize = _grid_of_panels(len(pairs), 1.5, extra_width=0.8)
        fig = _figure(*figsize)
        axes = np.atleast_1d(fig.subplots(nrow, ncol, squeeze=False)).ravel()
        vmax = float(np.abs(st).max()) or 1.0
        im = None
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
        if im is not None:
            fig.colorbar(im, ax=list(axes), shrink=0.8)
        fig.suptitle(f"learned stencils of {type(conv).__name__} {conv.stencil}", fontsize=10)
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


def spectrum_panels(kernel: ParametricKernel, theta: np.ndarray) -> list[tuple[str, np.ndarray]] | None:
    r"""The moduli :math:`|\lambda|` that :func:`plot_spectrum` draws, as ``(title, array)``; None if it draws none.

    For a periodic convolution with stride 1, also when it is followed by a pooling
    (``Chain(AvgPool, Conv)``: the spectrum of the convolution before the pooling). Single
    channel: :math:`|\mathrm{eigvals}|`; multi-channel: the modulus of each entry of the
    per-frequency blocks (``conv.diagonalize(theta).full_blocks()``). Zero frequency at the centre.
    """
    conv = _conv_of(kernel)
    if conv is None or getattr(conv, "bc", None) != "periodic" or any(s != 1 for s in conv.stride):
        return None
    if _stencils_of(conv, theta) is None:
        return None  # a reparametrised convolution: theta is not its stencil
    D = conv.diagonalize(theta)
    if not isinstance(D, FourierMultiplier):
        return None
    blocks = D.full_blocks()  # (*grid, out, in); one channel: the eigenvalues
    pairs = [(o, i) for o in range(conv.out_channels) for i in range(conv.in_channels)][:_MAX_PANELS]
    if len(pairs) == 1:
        return [("|λ|", np.fft.fftshift(np.abs(blocks[..., 0, 0])))]
    return [(f"|λ| out {o}, in {i}", np.fft.fftshift(np.abs(blocks[..., o, i]))) for o, i in pairs]


def plot_spectrum(kernel: ParametricKernel, theta: np.ndarray, path: str | Path) -> Path | None:
    r"""The spectrum :math:`|\lambda|` of a learned periodic convolution; None for other families.

    Single channel: :math:`|\lambda| = |\mathrm{fftn}(K(\theta)u_1)|` from ``eigvals``, shown
    over the grid with zero frequency at the centre. Multi-channel: the modulus of each
    entry :math:`|\hat K_{oc}(\xi)|` of the symbol (each block's eigenvalues). Every panel
    uses the same colour scale (or the same axis), so that they can be compared. A pooled
    convolution (``--pool``) shows the spectrum of its convolution, before the pooling.
    """
    panels = spectrum_panels(kernel, theta)
    if panels is None:
        return None
    conv = _conv_of(kernel)
    ncol, nrow, figsize = _grid_of_panels(len(panels), 1.7, extra_width=0.8)
    fig = _figure(*figsize)
    axes = np.atleast_1d(fig.subplots(nrow, ncol, squeeze=False)).ravel()
    vmax = max(float(lam.max()) for _, lam in panels) or 1.0
    im = None
    for ax, (title, lam) in zip(axes, panels):
        if lam.ndim == 1:
            ax.plot(np.arange(lam.size) - lam.size // 2, lam)
            ax.set_ylim(0, 1.05 * vmax)
        else:
            img = lam if lam.ndim == 2 else lam[lam.shape[0] // 2]
            im = ax.imshow(img, cmap="viridis", vmin=0.0, vmax=vmax)
            ax.set_xticks([])
            ax.set_yticks([])
        ax.set_title(title, fontsize=8)
    for ax in axes[len(panels) :]:
        ax.axis("off")
    if im is not None:
        fig.colorbar(im, ax=list(axes), shrink=0.8, label="|λ|")
    pooled = "before the pooling; " if conv is not kernel else ""
    title = f"spectrum |λ| of the learned periodic convolution\n({pooled}zero frequency at the centre)"
    fig.suptitle(title, fontsize=10)
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
