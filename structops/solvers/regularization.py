r"""Choosing the Tikhonov weight :math:`\alpha` from the data: GCV, the discrepancy principle, the L-curve.

:func:`choose_alpha` evaluates one criterion on a grid of weights and returns the weight it
picks with the whole curve (:class:`AlphaChoice`), for

.. math::
    x_\alpha = \arg\min_x \|K(\theta)x - b\|^2 + \alpha\|Lx\|^2 .

**Exact route.** When ``kernel.diagonalize(theta)`` is unitary with one channel and ``L`` shares
its basis (``L = I``, or e.g. the periodic Laplacian for a periodic blur, the cosine Laplacian
for a half-sample-mirror blur; a separable zero-boundary blur through its Kronecker SVD with
``L = I``), every criterion is a sum of filter factors over frequencies
(:class:`~structops.solvers._filters.TikhonovSpectrum`): one transform of ``b``, then
:math:`O(N)` per :math:`\alpha`. The returned weight is then the minimiser of the GCV function
(the maximiser of the L-curve's curvature) refined to ``xatol = 1e-6`` in :math:`\log\alpha`
between the neighbours of the best grid point, or the root of the discrepancy equation by
Brent's method.

**Hybrid route** (``L = I`` and no ``alphas`` on a kernel without a shared diagonalisation): one
Golub--Kahan bidiagonalisation of :math:`K` from :math:`b`; at step :math:`k` the discrepancy
equation or the L-curve's curvature is applied to the projected problem
:math:`\min_y\|B_k y - \beta_1 e_1\|^2 + \alpha\|y\|^2` (whose residual equals the full one), and
the iteration stops when :math:`\alpha_k` and :math:`x_k` settle (Chung, Nagy and O'Leary 2008).
One Krylov run chooses :math:`\alpha`. GCV adds one run per Hutchinson probe started at the probe,
whose projected problem gives :math:`z_j^\top K(K^\top K + \alpha I)^{-1}K^\top z_j` for every
:math:`\alpha` (Golub and von Matt 1997): the GCV function of the full problem, with the grid
route's trace estimate, minimised over :math:`\alpha` at each step until the minimiser settles
(``iterations`` counts the steps of all runs). The grid route takes over when it does not settle
within ``maxiter`` steps or the memory cap of the stored bases. (The weighted GCV of the projected
problem that Chung, Nagy and O'Leary propose chose :math:`\alpha` 5.1--31 times the full problem's
GCV choice on 9×9 Gaussian blurs; see ``structops.solvers._hybrid``.)

**Iterative fallback** (any other ``K`` and ``L``): each :math:`x_\alpha` on the grid is a
preconditioned Krylov solve (:func:`structops.solvers.tikhonov`, ``solver="lsqr"``,
``preconditioner="auto"``) and

* ``"discrepancy"``: :math:`\|Kx_\alpha - b\|` on the grid, widened a decade at a time until it
  brackets the target (an error says no :math:`\alpha` exists only when the residual has stopped
  moving at both ends), the root by interpolation of
  :math:`\log\|Kx_\alpha - b\|` in :math:`\log\alpha` between the two grid points around it;
* ``"lcurve"``: the curvature of :math:`(\log\|Kx_\alpha - b\|, \log\|Lx_\alpha\|)` by finite
  differences along the grid; the best grid point;
* ``"gcv"``: the trace :math:`\operatorname{trace}(K(K^\top K + \alpha L^\top L)^{-1}K^\top)` by
  Hutchinson's estimator :math:`\frac1s\sum_j z_j^\top K x_\alpha(z_j)` with ``probes``
  seeded Rademacher vectors :math:`z_j` (one more solve each; Golub and von Matt 1997); the
  best grid point.

It costs ``len(alphas)`` solves (times ``1 + probes`` for GCV): use a short grid.
"""

from __future__ import annotations

from ..kernels._base import ParametricKernel, as_kernel
from ._choice import METHODS, TAU, AlphaChoice
from .deblurrer import Deblurrer

__all__ = ["METHODS", "TAU", "AlphaChoice", "choose_alpha"]


def choose_alpha(
    kernel: ParametricKernel,
    theta,
    b,
    *,
    method: str = "gcv",
    L=None,
    noise: float | None = None,
    tau: float = TAU,
    alphas=None,
    probes: int = 4,
    rtol: float = 1e-6,
    maxiter: int | None = None,
) -> AlphaChoice:
    r"""Choose the Tikhonov weight :math:`\alpha` for ``b`` by GCV, the discrepancy principle or the L-curve.

    Parameters
    ----------
    kernel : ParametricKernel
        The forward model :math:`K(\theta)`.
    theta : array_like, shape (p,)
        Its parameters.
    b : array_like
        The data, shaped as for :func:`structops.solvers.tikhonov` (``out_shape``, flat, or the
        output grid), or a stack ``(m, ...)`` of them: then one weight per image.
    method : {"gcv", "discrepancy", "lcurve"}
        ``"gcv"``: minimise :math:`G(\alpha) = \dfrac{\|Kx_\alpha - b\|^2/m}{(1 - \operatorname{trace}(A_\alpha)/m)^2}`,
        :math:`A_\alpha = K(K^\top K + \alpha L^\top L)^{-1}K^\top` (needs no noise level).
        ``"discrepancy"``: solve :math:`\|Kx_\alpha - b\| = \tau\,\sigma\sqrt m` (Morozov).
        ``"lcurve"``: maximise the curvature of :math:`(\log\|Kx_\alpha - b\|, \log\|Lx_\alpha\|)` (Hansen).
    L : pylops.LinearOperator, optional
        Regularisation operator (None: the identity), as for :func:`~structops.solvers.tikhonov`.
    noise : float, optional
        :math:`\sigma`, the standard deviation of the noise per pixel; needed by ``"discrepancy"``
        (ignored by the other methods).
    tau : float, optional
        The discrepancy principle's safety factor :math:`\tau \ge 1`
        (default :data:`~structops.solvers.regularization.TAU` = 1.01;
        values in :math:`[1, 1.1]` are usual).
    alphas : array_like, optional
        The grid of weights (at least 3, > 0). Default: exact route, 4 per decade over the span
        of :math:`|k_i|^2/|l_i|^2` widened by a decade each side; iterative fallback, 10 weights
        :math:`\|K\|_2^2/\|L\|_2^2 \cdot 10^{-10 \dots 2}` (the discrepancy grid widened until it
        brackets the target).
    probes : int, optional
        Rademacher probes of the trace estimate of GCV off the exact routes (default 4): one more
        Golub--Kahan run each on the hybrid route, one more solve per weight on the grid route.
    rtol, maxiter : optional
        Passed to the Krylov solves of the iterative fallback.

    Returns
    -------
    AlphaChoice
        ``alpha``, ``method``, the grid ``alphas`` and the criterion ``values`` on it, and whether
        the route was ``exact``; for a stack, ``alpha`` has shape ``(m,)`` (one per image).

    Raises
    ------
    TypeError, ValueError
        Unknown ``method``; ``noise`` missing (or not > 0) for ``"discrepancy"``; ``tau < 1``; a
        noise level no :math:`\alpha` matches; ``L`` of another grid; ``b`` of the wrong shape.

    Notes
    -----
    See the module notes for the exact route and the iterative fallback.

    Examples
    --------
    >>> import numpy as np, structops
    >>> from structops.data import gaussian_stencil, phantom
    >>> k = structops.Conv((64, 64), (9, 9), bc="periodic")
    >>> theta = gaussian_stencil(9, 2.0).ravel()
    >>> rng = np.random.default_rng(0)
    >>> b = k.apply(theta, phantom(64)) + 0.01 * rng.standard_normal((64, 64))
    >>> gcv = choose_alpha(k, theta, b)
    >>> gcv.method, gcv.exact, bool(gcv.values.min() >= 0)
    ('gcv', True, True)
    >>> dp = choose_alpha(k, theta, b, method="discrepancy", noise=0.01)
    >>> bool(1e-5 < dp.alpha < 1e-1)
    True
    """
    as_kernel(kernel)
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {METHODS!r}, got {method!r}.")
    solver = Deblurrer(kernel, theta, L=L, solver="auto", preconditioner="auto", rtol=rtol, maxiter=maxiter)
    return solver.choose_alpha(b, method=method, noise=noise, tau=tau, alphas=alphas, probes=probes)
