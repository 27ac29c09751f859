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
* :func:`spectral_norm`, :func:`cond`, :func:`eigvals` -- exact for periodic ``Conv``,
  estimated with ``scipy.sparse.linalg.svds``/``eigs`` on ``kernel.op(theta)`` otherwise.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse.linalg as spla

from .._validation import check_positive_int, check_real_scalar
from ..kernels._base import ParametricKernel, as_kernel
from ._fourier import FourierMultiplier, half_spectrum

__all__ = [
    "SINGULAR_FACTOR",
    "FourierMultiplier",
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
) -> FourierMultiplier:
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
    kernel = _require_circulant(kernel, "inverse")
    alpha = check_real_scalar(alpha, "alpha", minimum=0.0 if normal else None)
    rcond = check_rcond(rcond)
    theta, S = _symbol_half(kernel, theta)
    return inverse_from_symbol(S, kernel.grid, theta.dtype, alpha=alpha, normal=normal, rcond=rcond, name="K(θ)")


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


def implicit_step(kernel: ParametricKernel, theta, h: float) -> FourierMultiplier:
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
    kernel = _require_circulant(kernel, "implicit_step")
    h = check_real_scalar(h, "h", minimum=0.0)
    theta, S = _symbol_half(kernel, theta)
    return _normal_inverse(S, h, 1.0, None, kernel.grid, theta.dtype, f"{h:g}·KᵀK + I")


def _dense_fallback(kernel: ParametricKernel, k_needed: int) -> bool:
    """svds/eigs need ``k < min(shape) - 1``; tiny operators go through the dense matrix instead."""
    return min(kernel.shape) <= k_needed + 1


def spectral_norm(kernel: ParametricKernel, theta, *, tol: float = 0.0) -> float:
    r"""Spectral norm :math:`\|K(\theta)\|_2 = \sigma_{\max}(K(\theta))`.

    Parameters
    ----------
    kernel : ParametricKernel
        Any kernel family. Periodic stride-1 ``Conv``: exact from the symbol; otherwise an
        estimate by ``scipy.sparse.linalg.svds`` (ARPACK) on ``kernel.op(theta)``.
    theta : array_like, shape (p,)
        Parameters.
    tol : float, optional
        Relative accuracy passed to ``svds`` (0: machine precision). Unused when exact.

    Returns
    -------
    float

    Notes
    -----
    For a periodic convolution :math:`\|K\|_2 = \max_\xi \sigma_{\max}(\hat K(\xi))`
    (:math:`\max_\xi|\lambda(\xi)|` for one channel), in :math:`O(N\log N)`. Operators
    with ``min(shape) <= 2`` use the dense matrix (ARPACK needs ``k < min(shape)``).

    Examples
    --------
    >>> import numpy as np, structops
    >>> k = structops.Conv(16, 3, bc="periodic")
    >>> float(spectral_norm(k, np.array([-1.0, 2.0, -1.0])))  # max |2 - 2 cos ξ| = 4
    4.0
    """
    _check_kernel(kernel)
    tol = check_real_scalar(tol, "tol", minimum=0.0)
    if is_circulant(kernel):
        _, S = _symbol_half(kernel, theta)
        return float(_singular_values(S).max(initial=0.0))
    theta = kernel.validate_theta(theta)
    if _dense_fallback(kernel, 1):
        return float(np.linalg.norm(kernel.matrix(theta), 2)) if kernel.shape[0] * kernel.shape[1] else 0.0
    s = spla.svds(kernel.op(theta), k=1, tol=tol, return_singular_vectors=False, random_state=0)
    return float(s[0])


def cond(kernel: ParametricKernel, theta, *, tol: float = 0.0) -> float:
    r"""2-norm condition number :math:`\sigma_{\max}/\sigma_{\min}` of :math:`K(\theta)`.

    As ``numpy.linalg.cond(kernel.matrix(theta))``: the ratio of the largest to the smallest of
    the ``min(shape)`` singular values (``inf`` if the smallest is zero).

    Parameters
    ----------
    kernel : ParametricKernel
        Periodic stride-1 ``Conv``: exact from the symbol. Otherwise estimated with
        ``scipy.sparse.linalg.svds`` (``which="LM"`` and ``which="SM"``) on
        ``kernel.op(theta)``, or the dense matrix when ``min(shape) <= 3``. ARPACK's smallest
        singular value converges slowly for ill-conditioned operators: treat it as an estimate.
    theta : array_like, shape (p,)
        Parameters.
    tol : float, optional
        Relative accuracy passed to ``svds`` (0: machine precision).

    Returns
    -------
    float

    Notes
    -----
    Periodic: the singular values of :math:`K` are the union over frequencies of those of
    the blocks :math:`\hat K(\xi)`, so
    :math:`\kappa(K) = \max_\xi \sigma_{\max}(\hat K(\xi)) / \min_\xi \sigma_{\min}(\hat K(\xi))`.

    Examples
    --------
    >>> import numpy as np, structops
    >>> k = structops.Conv(8, 3, bc="periodic")
    >>> theta = np.array([-1.0, 4.0, -1.0])  # eigenvalues 4 - 2 cos ξ, in [2, 6]
    >>> round(cond(k, theta), 12)
    3.0
    """
    _check_kernel(kernel)
    tol = check_real_scalar(tol, "tol", minimum=0.0)
    if is_circulant(kernel):
        _, S = _symbol_half(kernel, theta)
        sv = _singular_values(S)
        smax, smin = float(sv.max()), float(sv.min())
        return np.inf if smin == 0 else smax / smin
    theta = kernel.validate_theta(theta)
    if _dense_fallback(kernel, 2):
        return float(np.linalg.cond(kernel.matrix(theta)))
    op = kernel.op(theta)
    smax = spla.svds(op, k=1, which="LM", tol=tol, return_singular_vectors=False, random_state=0)[0]
    smin = spla.svds(op, k=1, which="SM", tol=tol, return_singular_vectors=False, random_state=0)[0]
    return np.inf if smin == 0 else float(smax / smin)


def eigvals(kernel: ParametricKernel, theta, *, k: int | None = None, which: str = "LM") -> np.ndarray:
    r"""Eigenvalues of a square :math:`K(\theta)`: all of them exactly (periodic ``Conv``), or ``k`` by ARPACK.

    Parameters
    ----------
    kernel : ParametricKernel
        A square family (``shape[0] == shape[1]``).
    theta : array_like, shape (p,)
        Parameters.
    k : int, optional
        Periodic ``Conv``: must be None (every eigenvalue is returned). Otherwise the number
        of eigenvalues ``scipy.sparse.linalg.eigs`` computes (default 6); when
        ``k >= N - 1`` (ARPACK's limit) the dense eigenvalues are sorted instead.
    which : {"LM", "SM", "LR", "SR", "LI", "SI"}, optional
        Which ``k`` eigenvalues (``eigs``' convention: largest/smallest magnitude, real or
        imaginary part); ignored for periodic ``Conv``.

    Returns
    -------
    numpy.ndarray, complex
        Periodic ``Conv`` with one channel: shape ``grid``, :math:`\lambda(\xi)`
        (``kernel.eigvals(theta)``); with ``c`` channels: shape ``(*grid, c)``, the
        eigenvalues of each block :math:`\hat K(\xi)`. Otherwise shape ``(k,)``, ordered as
        ``which`` asks (first = most extreme).

    Raises
    ------
    ValueError
        If ``K`` is not square, ``which`` is unknown, or ``k`` is given for a periodic ``Conv``.

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
    if is_circulant(kernel):
        if k is not None:
            raise ValueError(f"`k` must be None for a periodic Conv (all eigenvalues are exact), got {k!r}.")
        if kernel.in_channels == 1:
            return kernel.eigvals(theta)
        return np.linalg.eigvals(kernel.symbol(theta))
    k = 6 if k is None else check_positive_int(k, "k")
    theta = kernel.validate_theta(theta)
    n = kernel.shape[0]
    if k >= n - 1:
        ev = np.linalg.eigvals(kernel.matrix(theta))
        key = {"LM": -np.abs(ev), "SM": np.abs(ev), "LR": -ev.real, "SR": ev.real, "LI": -ev.imag, "SI": ev.imag}
        return ev[np.argsort(key[which], kind="stable")][:k]
    v0 = np.random.default_rng(0).standard_normal(n).astype(theta.dtype)
    ev = spla.eigs(kernel.op(theta), k=k, which=which, return_eigenvectors=False, v0=v0)
    key = {"LM": -np.abs(ev), "SM": np.abs(ev), "LR": -ev.real, "SR": ev.real, "LI": -ev.imag, "SI": ev.imag}
    return ev[np.argsort(key[which], kind="stable")]
