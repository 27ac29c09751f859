r"""Verified positive definiteness of :math:`tI - K^\top K` by a nested-dissection Cholesky (convolutions).

The banded factorisation of :mod:`structops.solvers._verified` costs :math:`N k^2` flops for a
Gram matrix of size :math:`N = c\prod_a n_a` and bandwidth :math:`k \approx c\,r\prod_{a>0}n_a`:
about :math:`10^{12}` for a 64→64 3×3 layer on 32×32. Ordered by nested dissection instead
(A. George, "Nested dissection of a regular finite element mesh", *SIAM J. Numer. Anal.* 10
(1973) 345--363), the same Cholesky factorisation costs :math:`O(N^{3/2})`: about
:math:`10^{11}` flops there, in dense blocks (LAPACK ``potrf``, ``trsm``, ``syrk``).

**The Gram on the input grid.** With the padding rule, output pixel :math:`p` reads, through
tap :math:`\tau`, the input pixel :math:`s(p, \tau)` (:attr:`ConvGeometry.maps`; none for a
zero pad), so :math:`K = \sum_\tau S_\tau \otimes W_\tau` with the 0/1 incidences
:math:`S_\tau` and the channel blocks :math:`W_\tau` (``cout × cin``, block diagonal over the
groups), and

.. math::

    (K^\top K)_{q_1 q_2} = \sum_{\tau_1, \tau_2} c_{q_1 q_2}^{\tau_1\tau_2}\, W_{\tau_1}^\top W_{\tau_2},
    \qquad c_{q_1 q_2}^{\tau_1\tau_2} = \#\{p : s(p, \tau_1) = q_1,\ s(p, \tau_2) = q_2\},

a ``cin × cin`` block per pair of input pixels; the pairs that occur are within the Gram's
reach :math:`\rho_a` of each other along each axis (2 for a 3×3 stencil at stride 1).

**The dissection.** A box of the grid is split across its longest axis by a separator slab
:math:`\rho_a` pixels wide (no Gram entry couples the two halves), recursively, while that
lowers the estimated flop count; the separators are eliminated after both halves. The
factorisation is multifrontal: the front of a node holds its own variables :math:`V` and its
boundary :math:`B` (the variables of its ancestors that the Gram couples to its box); its
columns :math:`V` are assembled from the Gram, the children's update matrices are added,
:math:`F_{VV} = LL^\top` (``potrf``), :math:`X = L^{-1}F_{VB}` (``trsm``), and
:math:`F_{BB} - X^\top X` (``syrk``) goes to the parent. This is Cholesky's factorisation of
the symmetrically permuted :math:`\tilde A` (positive definiteness does not depend on the
order), every entry computed as :math:`(\tilde a_{ij} - \sum_k r_{ki} r_{kj}) / r_{ii}` with
the sum in some order.

**Round-off** (:math:`u = 2^{-53}`, :math:`\gamma_j = ju/(1-ju)`; Higham, *Accuracy and
Stability of Numerical Algorithms*, Lemma 8.4 and Thm. 10.3 hold for any order of evaluation of
the sums; Rump, *BIT* 46 (2006) 433--452). :math:`K` is the exact operator at the float64
stencil; no :math:`\hat K` is formed.

1. :math:`\hat M_{\tau_1\tau_2} = \mathrm{fl}(W_{\tau_1}^\top W_{\tau_2})` (inner products of
   ``cout`` terms) and :math:`\hat G_{q_1q_2} = \mathrm{fl}(\sum c\,\hat M)` (at most
   :math:`r^2` terms, :math:`r` the taps, each an integer times an entry): with :math:`A` the
   entrywise bound :math:`|K| \le A = \sum_\tau S_\tau \otimes |W_\tau|`,
   :math:`|\hat G - K^\top K| \le \gamma_{r^2 + c_{out}} A^\top A`, so
   :math:`\|\hat G - K^\top K\|_2 \le \gamma_{r^2+c_{out}}\,a` with
   :math:`a = \|A\|_1\|A\|_\infty \ge \|A\|_2^2` (rounded up);
2. :math:`\tilde A = \mathrm{fl}(tI - \hat G)` differs from :math:`tI - \hat G` only on the
   diagonal, by at most :math:`u \max_i\tilde a_{ii}` each (:math:`2u` is taken);
3. Cholesky run to completion (every pivot finite and positive, checked) gives
   :math:`\hat R^\top\hat R = \tilde A + \Delta` with :math:`|\Delta| \le \gamma_{k+2}|\hat
   R^\top||\hat R|`, :math:`k` the most terms of one inner product (:math:`k \le N`; the
   ``+2`` covers a ``trsm`` that multiplies by a computed reciprocal of the pivot instead of
   dividing); since :math:`\|\hat r_i\|_2^2 \le \tilde a_{ii}/(1-\gamma_{k+2})` (Rump,
   Lemma 2.1), :math:`|\Delta_{ij}| \le \alpha\sqrt{\tilde a_{ii}\tilde a_{jj}}` with
   :math:`\alpha = \gamma_{N+2}/(1-\gamma_{N+2})`, and
   :math:`\|\Delta\|_2 \le \alpha\,\mathrm{tr}\,\tilde A` (the norm of the rank-one
   :math:`dd^\top`, :math:`d_i = \sqrt{\tilde a_{ii}}`), plus Rump's underflow term
   :math:`4N(2(N+2) + \max_i\tilde a_{ii})\eta`;
4. hence :math:`\|K\|_2^2 \le t + E`,
   :math:`E = \|\Delta\|_2 + 2u\max_i \tilde a_{ii} + \gamma_{r^2+c_{out}}a`, and the bound
   returned is :math:`\sqrt{t + E}\,(1 + 4u)`.

The trace is summed with relative error below :math:`\gamma_N`; the computed allowances are
multiplied by 1.01, which covers that and the rounding of their own products. For a 64→64 3×3
layer on 32×32, :math:`N = 65536` and :math:`E/t` is about
:math:`5\cdot 10^{-7}`, far below the margins :math:`\delta` tried.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from scipy.linalg import blas, lapack

from ._roundoff import cholesky_alpha, cholesky_root, gamma

__all__ = ["MAX_FRONT", "ConvGram", "Dissection", "conv_gram", "dissection", "dissection_certifies"]

#: Largest front (variables) the dissection route takes: 9000 variables hold 650 MB.
MAX_FRONT = 9000


@dataclass(frozen=True)
class ConvGram:
    r"""The Gram :math:`K^\top K` of a convolution on its input grid, as pixel pairs and channel blocks.

    Attributes
    ----------
    grid : tuple of int
        The input grid; pixels are numbered C-order.
    channels : int
        ``cin``: the size of one block.
    pairs : ndarray, shape (P, 2)
        The pixel pairs :math:`(q_1, q_2)` with a nonzero count, sorted by :math:`q_1`.
    counts : scipy.sparse.csr_array, shape (P, r * r)
        :math:`c_{q_1q_2}^{\tau_1\tau_2}` (module notes), tap pair :math:`\tau_1 r + \tau_2`.
    products : ndarray, shape (r * r, cin * cin)
        :math:`\hat M_{\tau_1\tau_2}` flattened C-order (``[i, j]`` is :math:`(W_{\tau_1}^\top W_{\tau_2})_{ij}`).
    gram_error : float
        :math:`\gamma_{r^2+c_{out}}\,a`: bound on :math:`\|\hat G - K^\top K\|_2` (module notes, item 1).
    reach : tuple of int
        The largest distance along each axis between two pixels the Gram couples.
    """

    grid: tuple[int, ...]
    channels: int
    pairs: np.ndarray
    counts: sp.csr_array
    products: np.ndarray
    gram_error: float
    reach: tuple[int, ...]
    starts: np.ndarray = field(repr=False)  # pairs[starts[q]:starts[q + 1]] have q1 = q

    def blocks(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r"""``(pairs, blocks)``: every pair with :math:`q_1` in ``pixels`` and its ``cin × cin`` Gram block."""
        sel = np.concatenate([np.arange(self.starts[q], self.starts[q + 1]) for q in pixels])
        flat = self.counts[sel] @ self.products
        return self.pairs[sel], flat.reshape(-1, self.channels, self.channels)


def _incidence(geo) -> np.ndarray:
    """``src[p, τ]``: the input pixel read by output pixel ``p`` through tap ``τ`` (-1 for a zero pad)."""
    axes = []
    for maps, s, d, st, m in zip(geo.maps, geo.stencil, geo.dilation, geo.stride, geo.out_grid):
        pos = st * np.arange(m)[:, None] + d * (s - 1 - np.arange(s))[None, :]
        axes.append(maps[pos])  # (out, taps) source index along this axis
    src = np.zeros((1, 1), dtype=np.int64)
    for a, table in enumerate(axes):
        n = geo.grid[a]
        valid = (src >= 0)[:, None, :, None] & (table >= 0)[None, :, None, :]
        src = np.where(valid, src[:, None, :, None] * n + table[None, :, None, :], -1)
        src = src.reshape(src.shape[0] * src.shape[1], -1)
    return src


def _dense_taps(geo, w: np.ndarray) -> np.ndarray:
    r"""``(r, cout, cin)``: the channel block :math:`W_\tau` of every tap, block diagonal over the groups."""
    r = int(np.prod(geo.stencil))
    co, ci = geo.cout_group, geo.cin_group
    full = np.zeros((r, geo.cout, geo.cin))
    taps = np.asarray(w, dtype=np.float64).reshape(geo.cout, ci, r).transpose(2, 0, 1)
    for g in range(geo.groups):
        full[:, g * co : (g + 1) * co, g * ci : (g + 1) * ci] = taps[:, g * co : (g + 1) * co]
    return full


def conv_gram(geo, w: np.ndarray) -> ConvGram:
    """The Gram of the convolution of geometry ``geo`` and float64 stencil ``w`` ``(cout, cin/groups, *stencil)``."""
    src = _incidence(geo)
    npx, r, cin = int(np.prod(geo.grid)), src.shape[1], geo.cin
    t1, t2 = np.meshgrid(np.arange(r), np.arange(r), indexing="ij")
    q1, q2 = src[:, t1.ravel()], src[:, t2.ravel()]  # (out pixels, r*r)
    tap = np.broadcast_to((t1 * r + t2).ravel(), q1.shape)
    ok = (q1 >= 0) & (q2 >= 0)
    key, number = np.unique((q1[ok] * npx + q2[ok]) * (r * r) + tap[ok], return_counts=True)
    rows, which = np.unique(key // (r * r), return_inverse=True)  # sorted by q1, then q2
    counts = sp.csr_array((number.astype(np.float64), (which, key % (r * r))), shape=(rows.size, r * r))
    pairs = np.stack([rows // npx, rows % npx], axis=1)
    starts = np.searchsorted(pairs[:, 0], np.arange(npx + 1))
    taps = _dense_taps(geo, w)
    wide = taps.transpose(1, 0, 2).reshape(geo.cout, r * cin)
    products = (wide.T @ wide).reshape(r, cin, r, cin).transpose(0, 2, 1, 3).reshape(r * r, cin * cin)
    offsets = np.abs(
        np.array(np.unravel_index(pairs[:, 0], geo.grid)) - np.array(np.unravel_index(pairs[:, 1], geo.grid))
    )
    reach = tuple(int(x) for x in offsets.max(axis=1, initial=0))
    # a = ‖A‖₁‖A‖_∞ (module notes, item 1): rows of A sum |W| over taps and inputs, columns count the readers
    absw = np.abs(taps)
    row = float(absw.sum(axis=(0, 2)).max(initial=0.0))
    readers = np.zeros((npx, r))
    for t in range(r):
        readers[:, t] = np.bincount(src[:, t][src[:, t] >= 0], minlength=npx)
    col = float((readers @ absw.sum(axis=1)).max(initial=0.0))
    a = row * col * (1 + gamma(r * (geo.cin + geo.cout + 1) + 2)) ** 2
    return ConvGram(tuple(geo.grid), cin, pairs, counts, products, gamma(r * r + geo.cout) * a, reach, starts)


@dataclass(frozen=True)
class Dissection:
    r"""A nested-dissection elimination tree of the input grid (module notes), nodes in postorder.

    Attributes
    ----------
    own : list of ndarray
        The pixels each node eliminates (a leaf box or a separator slab).
    boundary : list of ndarray
        The pixels of its ancestors that the Gram couples to its subtree.
    children : list of tuple of int
        The nodes whose update matrices it receives.
    flops : float
        :math:`\sum v^3/3 + v^2 b + v b^2` over the nodes (``v``, ``b``: own and boundary variables).
    largest : int
        The most variables of one front.
    """

    own: list
    boundary: list
    children: list
    flops: float
    largest: int


#: Flops that moving one number of a front costs, in the plan's estimate (assembly and extend-add are memory-bound).
MOVE_COST = 30.0
#: Where the separators may cut a box, as fractions of its extent.
CUTS = (0.5,)


def _cost(v: float, b: float) -> float:
    return v**3 / 3 + v * v * b + v * b * b


def _work(v: float, b: float) -> float:
    return _cost(v, b) + MOVE_COST * (v + b) ** 2


def _plan(grid: tuple[int, ...], reach: tuple[int, ...], c: int):
    """The cheapest tree of middle splits (by slabs ``reach`` wide) of every box, by the estimated cost."""
    memo: dict = {}

    def halo(lo, hi) -> int:
        big = np.prod([min(h + r, n) - max(lo_ - r, 0) for lo_, h, r, n in zip(lo, hi, reach, grid)])
        return int(big - np.prod(np.subtract(hi, lo)))

    def best(lo: tuple[int, ...], hi: tuple[int, ...]):
        if (lo, hi) in memo:
            return memo[(lo, hi)]
        size = int(np.prod(np.subtract(hi, lo)))
        b = halo(lo, hi)
        choice: tuple[float, tuple[int, int, int] | None] = (_work(size * c, b * c), None)
        for a in range(len(grid)):
            ext, w = hi[a] - lo[a], max(reach[a], 1)
            if ext < w + 2:
                continue
            for cut in sorted({lo[a] + min(max(int(f * (ext - w)), 1), ext - w - 1) for f in CUTS}):
                left_hi, right_lo = _at(hi, a, cut), _at(lo, a, cut + w)
                sep = int(np.prod(np.subtract(hi, lo))) // ext * w
                total = best(lo, left_hi)[0] + best(right_lo, hi)[0] + _work(sep * c, b * c)
                if total < choice[0]:
                    choice = (total, (a, cut, w))
        memo[(lo, hi)] = choice
        return choice

    return best


def _at(box: tuple[int, ...], axis: int, value: int) -> tuple[int, ...]:
    return (*box[:axis], value, *box[axis + 1 :])


def _box(grid, lo, hi) -> np.ndarray:
    index = np.ix_(*(np.arange(a, b) for a, b in zip(lo, hi)))
    return np.ravel_multi_index(tuple(np.broadcast_arrays(*index)), grid).ravel()


def dissection(gram: ConvGram) -> Dissection | None:
    """The elimination tree of ``gram``'s grid, or None when a front would exceed :data:`MAX_FRONT`."""
    grid, c = gram.grid, gram.channels
    best = _plan(grid, gram.reach, c)
    own: list = []
    boxes: list = []
    children: list = []

    def build(lo, hi) -> int:
        split = best(lo, hi)[1]
        if split is None:
            own.append(_box(grid, lo, hi))
            kids: tuple[int, ...] = ()
        else:
            a, cut, w = split
            left = build(lo, _at(hi, a, cut))
            right = build(_at(lo, a, cut + w), hi)
            own.append(_box(grid, _at(lo, a, cut), _at(hi, a, cut + w)))
            kids = (left, right)
        boxes.append((lo, hi))
        children.append(kids)
        return len(own) - 1

    build((0,) * len(grid), tuple(grid))
    npx = int(np.prod(grid))
    owner = np.empty(npx, dtype=np.int64)
    for node, pixels in enumerate(own):
        owner[pixels] = node
    parent = np.full(len(own), -1)
    for node, kids in enumerate(children):
        parent[list(kids)] = node
    boundary, flops, largest = [], 0.0, 0
    for node, (lo, hi) in enumerate(boxes):
        inside = np.zeros(npx, dtype=bool)
        inside[_box(grid, lo, hi)] = True
        hits = inside[gram.pairs[:, 0]] & ~inside[gram.pairs[:, 1]]
        out = np.unique(gram.pairs[hits, 1])
        ancestors, up = set(), parent[node]
        while up >= 0:
            ancestors.add(int(up))
            up = parent[up]
        if not set(owner[out].tolist()) <= ancestors:  # pragma: no cover - the slabs are as wide as the reach
            return None
        boundary.append(out)
        v, b = own[node].size * c, out.size * c
        flops += _cost(v, b)
        largest = max(largest, v + b)
    if largest > MAX_FRONT:
        return None
    for node in reversed(range(len(own))):  # parents first: each boundary in the order of the parent's front
        place = np.empty(npx, dtype=np.int64)
        front = np.concatenate([own[node], boundary[node]])
        place[front] = np.arange(front.size)
        for kid in children[node]:
            boundary[kid] = boundary[kid][np.argsort(place[boundary[kid]])]
    return Dissection(own, boundary, children, flops, largest)


def _front(gram: ConvGram, tree: Dissection, node: int, local: np.ndarray, t: float, work: list):
    """``(F_VV, F_BV, F_BB)`` of ``node``'s front (Fortran order): ``fl(tI - Ĝ)`` in the columns ``V``, zero ``F_BB``.

    ``F_VV`` and ``F_BV`` live in the buffers ``work`` (reused from node to node: fresh arrays
    cost a page fault per 4 KiB, a quarter of the time on 64 channels); ``F_BB`` becomes the
    update matrix and is allocated.
    """
    c = gram.channels
    own, bnd = tree.own[node], tree.boundary[node]
    v, b = own.size * c, bnd.size * c
    local[own] = np.arange(own.size)
    local[bnd] = own.size + np.arange(bnd.size)
    fvv, fbv = (buf[: m * n].reshape((m, n), order="F") for buf, (m, n) in zip(work, ((v, v), (b, v))))
    fvv.fill(0.0)
    fbv.fill(0.0)
    fbb = np.zeros((b, b), order="F")
    pairs, blocks = gram.blocks(own)
    l1, l2 = local[pairs[:, 0]], local[pairs[:, 1]]
    inner, outer = (l2 >= 0) & (l2 < own.size), l2 >= own.size  # the rest: in the descendants' fronts
    # F[(l2, j), (l1, i)] = -Ĝ[(q1, i), (q2, j)]: the transposes are C-ordered, indexed [(l1, i), (l2, j)]
    fvv.T.reshape(own.size, c, own.size, c)[l1[inner], :, l2[inner], :] = -blocks[inner]
    fbv.T.reshape(own.size, c, bnd.size, c)[l1[outer], :, l2[outer] - own.size, :] = -blocks[outer]
    diag = np.arange(v)
    fvv[diag, diag] += t
    return fvv, fbv, fbb


def _runs(index: np.ndarray, nv: int) -> list[tuple[int, int, int]]:
    """``(child, parent, length)``: the runs of consecutive ``index``, cut where the parent's own pixels end."""
    cuts = np.flatnonzero((np.diff(index) != 1) | (index[1:] == nv)) + 1
    starts = np.concatenate([[0], cuts])
    ends = np.concatenate([cuts, [index.size]])
    return [(int(s), int(index[s]), int(e - s)) for s, e in zip(starts, ends)]


def _extend_add(fronts, index: np.ndarray, nv: int, c: int, update: np.ndarray) -> None:
    """Add a child's update (lower triangle valid) into the parent's front pieces, run by run.

    ``index`` (increasing) gives the parent's front position of each pixel of the child's
    boundary; ``nv`` pixels are the parent's own (``F_VV``, ``F_BV``, ``F_BB`` hold the rest).
    """
    fvv, fbv, fbb = fronts
    runs = _runs(index, nv)
    for i, (ci, pi, li) in enumerate(runs):
        rows = slice(ci * c, (ci + li) * c)
        for cj, pj, lj in runs[: i + 1]:  # rows at or after the columns: the lower triangle
            cols = slice(cj * c, (cj + lj) * c)
            if pj >= nv:
                target = fbb[(pi - nv) * c : (pi - nv + li) * c, (pj - nv) * c : (pj - nv + lj) * c]
            elif pi >= nv:
                target = fbv[(pi - nv) * c : (pi - nv + li) * c, pj * c : (pj + lj) * c]
            else:
                target = fvv[pi * c : (pi + li) * c, pj * c : (pj + lj) * c]
            target += update[rows, cols]


def dissection_certifies(gram: ConvGram, tree: Dissection, t: float) -> float | None:
    r""":math:`\sqrt{t + E}` (rounded up, module notes) if Cholesky's factorisation of ``fl(tI - Ĝ)`` completes.

    None when a pivot is not positive and finite (``tI - Ĝ`` may be indefinite).

    Parameters
    ----------
    gram : ConvGram
        :math:`\hat G` (:func:`conv_gram`).
    tree : Dissection
        Its elimination tree (:func:`dissection`).
    t : float
        The trial value: success proves :math:`\|K\|_2^2 \le t + E`.
    """
    c, npx = gram.channels, int(np.prod(gram.grid))
    n = npx * c
    local = np.full(npx, -1, dtype=np.int64)
    updates: dict = {}
    trace, top = 0.0, 0.0
    sizes = [(o.size * c, b.size * c) for o, b in zip(tree.own, tree.boundary)]
    work = [np.empty(max(v * v for v, _ in sizes)), np.empty(max(v * b for v, b in sizes))]
    for node in range(len(tree.own)):
        fronts = _front(gram, tree, node, local, t, work)
        fvv, fbv, fbb = fronts
        v = fvv.shape[0]
        pivots = fvv[np.arange(v), np.arange(v)]
        if not np.all(pivots > 0):  # NaN too
            return None
        trace, top = trace + float(pivots.sum()), max(top, float(pivots.max()))
        for kid in tree.children[node]:
            _extend_add(fronts, local[tree.boundary[kid]], tree.own[node].size, c, updates.pop(kid))
        L, info = lapack.dpotrf(fvv, lower=1, clean=0, overwrite_a=1)
        diag = np.diagonal(L)
        if info != 0 or not np.all(np.isfinite(diag) & (diag > 0)):
            return None
        if fbb.size:
            X = blas.dtrsm(1.0, L, fbv, side=1, lower=1, trans_a=1, overwrite_b=1)  # F_BV L^{-T}
            updates[node] = blas.dsyrk(-1.0, X, beta=1.0, c=fbb, trans=0, lower=1, overwrite_c=1)
        local[tree.own[node]] = -1
        local[tree.boundary[node]] = -1
    # 1.01 covers the rounding of the trace (n terms: γ_n < 1e-3 for n < 1e12) and of these products
    return cholesky_root(t, 1.01 * cholesky_alpha(n + 2) * trace, n, n + 2, top, 1.01 * gram.gram_error)
