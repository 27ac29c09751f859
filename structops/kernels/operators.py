r"""The pylops operators a kernel family hands out: :math:`K(\theta)` and the Jacobian.

Every operator here is built from a family's *prepared* states (see
:class:`~structops.kernels.ParametricKernel`): what depends only on :math:`\theta` and what
depends only on the data is computed once, when the operator is built, and never changed
afterwards. An operator is therefore a fixed linear map (what Krylov solvers assume): the same
product gives bitwise the same result on every call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import pylops
import scipy.sparse as sp

from .._validation import as_float_array, check_finite_fast, grid_output_shape, is_grid_of

if TYPE_CHECKING:
    from ._base import ParametricKernel

__all__ = ["ColumnBatched", "KernelJacobian", "KernelOperator", "real_apply"]


def real_apply(fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Apply a real linear map ``fn`` computing in ``dtype`` to ``x``, as numpy's ``M.astype(dtype) @ x`` would.

    Complex input is split into its real and imaginary parts, and input of a wider precision
    than ``dtype`` is computed in that precision (scipy's solvers hand float64 and complex128
    vectors to float32 operators): the result has numpy's promoted dtype
    ``result_type(x.dtype, dtype)``, never a truncated one. ``fn`` is called with real arrays of
    dtype ``dtype`` or wider.

    Examples
    --------
    >>> z = np.array([1 + 2j, 3 - 1j])
    >>> real_apply(lambda v: 2 * v, z, np.dtype(np.float32)).dtype
    dtype('complex128')
    """
    real = np.result_type(x.real.dtype if np.iscomplexobj(x) else x.dtype, dtype)
    if np.iscomplexobj(x):
        return fn(np.ascontiguousarray(x.real, dtype=real)) + 1j * fn(np.ascontiguousarray(x.imag, dtype=real))
    return fn(x if x.dtype == real else x.astype(real))


def _dense_columns(X) -> np.ndarray:
    """A column block as a dense array (sparse blocks are densified: the products are dense anyway)."""
    return X.toarray() if sp.issparse(X) else X


class ColumnBatched(pylops.LinearOperator):
    """A pylops operator whose products act on a whole block of columns in one call.

    Subclasses implement ``_columns(X, adjoint)`` for a dense 2-D block ``X`` (one column per
    vector); ``matvec``/``rmatvec`` are blocks of one column and ``matmat``/``rmatmat`` one
    call (never a loop over columns; sparse blocks are densified, the products being dense).
    pylops' operation counters assume ``matmat`` loops over ``matvec`` and subtract the
    columns afterwards, so the block products add them first: the counts are pylops' own
    (one ``matmat`` counts as one ``matmat`` and no ``matvec``).
    """

    def _columns(self, X: np.ndarray, adjoint: bool) -> np.ndarray:
        raise TypeError(f"{type(self).__name__} must implement _columns")  # pragma: no cover

    def dot(self, x):
        """``A @ x`` as pylops' ``dot``; a grid-shaped image of a one-channel operator gives a grid-shaped result.

        pylops reads ``x`` of shape ``dims`` (``(1, H, W)``) as one example and returns
        ``dimsd``; an operator with one input channel also takes the grid alone, ``(H, W)``,
        and returns the output grid alone when it has one output channel (as pylops' own
        ``Convolve2D`` with ``dims=(H, W)``). Everything else is pylops' convention unchanged.
        """
        if isinstance(x, np.ndarray) and self._grid_shaped(x.shape):
            y = super().dot(x.ravel())
            return y.reshape(grid_output_shape(self.dimsd))
        return super().dot(x)

    def _grid_shaped(self, shape: tuple[int, ...]) -> bool:
        if len(shape) < 2 or not is_grid_of(shape, self.dims):
            return False
        return not (len(shape) == 2 and shape[0] == self.shape[1])  # a block of columns keeps pylops' meaning

    def _matvec(self, x):
        return self._columns(x.reshape(-1, 1), False).ravel()

    def _rmatvec(self, x):
        return self._columns(x.reshape(-1, 1), True).ravel()

    def _matmat(self, X):
        self.matvec_count += X.shape[-1]
        return self._columns(_dense_columns(X), False)

    def _rmatmat(self, X):
        self.rmatvec_count += X.shape[-1]
        return self._columns(_dense_columns(X), True)


class _Widening:
    """The states of a kernel at ``theta`` (and data ``x``) per dtype, the operator's own eager.

    A product whose input is wider than the operator (float64 into a float32 operator) runs in
    the wider precision from states prepared for it on that call, so nothing is mutated.
    """

    def __init__(self, kernel: ParametricKernel, theta: np.ndarray) -> None:
        self.kernel = kernel
        self.theta = theta
        self.state = kernel._prepare(theta)

    def state_for(self, dtype: np.dtype) -> Any:
        if dtype == self.theta.dtype:
            return self.state
        return self.kernel._prepare(self.theta.astype(dtype))


class KernelOperator(ColumnBatched):
    r""":math:`K(\theta)` (or :math:`K(\theta)^\top` with ``transpose``) of a family as a pylops ``LinearOperator``.

    Built by :meth:`ParametricKernel.op`. ``dims``/``dimsd`` are pylops' (``in_shape`` and
    ``out_shape``, e.g. ``(1, H, W)``); a one-channel family also accepts a grid-shaped image
    ``(H, W)`` in ``K @ x`` and returns a grid-shaped result (see
    :meth:`~structops.kernels.operators.ColumnBatched.dot`). The family's state for :math:`\theta`
    (e.g. an assembled matrix or a spectrum) is prepared once, when
    the operator is built; ``matvec`` and ``matmat`` apply the family's batched product to all
    columns at once (no loop over columns). The adjoint is the same class with the flag flipped, sharing the state.

    Parameters
    ----------
    kernel : ParametricKernel
    theta : numpy.ndarray, shape (p,)
        Validated parameters (the operator keeps this array: pass a copy).
    transpose : bool
        Represent :math:`K(\theta)^\top`.
    """

    def __init__(
        self, kernel: ParametricKernel, theta: np.ndarray, transpose: bool = False, *, _states: _Widening | None = None
    ) -> None:
        self.kernel = kernel
        self.theta = theta
        self.transposed = bool(transpose)
        self._states = _states if _states is not None else _Widening(kernel, theta)
        dims, dimsd = kernel._io_shapes(self.transposed)
        name = type(kernel).__name__ + ("ᵀ" if self.transposed else "")
        super().__init__(dtype=theta.dtype, dims=dims, dimsd=dimsd, name=name)

    def _columns(self, X: np.ndarray, adjoint: bool) -> np.ndarray:
        transpose = self.transposed != adjoint

        def rows(z: np.ndarray) -> np.ndarray:
            state = self._states.state_for(z.dtype)
            return self.kernel._apply(state, np.ascontiguousarray(z.T), transpose).T

        return real_apply(rows, X, self.dtype)

    def _adjoint(self) -> KernelOperator:
        return KernelOperator(self.kernel, self.theta, not self.transposed, _states=self._states)

    _transpose = _adjoint

    def todense(self, backend: str = "numpy") -> np.ndarray:
        """The dense matrix (from the family's own dense form, not by probing with the identity)."""
        dense = self.kernel._dense(self._states.state)
        return np.ascontiguousarray(dense.T) if self.transposed else dense


class KernelJacobian(pylops.LinearOperator):
    r"""Jacobian of :math:`\theta \mapsto` ``kernel.apply(theta, X, transpose)``.

    A pylops ``LinearOperator`` of shape ``(n * prod(out_shape), p)`` (output flattened
    C-order from ``(n, *out_shape)``). ``J @ v`` is the directional derivative in direction
    ``v``; ``J.H @ w`` the gradient summed over the examples (the lecture notes'
    :math:`J_\theta(YK(\theta))^\top W`); :meth:`per_example` gives one gradient per example.

    Built by :meth:`ParametricKernel.jac`. The family's state for :math:`\theta` and its data
    state for ``X`` (e.g. the spectra of the padded examples) are prepared once, when the
    Jacobian is built, and shared by every ``matvec``, ``rmatvec`` and :meth:`per_example`:
    the Jacobian is a fixed operator whose products are bitwise reproducible from the first
    call on.
    """

    def __init__(
        self,
        kernel: ParametricKernel,
        theta: np.ndarray,
        x: np.ndarray,
        transpose: bool,
        *,
        dimsd: tuple[int, ...] | None = None,
    ) -> None:
        self.kernel = kernel
        self.theta = theta
        self.x = x
        self.transposed = bool(transpose)
        self.nexamples = x.shape[0]
        self._states = _Widening(kernel, theta)
        self._data = kernel._prepare_data(x, self.transposed)
        _, y_shape = kernel._io_shapes(self.transposed)
        super().__init__(
            dtype=theta.dtype,
            dims=(kernel.nparams,),
            dimsd=(self.nexamples, *y_shape) if dimsd is None else dimsd,
            name=f"J[{type(kernel).__name__}]",
        )

    def _prepared(self, dtype: np.dtype) -> tuple[Any, Any]:
        """The states for a product in ``dtype`` (the operator's own, or fresh wider ones)."""
        if dtype == self.dtype:
            return self._states.state, self._data
        return self._states.state_for(dtype), self.kernel._prepare_data(self.x.astype(dtype), self.transposed)

    def _matvec(self, v):
        return real_apply(self._jvp, v, self.dtype)

    def _jvp(self, v: np.ndarray) -> np.ndarray:
        state, data = self._prepared(v.dtype)
        return self.kernel._jvp(state, data, v.ravel(), self.transposed).ravel()

    def _rmatvec(self, w):
        return real_apply(lambda z: self._grad(z, per_example=False), w, self.dtype)

    def _grad(self, w: np.ndarray, per_example: bool) -> np.ndarray:
        w = np.ascontiguousarray(w).reshape(self.nexamples, self.shape[0] // max(self.nexamples, 1))
        if self.nexamples == 0:
            shape = (0, self.kernel.nparams) if per_example else (self.kernel.nparams,)
            return np.zeros(shape, dtype=w.dtype)
        state, data = self._prepared(w.dtype)
        return self.kernel._vjp(state, data, w, self.transposed, per_example)

    def per_example(self, w) -> np.ndarray:
        """Per-example gradients: row ``i`` is ``J_i^T w_i``; shape ``(n, p)``, summing to ``J.H @ w``.

        Parameters
        ----------
        w : array_like, shape (n * prod(out_shape),) or (n, *out_shape)
        """
        w = np.asarray(w)
        if w.dtype.kind in "iu":
            w = w.astype(self.dtype)
        w = as_float_array(w, "w")
        if w.size != self.shape[0]:
            raise ValueError(f"`w` must have {self.shape[0]} entries (n * prod(out_shape)), got shape {w.shape}.")
        check_finite_fast(w, "w")
        return self._grad(w, per_example=True)
