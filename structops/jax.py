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
from .solvers.deblurrer import as_stack
from .solvers.implicit import tikhonov_vjp
from .solvers.tikhonov import tikhonov as numpy_tikhonov

__all__ = ["apply", "tikhonov"]

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


# ------------------------------------------------------------------ tikhonov
def _host_tikhonov(kernel, L_family, options, theta, b, alpha, phi) -> np.ndarray:
    L = None if L_family is None else L_family.op(np.asarray(phi))
    x = numpy_tikhonov(kernel, np.asarray(theta), np.asarray(b), alpha=float(alpha), L=L, **dict(options))
    return np.asarray(x, dtype=np.asarray(theta).dtype)


def _host_tikhonov_vjp(kernel, L_family, options, theta, b, alpha, phi, x, g):
    theta = np.asarray(theta)
    grads = tikhonov_vjp(
        kernel,
        theta,
        np.asarray(b),
        float(alpha),
        np.asarray(x),
        np.asarray(g),
        L_family=L_family,
        theta_L=None if L_family is None else np.asarray(phi),
        **dict(options),
    )
    d_phi = np.zeros(np.shape(phi), theta.dtype) if grads.theta_L is None else grads.theta_L.astype(theta.dtype)
    return (
        grads.theta.astype(theta.dtype),
        grads.b.astype(theta.dtype).reshape(np.shape(b)),
        np.asarray(grads.alpha, dtype=np.asarray(alpha).dtype),
        d_phi,
    )


@partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3))
def _tikhonov(kernel, L_family, options, x_shape, theta, b, alpha, phi):
    out = jax.ShapeDtypeStruct(x_shape, theta.dtype)
    host = partial(_host_tikhonov, kernel, L_family, options)
    return jax.pure_callback(host, out, theta, b, alpha, phi, vmap_method="sequential")


def _tikhonov_fwd(kernel, L_family, options, x_shape, theta, b, alpha, phi):
    x = _tikhonov(kernel, L_family, options, x_shape, theta, b, alpha, phi)
    return x, (theta, b, alpha, phi, x)


def _tikhonov_bwd(kernel, L_family, options, x_shape, residuals, g):
    theta, b, alpha, phi, x = residuals
    shapes = tuple(jax.ShapeDtypeStruct(a.shape, a.dtype) for a in (theta, b, alpha, phi))
    host = partial(_host_tikhonov_vjp, kernel, L_family, options)
    return jax.pure_callback(host, shapes, theta, b, alpha, phi, x, g, vmap_method="sequential")


_tikhonov.defvjp(_tikhonov_fwd, _tikhonov_bwd)


def tikhonov(
    kernel: ParametricKernel,
    theta: Any,
    b: Any,
    *,
    alpha: Any,
    L: ParametricKernel | None = None,
    theta_L: Any = None,
    solver: str = "auto",
    preconditioner: str | None = "auto",
    rtol: float = 1e-10,
) -> jax.Array:
    r"""The Tikhonov solution :math:`(K^\top K + \alpha L^\top L)^{-1}K^\top b` as a JAX function.

    Differentiable in ``theta``, ``b``, ``alpha`` and ``theta_L`` (when ``L`` is a family) by
    implicit differentiation: the backward pass is one adjoint solve on the route of the forward
    one (:func:`structops.solvers.implicit.tikhonov_vjp`); both run in numpy on the host
    (``jax.pure_callback``), as :func:`apply` does. See :func:`structops.torch.solve.tikhonov`.

    Parameters
    ----------
    kernel : ParametricKernel
        :math:`K(\theta)` (static).
    theta : jax.Array, shape (p,)
        Its parameters (float32, or float64 with ``jax_enable_x64``).
    b : jax.Array
        One output of ``kernel`` (``out_shape``, flat or the output grid), ``theta``'s dtype.
    alpha : float or jax.Array
        :math:`\alpha > 0`.
    L : ParametricKernel, optional
        The regulariser family :math:`L(\phi)` (static; None: the identity).
    theta_L : jax.Array, optional
        :math:`\phi`, needed when ``L`` is given.
    solver, preconditioner, rtol : optional
        As for :func:`structops.solvers.tikhonov` (``rtol`` default 1e-10).

    Returns
    -------
    jax.Array
        ``x``, shaped as :func:`structops.solvers.tikhonov` shapes it.

    Examples
    --------
    >>> import jax, jax.numpy as jnp, structops
    >>> from structops.jax import tikhonov
    >>> k = structops.Conv((8, 8), 3, bc="periodic")
    >>> loss = lambda a: jnp.sum(tikhonov(k, jnp.full(9, 1 / 9), jnp.ones((8, 8)), alpha=a) ** 2)
    >>> jax.grad(loss)(jnp.float32(0.1)).shape
    ()
    """
    kernel = as_kernel(kernel)
    if L is not None and not isinstance(L, ParametricKernel):
        raise TypeError(f"`L` must be a kernel family (with `theta_L`) or None, got {L!r}.")
    if L is not None and theta_L is None:
        raise TypeError(f"`L` is the family {L!r}: pass its parameters as `theta_L`.")
    theta, b = jnp.asarray(theta), jnp.asarray(b)
    if np.dtype(theta.dtype) not in _DTYPES or b.dtype != theta.dtype:
        raise TypeError(f"`theta` and `b` must share one float dtype (float32/float64), got {theta.dtype}, {b.dtype}.")
    alpha = jnp.asarray(alpha, dtype=theta.dtype)
    phi = jnp.zeros(0, theta.dtype) if L is None else jnp.asarray(theta_L, dtype=theta.dtype)
    _, x_shape, single = as_stack(kernel, np.zeros(b.shape, np.dtype(theta.dtype)), np.dtype(theta.dtype))
    if not single:
        raise ValueError(
            f"`b` must be one output of `kernel` (structops.jax.tikhonov solves one image), got {b.shape}."
        )
    options = (("solver", solver), ("preconditioner", preconditioner), ("rtol", rtol))
    return _tikhonov(kernel, L, options, tuple(x_shape), theta, b, alpha, phi)
