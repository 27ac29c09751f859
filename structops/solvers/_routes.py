r"""The one place where every spectral solver decides how to compute: :func:`route`.

A family declares a fast transform through :meth:`ParametricKernel.diagonalize`
(:class:`~structops.kernels.diagonalized.Diagonalized`); :func:`route` asks for it once and
returns the strategy that computes the call, with its name and the reason it was chosen:

=====================  ==================  ==============================================================
route                  strategy            when
=====================  ==================  ==============================================================
``fourier``            exact transform     ``diagonalize`` gave an FFT multiplier (periodic convolutions)
``cosine``             exact transform     a DCT multiplier (doubly symmetric stencils with mirror
                                           boundaries)
``kronecker``          exact transform     a Kronecker product of 1-D factors (outer-product stencils,
                                           any bc)
``dense``              dense LAPACK        no usable transform, ``max(shape) <= dense_limit``:
                                           ``kernel.matrix``
``certified``          periodic embedding  a zero-boundary convolution: certified upper bound from its
                                           periodic embedding, Lanczos lower bound (``spectral_norm``,
                                           ``cond``, projection)
``verified-cholesky``  verified positive   any other convolution (reflect, replicate padding): upper
                       definiteness        bound from a Cholesky factorisation of :math:`tI - K^\top K`
                                           (``spectral_norm``, projection); a result above the
                                           factorisation's size limit says ``padded``
                                           (:math:`\|K_{\rm valid}\|\|E\|` or Schur's bound)
``estimate``           iterative           Golub--Kahan--Lanczos (``spectral_norm``, ``cond``) or ARPACK
                                           (``eigvals``) with bounds
``iterative``          iterative           Krylov solvers (``tikhonov``, ``choose_alpha``): no shared
                                           transform
``none``               none                nothing applies: the strategy raises ``ValueError`` with the
                                           reason
=====================  ==================  ==============================================================

The exact-transform route is named by the transform (:attr:`Diagonalized.route_name
<structops.solvers.Diagonalized>`), so a new transform is one new ``Diagonalized`` subclass:
the strategy calls only the interface (blocks, ``with_blocks``, ``singular_values``,
``eigenvalues``, ``coefficients``, ``multiplicity``, ``periodic_grid``), never the transform's name.

What a transform must offer depends on the function: singular values need a unitary one
(``svdvals``, ``spectral_norm``, ``cond``, ``project_spectral_norm``, ``tikhonov``,
``choose_alpha``), eigenvalues a similarity (``eigvals``; the Kronecker product keeps its
factors' eigenvalues), solves any (``inverse``, ``implicit_step``; finer conditions, e.g. normal
equations under DCT-I, are checked by the strategy).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse.linalg as spla

from ..kernels._base import ParametricKernel, as_kernel
from ..kernels.diagonalized import Diagonalized, PeriodicEmbedding
from ._blocks import invert_diagonal, normal_inverse, not_normal
from ._certified import certified_cond, certified_norm, dense_upper, norm_upper, transform_upper
from ._filters import Regularizer, TikhonovSpectrum, as_regularizer, exact_solver, shares_basis, spectrum
from ._lanczos import EstimateWarning, SpectralEstimate, exact_estimate, golub_kahan

__all__ = [
    "DENSE_LIMIT",
    "FUNCS",
    "ROUTES",
    "CertifiedRoute",
    "DenseRoute",
    "IterativeRoute",
    "NoRoute",
    "Route",
    "TransformRoute",
    "route",
]

#: Largest ``max(kernel.shape)`` for which the solvers build the dense matrix (``kernel.matrix``)
#: and call LAPACK: 2048² float64 is 32 MiB and an SVD of a few seconds on two cores.
DENSE_LIMIT = 2048

#: The solver functions :func:`~structops.solvers.route` knows.
FUNCS = (
    "inverse",
    "implicit_step",
    "eigvals",
    "svdvals",
    "spectral_norm",
    "cond",
    "project_spectral_norm",
    "tikhonov",
    "choose_alpha",
)

#: Every built-in route name (a user's transform adds its own ``route_name``).
ROUTES = ("fourier", "cosine", "kronecker", "dense", "certified", "verified-cholesky", "estimate", "iterative", "none")

_SINGULAR = ("svdvals", "spectral_norm", "cond", "project_spectral_norm", "tikhonov", "choose_alpha")
_SOLVES = ("inverse", "implicit_step")
_REGULARISED = ("tikhonov", "choose_alpha")
_WHICH = ("LM", "SM", "LR", "SR", "LI", "SI")


def order_eigvals(ev: np.ndarray, which: str) -> np.ndarray:
    """``ev`` sorted as ``eigs``' ``which`` asks (first = most extreme)."""
    key = {"LM": -np.abs(ev), "SM": np.abs(ev), "LR": -ev.real, "SR": ev.real, "LI": -ev.imag, "SI": ev.imag}
    return ev[np.argsort(key[which], kind="stable")]


@dataclass(frozen=True)
class Route:
    r"""Which route a solver call takes, and why; the strategy that computes it.

    :func:`route` returns one of the subclasses (:class:`.TransformRoute`, :class:`.DenseRoute`,
    :class:`.CertifiedRoute`, :class:`.IterativeRoute`, :class:`.NoRoute`); each implements the
    operations its route can do and raises a ``ValueError`` naming ``reason`` for the rest.

    Attributes
    ----------
    func : str
        The solver asked about (one of :data:`~structops.solvers._routes.FUNCS`).
    name : str
        The route (one of :data:`~structops.solvers._routes.ROUTES`, or a user transform's ``route_name``).
    reason : str
        One sentence: what the kernel offered and why this route was chosen (or why none applies).
    diagonal : Diagonalized or None
        The operator ``kernel.diagonalize(theta)`` when the kernel declares one.
    kernel : ParametricKernel or None
        The family asked about.
    theta : numpy.ndarray or None
        Its validated parameters.
    embedding : PeriodicEmbedding or None
        ``kernel.periodic_embedding(theta)`` when the route needs it (certified bounds, projection).
    regularizer : Regularizer or None
        The resolved ``L`` of ``tikhonov``/``choose_alpha``.
    """

    func: str
    name: str
    reason: str
    diagonal: Diagonalized | None = None
    kernel: ParametricKernel | None = field(default=None, repr=False, compare=False)
    theta: np.ndarray | None = field(default=None, repr=False, compare=False)
    embedding: PeriodicEmbedding | None = field(default=None, repr=False, compare=False)
    regularizer: Regularizer | None = field(default=None, repr=False, compare=False)

    @property
    def exact(self) -> bool:
        """Whether the route computes exactly (up to round-off): a fast transform or dense LAPACK."""
        return False

    # the kernel and theta are set by route(); these accessors keep mypy and the messages honest
    @property
    def _k(self) -> ParametricKernel:
        assert self.kernel is not None and self.theta is not None
        return self.kernel

    @property
    def _t(self) -> np.ndarray:
        assert self.theta is not None
        return self.theta

    def _unavailable(self, what: str) -> ValueError:
        return ValueError(f"`{what}` is not available on the {self.name!r} route: {self.reason}")

    def svdvals(self) -> np.ndarray:
        r"""Every singular value of :math:`K(\theta)`, descending (exact routes)."""
        raise ValueError(
            f"`svdvals` computes every singular value only through a fast transform or dense LAPACK: {self.reason} "
            "Use structops.solvers.spectral_norm or structops.solvers.cond (certified or estimated bounds on the "
            "extremes), or raise `dense_limit`."
        )

    def spectral_norm(self, *, maxiter: int, tol: float) -> SpectralEstimate:
        r""":math:`\|K(\theta)\|_2` with its bounds."""
        raise self._unavailable("spectral_norm")

    def cond(self, *, maxiter: int, tol: float) -> SpectralEstimate:
        r""":math:`\kappa(K(\theta))` with its bounds."""
        raise self._unavailable("cond")

    def eigvals(self, k: int | None, which: str, *, maxiter: int, tol: float) -> np.ndarray:
        """Every eigenvalue (``k`` None, exact transforms) or the ``k`` most extreme as ``which`` asks."""
        raise self._unavailable("eigvals")

    def _no_transform(self, func: str) -> ValueError:
        return ValueError(
            f"`{func}` needs a kernel diagonalised by a fast transform, e.g. a periodic convolution "
            f"structops.Conv(..., bc='periodic', stride=1) (block-circulant, diagonalised by the FFT): {self.reason} "
            "For other kernels use scipy.sparse.linalg's iterative solvers on kernel.op(theta) (see "
            "structops.solvers.circulant_preconditioner for zero boundaries)."
        )

    def inverse(self, *, alpha: float, normal: bool, rcond: float | None) -> Diagonalized:
        r""":math:`(K + \alpha I)^{-1}`, :math:`(K^\top K + \alpha I)^{-1}` or :math:`K^+` (validated options)."""
        raise self._no_transform("inverse")

    def implicit_step(self, h: float) -> Diagonalized:
        r""":math:`(h K^\top K + I)^{-1}` (validated ``h``)."""
        raise self._no_transform("implicit_step")

    def norm_bound(self) -> float:
        r"""A certified upper bound on :math:`\|K(\theta)\|_2` (:func:`structops.solvers.certified_norm_bound`)."""
        raise ValueError(
            f"no certified bound on the spectral norm of {self.kernel!r}: {self.reason} Use "
            "structops.solvers.spectral_norm for an estimate with (probabilistic) bounds."
        )

    def projection_grid(self) -> tuple[int, ...] | None:
        """The periodic grid on which :func:`structops.solvers.project_spectral_norm` clips the symbol, or None."""
        return None if self.embedding is None else self.embedding.multiplier.grid

    def _structure_error(self, func: str) -> ValueError:
        return ValueError(
            f"`{func}` solves exactly per frequency only when K and L share one diagonalisation; {self.reason} Use "
            "the iterative route: structops.solvers.tikhonov(kernel, theta, b, alpha=..., L=L, solver='lsqr', "
            "preconditioner='chan')."
        )

    def tikhonov(self, alpha: float) -> Diagonalized:
        r"""The exact Tikhonov solution operator :math:`(K^HK + \alpha L^HL)^{-1}K^H` (shared basis only)."""
        raise self._structure_error("tikhonov(solver='exact')")

    def filter_spectrum(self, b: np.ndarray) -> TikhonovSpectrum:
        """The arrays behind :func:`structops.solvers.choose_alpha`'s criteria (one channel, shared basis)."""
        raise self._structure_error("choose_alpha")


@dataclass(frozen=True)
class TransformRoute(Route):
    """The exact route through the kernel's :class:`~structops.solvers.Diagonalized` (named by its ``route_name``)."""

    @property
    def _d(self) -> Diagonalized:
        assert self.diagonal is not None
        return self.diagonal

    @property
    def exact(self) -> bool:
        """True."""
        return True

    def svdvals(self) -> np.ndarray:
        """The union of the blocks' singular values, each counted by its multiplicity."""
        return self._d.singular_values()

    def spectral_norm(self, *, maxiter: int, tol: float) -> SpectralEstimate:
        """The largest block singular value, with Weyl bounds from the transform's residual."""
        smax, _ = self._d.extremes()
        res = self._d.residual
        if res == 0:
            return exact_estimate(smax, self.name)
        return SpectralEstimate(smax, max(smax - res, 0.0), smax + res, True, self.name, 0)

    def cond(self, *, maxiter: int, tol: float) -> SpectralEstimate:
        """The ratio of the extreme block singular values, with Weyl bounds from the residual."""
        smax, smin = self._d.extremes()
        value = np.inf if smin == 0 else smax / smin
        res = self._d.residual
        if res == 0:
            return exact_estimate(float(value), self.name)
        lower = max(smax - res, 0.0) / (smin + res)
        upper = np.inf if smin <= res else (smax + res) / (smin - res)
        return SpectralEstimate(float(value), float(min(lower, value)), float(max(upper, value)), True, self.name, 0)

    def eigvals(self, k: int | None, which: str, *, maxiter: int, tol: float) -> np.ndarray:
        """The blocks' eigenvalues: all of them (shape ``grid``), or the ``k`` most extreme."""
        ev = self._d.eigenvalues()
        return ev if k is None else order_eigvals(ev.reshape(-1), which)[:k]

    def inverse(self, *, alpha: float, normal: bool, rcond: float | None) -> Diagonalized:
        """Per-frequency inverses of the blocks (see :func:`structops.solvers.inverse`)."""
        return invert_diagonal(self._d, alpha=alpha, normal=normal, rcond=rcond, name="K(θ)", kernel=self.kernel)

    def implicit_step(self, h: float) -> Diagonalized:
        """Per-frequency :math:`(h B^H B + I)^{-1}` (a unitary transform)."""
        if not self._d.unitary:
            raise not_normal(self.kernel, "implicit_step (h KᵀK + I)⁻¹")
        return normal_inverse(self._d, h, 1.0, None, f"{h:g}·KᵀK + I")

    def norm_bound(self) -> float:
        """The largest block singular value plus the transform's residual and the round-off allowances."""
        bound = transform_upper(self._k, self._t)
        assert bound is not None  # a transform route has a unitary diagonalisation
        return bound

    def projection_grid(self) -> tuple[int, ...] | None:
        """The transform's periodic grid (a Fourier symbol), else the embedding's."""
        grid = self._d.periodic_grid
        return super().projection_grid() if grid is None else grid

    def tikhonov(self, alpha: float) -> Diagonalized:
        """The per-frequency solve in the basis ``K`` and ``L`` share."""
        assert self.regularizer is not None
        return exact_solver(self._d, self.regularizer, alpha)

    def filter_spectrum(self, b: np.ndarray) -> TikhonovSpectrum:
        """The filter-factor arrays from the blocks and the coefficients of ``b``."""
        assert self.regularizer is not None
        return spectrum(self._d, self.regularizer.diagonal, b)


@dataclass(frozen=True)
class DenseRoute(Route):
    """LAPACK on ``kernel.matrix(theta)`` (``max(shape) <= dense_limit``)."""

    @property
    def exact(self) -> bool:
        """True."""
        return True

    def _norm(self) -> float:
        k = self._k
        return float(np.linalg.norm(k.matrix(self.theta), 2)) if min(k.shape) else 0.0

    def svdvals(self) -> np.ndarray:
        """``numpy.linalg.svd`` of the dense matrix."""
        k = self._k
        if min(k.shape) == 0:
            return np.zeros(0)
        return np.linalg.svd(k.matrix(self.theta), compute_uv=False)

    def spectral_norm(self, *, maxiter: int, tol: float) -> SpectralEstimate:
        """``numpy.linalg.norm(M, 2)``."""
        return exact_estimate(self._norm(), "dense")

    def cond(self, *, maxiter: int, tol: float) -> SpectralEstimate:
        """``numpy.linalg.cond(M)``."""
        return exact_estimate(float(np.linalg.cond(self._k.matrix(self.theta))), "dense")

    def eigvals(self, k: int | None, which: str, *, maxiter: int, tol: float) -> np.ndarray:
        """``numpy.linalg.eigvals`` of the dense matrix, the ``k`` (default 6) most extreme."""
        ev = np.linalg.eigvals(self._k.matrix(self.theta))
        return order_eigvals(ev, which)[: 6 if k is None else k]

    def norm_bound(self) -> float:
        r"""The dense norm with LAPACK's round-off allowance, or the structured certificate if smaller."""
        bounds = [dense_upper(self._k, self._t)]
        if self.embedding is not None:
            bounds.append(norm_upper(self._k, self._t, dense_limit=0)[0])
        return min(bounds)


@dataclass(frozen=True)
class CertifiedRoute(Route):
    """A convolution without a transform: a certified upper bound, Lanczos lower bounds.

    Route ``"certified"`` (zero boundaries): the certificate of the periodic embedding;
    ``"verified-cholesky"`` (reflect, replicate): verified positive definiteness (``spectral_norm``
    and the projection only).
    """

    def spectral_norm(self, *, maxiter: int, tol: float) -> SpectralEstimate:
        """Lanczos below (from the embedding's top mode, if any), the certificate above; ``method`` names its source."""
        return certified_norm(self._k, self._t, maxiter=maxiter, tol=tol)

    def cond(self, *, maxiter: int, tol: float) -> SpectralEstimate:
        """Guaranteed bounds on the condition number (see :func:`structops.solvers.cond`)."""
        return certified_cond(self._k, self._t, maxiter=maxiter, tol=tol)

    def norm_bound(self) -> float:
        """The embedding's certificate, with the round-off allowances of the operator as computed."""
        return norm_upper(self._k, self._t, dense_limit=0)[0]


@dataclass(frozen=True)
class IterativeRoute(Route):
    """Iterative methods on ``kernel.op(theta)``: Golub--Kahan--Lanczos, ARPACK, or Krylov solves (``iterative``)."""

    def spectral_norm(self, *, maxiter: int, tol: float) -> SpectralEstimate:
        """The largest Ritz value of Golub--Kahan--Lanczos, with its bounds."""
        est, _ = golub_kahan(self._k.op(self.theta), maxiter=maxiter, tol=tol, need_min=False)
        return est

    def cond(self, *, maxiter: int, tol: float) -> SpectralEstimate:
        """The ratio of the extreme Ritz values, with its bounds."""
        big, small = golub_kahan(self._k.op(self.theta), maxiter=maxiter, tol=tol, need_min=True)
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

    def eigvals(self, k: int | None, which: str, *, maxiter: int, tol: float) -> np.ndarray:
        """The ``k`` (default 6) eigenvalues ``which`` asks from ARPACK (``scipy.sparse.linalg.eigs``)."""
        kernel, theta = self._k, self.theta
        assert theta is not None
        k = 6 if k is None else k
        n = kernel.shape[0]
        if min(kernel.shape) <= k + 1:
            raise ValueError(
                f"`k` must be < N - 1 = {n - 1} for ARPACK on this {n}×{n} operator, got k={k!r}; every eigenvalue "
                f"needs the dense matrix: raise `dense_limit` to {n} (it takes {8 * n * n / 2**30:.1f} GiB and "
                "O(N³) time)."
            )
        v0 = np.random.default_rng(0).standard_normal(n).astype(theta.dtype)
        try:
            op = kernel.op(theta)
            ev = spla.eigs(op, k=k, which=which, tol=tol, maxiter=maxiter, return_eigenvectors=False, v0=v0)
        except spla.ArpackNoConvergence as err:
            ev = np.asarray(err.eigenvalues)
            warnings.warn(
                f"eigvals: ARPACK found {ev.size} of the k={k} eigenvalues (which={which!r}) to tol={tol:g} in "
                f"maxiter={maxiter} restarts; returning those. Raise `maxiter` or `tol` for more.",
                EstimateWarning,
                stacklevel=3,
            )
        return order_eigvals(ev, which)


@dataclass(frozen=True)
class NoRoute(Route):
    """Nothing applies: every operation raises ``ValueError`` with the reason."""


def _usable(D: Diagonalized, func: str) -> str | None:
    """Why ``D`` cannot serve ``func`` (None if it can)."""
    if func in _SINGULAR and not D.unitary:
        return f"its {D.transform} transform is not unitary, so the blocks do not give the singular values"
    if func == "eigvals" and not D.has_eigenvalues:
        return f"its {D.transform} transform is not a similarity, so the blocks do not give the eigenvalues"
    if func == "choose_alpha" and D.blocks.shape[-2:] != (1, 1):
        return f"its blocks are {D.blocks.shape[-2]}×{D.blocks.shape[-1]} (the filter factors need one channel)"
    return None


def _shared(D: Diagonalized, reg: Regularizer, func: str) -> str | None:
    """Why ``L`` does not share ``D``'s basis for ``func`` (None if it does)."""
    if not shares_basis(D, reg):
        return f"`L` = {reg.describe()} is not diagonalised by the basis of `kernel` ({D!r}; L's: {reg.diagonal!r})"
    L_blocks = reg.blocks()
    if func == "choose_alpha" and L_blocks is not None and L_blocks.shape[-2:] != (1, 1):
        return f"`L`'s blocks are {L_blocks.shape[-2]}×{L_blocks.shape[-1]} (the filter factors need one channel)"
    return None


def _fallback(func: str, offered: str, dense_limit: int, embedding: bool, **common) -> Route:
    """The route when no transform serves ``func``: dense, certified, iterative or none."""
    kernel, theta = common["kernel"], common["theta"]
    if func in _SOLVES:
        return NoRoute(func, "none", offered + ".", **common)
    if func in _REGULARISED:
        return IterativeRoute(func, "iterative", offered + ": Krylov solvers on kernel.op(theta).", **common)
    size = kernel.shape[0] if func == "eigvals" else max(kernel.shape)
    dense = size <= dense_limit or min(kernel.shape) == 0
    wanted = func == "project_spectral_norm" or (not dense and func not in ("eigvals", "svdvals"))
    emb = kernel.periodic_embedding(theta) if embedding and wanted else None
    if dense:
        why = f"; max(shape) = {size} <= dense_limit = {dense_limit}: LAPACK."
        return DenseRoute(func, "dense", offered + why, embedding=emb, **common)
    if emb is not None:
        why = f"; it is a restriction of {emb!r}: certified bounds."
        return CertifiedRoute(func, "certified", offered + why, embedding=emb, **common)
    if embedding and func in ("spectral_norm", "project_spectral_norm") and kernel.as_convolution() is not None:
        why = (
            "; a convolution with no periodic embedding (reflect or replicate padding): the upper bound by verified "
            "positive definiteness of tI - KᵀK (Cholesky, Rump 2006), the lower by Golub-Kahan-Lanczos."
        )
        return CertifiedRoute(func, "verified-cholesky", offered + why, **common)
    if func in ("spectral_norm", "cond", "eigvals"):
        what = "ARPACK" if func == "eigvals" else "Golub-Kahan-Lanczos"
        why = f"; max(shape) = {size} > dense_limit = {dense_limit}: {what}."
        return IterativeRoute(func, "estimate", offered + why, **common)
    return NoRoute(func, "none", offered + f", and max(shape) = {size} > dense_limit = {dense_limit}.", **common)


def route(
    kernel: ParametricKernel,
    theta,
    func: str,
    *,
    dense_limit: int = DENSE_LIMIT,
    embedding: bool = True,
    L=None,
) -> Route:
    r"""Which route ``func(kernel, theta)`` takes, and why: the strategy that computes it.

    Parameters
    ----------
    kernel : ParametricKernel
    theta : array_like, shape (p,)
        Parameters (validated; the transform may depend on them, e.g. a stencil of rank 1).
    func : str
        One of :data:`~structops.solvers._routes.FUNCS`.
    dense_limit : int, optional
        Largest ``max(kernel.shape)`` that may go to dense LAPACK (``eigvals``: ``N``).
    embedding : bool, optional
        Whether a certified route may be taken: the periodic embedding of a zero-boundary
        convolution, or verified positive definiteness for reflect and replicate padding (for a
        64→64 layer on 32×32 a nested-dissection factorisation, about 25 s of CPU). False gives
        the Lanczos estimate alone (route ``"estimate"``).
    L : pylops.LinearOperator, optional
        The regularisation operator of ``"tikhonov"`` and ``"choose_alpha"`` (None: the identity):
        their exact route needs ``L`` to share the kernel's basis.

    Returns
    -------
    Route
        A :class:`.TransformRoute` (named by the transform: ``"fourier"``, ``"cosine"``,
        ``"kronecker"``), :class:`.DenseRoute`, :class:`.CertifiedRoute`, :class:`.IterativeRoute`
        (``"estimate"``, ``"iterative"``) or :class:`.NoRoute`, whose methods compute ``func``.

    Raises
    ------
    TypeError
        If ``kernel`` is not a kernel family, or ``L`` not an operator.
    ValueError
        If ``func`` is unknown, ``theta`` is invalid or ``L`` acts on another grid.

    Examples
    --------
    >>> import numpy as np, structops
    >>> route(structops.Conv(8, 3, bc="periodic"), np.ones(3), "cond").name
    'fourier'
    >>> from structops.data import gaussian_stencil
    >>> r = route(structops.Conv((256, 256), (9, 9)), gaussian_stencil(9, 2.0).ravel(), "cond")
    >>> r.name, type(r).__name__
    ('kronecker', 'TransformRoute')
    >>> route(structops.Dense(3, 3), np.ones(9), "svdvals").svdvals().shape
    (3,)
    """
    as_kernel(kernel)
    if func not in FUNCS:
        raise ValueError(f"`func` must be one of {FUNCS!r}, got {func!r}.")
    theta = kernel.validate_theta(theta)
    reg = as_regularizer(L, kernel) if func in _REGULARISED else None
    D = kernel.diagonalize(theta)
    common = {"diagonal": D, "kernel": kernel, "theta": theta, "regularizer": reg}
    if D is not None:
        why_not = _usable(D, func)
        if why_not is None and reg is not None:
            why_not = _shared(D, reg, func)
        if why_not is None:
            emb = kernel.periodic_embedding(theta) if func == "project_spectral_norm" and embedding else None
            reason = f"{kernel!r}.diagonalize(theta) gave {D!r}."
            return TransformRoute(func, D.route_name, reason, embedding=emb, **common)
        offered = f"{kernel!r} is diagonalised by {D!r}, but {why_not}"
    else:
        offered = f"{kernel!r} declares no fast transform at this theta (diagonalize returned None)"
    return _fallback(func, offered, dense_limit, embedding, **common)
