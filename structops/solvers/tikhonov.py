r"""Tikhonov regularisation with any solver: the one call for a regularised deblurring.

.. math::
    x_\alpha = \arg\min_x \|K(\theta)x - b\|^2 + \alpha\|Lx\|^2
             = (K^\top K + \alpha L^\top L)^{-1} K^\top b .

:func:`tikhonov` solves it exactly through the family's diagonalisation when ``K`` and ``L``
share one (``kernel.diagonalize(theta)``: periodic convolutions by the FFT, doubly symmetric
stencils with a half-sample mirror by the DCT-II, one-channel outer-product stencils with any
boundary by the SVDs of their 1-D factors), and otherwise by a Krylov method:

* ``"lsqr"`` (scipy) and ``"cgls"`` (pylops) on the stacked least-squares problem
  :math:`\min_z \|[K; \sqrt\alpha L]Pz - [b; 0]\|`, :math:`x = Pz`, with the *split (right)*
  circulant preconditioner :math:`P = (C^\top C + \alpha C_L^\top C_L)^{-1/2}`
  (:func:`split_preconditioner`);
* ``"cg"`` on the normal equations with :math:`M = P^2 = (C^\top C + \alpha C_L^\top C_L)^{-1}`
  (scipy's loop with in-place updates; for a zero-boundary ``K`` with ``L = I`` on a large enough
  grid, ``A z`` comes from the preconditioner's own spectrum plus exact edge strips, so an
  iteration costs one FFT pair instead of the FFT pair and the stencil pair).

Here :math:`C` is Strang's or T. Chan's circulant approximation of a zero-boundary ``K``
(:mod:`structops.solvers.preconditioners`; built from the stencil's FFT alone, no SVDs), or for
a mirrored boundary (``"symmetric"``, ``"reflect"``) the cosine-transform matrix of the
stencil's doubly symmetric part (Ng, Chan and Tang 1999, :func:`~structops.solvers.cosine_eigvals`),
and :math:`C_L` that of ``L`` (``L`` itself when it is periodic, 1 for the identity).
Preconditioning lowers the iteration count, by a factor that shrinks as the grid grows (see
the table in ``benchmarks/README.md``); it does not make it independent of :math:`N` in 2-D.
"""

from __future__ import annotations

import numpy as np

from .._validation import check_number
from ..kernels._base import ParametricKernel, as_kernel
from ..kernels.diagonalized import Diagonalized
from ._filters import as_regularizer
from ._krylov import SOLVERS, ConvergenceWarning, TikhonovResult, build_model
from .deblurrer import Deblurrer
from .preconditioners import KINDS

__all__ = ["SOLVERS", "ConvergenceWarning", "TikhonovResult", "split_preconditioner", "tikhonov"]


def split_preconditioner(
    kernel: ParametricKernel, theta, *, alpha: float, L=None, kind: str = "chan", power: float = 0.5
) -> Diagonalized:
    r"""The preconditioner :math:`(C^\top C + \alpha C_L^\top C_L)^{-p}` for Tikhonov problems.

    With ``power=0.5`` (default) it is the *split (right)* preconditioner :math:`P` of ``lsqr`` and
    ``cgls``: they solve :math:`\min_z \|[K; \sqrt\alpha L]Pz - [b; 0]\|` and return :math:`x = Pz`,
    whose normal equations :math:`P(K^\top K + \alpha L^\top L)P z = P K^\top b` are those of
    ``cg`` preconditioned by :math:`M = P^2` (``power=1``).

    Parameters
    ----------
    kernel : ParametricKernel
        A one-channel stride-1 convolution (a ``Conv`` or a family on one): zero boundary
        (its Strang/Chan circulant), periodic (itself), or with ``kind="dct"`` a mirrored
        boundary (the cosine model of its stencil's doubly symmetric part, Ng, Chan and Tang 1999).
    theta : array_like
        Its parameters; the operator runs in their dtype.
    alpha : float
        :math:`\alpha \ge 0`.
    L : pylops.LinearOperator, optional
        ``family.op(theta_L)`` of such a convolution on the same grid (None: the identity).
    kind : {"strang", "chan", "dct"}
        Which model approximates ``K`` and ``L``.
    power : float
        :math:`p > 0`.

    Returns
    -------
    FourierMultiplier or CosineMultiplier
        Symmetric positive definite, shape ``(N, N)``: the multiplier
        :math:`(|c(\xi)|^2 + \alpha|c_L(\xi)|^2)^{-p}`.

    Raises
    ------
    ValueError
        Unsupported kernel or ``L``, unknown ``kind``, ``alpha < 0``, or a singular
        :math:`C^\top C + \alpha C_L^\top C_L` (e.g. ``alpha = 0`` with a zero in the symbol).

    Examples
    --------
    >>> import numpy as np, structops
    >>> k = structops.Conv(64, 5)
    >>> theta = np.array([0.05, 0.25, 0.4, 0.25, 0.05])
    >>> P = split_preconditioner(k, theta, alpha=1e-3)
    >>> bool(np.allclose((P @ P).todense(), split_preconditioner(k, theta, alpha=1e-3, power=1).todense()))
    True
    """
    as_kernel(kernel)
    if kind not in (*KINDS, "dct"):
        raise ValueError(f"`kind` must be one of {(*KINDS, 'dct')!r}, got {kind!r}.")
    alpha = check_number(alpha, "alpha", minimum=0.0)
    power = check_number(power, "power", minimum=0.0)
    theta = kernel.validate_theta(theta)
    model = build_model(kernel, theta, as_regularizer(L, kernel), kind)
    return model.operator(alpha, power, theta.dtype)


def tikhonov(
    kernel: ParametricKernel,
    theta,
    b,
    *,
    alpha,
    L=None,
    solver: str = "auto",
    preconditioner: str | None = "auto",
    rtol: float = 1e-6,
    maxiter: int | None = None,
    full_output: bool = False,
) -> np.ndarray | TikhonovResult:
    r"""Tikhonov-regularised solution :math:`\arg\min_x \|K(\theta)x - b\|^2 + \alpha\|Lx\|^2`.

    Parameters
    ----------
    kernel : ParametricKernel
        The forward model :math:`K(\theta)`.
    theta : array_like, shape (p,)
        Its parameters (float32 or float64: the solve runs in their dtype).
    b : array_like
        The data: one output of ``kernel`` -- ``out_shape``, flat, or for one output channel the
        output grid (an image ``(H, W)``) -- or a stack of them ``(m, ...)`` (the same as solving
        each; the kernel's diagonalisation or preconditioner is built once). Float ``b`` must
        have ``theta``'s dtype (as in :meth:`~structops.kernels.ParametricKernel.apply`: nothing is
        cast silently, float16 is refused); integer ``b`` is cast with a warning (scale it, e.g.
        ``b / 255``, so that ``alpha`` and noise levels are in [0, 1] units).
    alpha : float or array_like, shape (m,)
        :math:`\alpha \ge 0`, one for all images or one per image (no default: pick it with
        :func:`structops.solvers.choose_alpha`). ``alpha = 0`` warns
        (:class:`~structops.solvers.IllConditionedWarning`) or raises on a (near-)singular ``K``
        the same way on every route.
    L : pylops.LinearOperator, optional
        The regularisation operator on the grid of ``kernel``, e.g. ``lap.op(theta_lap)`` for a
        Laplacian family ``lap``; None is the identity.
    solver : {"auto", "exact", "lsqr", "cgls", "cg"}
        ``"auto"``: exact when ``kernel.diagonalize(theta)`` exists, is unitary and ``L`` shares
        its basis (then ``preconditioner`` is not used); else ``"lsqr"`` with ``preconditioner``.
        ``"exact"`` insists on the exact route (an error says why it is not available).
    preconditioner : {"auto", None, "strang", "chan", "dct"}
        Split preconditioner of the Krylov solvers (:func:`split_preconditioner`): circulant
        (zero boundary), cosine (mirrored boundary), or None. ``"auto"`` (default): ``"chan"``
        for zero-boundary and periodic convolutions (``"strang"`` for ``cg`` with ``L = I`` and a
        zero boundary on a large enough grid, whose iterations then skip the stencil pass),
        ``"dct"`` for mirrored ones where a cheap
        estimate from the stencils says it lowers the condition number enough, else none (see
        :class:`~structops.solvers.Deblurrer`).
    rtol : float
        Relative tolerance of the Krylov solvers (default 1e-6): ``cg``'s on the normal
        equations, ``lsqr``'s ``atol = btol``, ``cgls``' on the norm of the (preconditioned)
        normal-equation residual relative to its start.
    maxiter : int, optional
        Most Krylov iterations (default 5000).
    full_output : bool
        Return a :class:`TikhonovResult` instead of ``x``.

    Returns
    -------
    numpy.ndarray or TikhonovResult
        ``x`` in the shape matching ``b``: ``in_shape`` for ``out_shape``, the input grid for
        the output grid, flat for flat.

    Raises
    ------
    TypeError
        ``kernel`` not a family, ``L`` not an operator, ``b`` not real.
    ValueError
        ``alpha < 0``; ``alpha = 0`` with a singular per-frequency system (a
        ``numpy.linalg.LinAlgError``, which is a ``ValueError``); ``L`` of another grid;
        ``solver="exact"`` where K and L share no diagonalisation; ``b`` of the wrong shape;
        unknown ``solver``/``preconditioner``.

    Warns
    -----
    ConvergenceWarning
        When a Krylov solver stops at ``maxiter``.

    Notes
    -----
    Exact: :math:`x = V\,\operatorname{blkdiag}\big((B^HB + \alpha C^HC)^{-1}B^H\big)\,U^H b` for
    :math:`K = UBV^H`, :math:`L = WCV^H`, in :math:`O(N\log N)` (FFT, DCT) or
    :math:`O(N\sum_a n_a)` (Kronecker). Iterative: see the module notes; ``residual_norm`` is
    recomputed from ``x``.

    Examples
    --------
    >>> import numpy as np, structops
    >>> from structops.data import gaussian_stencil, phantom
    >>> k = structops.Conv((32, 32), (5, 5))           # zero boundary, diagonalised by Kronecker
    >>> theta = gaussian_stencil(5, 1.0).ravel()
    >>> b = k.apply(theta, phantom(32))
    >>> exact = tikhonov(k, theta, b, alpha=1e-3, full_output=True)
    >>> exact.x.shape, exact.method, exact.iterations
    ((32, 32), 'exact', 0)
    >>> it = tikhonov(k, theta, b, alpha=1e-3, solver="lsqr", preconditioner="chan", rtol=1e-10, full_output=True)
    >>> bool(np.linalg.norm(it.x - exact.x) < 1e-6 * np.linalg.norm(exact.x)), it.method
    (True, 'lsqr+chan')
    """
    if not isinstance(full_output, (bool, np.bool_)):
        raise TypeError(f"`full_output` must be True or False, got {full_output!r}.")
    solver_ = Deblurrer(kernel, theta, L=L, solver=solver, preconditioner=preconditioner, rtol=rtol, maxiter=maxiter)
    return solver_.solve(b, alpha, full_output=full_output)
