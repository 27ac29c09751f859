r"""The kernel contract: a parametric family :math:`\theta \mapsto K(\theta)`.

A *kernel family* describes a structured matrix :math:`K(\theta) \in \mathbb{R}^{m \times N}`
for every :math:`\theta \in \mathbb{R}^p` (Lars Ruthotto, *Numerical Methods for Deep
Learning*, "Parametric Models"). It is stateless with respect to :math:`\theta`: every public
method takes ``theta`` explicitly. A family is written once, against one path of private hooks
on flattened batches (examples along the first axis, in the dtype of ``theta``):

* ``_prepare(theta) -> state`` -- what depends only on :math:`\theta` (an assembled matrix,
  a spectrum); pure and eager. Default: ``theta`` itself.
* ``_apply(state, x, transpose)`` -- ``x @ K(θ).T`` (``x @ K(θ)`` with ``transpose``).
* ``_prepare_data(x, transpose) -> data`` -- what depends only on the batch (its spectrum,
  its transform); pure and eager. Default: ``x`` itself.
* ``_jvp(state, data, v, transpose)`` -- the directional derivative in direction ``v``.
  Default (affine families without offset whose data is ``x``): ``K(v)`` applied to ``x``.
* ``_vjp(state, data, w, transpose, per_example)`` -- the gradient ``J^T w``, summed over
  the examples or one row per example.

and, optionally, ``_check_constraints(theta)``, ``_dense(state)`` and ``_build_Q()``. The base
class turns them into the public contract (:meth:`ParametricKernel.matrix`,
:meth:`~ParametricKernel.op`, :meth:`~ParametricKernel.apply`, :meth:`~ParametricKernel.jac`)
with validation, dtype handling and pylops operators (:mod:`structops.kernels.operators`),
which call ``_prepare``/``_prepare_data`` once when they are built and never mutate afterwards.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from .._validation import check_batch, check_flag, check_theta, grid_output_shape, is_grid_of
from .operators import KernelJacobian, KernelOperator

if TYPE_CHECKING:
    from .diagonalized import ConvStencil, Diagonalized, PeriodicEmbedding

__all__ = ["MAX_DENSE_ENTRIES", "ParametricKernel", "as_kernel"]

#: Largest number of entries :meth:`ParametricKernel.matrix` builds (8 GiB in float64).
MAX_DENSE_ENTRIES = 2**30


def as_kernel(kernel, name: str = "kernel") -> ParametricKernel:
    """Return ``kernel`` if it is a :class:`ParametricKernel`, else raise a ``TypeError`` naming ``name``.

    Examples
    --------
    >>> as_kernel("conv")
    Traceback (most recent call last):
    ...
    TypeError: `kernel` must be a structops kernel family (a ParametricKernel, e.g. structops.Conv), got 'conv'.
    """
    if not isinstance(kernel, ParametricKernel):
        raise TypeError(
            f"`{name}` must be a structops kernel family (a ParametricKernel, e.g. structops.Conv), got {kernel!r}."
        )
    return kernel


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

    * ``vec`` stacks the *columns* of :math:`K` (the convention of the lecture notes), so
      :math:`\operatorname{vec}(K(\theta)) = Q\theta + q` for affine families.
    * Batches hold examples along the **first** axis: ``apply(theta, X)`` returns
      :math:`K(\theta) x_i` for every row :math:`x_i`, i.e. the lecture notes'
      :math:`(Y K(\theta))` with :math:`Y = X` read as rows of features and
      :math:`K` acting on the right as :math:`K(\theta)^\top`. ``transpose=True`` returns
      :math:`K(\theta)^\top x_i`, which is the lecture notes' row form :math:`Y K(\theta)`.
    * ``jac(theta, X)`` is the Jacobian of :math:`\theta \mapsto` ``apply(theta, X)``
      flattened in C-order from ``(n, *out_shape)``.
    """

    #: True when ``K`` is affine in ``theta`` (so the Jacobian does not depend on ``theta``).
    linear: bool = True

    #: numpy defers ``array @ kernel`` to :meth:`__rmatmul__` (a family is not an array).
    __array_ufunc__ = None

    def __init__(self, nparams: int, in_shape: Sequence[int], out_shape: Sequence[int]) -> None:
        self.nparams = int(nparams)
        self.in_shape = tuple(int(s) for s in in_shape)
        self.out_shape = tuple(int(s) for s in out_shape)
        self.shape = (int(np.prod(self.out_shape)), int(np.prod(self.in_shape)))

    # ------------------------------------------------------------------ hooks
    def _prepare(self, theta: np.ndarray) -> Any:
        """Everything that depends only on ``theta`` (pure, eager); the default is ``theta``."""
        return theta

    @abc.abstractmethod
    def _apply(self, state: Any, x: np.ndarray, transpose: bool) -> np.ndarray:
        """Return ``x @ K(theta).T`` (``x @ K(theta)`` with ``transpose``); ``x`` is 2-D."""

    def _prepare_data(self, x: np.ndarray, transpose: bool) -> Any:
        """Everything that depends only on the batch ``x`` (pure, eager); the default is ``x``."""
        return x

    def _jvp(self, state: Any, data: Any, v: np.ndarray, transpose: bool) -> np.ndarray:
        """Directional derivative of ``_apply`` in direction ``v``.

        The default holds for affine families with no offset (``K(v)`` is the linear part)
        whose data state is ``x`` itself; other families override it.
        """
        return self._apply(self._prepare(v), data, transpose)

    @abc.abstractmethod
    def _vjp(self, state: Any, data: Any, w: np.ndarray, transpose: bool, per_example: bool) -> np.ndarray:
        """Return ``J^T w`` (shape ``(p,)``) or per-example rows (shape ``(n, p)``)."""

    def _check_constraints(self, theta: np.ndarray) -> None:
        """Raise ``ValueError`` when ``theta`` violates a constraint of the family."""

    # Optional transform-domain hooks (docs/contract.md): a family whose products run through a
    # transform of the batch (an FFT) overrides all three, and the torch bridge then transforms
    # each batch once, keeping the forward's transform for the gradient in theta. The bridge calls
    # them only for a family that overrides `_transform` (these bodies are never reached); they
    # have no default made of the other hooks because the kept "transform" would then be a view
    # of the input tensor, outside autograd's check that saved tensors are not modified in place.
    def _transform(self, x: np.ndarray, transpose: bool) -> Any:
        """The batch's transform, what :meth:`_apply_transformed` and :meth:`_vjp_transformed` take."""
        raise NotImplementedError

    def _apply_transformed(self, state: Any, t: Any, transpose: bool) -> np.ndarray:
        """:meth:`_apply` of the batch whose :meth:`_transform` is ``t``."""
        raise NotImplementedError

    def _vjp_transformed(self, state: Any, tx: Any, tw: Any, transpose: bool) -> np.ndarray:
        """:meth:`_vjp` summed over the examples, from the transforms of ``x`` and of ``w``."""
        raise NotImplementedError

    def _dense(self, state: Any) -> np.ndarray:
        """``K(theta)`` as a dense array from the prepared state (by default: applied to the identity)."""
        eye = np.eye(self.shape[1], dtype=self._state_dtype(state))
        return np.ascontiguousarray(self._apply(state, eye, False).T)

    def _state_dtype(self, state: Any) -> np.dtype:
        """The dtype a state computes in (families whose state is not ``theta`` override it)."""
        return np.asarray(state).dtype

    def _build_Q(self) -> sp.csc_array:
        """Build ``Q`` column by column from ``K(e_k)``; families override it to stay sparse."""
        self._check_dense_size(self.shape[0] * self.shape[1] * 2, "Q")
        cols = []
        zero = np.zeros(self.nparams)
        offset = self._dense(self._prepare(zero)).ravel(order="F")
        for k in range(self.nparams):
            e = np.zeros(self.nparams)
            e[k] = 1.0
            cols.append(sp.csc_array((self._dense(self._prepare(e)).ravel(order="F") - offset)[:, None]))
        return sp.hstack(cols, format="csc") if cols else sp.csc_array((self.shape[0] * self.shape[1], 0))

    # ------------------------------------------------------------ properties
    @property
    def theta_shape(self) -> tuple[int, ...]:
        """Shape in which ``theta`` may also be passed (flattened C-order); ``(nparams,)`` by default."""
        return (self.nparams,)

    def diagonalize(self, theta) -> Diagonalized | None:
        r"""``K(θ)`` as a :class:`~structops.kernels.diagonalized.Diagonalized` operator, or None.

        A family diagonalised by a fast transform (FFT, DCT, a Kronecker product of 1-D
        factors) returns :math:`K(\theta) = U\,\operatorname{blkdiag}_\xi(B(\xi))\,V^H` here;
        every spectral solver (:func:`structops.solvers.inverse`, ``implicit_step``,
        ``eigvals``, ``svdvals``, ``spectral_norm``, ``cond``, ``project_spectral_norm``)
        dispatches on it (:func:`structops.solvers.route` tells which route a call takes).
        The default, None, means "no fast transform": the solvers then use dense linear
        algebra, certified bounds or estimates. A user's family opts in by overriding this
        method (see docs/contract.md).

        Parameters
        ----------
        theta : array_like, shape (p,)
            Parameters (validated).

        Returns
        -------
        Diagonalized or None
        """
        self.validate_theta(theta)
        return None

    def periodic_embedding(self, theta) -> PeriodicEmbedding | None:
        r"""``K(θ)`` as a restriction of a periodic convolution on a larger grid, or None.

        A zero-boundary convolution is the periodic convolution :math:`C_L` on a grid padded
        by the stencil, applied to the zero-embedded input and sampled at the output points:
        :math:`K = R\,C_L\,E`, so :math:`\|K\|_2 \le \|R\,C_L\|_2`, exactly computable from the
        symbol of :math:`C_L`. The spectral solvers use it for *certified* upper bounds
        (:func:`structops.solvers.spectral_norm`, ``cond``, ``project_spectral_norm``). Default: None.
        """
        self.validate_theta(theta)
        return None

    def as_convolution(self) -> ConvStencil | None:
        r"""The convolution behind ``K(θ)`` and how ``θ`` maps to its stencil, or None.

        A family whose operator is a :class:`structops.Conv` :math:`C(w(\theta))` returns a
        :class:`~structops.kernels.diagonalized.ConvStencil`: the ``Conv`` (its grid, stencil,
        boundary, channels, stride), ``weights(theta)`` (the full stencil :math:`w(\theta)`) and,
        when :math:`w` is linear in :math:`\theta`, ``solve(w)`` (the least-squares :math:`\theta`).
        The circulant preconditioners (:func:`structops.solvers.circulant_preconditioner`) and the
        Lipschitz projection (:func:`structops.solvers.project_spectral_norm`) reach the stencil
        through this hook. Default: None (no convolution behind the family).
        """
        return None

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
    def validate_theta(self, theta, name: str = "theta") -> np.ndarray:
        r"""Validate parameters for this family and return them as a float vector.

        Checks the dtype (float32/float64; integers become float64), the length ``nparams``
        (or the family's natural :attr:`theta_shape`), finiteness and the family's
        constraints (e.g. :math:`\theta \ge 0`); every error names ``name``.

        Raises
        ------
        TypeError, ValueError
            If ``theta`` is not a valid parameter vector of this family.
        """
        theta = check_theta(theta, self.nparams, name, self.theta_shape)
        self._check_constraints(theta)
        return theta

    def is_feasible(self, theta) -> bool:
        """Whether ``theta`` lies within :attr:`bounds` (always True for an unconstrained family)."""
        bounds = self.bounds
        if bounds is None:
            return True
        lower, upper = bounds
        theta = np.asarray(theta)
        return bool(np.all(theta >= lower) and np.all(theta <= upper))

    def _check_dense_size(self, entries: int, what: str) -> None:
        if entries > MAX_DENSE_ENTRIES:
            raise MemoryError(
                f"{what} of {self!r} would hold {entries:,} dense entries (more than "
                f"{MAX_DENSE_ENTRIES:,}); use `op(theta)` or `apply(theta, X)`, which never densify."
            )

    def matrix(self, theta) -> np.ndarray:
        """Return ``K(theta)`` as a dense array of shape ``shape`` (for checks and small sizes).

        Raises
        ------
        MemoryError
            If the dense matrix would have more than ``MAX_DENSE_ENTRIES`` entries.
        """
        theta = self.validate_theta(theta)
        self._check_dense_size(self.shape[0] * self.shape[1], "matrix()")
        return self._dense(self._prepare(theta))

    def op(self, theta) -> KernelOperator:
        """Return ``K(theta)`` as a pylops ``LinearOperator`` with a structured adjoint.

        ``theta`` is copied: changing the caller's array afterwards (e.g. an optimiser's
        in-place update) does not change the operator.
        """
        return KernelOperator(self, self.validate_theta(theta).copy())

    def apply(self, theta, X, transpose: bool = False) -> np.ndarray:
        """Apply ``K(theta)`` (or its transpose) to every example of a batch.

        Parameters
        ----------
        theta : array_like, shape (p,)
            Parameters, float32 or float64; the computation runs in this dtype.
        X : array_like, shape (n, *in_shape) or (n, prod(in_shape))
            Examples along the first axis (``out_shape`` with ``transpose=True``). A single
            example of shape ``in_shape`` (or, for one channel, the grid alone, e.g. ``(16, 16)``
            for ``Conv((16, 16), 3)``) is accepted too, when it cannot be read as a batch.
        transpose : bool, optional
            Apply ``K(theta).T`` instead of ``K(theta)``.

        Returns
        -------
        numpy.ndarray, shape (n, *out_shape)
            ``K(theta) x_i`` for each example (``(n, *in_shape)`` with ``transpose``); for a
            single example, one output of shape ``out_shape`` (``in_shape``) -- or, for a
            grid-shaped image of a one-channel family, the output grid alone (``(H, W)`` in,
            ``(H, W)`` out for ``Conv((H, W), 3)``).

        Examples
        --------
        >>> import numpy as np, structops
        >>> k = structops.Conv((4, 5), 3)
        >>> theta = np.zeros(9); theta[4] = 2.0
        >>> k.apply(theta, np.ones((4, 5))).shape, k.apply(theta, np.ones((1, 4, 5))).shape
        ((4, 5), (1, 4, 5))
        """
        transpose = check_flag(transpose, "transpose")
        theta = self.validate_theta(theta)
        x_shape, y_shape = self._io_shapes(transpose)
        single = _is_single_example(X, x_shape)
        x = check_batch(np.reshape(X, (1, -1)) if single else X, x_shape, theta.dtype)
        y = self._apply(self._prepare(theta), x, transpose).reshape((x.shape[0], *y_shape))
        if not single:
            return y
        return y[0].reshape(_single_output_shape(np.shape(X), x_shape, y_shape))

    def jac(self, theta, X, transpose: bool = False) -> KernelJacobian:
        r"""Jacobian of :math:`\theta \mapsto` ``apply(theta, X, transpose)`` as an operator.

        ``X`` is a batch, or one example as :meth:`apply` accepts it (``in_shape``, or the
        grid alone for a one-channel family): the Jacobian is then that of the single output,
        with pylops ``dimsd`` the shape :meth:`apply` returns for it.

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
        transpose = check_flag(transpose, "transpose")
        theta = self.validate_theta(theta).copy()
        x_shape, y_shape = self._io_shapes(transpose)
        if _is_single_example(X, x_shape):
            x = check_batch(np.reshape(X, (1, -1)), x_shape, theta.dtype)
            dimsd = _single_output_shape(np.shape(X), x_shape, y_shape)
            return KernelJacobian(self, theta, x, transpose, dimsd=dimsd)
        return KernelJacobian(self, theta, check_batch(X, x_shape, theta.dtype), transpose)

    def _io_shapes(self, transpose: bool) -> tuple[tuple[int, ...], tuple[int, ...]]:
        return (self.out_shape, self.in_shape) if transpose else (self.in_shape, self.out_shape)

    # ------------------------------------------------------- operator algebra
    # A family is a map theta -> K(theta), not an operator or an array: products with
    # operators and arrays fail with a message that says what to write instead.
    def _not_an_operator(self) -> TypeError:
        return TypeError(
            f"{self!r} is a kernel family (a map theta -> K(theta)), not an operator: compose the operator "
            "`kernel.op(theta)` at a fixed theta (e.g. `A @ kernel.op(theta)`), or use structops.Chain(A, kernel) "
            "for the family theta -> A K(theta)."
        )

    def __matmul__(self, other):
        raise self._not_an_operator()

    def __rmatmul__(self, other):
        raise self._not_an_operator()

    @property
    def ndim(self) -> int:
        """Not defined: a family is not an array (pylops' ``A @ kernel`` asks for it; see :meth:`op`)."""
        raise self._not_an_operator()

    def reshape(self, *shape):
        """Not defined: a family is not an array (pylops' ``A @ kernel`` asks for it; see :meth:`op`)."""
        raise self._not_an_operator()


def _is_single_example(X, example_shape: tuple[int, ...]) -> bool:
    """Whether ``X`` is one example rather than a batch.

    One example has shape ``example_shape`` or, for a one-channel example ``(1, *grid)``,
    ``grid``; it is recognised only when ``X`` is not also a valid batch (``(n, *example_shape)``
    or ``(n, prod(example_shape))``), so a batch is never misread.
    """
    shape = tuple(np.shape(X))
    size = int(np.prod(example_shape))
    is_batch = len(shape) >= 1 and (shape[1:] == example_shape or (len(shape) == 2 and shape[1] == size))
    if is_batch:
        return False
    return shape == example_shape or is_grid_of(shape, example_shape)


def _single_output_shape(
    shape: tuple[int, ...], example_shape: tuple[int, ...], out_shape: tuple[int, ...]
) -> tuple[int, ...]:
    """The shape of the output for one example of ``shape``: the output grid for a grid-shaped image.

    A one-channel example given as its grid alone (``(H, W)`` for ``in_shape == (1, H, W)``)
    gives the output grid alone when the output has one channel too; any other single example
    gives ``out_shape`` (pylops' ``dimsd``).
    """
    return grid_output_shape(out_shape) if is_grid_of(shape, example_shape) else out_shape
