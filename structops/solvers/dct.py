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

The public solvers :func:`structops.solvers.inverse`, :func:`~structops.solvers.implicit_step`
and :func:`~structops.solvers.eigvals` dispatch here for every kernel with a ``dct_type``
(1 or 2; :attr:`structops.SymmetricConv.dct_type` for one channel and stride 1).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.fft as sfft

from .._validation import check_real_scalar
from ..kernels._base import ParametricKernel, as_kernel
from ..kernels.operators import ColumnBatched, real_apply
from .spectral import _check_conditioned, check_rcond

__all__ = ["CosineMultiplier", "cosine_symbol", "dct_eigvals", "dct_implicit_step", "dct_inverse", "is_cosine"]

DCT_TYPES = (1, 2)


def is_cosine(kernel) -> bool:
    """Whether ``kernel`` is diagonalised by a DCT (it has ``dct_type`` 1 or 2).

    Examples
    --------
    >>> import structops
    >>> is_cosine(structops.SymmetricConv(8, 3, bc="symmetric")), is_cosine(structops.SymmetricConv(8, 3))
    (True, False)
    """
    return isinstance(kernel, ParametricKernel) and getattr(kernel, "dct_type", None) in DCT_TYPES


def _require_cosine(kernel, func: str) -> Any:
    as_kernel(kernel)
    if not is_cosine(kernel):
        raise ValueError(
            f"`{func}` needs a kernel diagonalised by a DCT (a `dct_type` of 1 or 2: structops.SymmetricConv with "
            f"bc='reflect' or 'symmetric', one channel, stride 1), got `kernel` = {kernel!r}."
        )
    return kernel


def cosine_symbol(stencil: np.ndarray, grid: tuple[int, ...], dct_type: int) -> np.ndarray:
    r"""Eigenvalues :math:`\lambda_k` of a doubly symmetric stencil under mirror boundaries.

    Parameters
    ----------
    stencil : numpy.ndarray, shape ``stencil`` (odd sizes)
        The full stencil :math:`w`, centred (tap :math:`j` at offset :math:`j - s /\!/ 2`),
        mirror symmetric about every axis (not checked).
    grid : tuple of int
        The grid :math:`(n_1, \dots, n_d)`.
    dct_type : {1, 2}
        1 for ``bc="reflect"`` (DCT-I), 2 for ``bc="symmetric"`` (DCT-II).

    Returns
    -------
    numpy.ndarray, shape ``grid``, real, dtype of ``stencil``
        :math:`\lambda_k = \sum_o w_o \prod_a \cos(\pi k_a o_a / L_a)`, index ``k`` the
        frequency of ``scipy.fft.dctn`` (an axis of size 1 under DCT-I: :math:`\cos(0) = 1`).

    Examples
    --------
    The 1-D Laplacian with a half-sample mirror: :math:`2 - 2\cos(\pi k/n)`.

    >>> cosine_symbol(np.array([-1.0, 2.0, -1.0]), (4,), 2).round(4)
    array([0.    , 0.5858, 2.    , 3.4142])
    """
    lam = np.asarray(stencil)
    for axis, n in enumerate(grid):
        s = lam.shape[axis]
        length = n - 1 if dct_type == 1 else n
        offsets = np.arange(s) - s // 2
        if length == 0:
            cos = np.ones((n, s))
        else:
            cos = np.cos(np.pi * np.outer(np.arange(n), offsets) / length)
        lam = np.moveaxis(np.tensordot(lam, cos.astype(lam.dtype), axes=([axis], [1])), -1, axis)
    return np.ascontiguousarray(lam)


def dct_eigvals(kernel: ParametricKernel, theta) -> np.ndarray:
    r"""All eigenvalues of ``K(θ)`` for a kernel diagonalised by a DCT, in :math:`O(N \sum_a s_a)`.

    Parameters
    ----------
    kernel : structops.SymmetricConv
        One channel, stride 1, ``bc`` ``"reflect"`` or ``"symmetric"`` (``kernel.dct_type``).
    theta : array_like, shape (p,)

    Returns
    -------
    numpy.ndarray, real, shape ``grid``
        :func:`~structops.solvers.dct.cosine_symbol` of the kernel's stencil, in the dtype of ``theta``.

    Raises
    ------
    ValueError
        If ``kernel`` has no ``dct_type`` or ``theta`` is invalid.

    Examples
    --------
    >>> import structops
    >>> k = structops.SymmetricConv(5, 3, bc="reflect")
    >>> theta = np.array([2.0, -1.0])
    >>> bool(np.allclose(np.sort(dct_eigvals(k, theta)), np.sort(np.linalg.eigvals(k.matrix(theta)).real)))
    True
    """
    sym = _require_cosine(kernel, "dct_eigvals")
    stencil = sym.weights(theta)[0, 0]
    return cosine_symbol(stencil, tuple(sym.grid), sym.dct_type)


def _edge_weights(grid: tuple[int, ...], dct_type: int, dtype) -> np.ndarray | None:
    """The diagonal :math:`B` of DCT-I (``1/√2`` on the first and last sample of each axis), None for DCT-II."""
    if dct_type != 1:
        return None
    b = np.ones(grid, dtype=dtype)
    for axis, n in enumerate(grid):
        if n > 1:
            edge = [slice(None)] * len(grid)
            for i in (0, n - 1):
                edge[axis] = slice(i, i + 1)
                b[tuple(edge)] /= np.sqrt(2.0)
    return b


class CosineMultiplier(ColumnBatched):
    r"""Real operator diagonalised by an orthonormal DCT: :math:`x \mapsto B^{-1} C^\top(\mu \odot C B x)`.

    Parameters
    ----------
    multiplier : numpy.ndarray, real, shape ``grid``
        :math:`\mu_k`, one value per DCT frequency.
    dct_type : {1, 2}
        The transform :math:`C` (``scipy.fft.dctn(type=dct_type, norm="ortho")``).
    dtype : numpy dtype
        Real dtype the operator advertises (float32 or float64); products run in the dtype
        of the input and of ``multiplier``.
    name : str, optional
        Name shown by pylops.
    transposed : bool, optional
        Build the transpose :math:`B C^\top(\mu \odot C B^{-1} x)` instead (DCT-I only differs).

    Notes
    -----
    Examples are ``(1, *grid)`` flattened in C-order. :math:`B = I` for DCT-II, so the
    operator :math:`C^\top \operatorname{diag}(\mu) C` is symmetric and its adjoint is itself;
    for DCT-I, :math:`C^\top = C` and :math:`B` is the diagonal with :math:`1/\sqrt2` on the
    first and last sample of each axis (see :mod:`structops.solvers.dct`), so the adjoint swaps
    :math:`B` and :math:`B^{-1}`. Axes of size 1 are not transformed (DCT-I needs two samples;
    its one eigenvector there is the constant). A product with ``k`` columns is two ``dctn``
    over the grid axes, batched over the columns: :math:`O(k N \log N)`.
    """

    def __init__(
        self,
        multiplier: np.ndarray,
        dct_type: int,
        *,
        dtype,
        name: str | None = None,
        transposed: bool = False,
    ) -> None:
        if dct_type not in DCT_TYPES:
            raise ValueError(f"`dct_type` must be one of {DCT_TYPES!r}, got {dct_type!r}.")
        self.multiplier = np.asarray(multiplier)
        self.grid = tuple(int(g) for g in self.multiplier.shape)
        self.dct_type = int(dct_type)
        self.transposed = bool(transposed)
        self._b = _edge_weights(self.grid, self.dct_type, self.multiplier.dtype)
        skip = 1 if self.dct_type == 1 else 0  # DCT-I of one sample is undefined (and the identity)
        self._axes = tuple(a for a, n in enumerate(self.grid) if n > skip)
        super().__init__(dtype=np.dtype(dtype), dims=(1, *self.grid), dimsd=(1, *self.grid), name=name)

    def _cols(self, X: np.ndarray, adjoint: bool) -> np.ndarray:
        k = X.shape[1]
        Z = X.reshape(*self.grid, k)
        b = None if self._b is None else self._b[..., None]
        flip = adjoint != self.transposed
        if b is not None:
            Z = Z / b if flip else Z * b
        if self._axes:
            Z = sfft.dctn(Z, type=self.dct_type, axes=self._axes, norm="ortho")
        Z = Z * self.multiplier[..., None]
        if self._axes:
            Z = sfft.idctn(Z, type=self.dct_type, axes=self._axes, norm="ortho", overwrite_x=True)
        if b is not None:
            Z = Z * b if flip else Z / b
        return Z.reshape(X.shape[0], k)

    def _columns(self, X, adjoint):
        return real_apply(lambda z: self._cols(z, adjoint), X, self.dtype)

    def _adjoint(self) -> CosineMultiplier:
        if self.dct_type == 2:
            return self
        name = None if self.name is None else f"({self.name})ᵀ"
        return CosineMultiplier(
            self.multiplier, self.dct_type, dtype=self.dtype, name=name, transposed=not self.transposed
        )

    _transpose = _adjoint


def _reciprocal(m: np.ndarray, rcond: float | None, what: str, grid: tuple[int, ...]) -> np.ndarray:
    """``1 / m``, checked for conditioning, or with ``rcond`` the pseudo-inverse dropping ``|m| <= rcond max|m|``."""
    sv = np.abs(m)
    if rcond is None:
        _check_conditioned(sv, what, grid, scalar=True)
        return (1 / m).astype(m.dtype, copy=False)
    keep = sv > rcond * float(sv.max(initial=0.0))
    return np.where(keep, 1 / np.where(keep, m, 1), 0).astype(m.dtype, copy=False)


def _not_normal(kernel, what: str) -> ValueError:
    return ValueError(
        f"`{what}` is not diagonalised by the DCT for {kernel!r}: with bc='reflect' K(θ) = B⁻¹CΛCB is not "
        "symmetric, so KᵀK is not diagonal in the DCT-I basis. Use bc='symmetric' (K symmetric, DCT-II), or "
        "scipy.sparse.linalg.cg on the symmetric positive definite system built from kernel.op(theta)."
    )


def dct_inverse(
    kernel: ParametricKernel,
    theta,
    *,
    alpha: float = 0.0,
    normal: bool = False,
    rcond: float | None = None,
) -> CosineMultiplier:
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
        If ``kernel`` has no ``dct_type``, ``alpha``/``rcond`` are invalid, or ``normal``/``rcond``
        are asked of a ``"reflect"`` kernel (see the module notes).
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
    sym = _require_cosine(kernel, "inverse")
    alpha = check_real_scalar(alpha, "alpha", minimum=0.0 if normal else None)
    rcond = check_rcond(rcond)
    if sym.dct_type == 1 and normal:
        raise _not_normal(sym, "KᵀK + αI")
    if sym.dct_type == 1 and rcond is not None:
        raise ValueError(
            f"`rcond` must be None for {sym!r}: with bc='reflect' K(θ) is not symmetric, so its singular "
            "values are not |λ| and the eigenvalue cutoff would not give the Moore-Penrose pseudo-inverse; "
            "use bc='symmetric' or alpha > 0."
        )
    lam = dct_eigvals(sym, theta)
    real = lam.dtype.type
    grid = tuple(sym.grid)
    if normal:
        m, what = lam * lam + real(alpha), f"K(θ)ᵀK(θ) + {alpha:g}·I"
    else:
        m, what = lam + real(alpha), "K(θ)" if alpha == 0 else f"K(θ) + {alpha:g}·I"
    inv = _reciprocal(m, rcond, what, grid)
    return CosineMultiplier(inv, sym.dct_type, dtype=lam.dtype, name=f"({what})⁻¹")


def dct_implicit_step(kernel: ParametricKernel, theta, h: float) -> CosineMultiplier:
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
        If ``kernel`` has no ``dct_type``, has ``dct_type`` 1 (``"reflect"``: :math:`K^\top K`
        is not diagonalised by DCT-I, see the module notes), or ``h`` is negative.

    Examples
    --------
    >>> import structops
    >>> k = structops.SymmetricConv(6, 3, bc="symmetric")
    >>> theta = np.array([2.0, -1.0])
    >>> M = k.matrix(theta)
    >>> bool(np.allclose(dct_implicit_step(k, theta, 0.3).todense(), np.linalg.inv(0.3 * M.T @ M + np.eye(6))))
    True
    """
    sym = _require_cosine(kernel, "implicit_step")
    h = check_real_scalar(h, "h", minimum=0.0)
    if sym.dct_type == 1:
        raise _not_normal(sym, "implicit_step (h KᵀK + I)⁻¹")
    lam = dct_eigvals(sym, theta)
    real = lam.dtype.type
    m = real(h) * lam * lam + real(1)
    return CosineMultiplier(1 / m, sym.dct_type, dtype=lam.dtype, name=f"({h:g}·KᵀK + I)⁻¹")
