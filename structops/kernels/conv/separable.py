r"""Separable and depthwise-separable convolutions: full stencils built from fewer parameters.

Two of the cheaper convolution models of the lecture notes (Lars Ruthotto, *Numerical
Methods for Deep Learning*, "Parametric Models", "Build your own parametric model"):

* :class:`SeparableConv` -- every stencil of a channel pair is a sum of ``rank`` outer
  products of 1-D stencils, one per axis, :math:`w^{oc} = \sum_r u^{ocr} \otimes v^{ocr}`
  (:math:`\otimes w^{ocr}` in 3-D). It is applied one axis at a time:
  :math:`O(\text{rank}\cdot\sum_a s_a)` multiply-adds per pixel and channel pair instead of
  :math:`O(\prod_a s_a)`.
* :class:`DepthwiseSeparableConv` -- a depthwise stencil per input channel (``multiplier`` of
  them) followed by a :math:`1\times 1` channel mix,
  :math:`w^{oc} = \sum_m P_{o,(c,m)} D_{(c,m)}`; applied as the depthwise pass and a GEMM.

Both are multilinear in their parameters (so not affine: no ``Q``; their Taylor remainders fall
as :math:`O(h^2)`) and are a :class:`~structops.Conv` :math:`C(w(\theta))` of the full
stencil underneath (:class:`~structops.kernels.conv.ConvBased`): ``weights``,
``eigvals``, ``theta_to_torch``, dense checks and every boundary condition come from it, and
the Jacobian is the chain rule :math:`J_\theta = J_w\,Dw(\theta)` with :math:`Dw` from the
product rule -- only the :math:`p`-vector :math:`Dw(\theta)v` and the contraction
:math:`Dw(\theta)^\top g` are formed, never a matrix.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from ..._validation import check_positive_int
from ..diagonalized import Diagonalized
from ..reparam import Reparametrized
from ._core import ConvGeometry
from .based import ConvBased
from .conv import KRONECKER_BCS, KRONECKER_MAX_AXIS, Conv, kronecker_of_vectors

__all__ = ["DepthwiseSeparableConv", "SeparableConv"]

PATHS = ("auto", "separable", "full")
_AXES = "ijk"  # einsum letters of the (at most three) stencil axes


class _State(NamedTuple):
    """A prepared parameter: ``theta``, the inner full-stencil Conv's state, and the passes' states."""

    phi: np.ndarray
    inner: Any
    passes: tuple[Any, ...] | None


def _check_path(path: str) -> str:
    if path not in PATHS:
        raise ValueError(f"`path` must be one of {PATHS!r}, got {path!r}.")
    return path


class _PassedConv(ConvBased, Reparametrized):
    """What both families share: a state with per-pass states, the full path through the inner Conv."""

    kernel: Conv
    path: str

    @abc.abstractmethod
    def _pass_states(self, phi: np.ndarray) -> tuple[Any, ...]:
        """The prepared states of the cheap passes at ``phi``."""

    @abc.abstractmethod
    def _jvp_pass_states(self, phi: np.ndarray, v: np.ndarray) -> list[tuple[Any, ...]]:
        """Pass states of the product-rule terms: ``J v = sum_t K_t x`` (one factor replaced by ``v`` in each)."""

    @abc.abstractmethod
    def _apply_passes(self, passes, x: np.ndarray, transpose: bool) -> np.ndarray:
        """``K x`` (or ``K^T x``) through the passes prepared by :meth:`_pass_states`."""

    def _prepare(self, phi):
        passes = self._pass_states(phi) if self.path == "separable" else None
        return _State(phi, self.kernel._prepare(self._map(phi)), passes)

    def _apply(self, state, x, transpose):
        if state.passes is None:
            return self.kernel._apply(state.inner, x, transpose)
        if x.shape[0] == 0:
            return np.zeros((0, self.shape[1] if transpose else self.shape[0]), dtype=x.dtype)
        return self._apply_passes(state.passes, x, transpose).astype(x.dtype, copy=False)

    def _prepare_data(self, x, transpose):
        return x, self.kernel._prepare_data(x, transpose)

    def _jvp(self, state, data, v, transpose):
        x, inner = data
        if state.passes is None or x.shape[0] == 0:
            return self.kernel._jvp(state.inner, inner, self._push(state.phi, v), transpose)
        # the product rule on the passes: each term is the cheap operator with one factor replaced by v
        terms = self._jvp_pass_states(state.phi, v)
        out = self._apply_passes(terms[0], x, transpose)
        for term in terms[1:]:
            out += self._apply_passes(term, x, transpose)
        return out.astype(v.dtype, copy=False)

    def _vjp(self, state, data, w, transpose, per_example):
        return self._pull(state.phi, self.kernel._vjp(state.inner, data[1], w, transpose, per_example))

    def _dense(self, state):
        return self.kernel._dense(state.inner)

    def _state_dtype(self, state):
        return self.kernel._state_dtype(state.inner)


class SeparableConv(_PassedConv):
    r"""Multi-channel convolution whose stencils are sums of ``rank`` separable (outer-product) stencils.

    For every output channel :math:`o` and input channel :math:`c` the stencil is

    .. math::
        w^{oc} = \sum_{r=1}^{R} f^{ocr}_0 \otimes f^{ocr}_1 \otimes \dots \otimes f^{ocr}_{d-1},
        \qquad w^{oc}_{j_0 \dots j_{d-1}} = \sum_r \prod_a f^{ocr}_{a,\,j_a},

    (:math:`u \otimes v` in 2-D, :math:`u \otimes v \otimes w` in 3-D) with 1-D stencils
    :math:`f_a \in \mathbb{R}^{s_a}`, and :math:`K(\theta) = C(w(\theta))` is the
    :class:`~structops.Conv` of that full stencil (same boundary, channels and stride).

    Parameters
    ----------
    grid : int or sequence of int
        Shape of one image (1, 2 or 3 axes).
    stencil : int or sequence of int
        Shape :math:`(s_0, \dots, s_{d-1})` of the full stencil, one entry per grid axis.
    bc : {"zero", "periodic", "reflect", "replicate", "valid"}
        Boundary condition, as in :class:`~structops.Conv`.
    in_channels, out_channels : int
        Channel counts.
    stride : int or sequence of int
        Output sampling step per axis.
    rank : int
        Number :math:`R \ge 1` of separable terms per channel pair.
    path : {"auto", "separable", "full"}, optional
        How the operator is applied (``self.path``): one 1-D pass per axis (``"separable"``)
        or the full stencil (``"full"``); ``"auto"`` takes the passes when
        ``d >= 2`` and ``rank * sum(stencil) < prod(stencil)``. Both give the same operator;
        a 1-D grid has only the full path.

    Raises
    ------
    ValueError
        If ``rank`` or a size is below 1, ``stencil``/``stride`` do not have one entry per
        grid axis, ``grid`` does not have 1 to 3 axes, ``bc`` or ``path`` is unknown,
        ``path="separable"`` is asked for a 1-D grid, or the
        stencil does not fit the grid for ``bc`` (see :class:`~structops.Conv`).
    TypeError
        If ``rank``, a size, a stride or a channel count is not an integer.

    Attributes
    ----------
    nparams : int
        ``out_channels * in_channels * rank * sum(stencil)``.
    path : str
        ``"separable"`` or ``"full"``: how :meth:`~structops.kernels.ParametricKernel.apply` and
        :meth:`~structops.kernels.ParametricKernel.op` compute.
    passes : tuple of Conv
        The per-axis convolutions of the separable path (empty for ``"full"``).

    Notes
    -----
    **Layout of θ.** ``theta.reshape(out_channels, in_channels, rank, sum(stencil))``; each row
    ``[o, c, r]`` is the concatenation :math:`[f_0\,(s_0), f_1\,(s_1), \dots]` of the 1-D
    stencils of axis 0, 1, ... (in 2-D: :math:`[u, v]`, :math:`w = \sum_r u v^\top`).
    :attr:`theta_shape` is ``(out_channels, in_channels, rank, sum(stencil))``.

    **Jacobian.** :math:`K` is linear in each factor, so
    :math:`J_\theta v = J_w\,Dw(\theta)v` with the product rule
    :math:`Dw(\theta)v = \sum_r \sum_a f_0 \otimes \dots \otimes \delta f_a \otimes \dots \otimes f_{d-1}`
    (a full-stencil direction, then one convolution of the data), and
    :math:`J_\theta^\top y = Dw(\theta)^\top g` with :math:`g = J_w^\top y` the full-stencil
    gradient (the correlation of the cotangent with the data) contracted with the other
    factors: :math:`\partial/\partial f^{ocr}_{a,j} = \sum_{j_b,\,b \ne a} g^{oc}_{\dots j \dots}
    \prod_{b \ne a} f^{ocr}_{b,\,j_b}`; per-example gradients contract every row of ``g`` at once.
    The model is multilinear, not affine: no ``Q``, and the Taylor remainder falls as :math:`O(h^2)`
    (on a 1-D grid :math:`w = \sum_r f^{ocr}_0` is linear, an over-parametrised ``Conv``; the
    family still reports ``linear = False``).

    **The separable path.** Every boundary condition here pads axis by axis
    (:math:`P = P_0 \otimes \dots \otimes P_{d-1}`, each an index map or zeros) and the stride
    samples axis by axis, so the convolution with :math:`f_0 \otimes f_1` equals the convolution
    with the stencil of shape :math:`(1, s_1)` (padding and sampling axis 1 only) followed by the
    one of shape :math:`(s_0, 1)` on the grid that pass leaves -- for ``"zero"``, ``"periodic"``,
    ``"reflect"``, ``"replicate"`` and ``"valid"``, and any stride (the tests check all of them
    against the full stencil). The passes run from the last axis to the first:

    1. per input channel :math:`c`: a ``Conv(1 → out·rank)`` with the stencils
       :math:`f^{ocr}_{d-1}` gives the intermediate channels :math:`t_{c,o,r}`;
    2. (3-D) per :math:`(c, o, r)`: a ``Conv(1 → 1)`` with :math:`f^{ocr}_1`;
    3. per output channel :math:`o`: a ``Conv(in·rank → 1)`` with :math:`f^{ocr}_0` sums over
       :math:`(c, r)`.

    That is :math:`\text{out}\cdot\text{in}\cdot R\,\sum_a s_a` multiply-adds per pixel against
    :math:`\text{out}\cdot\text{in}\prod_a s_a` for the full stencil (plus the
    :math:`\text{in}\cdot\text{out}\cdot R` intermediate images), hence the ``"auto"`` rule. The
    adjoint runs the transposed passes in reverse order. On this path :math:`J_\theta v` is the
    product rule on the passes (:math:`d` cheap applications, each with one factor replaced by
    :math:`\delta f_a`); :math:`J_\theta^\top y` goes through the full-stencil gradient
    (:class:`~structops.Conv`'s direct sums or FFTs), then :math:`Dw^\top`.

    Examples
    --------
    >>> k = SeparableConv((5, 5), (3, 3))
    >>> theta = np.array([1.0, 2.0, 1.0, -1.0, 0.0, 1.0])  # u = (1, 2, 1), v = (-1, 0, 1)
    >>> k.weights(theta)[0, 0]
    array([[-1.,  0.,  1.],
           [-2.,  0.,  2.],
           [-1.,  0.,  1.]])
    >>> k.nparams, SeparableConv((128, 128), 15).path
    (6, 'separable')
    """

    def __init__(
        self,
        grid: int | Sequence[int],
        stencil: int | Sequence[int],
        *,
        bc: str = "zero",
        in_channels: int = 1,
        out_channels: int = 1,
        stride: int | Sequence[int] = 1,
        rank: int = 1,
        path: str = "auto",
    ) -> None:
        rank = check_positive_int(rank, "rank")
        path = _check_path(path)
        geometry = ConvGeometry(grid, stencil, stride, bc, in_channels, out_channels)  # validated once, here
        grid, stencil = geometry.grid, geometry.stencil
        d = len(grid)
        if d == 1 and path == "separable":
            raise ValueError(
                f"`path` 'separable' needs a grid of 2 or 3 axes (one pass per axis), got grid {grid!r}; "
                "use 'full' or 'auto'."
            )
        cheap = d >= 2 and rank * sum(stencil) < int(np.prod(stencil))
        self.path = ("separable" if cheap else "full") if path == "auto" else path
        # the passes compute the operator; the full Conv only prepares cheaply (a reshape)
        method = "direct" if self.path == "separable" else "auto"
        conv = Conv.from_geometry(geometry, method=method, jac_method="auto")
        self.rank = rank
        self._offsets = np.concatenate([[0], np.cumsum(stencil)])
        super().__init__(conv, conv.out_channels * conv.in_channels * rank * int(sum(stencil)))
        self.passes: tuple[Conv, ...] = self._build_passes() if self.path == "separable" else ()

    def __repr__(self) -> str:
        return (
            f"SeparableConv(grid={self.grid}, stencil={self.stencil}, bc={self.bc!r}, "
            f"in_channels={self.in_channels}, out_channels={self.out_channels}, stride={self.stride}, "
            f"rank={self.rank}, path={self.path!r})"
        )

    @property
    def theta_shape(self) -> tuple[int, ...]:
        """``(out_channels, in_channels, rank, sum(stencil))``: ``theta`` may be passed as this array."""
        return (self.out_channels, self.in_channels, self.rank, int(sum(self.stencil)))

    def factors(self, theta) -> tuple[np.ndarray, ...]:
        """The 1-D stencils, one array of shape ``(out_channels, in_channels, rank, s_a)`` per axis ``a``."""
        return self._factors(self.validate_theta(theta))

    def diagonalize(self, theta) -> Diagonalized | None:
        r"""Rank 1, one channel, 2-D/3-D, stride 1: the Kronecker product of the 1-D passes; else the Conv's.

        :math:`w = f_0 \otimes f_1 (\otimes f_2)` exactly, so
        :math:`K = C_{bc}(f_0) \otimes C_{bc}(f_1) (\otimes \dots)` for every boundary but
        ``"valid"``: a :class:`~structops.kernels.diagonalized.KroneckerMultiplier` with no residual.
        """
        phi = self.validate_theta(theta)
        conv = self.kernel
        if (
            self.rank == 1
            and conv.in_channels == conv.out_channels == 1
            and len(self.grid) >= 2
            and self.bc in KRONECKER_BCS
            and all(st == 1 for st in self.stride)
            and max(self.grid) <= KRONECKER_MAX_AXIS
        ):
            vectors = [f.reshape(-1) for f in self._factors(phi)]
            return kronecker_of_vectors(self.grid, self.bc, vectors, 0.0, phi.dtype)
        return super().diagonalize(phi)

    def _factors(self, phi: np.ndarray) -> tuple[np.ndarray, ...]:
        blocks = phi.reshape(self.theta_shape)
        o = self._offsets
        return tuple(blocks[..., o[a] : o[a + 1]] for a in range(len(self.stencil)))

    # ------------------------------------------------------------ the map w(θ)
    def _map(self, phi):
        f = self._factors(phi)
        d = len(f)
        spec = ",".join(f"ocr{_AXES[a]}" for a in range(d)) + "->oc" + _AXES[:d]
        return np.einsum(spec, *f, optimize=d > 2).reshape(-1)

    def _push(self, phi, v):
        f, df = self._factors(phi), self._factors(v)
        d = len(f)
        spec = ",".join(f"ocr{_AXES[a]}" for a in range(d)) + "->oc" + _AXES[:d]
        out = np.zeros(self.kernel.theta_shape, dtype=np.result_type(phi, v))
        for a in range(d):  # product rule: the derivative of one factor at a time
            out += np.einsum(spec, *(df[b] if b == a else f[b] for b in range(d)), optimize=d > 2)
        return out.reshape(-1)

    def _pull(self, phi, u):
        f = self._factors(phi)
        d = len(f)
        g = u.reshape((*u.shape[:-1], *self.kernel.theta_shape))  # (..., o, c, *stencil)
        full = "...oc" + _AXES[:d]
        if d == 1:  # w = sum_r f_r: every term receives the whole gradient
            parts = [np.broadcast_to(g[..., None, :], (*g.shape[:-1], self.rank, g.shape[-1]))]
        else:
            parts = []
        for a in range(d if d > 1 else 0):  # contract g with every factor but the a-th
            others = [b for b in range(d) if b != a]
            spec = ",".join([full] + [f"ocr{_AXES[b]}" for b in others]) + f"->...ocr{_AXES[a]}"
            parts.append(np.einsum(spec, g, *(f[b] for b in others), optimize=True))
        return np.concatenate(parts, axis=-1).reshape((*u.shape[:-1], self.nparams)).astype(u.dtype, copy=False)

    # --------------------------------------------------------- the separable path
    def _build_passes(self) -> tuple[Conv, ...]:
        """One Conv per axis, last axis first, each on the grid the previous pass leaves."""
        d, R = len(self.grid), self.rank
        cin, cout = self.in_channels, self.out_channels
        grid = list(self.grid)
        passes = []
        for k, a in enumerate(range(d - 1, -1, -1)):
            shape, step = [1] * d, [1] * d
            shape[a], step[a] = self.stencil[a], self.stride[a]
            if k == 0:
                channels = (1, cout * R)  # per input channel c: t[c, o, r]
            elif k == d - 1:
                channels = (cin * R, 1)  # per output channel o: sum over (c, r)
            else:
                channels = (1, 1)  # per (c, o, r)
            conv = Conv(
                tuple(grid), tuple(shape), bc=self.bc, in_channels=channels[0], out_channels=channels[1],
                stride=tuple(step),
            )  # fmt: skip
            passes.append(conv)
            grid[a] = conv.geometry.out_grid[a]
        return tuple(passes)

    def _pass_states(self, phi):
        return self._states_of(self._factors(phi))

    def _jvp_pass_states(self, phi, v):
        f, df = self._factors(phi), self._factors(v)
        return [self._states_of(tuple(df[b] if b == a else f[b] for b in range(len(f)))) for a in range(len(f))]

    def _states_of(self, f: tuple[np.ndarray, ...]) -> tuple[Any, ...]:
        """The passes' states for the 1-D stencils ``f`` (one ``(out, in, rank, s_a)`` array per axis)."""
        d = len(f)
        cin, cout, R = self.in_channels, self.out_channels, self.rank
        first, last = self.passes[0], self.passes[-1]
        # pass 0 (axis d-1), per c: the stencils f[o, c, r, :] as a (cout*R, 1, ..., s) weight
        states: list[Any] = [
            tuple(first._prepare(np.ascontiguousarray(f[d - 1][:, c]).reshape(-1)) for c in range(cin))
        ]
        for k in range(1, d - 1):  # middle axes (3-D): per (c, o, r)
            fa = f[d - 1 - k]
            states.append(
                tuple(
                    self.passes[k]._prepare(np.ascontiguousarray(fa[o, c, r]))
                    for c in range(cin)
                    for o in range(cout)
                    for r in range(R)
                )
            )
        # last pass (axis 0), per o: the stencils f[o, c, r, :] as a (1, cin*R, s, 1, ...) weight
        states.append(tuple(last._prepare(np.ascontiguousarray(f[0][o]).reshape(-1)) for o in range(cout)))
        return tuple(states)

    def _apply_passes(self, passes, x, transpose):
        return self._backward(passes, x) if transpose else self._forward(passes, x)

    def _forward(self, passes, x):
        n, d = x.shape[0], len(self.grid)
        cin, cout, R = self.in_channels, self.out_channels, self.rank
        convs = self.passes
        xs = x.reshape(n, cin, -1)
        outs = [convs[0]._apply(passes[0][c], xs[:, c], False) for c in range(cin)]
        t = _stack(outs, 1).reshape(n, cin, cout, R, -1)  # intermediate channels (c, o, r)
        for k in range(1, d - 1):
            outs = [convs[k]._apply(passes[k][i], t[:, c, o, r], False) for i, (c, o, r) in _cor(cin, cout, R)]
            t = _stack(outs, 1).reshape(n, cin, cout, R, -1)
        outs = [convs[-1]._apply(passes[-1][o], t[:, :, o].reshape(n, -1), False) for o in range(cout)]
        return _stack(outs, 1).reshape(n, -1)

    def _backward(self, passes, y):
        n, d = y.shape[0], len(self.grid)
        cin, cout, R = self.in_channels, self.out_channels, self.rank
        convs = self.passes
        ys = y.reshape(n, cout, -1)
        outs = [convs[-1]._apply(passes[-1][o], ys[:, o], True).reshape(n, cin, R, -1) for o in range(cout)]
        t = _stack(outs, 2)  # (n, c, o, r, grid)
        for k in range(d - 2, 0, -1):
            outs = [convs[k]._apply(passes[k][i], t[:, c, o, r], True) for i, (c, o, r) in _cor(cin, cout, R)]
            t = _stack(outs, 1).reshape(n, cin, cout, R, -1)
        outs = [convs[0]._apply(passes[0][c], t[:, c].reshape(n, -1), True) for c in range(cin)]
        return _stack(outs, 1).reshape(n, -1)


def _cor(cin: int, cout: int, rank: int):
    """``(i, (c, o, r))`` over the intermediate channels in C-order."""
    return enumerate(np.ndindex(cin, cout, rank))


def _stack(arrays: list[np.ndarray], axis: int) -> np.ndarray:
    """``np.stack`` that does not copy a single array (one channel: the pass output is used as is)."""
    return np.expand_dims(arrays[0], axis) if len(arrays) == 1 else np.stack(arrays, axis)


class DepthwiseSeparableConv(_PassedConv):
    r"""A depthwise convolution (``multiplier`` stencils per input channel) followed by a 1×1 channel mix.

    With :math:`C` input channels, multiplier :math:`M` and :math:`O` output channels, the
    depthwise stencils :math:`D_k` (:math:`k = cM + m`, the :math:`m`-th of channel :math:`c`)
    and the pointwise matrix :math:`P \in \mathbb{R}^{O \times CM}`,

    .. math::
        z_o = \sum_{c,m} P_{o,\,cM+m}\, (D_{cM+m} * x_c)
        \quad\Longleftrightarrow\quad
        K(\theta) = C(w), \qquad w^{oc} = \sum_m P_{o,\,cM+m}\, D_{cM+m},

    the :class:`~structops.Conv` (same boundary and stride) of the full stencil :math:`w`.

    Parameters
    ----------
    grid : int or sequence of int
        Shape of one image (1, 2 or 3 axes).
    stencil : int or sequence of int
        Shape of each depthwise stencil, one entry per grid axis.
    bc : {"zero", "periodic", "reflect", "replicate", "valid"}
        Boundary condition, as in :class:`~structops.Conv`.
    in_channels, out_channels : int
        Channel counts :math:`C` and :math:`O` (keyword-only, required).
    multiplier : int
        Depthwise stencils per input channel, :math:`M \ge 1`.
    stride : int or sequence of int
        Output sampling step per axis (of the depthwise pass).
    path : {"auto", "separable", "full"}, optional
        Depthwise pass then a channel GEMM (``"separable"``), or the full stencil (``"full"``);
        ``"auto"`` takes the passes when :math:`M(S + O) < OS`, ``S = prod(stencil)``.

    Raises
    ------
    ValueError
        If ``multiplier``, a channel count or a size is below 1, the stencil and grid have
        different numbers of axes, or ``bc``/``path`` is unknown (see :class:`~structops.Conv`).
    TypeError
        If ``multiplier``, a channel count, a size or a stride is not an integer.

    Notes
    -----
    **Layout of θ.** ``theta = [D.ravel(), P.ravel()]`` with ``D`` of shape
    ``(in_channels * multiplier, *stencil)`` (row ``c * multiplier + m``) and ``P`` of shape
    ``(out_channels, in_channels * multiplier)``, both C-order;
    ``p = in·multiplier·prod(stencil) + out·in·multiplier``.

    **Jacobian.** Bilinear in :math:`(D, P)`: :math:`Dw(\theta)(\delta D, \delta P) =
    \sum_m (\delta P_{o,cM+m} D_{cM+m} + P_{o,cM+m}\,\delta D_{cM+m})`, and with the
    full-stencil gradient :math:`g^{oc} = J_w^\top y`,
    :math:`\partial/\partial D_{cM+m} = \sum_o P_{o,cM+m}\, g^{oc}` and
    :math:`\partial/\partial P_{o,cM+m} = \langle g^{oc}, D_{cM+m}\rangle`. No ``Q``; Taylor
    remainder :math:`O(h^2)`.

    **The separable path.** Per input channel a ``Conv(1 → M)`` with its depthwise stencils
    (the boundary and stride act there), then :math:`z = P\,t` over the :math:`CM` intermediate
    channels, one GEMM for the whole batch: :math:`CM(S + O)` multiply-adds per output pixel
    against :math:`COS`. The pointwise mix acts pixel by pixel, so it commutes with every
    padding: both paths give the same operator for every ``bc``. The adjoint is
    :math:`t = P^\top y`, then the transposed depthwise passes. On this path :math:`J_\theta v`
    is two cheap applications, :math:`K(\delta D, P)x + K(D, \delta P)x`.

    Examples
    --------
    >>> k = DepthwiseSeparableConv((8, 8), (3, 3), in_channels=4, out_channels=8)
    >>> k.nparams, k.path
    (68, 'separable')
    """

    def __init__(
        self,
        grid: int | Sequence[int],
        stencil: int | Sequence[int],
        *,
        bc: str = "zero",
        in_channels: int,
        out_channels: int,
        multiplier: int = 1,
        stride: int | Sequence[int] = 1,
        path: str = "auto",
    ) -> None:
        mult = check_positive_int(multiplier, "multiplier")
        path = _check_path(path)
        geometry = ConvGeometry(grid, stencil, stride, bc, in_channels, out_channels)  # validated once, here
        grid, stencil, cin, cout = geometry.grid, geometry.stencil, geometry.cin, geometry.cout
        S = int(np.prod(stencil))
        cheap = mult * (S + cout) < cout * S
        self.path = ("separable" if cheap else "full") if path == "auto" else path
        method = "direct" if self.path == "separable" else "auto"
        conv = Conv.from_geometry(geometry, method=method, jac_method="auto")
        self.multiplier = mult
        self._ndepth = cin * mult * S
        super().__init__(conv, self._ndepth + cout * cin * mult)
        self.passes: tuple[Conv, ...] = ()
        if self.path == "separable":
            self.passes = (Conv(grid, stencil, bc=bc, in_channels=1, out_channels=mult, stride=conv.stride),)

    def __repr__(self) -> str:
        return (
            f"DepthwiseSeparableConv(grid={self.grid}, stencil={self.stencil}, bc={self.bc!r}, "
            f"in_channels={self.in_channels}, out_channels={self.out_channels}, multiplier={self.multiplier}, "
            f"stride={self.stride}, path={self.path!r})"
        )

    def split(self, theta) -> tuple[np.ndarray, np.ndarray]:
        """The depthwise stencils, shape ``(in_channels * multiplier, *stencil)``, and the pointwise matrix."""
        return self._split(self.validate_theta(theta))

    def _split(self, phi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        D = phi[: self._ndepth].reshape(self.in_channels * self.multiplier, *self.stencil)
        P = phi[self._ndepth :].reshape(self.out_channels, self.in_channels * self.multiplier)
        return D, P

    def _blocks(self, phi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``D`` as ``(C, M, S)`` and ``P`` as ``(O, C, M)``."""
        C, M, O = self.in_channels, self.multiplier, self.out_channels
        return phi[: self._ndepth].reshape(C, M, -1), phi[self._ndepth :].reshape(O, C, M)

    def _map(self, phi):
        D, P = self._blocks(phi)
        return np.einsum("ocm,cms->ocs", P, D).reshape(-1)

    def _push(self, phi, v):
        D, P = self._blocks(phi)
        dD, dP = self._blocks(v)
        return (np.einsum("ocm,cms->ocs", dP, D) + np.einsum("ocm,cms->ocs", P, dD)).reshape(-1)

    def _pull(self, phi, u):
        D, P = self._blocks(phi)
        lead = u.shape[:-1]
        g = u.reshape((*lead, self.out_channels, self.in_channels, -1))
        gD = np.einsum("...ocs,ocm->...cms", g, P, optimize=True).reshape((*lead, -1))
        gP = np.einsum("...ocs,cms->...ocm", g, D, optimize=True).reshape((*lead, -1))
        return np.concatenate([gD, gP], axis=-1).astype(u.dtype, copy=False)

    # --------------------------------------------------------- the separable path
    def _pass_states(self, phi):
        return self._states_of(*self._blocks(phi))

    def _jvp_pass_states(self, phi, v):
        (D, P), (dD, dP) = self._blocks(phi), self._blocks(v)
        return [self._states_of(dD, P), self._states_of(D, dP)]

    def _states_of(self, D: np.ndarray, P: np.ndarray) -> tuple[Any, ...]:
        """The depthwise passes' states (``D`` of shape ``(C, M, S)``) and the pointwise matrix."""
        depth = self.passes[0]
        states = tuple(depth._prepare(np.ascontiguousarray(D[c]).reshape(-1)) for c in range(self.in_channels))
        return states, P.reshape(self.out_channels, -1)

    def _apply_passes(self, passes, x, transpose):
        states, P = passes
        n, C, M = x.shape[0], self.in_channels, self.multiplier
        depth = self.passes[0]
        if transpose:
            y = x.reshape(n, self.out_channels, -1)
            t = np.matmul(P.T, y).reshape(n, C, -1)  # (n, C, M * prod(out_grid))
            out = np.empty((n, C, int(np.prod(self.grid))), dtype=x.dtype)
            for c in range(C):
                out[:, c] = depth._apply(states[c], t[:, c], True)
            return out.reshape(n, -1)
        xs = x.reshape(n, C, -1)
        m = int(np.prod(depth.out_shape[1:]))
        t = np.empty((n, C, M, m), dtype=x.dtype)
        for c in range(C):
            t[:, c] = depth._apply(states[c], xs[:, c], False).reshape(n, M, m)
        return np.matmul(P, t.reshape(n, C * M, m)).reshape(n, -1)
