r"""The kernel contract: a parametric family :math:`\theta \mapsto K(\theta)`.

A *kernel family* describes a structured matrix :math:`K(\theta) \in \mathbb{R}^{m \times N}`
for every :math:`\theta \in \mathbb{R}^p`. It is stateless with respect to :math:`\theta`:
every method takes ``theta`` explicitly. Subclasses implement three private hooks on
flattened batches (examples along the first axis):

* ``_apply(theta, x, transpose)`` -- ``x @ K(θ).T`` (or ``x @ K(θ)`` with ``transpose``),
* ``_jvp(theta, x, v, transpose)`` -- the directional derivative in direction ``v``,
* ``_vjp(theta, x, w, transpose, per_example)`` -- the gradient ``J^T w``, summed over the
  examples or one row per example,

and the base class turns them into the public contract (:meth:`ParametricKernel.matrix`,
:meth:`~ParametricKernel.op`, :meth:`~ParametricKernel.apply`, :meth:`~ParametricKernel.jac`)
with validation, dtype handling and pylops operators.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from functools import cached_property

import numpy as np
import pylops
import scipy.sparse as sp

from .._validation import as_float_array, check_batch, check_finite_fast, check_theta

#: Largest number of entries :meth:`ParametricKernel.matrix` builds (8 GiB in float64).
MAX_DENSE_ENTRIES = 2**30


class ParametricKernel(abc.ABC):
    r"""Abstract parametric kernel family :math:`K(\theta)`.

    Parameters
    ----------
    nparams : int
        Number :math:`p` of parameters.
    in_shape, out_shape : tuple of int
        Shape of one input example and of one output example; ``K(θ)`` has shape
        ``(prod(out_shape), prod(in_shape))`` acting on examples flattened in C-order.

    Notes
    -----
    Conventions, shared by every family:

    * ``vec`` stacks the *columns* of :math:`K` (the seed's convention), so
      :math:`\operatorname{vec}(K(\theta)) = Q\theta + q` for affine families.
    * Batches hold examples along the **first** axis: ``apply(theta, X)`` returns
      :math:`K(\theta) x_i` for every row :math:`x_i`, i.e. the seed's
      :math:`(Y K(\theta))` with :math:`Y = X` read as rows of features and
      :math:`K` acting on the right as :math:`K(\theta)^\top`. ``transpose=True`` returns
      :math:`K(\theta)^\top x_i`, which is the seed's row form :math:`Y K(\theta)`.
    * ``jac(theta, X)`` is the Jacobian of :math:`\theta \mapsto` ``apply(theta, X)``
      flattened in C-order from ``(n, *out_shape)``.
    """

    #: True when ``K`` is affine in ``theta`` (so the Jacobian does not depend on ``theta``).
    linear: bool = True

    def __init__(self, nparams: int, in_shape: Sequence[int], out_shape: Sequence[int]) -> None:
        self.nparams = int(nparams)
        self.in_shape = tuple(int(s) for s in in_shape)
        self.out_shape = tuple(int(s) for s in out_shape)
        self.shape = (int(np.prod(self.out_shape)), int(np.prod(self.in_shape)))

    # ------------------------------------------------------------------ hooks
    @abc.abstractmethod
    def _apply(self, theta: np.ndarray, x: np.ndarray, transpose: bool) -> np.ndarray:
        """Return ``x @ K(theta).T`` (``x @ K(theta)`` with ``transpose``); ``x`` is 2-D."""

    def _jvp(self, theta: np.ndarray, x: np.ndarray, v: np.ndarray, transpose: bool) -> np.ndarray:
        """Directional derivative of ``_apply`` in direction ``v``; default for linear ``K``."""
        return self._apply_linear(v, x, transpose)

    def _apply_linear(self, v: np.ndarray, x: np.ndarray, transpose: bool) -> np.ndarray:
        """Apply the linear part ``K(v) - K(0)``; families with an offset override it."""
        return self._apply(v, x, transpose)

    @abc.abstractmethod
    def _vjp(self, theta: np.ndarray, x: np.ndarray, w: np.ndarray, transpose: bool, per_example: bool) -> np.ndarray:
        """Return ``J^T w`` (shape ``(p,)``) or per-example rows (shape ``(n, p)``)."""

    def _prepare(self, theta: np.ndarray):
        """Precompute what depends only on ``theta`` (e.g. a spectrum); used by :meth:`op`."""
        return theta

    def _apply_prepared(self, state, x: np.ndarray, transpose: bool) -> np.ndarray:
        """``_apply`` from the state :meth:`_prepare` returned."""
        return self._apply(state, x, transpose)

    def _prepare_data(self, x: np.ndarray, transpose: bool):
        """Precompute what depends only on the data ``x`` (e.g. its spectrum); used by :meth:`jac`.

        The state is built once per :class:`KernelJacobian` (on its first product) and handed
        to :meth:`_jvp_prepared` and :meth:`_vjp_prepared`; the default is ``x`` itself.
        """
        return x

    def _jvp_prepared(self, theta: np.ndarray, state, v: np.ndarray, transpose: bool) -> np.ndarray:
        """``_jvp`` from the state :meth:`_prepare_data` returned."""
        return self._jvp(theta, state, v, transpose)

    def _vjp_prepared(self, theta: np.ndarray, state, w: np.ndarray, transpose: bool, per_example: bool) -> np.ndarray:
        """``_vjp`` from the state :meth:`_prepare_data` returned."""
        return self._vjp(theta, state, w, transpose, per_example)

    def _check_constraints(self, theta: np.ndarray) -> None:
        """Raise ``ValueError`` when ``theta`` violates a constraint of the family."""

    def _build_Q(self) -> sp.csc_array:
        """Build ``Q`` column by column from ``K(e_k)``; families override it to stay sparse."""
        self._check_dense_size(self.shape[0] * self.shape[1] * 2, "Q")
        cols = []
        zero = np.zeros(self.nparams)
        offset = self._dense(zero).ravel(order="F")
        for k in range(self.nparams):
            e = np.zeros(self.nparams)
            e[k] = 1.0
            cols.append(sp.csc_array((self._dense(e).ravel(order="F") - offset)[:, None]))
        return sp.hstack(cols, format="csc") if cols else sp.csc_array((self.shape[0] * self.shape[1], 0))

    # ------------------------------------------------------------ properties
    @property
    def theta_shape(self) -> tuple[int, ...]:
        """Shape in which ``theta`` may also be passed (flattened C-order); ``(nparams,)`` by default."""
        return (self.nparams,)

    @property
    def bounds(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Lower and upper bounds on ``theta`` (arrays of length ``p``), or None if unconstrained."""
        return None

    @cached_property
    def Q(self) -> sp.csc_array:
        r"""Sparse :math:`Q` with :math:`\operatorname{vec}(K(\theta)) = Q\theta + q` (column-major ``vec``)."""
        if not self.linear:
            raise TypeError(f"{self!r} is not affine in theta, so it has no matrix Q with vec(K) = Q theta + q.")
        return self._build_Q()

    @property
    def q(self) -> np.ndarray | None:
        """The constant part ``q`` of ``vec(K(θ)) = Qθ + q`` (None when it is zero)."""
        return None

    def random_theta(self, rng: np.random.Generator | int | None = None, dtype=np.float64) -> np.ndarray:
        """Draw a random feasible ``theta`` (standard normal, or uniform on [0.5, 1.5] if bounded below)."""
        rng = np.random.default_rng(rng)
        if self.bounds is not None:
            return rng.uniform(0.5, 1.5, self.nparams).astype(dtype)
        return rng.standard_normal(self.nparams).astype(dtype)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={self.shape}, nparams={self.nparams})"

    # ------------------------------------------------------------- contract
    def _theta(self, theta, name: str = "theta") -> np.ndarray:
        theta = check_theta(theta, self.nparams, name, self.theta_shape)
        self._check_constraints(theta)
        return theta

    def _check_dense_size(self, entries: int, what: str) -> None:
        if entries > MAX_DENSE_ENTRIES:
            raise MemoryError(
                f"{what} of {self!r} would hold {entries:,} dense entries (more than "
                f"{MAX_DENSE_ENTRIES:,}); use `op(theta)` or `apply(theta, X)`, which never densify."
            )

    def _dense(self, theta: np.ndarray) -> np.ndarray:
        """``K(theta)`` as a dense array, by applying ``K`` to the identity."""
        eye = np.eye(self.shape[1], dtype=theta.dtype)
        return np.ascontiguousarray(self._apply(theta, eye, False).T)

    def matrix(self, theta) -> np.ndarray:
        """Return ``K(theta)`` as a dense array of shape ``shape`` (for checks and small sizes).

        Raises
        ------
        MemoryError
            If the dense matrix would have more than ``MAX_DENSE_ENTRIES`` entries.
        """
        theta = self._theta(theta)
        self._check_dense_size(self.shape[0] * self.shape[1], "matrix()")
        return self._dense(theta)

    def op(self, theta) -> KernelOperator:
        """Return ``K(theta)`` as a pylops ``LinearOperator`` with a structured adjoint.

        ``theta`` is copied: changing the caller's array afterwards (e.g. an optimiser's
        in-place update) does not change the operator.
        """
        return KernelOperator(self, self._theta(theta).copy())

    def apply(self, theta, X, transpose: bool = False) -> np.ndarray:
        """Apply ``K(theta)`` (or its transpose) to every example of a batch.

        Parameters
        ----------
        theta : array_like, shape (p,)
            Parameters, float32 or float64; the computation runs in this dtype.
        X : array_like, shape (n, *in_shape) or (n, prod(in_shape))
            Examples along the first axis (``out_shape`` with ``transpose=True``).
        transpose : bool, optional
            Apply ``K(theta).T`` instead of ``K(theta)``.

        Returns
        -------
        numpy.ndarray, shape (n, *out_shape)
            ``K(theta) x_i`` for each example (``(n, *in_shape)`` with ``transpose``).
        """
        transpose = _check_flag(transpose, "transpose")
        theta = self._theta(theta)
        x_shape, y_shape = self._io_shapes(transpose)
        x = check_batch(X, x_shape, theta.dtype)
        y = self._apply(theta, x, transpose)
        return y.reshape((x.shape[0], *y_shape))

    def jac(self, theta, X, transpose: bool = False) -> KernelJacobian:
        r"""Jacobian of :math:`\theta \mapsto` ``apply(theta, X, transpose)`` as an operator.

        Returns
        -------
        KernelJacobian
            pylops ``LinearOperator`` of shape ``(n * prod(out_shape), p)``: ``J @ v`` is the
            directional derivative, ``J.H @ w`` the gradient summed over the examples and
            ``J.per_example(w)`` the per-example gradients, shape ``(n, p)``.

        Notes
        -----
        ``theta`` is copied; the batch ``X`` is not (it can be large): the Jacobian reads it,
        or caches what it derives from it, so do not modify ``X`` in place while ``J`` is in use.
        """
        transpose = _check_flag(transpose, "transpose")
        theta = self._theta(theta).copy()
        x_shape, _ = self._io_shapes(transpose)
        x = check_batch(X, x_shape, theta.dtype)
        return KernelJacobian(self, theta, x, transpose)

    def _io_shapes(self, transpose: bool) -> tuple[tuple[int, ...], tuple[int, ...]]:
        return (self.out_shape, self.in_shape) if transpose else (self.in_shape, self.out_shape)


def _check_flag(value, name: str) -> bool:
    """``value`` as a bool; anything but True/False (e.g. the string ``"no"``) is an error."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be True or False, got {value!r}.")
    return bool(value)


def _real_apply(fn, x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Apply a real linear map ``fn`` to ``x``, splitting complex input into real and imaginary parts."""
    if np.iscomplexobj(x):
        return fn(np.ascontiguousarray(x.real, dtype=dtype)) + 1j * fn(np.ascontiguousarray(x.imag, dtype=dtype))
    if x.dtype != dtype:
        # scipy's solvers may hand a float64 vector to a float32 operator: compute in the
        # wider precision instead of silently truncating the input.
        return fn(x.astype(np.result_type(x.dtype, dtype)))
    return fn(x)


class KernelOperator(pylops.LinearOperator):
    r"""``K(θ)`` of a :class:`ParametricKernel` as a pylops ``LinearOperator``.

    ``matmat`` applies the family's batched kernel to all columns at once (no loop over
    columns). The adjoint is again a :class:`KernelOperator` (of ``K(θ)^T``).
    """

    def __init__(self, kernel: ParametricKernel, theta: np.ndarray, transpose: bool = False) -> None:
        self.kernel = kernel
        self.theta = theta
        self.transposed = transpose
        self._state = kernel._prepare(theta)
        dims, dimsd = (kernel.out_shape, kernel.in_shape) if transpose else (kernel.in_shape, kernel.out_shape)
        super().__init__(
            dtype=theta.dtype, dims=dims, dimsd=dimsd, name=type(kernel).__name__ + ("ᵀ" if transpose else "")
        )

    def _rows(self, x: np.ndarray, transpose: bool) -> np.ndarray:
        return self.kernel._apply_prepared(self._state, np.ascontiguousarray(x), transpose)

    def _matvec(self, x):
        return _real_apply(lambda z: self._rows(z.reshape(1, -1), self.transposed).ravel(), x, self.dtype)

    def _rmatvec(self, x):
        return _real_apply(lambda z: self._rows(z.reshape(1, -1), not self.transposed).ravel(), x, self.dtype)

    def _matmat(self, X):
        X = X.toarray() if sp.issparse(X) else X  # the products are dense anyway
        return _real_apply(lambda z: self._rows(z.T, self.transposed).T, X, self.dtype)

    def _rmatmat(self, X):
        X = X.toarray() if sp.issparse(X) else X
        return _real_apply(lambda z: self._rows(z.T, not self.transposed).T, X, self.dtype)

    def _adjoint(self) -> KernelOperator:
        adj = object.__new__(KernelOperator)
        adj.__dict__.update(self.__dict__)
        adj.transposed = not self.transposed
        adj._dims, adj._dimsd = self.dimsd, self.dims
        adj._shape = (self.shape[1], self.shape[0])
        adj.name = type(self.kernel).__name__ + ("" if self.transposed else "ᵀ")
        return adj

    _transpose = _adjoint

    def todense(self, backend: str = "numpy") -> np.ndarray:
        dense = self.kernel.matrix(self.theta)
        return dense.T.copy() if self.transposed else dense


class KernelJacobian(pylops.LinearOperator):
    r"""Jacobian of :math:`\theta \mapsto` ``kernel.apply(theta, X, transpose)``.

    A pylops ``LinearOperator`` of shape ``(n * prod(out_shape), p)`` (output flattened
    C-order from ``(n, *out_shape)``). ``J @ v`` is the directional derivative in direction
    ``v``; ``J.H @ w`` the gradient summed over the examples (the seed's
    :math:`J_\theta(YK(\theta))^\top W`); :meth:`per_example` gives one gradient per example.

    What depends only on ``X`` (the family's ``_prepare_data``, e.g. the FFT of the padded
    examples) is computed on the first product and reused by every later ``matvec``,
    ``rmatvec`` and :meth:`per_example`.
    """

    def __init__(self, kernel: ParametricKernel, theta: np.ndarray, x: np.ndarray, transpose: bool) -> None:
        self.kernel = kernel
        self.theta = theta
        self.x = x
        self.transposed = transpose
        self.nexamples = x.shape[0]
        self._data = None
        _, y_shape = kernel._io_shapes(transpose)
        super().__init__(
            dtype=theta.dtype,
            dims=(kernel.nparams,),
            dimsd=(self.nexamples, *y_shape),
            name=f"J[{type(kernel).__name__}]",
        )

    @property
    def _state(self):
        """The kernel's data state for ``x`` (built once, on first use)."""
        if self._data is None:
            self._data = (self.kernel._prepare_data(self.x, self.transposed),)
        return self._data[0]

    def _widened(self, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
        """``theta`` and the raw data in a wider precision (the cached state is in ``self.dtype``)."""
        return self.theta.astype(dtype), self.x.astype(dtype)

    def _matvec(self, v):
        return _real_apply(self._jvp, v, self.dtype)

    def _jvp(self, v: np.ndarray) -> np.ndarray:
        v = v.ravel()
        if v.dtype != self.dtype:
            return self.kernel._jvp(*self._widened(v.dtype), v, self.transposed).ravel()
        return self.kernel._jvp_prepared(self.theta, self._state, v, self.transposed).ravel()

    def _rmatvec(self, w):
        return _real_apply(lambda z: self._grad(z, per_example=False), w, self.dtype)

    def _grad(self, w: np.ndarray, per_example: bool) -> np.ndarray:
        w = np.ascontiguousarray(w).reshape(self.nexamples, int(np.prod(self.dimsd[1:])))
        if self.nexamples == 0:
            shape = (0, self.kernel.nparams) if per_example else (self.kernel.nparams,)
            return np.zeros(shape, dtype=w.dtype)
        if w.dtype != self.dtype:
            return self.kernel._vjp(*self._widened(w.dtype), w, self.transposed, per_example)
        return self.kernel._vjp_prepared(self.theta, self._state, w, self.transposed, per_example)

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
