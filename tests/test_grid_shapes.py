"""Grid-shaped images in ``op(θ) @``, ``apply`` and ``jac`` of one-channel families (issue 18).

A one-channel family has ``dims = (1, *grid)`` (pylops' convention, kept for everything
else); the grid alone, e.g. ``(H, W)``, is accepted too and gives a grid-shaped result, as
pylops' own ``Convolve2D`` does.
"""

from __future__ import annotations

import numpy as np
import pylops
import pytest

from structops import Conv, SymmetricConv

from ._helpers import atol_for

CASES = [
    (Conv((6, 7), 3), (6, 7), (6, 7)),
    (Conv((6, 7), (3, 2), bc="periodic"), (6, 7), (6, 7)),
    (Conv((6, 7), 3, stride=2), (6, 7), (3, 4)),
    (Conv((4, 5, 3), 3, bc="reflect"), (4, 5, 3), (4, 5, 3)),
    (SymmetricConv((5, 6), 3, bc="symmetric"), (5, 6), (5, 6)),
    (Conv((9,), 3), (9,), (9,)),
]
IDS = ["conv2d", "periodic", "stride2", "conv3d", "symmetric", "conv1d"]


@pytest.mark.parametrize(("kernel", "grid", "out_grid"), CASES, ids=IDS)
def test_op_matmul_takes_and_returns_the_grid(kernel, grid, out_grid, rng, dtype):
    theta = kernel.random_theta(rng, dtype)
    img = rng.standard_normal(grid).astype(dtype)
    op = kernel.op(theta)
    y = op @ img
    assert y.shape == out_grid
    M = kernel.matrix(theta)
    tol = 10 * np.finfo(dtype).eps * np.abs(M).sum()
    np.testing.assert_allclose(y.ravel(), M @ img.ravel(), atol=tol)
    w = rng.standard_normal(out_grid).astype(dtype)
    z = op.H @ w
    assert z.shape == grid
    np.testing.assert_allclose(z.ravel(), M.T @ w.ravel(), atol=tol)


@pytest.mark.parametrize(("kernel", "grid", "out_grid"), CASES, ids=IDS)
def test_pylops_conventions_are_kept(kernel, grid, out_grid, rng):
    theta = kernel.random_theta(rng)
    op = kernel.op(theta)
    x = rng.standard_normal(kernel.in_shape)
    assert (op @ x).shape == kernel.out_shape  # dims-shaped in, dimsd-shaped out
    assert (op @ x.ravel()).shape == (kernel.shape[0],)  # flat in, flat out
    X = rng.standard_normal((kernel.shape[1], 3))
    assert (op @ X).shape == (kernel.shape[0], 3)  # a block of columns


def test_grid_shaped_image_behaves_as_pylops_convolve2d(rng):
    stencil = rng.standard_normal((3, 3))
    img = rng.standard_normal((8, 9))
    theirs = pylops.signalprocessing.Convolve2D((8, 9), h=stencil, offset=(1, 1)) @ img
    ours = Conv((8, 9), 3).op(stencil.ravel()) @ img
    assert ours.shape == theirs.shape == (8, 9)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=atol_for(theirs))


@pytest.mark.parametrize(("kernel", "grid", "out_grid"), CASES, ids=IDS)
def test_apply_returns_the_grid_for_a_grid(kernel, grid, out_grid, rng):
    theta = kernel.random_theta(rng)
    img = rng.standard_normal(grid)
    y = kernel.apply(theta, img)
    assert y.shape == out_grid
    np.testing.assert_array_equal(y, kernel.apply(theta, img[None])[0].reshape(out_grid))
    if len(grid) > 1:  # in 1-D, (1, n) is a batch of one flat example
        assert kernel.apply(theta, img.reshape(kernel.in_shape)).shape == kernel.out_shape
    back = kernel.apply(theta, rng.standard_normal(out_grid), transpose=True)
    assert back.shape == grid


@pytest.mark.parametrize(("kernel", "grid", "out_grid"), CASES, ids=IDS)
def test_jac_takes_the_single_example_that_apply_takes(kernel, grid, out_grid, rng):
    theta = kernel.random_theta(rng)
    img = rng.standard_normal(grid)
    J = kernel.jac(theta, img)
    batch = kernel.jac(theta, img.reshape(1, -1))
    assert J.shape == batch.shape and J.dimsd == out_grid
    v = rng.standard_normal(kernel.nparams)
    np.testing.assert_allclose((J @ v).ravel(), batch.matvec(v), rtol=0, atol=atol_for(batch.matvec(v)))
    w = rng.standard_normal(out_grid)
    np.testing.assert_allclose(
        J.H @ w.ravel(), batch.rmatvec(w.ravel()), rtol=0, atol=atol_for(batch.rmatvec(w.ravel()))
    )
    np.testing.assert_allclose(
        J.per_example(w), batch.per_example(w.ravel()), rtol=0, atol=atol_for(batch.per_example(w.ravel()))
    )
    # finite differences of apply on the grid-shaped image
    h = 1e-6
    fd = (kernel.apply(theta + h * v, img) - kernel.apply(theta - h * v, img)) / (2 * h)
    np.testing.assert_allclose(J @ v, fd, rtol=1e-6, atol=1e-8)
    if len(grid) > 1:
        assert kernel.jac(theta, img.reshape(kernel.in_shape)).dimsd == kernel.out_shape


def test_several_channels_keep_the_channel_axis(rng):
    k = Conv((5, 6), 3, in_channels=2)
    theta = k.random_theta(rng)
    x = rng.standard_normal((2, 5, 6))
    assert (k.op(theta) @ x).shape == (1, 5, 6)
    assert k.apply(theta, x).shape == (1, 5, 6)
    assert k.jac(theta, x).dimsd == (1, 5, 6)
    with pytest.raises(ValueError):
        k.op(theta) @ rng.standard_normal((5, 6))  # a grid is one channel; this family wants two


def test_spectral_multipliers_take_a_grid_shaped_image_too(rng):
    from structops.solvers import inverse, tikhonov

    k = Conv((6, 7), 3, bc="periodic")
    theta = np.array([0.0, -1.0, 0.0, -1.0, 5.0, -1.0, 0.0, -1.0, 0.0])
    img = rng.standard_normal((6, 7))
    y = k.op(theta) @ img
    back = inverse(k, theta) @ y
    assert back.shape == (6, 7)
    np.testing.assert_allclose(back, img, rtol=0, atol=atol_for(img))
    assert tikhonov(k, theta, y, alpha=0.0).shape == (6, 7)
