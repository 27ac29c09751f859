r"""Tikhonov regularisation in a shared diagonalising basis: filter factors, criteria, exact solves.

When :math:`K = U\,\operatorname{blkdiag}(B(\xi))\,V^H` and the regularisation operator
:math:`L = W\,\operatorname{blkdiag}(C(\xi))\,V^H` share the right basis :math:`V`
(``D.same_basis(D_L)`` for ``D = kernel.diagonalize(theta)``; :math:`L = I` shares every
unitary one), the regularised solution

.. math::
    x_\alpha = \arg\min_x \|Kx - b\|^2 + \alpha\|Lx\|^2 = (K^H K + \alpha L^H L)^{-1} K^H b

is the multiplier :math:`V\,\operatorname{blkdiag}\big((B^H B + \alpha C^H C)^{-1}B^H\big)\,U^H`
(``D.with_blocks(..., swap=True)``). With one channel and unitary :math:`U`, writing
:math:`k_i = B(\xi_i)`, :math:`l_i = C(\xi_i)` and :math:`\beta_i = (U^H b)_i`, every quantity
the parameter-choice rules need is a sum over frequencies of the *filter factors*

.. math::
    f_i(\alpha) = \frac{|k_i|^2}{|k_i|^2 + \alpha |l_i|^2}:

.. math::
    \|Kx_\alpha - b\|^2 = \sum_i (1 - f_i)^2 |\beta_i|^2, \qquad
    \|Lx_\alpha\|^2 = \sum_i \frac{|l_i|^2|k_i|^2 |\beta_i|^2}{(|k_i|^2 + \alpha|l_i|^2)^2}, \qquad
    \operatorname{trace}\big(K (K^HK + \alpha L^HL)^{-1} K^H\big) = \sum_i f_i .

:class:`TikhonovSpectrum` holds these arrays (plain numpy arrays, so a test builds them from a
dense SVD) and evaluates the criteria in :math:`O(N)` per :math:`\alpha`; nothing in it knows
which transform produced them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pylops
import scipy.fft as sfft

from .._backend import blas_threads_for
from .._validation import check_real_scalar
from ..kernels._base import ParametricKernel, as_kernel
from ..kernels.diagonalized import Diagonalized
from ..kernels.operators import KernelOperator

__all__ = ["Regularizer", "TikhonovSpectrum", "as_regularizer", "check_data", "exact_solver", "regularized_inverse"]

#: A per-frequency system counts as singular when its condition number exceeds
#: ``1 / (_SINGULAR_FACTOR * eps)`` (as :data:`structops.solvers.SINGULAR_FACTOR`).
_SINGULAR_FACTOR = 1000.0

#: The unitary transforms whose coefficients :func:`coefficients` computes.
UNITARY_TRANSFORMS = ("fft", "dct2", "kron")


# ------------------------------------------------------------------- criteria
@dataclass(frozen=True)
class TikhonovSpectrum:
    r"""A one-channel Tikhonov problem in a shared unitary basis: the arrays behind every criterion.

    Attributes
    ----------
    k2, l2 : numpy.ndarray, shape (n,)
        :math:`|k_i|^2` and :math:`|l_i|^2` (``l2 = 1`` for :math:`L = I`).
    c2 : numpy.ndarray, shape (n,)
        :math:`|\beta_i|^2`, the squared coefficients of ``b`` in the left basis.
    weights : numpy.ndarray, shape (n,)
        How many frequencies each entry stands for (2 for the mirrored half of a real FFT, else 1).
    rows : int
        :math:`m`, the number of entries of ``b`` (the trace term of GCV is :math:`m - \sum f_i`).

    Notes
    -----
    :math:`f_i = |k_i|^2/(|k_i|^2 + \alpha|l_i|^2)`, with :math:`f_i = 0` where both vanish (the
    minimum-norm solution leaves those components out). The functions of :math:`\alpha`:

    * ``residual_norm2`` :math:`\rho(\alpha) = \|Kx_\alpha - b\|^2 = \sum w_i(1 - f_i)^2|\beta_i|^2`;
    * ``seminorm2`` :math:`\eta(\alpha) = \|Lx_\alpha\|^2`;
    * ``gcv`` :math:`G(\alpha) = \dfrac{\rho(\alpha)/m}{\big(1 - \sum_i w_i f_i/m\big)^2}`
      (Golub, Heath and Wahba 1979), whose minimiser is the GCV choice;
    * ``curvature`` the signed curvature of the L-curve :math:`(\log\rho, \log\eta)`
      parametrised by :math:`t = \log\alpha`, from the exact derivatives
      :math:`\eta' = -2\sum w|\beta|^2 |l|^4|k|^2/d^3`, :math:`\eta'' = 6\sum w|\beta|^2|l|^6|k|^2/d^4`,
      :math:`\rho' = -\alpha\eta'`, :math:`\rho'' = -\eta' - \alpha\eta''` (:math:`d = |k|^2 + \alpha|l|^2`);
      its maximiser is the corner (Hansen's L-curve choice).

    Examples
    --------
    One frequency with :math:`|k|^2 = 1`, :math:`|\beta|^2 = 1` and :math:`L = I`:
    :math:`f = 1/(1 + \alpha)`, :math:`\rho = (\alpha/(1 + \alpha))^2`.

    >>> s = TikhonovSpectrum(np.ones(1), np.ones(1), np.ones(1), np.ones(1), rows=1)
    >>> float(s.residual_norm2(1.0)), float(s.seminorm2(1.0))
    (0.25, 0.25)
    """

    k2: np.ndarray
    l2: np.ndarray
    c2: np.ndarray
    weights: np.ndarray
    rows: int

    def _terms(self, alpha: float) -> tuple[np.ndarray, np.ndarray]:
        d = self.k2 + alpha * self.l2
        live = d > 0
        return d, live

    def filter_factors(self, alpha: float) -> np.ndarray:
        r""":math:`f_i(\alpha)`, shape (n,)."""
        d, live = self._terms(alpha)
        return np.where(live, self.k2 / np.where(live, d, 1.0), 0.0)

    def residual_norm2(self, alpha: float) -> float:
        r""":math:`\|Kx_\alpha - b\|^2`."""
        f = self.filter_factors(alpha)
        return float(np.sum(self.weights * (1.0 - f) ** 2 * self.c2))

    def seminorm2(self, alpha: float) -> float:
        r""":math:`\|Lx_\alpha\|^2`."""
        d, live = self._terms(alpha)
        safe = np.where(live, d, 1.0)
        return float(np.sum(np.where(live, self.weights * self.l2 * self.k2 * self.c2 / safe**2, 0.0)))

    def influence_trace(self, alpha: float) -> float:
        r""":math:`\operatorname{trace}(K(K^HK + \alpha L^HL)^{-1}K^H) = \sum_i w_i f_i`."""
        return float(np.sum(self.weights * self.filter_factors(alpha)))

    def gcv(self, alpha: float) -> float:
        r"""The GCV function :math:`G(\alpha)` (``inf`` where :math:`\sum w_i f_i = m`)."""
        free = 1.0 - self.influence_trace(alpha) / self.rows
        if free <= 0:
            return np.inf
        return self.residual_norm2(alpha) / self.rows / free**2

    def curvature(self, alpha: float) -> float:
        r"""Signed curvature of the L-curve :math:`(\log\rho, \log\eta)` at :math:`\alpha` (``t = log α``)."""
        d, live = self._terms(alpha)
        safe = np.where(live, d, 1.0)
        base = np.where(live, self.weights * self.c2 * self.k2, 0.0)
        rho, eta = self.residual_norm2(alpha), self.seminorm2(alpha)
        if rho <= 0 or eta <= 0:
            return 0.0
        eta1 = -2.0 * float(np.sum(base * self.l2**2 / safe**3))
        eta2 = 6.0 * float(np.sum(base * self.l2**3 / safe**4))
        rho1, rho2 = -alpha * eta1, -eta1 - alpha * eta2
        p1 = alpha * rho1 / rho
        p2 = (alpha * rho1 + alpha**2 * rho2) / rho - p1**2
        e1 = alpha * eta1 / eta
        e2 = (alpha * eta1 + alpha**2 * eta2) / eta - e1**2
        return float((p1 * e2 - p2 * e1) / (p1**2 + e1**2) ** 1.5)

    def alpha_range(self) -> tuple[float, float]:
        r"""The span of :math:`|k_i|^2/|l_i|^2` over the components where both are nonzero (16 decades at most)."""
        both = (self.k2 > 0) & (self.l2 > 0)
        if not np.any(both):
            return 1e-12, 1.0
        q = self.k2[both] / self.l2[both]
        top = float(q.max())
        return max(float(q.min()), top * 1e-16), top

    def residual_limits(self) -> tuple[float, float]:
        r""":math:`\rho(0^+)` and :math:`\rho(\infty)`: the residuals no :math:`\alpha > 0` goes below or above.

        As :math:`\alpha \to 0^+`, :math:`f_i \to 1` wherever :math:`k_i \ne 0`; as
        :math:`\alpha \to \infty`, :math:`f_i \to 0` wherever :math:`l_i \ne 0`.
        """
        wc = self.weights * self.c2
        low = np.sum(np.where(self.k2 == 0, wc, 0.0))
        high = np.sum(np.where((self.l2 > 0) | (self.k2 == 0), wc, 0.0))
        return float(low), float(high)


# ------------------------------------------------------------ the shared basis
def rfft_weights(grid: tuple[int, ...]) -> np.ndarray:
    """How many frequencies of the full grid each entry of the ``rfftn`` half grid stands for (1 or 2)."""
    n = grid[-1]
    w = np.full(n // 2 + 1, 2.0)
    w[0] = 1.0
    if n % 2 == 0:
        w[-1] = 1.0
    return np.broadcast_to(w, (*grid[:-1], n // 2 + 1))


def coefficients(D: Diagonalized, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""The coefficients :math:`U^H b` of a one-channel ``b`` in the left basis of ``D``, and their weights.

    Returns arrays of ``D``'s frequency shape (the ``rfftn`` half grid for ``"fft"``).

    Raises
    ------
    ValueError
        If the transform is not one of the unitary ones (``"fft"``, ``"dct2"``, ``"kron"``).
    """
    grid = D.grid
    x = np.reshape(b, grid)
    if D.transform == "fft":
        return sfft.rfftn(x, norm="ortho"), rfft_weights(grid)
    if D.transform == "dct2":
        return sfft.dctn(x, type=2, norm="ortho"), np.ones(grid)
    if D.transform == "kron":
        with blas_threads_for(max(grid)):
            for a, u in enumerate(D.left):
                x = np.moveaxis(np.tensordot(u.T, x, axes=([1], [a])), 0, a)
        return x, np.ones(grid)
    raise ValueError(f"the coefficients of b need a unitary transform {UNITARY_TRANSFORMS!r}, got {D!r}.")


def spectrum(D: Diagonalized, D_L: Diagonalized | None, b: np.ndarray) -> TikhonovSpectrum:
    """The :class:`TikhonovSpectrum` of ``(K, L, b)`` from ``K``'s and ``L``'s diagonalisations (one channel)."""
    c, w = coefficients(D, b)
    k2 = np.abs(D.blocks[..., 0, 0]) ** 2
    l2 = np.ones_like(k2) if D_L is None else np.abs(D_L.blocks[..., 0, 0]) ** 2
    k2, l2, c2, w = (np.ascontiguousarray(a, dtype=np.float64).ravel() for a in (k2, l2, np.abs(c) ** 2, w))
    return TikhonovSpectrum(k2, l2, c2, w, rows=int(np.size(b)))


# ---------------------------------------------------------------- regulariser
@dataclass(frozen=True)
class Regularizer:
    """A resolved regularisation operator ``L``.

    Attributes
    ----------
    op : pylops.LinearOperator or None
        :math:`L` (None: the identity).
    diagonal : Diagonalized or None
        ``L``'s diagonalisation when its family declares one (None for the identity or an opaque operator).
    kernel, theta :
        ``L``'s family and parameters when ``L`` is ``family.op(theta)`` (else None).
    """

    op: pylops.LinearOperator | None
    diagonal: Diagonalized | None = None
    kernel: ParametricKernel | None = None
    theta: np.ndarray | None = None

    def describe(self) -> str:
        return "I" if self.op is None else repr(self.kernel if self.kernel is not None else self.op)

    def blocks(self) -> np.ndarray | None:
        """``L``'s blocks in the shared basis (None for the identity)."""
        if self.op is None:
            return None
        if self.diagonal is None:
            raise ValueError(f"`L` = {self.describe()} declares no diagonalisation.")
        return self.diagonal.blocks


def as_regularizer(L, kernel: ParametricKernel, name: str = "L") -> Regularizer:
    r"""Validate ``L`` for ``kernel``: None, ``family.op(theta)``, a :class:`Diagonalized` or any pylops operator.

    Raises
    ------
    TypeError
        If ``L`` is not an operator.
    ValueError
        If ``L`` acts on another grid (``L.shape[1] != kernel.shape[1]``).
    """
    if L is None:
        return Regularizer(None)
    if isinstance(L, ParametricKernel):
        raise TypeError(
            f"`{name}` must be an operator, got the family {L!r}: pass `{name}=family.op(theta_L)` (a fixed L)."
        )
    if not isinstance(L, pylops.LinearOperator):
        raise TypeError(f"`{name}` must be a pylops LinearOperator (e.g. family.op(theta_L)) or None, got {L!r}.")
    if L.shape[1] != kernel.shape[1]:
        raise ValueError(
            f"`{name}` must act on the grid of `kernel` ({kernel.shape[1]} unknowns, in_shape {kernel.in_shape}), "
            f"got {L!r} of shape {L.shape}: an L of another grid."
        )
    if isinstance(L, KernelOperator) and not L.transposed:
        return Regularizer(L, L.kernel.diagonalize(L.theta), L.kernel, L.theta)
    if isinstance(L, Diagonalized):
        return Regularizer(L, L)
    return Regularizer(L)


def shares_basis(D: Diagonalized | None, reg: Regularizer) -> bool:
    """Whether ``K = D`` and ``L`` are diagonalised by the same right basis (so the solve is exact per frequency)."""
    if D is None:
        return False
    if reg.op is None:
        return bool(D.unitary)
    return reg.diagonal is not None and bool(D.unitary) and D.same_basis(reg.diagonal)


def structure_error(kernel: ParametricKernel, D: Diagonalized | None, reg: Regularizer, func: str) -> ValueError:
    """The error for an ``L`` (or a ``K``) without the diagonalisation an exact ``func`` needs."""
    if D is None:
        what = f"`kernel` {kernel!r} declares no fast transform at this theta (diagonalize returned None)"
    elif not D.unitary:
        what = f"`kernel` {kernel!r} is diagonalised by {D!r}, which is not unitary (no normal equations)"
    else:
        what = (
            f"`L` = {reg.describe()} is not diagonalised by the basis of `kernel` ({D!r}; L's: {reg.diagonal!r}): "
            "an L of another structure"
        )
    return ValueError(
        f"`{func}` solves exactly per frequency only when K and L share one diagonalisation; {what}. Use the "
        "iterative route: structops.solvers.tikhonov(kernel, theta, b, alpha=..., L=L, solver='lsqr', "
        "preconditioner='chan')."
    )


# --------------------------------------------------------------- exact solves
def _check_regular(gram_eigs: np.ndarray, alpha: float, describe: str) -> None:
    """Raise ``LinAlgError`` (a ``ValueError``) naming ``alpha`` when ``KᴴK + αLᴴL`` is singular per frequency."""
    if not gram_eigs.size:
        return
    top, low = float(gram_eigs.max()), float(gram_eigs.min())
    limit = 1.0 / (_SINGULAR_FACTOR * float(np.finfo(gram_eigs.dtype).eps))
    if top > 0 and low > 0 and top / low <= limit:
        return
    condition = np.inf if low <= 0 else top / low
    hint = "pass `alpha` > 0" if alpha == 0 else "K and L have a common null space: change `L`"
    raise np.linalg.LinAlgError(
        f"`alpha` = {alpha!r}: {describe} is singular or near-singular (condition number {condition:.3e} > "
        f"{limit:.3e}); {hint} (structops.solvers.choose_alpha picks α from the data)."
    )


def _gram(B: np.ndarray, C: np.ndarray | None, alpha: float, h: float = 1.0) -> np.ndarray:
    """Per-frequency ``h (BᴴB + α CᴴC)`` blocks, shape ``(*freq, cin, cin)``."""
    G = np.conj(np.swapaxes(B, -1, -2)) @ B
    if C is None:
        G = G + alpha * np.eye(B.shape[-1], dtype=B.dtype)
    else:
        G = G + alpha * (np.conj(np.swapaxes(C, -1, -2)) @ C)
    return h * G


def _gram_eigs(G: np.ndarray) -> np.ndarray:
    if G.shape[-2:] == (1, 1):
        return np.abs(G[..., 0, 0].real)
    return np.abs(np.linalg.eigvalsh(G))


def exact_solver(D: Diagonalized, reg: Regularizer, alpha: float) -> Diagonalized:
    r"""The multiplier :math:`(K^HK + \alpha L^HL)^{-1}K^H` in the shared basis: ``D.with_blocks(..., swap=True)``."""
    B = D.blocks
    C = reg.blocks()
    G = _gram(B, C, alpha)
    _check_regular(_gram_eigs(G), alpha, f"KᵀK + α·LᵀL (L = {reg.describe()})")
    Bh = np.conj(np.swapaxes(B, -1, -2))
    blocks = Bh / G if G.shape[-2:] == (1, 1) else np.linalg.solve(G, Bh)
    return D.with_blocks(blocks, swap=True, name=f"(KᵀK + {alpha:g}·LᵀL)⁻¹Kᵀ")


def regularized_inverse(
    kernel: ParametricKernel, theta, *, alpha: float, normal: bool, L, h: float | None = None
) -> Diagonalized:
    r""":math:`(h(K^HK + \alpha L^HL))^{-1}`, or with ``h`` the implicit step :math:`(h(K^HK + L^HL) + I)^{-1}`.

    ``inverse(kernel, theta, normal=True, alpha=α, L=L)`` and ``implicit_step(kernel, theta, h, L=L)``
    land here (``h=None`` for the former). Exact per frequency; ``L`` must share ``kernel``'s basis.
    """
    as_kernel(kernel)
    if not normal:
        raise ValueError(
            f"`L` regularises the normal equations: pass normal=True for (KᵀK + α LᵀL)⁻¹, got normal={normal!r}."
        )
    alpha = check_real_scalar(alpha, "alpha", minimum=0.0)
    theta = kernel.validate_theta(theta)
    reg = as_regularizer(L, kernel)
    D = kernel.diagonalize(theta)
    if D is None or not shares_basis(D, reg):
        raise structure_error(kernel, D, reg, "inverse" if h is None else "implicit_step")
    C = reg.blocks()
    if h is None:
        G, what = _gram(D.blocks, C, alpha), f"KᵀK + {alpha:g}·LᵀL"
    else:
        G = _gram(D.blocks, C, 1.0, h) + np.eye(D.blocks.shape[-1], dtype=D.blocks.dtype)
        what = f"{h:g}·(KᵀK + LᵀL) + I"
    _check_regular(_gram_eigs(G), alpha, f"{what} (L = {reg.describe()})")
    inv = 1.0 / G if G.shape[-2:] == (1, 1) else np.linalg.inv(G)
    return D.with_blocks(inv, normal=True, name=f"({what})⁻¹")


# ---------------------------------------------------------------------- data
def check_data(kernel: ParametricKernel, b, dtype: np.dtype, name: str = "b") -> tuple[np.ndarray, tuple[int, ...]]:
    """``b`` flattened in ``dtype``, and the shape to give the solution ``x``.

    ``b`` may be ``out_shape``, flat (``prod(out_shape)``) or, for one output channel, the
    output grid; ``x`` then has ``in_shape``, the flat size or the input grid.

    Raises
    ------
    ValueError
        If ``b``'s shape matches none of these, or ``b`` is not finite.
    """
    arr = np.asarray(b)
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"`{name}` must be a real array, got dtype {arr.dtype}.")
    out_shape, in_shape = kernel.out_shape, kernel.in_shape
    grid_out = out_shape[1:] if len(out_shape) > 1 and out_shape[0] == 1 else None
    if arr.shape == out_shape:
        x_shape = in_shape
    elif arr.shape == (kernel.shape[0],):
        x_shape = (kernel.shape[1],)
    elif grid_out is not None and arr.shape == grid_out:
        x_shape = in_shape[1:] if in_shape[0] == 1 else in_shape
    else:
        grids = "" if grid_out is None else f", the output grid {grid_out}"
        raise ValueError(
            f"`{name}` must have the shape of one output of `kernel`: out_shape {out_shape}{grids} or flat "
            f"({kernel.shape[0]},), got shape {arr.shape}."
        )
    flat = np.ascontiguousarray(arr, dtype=dtype).ravel()
    if not np.all(np.isfinite(flat)):
        raise ValueError(f"`{name}` must be finite (no NaN or Inf).")
    return flat, x_shape
