r"""Reparametrised families :math:`\varphi \mapsto K(g(\varphi))`: positivity, shared or structured stencils.

A reparametrisation keeps an inner family :math:`K(\theta)` and changes its parameter through a
smooth map :math:`\theta = g(\varphi)`. The chain rule gives the Jacobian,

.. math::
    J_\varphi = J_\theta\, Dg(\varphi), \qquad J_\varphi^\top w = Dg(\varphi)^\top J_\theta^\top w,

so a reparametrised family needs only :math:`g`, :math:`Dg\,v` and :math:`Dg^\top u`; the inner
family's prepared states pass through unchanged. :class:`Softplus` makes
:math:`\theta = \log(1 + e^\varphi) > 0`; :class:`LinearReparam` makes :math:`\theta = P\varphi`
(tied or symmetric stencils, depthwise blocks), and stays affine.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from ._base import ParametricKernel, as_kernel
from ._sparse import matmul_tall
from .diagonalized import ConvStencil

if TYPE_CHECKING:
    from .diagonalized import Diagonalized, PeriodicEmbedding

__all__ = ["LinearReparam", "Reparametrized", "Softplus"]


def _softplus(phi: np.ndarray) -> np.ndarray:
    return np.logaddexp(0, phi).astype(phi.dtype, copy=False)


def _sigmoid(phi: np.ndarray) -> np.ndarray:
    return (0.5 * (1 + np.tanh(0.5 * phi))).astype(phi.dtype, copy=False)


class Reparametrized(ParametricKernel):
    r"""Base of the families :math:`\varphi \mapsto K(g(\varphi))` of an inner family ``kernel``.

    Subclasses implement :meth:`to_theta` (:math:`g`), :meth:`_push` (:math:`Dg(\varphi)v`)
    and :meth:`_pull` (:math:`Dg(\varphi)^\top u`, for ``u`` of shape ``(p_inner,)`` or
    ``(n, p_inner)``). The state is ``(phi, inner state at g(phi))``.

    Parameters
    ----------
    kernel : ParametricKernel
        The inner family.
    nparams : int
        Number of parameters :math:`\varphi`.
    """

    linear = False

    def __init__(self, kernel: ParametricKernel, nparams: int) -> None:
        self.kernel = as_kernel(kernel)
        super().__init__(nparams, kernel.in_shape, kernel.out_shape)

    @abc.abstractmethod
    def _map(self, phi: np.ndarray) -> np.ndarray:
        r""":math:`g(\varphi)` on a validated ``phi``, in its dtype."""

    @abc.abstractmethod
    def _push(self, phi: np.ndarray, v: np.ndarray) -> np.ndarray:
        r""":math:`Dg(\varphi)\,v`."""

    @abc.abstractmethod
    def _pull(self, phi: np.ndarray, u: np.ndarray) -> np.ndarray:
        r""":math:`Dg(\varphi)^\top u` for ``u`` of shape ``(p_inner,)`` or, row by row, ``(n, p_inner)``."""

    def to_theta(self, phi) -> np.ndarray:
        r"""The parameter :math:`\theta = g(\varphi)` of the inner family."""
        return self._map(self.validate_theta(phi, "phi"))

    # ---------------------------------------------------------------- spectra
    def diagonalize(self, phi) -> Diagonalized | None:
        r"""The inner family's diagonalisation at :math:`\theta = g(\varphi)`: the operator is the same."""
        return self.kernel.diagonalize(self._map(self.validate_theta(phi, "phi")))

    def periodic_embedding(self, phi) -> PeriodicEmbedding | None:
        r"""The inner family's periodic embedding at :math:`\theta = g(\varphi)`."""
        return self.kernel.periodic_embedding(self._map(self.validate_theta(phi, "phi")))

    # ------------------------------------------------------------------ hooks
    def _prepare(self, phi):
        return phi, self.kernel._prepare(self._map(phi))

    def _state_dtype(self, state):
        return self.kernel._state_dtype(state[1])

    def _apply(self, state, x, transpose):
        return self.kernel._apply(state[1], x, transpose)

    def _prepare_data(self, x, transpose):
        return self.kernel._prepare_data(x, transpose)

    def _jvp(self, state, data, v, transpose):
        phi, inner = state
        return self.kernel._jvp(inner, data, self._push(phi, v), transpose)

    def _vjp(self, state, data, w, transpose, per_example):
        phi, inner = state
        return self._pull(phi, self.kernel._vjp(inner, data, w, transpose, per_example))

    def _dense(self, state):
        return self.kernel._dense(state[1])


class Softplus(Reparametrized):
    r"""The family :math:`\varphi \mapsto K(\operatorname{softplus}(\varphi))` of an affine family ``K``.

    Turns a constraint :math:`\theta \ge 0` (as in :class:`MMatrix`) into an unconstrained
    parameter :math:`\varphi \in \mathbb{R}^p` with
    :math:`\theta = \operatorname{softplus}(\varphi) = \log(1 + e^{\varphi}) > 0`.

    Parameters
    ----------
    kernel : ParametricKernel
        An affine family (``kernel.linear`` is True).

    Raises
    ------
    TypeError
        If ``kernel`` is not an affine kernel family.

    Notes
    -----
    The model is no longer linear in its parameter, so it has no ``Q``. The Jacobian is the
    chain rule :math:`J_\varphi = J_\theta\,\operatorname{diag}(\sigma(\varphi))` with the
    logistic :math:`\sigma = \operatorname{softplus}'`; its Taylor remainder falls as
    :math:`O(h^2)`. The inner family's cached states (e.g. a convolution's spectra) pass through.

    Examples
    --------
    >>> from structops import MMatrix
    >>> k = Softplus(MMatrix(2))
    >>> k.matrix(np.zeros(2)).round(4)
    array([[ 0.6931, -0.6931],
           [-0.6931,  0.6931]])
    """

    def __init__(self, kernel: ParametricKernel) -> None:
        if not as_kernel(kernel).linear:
            raise TypeError(f"`kernel` must be an affine kernel family (kernel.linear is True), got {kernel!r}.")
        super().__init__(kernel, kernel.nparams)

    def __repr__(self) -> str:
        return f"Softplus({self.kernel!r})"

    def _map(self, phi):
        return _softplus(phi)

    def _push(self, phi, v):
        return _sigmoid(phi) * v

    def _pull(self, phi, u):
        return u * _sigmoid(phi)


class LinearReparam(Reparametrized):
    r"""The family :math:`\varphi \mapsto K(P\varphi)` for a fixed sparse matrix :math:`P`.

    Ties or structures the parameters of an inner family: a symmetric stencil is a full stencil
    :math:`P\varphi` with mirrored taps equal, a depthwise convolution a full multi-channel
    stencil with the off-diagonal channel blocks zero. If ``K`` is affine so is the result,
    with :math:`Q = Q_K P` and the inner family's :math:`q`.

    Parameters
    ----------
    kernel : ParametricKernel
        The inner family :math:`K(\theta)`, :math:`\theta \in \mathbb{R}^{p_K}`.
    P : scipy.sparse matrix or array_like, shape (p_K, p)
        The parameter map.

    Raises
    ------
    ValueError
        If ``P`` does not have ``kernel.nparams`` rows.
    """

    def __init__(self, kernel: ParametricKernel, P) -> None:
        P = sp.csr_array(P, dtype=np.float64)
        if P.shape[0] != kernel.nparams:
            raise ValueError(f"`P` must have kernel.nparams = {kernel.nparams} rows, got shape {P.shape}.")
        self.P = P
        self._P_by_dtype = {dt: P.astype(dt) for dt in (np.float32, np.float64)}
        self.linear = kernel.linear
        super().__init__(kernel, P.shape[1])

    def __repr__(self) -> str:
        return f"LinearReparam({self.kernel!r}, P={self.P.shape})"

    def _matrix(self, dtype: np.dtype) -> sp.csr_array:
        return self._P_by_dtype[np.dtype(dtype).type]

    def _map(self, phi):
        return self._matrix(phi.dtype) @ phi

    def _push(self, phi, v):
        return self._matrix(v.dtype) @ v

    def _pull(self, phi, u):
        Pt = self._matrix(u.dtype).T
        return Pt @ u if u.ndim == 1 else np.asarray((Pt @ u.T).T)

    def _build_Q(self):
        return matmul_tall(self.kernel.Q, self.P)

    @property
    def q(self) -> np.ndarray | None:
        """The inner family's constant part."""
        return self.kernel.q

    def as_convolution(self) -> ConvStencil | None:
        r"""The inner convolution's stencil at :math:`P\varphi`, with the least-squares ``solve`` through ``P``.

        None unless the inner family has a linear stencil map and no constant part.
        """
        inner = self.kernel.as_convolution()
        if inner is None or inner.solve is None or self.q is not None:
            return None
        P, to_inner = self.P, inner.solve

        def solve(w: np.ndarray) -> np.ndarray:
            return spla.lsqr(P, to_inner(w), atol=1e-15, btol=1e-15, iter_lim=10 * P.shape[1] + 100)[0]

        return ConvStencil(inner.conv, lambda phi: inner.weights(self._map(self.validate_theta(phi, "phi"))), solve)
