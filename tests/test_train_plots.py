"""Plots of a training run: one colour scale across spectrum panels, figures filled, uncluttered log ticks."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from matplotlib.figure import Figure

import structops
from structops.train import plots


@pytest.fixture
def saved(monkeypatch):
    """The figures the plotting functions save (instead of writing files)."""
    figures = []
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: figures.append(self))
    return figures


def _panel_fraction(fig) -> float:
    fig.canvas.draw()
    w, h = fig.get_size_inches() * fig.dpi
    return sum(ax.get_window_extent().width * ax.get_window_extent().height for ax in fig.axes) / (w * h)


@pytest.mark.parametrize("pooled", [False, True])
def test_spectrum_panels_share_one_colour_scale(pooled, saved, rng):
    conv = structops.Conv((8, 8), 3, bc="periodic", out_channels=4)
    kernel = structops.Chain(structops.AvgPool((8, 8), 2, channels=4), conv) if pooled else conv
    theta = rng.standard_normal(conv.nparams)
    theta[:9] *= 10  # one channel much stronger: separate scales would hide it
    assert plots.plot_spectrum(kernel, theta, "unused.png") is not None  # pooled too
    (fig,) = saved
    images = [im for ax in fig.axes for im in ax.get_images()]
    assert len(images) == 4
    assert len({im.get_clim() for im in images}) == 1  # one scale...
    vmax = max(lam.max() for _, lam in plots.spectrum_panels(kernel, theta))
    assert images[0].get_clim() == (0.0, pytest.approx(vmax))  # ...that holds every panel
    assert len(fig.axes) == 5  # the four panels and one colour bar
    assert _panel_fraction(fig) > 0.35


def test_stencil_figure_uses_its_area(saved, rng):
    conv = structops.Conv((8, 8), 3, out_channels=8)
    plots.plot_kernel(conv, rng.standard_normal(conv.nparams), "unused.png")
    (fig,) = saved
    assert _panel_fraction(fig) > 0.35


@pytest.mark.parametrize(
    "loss",
    [np.linspace(2.29, 2.19, 3), np.geomspace(2.3, 0.05, 15), np.geomspace(2.3, 1e-6, 40), np.array([1.5])],
)
def test_loss_axis_has_few_plain_tick_labels(loss):
    n = loss.size
    history = {"epoch": np.arange(1, n + 1), "loss": loss, "train_acc": np.ones(n), "test_acc": np.ones(n)}
    fig = plots.curves_figure(history)
    fig.canvas.draw()
    ax = fig.axes[0]
    lo, hi = ax.get_ylim()
    major = [t.get_text() for t, v in zip(ax.get_yticklabels(), ax.get_yticks()) if lo <= v <= hi and t.get_text()]
    minor = [t.get_text() for t in ax.get_yticklabels(minor=True) if t.get_text()]
    assert 1 <= len(major) <= 8, major
    assert minor == []
    assert all("$" not in t for t in major)  # plain numbers, no mathtext exponents
