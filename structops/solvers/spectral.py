r"""Spectral solvers that dispatch on one diagonalisation interface, and bounded estimates for the rest.

A family diagonalised by a fast transform says so through
:meth:`ParametricKernel.diagonalize` (:mod:`structops.kernels.diagonalized`):
:math:`K = U\,\operatorname{blkdiag}_\xi(B(\xi))\,V^H` with small per-frequency blocks. A
periodic convolution is the lecture notes' case, :math:`\lambda = F(K u_1)` (the FFT); a doubly
symmetric stencil with mirror boundaries is diagonalised by a DCT; a one-channel stencil that is
an outer product gives a Kronecker product of 1-D operators, diagonalised by their SVDs. Every
solver here asks :func:`route` (:mod:`._routes`) once and builds its result from the blocks
(``D.with_blocks(f(D.blocks))``), exactly, without the :math:`N \times N` matrix:

* :func:`inverse` -- :math:`K^{-1}`, :math:`(K + \alpha I)^{-1}`, :math:`(K^\top K + \alpha I)^{-1}`
  or the pseudo-inverse :math:`K^+`, as pylops operators with their adjoints;
* :func:`implicit_step` -- :math:`(h K^\top K + I)^{-1}`, one implicit (backward Euler) step
  of the gradient flow :math:`\dot x = -K^\top K x`;
* :func:`svdvals`, :func:`eigvals` -- every singular value / eigenvalue;
* :func:`spectral_norm`, :func:`cond` -- exact through the transform or dense LAPACK up to
  ``dense_limit`` unknowns; certified two-sided bounds for zero-boundary convolutions (their
  periodic embedding, :mod:`._certified`); else a bounded Golub--Kahan--Lanczos estimate
  (``maxiter`` steps) that reports its bounds (:class:`SpectralEstimate`,
  :class:`EstimateWarning`) and never runs unbounded.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse.linalg as spla

from .._validation import check_positive_int, check_real_scalar
from ..kernels._base import ParametricKernel, as_kernel
from ..kernels.diagonalized import CosineMultiplier, Diagonalized, FourierMultiplier, block_svdvals
from ._certified import certified_cond, certified_norm
from ._filters import regularized_inverse
from ._lanczos import (
    EIGS_MAXITER,
    MAXITER,
    TOL,
    EstimateWarning,
    SpectralEstimate,
    check_estimate_options,
    exact_estimate,
    golub_kahan,
    not_converged,
)
from ._routes import DENSE_LIMIT, Route, route

__all__ = [
    "SINGULAR_FACTOR",
    "IllConditionedWarning",
    "CosineMultiplier",
    "EstimateWarning",
    "FourierMultiplier",
    "Route",
    "SpectralEstimate",
    "cond",
    "eigvals",
    "implicit_step",
    "inverse",
    "is_circulant",
    "route",
    "spectral_norm",
    "svdvals",
]

#: A per-frequency system counts as near-singular when its condition number exceeds
#: ``1 / (SINGULAR_FACTOR * eps)``: the solve would keep fewer than about three correct digits.
SINGULAR_FACTOR = 1000.0


class IllConditionedWarning(UserWarning):
    """An exact inverse was asked of an ill-conditioned system: condition number above ``eps**(-1/3)``.

    The inverse is computed (the system is not singular), but it magnifies errors in the data,
    such as noise in a blurred image, by up to the condition number: it loses more than a third
    of the data's significant digits (``1.7e5`` in float64, ``2.0e2`` in float32). For noisy data regularise:
    ``alpha > 0`` (chosen from the data by :func:`structops.solvers.choose_alpha`), or
    :func:`structops.solvers.tikhonov`.
    """


_WHICH = ("LM", "SM", "LR", "SR", "LI", "SI")


# ----------------------------------------------------------------- validation
def is_circulant(kernel) -> bool:
    """Whether ``kernel`` is block circulant (``kernel.circulant``): diagonalised by the FFT.

    True for the periodic stride-1 convolution families (:class:`structops.Conv`, the
    families built on it, and their reparametrisations such as ``Softplus``); their
    ``diagonalize(theta)`` gives a :class:`FourierMultiplier`.

    Examples
    --------
    >>> import structops
    >>> is_circulant(structops.Conv(8, 3, bc="periodic")), is_circulant(structops.Conv(8, 3))
    (True, False)
    >>> is_circulant(structops.Softplus(structops.Conv(8, 3, bc="periodic")))
    True
    """
    return isinstance(kernel, ParametricKernel) and bool(kernel.circulant)


def check_rcond(rcond) -> float | None:
    if rcond is None:
        return None
    rcond = check_real_scalar(rcond, "rcond", minimum=0.0)
    if rcond >= 1.0:
        raise ValueError(f"`rcond` must be None or a relative cutoff in [0, 1), got {rcond!r}.")
    return rcond


# ------------------------------------------------------------- per frequency
def _pinv_blocks(blocks: np.ndarray, cutoff: float) -> np.ndarray:
    """Per-frequency pseudo-inverses, dropping singular values ``<= cutoff`` (a global threshold)."""
    if blocks.shape[-2:] == (1, 1):
        b = blocks
        keep = np.abs(b) > cutoff
        return np.where(keep, 1.0 / np.where(keep, b, 1), 0).astype(b.dtype)
    U, s, Vh = np.linalg.svd(blocks, full_matrices=False)
    keep = s > cutoff
    s_inv = np.where(keep, 1.0 / np.where(keep, s, 1), 0).astype(s.dtype)
    return np.conj(np.swapaxes(Vh, -1, -2)) @ (s_inv[..., :, None] * np.conj(np.swapaxes(U, -1, -2)))


def _inverse_blocks(blocks: np.ndarray) -> np.ndarray:
    """Per-frequency inverses of square blocks by ``numpy.linalg.solve`` batched over frequencies."""
    if blocks.shape[-2:] == (1, 1):
        return 1.0 / blocks
    eye = np.broadcast_to(np.eye(blocks.shape[-1], dtype=blocks.dtype), blocks.shape)
    return np.linalg.solve(blocks, eye)


def check_conditioned(sv: np.ndarray, what: str, grid: tuple[int, ...], scalar: bool, *, warn: bool = False) -> None:
    """Raise ``numpy.linalg.LinAlgError`` when the singular values ``sv`` (per frequency) make the system singular.

    The message names the smallest singular value (``|λ|`` for one channel), where it sits,
    and the condition number, compared with ``1 / (SINGULAR_FACTOR * eps)``. With ``warn`` (an
    unregularised inverse), an :class:`IllConditionedWarning` above ``eps**(-1/3)``.
    """
    if not sv.size:
        return
    real = sv.dtype
    smax, smin = float(sv.max()), float(sv.min())
    limit = 1.0 / (SINGULAR_FACTOR * float(np.finfo(real).eps))
    condition = np.inf if smin == 0 else smax / smin
    if not condition <= limit:
        where = np.unravel_index(int(np.argmin(sv)), sv.shape)[: len(grid)]
        label = "|λ|" if scalar else "singular value"
        raise np.linalg.LinAlgError(
            f"{what} is singular or near-singular: smallest {label} {smin:.3e} (at frequency index "
            f"{tuple(int(i) for i in where)}), largest {smax:.3e}, condition number {condition:.3e} > "
            f"1/(SINGULAR_FACTOR·eps) = {limit:.3e} in {real}. Regularise with `alpha` > 0, or pass "
            "`rcond` (e.g. rcond=1e-6) for the pseudo-inverse that drops singular values below rcond·max."
        )
    ill = float(np.finfo(real).eps) ** (-1 / 3)
    if warn and condition > ill:
        warnings.warn(
            f"{what} is ill-conditioned: condition number {condition:.3e} > eps^(-1/3) = "
            f"{ill:.3e} in {real}, so its exact inverse magnifies errors in the "
            "data (noise) by up to that factor. For noisy data regularise with `alpha` > 0 "
            "(structops.solvers.choose_alpha picks one from the data) or use structops.solvers.tikhonov.",
            IllConditionedWarning,
            stacklevel=4,
        )


def _invert(blocks, sv, rcond: float | None, what: str, grid: tuple[int, ...], scalar: bool, warn: bool = False):
    """Inverse of square per-frequency blocks with singular values ``sv``, or their pseudo-inverse with ``rcond``."""
    if rcond is not None:
        return _pinv_blocks(blocks, rcond * float(sv.max(initial=0.0)))
    check_conditioned(sv, what, grid, scalar, warn=warn)
    return _inverse_blocks(blocks)


# -------------------------------------------------------------------- solves
def _no_transform(r: Route, func: str) -> ValueError:
    return ValueError(
        f"`{func}` needs a kernel diagonalised by a fast transform, e.g. a periodic convolution "
        f"structops.Conv(..., bc='periodic', stride=1) (block-circulant, diagonalised by the FFT): {r.reason} "
        "For other kernels use scipy.sparse.linalg's iterative solvers on kernel.op(theta) (see "
        "structops.solvers.circulant_preconditioner for zero boundaries)."
    )


def not_normal(kernel, what: str) -> ValueError:
    """The error for a function of ``KᵀK`` asked of a non-unitary transform (DCT-I)."""
    return ValueError(
        f"`{what}` is not diagonalised by the DCT for {kernel!r}: with bc='reflect' K(θ) = B⁻¹CΛCB is not "
        "symmetric, so KᵀK is not diagonal in the DCT-I basis. Use bc='symmetric' (K symmetric, DCT-II), or "
        "scipy.sparse.linalg.cg on the symmetric positive definite system built from kernel.op(theta)."
    )


def invert_diagonal(
    D: Diagonalized, *, alpha: float, normal: bool, rcond: float | None, name: str, kernel=None
) -> Diagonalized:
    """``(K + αI)^-1``, ``(KᴴK + αI)^-1`` or ``K^+`` of a :class:`Diagonalized` ``K``, as one of its kind."""
    what_kernel = D if kernel is None else kernel
    if normal:
        if not D.unitary:
            raise not_normal(what_kernel, "KᵀK + αI")
        return normal_inverse(D, 1.0, alpha, rcond, f"{name}ᵀ{name} + {alpha:g}·I")
    if rcond is not None and not D.unitary:
        raise ValueError(
            f"`rcond` must be None for {what_kernel!r}: with bc='reflect' K(θ) is not symmetric, so its singular "
            "values are not |λ| and the eigenvalue cutoff would not give the Moore-Penrose pseudo-inverse; "
            "use bc='symmetric' or alpha > 0."
        )
    B = D.blocks
    cout, cin = B.shape[-2:]
    grid = D.grid
    if cout != cin:
        if alpha != 0:
            raise ValueError(
                f"`alpha` must be 0 for a non-square K (in_channels={cin}, out_channels={cout}): K + αI is "
                f"undefined, got alpha={alpha!r}; use normal=True for (KᵀK + αI)^-1."
            )
        sv = block_svdvals(B)
        if rcond is None:
            check_conditioned(sv, name, grid, scalar=False, warn=True)
        blocks = _pinv_blocks(B, 0.0 if rcond is None else rcond * float(sv.max(initial=0.0)))
        return D.with_blocks(blocks, swap=True, name=f"{name}⁺")
    if alpha != 0 and not D.similarity:
        raise ValueError(
            f"`alpha` must be 0 for {what_kernel!r}: its {D.transform!r} transform has U ≠ V, so K + αI is not "
            f"diagonalised by it, got alpha={alpha!r}; use normal=True for (KᵀK + αI)^-1."
        )
    shifted = B + B.real.dtype.type(alpha) * np.eye(cin, dtype=B.dtype) if alpha != 0 else B
    what = name if alpha == 0 else f"{name} + {alpha:g}·I"
    scalar = D.similarity and cin == 1
    blocks = _invert(shifted, block_svdvals(shifted), rcond, what, grid, scalar, warn=alpha == 0)
    return D.with_blocks(blocks, swap=not D.similarity, name=f"({what})⁻¹")


def inverse_from_symbol(
    S: np.ndarray, grid: tuple[int, ...], dtype, *, alpha: float, normal: bool, rcond: float | None, name: str
) -> Diagonalized:
    """The multiplier of ``(S + αI)^-1``, ``(S^H S + αI)^-1`` or ``S^+`` from a half symbol ``S``."""
    D = FourierMultiplier(S, grid, dtype=dtype)
    return invert_diagonal(D, alpha=alpha, normal=normal, rcond=rcond, name=name)


def normal_inverse(D: Diagonalized, h, beta, rcond, what) -> Diagonalized:
    r"""The operator :math:`(h K^H K + \beta I)^{-1}` of a unitary :class:`Diagonalized` ``K``."""
    S = D.blocks
    cin = S.shape[-1]
    real = S.real.dtype.type
    h, beta = real(h), real(beta)
    if S.shape[-2:] == (1, 1):
        blocks = (h * np.abs(S) ** 2 + beta).astype(S.dtype)
        sv = np.abs(blocks[..., 0, :])
    else:
        blocks = h * (np.conj(np.swapaxes(S, -1, -2)) @ S) + beta * np.eye(cin, dtype=S.dtype)
        s = np.linalg.svd(S, compute_uv=False)
        # the eigenvalues of h S^H S + beta I: h s^2 + beta, and beta on the null space of S
        sv = np.concatenate([h * s**2 + beta, np.full((*s.shape[:-1], cin - s.shape[-1]), beta, dtype=s.dtype)], -1)
    inv = _invert(blocks, sv, rcond, what, D.grid, S.shape[-2:] == (1, 1), warn=beta == 0)
    return D.with_blocks(inv, normal=True, name=f"({what})⁻¹")


def inverse(
    kernel: ParametricKernel,
    theta,
    *,
    alpha: float = 0.0,
    normal: bool = False,
    rcond: float | None = None,
    L=None,
) -> Diagonalized:
    r"""Exact inverse of a diagonalised kernel (or of its shifted or normal operator), in :math:`O(N\log N)`.

    Parameters
    ----------
    kernel : ParametricKernel
        A family whose ``diagonalize(theta)`` gives a fast transform (see :func:`route`): a
        periodic convolution, ``Conv(..., bc="periodic", stride=1)``, any number of channels, and
        the families built on it (``Softplus``, ``SymmetricConv``, ``MMatrixConv``, ...); a
        mirror-boundary ``SymmetricConv`` (the DCT, :mod:`structops.solvers.dct`); a one-channel
        convolution with an outer-product stencil (``SeparableConv(rank=1)``, or a ``Conv``
        whose stencil has numerical rank 1: the Kronecker product of 1-D factors, any boundary;
        there ``alpha`` must be 0 unless ``normal``).
    theta : array_like, shape (p,)
        Stencil parameters; the operator runs in their dtype (float32 stays float32).
    alpha : float, optional
        Shift :math:`\alpha` (default 0). With ``normal=False`` any real value (needs
        ``in_channels == out_channels``); with ``normal=True``, :math:`\alpha \ge 0`.
    normal : bool, optional
        Invert :math:`K^\top K + \alpha I` instead of :math:`K + \alpha I`.
    rcond : float, optional
        None (default): a singular or near-singular system raises. A number in ``[0, 1)``:
        return the Moore--Penrose pseudo-inverse, dropping the per-frequency singular values
        ``<= rcond * (largest singular value of the operator)`` -- the same cutoff as
        ``numpy.linalg.pinv(matrix, rcond=rcond)`` on the dense matrix.
    L : pylops.LinearOperator, optional
        A regularisation operator for ``normal=True``: return :math:`(K^\top K + \alpha L^\top L)^{-1}`.
        ``L = family.op(theta_L)`` of a family diagonalised in the same basis as ``kernel``
        (``D.same_basis(D_L)``: e.g. the periodic Laplacian for a periodic ``K``, the cosine
        Laplacian ``SymmetricConv(..., bc="symmetric")`` for a DCT-II ``K``), solved exactly per
        frequency; another grid or another structure raises ``ValueError`` (use
        :func:`structops.solvers.tikhonov`, whose Krylov route takes any ``L``).

    Returns
    -------
    Diagonalized
        A :class:`~structops.kernels.diagonalized.Diagonalized` pylops ``LinearOperator`` of
        the kernel's transform (a ``FourierMultiplier`` for periodic convolutions; usable with
        scipy and pylops) with its adjoint (``.H`` has the conjugate-transposed blocks):

        * ``normal=False``, square: :math:`(K + \alpha I)^{-1}`, shape ``(N c, N c)``;
        * ``normal=False``, ``out_channels != in_channels`` (``alpha = 0`` only): the
          pseudo-inverse :math:`K^+`, the minimum-norm least-squares solution operator, shape
          ``(N c_{in}, N c_{out})``;
        * ``normal=True``: :math:`(K^\top K + \alpha I)^{-1}`, shape ``(N c_{in}, N c_{in})``.

    Raises
    ------
    TypeError
        If ``kernel`` is not a kernel family, or ``alpha``/``rcond`` are not numbers.
    ValueError
        If ``kernel`` has no fast transform at ``theta`` (``route(kernel, theta, "inverse")`` says
        why), or its transform cannot express the request (``normal``/``rcond`` under DCT-I,
        ``alpha != 0`` for a Kronecker product); if ``alpha`` is not finite, is
        negative with ``normal=True`` or nonzero for a non-square ``K``; if ``rcond`` is not in
        ``[0, 1)``.
    numpy.linalg.LinAlgError
        If the system is singular or near-singular (condition number above
        ``1 / (SINGULAR_FACTOR * eps)``) and ``rcond`` is None; the message gives the
        smallest :math:`|\lambda|` (or singular value) and the condition number.

    Notes
    -----
    With the symbol :math:`\hat K(\xi) \in \mathbb{C}^{c_{out} \times c_{in}}`,
    :math:`K = F^{-1}\operatorname{blkdiag}(\hat K(\xi))F`, so every rational function of
    :math:`K` and :math:`K^\top = F^{-1}\operatorname{blkdiag}(\hat K(\xi)^H)F` is the
    multiplier of the same function of the blocks:

    .. math::
        (K + \alpha I)^{-1} &\leftrightarrow (\hat K(\xi) + \alpha I)^{-1}, \\
        (K^\top K + \alpha I)^{-1} &\leftrightarrow (\hat K(\xi)^H \hat K(\xi) + \alpha I)^{-1}, \\
        K^+ &\leftrightarrow \hat K(\xi)^+ .

    For one channel these are :math:`1/(\lambda + \alpha)` and :math:`1/(|\lambda|^2 + \alpha)`.
    Square blocks are inverted with ``numpy.linalg.solve`` batched over frequencies, the
    pseudo-inverse through a batched SVD. The adjoint of the inverse is the inverse of the
    adjoint: its blocks are conjugate-transposed. The singular values of the operator are
    those of the blocks, so the condition number checked is exact.

    Examples
    --------
    >>> import numpy as np, structops
    >>> k = structops.Conv(8, 3, bc="periodic")
    >>> theta = np.array([-1.0, 4.0, -1.0])
    >>> x = np.arange(8.0)
    >>> y = k.op(theta) @ x
    >>> np.allclose(inverse(k, theta) @ y, x)
    True
    >>> lap = np.array([-1.0, 2.0, -1.0])  # singular: constants are in its null space
    >>> inverse(k, lap)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    numpy.linalg.LinAlgError: K(θ) is singular or near-singular: smallest |λ| ...
    >>> np.allclose(inverse(k, lap, rcond=1e-10).todense(), np.linalg.pinv(k.matrix(lap), rcond=1e-10))
    True
    """
    if L is not None:  # a regularisation operator sharing the basis of K (structops.solvers._filters)
        return regularized_inverse(kernel, theta, alpha=alpha, normal=normal, L=L)
    r = route(kernel, theta, "inverse")
    if r.diagonal is None:
        raise _no_transform(r, "inverse")
    alpha = check_real_scalar(alpha, "alpha", minimum=0.0 if normal else None)
    rcond = check_rcond(rcond)
    return invert_diagonal(r.diagonal, alpha=alpha, normal=normal, rcond=rcond, name="K(θ)", kernel=kernel)


def implicit_step(kernel: ParametricKernel, theta, h: float, *, L=None) -> Diagonalized:
    r"""The implicit (backward Euler) step :math:`(h K^\top K + I)^{-1}` of a periodic convolution.

    One step of size :math:`h` of the gradient flow :math:`\dot x = -K^\top K x` (of
    :math:`\tfrac12\|Kx\|^2`) maps :math:`x_k` to :math:`x_{k+1} = (h K^\top K + I)^{-1} x_k`;
    it is unconditionally stable: every eigenvalue :math:`1/(h\sigma^2 + 1)` lies in
    :math:`(0, 1]`.

    Parameters
    ----------
    kernel : ParametricKernel
        A family with a unitary fast transform (see :func:`inverse`): periodic convolutions
        (any channels), ``SymmetricConv(..., bc="symmetric")`` (DCT-II), outer-product stencils
        (Kronecker).
    theta : array_like, shape (p,)
        Stencil parameters (float32 or float64; the operator runs in their dtype).
    h : float
        Step size, :math:`h \ge 0` (``h = 0`` is the identity).
    L : pylops.LinearOperator, optional
        A regularisation operator sharing the basis of ``kernel`` (see :func:`inverse`): return
        :math:`(h(K^\top K + L^\top L) + I)^{-1}`, the implicit step of the flow
        :math:`\dot x = -(K^\top K + L^\top L)x` of :math:`\tfrac12\|Kx\|^2 + \tfrac12\|Lx\|^2`.

    Returns
    -------
    Diagonalized
        Symmetric positive definite operator of shape ``(N c_{in}, N c_{in})``, with blocks
        :math:`(h\hat K(\xi)^H\hat K(\xi) + I)^{-1}`; never singular.

    Raises
    ------
    TypeError
        If ``h`` is not a real number or ``kernel`` not a kernel family.
    ValueError
        If ``h`` is negative or not finite, or ``kernel`` has no unitary fast transform at ``theta``.

    Examples
    --------
    >>> import numpy as np, structops
    >>> k = structops.Conv((4, 4), (3, 3), bc="periodic")
    >>> theta = np.zeros(9); theta[[1, 3, 5, 7]] = 1.0; theta[4] = -4.0  # 5-point Laplacian
    >>> step = implicit_step(k, theta, h=0.1)
    >>> M = k.matrix(theta)
    >>> np.allclose(step.todense(), np.linalg.inv(0.1 * M.T @ M + np.eye(16)))
    True
    """
    if L is not None:
        h = check_real_scalar(h, "h", minimum=0.0)
        return regularized_inverse(kernel, theta, alpha=1.0, normal=True, L=L, h=h)
    h = check_real_scalar(h, "h", minimum=0.0)
    r = route(kernel, theta, "implicit_step")
    if r.diagonal is None:
        raise _no_transform(r, "implicit_step")
    if not r.diagonal.unitary:
        raise not_normal(kernel, "implicit_step (h KᵀK + I)⁻¹")
    return normal_inverse(r.diagonal, h, 1.0, None, f"{h:g}·KᵀK + I")


# ------------------------------------------------------------- spectra
def _dense_fallback(kernel: ParametricKernel, k_needed: int, dense_limit: int) -> bool:
    """Whether ARPACK cannot run: ``N <= dense_limit``, or too small (``eigs`` needs ``k < N - 1``)."""
    return max(kernel.shape) <= dense_limit or min(kernel.shape) <= k_needed + 1


def _no_exact_route(r: Route) -> ValueError:
    return ValueError(
        f"`svdvals` computes every singular value only through a fast transform or dense LAPACK: {r.reason} "
        "Use structops.solvers.spectral_norm or structops.solvers.cond (certified or estimated bounds on the "
        "extremes), or raise `dense_limit`."
    )


def svdvals(kernel: ParametricKernel, theta, *, dense_limit: int = DENSE_LIMIT) -> np.ndarray:
    r"""Every singular value of :math:`K(\theta)`, descending, exact to round-off.

    Parameters
    ----------
    kernel : ParametricKernel
        A family with a unitary fast transform at ``theta``
        (:meth:`~structops.kernels.ParametricKernel.diagonalize`, see :func:`route`), or any family
        with ``max(kernel.shape) <= dense_limit``.
    theta : array_like, shape (p,)
        Parameters.
    dense_limit : int, optional
        Largest ``max(kernel.shape)`` computed by ``numpy.linalg.svd`` of the dense matrix
        (default 2048).

    Returns
    -------
    numpy.ndarray, shape ``(min(kernel.shape),)``, real
        :math:`\sigma_1 \ge \sigma_2 \ge \dots`.

    Raises
    ------
    ValueError
        If no exact route applies (a large operator without a fast transform); the message
        names :func:`spectral_norm` and :func:`cond`. The decision costs no more than
        ``kernel.diagonalize(theta)``.

    Notes
    -----
    The routes (:func:`route`):

    * ``"fourier"`` -- periodic convolutions of stride 1, any ``in_channels``/``out_channels``:
      the union over frequencies :math:`\xi` of the singular values of the ``out × in`` blocks
      :math:`\hat K(\xi)` (Sedghi, Gupta & Long 2019), one batched SVD; mirrored frequencies of
      the real FFT's half grid are counted twice;
    * ``"cosine"`` -- ``SymmetricConv(..., bc="symmetric")`` (DCT-II): :math:`|\lambda_k|`;
    * ``"kronecker"`` -- one-channel outer-product stencils, any per-axis boundary:
      :math:`K = K_0 \otimes K_1 (\otimes K_2)`, so the singular values are the products of the
      1-D ones. If the stencil is an outer product only to round-off, every value is within the
      ``residual`` of ``kernel.diagonalize(theta)`` of the true one (Weyl);
    * ``"dense"`` -- ``numpy.linalg.svd(kernel.matrix(theta))``.

    Examples
    --------
    >>> import numpy as np, structops
    >>> k = structops.Conv((4, 4), (3, 3), bc="periodic", in_channels=2, out_channels=3)
    >>> theta = np.random.default_rng(0).standard_normal(k.nparams)
    >>> bool(np.allclose(svdvals(k, theta), np.linalg.svd(k.matrix(theta), compute_uv=False)))
    True
    """
    as_kernel(kernel)
    dense_limit = check_positive_int(dense_limit, "dense_limit", minimum=0)
    r = route(kernel, theta, "svdvals", dense_limit=dense_limit, embedding=False)
    if r.diagonal is not None and r.exact and r.name != "dense":
        return r.diagonal.singular_values()
    if r.name == "dense":
        if min(kernel.shape) == 0:
            return np.zeros(0)
        return np.linalg.svd(kernel.matrix(theta), compute_uv=False)
    raise _no_exact_route(r)


def _extremes(D: Diagonalized) -> tuple[float, float]:
    """``(σ_max, σ_min)`` over every block of a unitary transform."""
    sv = D.block_singular_values()
    if not sv.size:
        return 0.0, 0.0
    return float(sv.max()), float(sv.min())


def _transform_norm(r: Route, D: Diagonalized) -> SpectralEstimate:
    """The spectral norm through a unitary transform, with Weyl bounds from its residual."""
    smax, _ = _extremes(D)
    res = D.residual
    if res == 0:
        return exact_estimate(smax, r.name)
    return SpectralEstimate(smax, max(smax - res, 0.0), smax + res, True, r.name, 0)


def spectral_norm(
    kernel: ParametricKernel,
    theta,
    *,
    tol: float = TOL,
    maxiter: int = MAXITER,
    dense_limit: int = DENSE_LIMIT,
    full_output: bool = False,
) -> float | SpectralEstimate:
    r"""Spectral norm :math:`\|K(\theta)\|_2 = \sigma_{\max}(K(\theta))`.

    Parameters
    ----------
    kernel : ParametricKernel
        Any kernel family; the route (:func:`route`) is, in order: a unitary fast transform
        (``"fourier"``, ``"cosine"``, ``"kronecker"``: exact); ``"dense"`` ``numpy.linalg.svd``
        of ``kernel.matrix(theta)`` when ``max(kernel.shape) <= dense_limit``; ``"certified"``
        for zero-boundary convolutions (any channels and strides); else Golub--Kahan--Lanczos
        on ``kernel.op(theta)``.
    theta : array_like, shape (p,)
        Parameters.
    tol : float, optional
        Relative accuracy of the iterative estimate (default 1e-6): it stops once the Ritz
        triplet's residual is below ``tol`` times the estimate. In ``[0, 1)``; 0 means round-off.
    maxiter : int, optional
        Most Lanczos steps (default 200), each one product with :math:`K` and one with
        :math:`K^\top`; memory ``maxiter · (m + n)`` numbers.
    dense_limit : int, optional
        Largest ``max(kernel.shape)`` computed densely (default 2048); 0 forces the other routes.
    full_output : bool, optional
        Return a :class:`SpectralEstimate` (value, bounds, route, iterations, whether certified).

    Returns
    -------
    float or SpectralEstimate
        ``"certified"``: the value is the Lanczos lower bound, and ``upper`` (a certificate)
        lies within ``tol`` of it or a warning says how far.

    Raises
    ------
    TypeError, ValueError
        If ``maxiter`` is not an integer >= 1, ``tol`` not a real in ``[0, 1)``, or
        ``dense_limit`` not an integer >= 0.

    Warns
    -----
    EstimateWarning
        If an iterative estimate did not reach ``tol`` within ``maxiter`` steps; the best
        estimate is returned and the message gives its bounds.

    Notes
    -----
    Fourier: :math:`\|K\|_2 = \max_\xi \sigma_{\max}(\hat K(\xi))` (:math:`\max_\xi|\lambda(\xi)|`
    for one channel), in :math:`O(N\log N)`; Kronecker: the product of the 1-D norms (within the
    certified ``residual``). Certified (zero boundary): :math:`K = R\,C_L\,E` restricts the
    periodic convolution :math:`C_L` on the grid padded by the stencil, so
    :math:`\|K\|_2 \le \|S C_L\|_2 = \max_\eta \sigma_{\max}` of the aliased blocks (exact,
    plus a round-off allowance): ``upper`` is a certificate; ``lower`` is the largest Ritz value
    of a Lanczos run started from the maximising Fourier mode, windowed to the grid (guaranteed).
    Golub--Kahan--Lanczos: see :func:`cond`'s Notes.

    Examples
    --------
    >>> import numpy as np, structops
    >>> k = structops.Conv(16, 3, bc="periodic")
    >>> float(spectral_norm(k, np.array([-1.0, 2.0, -1.0])))  # max |2 - 2 cos ξ| = 4
    4.0
    >>> est = spectral_norm(structops.Conv(64, 3), np.array([-1.0, 2.0, -1.0]), dense_limit=0, full_output=True)
    >>> est.method, est.certified, bool(est.lower <= 2 - 2 * np.cos(64 * np.pi / 65) <= est.upper < 4 + 1e-12)
    ('certified', True, True)
    """
    as_kernel(kernel)
    maxiter, tol, dense_limit = check_estimate_options(maxiter, tol, dense_limit)
    r = route(kernel, theta, "spectral_norm", dense_limit=dense_limit)
    theta = kernel.validate_theta(theta)
    if r.name in ("fourier", "cosine", "kronecker") and r.diagonal is not None:
        est = _transform_norm(r, r.diagonal)
    elif r.name == "dense":
        value = float(np.linalg.norm(kernel.matrix(theta), 2)) if min(kernel.shape) else 0.0
        est = exact_estimate(value, "dense")
    elif r.name == "certified":
        est = certified_norm(kernel, theta, maxiter=maxiter, tol=tol)
    else:
        est, _ = golub_kahan(kernel.op(theta), maxiter=maxiter, tol=tol, need_min=False)
    if not est.converged:
        not_converged("spectral_norm", est, maxiter, tol)
    return est if full_output else est.value


def _transform_cond(r: Route, D: Diagonalized) -> SpectralEstimate:
    """The condition number through a unitary transform, with Weyl bounds from its residual."""
    smax, smin = _extremes(D)
    value = np.inf if smin == 0 else smax / smin
    res = D.residual
    if res == 0:
        return exact_estimate(float(value), r.name)
    lower = max(smax - res, 0.0) / (smin + res)
    upper = np.inf if smin <= res else (smax + res) / (smin - res)
    return SpectralEstimate(float(value), float(min(lower, value)), float(max(upper, value)), True, r.name, 0)


def cond(
    kernel: ParametricKernel,
    theta,
    *,
    tol: float = TOL,
    maxiter: int = MAXITER,
    dense_limit: int = DENSE_LIMIT,
    full_output: bool = False,
) -> float | SpectralEstimate:
    r"""2-norm condition number :math:`\sigma_{\max}/\sigma_{\min}` of :math:`K(\theta)`.

    As ``numpy.linalg.cond(kernel.matrix(theta))``: the ratio of the largest to the smallest of
    the ``min(shape)`` singular values (``inf`` if the smallest is zero).

    Parameters
    ----------
    kernel : ParametricKernel
        The routes of :func:`spectral_norm`: a unitary fast transform (exact), dense LAPACK up
        to ``dense_limit``, certified bounds for zero-boundary convolutions, else a
        Golub--Kahan--Lanczos estimate with bounds (see Notes).
    theta : array_like, shape (p,)
        Parameters.
    tol : float, optional
        Relative accuracy of the iterative estimates of :math:`\sigma_{\max}` and
        :math:`\sigma_{\min}` (default 1e-6), in ``[0, 1)``.
    maxiter : int, optional
        Most Lanczos steps (default 200). The smallest singular value of an ill-conditioned
        operator (a blur) does not converge in any affordable number: the estimate then stops
        here, with a warning and bounds.
    dense_limit : int, optional
        Largest ``max(kernel.shape)`` computed densely (default 2048); 0 forces the other routes.
    full_output : bool, optional
        Return a :class:`SpectralEstimate` instead of a float.

    Returns
    -------
    float or SpectralEstimate
        Exact, or the iterative estimate :math:`\tilde\sigma_{\max}/\tilde\sigma_{\min}`. Not
        converged, that value is only a **lower bound** (but for the round-off allowance): the
        :class:`EstimateWarning` says so and gives the interval; ``full_output=True`` returns it
        with ``certified`` telling whether both ends are guaranteed.

    Raises
    ------
    TypeError, ValueError
        If ``maxiter``, ``tol`` or ``dense_limit`` are invalid (see :func:`spectral_norm`).

    Warns
    -----
    EstimateWarning
        If the iterative estimate did not reach ``tol`` within ``maxiter`` steps.

    Notes
    -----
    Transform: the singular values of :math:`K` are the union over frequencies of those of
    the blocks, so :math:`\kappa(K) = \max_\xi \sigma_{\max}(B(\xi)) / \min_\xi \sigma_{\min}(B(\xi))`;
    for the Kronecker route :math:`\kappa = \prod_a \kappa(K_a)`, with Weyl bounds from the
    ``residual`` when the stencil is an outer product only to round-off (the 256² Gaussian blur:
    :math:`\kappa = \kappa(T)^2` in milliseconds).

    Certified (zero-boundary convolutions): :math:`\sigma_{\max}` between the Lanczos lower
    bound and the periodic-embedding certificate (see :func:`spectral_norm`). :math:`\sigma_{\min}`
    from above by the smallest Ritz value of a Lanczos run started at the Fourier mode where the
    symbol is smallest (guaranteed: a Ritz value of :math:`K V_k` is :math:`\ge \sigma_{\min}`);
    from below only for one channel and a stencil with a real symbol (mirror symmetric, so
    :math:`K` is symmetric Toeplitz): its eigenvalues lie in the range of the symbol
    :math:`f(\xi) = \sum_o w_o \prod_a \cos(\xi_a o_a)` over the continuum, bounded on a fine
    grid minus a Taylor correction; if :math:`f` keeps one sign, :math:`\sigma_{\min} \ge
    \min|f|`. Otherwise the lower bound of :math:`\sigma_{\min}` is 0 and ``upper`` is ``inf``.

    Iterative: :math:`k` steps of Golub--Kahan--Lanczos bidiagonalisation with full
    reorthogonalisation, from a seeded Gaussian start vector :math:`v_1`, on :math:`K` (or
    :math:`K^\top` if wide, so that :math:`m \ge n`) give :math:`K V_k = U_k B_k` with
    orthonormal :math:`V_k`. The singular values of the bidiagonal :math:`B_k` (Ritz values)
    are those of :math:`K V_k`, so they lie in :math:`[\sigma_{\min}, \sigma_{\max}]`:

    * ``lower`` of :math:`\sigma_{\max}` = :math:`\tilde\sigma_{\max}` and ``upper`` of
      :math:`\sigma_{\min}` = :math:`\tilde\sigma_{\min}` -- guaranteed (up to a round-off
      allowance :math:`\sqrt n\,\varepsilon\,\tilde\sigma_{\max}`);
    * ``upper`` of :math:`\sigma_{\max}` = :math:`\tilde\sigma_{\max}/\sqrt{1-\epsilon_k}` and
      ``lower`` of :math:`\sigma_{\min}` =
      :math:`\sqrt{(\tilde\sigma_{\min}^2 - \epsilon_k \sigma_{\max,\rm up}^2)/(1 - \epsilon_k)}`
      (0 when negative: the usual case for an ill-conditioned :math:`K`) -- probabilistic:
      Kuczyński and Woźniakowski's bound for Lanczos on :math:`K^\top K` (and on
      :math:`cI - K^\top K`) with a random start, :math:`\epsilon_k` chosen so that each fails
      with probability at most :math:`10^{-6}` (``certified`` is then False);
    * when the Krylov space becomes invariant (at most :math:`n` steps), the Ritz values are
      singular values and the bounds are the residual bounds :math:`\tilde\sigma \pm r`.

    So ``lower`` of :math:`\kappa` = :math:`\tilde\sigma_{\max}/\tilde\sigma_{\min}` is
    guaranteed and ``upper`` = :math:`\sigma_{\max,\rm up}/\sigma_{\min,\rm low}` (often
    ``inf``) holds with probability at least :math:`1 - 2\cdot10^{-6}`. Convergence is judged
    by the residual :math:`r = |\beta_{k+1} p_k|` of each Ritz triplet,
    :math:`\|K^\top\tilde u - \tilde\sigma\tilde v\| = r`, :math:`K\tilde v = \tilde\sigma\tilde u`.

    Examples
    --------
    >>> import numpy as np, structops
    >>> k = structops.Conv(8, 3, bc="periodic")
    >>> theta = np.array([-1.0, 4.0, -1.0])  # eigenvalues 4 - 2 cos ξ, in [2, 6]
    >>> round(cond(k, theta), 12)
    3.0
    >>> est = cond(structops.Conv(64, 3), theta, dense_limit=0, full_output=True)
    >>> est.certified, bool(est.lower <= np.linalg.cond(structops.Conv(64, 3).matrix(theta)) <= est.upper)
    (True, True)
    """
    as_kernel(kernel)
    maxiter, tol, dense_limit = check_estimate_options(maxiter, tol, dense_limit)
    r = route(kernel, theta, "cond", dense_limit=dense_limit)
    theta = kernel.validate_theta(theta)
    if r.name in ("fourier", "cosine", "kronecker") and r.diagonal is not None:
        est = _transform_cond(r, r.diagonal)
    elif r.name == "dense":
        est = exact_estimate(float(np.linalg.cond(kernel.matrix(theta))), "dense")
    elif r.name == "certified":
        est = certified_cond(kernel, theta, maxiter=maxiter, tol=tol)
    else:
        big, small = golub_kahan(kernel.op(theta), maxiter=maxiter, tol=tol, need_min=True)
        est = _ratio(big, small)
    if not est.converged:
        not_converged("cond", est, maxiter, tol)
    return est if full_output else est.value


def _ratio(big: SpectralEstimate, small: SpectralEstimate) -> SpectralEstimate:
    r"""The estimate of :math:`\sigma_{\max}/\sigma_{\min}` from those of the extremes."""
    value = np.inf if small.value == 0 else big.value / small.value
    lower = np.inf if small.upper == 0 else big.lower / small.upper
    upper = np.inf if small.lower == 0 else big.upper / small.lower
    return SpectralEstimate(
        float(value),
        float(min(lower, value)),
        float(max(upper, value)),
        False,
        big.method,
        big.iterations,
        big.converged and small.converged,
        big.certified and small.certified,
    )


def _order(ev: np.ndarray, which: str) -> np.ndarray:
    key = {"LM": -np.abs(ev), "SM": np.abs(ev), "LR": -ev.real, "SR": ev.real, "LI": -ev.imag, "SI": ev.imag}
    return ev[np.argsort(key[which], kind="stable")]


def eigvals(
    kernel: ParametricKernel,
    theta,
    *,
    k: int | None = None,
    which: str = "LM",
    tol: float = TOL,
    maxiter: int = EIGS_MAXITER,
    dense_limit: int = DENSE_LIMIT,
) -> np.ndarray:
    r"""Eigenvalues of a square :math:`K(\theta)`: all of them exactly (through a fast transform), or ``k`` of them.

    Parameters
    ----------
    kernel : ParametricKernel
        A square family (``shape[0] == shape[1]``).
    theta : array_like, shape (p,)
        Parameters.
    k : int, optional
        With a fast transform whose blocks give the eigenvalues (``route(kernel, theta,
        "eigvals")``: ``"fourier"``, ``"cosine"``, ``"kronecker"``), None returns every
        eigenvalue, and an integer the ``k`` most extreme of them (as ``which`` asks). Otherwise
        the number of eigenvalues (default 6): from ``numpy.linalg.eigvals`` of
        ``kernel.matrix(theta)`` when ``N <= dense_limit`` or ``k >= N - 1`` (ARPACK's limit),
        else from ``scipy.sparse.linalg.eigs`` (ARPACK) on ``kernel.op(theta)``.
    which : {"LM", "SM", "LR", "SR", "LI", "SI"}, optional
        Which ``k`` eigenvalues (``eigs``' convention: largest/smallest magnitude, real or
        imaginary part).
    tol : float, optional
        Relative accuracy passed to ``eigs`` (default 1e-6), in ``[0, 1)``; 0 means round-off.
    maxiter : int, optional
        Most ARPACK restarts (Arnoldi update iterations, default 100), each about
        ``max(2k + 1, 20)`` products with :math:`K`.
    dense_limit : int, optional
        Largest ``N`` computed densely (default 2048); 0 forces ARPACK when ``k < N - 1``.

    Returns
    -------
    numpy.ndarray
        Every eigenvalue (``k`` None, a transform): shape ``grid`` for one channel (complex for
        the FFT, :math:`\lambda(\xi)` as ``kernel.eigvals(theta)``; real for the DCT; the
        products of the 1-D factors' eigenvalues for the Kronecker route), ``(*grid, c)`` for
        ``c`` channels (the eigenvalues of each block :math:`\hat K(\xi)`). Otherwise shape
        ``(k,)``, ordered as ``which`` asks (first = most extreme); fewer than ``k`` (those that
        converged) if ARPACK stopped at ``maxiter``.

    Raises
    ------
    ValueError
        If ``K`` is not square, ``which`` is unknown, ``k >= N - 1`` with ``N > dense_limit``
        and no transform (every eigenvalue of a large operator), or
        ``tol``/``maxiter``/``dense_limit`` are invalid.

    Warns
    -----
    EstimateWarning
        If ARPACK did not converge within ``maxiter`` restarts; the converged eigenvalues are
        returned.

    Examples
    --------
    >>> import numpy as np, structops
    >>> k = structops.Conv(4, 3, bc="periodic")
    >>> np.round(eigvals(k, np.array([-1.0, 2.0, -1.0])).real, 12)  # 2 - 2 cos(2πj/4)
    array([0., 2., 4., 2.])
    """
    as_kernel(kernel)
    if kernel.shape[0] != kernel.shape[1]:
        raise ValueError(f"`eigvals` needs a square K(θ), got `kernel` {kernel!r} of shape {kernel.shape}.")
    if which not in _WHICH:
        raise ValueError(f"`which` must be one of {_WHICH!r}, got {which!r}.")
    maxiter, tol, dense_limit = check_estimate_options(maxiter, tol, dense_limit)
    if k is not None:
        k = check_positive_int(k, "k")
    r = route(kernel, theta, "eigvals", dense_limit=dense_limit)
    if r.name in ("fourier", "cosine", "kronecker") and r.diagonal is not None:
        ev = r.diagonal.eigenvalues()
        return ev if k is None else _order(ev.reshape(-1), which)[:k]
    return _eigvals_iterative(kernel, kernel.validate_theta(theta), 6 if k is None else k, which, tol, maxiter, r)


def _eigvals_iterative(kernel, theta, k: int, which: str, tol: float, maxiter: int, r: Route) -> np.ndarray:
    """``k`` eigenvalues by dense LAPACK (the ``"dense"`` route) or ARPACK."""
    n = kernel.shape[0]
    if r.name == "dense":
        return _order(np.linalg.eigvals(kernel.matrix(theta)), which)[:k]
    if _dense_fallback(kernel, k, 0):
        raise ValueError(
            f"`k` must be < N - 1 = {n - 1} for ARPACK on this {n}×{n} operator, got k={k!r}; every eigenvalue "
            f"needs the dense matrix: raise `dense_limit` to {n} (it takes {8 * n * n / 2**30:.1f} GiB and O(N³) time)."
        )
    v0 = np.random.default_rng(0).standard_normal(n).astype(theta.dtype)
    try:
        ev = spla.eigs(kernel.op(theta), k=k, which=which, tol=tol, maxiter=maxiter, return_eigenvectors=False, v0=v0)
    except spla.ArpackNoConvergence as err:
        ev = np.asarray(err.eigenvalues)
        warnings.warn(
            f"eigvals: ARPACK found {ev.size} of the k={k} eigenvalues (which={which!r}) to tol={tol:g} in "
            f"maxiter={maxiter} restarts; returning those. Raise `maxiter` or `tol` for more.",
            EstimateWarning,
            stacklevel=3,
        )
    return _order(ev, which)
