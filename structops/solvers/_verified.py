r"""Certified upper bounds on :math:`\|K\|_2` by verified positive definiteness (any sparse operator).

For a sparse :math:`K` (any convolution: every boundary, stride, dilation, groups) and a trial
value :math:`t > 0`,

.. math::

    t I - K^\top K \succ 0 \quad\Longrightarrow\quad \|K\|_2 \le \sqrt{t},

and positive definiteness is *proved* by a floating-point Cholesky factorisation that runs to
completion, with an a-priori bound on its backward error (Sylvester's law of inertia; S. M.
Rump, "Verification of positive definiteness", *BIT* 46 (2006) 433--452). The trial value is
:math:`t = (\hat\sigma (1+\delta))^2` with :math:`\hat\sigma` a Lanczos estimate of the norm
(any value: only the factorisation certifies), for :math:`\delta` = 0.1 %, 0.4 %, 1.5 %, 5 % in
turn; the first that factorises gives the bound. Unlike the symbol of a periodic embedding,
this sees the boundary modes: with replicate padding the 1-D shift stencil has norm
:math:`\sqrt 2`, above the symbol's supremum 1.

**Ordering and cost.** The Gram matrix of the smaller side (:math:`K^\top K` on the input,
:math:`KK^\top` on the output) is ordered pixel-major with the channels innermost and the
largest grid axis outermost, so that its bandwidth is about :math:`c\,r\prod_{a>0} n_a` (``c``
channels, ``r`` the Gram stencil's reach); other sparse operators get the reverse
Cuthill--McKee order. LAPACK's banded Cholesky (``dpbtrf``) costs about :math:`n k^2` flops and
holds :math:`(k+1) n` numbers for bandwidth :math:`k`; the route is refused (the caller falls
back to its other bounds) above :data:`MAX_FLOPS` or :data:`MAX_ENTRIES`. A 16→16 3×3 layer on
32×32 has :math:`n = 16384`, :math:`k \approx 1070`: about :math:`2\cdot 10^{10}` flops.
For a convolution whose banded factorisation would cost more, the same test runs in
nested-dissection order with dense fronts (:mod:`structops.solvers._dissection`, its own
round-off analysis), up to ``budget`` flops (:func:`verified_upper`): 64→64 3×3 on 32×32 takes
:math:`7.8\cdot 10^{11}` flops there instead of :math:`1.2\cdot 10^{12}` banded.

**Round-off** (:math:`u = 2^{-53}`, :math:`\gamma_j = ju/(1-ju)`, Higham, *Accuracy and
Stability of Numerical Algorithms*, §3.1, Thm. 10.3). :math:`K` is the exact operator at the
float64 parameters, :math:`\hat K` the sparse matrix formed from :math:`Q` (each entry a sum of at
most ``r`` products :math:`q\theta`), :math:`|\hat K| \le A` entrywise with :math:`A` the sums of
the absolute terms, and :math:`a = \|A\|_1\|A\|_\infty \ge \|A\|_2^2` (computed with the
factor :math:`(1+\gamma_{m+r+2})^2`, which covers the rounding of the entries of :math:`A` and of
its row and column sums):

1. :math:`|\hat K - K| \le \gamma_{r+1} A`, so :math:`\|K\|_2 \le \|\hat K\|_2 + \gamma_{r+1}\sqrt a`;
2. the Gram :math:`\hat G = \mathrm{fl}(\hat K^\top\hat K)` (inner products of at most ``m`` terms,
   ``m`` the most nonzeros of a row or column of :math:`\hat K`):
   :math:`\|\hat G - \hat K^\top\hat K\|_2 \le \gamma_m\,\||\hat K|^\top|\hat K|\|_2 \le \gamma_m a`;
3. :math:`\tilde A = \mathrm{fl}(tI - \hat G)` differs from :math:`tI - \hat G` only on the
   diagonal, by at most :math:`2u\max_i \tilde a_{ii}`;
4. if Cholesky of :math:`\tilde A` (bandwidth ``k``) runs to completion, in any order of
   evaluation (blocked LAPACK included; Rump 2006, Lemma 2.1 and §3; Demmel 1989),
   :math:`\hat R^\top\hat R = \tilde A + \Delta` with :math:`|\Delta_{ij}| \le
   \alpha\sqrt{\tilde a_{ii}\tilde a_{jj}}`, :math:`\alpha = \gamma_{k+2}/(1-\gamma_{k+2})`, and
   :math:`\Delta` has the band of :math:`\tilde A`, so :math:`\|\Delta\|_2 \le \alpha (2k+1)
   \max_i \tilde a_{ii}`, plus Rump's underflow term :math:`4n(2(k+2) + \max_i\tilde a_{ii})\eta`
   (:math:`\eta` the smallest subnormal);
5. hence :math:`\lambda_{\min}(tI - \hat G) \ge -\|\Delta\|_2 - 2u\max_i\tilde a_{ii}` and
   :math:`\|\hat K\|_2^2 \le t + E`, :math:`E = \|\Delta\|_2 + 2u\max_i\tilde a_{ii} + \gamma_m a`.

The bound returned is :math:`(\sqrt{t+E}\,(1+4u) + \gamma_{r+1}\sqrt a)(1+4u)`. In float64
:math:`E/t` is below :math:`10^{-9}` for every size the route accepts, far below :math:`\delta`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.linalg import lapack
from scipy.sparse.csgraph import reverse_cuthill_mckee

from ..kernels._base import ParametricKernel
from ._dissection import conv_gram, dissection, dissection_certifies
from ._roundoff import U, cholesky_alpha, cholesky_root, gamma

__all__ = [
    "DELTAS",
    "MAX_DISSECTION_FLOPS",
    "MAX_ENTRIES",
    "MAX_FLOPS",
    "MAX_TERMS",
    "gram_band",
    "schur_upper",
    "verified_upper",
]

#: Largest :math:`n (k+1)^2` (flops of the banded Cholesky) the route takes.
MAX_FLOPS = 4e10
#: Largest :math:`n (k+1)` (numbers held by the banded factor) the route takes.
MAX_ENTRIES = 6e7
#: Largest number of stencil terms (``out · in/groups · taps · output pixels``) assembled into a sparse ``K``.
MAX_TERMS = 3e7
#: Largest flop count of the nested-dissection factorisation (:mod:`._dissection`) that
#: :func:`verified_upper` takes when called with ``budget=MAX_DISSECTION_FLOPS`` (reflect and
#: replicate layers, :func:`~structops.solvers._certified.norm_upper`): 64→64 3×3 on 32×32 needs
#: :math:`7.8\cdot 10^{11}` (about 20 s on one core).
MAX_DISSECTION_FLOPS = 1.2e12
#: The relative margins :math:`\delta` tried in turn above the Lanczos estimate.
DELTAS = (0.0005, 0.002, 0.01, 0.05)

#: Banded flop counts below which the banded route is taken without planning a dissection.
_SMALL = 1e8


@dataclass(frozen=True)
class GramBand:
    r"""The Gram matrix of one side of a sparse :math:`\hat K` in LAPACK's upper banded storage, with its allowances.

    Attributes
    ----------
    band : ndarray, shape (k + 1, n)
        ``band[k + i - j, j]`` is :math:`\hat G_{ij}` (:math:`i \le j`), in the verified order.
    gram_error : float
        :math:`\gamma_m a`: bound on :math:`\|\hat G - \hat K^\top \hat K\|_2` (module notes, item 2).
    entry_error : float
        :math:`\gamma_{r+1}\sqrt a`: bound on :math:`\|K - \hat K\|_2` (item 1).
    """

    band: np.ndarray
    gram_error: float
    entry_error: float

    @property
    def bandwidth(self) -> int:
        """The number ``k`` of superdiagonals."""
        return self.band.shape[0] - 1


def _operator_matrix(kernel: ParametricKernel, theta64: np.ndarray):
    """``(Q, θ)`` with ``vec(K) = Qθ`` for the operator itself or the convolution behind it, or None."""
    view = kernel.as_convolution()
    if view is not None:
        conv = view.conv
        return conv.Q, np.asarray(view.weights(theta64), dtype=np.float64).ravel(), conv
    if not kernel.linear or kernel.q is not None:
        return None
    return kernel.Q, theta64, None


def _assemble(Q: sp.csc_array, theta: np.ndarray, shape: tuple[int, int], rows=None, cols=None):
    """``(K̂, A)``: the summed entries and the sums of the absolute terms (module notes), as sparse arrays.

    One pass over the terms: the real part carries them, the imaginary part their absolute values
    (a complex sum adds the two parts independently, with the rounding of a real sum). ``rows`` and
    ``cols`` (optional) give the new position of each row and column.
    """
    coo = Q.tocoo()
    terms = coo.data * theta[coo.col]
    index = coo.row.astype(np.int64)
    i, j = index % shape[0], index // shape[0]
    i, j = (i if rows is None else rows[i]), (j if cols is None else cols[j])
    pair = sp.csr_array((terms + 1j * np.abs(terms), (i, j)), shape=shape)
    pair.sum_duplicates()
    K = sp.csr_array((pair.data.real.copy(), pair.indices, pair.indptr), shape=shape)
    A = sp.csr_array((pair.data.imag.copy(), pair.indices, pair.indptr), shape=shape)
    return K, A


def _inverse(order: np.ndarray) -> np.ndarray:
    position = np.empty_like(order)
    position[order] = np.arange(order.size)
    return position


def _positions(shape: tuple[int, ...]) -> np.ndarray:
    """Where each entry of a ``(c, *grid)`` vector goes: pixel-major, largest axis outermost, channels innermost."""
    grid = shape[1:]
    axes = sorted(range(len(grid)), key=lambda a: -grid[a])
    return _inverse(np.arange(int(np.prod(shape))).reshape(shape).transpose(*(1 + a for a in axes), 0).ravel())


def _terms(Q: sp.csc_array, conv, shape: tuple[int, int]) -> int:
    """``r``: the most terms summed into one entry of ``K̂`` (taps of a stencil, or counted from ``Q``)."""
    if conv is not None:
        return int(np.prod(conv.geometry.stencil))
    coo = Q.tocoo()
    index = coo.row.astype(np.int64)
    ones = sp.csr_array((np.ones(index.size), (index % shape[0], index // shape[0])), shape=shape)
    return int(ones.data.max(initial=1.0))


def _ordered(kernel: ParametricKernel, theta64: np.ndarray):
    """``(K̂, A, r, blocks)`` in the verified order (module notes), or None when unsupported or too large."""
    view = kernel.as_convolution()
    if view is not None:  # refuse before building Q (3.8e7 terms, about 1 GB, for 64->64 3x3 on 32x32)
        geo = view.conv.geometry
        if geo.cout * geo.cin_group * np.prod(geo.stencil) * np.prod(geo.out_grid) > MAX_TERMS:
            return None
    found = _operator_matrix(kernel, theta64)
    shape = (int(kernel.shape[0]), int(kernel.shape[1]))
    if found is None or min(shape) == 0:
        return None
    Q, theta, conv = found
    if conv is None:
        K, A = _assemble(Q, theta, shape)
        side = abs(K) if shape[1] <= shape[0] else abs(K).T
        order = reverse_cuthill_mckee(sp.csr_matrix(side.T @ side), symmetric_mode=True)
        position = _inverse(np.asarray(order, dtype=np.int64))
        rows, cols = (None, position) if shape[1] <= shape[0] else (position, None)
        K, A = _assemble(Q, theta, shape, rows, cols)
        return K, A, _terms(Q, conv, shape), (1, 1)
    geo = conv.geometry
    K, A = _assemble(Q, theta, shape, _positions((geo.cout, *geo.out_grid)), _positions((geo.cin, *geo.grid)))
    return K, A, _terms(Q, conv, shape), (geo.cout, geo.cin)


def gram_band(kernel: ParametricKernel, theta64: np.ndarray) -> GramBand | None:
    """The banded Gram matrix of the smaller side of ``K(θ)`` (float64 ``θ``), or None when too costly."""
    found = _ordered(kernel, theta64)
    if found is None:
        return None
    K, A, r, blocks = found
    m = int(max(np.diff(K.indptr).max(initial=0), np.bincount(K.indices, minlength=K.shape[1]).max(initial=0)))
    grow = (1 + gamma(m + r + 2)) ** 2  # the rounding of A's entries (r terms) and of its row and column sums (m)
    a = float(A.sum(axis=1).max(initial=0.0)) * float(A.sum(axis=0).max(initial=0.0)) * grow
    if K.shape[1] > K.shape[0]:  # the Gram of the smaller side: K Kᵀ = (Kᵀ)ᵀ Kᵀ
        K, blocks = K.T.tocsr(), blocks[::-1]
    B = sp.bsr_array(K, blocksize=blocks)  # dense channel blocks: the product runs block by block
    G = (B.T @ B).tocoo()
    n = G.shape[0]
    i, j = G.row.astype(np.int64), G.col.astype(np.int64)
    upper = i <= j
    i, j, data = i[upper], j[upper], G.data[upper]
    k = int((j - i).max(initial=0))
    if n * (k + 1) > MAX_ENTRIES or n * (k + 1) ** 2 > MAX_FLOPS:
        return None
    band = np.zeros((k + 1, n))
    band[k + i - j, j] = data
    return GramBand(band, gamma(max(m, 1)) * a, gamma(r + 1) * float(np.sqrt(a)))


def _certifies(gram: GramBand, t: float) -> float | None:
    r""":math:`\sqrt{t + E}` (rounded up) if Cholesky of :math:`\mathrm{fl}(tI - \hat G)` completes, else None."""
    k, n = gram.bandwidth, gram.band.shape[1]
    ab = -gram.band
    ab[k] = t - gram.band[k]
    top = float(ab[k].max(initial=0.0))
    if not np.all(ab[k] > 0):
        return None
    _, info = lapack.dpbtrf(ab, lower=0, overwrite_ab=1)
    if info != 0:
        return None
    return cholesky_root(t, cholesky_alpha(k + 2) * (2 * k + 1) * top, n, k + 2, top, gram.gram_error)


def _dissected(kernel: ParametricKernel, theta64: np.ndarray, budget: float):
    r"""``t ↦ √(t + E)`` by the nested-dissection Cholesky (:mod:`._dissection`), when cheaper than the band; else None.

    Only for convolutions whose input side is not the larger (the Gram :math:`K^\top K` on the
    input grid); the banded route's cost is estimated in its own order (:func:`_positions`).
    """
    view = kernel.as_convolution()
    if view is None or kernel.shape[1] > kernel.shape[0] or min(kernel.shape) == 0:
        return None
    geo = view.conv.geometry
    gram = conv_gram(geo, np.asarray(view.weights(theta64), dtype=np.float64))
    place = _positions((1, *geo.grid))
    reach = int(np.abs(place[gram.pairs[:, 0]] - place[gram.pairs[:, 1]]).max(initial=0))
    banded = float(kernel.shape[1]) * ((reach + 1) * geo.cin) ** 2
    if banded <= _SMALL:
        return None
    tree = dissection(gram)
    if tree is None or tree.flops > budget or (tree.flops >= banded and banded <= MAX_FLOPS):
        return None
    return lambda t: dissection_certifies(gram, tree, t)


def verified_upper(
    kernel: ParametricKernel, theta: np.ndarray, estimate: float, *, deltas=DELTAS, budget: float = MAX_FLOPS
) -> float | None:
    r"""A certified upper bound on :math:`\|K(\theta)\|_2` by verified positive definiteness, or None.

    Parameters
    ----------
    kernel : ParametricKernel
        A family whose operator is sparse: a convolution (:meth:`~structops.kernels.ParametricKernel.as_convolution`)
        or a linear family with its matrix ``Q``.
    theta : ndarray, shape (p,)
        Parameters (float32 or float64; the bound is of the operator at ``theta.astype(float64)``).
    estimate : float
        An estimate :math:`\hat\sigma` of the norm (a Lanczos Ritz value); it need not be a bound.
    deltas : sequence of float
        The margins tried: :math:`t = (\hat\sigma(1+\delta))^2`.
    budget : float
        Largest flop count of the nested-dissection factorisation (:mod:`._dissection`), taken
        for a convolution when cheaper than the banded one (whose limit is :data:`MAX_FLOPS`).

    Returns
    -------
    float or None
        :math:`\sqrt{t + E} + \gamma_{r+1}\sqrt a` (module notes; :mod:`._dissection` for the
        dissection route) for the first margin whose factorisation succeeds; None when the
        route is too costly or none succeeds.
    """
    theta64 = np.asarray(theta).astype(np.float64)
    if not np.isfinite(estimate) or estimate <= 0:
        return None
    factor = _dissected(kernel, theta64, budget)
    if factor is not None:
        for delta in deltas:
            root = factor((estimate * (1 + delta)) ** 2)
            if root is not None:
                return root
        return None
    gram = gram_band(kernel, theta64)
    if gram is None:
        return None
    for delta in deltas:
        root = _certifies(gram, (estimate * (1 + delta)) ** 2)
        if root is not None:
            return (root + gram.entry_error) * (1 + 4 * U)
    return None


def schur_upper(w: np.ndarray, multiplicity: float) -> float:
    r"""Schur's bound :math:`\|K\|_2 \le \sqrt{\|K\|_1\|K\|_\infty}` of a convolution of stencil ``w``, any boundary.

    ``w`` has shape ``(out, in/groups, *stencil)`` (float64); ``multiplicity`` is the most times one
    tap of one channel pair reads one input sample (1 for zero padding, up to :math:`2^d` for
    reflect and replicate). A row of :math:`K` sums at most :math:`\sum_{i,j}|w_{o,i,j}|`, a column
    at most ``multiplicity`` times :math:`\max_i \sum_{o,j}|w_{o,i,j}|`. The fallback of the
    verified route when its factorisation is too costly (:data:`MAX_FLOPS`): valid, but looser.
    The sums are computed with relative error below :math:`\gamma_N`, ``N = w.size``.
    """
    a = np.abs(np.asarray(w, dtype=np.float64))
    rows = float(a.reshape(a.shape[0], -1).sum(axis=1).max(initial=0.0))
    cols = float(np.moveaxis(a, 1, 0).reshape(a.shape[1], -1).sum(axis=1).max(initial=0.0))
    return float(np.sqrt(rows * cols * multiplicity)) * (1 + gamma(a.size + 4))
