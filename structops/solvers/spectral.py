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

import numpy as np

from .._validation import check_number, check_positive_int
from ..kernels._base import ParametricKernel, as_kernel
from ..kernels.diagonalized import Diagonalized
from ._blocks import check_rcond
from ._blocks import inverse_from_symbol as inverse_from_symbol  # the circulant preconditioners build on it
from ._filters import regularized_inverse
from ._lanczos import (
    EIGS_MAXITER,
    MAXITER,
    TOL,
    SpectralEstimate,
    check_estimate_options,
    not_converged,
)
from ._routes import DENSE_LIMIT, route

__all__ = ["cond", "eigvals", "implicit_step", "inverse", "spectral_norm", "svdvals"]


_WHICH = ("LM", "SM", "LR", "SR", "LI", "SI")


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
    if not r.exact:
        return r.inverse(alpha=0.0, normal=normal, rcond=None)  # raises, naming the reason
    alpha = check_number(alpha, "alpha", minimum=0.0 if normal else None)
    return r.inverse(alpha=alpha, normal=normal, rcond=check_rcond(rcond))


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
        h = check_number(h, "h", minimum=0.0)
        return regularized_inverse(kernel, theta, alpha=1.0, normal=True, L=L, h=h)
    h = check_number(h, "h", minimum=0.0)
    return route(kernel, theta, "implicit_step").implicit_step(h)


# ------------------------------------------------------------- spectra
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
    return route(kernel, theta, "svdvals", dense_limit=dense_limit, embedding=False).svdvals()


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
        for zero-boundary convolutions (any channels and strides); ``"verified-cholesky"`` for
        the other convolutions (reflect, replicate padding); else Golub--Kahan--Lanczos
        (``"golub-kahan-lanczos"``) on ``kernel.op(theta)``.
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
        ``"certified"``, ``"verified-cholesky"``: the value is the Lanczos lower bound, and
        ``upper`` (a certificate) lies within ``tol`` of it or a warning says how far.
        ``SpectralEstimate.method`` names what gave ``upper``: the route, or ``"padded"`` when a
        convolution is above the verified route's size limit (:math:`\|K_{\rm valid}\|\,\|E\|` or
        Schur's bound, valid but looser).

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
    Verified (reflect, replicate): a Cholesky factorisation of :math:`tI - K^\top K` that runs to
    completion proves :math:`\|K\|_2 \le \sqrt t` up to its backward error (Rump 2006;
    ``structops/solvers/_verified.py``); ``lower`` is the Ritz value of a seeded random start.
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
    est, maxiter, tol = _estimate(kernel, theta, "spectral_norm", maxiter, tol, dense_limit)
    if not est.converged:
        not_converged("spectral_norm", est, maxiter, tol)
    return est if full_output else est.value


def _estimate(kernel, theta, func: str, maxiter, tol, dense_limit) -> tuple[SpectralEstimate, int, float]:
    """``func`` (``"spectral_norm"`` or ``"cond"``) on its route, with the validated ``maxiter`` and ``tol``."""
    as_kernel(kernel)
    maxiter, tol, dense_limit = check_estimate_options(maxiter, tol, dense_limit)
    strategy = route(kernel, theta, func, dense_limit=dense_limit)
    return getattr(strategy, func)(maxiter=maxiter, tol=tol), maxiter, tol


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
    est, maxiter, tol = _estimate(kernel, theta, "cond", maxiter, tol, dense_limit)
    if not est.converged:
        not_converged("cond", est, maxiter, tol)
    return est if full_output else est.value


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
    return r.eigvals(k, which, maxiter=maxiter, tol=tol)
