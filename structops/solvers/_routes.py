r"""The one place where every spectral solver decides how to compute: :func:`route`.

A family declares a fast transform through :meth:`ParametricKernel.diagonalize`
(:class:`~structops.kernels.diagonalized.Diagonalized`); :func:`route` asks for it once and says
which route a solver call takes, and why:

==============  =====================================================================================
route           when
==============  =====================================================================================
``fourier``     ``diagonalize`` gave an FFT multiplier (periodic convolutions and families on them)
``cosine``      a DCT multiplier (doubly symmetric stencils with mirror boundaries)
``kronecker``   a Kronecker product of 1-D factors (one-channel outer-product stencils, any boundary)
``dense``       no usable transform, ``max(shape) <= dense_limit``: LAPACK on ``kernel.matrix(theta)``
``certified``   a zero-boundary convolution: certified upper bound from its periodic embedding,
                Lanczos lower bound (``spectral_norm``, ``cond``, ``project_spectral_norm``)
``estimate``    Golub--Kahan--Lanczos (``spectral_norm``, ``cond``) or ARPACK (``eigvals``) with bounds
``none``        nothing applies: the solver raises ``ValueError`` with :attr:`Route.reason`
==============  =====================================================================================

What a transform must offer depends on the function: singular values need a unitary one
(``svdvals``, ``spectral_norm``, ``cond``, ``project_spectral_norm``), eigenvalues a similarity
(``eigvals``; the Kronecker product keeps its factors' eigenvalues), solves any (``inverse``,
``implicit_step``; finer conditions, e.g. normal equations under DCT-I, are checked by the solver).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..kernels._base import ParametricKernel, as_kernel
from ..kernels.diagonalized import Diagonalized

__all__ = ["DENSE_LIMIT", "FUNCS", "ROUTES", "Route", "route"]

#: Largest ``max(kernel.shape)`` for which the solvers build the dense matrix (``kernel.matrix``)
#: and call LAPACK: 2048² float64 is 32 MiB and an SVD of a few seconds on two cores.
DENSE_LIMIT = 2048

#: The solver functions :func:`~structops.solvers.route` knows.
FUNCS = ("inverse", "implicit_step", "eigvals", "svdvals", "spectral_norm", "cond", "project_spectral_norm")

#: Every route name.
ROUTES = ("fourier", "cosine", "kronecker", "dense", "certified", "estimate", "none")

_BY_TRANSFORM = {"fft": "fourier", "dct1": "cosine", "dct2": "cosine", "kron": "kronecker"}
_SINGULAR = ("svdvals", "spectral_norm", "cond", "project_spectral_norm")
_SOLVES = ("inverse", "implicit_step")


@dataclass(frozen=True)
class Route:
    """Which route a solver call takes, and why.

    Attributes
    ----------
    func : str
        The solver asked about (one of :data:`~structops.solvers._routes.FUNCS`).
    name : str
        The route (one of :data:`~structops.solvers._routes.ROUTES`).
    reason : str
        One sentence: what the kernel offered and why this route was chosen (or why none applies).
    diagonal : Diagonalized or None
        The operator ``kernel.diagonalize(theta)`` when the route uses it.
    """

    func: str
    name: str
    reason: str
    diagonal: Diagonalized | None = None

    @property
    def exact(self) -> bool:
        """Whether the route computes exactly (up to round-off): a fast transform or dense LAPACK."""
        return self.name in ("fourier", "cosine", "kronecker", "dense")


def _usable(D: Diagonalized, func: str) -> str | None:
    """Why ``D`` cannot serve ``func`` (None if it can)."""
    if func in _SINGULAR and not D.unitary:
        return f"its {D.transform} transform is not unitary, so the blocks do not give the singular values"
    if func == "eigvals" and not D.has_eigenvalues:
        return f"its {D.transform} transform is not a similarity, so the blocks do not give the eigenvalues"
    return None


def route(
    kernel: ParametricKernel, theta, func: str, *, dense_limit: int = DENSE_LIMIT, embedding: bool = True
) -> Route:
    r"""Which route ``func(kernel, theta)`` takes, and why.

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
        Whether the certified route (periodic embedding of a zero-boundary convolution) may be taken.

    Returns
    -------
    Route

    Raises
    ------
    TypeError
        If ``kernel`` is not a kernel family.
    ValueError
        If ``func`` is unknown or ``theta`` is invalid.

    Examples
    --------
    >>> import numpy as np, structops
    >>> route(structops.Conv(8, 3, bc="periodic"), np.ones(3), "cond").name
    'fourier'
    >>> from structops.data import gaussian_stencil
    >>> route(structops.Conv((256, 256), (9, 9)), gaussian_stencil(9, 2.0).ravel(), "cond").name
    'kronecker'
    >>> route(structops.Dense(3, 3), np.ones(9), "svdvals").name
    'dense'
    """
    as_kernel(kernel)
    if func not in FUNCS:
        raise ValueError(f"`func` must be one of {FUNCS!r}, got {func!r}.")
    D = kernel.diagonalize(theta)
    if D is not None:
        why_not = _usable(D, func)
        if why_not is None:
            name = _BY_TRANSFORM[D.transform]
            return Route(func, name, f"{kernel!r}.diagonalize(theta) gave {D!r}.", D)
        offered = f"{kernel!r} is diagonalised by {D!r}, but {why_not}"
    else:
        offered = f"{kernel!r} declares no fast transform at this theta (diagonalize returned None)"
    if func in _SOLVES:
        return Route(func, "none", offered + ".", D)
    size = kernel.shape[0] if func == "eigvals" else max(kernel.shape)
    if size <= dense_limit or min(kernel.shape) == 0:
        return Route(func, "dense", offered + f"; max(shape) = {size} <= dense_limit = {dense_limit}: LAPACK.", D)
    if func != "eigvals" and func != "svdvals" and embedding:
        emb = kernel.periodic_embedding(theta)
        if emb is not None:
            return Route(func, "certified", offered + f"; it is a restriction of {emb!r}: certified bounds.", D)
    if func in ("spectral_norm", "cond", "eigvals"):
        what = "ARPACK" if func == "eigvals" else "Golub-Kahan-Lanczos"
        return Route(func, "estimate", offered + f"; max(shape) = {size} > dense_limit = {dense_limit}: {what}.", D)
    return Route(func, "none", offered + f", and max(shape) = {size} > dense_limit = {dense_limit}.", D)


def block_extremes(D: Diagonalized) -> tuple[float, float]:
    """Largest and smallest singular value of a unitary :class:`Diagonalized` (over every block)."""
    sv = D.block_singular_values()
    if not sv.size:
        return 0.0, 0.0
    return float(sv.max()), float(np.min(sv))
