r"""Doubly symmetric convolutions: stencils mirror symmetric about every axis.

One of the cheaper convolution models of the lecture notes (Lars Ruthotto, *Numerical Methods
for Deep Learning*, "Parametric Models", "Build your own parametric model"): a stencil that is
mirror symmetric about all its axes is fixed by its first orthant, so a :math:`3\times 3`
stencil has 4 free parameters instead of 9 and a :math:`5\times 5` one 9 instead of 25. The
family is a :class:`~structops.Conv` :math:`C(w)` of the full stencil :math:`w = P\theta`
(:class:`~structops.kernels.LinearReparam`), with the convolution's geometry and spectral
tools (:class:`~structops.kernels.conv.ConvBased`).

Such a stencil gives symmetric matrices with zero, periodic and half-sample mirror
(``"symmetric"``) boundaries, and matrices diagonalised by discrete cosine transforms with
mirror boundaries: DCT-I for ``"reflect"``, DCT-II for ``"symmetric"``
(:mod:`structops.solvers.dct`).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from ..diagonalized import CosineMultiplier, Diagonalized, FourierMultiplier, cosine_symbol
from ..reparam import LinearReparam
from ._core import ConvGeometry
from .based import ConvBased
from .conv import Conv

__all__ = ["SYMMETRIES", "SymmetricConv", "symmetric_stencil_map"]

#: The tying rules of :class:`SymmetricConv`.
SYMMETRIES = ("double", "isotropic")


def symmetric_stencil_map(stencil: Sequence[int], symmetry: str = "double") -> sp.csr_array:
    r"""The 0/1 matrix :math:`P_1` mapping the free taps of one symmetric stencil to the full stencil.

    Parameters
    ----------
    stencil : sequence of int
        Odd stencil sizes :math:`s_a`, centre :math:`c_a = s_a /\!/ 2`.
    symmetry : {"double", "isotropic"}
        ``"double"``: the tap at index :math:`j` equals the tap at the absolute offsets
        :math:`|j - c|`, one free tap per point of the first orthant
        ``stencil[c_0:, c_1:, ...]`` in C-order. ``"isotropic"``: also equal under any
        permutation of the absolute offsets; one free tap per non-decreasing offset tuple
        :math:`o_0 \le o_1 \le \dots`, in C-order of the first orthant.

    Returns
    -------
    scipy.sparse.csr_array, shape (prod(stencil), p1)
        ``(P_1 θ)`` is the full stencil flattened in C-order.

    Examples
    --------
    >>> symmetric_stencil_map((3, 3)).toarray() @ np.arange(1.0, 5.0)
    array([4., 3., 4., 2., 1., 2., 4., 3., 4.])
    >>> symmetric_stencil_map((3, 3), "isotropic").toarray() @ np.arange(1.0, 4.0)
    array([3., 2., 3., 2., 1., 2., 3., 2., 3.])
    """
    stencil = tuple(int(s) for s in stencil)
    centre = tuple(s // 2 for s in stencil)
    orthant = list(itertools.product(*(range(c + 1) for c in centre)))
    if symmetry == "isotropic":
        keys = [o for o in orthant if list(o) == sorted(o)]
    else:
        keys = orthant
    column = {key: k for k, key in enumerate(keys)}
    rows, cols = [], []
    for flat, j in enumerate(itertools.product(*(range(s) for s in stencil))):
        offset = tuple(abs(ja - ca) for ja, ca in zip(j, centre))
        rows.append(flat)
        cols.append(column[tuple(sorted(offset)) if symmetry == "isotropic" else offset])
    shape = (len(rows), len(keys))
    return sp.csr_array((np.ones(len(rows)), (np.array(rows), np.array(cols))), shape=shape)


class SymmetricConv(ConvBased, LinearReparam):
    r"""Convolution whose every stencil is mirror symmetric about all axes (doubly symmetric).

    Parameters
    ----------
    grid : int or sequence of int
        Shape of one image (1, 2 or 3 axes).
    stencil : int or sequence of int
        Stencil shape, **odd** sizes (a stencil is mirrored about its centre tap).
    bc : {"zero", "periodic", "reflect", "symmetric", "replicate", "valid"}
        Boundary condition, as in :class:`~structops.Conv`.
    in_channels, out_channels : int
        Channel counts; every channel pair has its own symmetric stencil.
    stride : int or sequence of int
        Output sampling step per axis.
    symmetry : {"double", "isotropic"}
        ``"double"`` (default): mirror symmetric about every axis. ``"isotropic"``: also
        symmetric under any permutation of the axes (needs equal stencil sizes).

    Raises
    ------
    ValueError
        If a stencil size is even (there is no centre tap to mirror about), ``symmetry`` is
        unknown, ``symmetry="isotropic"`` with unequal stencil sizes, or for any reason
        :class:`~structops.Conv` gives (grid axes, ``bc``, stencil too large for ``bc``).
    TypeError
        If a size, stride or channel count is not an integer.

    Attributes
    ----------
    nparams : int
        ``out_channels * in_channels * p1`` with ``p1 = prod(s // 2 + 1)`` (``"double"``:
        4 for 3×3, 9 for 5×5) or the number of non-decreasing offset tuples (``"isotropic"``:
        3 for 3×3, 6 for 5×5, 4 for 3×3×3).
    P : scipy.sparse.csr_array, shape (conv.nparams, nparams)
        The full stencils ``P @ theta``: ``kron(I_{out·in}, P_1)`` with
        :func:`~structops.kernels.conv.symmetric.symmetric_stencil_map`.

    Notes
    -----
    **Parameters.** For one channel pair, with centre :math:`c = s /\!/ 2` per axis, the
    stencil is :math:`w_j = \theta_{k(|j - c|)}`: :math:`\theta` lists the first orthant
    ``w[c_0:, c_1:, ...]`` in C-order (``"double"``: in 2-D, :math:`\theta_0` the centre,
    :math:`\theta_1` the neighbour along axis 1, :math:`\theta_2` along axis 0, :math:`\theta_3`
    the corner), or its points with non-decreasing offsets (``"isotropic"``: centre, edge,
    corner). The channel pairs follow in ``(out, in)`` C-order, as in
    :class:`~structops.Conv`.

    **Operator.** :math:`K(\theta) = C(P\theta)` is linear in :math:`\theta`, with
    :math:`Q = Q_C P` (sparse); its Jacobian is the convolution's,
    :math:`J_\theta = J_w P` and :math:`J_\theta^\top u = P^\top J_w^\top u` (the gradient
    with respect to the full stencil, summed over mirrored taps).

    **Symmetry.** Because :math:`w_{c+o} = w_{c-o}`, convolution equals correlation: for one
    channel with ``bc`` ``"zero"``, ``"periodic"`` or ``"symmetric"`` (stride 1),
    :math:`K(\theta)^\top = K(\theta)`, so ``scipy.sparse.linalg.cg``/``minres`` apply to
    :math:`K` or :math:`K + \alpha I`, and the periodic eigenvalues
    :math:`\lambda(\xi) = \sum_o w_o \prod_a \cos(2\pi \xi_a o_a / n_a)` are real. With
    ``"reflect"`` the matrix is *not* symmetric (the mirrored taps fold onto the second sample:
    in 1-D, :math:`K_{01} = 2w_1` but :math:`K_{10} = w_1`); it is similar to a symmetric one.

    **Cosine transforms.** With ``"reflect"`` (whole-sample mirror, extension of period
    :math:`2(n-1)`) and ``"symmetric"`` (half-sample mirror, period :math:`2n`), a symmetric
    stencil maps even extensions to even extensions, and the cosines
    :math:`\cos(\pi k i/(n-1))` (DCT-I) resp. :math:`\cos(\pi k (i + \frac12)/n)` (DCT-II) are
    its eigenvectors, with eigenvalues

    .. math::
        \lambda_k = \sum_o w_o \prod_a \cos\Big(\frac{\pi k_a o_a}{L_a}\Big), \qquad
        L_a = n_a - 1 \text{ (DCT-I)},\quad L_a = n_a \text{ (DCT-II)}

    (:attr:`dct_type`, :meth:`eigvals`; exact solves in :mod:`structops.solvers.dct`).

    Examples
    --------
    >>> k = SymmetricConv((4, 4), (3, 3))
    >>> k.nparams, SymmetricConv((4, 4), (5, 5)).nparams, SymmetricConv((4, 4), 3, symmetry="isotropic").nparams
    (4, 9, 3)
    >>> k.weights(np.array([4.0, -1.0, -2.0, 0.5]))[0, 0]
    array([[ 0.5, -2. ,  0.5],
           [-1. ,  4. , -1. ],
           [ 0.5, -2. ,  0.5]])
    >>> M = k.matrix(np.array([4.0, -1.0, -2.0, 0.5]))
    >>> bool(np.array_equal(M, M.T))
    True
    """

    kernel: Conv

    def __init__(
        self,
        grid: int | Sequence[int],
        stencil: int | Sequence[int],
        *,
        bc: str = "zero",
        in_channels: int = 1,
        out_channels: int = 1,
        stride: int | Sequence[int] = 1,
        symmetry: str = "double",
    ) -> None:
        geometry = ConvGeometry(grid, stencil, stride, bc, in_channels, out_channels)  # validated once, here
        stencil, cin, cout = geometry.stencil, geometry.cin, geometry.cout
        if any(s % 2 == 0 for s in stencil):
            raise ValueError(
                f"`stencil` must have odd sizes for SymmetricConv, got {stencil!r}: an even size has no centre "
                "tap to mirror the stencil about."
            )
        if symmetry not in SYMMETRIES:
            raise ValueError(f"`symmetry` must be one of {SYMMETRIES!r}, got {symmetry!r}.")
        if symmetry == "isotropic" and len(set(stencil)) > 1:
            raise ValueError(
                f"`stencil` must have equal sizes on every axis for symmetry='isotropic' (the axes are "
                f"interchangeable), got {stencil!r}."
            )
        conv = Conv.from_geometry(geometry)
        self.symmetry = symmetry
        self.stencil_map = symmetric_stencil_map(stencil, symmetry)
        P = sp.kron(sp.eye_array(cout * cin), self.stencil_map, format="csr")
        super().__init__(conv, P)

    def __repr__(self) -> str:
        return (
            f"SymmetricConv(grid={self.grid}, stencil={self.stencil}, bc={self.bc!r}, "
            f"in_channels={self.in_channels}, out_channels={self.out_channels}, stride={self.stride}, "
            f"symmetry={self.symmetry!r})"
        )

    @property
    def dct_type(self) -> int | None:
        r"""The DCT diagonalising ``K(θ)``: 1 for ``bc="reflect"``, 2 for ``"symmetric"``, else None.

        Only for one channel and stride 1 (otherwise None); :mod:`structops.solvers.dct` and
        the solvers ``inverse``, ``implicit_step`` and ``eigvals`` then solve exactly in
        :math:`O(N \log N)`.
        """
        if self.in_channels != 1 or self.out_channels != 1 or any(st != 1 for st in self.stride):
            return None
        return {"reflect": 1, "symmetric": 2}.get(self.bc)

    def diagonalize(self, theta) -> Diagonalized | None:
        r"""The cosine multiplier for ``"reflect"``/``"symmetric"`` (one channel, stride 1), else the Conv's.

        Periodic: the FFT multiplier of the (real) symbol. With a mirror boundary the eigenvalues
        are :func:`~structops.solvers.dct.cosine_symbol` of the stencil, and :math:`K(\theta)` is a
        :class:`~structops.kernels.diagonalized.CosineMultiplier` (DCT-I for ``"reflect"``, DCT-II
        for ``"symmetric"``); with other boundaries the convolution's own diagonalisation
        (the FFT for ``"periodic"``).
        """
        theta = self.validate_theta(theta)
        if self.dct_type is None:
            D = super().diagonalize(theta)
            if isinstance(D, FourierMultiplier):  # a mirror-symmetric stencil has a real symbol: real blocks
                return FourierMultiplier.from_full(np.ascontiguousarray(D.full_blocks().real), dtype=theta.dtype)
            return D
        lam = cosine_symbol(self.weights(theta)[0, 0], tuple(self.grid), self.dct_type)
        return CosineMultiplier(lam, self.dct_type, dtype=lam.dtype, name="K(θ)")

    def eigvals(self, theta) -> np.ndarray:
        r"""Real eigenvalues, shape ``grid``, of a single-channel stride-1 periodic or mirror-boundary ``K(θ)``.

        Periodic: :math:`\lambda(\xi)` on the FFT grid (``numpy.fft`` frequency order), the
        real part of :meth:`structops.Conv.eigvals` (a symmetric stencil has a real spectrum;
        the imaginary part is checked to be round-off). ``"reflect"``/``"symmetric"``: the
        cosine symbol :math:`\lambda_k` on the DCT-I/DCT-II grid (see the class notes and
        :meth:`diagonalize`).

        Raises
        ------
        ValueError
            For other boundaries, several channels or a stride above 1.
        """
        if self.dct_type is not None:
            return cosine_symbol(self.weights(theta)[0, 0], tuple(self.grid), self.dct_type)
        lam = super().eigvals(theta)
        real = lam.real
        limit = 100 * np.finfo(real.dtype).eps * max(float(np.abs(real).max(initial=0.0)), 1.0) * lam.size
        imag = float(np.abs(lam.imag).max(initial=0.0))
        if imag > limit:  # pragma: no cover - a symmetric stencil has a real symbol
            raise ValueError(f"the periodic eigenvalues of {self!r} are not real: |imag| up to {imag:.3e}.")
        return np.ascontiguousarray(real)
