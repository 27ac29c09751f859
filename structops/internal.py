r"""The kernel contract's private hooks, for code that drives a family from outside it.

This module is internal (as ``lineax.internal`` is for lineax): it is what the array-library
bridges (:mod:`structops.jax`, :mod:`structops.torch`) and the solvers need from a
:class:`~structops.kernels.ParametricKernel` beyond its public methods, under public names, so that
no module imports or calls a leading-underscore name of another one. Its names may change between
releases without deprecation; users call the families' public methods
(:meth:`~structops.kernels.ParametricKernel.apply`, :meth:`~structops.kernels.ParametricKernel.op`,
:meth:`~structops.kernels.ParametricKernel.jac`) instead.

A family :math:`\theta \mapsto K(\theta) \in \mathbb{R}^{m \times N}` (Lars Ruthotto, *Numerical
Methods for Deep Learning*, "Parametric Models") is written once against one path of hooks on
flattened batches (examples along the first axis, rows of ``x``); :mod:`structops.kernels._base`
states the contract. The functions here call those hooks without validating their input (the
caller has validated ``theta`` and the batch once, e.g. with
:meth:`~structops.kernels.ParametricKernel.validate_theta` and :func:`check_batch`), which is
what makes them cheap enough to call per step of an autodiff engine:

=========================================  ====================================================
``prepare(kernel, theta)``                 the state for :math:`\theta` (a spectrum, a matrix)
``apply_prepared(kernel, state, x, t)``    :math:`X K(\theta)^\top` (:math:`X K(\theta)` if ``t``)
``prepare_data(kernel, x, t)``             the state for the batch (its spectrum, a transform)
``jvp_prepared(kernel, state, data, v, t)`` :math:`J(\theta, X)\,v`, one row per example
``vjp_prepared(kernel, state, data, w, t)`` :math:`J(\theta, X)^\top W` (summed, or per example)
``io_shapes(kernel, t)``                   ``(in_shape, out_shape)``, swapped if ``t``
=========================================  ====================================================

Examples
--------
>>> import numpy as np, structops
>>> from structops import internal
>>> k = structops.Conv((6,), 3, bc="periodic")
>>> theta, x = np.arange(3.0), np.ones((2, 6))
>>> state = internal.prepare(k, theta)
>>> np.allclose(internal.apply_prepared(k, state, x, False), k.apply(theta, x).reshape(2, -1))
True
>>> internal.io_shapes(k, transpose=True)
((1, 6), (1, 6))
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._validation import check_batch, check_flag, check_theta
from .kernels._base import ParametricKernel, as_kernel

__all__ = [
    "ParametricKernel",
    "apply_prepared",
    "as_kernel",
    "check_batch",
    "check_flag",
    "check_theta",
    "io_shapes",
    "jvp_prepared",
    "prepare",
    "prepare_data",
    "vjp_prepared",
]


def io_shapes(kernel: ParametricKernel, transpose: bool) -> tuple[tuple[int, ...], tuple[int, ...]]:
    r"""The example shapes ``(input, output)`` of :math:`K(\theta)` (of :math:`K(\theta)^\top` with ``transpose``).

    Parameters
    ----------
    kernel : ParametricKernel
        The family.
    transpose : bool
        Whether the product is with the transpose (then ``(out_shape, in_shape)``).

    Returns
    -------
    tuple of tuple of int
        ``(kernel.in_shape, kernel.out_shape)``, swapped with ``transpose``.
    """
    return kernel._io_shapes(transpose)


def prepare(kernel: ParametricKernel, theta: np.ndarray) -> Any:
    r"""The state of ``kernel`` at a validated ``theta``: what depends only on :math:`\theta`.

    Parameters
    ----------
    kernel : ParametricKernel
        The family.
    theta : numpy.ndarray, shape (p,)
        Parameters, already validated (float32 or float64, finite, within the constraints).

    Returns
    -------
    object
        An opaque state for :func:`apply_prepared`, :func:`jvp_prepared` and :func:`vjp_prepared`;
        never mutated afterwards.
    """
    return kernel._prepare(theta)


def apply_prepared(kernel: ParametricKernel, state: Any, x: np.ndarray, transpose: bool) -> np.ndarray:
    r"""Apply :math:`K(\theta)` (or :math:`K(\theta)^\top`) to a flattened batch, from its prepared state.

    Parameters
    ----------
    kernel : ParametricKernel
        The family.
    state : object
        :func:`prepare`'s result for :math:`\theta`.
    x : numpy.ndarray, shape (n, prod(in_shape))
        Examples as rows (``prod(out_shape)`` columns with ``transpose``), in the dtype of
        :math:`\theta`.
    transpose : bool
        Apply :math:`K(\theta)^\top`.

    Returns
    -------
    numpy.ndarray, shape (n, prod(out_shape))
        :math:`X K(\theta)^\top` (:math:`X K(\theta)` with ``transpose``), possibly not flattened
        yet: reshape to ``(n, -1)``.
    """
    return kernel._apply(state, x, transpose)


def prepare_data(kernel: ParametricKernel, x: np.ndarray, transpose: bool) -> Any:
    r"""The state of a flattened batch ``x`` (its spectrum, its transform): what depends only on the data.

    Parameters
    ----------
    kernel : ParametricKernel
        The family.
    x : numpy.ndarray, shape (n, prod(in_shape))
        Examples as rows (``prod(out_shape)`` columns with ``transpose``).
    transpose : bool
        Whether the Jacobian is that of :math:`\theta \mapsto K(\theta)^\top x`.

    Returns
    -------
    object
        An opaque state for :func:`jvp_prepared` and :func:`vjp_prepared`.
    """
    return kernel._prepare_data(x, transpose)


def jvp_prepared(kernel: ParametricKernel, state: Any, data: Any, v: np.ndarray, transpose: bool) -> np.ndarray:
    r"""The directional derivative :math:`J(\theta, X)\,v` of :math:`\theta \mapsto K(\theta)x_i`, per example.

    Parameters
    ----------
    kernel : ParametricKernel
        The family.
    state, data : object
        :func:`prepare`'s and :func:`prepare_data`'s results.
    v : numpy.ndarray, shape (p,)
        The direction in parameter space.
    transpose : bool
        As given to :func:`prepare_data`.

    Returns
    -------
    numpy.ndarray, shape (n, prod(out_shape))
        One row per example.
    """
    return kernel._jvp(state, data, v, transpose)


def vjp_prepared(
    kernel: ParametricKernel, state: Any, data: Any, w: np.ndarray, transpose: bool, per_example: bool = False
) -> np.ndarray:
    r"""The gradient :math:`J(\theta, X)^\top W`: summed over the examples, or one row per example.

    Parameters
    ----------
    kernel : ParametricKernel
        The family.
    state, data : object
        :func:`prepare`'s and :func:`prepare_data`'s results.
    w : numpy.ndarray, shape (n, prod(out_shape))
        The cotangents, one row per example.
    transpose : bool
        As given to :func:`prepare_data`.
    per_example : bool, optional
        Return the ``(n, p)`` per-example gradients instead of their sum.

    Returns
    -------
    numpy.ndarray, shape (p,) or (n, p)
        :math:`\sum_i J_i^\top w_i`, or the rows :math:`J_i^\top w_i`.
    """
    return kernel._vjp(state, data, w, transpose, per_example)
