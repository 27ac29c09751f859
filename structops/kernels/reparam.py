r"""Reparametrised families :math:`K(g(\varphi))`, e.g. positivity through softplus."""

from __future__ import annotations

import numpy as np

from ._base import ParametricKernel


def _softplus(phi: np.ndarray) -> np.ndarray:
    return np.logaddexp(0, phi).astype(phi.dtype, copy=False)


def _sigmoid(phi: np.ndarray) -> np.ndarray:
    return (0.5 * (1 + np.tanh(0.5 * phi))).astype(phi.dtype, copy=False)


class Softplus(ParametricKernel):
    r"""The family :math:`\varphi \mapsto K(\operatorname{softplus}(\varphi))` of an affine family ``K``.

    Turns a constraint :math:`\theta \ge 0` (as in :class:`MMatrix`) into an unconstrained
    parameter :math:`\varphi \in \mathbb{R}^p` with
    :math:`\theta = \operatorname{softplus}(\varphi) = \log(1 + e^{\varphi}) > 0`.

    Parameters
    ----------
    kernel : ParametricKernel
        An affine family (``kernel.linear`` is True).

    Notes
    -----
    The model is no longer linear in its parameter, so it has no ``Q``. The Jacobian is the
    chain rule :math:`J_\varphi = J_\theta\,\operatorname{diag}(\sigma(\varphi))` with the
    logistic :math:`\sigma = \operatorname{softplus}'`; its Taylor remainder falls as
    :math:`O(h^2)`.

    Examples
    --------
    >>> from structops import MMatrix
    >>> k = Softplus(MMatrix(2))
    >>> k.matrix(np.zeros(2)).round(4)
    array([[ 0.6931, -0.6931],
           [-0.6931,  0.6931]])
    """

    linear = False

    def __init__(self, kernel: ParametricKernel) -> None:
        if not isinstance(kernel, ParametricKernel) or not kernel.linear:
            raise TypeError(f"`kernel` must be an affine ParametricKernel, got {kernel!r}.")
        self.kernel = kernel
        super().__init__(kernel.nparams, kernel.in_shape, kernel.out_shape)

    def __repr__(self) -> str:
        return f"Softplus({self.kernel!r})"

    def to_theta(self, phi) -> np.ndarray:
        """The parameter ``θ = softplus(φ)`` of the wrapped family."""
        return _softplus(self._theta(phi, "phi"))

    def _apply(self, theta, x, transpose):
        return self.kernel._apply(_softplus(theta), x, transpose)

    def _jvp(self, theta, x, v, transpose):
        return self.kernel._jvp(_softplus(theta), x, _sigmoid(theta) * v, transpose)

    def _vjp(self, theta, x, w, transpose, per_example):
        return self.kernel._vjp(_softplus(theta), x, w, transpose, per_example) * _sigmoid(theta)

    # the wrapped family's cached states pass through (e.g. a convolution's spectra), when it
    # has any: a family without data state keeps the plain hooks above, so a subclass that
    # overrides only _jvp/_vjp (as the test doubles of structops.testing do) is still used
    def _passes(self, hook: str) -> bool:
        """Whether the wrapped family overrides ``hook`` (has a state of that kind to pass)."""
        return getattr(type(self.kernel), hook) is not getattr(ParametricKernel, hook)

    def _prepare(self, theta):
        if not self._passes("_prepare"):
            return super()._prepare(theta)
        return self.kernel._prepare(_softplus(theta))

    def _apply_prepared(self, state, x, transpose):
        if not self._passes("_prepare"):
            return super()._apply_prepared(state, x, transpose)
        return self.kernel._apply_prepared(state, x, transpose)

    def _prepare_data(self, x, transpose):
        if not self._passes("_prepare_data"):
            return super()._prepare_data(x, transpose)
        return self.kernel._prepare_data(x, transpose)

    def _jvp_prepared(self, theta, state, v, transpose):
        if not self._passes("_prepare_data"):
            return super()._jvp_prepared(theta, state, v, transpose)
        return self.kernel._jvp_prepared(_softplus(theta), state, _sigmoid(theta) * v, transpose)

    def _vjp_prepared(self, theta, state, w, transpose, per_example):
        if not self._passes("_prepare_data"):
            return super()._vjp_prepared(theta, state, w, transpose, per_example)
        return self.kernel._vjp_prepared(_softplus(theta), state, w, transpose, per_example) * _sigmoid(theta)

    def _dense(self, theta):
        return self.kernel._dense(_softplus(theta))
