"""The nested-dissection route of verified positive definiteness (structops.solvers._dissection).

References: the dense matrix ``kernel.matrix`` (its Gram ``KᵀK`` and its float64 SVD norm) at
the same rounded weights, and the banded factorisation of :mod:`structops.solvers._verified`.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import structops
from structops.solvers import EstimateWarning, certified_norm_bound, spectral_norm
from structops.solvers._dissection import conv_gram, dissection, dissection_certifies
from structops.solvers._verified import MAX_DISSECTION_FLOPS, verified_upper

#: geometries (grid, stencil, keywords) across boundaries, stride, dilation, groups, padding and 1-3 axes
GEOMETRIES = {
    "reflect": ((9, 7), 3, {"bc": "reflect"}),
    "replicate": ((8, 9), (3, 5), {"bc": "replicate"}),
    "stride": ((9, 8), 3, {"bc": "reflect", "stride": 2}),
    "dilation": ((11, 9), 3, {"bc": "replicate", "dilation": 2}),
    "groups": ((7, 8), 3, {"bc": "reflect", "groups": 2}),
    "padding": ((8, 7), 3, {"bc": "zero", "padding": 2}),
    "line": (13, 5, {"bc": "replicate"}),
    "volume": ((5, 4, 6), 3, {"bc": "reflect"}),
}


def _layer(name: str, seed: int, dtype=np.float64):
    grid, stencil, options = GEOMETRIES[name]
    rng = np.random.default_rng(seed)
    cin, cout = (2 * int(c) for c in rng.integers(1, 3, 2))
    kernel = structops.Conv(grid, stencil, in_channels=cin, out_channels=cout, **options)
    scale = 10.0 ** rng.uniform(-3, 3)
    return kernel, (scale * rng.standard_normal(kernel.nparams)).astype(dtype)


def _gram(kernel, theta64):
    return conv_gram(kernel.geometry, kernel.as_convolution().weights(theta64))


@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_gram_blocks_are_the_dense_gram(name, close):
    # KᵀK from the dense matrix, reordered pixel-major with the channels innermost
    kernel, theta = _layer(name, 0)
    K = kernel.matrix(theta)
    geo = kernel.geometry
    npx, c = int(np.prod(geo.grid)), geo.cin
    order = np.arange(c * npx).reshape(c, npx).T.ravel()
    dense = (K.T @ K)[np.ix_(order, order)].reshape(npx, c, npx, c)
    gram = _gram(kernel, theta)
    pairs, blocks = gram.blocks(np.arange(npx))
    assembled = np.zeros_like(dense)
    assembled[pairs[:, 0], :, pairs[:, 1], :] = blocks
    close(assembled, dense, np.float64, size=int(np.prod(kernel.geometry.stencil)) ** 2)
    first, second = np.unravel_index(pairs[:, 0], geo.grid), np.unravel_index(pairs[:, 1], geo.grid)
    apart = np.abs(np.array(first) - np.array(second))
    assert tuple(apart.max(axis=1)) == gram.reach


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_dissection_certifies_just_above_the_norm_and_refuses_just_below(name, dtype):
    for seed in range(2):
        kernel, theta = _layer(name, seed, dtype)
        theta64 = theta.astype(np.float64)
        truth = float(np.linalg.norm(kernel.matrix(theta64), 2))
        gram = _gram(kernel, theta64)
        tree = dissection(gram)
        assert tree is not None and len(tree.own) > 1
        bound = dissection_certifies(gram, tree, (truth * (1 + 1e-4)) ** 2)
        assert bound is not None and truth <= bound <= truth * (1 + 1e-4) * (1 + 1e-9), (name, seed)
        # a wrong t, below the norm squared, must fail: tI - KᵀK is indefinite
        assert dissection_certifies(gram, tree, (truth * (1 - 1e-4)) ** 2) is None, (name, seed)


@pytest.mark.parametrize("name", ["reflect", "stride", "groups", "line"])
def test_dissection_agrees_with_the_banded_factorisation(name):
    # the same decision for trial values on both sides of the norm (budget=0: the banded route)
    kernel, theta = _layer(name, 3)
    truth = float(np.linalg.norm(kernel.matrix(theta), 2))
    gram = _gram(kernel, theta)
    tree = dissection(gram)
    for delta in (-1e-2, -1e-5, 1e-5, 1e-2):
        t = (truth * (1 + delta)) ** 2
        nested = dissection_certifies(gram, tree, t)
        banded = verified_upper(kernel, theta, truth * (1 + delta), deltas=(0.0,), budget=0)
        assert (nested is None) == (banded is None) == (delta < 0), (name, delta)
        if nested is not None:
            assert abs(nested - banded) <= 1e-8 * truth


@pytest.mark.slow
def test_the_route_takes_the_dissection_for_16_channels_and_holds():
    # 16->16 on 12x12: the dissection is cheaper than the band; the bound holds against the dense SVD
    kernel = structops.Conv((12, 12), 3, bc="replicate", in_channels=16, out_channels=16)
    theta = kernel.random_theta(5)
    truth = np.linalg.norm(kernel.matrix(theta), 2)
    gram = _gram(kernel, theta)
    tree = dissection(gram)
    # the band: the Gram reaches 2 rows and 2 pixels, (2 * 12 + 2) pixels of 16 channels
    assert tree is not None and tree.flops < kernel.shape[1] * ((2 * 12 + 3) * 16) ** 2
    bound = certified_norm_bound(kernel, theta, dense_limit=0)
    assert truth <= bound <= truth * 1.02


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bc", ["reflect", "replicate"])
@pytest.mark.parametrize("channels", [8, 12])
def test_dissection_bound_holds_on_random_layers(channels, bc, dtype):
    # 16x16: the banded route would cost more than the dissection, which norm_upper therefore takes
    for seed in range(2):
        kernel = structops.Conv((16, 16), 3, bc=bc, in_channels=channels, out_channels=channels)
        theta = kernel.random_theta(seed, dtype=dtype)
        truth = np.linalg.norm(kernel.matrix(theta.astype(np.float64)), 2)
        tree = dissection(_gram(kernel, theta.astype(np.float64)))
        assert tree is not None and tree.flops < kernel.shape[1] * ((2 * 16 + 3) * channels) ** 2
        bound = certified_norm_bound(kernel, theta, dense_limit=0)
        assert truth <= bound <= truth * 1.02, (channels, bc, seed)


@pytest.mark.slow
@pytest.mark.parametrize("bc", ["reflect", "replicate"])
def test_64_channel_certificate_on_32x32_is_within_2_percent_of_the_lanczos_lower_bound(bc):
    # the case: too large for a dense SVD, so against the guaranteed Lanczos lower bound
    kernel = structops.Conv((32, 32), 3, bc=bc, in_channels=64, out_channels=64)
    theta = kernel.random_theta(0)
    gram = _gram(kernel, theta)
    tree = dissection(gram)
    assert tree is not None and tree.flops <= MAX_DISSECTION_FLOPS
    upper = certified_norm_bound(kernel, theta, dense_limit=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EstimateWarning)
        lower = spectral_norm(kernel, theta, tol=1e-6, dense_limit=0, full_output=True).lower  # a Ritz value
    assert lower <= upper <= 1.02 * lower
