r"""Circulant preconditioners for zero-boundary (Toeplitz / BTTB) convolutions.

A zero-boundary :class:`structops.Conv` with one channel and stride 1 is a Toeplitz matrix in
1-D, :math:`T_{im} = t_{i-m}`, and block-Toeplitz with Toeplitz blocks (BTTB) in 2-D/3-D,
:math:`T_{(i_1,i_2),(m_1,m_2)} = t_{i_1-m_1,\,i_2-m_2}`, with
:math:`t_k = \theta_{k + c}` (:math:`c` = stencil centre). A circulant (BCCB) approximation
:math:`C \approx T` is diagonalised by the FFT, so :math:`C^{-1}` or
:math:`(C^\top C + \alpha I)^{-1}` costs :math:`O(N\log N)`.

How much it helps depends on the dimension. In 1-D, :math:`T - C` is a low-rank correction
plus a small one, the preconditioned spectrum clusters at 1 and CG's iteration count is
nearly independent of :math:`N` (Tikhonov normal equations of a 9-tap Gaussian, α = 1e-4:
about 12 iterations for N = 256 ... 16384, against 190 ... 350 without). In 2-D and 3-D the
boundary rows where :math:`T` and :math:`C` differ grow with the image side, the correction
has rank :math:`O(\sqrt N)` and the count still grows with :math:`N`: for a 9×9 Gaussian at
α = 1e-4 it is roughly halved (about 125 → 165 → ... iterations for sides 64 → 256, against
300 → 360 without; the full table is in ``benchmarks/README.md``, made by
``benchmarks/bench_iterations.py``). The split form for ``lsqr``/``cgls`` is
:func:`structops.solvers.split_preconditioner`.

* **Strang** (1986): copy the central diagonals of :math:`T`,
  :math:`c_k = t_k` for :math:`0 \le k \le \lfloor n/2 \rfloor` and :math:`c_k = t_{k-n}`
  for :math:`\lfloor n/2 \rfloor < k < n`. For a stencil shorter than :math:`n/2` this is the
  periodic convolution with the same stencil (the BCCB built from the stencil).
* **T. Chan** (1988): the optimal circulant, :math:`C = \arg\min_{C \text{ circulant}}
  \|C - T\|_F`, :math:`c_k = \big((n-k)\,t_k + k\,t_{k-n}\big)/n`. It keeps symmetric
  positive definite :math:`T` symmetric positive definite.

In 2-D and 3-D both use the level-:math:`d` construction: the 1-D rule applied on each
level, :math:`c_{k_1 k_2} = \sum w_1 w_2\, t_{\cdot,\cdot}` with the per-axis weights above
(Strang: the BCCB of the stencil; Chan: the optimal circulant per level).
"""

from __future__ import annotations

import numpy as np
import scipy.fft as sfft

from .._validation import check_number
from ..kernels._base import ParametricKernel, as_kernel
from ..kernels.conv import Conv
from ..kernels.diagonalized import Diagonalized, cosine_symbol, half_spectrum
from .spectral import check_rcond, inverse_from_symbol

__all__ = ["KINDS", "MIRRORS", "circulant_eigvals", "circulant_preconditioner", "cosine_eigvals"]

#: The circulant approximations available.
KINDS = ("strang", "chan")

#: The mirrored boundaries whose cosine-transform preconditioner :func:`cosine_eigvals` builds.
MIRRORS = ("symmetric", "reflect")


def single_conv(kernel, bcs: tuple[str, ...]) -> Conv | None:
    """The one-channel stride-1 convolution with a boundary in ``bcs`` behind ``kernel`` (its convolution view)."""
    view = kernel.as_convolution() if isinstance(kernel, ParametricKernel) else None
    conv = None if view is None else view.conv
    if (
        isinstance(conv, Conv)
        and conv.bc in bcs
        and conv.in_channels == 1
        and conv.out_channels == 1
        and all(s == 1 for s in conv.stride)
    ):
        return conv
    return None


def _require_toeplitz(kernel, func: str) -> Conv:
    """The zero-boundary, one-channel, stride-1 convolution behind ``kernel`` (a Conv, or a ConvBased family)."""
    as_kernel(kernel)
    view = kernel.as_convolution()
    conv = None if view is None else view.conv
    if not (
        isinstance(conv, Conv)
        and conv.bc == "zero"
        and conv.in_channels == 1
        and conv.out_channels == 1
        and all(s == 1 for s in conv.stride)
    ):
        raise ValueError(
            f"`{func}` needs a Toeplitz/BTTB convolution, structops.Conv(grid, stencil, bc='zero') (or a family "
            f"built on one, e.g. SymmetricConv) with one channel and stride 1, got `kernel` = {kernel!r}."
        )
    return conv


def _stencil(kernel, conv: Conv, theta) -> np.ndarray:
    """The full stencil of ``kernel`` at ``theta`` (its weights, for a family built on ``conv``)."""
    return kernel.as_convolution().weights(theta).reshape(conv.stencil)


def _axis_weights(kind: str, s: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions ``k mod n`` and weights of the stencil offsets ``k = j - s//2`` on one level."""
    k = np.arange(s) - s // 2
    inside = np.abs(k) <= n - 1  # offsets beyond the matrix do not appear in T
    if kind == "strang":
        keep = np.where(k >= 0, k <= n // 2, k + n > n // 2)
        weights = (inside & keep).astype(np.float64)
    else:
        weights = np.where(inside, (n - np.abs(k)) / n, 0.0)
    return np.mod(k, n), weights


def circulant_eigvals(kernel: ParametricKernel, theta, kind: str = "strang") -> np.ndarray:
    r"""Eigenvalues of Strang's or T. Chan's circulant approximation of a zero-boundary convolution.

    Parameters
    ----------
    kernel : structops.Conv
        ``Conv(grid, stencil, bc="zero")`` with one channel and stride 1 (Toeplitz / BTTB).
    theta : array_like, shape (p,)
        The stencil (float32 or float64).
    kind : {"strang", "chan"}
        Which circulant (see the module notes for the definitions).

    Returns
    -------
    numpy.ndarray, complex, shape ``grid``
        :math:`\lambda = \operatorname{fftn}(c)` for the first column :math:`c` of the BCCB
        :math:`C`, so :math:`C = F^{-1}\operatorname{diag}(\lambda)F` (same convention as
        :meth:`structops.Conv.eigvals`); complex64 for float32 ``theta``.

    Raises
    ------
    ValueError
        If ``kernel`` is not a single-channel stride-1 zero-boundary ``Conv`` or ``kind`` is unknown.

    Notes
    -----
    Per level :math:`a` with size :math:`n_a`, stencil offset :math:`k = j - c` lands at
    position :math:`k \bmod n_a` with weight 1 (Strang, if it is among the central
    diagonals kept) or :math:`(n_a - |k|)/n_a` (Chan); the first column is
    :math:`c = \sum_j \theta_j \prod_a w_a(k_a)\, e_{k \bmod n}`.

    Examples
    --------
    >>> import numpy as np, structops
    >>> k = structops.Conv(4, 3)
    >>> theta = np.array([-1.0, 2.0, -1.0])
    >>> np.round(circulant_eigvals(k, theta, "strang").real, 12)  # the periodic Laplacian
    array([0., 2., 4., 2.])
    >>> np.round(circulant_eigvals(k, theta, "chan").real, 12)  # 2 - (3/4)(2 cos ξ)
    array([0.5, 2. , 3.5, 2. ])
    """
    conv = _require_toeplitz(kernel, "circulant_eigvals")
    if kind not in KINDS:
        raise ValueError(f"`kind` must be one of {KINDS!r}, got {kind!r}.")
    stencil = _stencil(kernel, conv, theta).astype(np.float64)
    first = np.zeros(conv.grid)
    positions, weight = zip(*(_axis_weights(kind, s, n) for s, n in zip(conv.stencil, conv.grid)))
    w = np.ones(())
    for wa in weight:
        w = np.multiply.outer(w, wa)
    np.add.at(first, np.ix_(*positions), stencil * w)
    return sfft.fftn(first.astype(theta.dtype))


def symmetric_part(stencil: np.ndarray) -> np.ndarray:
    r"""The doubly symmetric part of a centred stencil: the mean of its :math:`2^d` mirror images.

    An even-sized axis is first padded with one zero at its end, so that tap :math:`j` keeps its
    offset :math:`j - \lfloor s/2 \rfloor` about the centre; the result has odd sizes.

    Examples
    --------
    >>> symmetric_part(np.array([1.0, 2.0, 0.0]))
    array([0.5, 2. , 0.5])
    """
    w = np.asarray(stencil)
    w = np.pad(w, [(0, 1 - s % 2) for s in w.shape])
    out = np.zeros_like(w)
    for flips in np.ndindex(*(2,) * w.ndim):
        axes = tuple(a for a, f in enumerate(flips) if f)
        out += np.flip(w, axis=axes) if axes else w
    return out / 2**w.ndim


def cosine_eigvals(kernel: ParametricKernel, theta) -> np.ndarray:
    r"""Eigenvalues of the cosine-transform preconditioner of a mirrored-boundary convolution (any PSF).

    Ng, Chan and Tang (1999) precondition a blur with Neumann (mirror) boundary conditions by
    the matrix its stencil's *doubly symmetric part* :math:`w_s`
    (:func:`~structops.solvers.preconditioners.symmetric_part`) gives under the same boundary:
    that one is diagonalised exactly by the DCT-II (``bc="symmetric"``, half-sample mirror) or
    the DCT-I (``bc="reflect"``, whole-sample mirror), so its inverse, or
    :math:`(C^\top C + \alpha C_L^\top C_L)^{-1/2}`, costs two DCTs.

    Parameters
    ----------
    kernel : structops.Conv
        ``Conv(grid, stencil, bc="symmetric" | "reflect")`` with one channel and stride 1 (or a
        family built on one).
    theta : array_like, shape (p,)
        Its parameters.

    Returns
    -------
    numpy.ndarray, real, shape ``grid``
        :math:`\lambda_k = \sum_o w_{s,o} \prod_a \cos(\pi k_a o_a / L_a)`
        (``structops.kernels.diagonalized.cosine_symbol``), indexed like ``scipy.fft.dctn``;
        exactly the eigenvalues of ``kernel`` when its stencil is doubly symmetric and shorter
        than the grid.

    Raises
    ------
    ValueError
        If ``kernel`` is not such a convolution.

    Examples
    --------
    >>> import numpy as np, structops
    >>> k = structops.Conv(4, 3, bc="symmetric")
    >>> cosine_eigvals(k, np.array([-1.0, 2.0, -1.0])).round(4)  # a doubly symmetric stencil: exact
    array([0.    , 0.5858, 2.    , 3.4142])
    """
    as_kernel(kernel)
    conv = single_conv(kernel, MIRRORS)
    if conv is None:
        raise ValueError(
            "`cosine_eigvals` needs a mirrored-boundary convolution, structops.Conv(grid, stencil, bc='symmetric' or "
            f"'reflect') (or a family built on one) with one channel and stride 1, got `kernel` = {kernel!r}."
        )
    theta = kernel.validate_theta(theta)
    w = symmetric_part(_stencil(kernel, conv, theta).astype(np.float64))
    return cosine_symbol(w, conv.grid, 1 if conv.bc == "reflect" else 2).astype(theta.dtype)


def circulant_preconditioner(
    kernel: ParametricKernel,
    theta,
    *,
    kind: str = "strang",
    alpha: float = 0.0,
    normal: bool = False,
    rcond: float | None = None,
) -> Diagonalized:
    r"""Circulant preconditioner :math:`C^{-1}`, :math:`(C + \alpha I)^{-1}` or :math:`(C^\top C + \alpha I)^{-1}`.

    For the system :math:`Tx = b` pass it as ``M=`` to ``scipy.sparse.linalg.gmres`` (or to
    ``cg``/``minres`` when :math:`T` and :math:`C` are symmetric positive definite, e.g. T. Chan's
    circulant of a symmetric positive definite stencil); for the regularised normal
    equations :math:`(T^\top T + \alpha I)x = T^\top b` -- always symmetric positive definite --
    use ``normal=True`` with ``cg`` or ``minres``.

    Parameters
    ----------
    kernel : structops.Conv
        ``Conv(grid, stencil, bc="zero")`` with one channel and stride 1 (1-D, 2-D or 3-D).
    theta : array_like, shape (p,)
        The stencil; the operator runs in its dtype.
    kind : {"strang", "chan"}
        Strang's circulant (central diagonals) or T. Chan's optimal circulant.
    alpha : float, optional
        Shift (``alpha >= 0`` with ``normal=True``).
    normal : bool, optional
        Return :math:`(C^\top C + \alpha I)^{-1}` (for :math:`T^\top T + \alpha I`).
    rcond : float, optional
        As in :func:`structops.solvers.inverse`: None raises on a (near-)singular circulant; a
        number in ``[0, 1)`` gives the pseudo-inverse with that relative cutoff.

    Returns
    -------
    FourierMultiplier
        A pylops ``LinearOperator`` of shape ``(N, N)`` with its adjoint; symmetric positive
        definite for ``normal=True`` (as ``cg``/``minres`` require of ``M``).

    Raises
    ------
    ValueError
        Unsupported kernel, unknown ``kind``, bad ``alpha``/``rcond``.
    numpy.linalg.LinAlgError
        If the circulant is singular or near-singular and ``rcond`` is None (use ``alpha > 0``).

    Notes
    -----
    With :math:`\lambda` from :func:`circulant_eigvals`, the operator is the Fourier multiplier
    :math:`1/(\lambda + \alpha)` or :math:`1/(|\lambda|^2 + \alpha)`; its adjoint has the
    conjugate multiplier. Building it costs one FFT of the grid, applying it two.

    Examples
    --------
    >>> import numpy as np, scipy.sparse.linalg as spla, pylops, structops
    >>> k = structops.Conv(200, 5)
    >>> theta = np.array([0.05, 0.25, 0.4, 0.25, 0.05])
    >>> T = k.op(theta)
    >>> A = T.H @ T + 1e-3 * pylops.Identity(200)
    >>> M = circulant_preconditioner(k, theta, kind="chan", alpha=1e-3, normal=True)
    >>> b = T.H @ np.ones(200)
    >>> count = {"plain": 0, "chan": 0}
    >>> _ = spla.cg(A, b, rtol=1e-8, callback=lambda x: count.__setitem__("plain", count["plain"] + 1))
    >>> _ = spla.cg(A, b, rtol=1e-8, M=M, callback=lambda x: count.__setitem__("chan", count["chan"] + 1))
    >>> count["chan"] < count["plain"] / 2
    True
    """
    conv = _require_toeplitz(kernel, "circulant_preconditioner")
    alpha = check_number(alpha, "alpha", minimum=0.0 if normal else None)
    rcond = check_rcond(rcond)
    lam = circulant_eigvals(kernel, theta, kind)
    S = half_spectrum(lam, len(conv.grid))[..., None, None]
    try:
        return inverse_from_symbol(S, conv.grid, lam.real.dtype, alpha=alpha, normal=normal, rcond=rcond, name="C")
    except np.linalg.LinAlgError as err:
        label = "Strang's" if kind == "strang" else "T. Chan's"
        raise np.linalg.LinAlgError(f"{label} circulant approximation C of {kernel!r}: {err}") from None
