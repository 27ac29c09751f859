"""The fast certificate's pieces: the smallest embedding grid, the per-block tops, the stencil hook, one symbol.

References: dense matrices of ``structops.Conv`` built entry by entry (the periodic one on the
embedding grid, restricted), ``numpy.linalg.svd`` per block, and the float64 dense SVD.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.fft as sfft

import structops
from structops.kernels import LinearReparam
from structops.solvers import EstimateWarning, _certified, certified_norm_bound, spectral_norm
from structops.testing import default_rtol


def _embedding_rows(kernel: structops.Conv, grid: tuple[int, ...]) -> np.ndarray:
    """Rows of the periodic convolution on ``grid`` applied to the zero-embedded input (``C_L E``)."""
    periodic = structops.Conv(
        grid, kernel.stencil, bc="periodic", in_channels=kernel.in_channels, out_channels=kernel.out_channels
    )
    theta = np.random.default_rng(3).standard_normal(kernel.nparams)
    C = periodic.matrix(theta)
    inside = np.zeros((kernel.in_channels, *grid), dtype=bool)
    inside[(slice(None), *(slice(0, n) for n in kernel.grid))] = True
    return C[:, inside.ravel()], kernel.matrix(theta)


def _is_restriction(K: np.ndarray, CE: np.ndarray) -> bool:
    """Every row of ``K`` is a row of ``CE`` (the rows of ``K`` are distinct rows of ``C_L E``)."""
    scale = max(float(np.abs(K).max()), 1.0)
    distance = np.abs(K[:, None, :] - CE[None, :, :]).max(axis=-1)
    return bool(np.all(distance.min(axis=1) <= default_rtol(np.float64, K.shape[1]) * scale))


@pytest.mark.parametrize("bc", ["zero", "valid"])
@pytest.mark.parametrize("seed", range(6))
def test_the_smallest_embedding_grid_holds_the_layer_and_one_less_does_not(bc, seed):
    rng = np.random.default_rng(seed)
    ndim = int(rng.integers(1, 3))
    stencil = tuple(int(s) for s in rng.integers(2, 6, ndim))
    grid = tuple(int(rng.integers(s + 1, 9)) for s in stencil)
    stride = tuple(int(s) for s in rng.integers(1, 3, ndim)) if seed % 2 else (1,) * ndim
    kernel = structops.Conv(grid, stencil, bc=bc, stride=stride, in_channels=2, out_channels=2)
    L = _certified.embedding_grid(kernel)
    CE, K = _embedding_rows(kernel, L)
    assert _is_restriction(K, CE)
    if bc == "zero" and all(st == 1 for st in stride):
        assert L == tuple(sfft.next_fast_len(n + s // 2) for n, s in zip(grid, stencil))  # the longer reach
        smaller = (grid[0] + stencil[0] // 2 - 1, *L[1:])
        assert not _is_restriction(K, _embedding_rows(kernel, smaller)[0])  # a tap wraps onto the image


@pytest.mark.parametrize("shape", [(130, 64, 64), (7, 3, 5), (7, 5, 3), (4, 6, 1, 1), (0, 3, 3)])
def test_block_tops_are_the_largest_singular_values_of_every_block(shape):
    rng = np.random.default_rng(0)
    blocks = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    tops = _certified.block_tops(blocks)
    reference = np.linalg.svd(blocks, compute_uv=False)[..., 0] if blocks.size else np.zeros(shape[:-2])
    assert tops.shape == shape[:-2]
    np.testing.assert_allclose(tops, reference, rtol=default_rtol(np.float64, shape[-1] ** 2))


@pytest.mark.parametrize("bc", ["zero", "periodic"])
def test_a_linear_reparametrisation_of_conv_reaches_the_stencil_through_the_hook(bc):
    conv = structops.Conv((9, 8), 3, bc=bc, in_channels=2, out_channels=2)
    rng = np.random.default_rng(1)
    P = rng.standard_normal((conv.nparams, 5))
    kernel = LinearReparam(conv, P)
    phi = rng.standard_normal(5)
    assert _certified._plain_stencil(kernel, phi) is not None
    bound = certified_norm_bound(kernel, phi, dense_limit=0)
    truth = np.linalg.norm(kernel.matrix(phi), 2)
    same = certified_norm_bound(conv, P @ phi, dense_limit=0)  # the Conv at the stencil P φ
    assert truth <= bound <= same * (1 + 1e-12) + 1e-12 * np.abs(P @ phi).sum()
    if bc == "periodic":
        assert bound <= truth * (1 + 1e-10)


def test_the_bracket_reads_the_symbol_once_and_contains_the_norm(monkeypatch):
    kernel = structops.Conv((12, 10), 3, in_channels=3, out_channels=2)
    theta = np.random.default_rng(2).standard_normal(kernel.nparams)
    calls = []
    half = _certified.half_symbol
    monkeypatch.setattr(_certified, "half_symbol", lambda w, grid: calls.append(grid) or half(w, grid))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EstimateWarning)
        est = spectral_norm(kernel, theta, dense_limit=0, tol=1e-3, maxiter=30, full_output=True)
    assert len(calls) == 1
    truth = np.linalg.norm(kernel.matrix(theta), 2)
    assert est.method == "certified" and est.lower <= truth <= est.upper
    assert est.upper <= est.lower * 1.05
