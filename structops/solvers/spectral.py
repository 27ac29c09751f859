r"""Exact spectral tools for periodic convolutions, and estimates for every other kernel.

A periodic :class:`structops.Conv` with stride 1 is block-circulant with circulant blocks
(BCCB): the DFT over the grid turns it into one ``out_channels × in_channels`` block per
frequency, its *symbol* :math:`\hat K(\xi)` (``kernel.symbol(theta)``; for one channel the
eigenvalues :math:`\lambda(\xi)`, ``kernel.eigvals(theta)``). Inverses, norms, condition
numbers and eigenvalues then follow from small per-frequency problems in
:math:`O(N \log N)` -- exactly, without building the :math:`N \times N` matrix.

* :func:`inverse` -- :math:`K^{-1}`, :math:`(K + \alpha I)^{-1}`, :math:`(K^\top K + \alpha I)^{-1}`
  or the pseudo-inverse :math:`K^+`, as pylops operators with their adjoints;
* :func:`implicit_step` -- :math:`(h K^\top K + I)^{-1}`, one implicit (backward Euler) step
  of the gradient flow :math:`\dot x = -K^\top K x`;
* :func:`spectral_norm`, :func:`cond`, :func:`eigvals` -- exact for periodic ``Conv``; for
  other kernels dense linear algebra up to ``dense_limit`` unknowns, else a bounded
  Golub-Kahan-Lanczos estimate (``maxiter`` steps) that reports its bounds
  (:class:`SpectralEstimate`, :class:`EstimateWarning`) and never runs unbounded.

Kernels with a ``dct_type`` (:class:`structops.SymmetricConv` with mirror boundaries) are
diagonalised by a cosine transform instead: :func:`inverse`, :func:`implicit_step` and
:func:`eigvals` hand them to :mod:`structops.solvers.dct`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse.linalg as spla

from .._validation import check_positive_int, check_real_scalar
from ..kernels._base import ParametricKernel, as_kernel
from ._fourier import FourierMultiplier, half_spectrum

if TYPE_CHECKING:
    from .dct import CosineMultiplier

__all__ = [
    "SINGULAR_FACTOR",
    "EstimateWarning",
    "FourierMultiplier",
    "SpectralEstimate",
    "cond",
    "eigvals",
    "implicit_step",
    "inverse",
    "is_circulant",
    "spectral_norm",
]

#: A per-frequency system counts as near-singular when its condition number exceeds
#: ``1 / (SINGULAR_FACTOR * eps)``: the solve would keep fewer than about three correct digits.
SINGULAR_FACTOR = 1000.0

_WHICH = ("LM", "SM", "LR", "SR", "LI", "SI")


# ----------------------------------------------------------------- validation
_check_kernel = as_kernel


def is_circulant(kernel) -> bool:
    """Whether ``kernel`` is block circulant (``kernel.circulant``): diagonalised by the FFT.

    True for the periodic stride-1 convolution families (:class:`structops.Conv` and the
    families built on it); their ``symbol(theta)`` gives the per-frequency blocks.

    Examples
    --------
    >>> import structops
    >>> is_circulant(structops.Conv(8, 3, bc="periodic")), is_circulant(structops.Conv(8, 3))
    (True, False)
    """
    return isinstance(kernel, ParametricKernel) and bool(kernel.circulant)


def _require_circulant(kernel, func: str) -> Any:
    """``kernel`` if it is block circulant (it then has ``symbol``, ``grid`` and channel counts)."""
    as_kernel(kernel)
    if not is_circulant(kernel):
        raise ValueError(
            f"`{func}` needs a periodic convolution, e.g. structops.Conv(..., bc='periodic', stride=1) "
            f"(block-circulant, diagonalised by the FFT), got `kernel` = {kernel!r}; for other kernels use "
            "scipy.sparse.linalg's iterative solvers on kernel.op(theta) (see structops.solvers.circulant_"
            "preconditioner for zero boundaries)."
        )
    return kernel


def check_rcond(rcond) -> float | None:
    if rcond is None:
        return None
    rcond = check_real_scalar(rcond, "rcond", minimum=0.0)
    if rcond >= 1.0:
        raise ValueError(f"`rcond` must be None or a relative cutoff in [0, 1), got {rcond!r}.")
    return rcond


# ------------------------------------------------------------- per frequency
def _singular_values(blocks: np.ndarray) -> np.ndarray:
    """Singular values of every block, shape ``(*freq, min(out, in))``."""
    if blocks.shape[-2:] == (1, 1):
        return np.abs(blocks[..., 0, :])
    return np.linalg.svd(blocks, compute_uv=False)


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


def _check_conditioned(sv: np.ndarray, what: str, grid: tuple[int, ...], scalar: bool) -> None:
    """Raise ``numpy.linalg.LinAlgError`` when the singular values ``sv`` (per frequency) make the system singular.

    The message names the smallest singular value (``|λ|`` for one channel), where it sits,
    and the condition number, compared with ``1 / (SINGULAR_FACTOR * eps)``.
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


def _invert(blocks: np.ndarray, sv: np.ndarray, rcond: float | None, what: str, grid: tuple[int, ...]):
    """Inverse of square per-frequency blocks with singular values ``sv``, or their pseudo-inverse with ``rcond``."""
    if rcond is not None:
        return _pinv_blocks(blocks, rcond * float(sv.max(initial=0.0)))
    _check_conditioned(sv, what, grid, blocks.shape[-2:] == (1, 1))
    return _inverse_blocks(blocks)


def _symbol_half(kernel: Any, theta) -> tuple[np.ndarray, np.ndarray]:
    theta = kernel.validate_theta(theta)
    return theta, half_spectrum(kernel.symbol(theta), len(kernel.grid))


# -------------------------------------------------------------------- public
def inverse(
    kernel: ParametricKernel,
    theta,
    *,
    alpha: float = 0.0,
    normal: bool = False,
    rcond: float | None = None,
) -> FourierMultiplier | CosineMultiplier:
    r"""Exact inverse of a periodic convolution (or of its shifted or normal operator), in :math:`O(N\log N)`.

    Parameters
    ----------
    kernel : structops.Conv
        A periodic convolution, ``Conv(..., bc="periodic", stride=1)``, any number of channels.
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

    Returns
    -------
    FourierMultiplier
        A pylops ``LinearOperator`` (usable with scipy and pylops) with its adjoint
        (``.H`` is the multiplier of the conjugate-transposed blocks):

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
        If ``kernel`` is not a periodic stride-1 ``Conv``; if ``alpha`` is not finite, is
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
    if getattr(kernel, "dct_type", None) is not None:  # mirror boundaries: the DCT (structops.solvers.dct)
        from .dct import dct_inverse

        return dct_inverse(kernel, theta, alpha=alpha, normal=normal, rcond=rcond)
    circ = _require_circulant(kernel, "inverse")
    alpha = check_real_scalar(alpha, "alpha", minimum=0.0 if normal else None)
    rcond = check_rcond(rcond)
    theta, S = _symbol_half(circ, theta)
    return inverse_from_symbol(S, circ.grid, theta.dtype, alpha=alpha, normal=normal, rcond=rcond, name="K(θ)")


def inverse_from_symbol(
    S: np.ndarray, grid: tuple[int, ...], dtype, *, alpha: float, normal: bool, rcond: float | None, name: str
) -> FourierMultiplier:
    """The multiplier of ``(S + αI)^-1``, ``(S^H S + αI)^-1`` or ``S^+`` from a half symbol ``S``."""
    cout, cin = S.shape[-2:]
    if normal:
        return _normal_inverse(S, 1.0, alpha, rcond, grid, dtype, f"{name}ᵀ{name} + {alpha:g}·I")
    if cout != cin:
        if alpha != 0:
            raise ValueError(
                f"`alpha` must be 0 for a non-square K (in_channels={cin}, out_channels={cout}): K + αI is "
                f"undefined, got alpha={alpha!r}; use normal=True for (KᵀK + αI)^-1."
            )
        sv = _singular_values(S)
        if rcond is None:
            _check_conditioned(sv, name, grid, scalar=False)
        blocks = _pinv_blocks(S, 0.0 if rcond is None else rcond * float(sv.max(initial=0.0)))
        return FourierMultiplier(blocks, grid, dtype=dtype, name=f"{name}⁺")
    shifted = S + S.real.dtype.type(alpha) * np.eye(cin, dtype=S.dtype) if alpha != 0 else S
    what = name if alpha == 0 else f"{name} + {alpha:g}·I"
    blocks = _invert(shifted, _singular_values(shifted), rcond, what, grid)
    return FourierMultiplier(blocks, grid, dtype=dtype, name=f"({what})⁻¹")


def _normal_inverse(S, h, beta, rcond, grid, dtype, what) -> FourierMultiplier:
    r"""Multiplier of :math:`(h\hat K^H\hat K + \beta I)^{-1}` from the half symbol ``S``."""
    cin = S.shape[-1]
    real = S.real.dtype.type
    h, beta = real(h), real(beta)
    if S.shape[-2:] == (1, 1):
        blocks = h * np.abs(S) ** 2 + beta
        blocks = blocks.astype(S.dtype)
        sv = np.abs(blocks[..., 0, :])
    else:
        blocks = h * (np.conj(np.swapaxes(S, -1, -2)) @ S) + beta * np.eye(cin, dtype=S.dtype)
        s = np.linalg.svd(S, compute_uv=False)
        # the eigenvalues of h S^H S + beta I: h s^2 + beta, and beta on the null space of S
        sv = np.concatenate([h * s**2 + beta, np.full((*s.shape[:-1], cin - s.shape[-1]), beta, dtype=s.dtype)], -1)
    inv = _invert(blocks, sv, rcond, what, grid)
    return FourierMultiplier(inv, grid, dtype=dtype, name=f"({what})⁻¹")


def implicit_step(kernel: ParametricKernel, theta, h: float) -> FourierMultiplier | CosineMultiplier:
    r"""The implicit (backward Euler) step :math:`(h K^\top K + I)^{-1}` of a periodic convolution.

    One step of size :math:`h` of the gradient flow :math:`\dot x = -K^\top K x` (of
    :math:`\tfrac12\|Kx\|^2`) maps :math:`x_k` to :math:`x_{k+1} = (h K^\top K + I)^{-1} x_k`;
    it is unconditionally stable: every eigenvalue :math:`1/(h\sigma^2 + 1)` lies in
    :math:`(0, 1]`.

    Parameters
    ----------
    kernel : structops.Conv
        A periodic convolution (``bc="periodic"``, stride 1), any number of channels.
    theta : array_like, shape (p,)
        Stencil parameters (float32 or float64; the operator runs in their dtype).
    h : float
        Step size, :math:`h \ge 0` (``h = 0`` is the identity).

    Returns
    -------
    FourierMultiplier
        Symmetric positive definite operator of shape ``(N c_{in}, N c_{in})``, with blocks
        :math:`(h\hat K(\xi)^H\hat K(\xi) + I)^{-1}`; never singular.

    Raises
    ------
    TypeError
        If ``h`` is not a real number or ``kernel`` not a kernel family.
    ValueError
        If ``h`` is negative or not finite, or ``kernel`` is not a periodic stride-1 ``Conv``.

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
    if getattr(kernel, "dct_type", None) is not None:  # mirror boundaries: the DCT (structops.solvers.dct)
        from .dct import dct_implicit_step

        return dct_implicit_step(kernel, theta, h)
    circ = _require_circulant(kernel, "implicit_step")
    h = check_real_scalar(h, "h", minimum=0.0)
    theta, S = _symbol_half(circ, theta)
    return _normal_inverse(S, h, 1.0, None, circ.grid, theta.dtype, f"{h:g}·KᵀK + I")


# ------------------------------------------------------------- estimates
#: Largest ``max(kernel.shape)`` for which the estimates build the dense matrix (``kernel.matrix``)
#: and call LAPACK (``numpy.linalg.svd``/``eigvals``): 2048² float64 is 32 MiB and an SVD of a
#: few seconds on two cores. Larger operators go through the iterative methods.
_DENSE_LIMIT = 2048
#: Default number of Golub--Kahan--Lanczos steps (one product with K and one with Kᵀ each); the
#: bases kept for full reorthogonalisation take ``maxiter · (m + n)`` numbers.
_MAXITER = 200
#: Default relative accuracy of the iterative estimates.
_TOL = 1e-6
#: Default number of ARPACK restarts (Arnoldi update iterations) in :func:`eigvals`.
_EIGS_MAXITER = 100
#: Probability that one probabilistic bound of a :class:`SpectralEstimate` fails (over the start vector).
_FAILURE_PROBABILITY = 1e-6


class EstimateWarning(UserWarning):
    """An iterative spectral estimate stopped at ``maxiter`` before reaching ``tol``.

    The message gives the estimate and the bounds it is known to lie within; pass
    ``full_output=True`` to get them as a :class:`SpectralEstimate`.
    """


@dataclass(frozen=True)
class SpectralEstimate:
    r"""A spectral quantity with the interval it is known to lie in.

    Attributes
    ----------
    value : float
        The estimate: what :func:`spectral_norm` / :func:`cond` return without ``full_output``.
    lower, upper : float
        Bounds, ``lower <= true value <= upper`` (``upper`` may be ``inf``). Exact results:
        ``lower == value == upper``. Iterative results: see Notes of :func:`cond`.
    exact : bool
        True when computed exactly, up to round-off: from the symbol (periodic ``Conv``) or
        by dense LAPACK on ``kernel.matrix(theta)``.
    method : str
        ``"symbol"``, ``"dense"`` or ``"golub-kahan-lanczos"``.
    iterations : int
        Lanczos steps taken (each one product with :math:`K` and one with :math:`K^\top`); 0 if exact.
    converged : bool
        False when an iterative estimate stopped at ``maxiter`` before reaching ``tol`` (an
        :class:`EstimateWarning` was then emitted).
    """

    value: float
    lower: float
    upper: float
    exact: bool
    method: str
    iterations: int
    converged: bool = True


def _exact(value: float, method: str) -> SpectralEstimate:
    return SpectralEstimate(value, value, value, True, method, 0)


def _check_estimate_options(maxiter, tol, dense_limit) -> tuple[int, float, int]:
    """Validated ``maxiter`` (>= 1), ``tol`` (in [0, 1)) and ``dense_limit`` (>= 0)."""
    maxiter = check_positive_int(maxiter, "maxiter")
    tol = check_real_scalar(tol, "tol", minimum=0.0)
    if tol >= 1.0:
        raise ValueError(f"`tol` must be a relative accuracy in [0, 1), got {tol!r}.")
    dense_limit = check_positive_int(dense_limit, "dense_limit", minimum=0)
    return maxiter, tol, dense_limit


def _dense_fallback(kernel: ParametricKernel, k_needed: int, dense_limit: int) -> bool:
    """Whether an estimate uses the dense matrix: ``max(shape) <= dense_limit``, or too small for ARPACK.

    ``eigs`` needs ``k < N - 1``.
    """
    return max(kernel.shape) <= dense_limit or min(kernel.shape) <= k_needed + 1


def _kw_epsilon(k: int, n: int) -> float:
    r"""The relative gap :math:`\varepsilon` of Kuczyński--Woźniakowski's bound after ``k`` Lanczos steps.

    For a symmetric positive semidefinite :math:`B` and a start vector uniform on the unit
    sphere, the largest Ritz value satisfies
    :math:`P(\theta_1 < (1 - \varepsilon)\lambda_1) \le 1.648\sqrt n\, e^{-\sqrt\varepsilon(2k - 1)}`
    (SIAM J. Matrix Anal. Appl. 13 (1992), Theorem 4.2); solved for the failure probability
    ``_FAILURE_PROBABILITY``.
    """
    root = np.log(1.648 * np.sqrt(n) / _FAILURE_PROBABILITY) / (2 * k - 1)
    return float(root * root)


def _golub_kahan(op, *, maxiter: int, tol: float, need_min: bool) -> tuple[SpectralEstimate, SpectralEstimate]:
    r"""Largest and smallest singular values of ``op`` (tall or wide) by Golub--Kahan--Lanczos bidiagonalisation.

    Runs at most ``maxiter`` steps with full reorthogonalisation from a seeded Gaussian start
    vector, stopping once the largest (and, with ``need_min``, the smallest) Ritz value has a
    residual ``<= tol`` relative to itself, or once the Krylov space is invariant. Returns the
    estimates of :math:`\sigma_{\max}` and :math:`\sigma_{\min}` (the ``min(shape)``-th) with
    the bounds described in :func:`cond`.
    """
    m, n = op.shape
    if m < n:  # the same singular values; Ritz values of a tall operator lie within [σ_min, σ_max]
        op, m, n = op.H, n, m
    work = np.result_type(op.dtype, np.float64)
    eps = float(np.finfo(op.dtype if np.issubdtype(op.dtype, np.inexact) else np.float64).eps)
    tol = max(tol, 10.0 * eps)
    kmax = min(maxiter, n)
    U = np.zeros((kmax, m), dtype=work)
    V = np.zeros((kmax + 1, n), dtype=work)
    alpha = np.zeros(kmax)
    beta = np.zeros(kmax + 1)
    rng = np.random.default_rng(0)
    v = rng.standard_normal(n)
    if np.iscomplexobj(V):
        v = v + 1j * rng.standard_normal(n)
    V[0] = v / np.linalg.norm(v)

    def ritz(k: int, defect: float, uniform: bool = False):
        B = np.diag(alpha[:k]) + np.diag(beta[1:k], 1)
        P, s, _ = np.linalg.svd(B)
        return s, np.full(k, defect) if uniform else np.abs(defect * P[k - 1, :])

    def done(s, r) -> tuple[bool, bool]:
        top = r[0] <= tol * s[0]
        bottom = r[-1] <= tol * s[-1] or s[-1] <= n * eps * s[0]
        return bool(top), bool(bottom)

    scale, k, invariant, defect, rank_deficient = 0.0, 0, False, 0.0, False
    s, r = np.zeros(1), np.zeros(1)
    for j in range(kmax):
        k = j + 1
        u = np.asarray(op.matvec(V[j]), dtype=work).ravel()
        if j:
            u -= beta[j] * U[j - 1]
            u -= U[:j].T @ (U[:j].conj() @ u)
        alpha[j] = np.linalg.norm(u)
        scale = max(scale, alpha[j], beta[j])
        if alpha[j] <= n * eps * scale:  # K v_j lies in span(u_1..u_{j-1}): K is numerically rank deficient
            # then K V_k = U_{k-1} B_k[:-1] + alpha_j u e_kᵀ and Kᵀ U_{k-1} = V_k B_k[:-1]ᵀ: invariant up to alpha_j
            invariant, rank_deficient, defect = True, True, alpha[j]
            alpha[j] = 0.0
            break
        U[j] = u / alpha[j]
        w = np.asarray(op.rmatvec(U[j]), dtype=work).ravel() - alpha[j] * V[j]
        w -= V[:k].T @ (V[:k].conj() @ w)
        beta[k] = np.linalg.norm(w)
        if k == n or beta[k] <= n * eps * scale:  # span(v_1..v_k) is invariant under KᵀK
            invariant, defect = True, beta[k]
            break
        V[k] = w / beta[k]
        if k % 10 == 0 and k < kmax:
            s, r = ritz(k, beta[k])
            top, bottom = done(s, r)
            if top and (bottom or not need_min):
                break
    if not invariant:
        defect = beta[k]
    s, r = ritz(k, defect, uniform=rank_deficient)
    top, bottom = done(s, r)
    slack = np.sqrt(n) * eps * s[0]  # round-off of the computed Ritz values, relative to ||K||
    method = "golub-kahan-lanczos"
    if invariant:  # the Ritz values are singular values of K (all distinct ones the start vector sees)
        max_up, min_low = s[0] + r[0] + slack, max(s[-1] - r[-1] - slack, 0.0)
        top = bottom = True
    else:
        eps_kw = _kw_epsilon(k, n)
        max_up = s[0] / np.sqrt(1.0 - eps_kw) + slack if eps_kw < 1 else np.inf
        floor = (s[-1] ** 2 - eps_kw * max_up**2) / (1.0 - eps_kw) if eps_kw < 1 else -1.0
        min_low = max(np.sqrt(floor) - slack, 0.0) if floor > 0 else 0.0
    smax = SpectralEstimate(float(s[0]), float(max(s[0] - slack, 0.0)), float(max_up), False, method, k, top)
    smin = SpectralEstimate(float(s[-1]), float(min_low), float(s[-1] + slack), False, method, k, bottom)
    return smax, smin


def _not_converged(what: str, est: SpectralEstimate, maxiter: int, tol: float) -> None:
    warnings.warn(
        f"{what}: the Lanczos estimate {est.value:.6e} did not reach tol={tol:g} in maxiter={maxiter} steps; "
        f"the true value lies in [{est.lower:.6e}, {est.upper:.6e}] (see `full_output=True` and the Notes of "
        "structops.solvers.cond for what the bounds guarantee). Raise `maxiter` for a tighter estimate.",
        EstimateWarning,
        stacklevel=3,
    )


def spectral_norm(
    kernel: ParametricKernel,
    theta,
    *,
    tol: float = _TOL,
    maxiter: int = _MAXITER,
    dense_limit: int = _DENSE_LIMIT,
    full_output: bool = False,
) -> float | SpectralEstimate:
    r"""Spectral norm :math:`\|K(\theta)\|_2 = \sigma_{\max}(K(\theta))`.

    Parameters
    ----------
    kernel : ParametricKernel
        Any kernel family. Periodic stride-1 ``Conv``: exact from the symbol. Otherwise the
        dense ``numpy.linalg.svd`` of ``kernel.matrix(theta)`` when
        ``max(kernel.shape) <= dense_limit``, else Golub--Kahan--Lanczos on ``kernel.op(theta)``.
    theta : array_like, shape (p,)
        Parameters.
    tol : float, optional
        Relative accuracy of the iterative estimate (default 1e-6): it stops once the Ritz
        triplet's residual is below ``tol`` times the estimate. In ``[0, 1)``; 0 means round-off.
    maxiter : int, optional
        Most Lanczos steps (default 200), each one product with :math:`K` and one with
        :math:`K^\top`; memory ``maxiter · (m + n)`` numbers. 200 steps of a 256×256 image take
        seconds.
    dense_limit : int, optional
        Largest ``max(kernel.shape)`` computed densely (default 2048); 0 forces the iterative path.
    full_output : bool, optional
        Return a :class:`SpectralEstimate` (value, bounds, method, iterations) instead of a float.

    Returns
    -------
    float or SpectralEstimate

    Raises
    ------
    TypeError, ValueError
        If ``maxiter`` is not an integer >= 1, ``tol`` not a real in ``[0, 1)``, or
        ``dense_limit`` not an integer >= 0.

    Warns
    -----
    EstimateWarning
        If the iterative estimate did not reach ``tol`` within ``maxiter`` steps; the best
        estimate is returned and the message gives its bounds.

    Notes
    -----
    For a periodic convolution :math:`\|K\|_2 = \max_\xi \sigma_{\max}(\hat K(\xi))`
    (:math:`\max_\xi|\lambda(\xi)|` for one channel), in :math:`O(N\log N)`. The iterative
    bounds are those of :func:`cond`'s Notes: the Ritz value is a lower bound, the upper bound
    holds with probability at least :math:`1 - 10^{-6}`.

    Examples
    --------
    >>> import numpy as np, structops
    >>> k = structops.Conv(16, 3, bc="periodic")
    >>> float(spectral_norm(k, np.array([-1.0, 2.0, -1.0])))  # max |2 - 2 cos ξ| = 4
    4.0
    >>> est = spectral_norm(structops.Conv(64, 3), np.array([-1.0, 2.0, -1.0]), dense_limit=0, full_output=True)
    >>> est.method, bool(est.lower <= 2 - 2 * np.cos(64 * np.pi / 65) <= est.upper)
    ('golub-kahan-lanczos', True)
    """
    _check_kernel(kernel)
    maxiter, tol, dense_limit = _check_estimate_options(maxiter, tol, dense_limit)
    if is_circulant(kernel):
        _, S = _symbol_half(kernel, theta)
        value = float(_singular_values(S).max(initial=0.0))
        return _exact(value, "symbol") if full_output else value
    theta = kernel.validate_theta(theta)
    if min(kernel.shape) == 0 or _dense_fallback(kernel, 0, dense_limit):
        value = float(np.linalg.norm(kernel.matrix(theta), 2)) if min(kernel.shape) else 0.0
        return _exact(value, "dense") if full_output else value
    est, _ = _golub_kahan(kernel.op(theta), maxiter=maxiter, tol=tol, need_min=False)
    if not est.converged:
        _not_converged("spectral_norm", est, maxiter, tol)
    return est if full_output else est.value


def cond(
    kernel: ParametricKernel,
    theta,
    *,
    tol: float = _TOL,
    maxiter: int = _MAXITER,
    dense_limit: int = _DENSE_LIMIT,
    full_output: bool = False,
) -> float | SpectralEstimate:
    r"""2-norm condition number :math:`\sigma_{\max}/\sigma_{\min}` of :math:`K(\theta)`.

    As ``numpy.linalg.cond(kernel.matrix(theta))``: the ratio of the largest to the smallest of
    the ``min(shape)`` singular values (``inf`` if the smallest is zero).

    Parameters
    ----------
    kernel : ParametricKernel
        Periodic stride-1 ``Conv``: exact from the symbol. Otherwise ``numpy.linalg.svd`` of
        ``kernel.matrix(theta)`` when ``max(kernel.shape) <= dense_limit``, else an estimate
        with bounds by Golub--Kahan--Lanczos on ``kernel.op(theta)`` (see Notes).
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
        Largest ``max(kernel.shape)`` computed densely (default 2048); 0 forces the iterative path.
    full_output : bool, optional
        Return a :class:`SpectralEstimate` instead of a float.

    Returns
    -------
    float or SpectralEstimate
        Exact, or the iterative estimate :math:`\tilde\sigma_{\max}/\tilde\sigma_{\min}`; not
        converged, it is the lower bound (but for the round-off allowance).

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
    Periodic: the singular values of :math:`K` are the union over frequencies of those of
    the blocks :math:`\hat K(\xi)`, so
    :math:`\kappa(K) = \max_\xi \sigma_{\max}(\hat K(\xi)) / \min_\xi \sigma_{\min}(\hat K(\xi))`.

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
      with probability at most :math:`10^{-6}`;
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
    >>> est.converged, bool(est.lower <= np.linalg.cond(structops.Conv(64, 3).matrix(theta)) <= est.upper)
    (True, True)
    """
    _check_kernel(kernel)
    maxiter, tol, dense_limit = _check_estimate_options(maxiter, tol, dense_limit)
    if is_circulant(kernel):
        _, S = _symbol_half(kernel, theta)
        sv = _singular_values(S)
        smax, smin = float(sv.max()), float(sv.min())
        value = np.inf if smin == 0 else smax / smin
        return _exact(value, "symbol") if full_output else value
    theta = kernel.validate_theta(theta)
    if _dense_fallback(kernel, 0, dense_limit):
        value = float(np.linalg.cond(kernel.matrix(theta)))
        return _exact(value, "dense") if full_output else value
    big, small = _golub_kahan(kernel.op(theta), maxiter=maxiter, tol=tol, need_min=True)
    value = np.inf if small.value == 0 else big.value / small.value
    lower = np.inf if small.upper == 0 else big.lower / small.upper
    upper = np.inf if small.lower == 0 else big.upper / small.lower
    est = SpectralEstimate(
        float(value),
        float(min(lower, value)),
        float(max(upper, value)),
        False,
        big.method,
        big.iterations,
        big.converged and small.converged,
    )
    if not est.converged:
        _not_converged("cond", est, maxiter, tol)
    return est if full_output else est.value


def eigvals(
    kernel: ParametricKernel,
    theta,
    *,
    k: int | None = None,
    which: str = "LM",
    tol: float = _TOL,
    maxiter: int = _EIGS_MAXITER,
    dense_limit: int = _DENSE_LIMIT,
) -> np.ndarray:
    r"""Eigenvalues of a square :math:`K(\theta)`: all of them exactly (periodic ``Conv``), or ``k`` of them.

    Parameters
    ----------
    kernel : ParametricKernel
        A square family (``shape[0] == shape[1]``).
    theta : array_like, shape (p,)
        Parameters.
    k : int, optional
        Periodic ``Conv``: must be None (every eigenvalue is returned). Otherwise the number
        of eigenvalues (default 6): from ``numpy.linalg.eigvals`` of ``kernel.matrix(theta)``
        when ``N <= dense_limit`` or ``k >= N - 1`` (ARPACK's limit), else from
        ``scipy.sparse.linalg.eigs`` (ARPACK) on ``kernel.op(theta)``.
    which : {"LM", "SM", "LR", "SR", "LI", "SI"}, optional
        Which ``k`` eigenvalues (``eigs``' convention: largest/smallest magnitude, real or
        imaginary part); ignored for periodic ``Conv``.
    tol : float, optional
        Relative accuracy passed to ``eigs`` (default 1e-6), in ``[0, 1)``; 0 means round-off.
    maxiter : int, optional
        Most ARPACK restarts (Arnoldi update iterations, default 100), each about
        ``max(2k + 1, 20)`` products with :math:`K`.
    dense_limit : int, optional
        Largest ``N`` computed densely (default 2048); 0 forces ARPACK when ``k < N - 1``.

    Returns
    -------
    numpy.ndarray, complex
        Periodic ``Conv`` with one channel: shape ``grid``, :math:`\lambda(\xi)`
        (``kernel.eigvals(theta)``); with ``c`` channels: shape ``(*grid, c)``, the
        eigenvalues of each block :math:`\hat K(\xi)`. Otherwise shape ``(k,)``, ordered as
        ``which`` asks (first = most extreme); fewer than ``k`` (those that converged) if ARPACK
        stopped at ``maxiter``.

    Raises
    ------
    ValueError
        If ``K`` is not square, ``which`` is unknown, ``k`` is given for a periodic ``Conv``,
        ``k >= N - 1`` with ``N > dense_limit`` (every eigenvalue of a large operator), or
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
    _check_kernel(kernel)
    if kernel.shape[0] != kernel.shape[1]:
        raise ValueError(f"`eigvals` needs a square K(θ), got `kernel` {kernel!r} of shape {kernel.shape}.")
    if which not in _WHICH:
        raise ValueError(f"`which` must be one of {_WHICH!r}, got {which!r}.")
    maxiter, tol, dense_limit = _check_estimate_options(maxiter, tol, dense_limit)
    if getattr(kernel, "dct_type", None) is not None:  # mirror boundaries: the DCT (structops.solvers.dct)
        if k is not None:
            raise ValueError(f"`k` must be None for a kernel with a dct_type (all eigenvalues are exact), got {k!r}.")
        from .dct import dct_eigvals

        return dct_eigvals(kernel, theta)
    if is_circulant(kernel):
        if k is not None:
            raise ValueError(f"`k` must be None for a periodic Conv (all eigenvalues are exact), got {k!r}.")
        circ = _require_circulant(kernel, "eigvals")
        if circ.in_channels == 1:
            return circ.eigvals(theta)
        return np.linalg.eigvals(circ.symbol(theta))
    k = 6 if k is None else check_positive_int(k, "k")
    theta = kernel.validate_theta(theta)
    n = kernel.shape[0]

    def order(ev: np.ndarray) -> np.ndarray:
        key = {"LM": -np.abs(ev), "SM": np.abs(ev), "LR": -ev.real, "SR": ev.real, "LI": -ev.imag, "SI": ev.imag}
        return ev[np.argsort(key[which], kind="stable")]

    if n <= dense_limit:
        return order(np.linalg.eigvals(kernel.matrix(theta)))[:k]
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
            stacklevel=2,
        )
    return order(ev)
