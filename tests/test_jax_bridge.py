"""structops.jax: every family a JAX-differentiable function (skipped without jax).

``jax.grad`` in ``theta`` and ``x`` is checked against the family's numpy Jacobian transposes
(``jac(...).H @ w`` and ``apply(..., transpose=True)``), under ``jax.jit``, in float32 and, with
``jax_enable_x64``, in float64.
"""

from __future__ import annotations

import numpy as np
import pytest

import structops
from structops.testing import default_rtol

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
sj = pytest.importorskip("structops.jax")

FAMILIES = {
    "Conv-2d-reflect-s2": lambda: structops.Conv((5, 4), 3, bc="reflect", stride=2, in_channels=2, out_channels=3),
    "Conv-1d-periodic-fft": lambda: structops.Conv((8,), 3, bc="periodic", method="fft"),
    "Chain-AvgPool-Conv": lambda: structops.Chain(
        structops.AvgPool((4, 4), 2, channels=2), structops.Conv((4, 4), 3, out_channels=2)
    ),
    "MMatrixConv": lambda: structops.MMatrixConv((4, 4), 3, channels=2),
    "SeparableConv": lambda: structops.SeparableConv((5, 4), (3, 3), out_channels=2),
    "Wavelet": lambda: structops.Wavelet((8,)),
    "Softplus-MMatrix": lambda: structops.Softplus(structops.MMatrix(3)),
    "Dense": lambda: structops.Dense(3, 4),
    "CayleyConv": lambda: structops.CayleyConv((4, 3), 3, channels=2),
}


@pytest.fixture(params=[np.float32, np.float64], ids=["float32", "float64"])
def precision(request):
    """The dtype under test; float64 runs with ``jax_enable_x64`` (restored afterwards)."""
    dtype = np.dtype(request.param)
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", dtype == np.float64)
    yield dtype
    jax.config.update("jax_enable_x64", previous)


@pytest.mark.parametrize("name", list(FAMILIES))
@pytest.mark.parametrize("transpose", [False, True], ids=["K", "KT"])
def test_jit_grad_in_theta_and_x_are_the_jacobian_transposes(name, transpose, precision, rng):
    k = FAMILIES[name]()
    x_shape, y_shape = k._io_shapes(transpose)
    theta = k.random_theta(rng, precision)
    x = rng.standard_normal((3, *x_shape)).astype(precision)
    w = rng.standard_normal((3, *y_shape)).astype(precision)

    def loss(t, z):
        return jnp.sum(sj.apply(k, t, z, transpose=transpose) * w)

    y = jax.jit(lambda t, z: sj.apply(k, t, z, transpose=transpose))(theta, x)
    grad_theta, grad_x = jax.jit(jax.grad(loss, argnums=(0, 1)))(theta, x)
    assert y.dtype == grad_theta.dtype == grad_x.dtype == precision
    rt = default_rtol(precision, max(k.shape))
    np.testing.assert_allclose(np.asarray(y), k.apply(theta, x, transpose=transpose), rtol=rt, atol=rt)
    expected_theta = k.jac(theta, x, transpose=transpose).H @ w.ravel()
    expected_x = k.apply(theta, w, transpose=not transpose)
    scale = np.linalg.norm(expected_theta) + np.linalg.norm(expected_x)
    assert np.linalg.norm(np.asarray(grad_theta) - expected_theta) <= rt * scale
    assert np.linalg.norm(np.asarray(grad_x) - expected_x) <= rt * scale


def test_vmap_over_batches_and_value_and_grad(precision, rng):
    k = structops.Conv((6,), 3, out_channels=2)
    theta = jnp.asarray(k.random_theta(rng, precision))
    xs = jnp.asarray(rng.standard_normal((4, 2, 1, 6)).astype(precision))
    batched = jax.vmap(lambda z: sj.apply(k, theta, z))(xs)
    np.testing.assert_allclose(
        np.asarray(batched), np.asarray(sj.apply(k, theta, xs.reshape(8, 1, 6))).reshape(4, 2, 2, 6)
    )
    value, grad = jax.value_and_grad(lambda t: jnp.sum(sj.apply(k, t, xs[0]) ** 2))(theta)
    assert np.isfinite(float(value)) and grad.shape == (k.nparams,)


def test_bad_input_names_the_argument_and_what_was_expected():
    k = structops.Conv((5, 5), 3)
    theta, x = jnp.zeros(9, jnp.float32), jnp.zeros((2, 1, 5, 5), jnp.float32)
    with pytest.raises(TypeError, match="`x` has dtype float16 but `theta` has dtype float32"):
        sj.apply(k, theta, x.astype(jnp.float16))
    with pytest.raises(
        ValueError, match=r"`x` must hold examples .* \(n, 1, 5, 5\) or \(n, 25\), got shape \(2, 5, 5\)"
    ):
        sj.apply(k, theta, jnp.zeros((2, 5, 5), jnp.float32))
    with pytest.raises(ValueError, match=r"`theta` must have shape \(9,\) .* got shape \(8,\)"):
        sj.apply(k, jnp.zeros(8, jnp.float32), x)
    with pytest.raises(TypeError, match="`theta` must have dtype float32 or float64, got dtype int32"):
        sj.apply(k, jnp.zeros(9, jnp.int32), x.astype(jnp.int32))
