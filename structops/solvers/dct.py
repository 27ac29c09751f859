r"""Exact solves for doubly symmetric stencils with mirror boundaries, through discrete cosine transforms.

The lecture notes diagonalise a periodic convolution with the FFT (Lars Ruthotto, *Numerical
Methods for Deep Learning*, "Parametric Models"); the same argument with mirror boundaries
gives cosine transforms. Let :math:`w` be a stencil with :math:`w_o = w_{-o}` on every axis
(:class:`structops.SymmetricConv`) and take one axis of :math:`n` samples.

* ``bc="reflect"`` (whole-sample mirror, :math:`\dots x_2\, x_1 \mid x_0\, x_1 \dots`) extends
  the signal evenly with period :math:`2(n-1)`. The even sequences
  :math:`v_k(i) = \cos(\pi k i / (n-1))` are mapped to multiples of themselves:
  :math:`\sum_o w_o \cos(\pi k (i - o)/(n-1)) = \lambda_k v_k(i)` (the sine terms cancel by the
  symmetry of :math:`w`), so DCT-I diagonalises :math:`K`.
* ``bc="symmetric"`` (half-sample mirror, :math:`\dots x_1\, x_0 \mid x_0\, x_1 \dots`) extends
  with period :math:`2n`; the eigenvectors are :math:`\cos(\pi k (i + \frac12)/n)`, DCT-II.

In :math:`d` dimensions the eigenvectors are tensor products and

.. math::
    \lambda_k = \sum_o w_o \prod_{a=1}^d \cos\Big(\frac{\pi k_a o_a}{L_a}\Big), \qquad
    L_a = n_a - 1 \text{ (DCT-I)}, \quad L_a = n_a \text{ (DCT-II)},

computed from the stencil in :math:`O(N \sum_a s_a)` by one small cosine matrix per axis
(:func:`cosine_symbol`). With :math:`C` the orthonormal transform (``scipy.fft.dctn(x,
type=t, norm="ortho")``):

* DCT-II: :math:`K = C^\top \Lambda C` -- :math:`K` is symmetric, and every function of
  :math:`K` and :math:`K^\top K = C^\top\Lambda^2 C` is the multiplier of the same function of
  :math:`\lambda`;
* DCT-I: :math:`K = B^{-1} C \Lambda C B` with :math:`C = C^\top = C^{-1}` and :math:`B` the
  diagonal (a tensor product over the axes) that is :math:`1/\sqrt2` on the first and last sample
  of each axis and 1 elsewhere (numpy's ``reflect`` folds the mirror image onto the second
  sample, so :math:`K` is not symmetric; it is self-adjoint in the inner product
  :math:`\langle x, y\rangle_{B^2}`). Then :math:`(K + \alpha I)^{-1} = B^{-1} C (\Lambda +
  \alpha)^{-1} C B` and its adjoint is :math:`B C (\Lambda + \alpha)^{-1} C B^{-1}`, but
  :math:`K^\top K = B S B^{-2} S B` (:math:`S = C\Lambda C`) is *not* diagonalised by
  :math:`C`: :func:`~structops.solvers.dct_implicit_step` and ``normal=True`` need ``"symmetric"``.

:class:`structops.SymmetricConv` (one channel, stride 1) declares this through its
``diagonalize(theta)``, a :class:`~structops.kernels.diagonalized.CosineMultiplier`; every public
solver (:func:`structops.solvers.inverse`, :func:`~structops.solvers.implicit_step`,
:func:`~structops.solvers.eigvals`, ``svdvals``, ``spectral_norm``, ``cond``) takes the
``"cosine"`` route on it (:func:`structops.solvers.route`). The functions here are the same
solvers restricted to that route.
"""

from __future__ import annotations

import numpy as np

from .._validation import check_number
from ..kernels._base import ParametricKernel, as_kernel
from ..kernels.diagonalized import CosineMultiplier, Diagonalized, cosine_symbol
from ._routes import route
from .spectral import check_rcond, invert_diagonal, normal_inverse, not_normal

__all__ = ["CosineMultiplier", "cosine_symbol", "dct_eigvals", "dct_implicit_step", "dct_inverse", "is_cosine"]


def is_cosine(kernel) -> bool:
    """Whether ``kernel`` is diagonalised by a DCT: its ``diagonalize`` gives a :class:`CosineMultiplier`.

    Asked at a feasible parameter (``kernel.random_theta(0)``); the cosine families
    (:class:`structops.SymmetricConv` with a mirror boundary) are so for every parameter.

    Examples
    --------
    >>> import structops
    >>> is_cosine(structops.SymmetricConv(8, 3, bc="symmetric")), is_cosine(structops.SymmetricConv(8, 3))
    (True, False)
    """
    if not isinstance(kernel, ParametricKernel):
        return False
    return isinstance(kernel.diagonalize(kernel.random_theta(0)), CosineMultiplier)


def _cosine(kernel, theta, func: str) -> Diagonalized:
    """``kernel.diagonalize(theta)`` if it is a DCT multiplier, else the ``ValueError`` naming ``func``."""
    as_kernel(kernel)
    r = route(kernel, theta, func)
    if r.name != "cosine" or r.diagonal is None:
        raise ValueError(
            f"`{func}` needs a kernel diagonalised by a DCT (structops.SymmetricConv with bc='reflect' or "
            f"'symmetric', one channel, stride 1), got `kernel` = {kernel!r}: {r.reason}"
        )
    return r.diagonal


def dct_eigvals(kernel: ParametricKernel, theta) -> np.ndarray:
    r"""All eigenvalues of ``K(θ)`` for a kernel diagonalised by a DCT, in :math:`O(N \sum_a s_a)`.

    Parameters
    ----------
    kernel : structops.SymmetricConv
        One channel, stride 1, ``bc`` ``"reflect"`` or ``"symmetric"``.
    theta : array_like, shape (p,)

    Returns
    -------
    numpy.ndarray, real, shape ``grid``
        :func:`~structops.solvers.dct.cosine_symbol` of the kernel's stencil, in the dtype of ``theta``.

    Raises
    ------
    ValueError
        If ``kernel`` is not diagonalised by a DCT or ``theta`` is invalid.

    Examples
    --------
    >>> import structops
    >>> k = structops.SymmetricConv(5, 3, bc="reflect")
    >>> theta = np.array([2.0, -1.0])
    >>> bool(np.allclose(np.sort(dct_eigvals(k, theta)), np.sort(np.linalg.eigvals(k.matrix(theta)).real)))
    True
    """
    return _cosine(kernel, theta, "eigvals").eigenvalues()


def dct_inverse(
    kernel: ParametricKernel,
    theta,
    *,
    alpha: float = 0.0,
    normal: bool = False,
    rcond: float | None = None,
) -> Diagonalized:
    r"""Exact :math:`(K + \alpha I)^{-1}` (or :math:`(K^\top K + \alpha I)^{-1}`) through the DCT, :math:`O(N\log N)`.

    Parameters
    ----------
    kernel : structops.SymmetricConv
        One channel, stride 1, ``bc`` ``"reflect"`` (DCT-I) or ``"symmetric"`` (DCT-II).
    theta : array_like, shape (p,)
        Parameters; the operator runs in their dtype.
    alpha : float, optional
        Shift (any real; :math:`\ge 0` with ``normal``).
    normal : bool, optional
        Invert :math:`K^\top K + \alpha I` (``"symmetric"`` only).
    rcond : float, optional
        None: a singular or near-singular system raises. In ``[0, 1)``: drop the eigenvalues
        ``|μ| <= rcond · max|μ|`` (the Moore--Penrose pseudo-inverse, as
        ``numpy.linalg.pinv(rcond=rcond)``; ``"symmetric"`` only, where singular values are
        :math:`|\mu|`).

    Returns
    -------
    CosineMultiplier
        A pylops ``LinearOperator`` of shape ``(N, N)`` with its adjoint: the multiplier
        :math:`1/(\lambda_k + \alpha)` (or :math:`1/(\lambda_k^2 + \alpha)`).

    Raises
    ------
    ValueError
        If ``kernel`` is not diagonalised by a DCT, ``alpha``/``rcond`` are invalid, or
        ``normal``/``rcond`` are asked of a ``"reflect"`` kernel (see the module notes).
    numpy.linalg.LinAlgError
        If the system is singular or near-singular and ``rcond`` is None. For ``"reflect"``
        the ratio of the extreme :math:`|\lambda_k + \alpha|` is checked, within a factor
        :math:`2^d` of the condition number (:math:`K` is :math:`B^{-1} S B` with
        :math:`S` symmetric and :math:`\kappa(B)^2 = 2^d`).

    Examples
    --------
    >>> import structops
    >>> k = structops.SymmetricConv((4, 5), (3, 3), bc="symmetric")
    >>> theta = np.array([4.0, -1.0, -1.0, 0.0])  # the 5-point Laplacian, singular (constants)
    >>> A = dct_inverse(k, theta, alpha=0.5)
    >>> bool(np.allclose(A.todense(), np.linalg.inv(k.matrix(theta) + 0.5 * np.eye(20))))
    True
    """
    D = _cosine(kernel, theta, "inverse")
    alpha = check_number(alpha, "alpha", minimum=0.0 if normal else None)
    rcond = check_rcond(rcond)
    return invert_diagonal(D, alpha=alpha, normal=normal, rcond=rcond, name="K(θ)", kernel=kernel)


def dct_implicit_step(kernel: ParametricKernel, theta, h: float) -> Diagonalized:
    r"""The implicit step :math:`(h K^\top K + I)^{-1}` through the DCT-II (``bc="symmetric"``).

    Parameters
    ----------
    kernel : structops.SymmetricConv
        One channel, stride 1, ``bc="symmetric"``.
    theta : array_like, shape (p,)
    h : float
        Step size :math:`h \ge 0`.

    Returns
    -------
    CosineMultiplier
        Symmetric positive definite, multiplier :math:`1/(h\lambda_k^2 + 1) \in (0, 1]`.

    Raises
    ------
    ValueError
        If ``kernel`` is not diagonalised by a DCT, is diagonalised by DCT-I (``"reflect"``:
        :math:`K^\top K` is not diagonalised by it, see the module notes), or ``h`` is negative.

    Examples
    --------
    >>> import structops
    >>> k = structops.SymmetricConv(6, 3, bc="symmetric")
    >>> theta = np.array([2.0, -1.0])
    >>> M = k.matrix(theta)
    >>> bool(np.allclose(dct_implicit_step(k, theta, 0.3).todense(), np.linalg.inv(0.3 * M.T @ M + np.eye(6))))
    True
    """
    D = _cosine(kernel, theta, "implicit_step")
    h = check_number(h, "h", minimum=0.0)
    if not D.unitary:
        raise not_normal(kernel, "implicit_step (h KᵀK + I)⁻¹")
    return normal_inverse(D, h, 1.0, None, f"{h:g}·KᵀK + I")
