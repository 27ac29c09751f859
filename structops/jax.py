r"""Every kernel family as a differentiable JAX function (the ``jax`` extra).

:func:`apply` computes :math:`K(\theta)x_i` for a batch of examples through
``jax.pure_callback`` (the family runs in numpy on the host) with a ``jax.custom_vjp``: the
cotangent :math:`W` of the output gives :math:`K(\theta)^\top W` for ``x`` and
:math:`J(\theta, X)^\top W` for ``theta`` through the family's own hooks (one host call, the
state for :math:`\theta` prepared once). It works under ``jax.jit`` and ``jax.vmap``, and in
float64 with ``jax.config.update("jax_enable_x64", True)``. Only first derivatives are
available (``jax.hessian`` raises). jax is imported by this module only.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .internal import (
    ParametricKernel,
    apply_prepared,
    as_kernel,
    check_flag,
    io_shapes,
    prepare,
    prepare_data,
    vjp_prepared,
)

__all__ = ["apply"]

_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _host_apply(kernel: ParametricKernel, transpose: bool, theta, x) -> np.ndarray:
    theta = kernel.validate_theta(np.asarray(theta))
    x = np.ascontiguousarray(x)
    y = apply_prepared(kernel, prepare(kernel, theta), x, transpose)
    return np.asarray(y, dtype=theta.dtype).reshape(x.shape[0], -1)


def _host_grads(kernel: ParametricKernel, transpose: bool, theta, x, w) -> tuple[np.ndarray, np.ndarray]:
    theta = np.asarray(theta)
    x, w = np.ascontiguousarray(x), np.ascontiguousarray(w)
    state = prepare(kernel, theta)
    grad_x = np.asarray(apply_prepared(kernel, state, w, not transpose), dtype=theta.dtype).reshape(x.shape)
    if w.shape[0] == 0:
        return np.zeros_like(theta), grad_x
    grad_theta = vjp_prepared(kernel, state, prepare_data(kernel, x, transpose), w, transpose)
    return np.asarray(grad_theta, dtype=theta.dtype).reshape(theta.shape), grad_x


@partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _flat_apply(kernel: ParametricKernel, transpose: bool, theta: jax.Array, x: jax.Array) -> jax.Array:
    out = jax.ShapeDtypeStruct((x.shape[0], int(np.prod(io_shapes(kernel, transpose)[1]))), x.dtype)
    return jax.pure_callback(partial(_host_apply, kernel, transpose), out, theta, x, vmap_method="sequential")


def _flat_apply_fwd(kernel: ParametricKernel, transpose: bool, theta: jax.Array, x: jax.Array):
    return _flat_apply(kernel, transpose, theta, x), (theta, x)


def _flat_apply_bwd(kernel: ParametricKernel, transpose: bool, residuals: Any, w: jax.Array):
    theta, x = residuals
    shapes = (jax.ShapeDtypeStruct(theta.shape, theta.dtype), jax.ShapeDtypeStruct(x.shape, x.dtype))
    return jax.pure_callback(partial(_host_grads, kernel, transpose), shapes, theta, x, w, vmap_method="sequential")


_flat_apply.defvjp(_flat_apply_fwd, _flat_apply_bwd)


def apply(kernel: ParametricKernel, theta: Any, x: Any, *, transpose: bool = False) -> jax.Array:
    r"""Apply :math:`K(\theta)` (or :math:`K(\theta)^\top`) to every example of a batch, JAX-differentiably.

    Parameters
    ----------
    kernel : ParametricKernel
        Any structops family (static: not traced).
    theta : jax.Array, shape (p,)
        Parameters, float32 (or float64 with ``jax_enable_x64``).
    x : jax.Array, shape (n, *kernel.in_shape) or (n, prod(in_shape))
        Examples along the first axis (``out_shape`` with ``transpose=True``), same dtype as
        ``theta``.
    transpose : bool, optional
        Apply :math:`K(\theta)^\top` instead (static).

    Returns
    -------
    jax.Array, shape (n, *kernel.out_shape)
        :math:`K(\theta)x_i` for every example (``(n, *in_shape)`` with ``transpose``).

    Raises
    ------
    TypeError
        If ``kernel`` is not a family, or ``theta`` and ``x`` are not float arrays of one dtype.
    ValueError
        If ``theta`` does not have shape ``(p,)`` or ``x`` not the examples' shape (at trace
        time); a ``theta`` violating the family's constraints fails when the callback runs.

    Notes
    -----
    ``jax.grad`` gives :math:`K(\theta)^\top W` in ``x`` and :math:`J(\theta, X)^\top W` in
    ``theta`` (the Jacobian transposes of :meth:`~structops.kernels.ParametricKernel.jac`), both from
    one host call of the family's hooks (:mod:`structops.internal`).

    Examples
    --------
    >>> import jax, jax.numpy as jnp, structops
    >>> from structops.jax import apply
    >>> k = structops.Conv((8, 8), 3)
    >>> loss = lambda theta, x: jnp.sum(apply(k, theta, x) ** 2)
    >>> jax.jit(jax.grad(loss))(jnp.ones(9), jnp.ones((2, 1, 8, 8))).shape
    (9,)
    """
    kernel = as_kernel(kernel)
    transpose = check_flag(transpose, "transpose")
    theta, x = jnp.asarray(theta), jnp.asarray(x)
    if theta.dtype != x.dtype:
        raise TypeError(
            f"`x` has dtype {x.dtype} but `theta` has dtype {theta.dtype}: pass both in the same precision, "
            f"e.g. `x.astype(theta.dtype)`."
        )
    if np.dtype(theta.dtype) not in _DTYPES:
        raise TypeError(f"`theta` must have dtype float32 or float64, got dtype {theta.dtype}.")
    if theta.shape != (kernel.nparams,):
        raise ValueError(
            f"`theta` must have shape ({kernel.nparams},) (p = kernel.nparams of {kernel!r}), got shape {theta.shape}."
        )
    x_shape, y_shape = io_shapes(kernel, transpose)
    size = int(np.prod(x_shape))
    if x.ndim < 1 or not (x.shape[1:] == x_shape or (x.ndim == 2 and x.shape[1] == size)):
        raise ValueError(
            f"`x` must hold examples along its first axis with shape (n, {', '.join(map(str, x_shape))}) "
            f"or (n, {size}), got shape {x.shape}."
        )
    y = _flat_apply(kernel, transpose, theta, x.reshape(x.shape[0], size))
    return y.reshape(x.shape[0], *y_shape)
