"""The fast projection of plain convolutions (structops.solvers._fastclip) is certified and matches the reference path.

References: numpy.fft (the blocks and the inverse transform), numpy's SVD of every block, the dense
SVD of ``kernel.matrix`` at the same rounded weights, and project_spectral_norm's FFT path itself
(the fast path switched off).
"""

from __future__ import annotations

import numpy as np
import pytest

import structops
import structops.solvers.lipschitz as lipschitz
from structops.solvers import _fastclip as fast
from structops.solvers import certified_norm_bound, project_spectral_norm
from structops.testing import default_rtol


def _stencil(rng, m: int, n: int, stencil: tuple[int, ...]) -> np.ndarray:
    return rng.standard_normal((m, n, *stencil))


def _reference_blocks(w: np.ndarray, grid: tuple[int, ...]) -> np.ndarray:
    """numpy's rfftn of the stencil placed with tap ``j`` at offset ``j - s//2`` on the grid, as ``(freq, m, n)``."""
    d = len(grid)
    cols = np.zeros((*w.shape[:2], *grid))
    for tap in np.ndindex(*w.shape[2:]):
        cols[(slice(None), slice(None), *((j - s // 2) % g for j, s, g in zip(tap, w.shape[2:], grid)))] += w[
            (slice(None), slice(None), *tap)
        ]
    spec = np.fft.rfftn(cols, axes=tuple(range(2, 2 + d)))
    return np.moveaxis(spec, (0, 1), (-2, -1)).reshape(-1, *w.shape[:2])


GRIDS = {"1d-odd": ((9,), (3,)), "2d": ((8, 6), (3, 3)), "2d-odd": ((7, 5), (3, 1)), "3d": ((4, 5, 6), (3, 3, 3))}


@pytest.mark.parametrize("case", list(GRIDS), ids=list(GRIDS))
def test_blocks_and_inverse_match_numpy_fft(case, rng):
    grid, stencil = GRIDS[case]
    w = _stencil(rng, 3, 2, stencil)
    tw = fast.twiddles(grid, stencil)
    blocks = fast.symbol(w, tw)
    reference = _reference_blocks(w, grid)
    # item 1 of the module notes, plus numpy's FFT error
    assert (
        np.abs(blocks - reference).max()
        <= fast.symbol_error(w) + default_rtol(np.float64, np.prod(grid)) * np.abs(w).sum()
    )
    # a change of some blocks (conjugate-pair columns included) back to the taps: numpy's irfftn at the taps
    index = np.sort(rng.choice(len(blocks), size=len(blocks) // 2, replace=False))
    change = rng.standard_normal((len(index), 3, 2)) + 1j * rng.standard_normal((len(index), 3, 2))
    half = np.zeros_like(reference)
    half[index] = change
    half_grid = (*grid[:-1], grid[-1] // 2 + 1)
    full = np.fft.irfftn(
        np.moveaxis(half.reshape(*half_grid, 3, 2), (-2, -1), (0, 1)), s=grid, axes=(2, 3, 4)[: len(grid)]
    )
    taps = np.ix_(*(np.mod(np.arange(s) - s // 2, g) for s, g in zip(stencil, grid)))
    expected = full[(slice(None), slice(None), *taps)]
    np.testing.assert_allclose(fast.stencil_change(change, index, tw), expected, atol=1e-13 * np.abs(change).sum())


def _blocks_with_top(rng, count: int, m: int, n: int, tops: np.ndarray) -> np.ndarray:
    """Blocks ``U diag(σ) V^H`` with the largest singular value ``tops[i]`` (the others below 0.9 of it)."""
    out = []
    for top in tops:
        U, _ = np.linalg.qr(rng.standard_normal((m, n)) + 1j * rng.standard_normal((m, n)))
        V, _ = np.linalg.qr(rng.standard_normal((n, n)) + 1j * rng.standard_normal((n, n)))
        sigma = np.concatenate([[top], top * rng.uniform(0.1, 0.9, n - 1)])
        out.append((U * sigma) @ np.conj(V.T))
    return np.array(out)


ACCELERATORS = ["numba", "numpy"] if structops.accelerator().startswith("numba") else ["numpy"]


@pytest.mark.parametrize("accelerator", ACCELERATORS)  # the numba Cholesky, or LAPACK's potrf block by block
@pytest.mark.parametrize("shape", [(16, 16), (7, 3), (5, 1)], ids=["square", "tall", "column"])
def test_within_never_passes_a_block_above_t_and_passes_those_clearly_below(shape, accelerator, rng):
    m, n = shape
    t = 1.3
    relative = np.array([-0.5, -1e-3, -1e-9, 1e-11, 1e-6, 1e-2])
    blocks = _blocks_with_top(rng, len(relative), m, n, t * (1 + relative))
    exact = np.linalg.svd(blocks, compute_uv=False)[:, 0]
    with structops.set_accelerator(accelerator):
        passed = fast.within(blocks, t, 0.0)
        # the bound β on the blocks' own error counts against them
        assert not np.any(fast.within(blocks, t, 1e-6 * t)[relative > -1e-6])
    assert not np.any(passed & (exact > t))  # sound
    assert np.all(passed[relative <= -1e-9])  # tight to 1e-9 relative
    parts = fast.decompose(blocks, 0.0)
    assert np.all(parts.upper >= exact) and np.all(parts.upper <= exact * (1 + 1e-12))


def test_change_bound_and_rescaling_hold_for_every_block(rng):
    grid, stencil = (10, 9), (3, 3)
    tw = fast.twiddles(grid, stencil)
    delta = 1e-3 * _stencil(rng, 4, 3, stencil)
    assert np.linalg.svd(fast.symbol(delta, tw), compute_uv=False)[:, 0].max() <= fast.change_bound(delta)
    for dtype in (np.float32, np.float64):
        w = _stencil(rng, 4, 3, stencil).astype(dtype).astype(np.float64)
        norm = float(fast.decompose(fast.symbol(w, tw), fast.symbol_error(w)).upper.max())
        scaled = fast.rescaled(w, norm, 0.7, dtype)
        assert np.array_equal(scaled, scaled.astype(dtype).astype(np.float64))
        assert np.linalg.svd(fast.symbol(scaled, tw), compute_uv=False)[:, 0].max() <= 0.7


#: (grid, stencil, out, in, bc): tall, wide, square, single channel; 1-D to 3-D; every boundary of the fast path
LAYERS = {
    "zero-2d-tall": ((9, 8), (3, 3), 3, 2, "zero"),
    "zero-2d-wide": ((8, 8), (3, 3), 2, 4, "zero"),
    "periodic-2d-square": ((8, 7), (3, 3), 3, 3, "periodic"),
    "valid-1d-single": ((16,), (5,), 1, 1, "valid"),
    "zero-3d-square": ((5, 4, 4), (3, 3, 3), 2, 2, "zero"),
    "periodic-1d-column": ((12,), (3,), 4, 1, "periodic"),
}


def _reference_projection(monkeypatch, kernel, theta, bound):
    with monkeypatch.context() as m:
        m.setattr(lipschitz, "applies", lambda kernel, grid: False)
        return project_spectral_norm(kernel, theta, bound)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("case", list(LAYERS), ids=list(LAYERS))
def test_fast_projection_is_certified_and_agrees_with_the_fft_path(case, dtype, monkeypatch, rng):
    grid, stencil, cout, cin, bc = LAYERS[case]
    kernel = structops.Conv(grid, stencil, bc=bc, in_channels=cin, out_channels=cout)
    grid_of = lipschitz._clip_grid(kernel)
    assert grid_of is not None and fast.applies(kernel, grid_of)
    theta = kernel.random_theta(rng).astype(dtype)
    truth = np.linalg.norm(kernel.matrix(theta.astype(np.float64)), 2)
    assert project_spectral_norm(kernel, theta, 1.001 * certified_norm_bound(kernel, theta)) is theta
    for factor in (0.5, 0.97):
        bound = factor * truth
        projected = project_spectral_norm(kernel, theta, bound)
        assert projected.dtype == dtype
        dense = np.linalg.norm(kernel.matrix(projected.astype(np.float64)), 2)
        assert dense <= certified_norm_bound(kernel, projected) <= bound
        plain = theta * (bound / certified_norm_bound(kernel, theta))
        assert np.linalg.norm(projected - theta) <= np.linalg.norm(plain - theta) * (1 + 10 * np.finfo(dtype).eps)
        reference = _reference_projection(monkeypatch, kernel, theta, bound)
        # the two differ by their final rescalings: the fast one aims at L - 4A (A the certificate's round-off
        # allowance) and allows for the rounding to the dtype
        margin = bound - fast.target(theta.astype(np.float64).reshape(cout, cin, *stencil), grid_of, bound)
        tol = 4 * margin / bound + 2 * fast.room(theta.astype(np.float64).reshape(cout, cin, *stencil), bound)
        tol += 16 * np.finfo(dtype).eps
        assert np.linalg.norm(projected - reference) <= tol * np.linalg.norm(reference)
        assert project_spectral_norm(kernel, projected, bound) is projected  # inside: unchanged


def test_a_layer_just_outside_or_at_the_bound_after_a_training_step(rng):
    kernel = structops.Conv((10, 10), (3, 3), in_channels=4, out_channels=4)
    theta = kernel.random_theta(rng).astype(np.float32)
    projected = project_spectral_norm(kernel, theta, 1.0)
    for _step in range(3):  # an Adam-like step: every weight moves by the learning rate
        theta = (projected + 1e-3 * np.sign(rng.standard_normal(projected.shape))).astype(np.float32)
        projected = project_spectral_norm(kernel, theta, 1.0)
        assert np.linalg.norm(kernel.matrix(projected.astype(np.float64)), 2) <= certified_norm_bound(kernel, projected)
        assert certified_norm_bound(kernel, projected) <= 1.0
    # within the round-off margin of the bound: the certificate decides, and the layer is left as it is
    at = float(certified_norm_bound(kernel, projected))
    assert project_spectral_norm(kernel, projected, at) is projected


def test_layers_outside_the_fast_path_keep_the_fft_path(rng):
    strided = structops.Conv((10, 10), (3, 3), in_channels=2, out_channels=2, stride=2)
    grouped = structops.Conv((10, 10), (3, 3), in_channels=2, out_channels=2, groups=2)
    symmetric = structops.SymmetricConv((10, 10), (3, 3))
    for kernel in (strided, grouped, symmetric):
        assert not fast.applies(kernel, lipschitz._clip_grid(kernel))
        theta = kernel.random_theta(rng)
        projected = project_spectral_norm(kernel, theta, 0.5)
        assert np.linalg.norm(kernel.matrix(projected), 2) <= certified_norm_bound(kernel, projected) <= 0.5


@pytest.mark.parametrize("batch", ["quick", pytest.param("many", marks=pytest.mark.slow)])
def test_the_bound_holds_after_projection_on_random_layers(batch):
    rng = np.random.default_rng(11)
    for _ in range(6 if batch == "quick" else 200):
        d = int(rng.integers(1, 3))
        stencil = tuple(int(s) for s in rng.choice([1, 2, 3, 5], d))
        grid = tuple(int(rng.integers(max(s, 3), 10)) for s in stencil)
        bc = str(rng.choice(["zero", "periodic", "valid"]))
        cout, cin = (int(c) for c in rng.integers(1, 4, 2))
        kernel = structops.Conv(grid, stencil, bc=bc, in_channels=cin, out_channels=cout)
        dtype = rng.choice([np.float32, np.float64])
        theta = (kernel.random_theta(rng) * rng.uniform(0.2, 5)).astype(dtype)
        bound = float(rng.uniform(0.3, 2.0))
        projected = project_spectral_norm(kernel, theta, bound)
        exact = np.linalg.norm(kernel.matrix(projected.astype(np.float64)), 2)
        assert exact <= certified_norm_bound(kernel, projected) <= bound, (grid, stencil, bc, cout, cin, dtype)
