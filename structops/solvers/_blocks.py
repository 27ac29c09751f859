r"""Per-frequency block algebra shared by the exact routes: inverses, pseudo-inverses, conditioning.

Every exact solve of a :class:`~structops.kernels.diagonalized.Diagonalized` operator
:math:`K = U\,\operatorname{blkdiag}_\xi(B(\xi))\,V^H` is a function of its blocks:
:math:`(K + \alpha I)^{-1} \leftrightarrow (B + \alpha I)^{-1}`, :math:`K^+ \leftrightarrow B^+`,
:math:`(h K^H K + \beta I)^{-1} \leftrightarrow (h B^H B + \beta I)^{-1}`, built here and wrapped by
``D.with_blocks``. The singular values of the blocks are those of :math:`K` (a unitary
transform), so the conditioning checks are exact.
"""

from __future__ import annotations

import warnings

import numpy as np

from .._validation import check_number
from ..kernels.diagonalized import Diagonalized, FourierMultiplier, block_svdvals

__all__ = [
    "SINGULAR_FACTOR",
    "IllConditionedWarning",
    "check_conditioned",
    "check_rcond",
    "inverse_from_symbol",
    "invert_diagonal",
    "normal_inverse",
    "not_normal",
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


def check_rcond(rcond) -> float | None:
    """``rcond`` validated: None, or a relative cutoff in ``[0, 1)``."""
    if rcond is None:
        return None
    rcond = check_number(rcond, "rcond", minimum=0.0)
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
