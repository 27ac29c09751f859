"""structops.data.phantom and gaussian_stencil against their definitions, pixel by pixel."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from structops.data import anisotropic_gaussian_stencil, gaussian_stencil, phantom
from structops.testing import default_rtol


@pytest.mark.parametrize("size", [1, 10, 33])
@pytest.mark.parametrize("ring", [True, False])
def test_phantom_paints_each_shape_over_the_previous(size, ring):
    img = phantom(size, ring=ring)
    assert img.shape == (size, size) and img.dtype == np.float64
    for i, j in itertools.product(range(size), repeat=2):
        x, y = j / size, i / size
        want = 0.1
        if (x - 0.35) ** 2 + (y - 0.4) ** 2 < 0.2**2:
            want = 0.8
        if abs(x - 0.7) < 0.12 and abs(y - 0.65) < 0.12:
            want = 0.5
        if abs(x - 0.5) < 0.4 and abs(y - 0.88) < 0.03:
            want = 1.0
        if ring and 0.06**2 < (x - 0.75) ** 2 + (y - 0.2) ** 2 < 0.1**2:
            want = 0.9
        assert img[i, j] == want, (i, j)


@pytest.mark.parametrize(("size", "sigma", "ndim"), [(1, 1.0, 2), (5, 1.0, 1), (9, 1.5, 2), (4, 0.7, 3)])
def test_gaussian_stencil_is_the_normalised_gaussian_centred_at_size_over_2(size, sigma, ndim):
    g = gaussian_stencil(size, sigma, ndim)
    assert g.shape == (size,) * ndim
    raw = np.zeros(g.shape)
    for j in itertools.product(range(size), repeat=ndim):
        raw[j] = math.exp(-sum((jj - size // 2) ** 2 for jj in j) / (2 * sigma**2))
    np.testing.assert_allclose(g, raw / raw.sum(), rtol=1e-14, atol=0)
    assert g.sum() == pytest.approx(1.0, rel=1e-14)


def test_synthetic_validation():
    with pytest.raises(TypeError, match=r"`size` must be an integer, got 4\.0"):
        phantom(4.0)
    with pytest.raises(ValueError, match=r"`size` must be an integer >= 1, got 0"):
        phantom(0)
    with pytest.raises(ValueError, match=r"`sigma` must be a finite number > 0, got 0\.0"):
        gaussian_stencil(3, 0.0)
    with pytest.raises(ValueError, match=r"`sigma` must be a finite number > 0, got nan"):
        gaussian_stencil(3, float("nan"))
    with pytest.raises(TypeError, match=r"`sigma` must be a real number, got '1'"):
        gaussian_stencil(3, "1")
    with pytest.raises(ValueError, match=r"`ndim` must be an integer >= 1, got 0"):
        gaussian_stencil(3, 1.0, ndim=0)


@pytest.mark.parametrize("degrees", [0.0, 90.0])
def test_anisotropic_gaussian_is_separable_along_the_grid_axes(degrees):
    """Unrotated: rows Gaussian with σ₂ times columns Gaussian with σ₁; rotated by 90°: the transpose."""
    g = anisotropic_gaussian_stencil(9, (3.0, 1.0), degrees)
    rows, cols = gaussian_stencil(9, 1.0, ndim=1), gaussian_stencil(9, 3.0, ndim=1)
    want = np.outer(rows, cols) if degrees == 0 else np.outer(cols, rows)
    tol = default_rtol(np.float64, 81)
    np.testing.assert_allclose(g, want, rtol=tol, atol=tol * want.max())
    with pytest.raises(ValueError, match="sigmas"):
        anisotropic_gaussian_stencil(9, (3.0, 0.0))
