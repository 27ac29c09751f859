r"""A Tikhonov problem set up once, solved for any data and weight: :class:`Deblurrer`.

.. math::
    x_\alpha(b) = \arg\min_x \|K(\theta)x - b\|^2 + \alpha\|Lx\|^2 = (K^\top K + \alpha L^\top L)^{-1}K^\top b .

Everything that depends on :math:`K` and :math:`L` only -- the diagonalisation of the exact
route (FFT, DCT, the 1-D SVDs of a Kronecker product), or the symbols of the preconditioner model
of the Krylov route -- is computed once in the constructor (the model lazily, on the first
iterative solve); :meth:`Deblurrer.solve` and :meth:`Deblurrer.choose_alpha` then cost one
transform of the data, or one preconditioned Krylov run, per image. Both take one image or a
stack ``(m, ...)`` and one weight or one per image.
:func:`structops.solvers.tikhonov` and :func:`structops.solvers.choose_alpha` are a
:class:`Deblurrer` used once.

On the exact Kronecker route (a one-channel outer-product stencil, any boundary) a 2-D solve is
the factored product :math:`X = V_0\big(F \circ (U_0^\top B\,U_1)\big)V_1^\top` in two
preallocated buffers, with :math:`F = k/(k^2 + \alpha l^2)` the filter on the grid of singular
value products: four ``n × n`` GEMMs and no temporaries of the image's size beyond the two.
"""

from __future__ import annotations

import warnings

import numpy as np

from .._validation import check_finite_fast, check_number, check_positive_int
from ..kernels._base import ParametricKernel, as_kernel
from ..kernels.diagonalized import Diagonalized, KroneckerMultiplier
from ._blocks import SINGULAR_FACTOR, IllConditionedWarning
from ._choice import METHODS, AlphaChoice, default_grid, exact_choice, grid_choice
from ._filters import as_regularizer, regularized_inverse, structure_error
from ._hybrid import HYBRID_METHODS, hybrid_choice
from ._krylov import (
    MAXITER,
    PRECONDITIONERS,
    SOLVERS,
    ConvergenceWarning,
    PreconditionerModel,
    TikhonovResult,
    build_model,
    cosine_model_helps,
    krylov_solve,
    normal_cg,
    normal_operator,
)
from ._routes import Route, route
from .preconditioners import MIRRORS, single_conv
from .spectral import spectral_norm

__all__ = ["Deblurrer", "as_stack"]


# ---------------------------------------------------------------------- data
def as_stack(kernel: ParametricKernel, b, dtype: np.dtype, name: str = "b"):
    """``b`` as rows ``(m, N)`` in ``dtype``, the shape to give ``x``, and whether it was one image.

    One image is ``out_shape``, flat ``(N,)`` or, for one output channel, the output grid; a
    stack is any of these with a leading axis ``m``. The dtype policy is
    :meth:`ParametricKernel.apply`'s: a float array must have ``dtype`` (the dtype of ``theta``;
    nothing is cast silently, float16 is refused); an integer array is cast with a warning,
    because the noise level and the weights are then in its units (0--255 for an 8-bit image).

    Raises
    ------
    TypeError
        A complex, float16 or other-precision float ``b``.
    ValueError
        A shape that is neither one output nor a stack of them; NaN or Inf (the message names the index).
    """
    arr = np.asarray(b)
    if arr.dtype.kind in "iub":
        warnings.warn(
            f"`{name}` has integer dtype {arr.dtype}: it is used as it is, in its own units (0-255 for 8-bit), so "
            "`noise` and `alpha` are in those units too. Scale it first, e.g. b / 255 with noise in [0, 1] units.",
            UserWarning,
            stacklevel=3,
        )
        arr = arr.astype(dtype)
    if arr.dtype != np.dtype(dtype):
        what = "float32 or float64" if arr.dtype not in (np.float32, np.float64) else f"{np.dtype(dtype)}"
        raise TypeError(
            f"`{name}` has dtype {arr.dtype} but the solve runs in {np.dtype(dtype)} (the dtype of `theta`); pass "
            f"a real {what} array, e.g. `{name}.astype(np.{np.dtype(dtype)})`."
        )
    out_shape, in_shape, n = kernel.out_shape, kernel.in_shape, kernel.shape[0]
    grid_out = out_shape[1:] if len(out_shape) > 1 and out_shape[0] == 1 else None
    singles = {out_shape: in_shape, (n,): (kernel.shape[1],)}
    if grid_out is not None:
        singles.setdefault(grid_out, in_shape[1:] if in_shape[0] == 1 else in_shape)
    if arr.shape in singles:
        rows, x_shape, single = arr.reshape(1, n), singles[arr.shape], True
    elif arr.ndim >= 2 and arr.shape[1:] in singles:
        rows, x_shape, single = arr.reshape(arr.shape[0], n), (arr.shape[0], *singles[arr.shape[1:]]), False
    else:
        grids = "" if grid_out is None else f", the output grid {grid_out}"
        raise ValueError(
            f"`{name}` must have the shape of one output of `kernel`: out_shape {out_shape}{grids} or flat ({n},), "
            f"or a stack of them with a leading axis (m, ...); got shape {arr.shape}."
        )
    check_finite_fast(arr, name)
    return np.ascontiguousarray(rows), x_shape, single


def _alphas(alpha, m: int) -> np.ndarray:
    """One weight per image: a scalar for all, or an array of ``m``; each finite and >= 0."""
    if np.ndim(alpha) == 0:
        return np.full(m, check_number(alpha, "alpha", minimum=0.0))
    arr = np.asarray(alpha)
    if arr.dtype.kind not in "iuf" or arr.shape != (m,):
        raise ValueError(f"`alpha` must be a number or one per image, shape ({m},), got {arr!r}.")
    return np.array([check_number(float(a), "alpha", minimum=0.0) for a in arr])


def _operator_norm(op, steps: int = 30) -> float:
    """``‖op‖₂`` by power iteration on ``opᵀ op`` (a lower estimate, enough to place a grid of weights)."""
    v = np.random.default_rng(0).standard_normal(op.shape[1])
    value = 0.0
    for _ in range(steps):
        v /= np.linalg.norm(v)
        w = op.H @ (op @ v)
        value = float(np.linalg.norm(w))
        v = w
    return float(np.sqrt(value))


def _kron_filter(D: KroneckerMultiplier, l2: np.ndarray | None, alpha: float, dtype) -> np.ndarray:
    r"""The filter :math:`F = k/(k^2 + \alpha l^2)` on the grid, in one buffer; raises when the system is singular.

    :math:`k = s_0 \otimes s_1` is formed from the 1-D singular values a band of rows at a time, in
    float64, and the filter written into one buffer of ``dtype`` (the solve's): the operator's own
    grid of singular values (``D.blocks``) is never built.
    """
    sv = D.factor_singular_values
    sv = None if sv is None else tuple(np.asarray(v, dtype=np.float64) for v in sv)  # float32 SVDs: filter in float64
    n0, n1 = D.grid
    F = np.empty((n0, n1), dtype=dtype)
    low, top = np.inf, 0.0
    step = max(1, (1 << 16) // max(n1, 1))
    for r in range(0, n0, step):
        k = D.blocks[r : r + step, :, 0, 0] if sv is None else np.multiply.outer(sv[0][r : r + step], sv[1])
        den = k * k
        den += alpha if l2 is None else alpha * l2[r : r + step]
        low, top = min(low, float(den.min())), max(top, float(den.max()))
        np.divide(k, den, out=F[r : r + step], casting="same_kind")
    limit = 1.0 / (SINGULAR_FACTOR * float(np.finfo(np.float64).eps))
    if not (low > 0 and top / low <= limit):
        raise np.linalg.LinAlgError(
            f"`alpha` = {alpha!r}: KᵀK + α·LᵀL is singular or near-singular (condition number "
            f"{np.inf if low <= 0 else top / low:.3e} > {limit:.3e}); pass `alpha` > 0, or change `L` if K and L "
            "have a common null space."
        )
    return F


def _kron_solve(D: KroneckerMultiplier, F: np.ndarray, rows: np.ndarray, out: np.ndarray) -> None:
    r"""``out[i] =`` :math:`V_0 (F \circ (U_0^\top B_i U_1)) V_1^\top` (2-D ``K = USVᵀ``; one buffer)."""
    (U0, U1), (V0, V1) = D.left, D.right
    n0, n1 = D.grid
    dtype = np.result_type(rows.dtype, U0.dtype)
    tmp = np.empty((n0, n1), dtype=dtype)
    C = out[0].reshape(n0, n1) if out.dtype == dtype else np.empty_like(tmp)
    for i, row in enumerate(rows):
        if out.dtype == dtype:
            C = out[i].reshape(n0, n1)
        np.matmul(U0.T, row.reshape(n0, n1), out=tmp)
        np.matmul(tmp, U1, out=C)
        C *= F
        np.matmul(V0, C, out=tmp)
        np.matmul(tmp, V1.T, out=C)  # C's content is in tmp now: reuse it for the result
        if out.dtype != dtype:
            out[i] = C.reshape(-1)


# ------------------------------------------------------------------- solver
class Deblurrer:
    r"""Tikhonov solves :math:`(K^\top K + \alpha L^\top L)^{-1}K^\top b` with ``K`` and ``L`` prepared once.

    Parameters
    ----------
    kernel : ParametricKernel
        The forward model :math:`K(\theta)`.
    theta : array_like, shape (p,)
        Its parameters (float32 or float64: every solve runs in their dtype).
    L : pylops.LinearOperator, optional
        The regularisation operator (``family.op(theta_L)``); None is the identity.
    solver : {"auto", "exact", "lsqr", "cgls", "cg"}
        As for :func:`structops.solvers.tikhonov`.
    preconditioner : {"auto", None, "strang", "chan", "dct"}
        The Krylov route's split preconditioner: T. Chan's or Strang's circulant (zero
        boundary), the cosine model of the stencil's doubly symmetric part (mirrored boundary,
        Ng, Chan and Tang 1999), or none. ``"auto"``: ``"chan"`` for a zero-boundary or periodic
        convolution (``"strang"`` with ``solver="cg"``, :math:`L = I` and a zero boundary on a
        grid large enough: as many iterations, and each costs one FFT pair and edge strips instead
        of the stencil pair, ``structops.solvers._krylov.edge_cg``); ``"dct"`` for a mirrored one when the estimate of
        ``cosine_model_helps`` says the model lowers the condition
        number enough at that :math:`\alpha`; else none.
    rtol, maxiter : optional
        The Krylov solvers' tolerance (default 1e-6) and most iterations (default 5000).

    Attributes
    ----------
    exact : bool
        Whether solves take the exact route (a shared unitary diagonalisation of K and L).
    diagonal : Diagonalized or None
        ``kernel.diagonalize(theta)`` on the exact route.

    Raises
    ------
    ValueError
        ``solver="exact"`` where ``K`` and ``L`` share no diagonalisation (the message names the
        preconditioner that works for this kernel); unknown ``solver`` or ``preconditioner``.

    Examples
    --------
    >>> import numpy as np, structops
    >>> from structops.data import gaussian_stencil, phantom
    >>> k = structops.Conv((32, 32), (5, 5), bc="periodic")
    >>> theta = gaussian_stencil(5, 1.0).ravel()
    >>> B = np.stack([k.apply(theta, phantom(32)), k.apply(theta, phantom(32, ring=False))])
    >>> d = Deblurrer(k, theta)
    >>> X = d.solve(B, alpha=[1e-3, 1e-2])                # a stack, one weight per image
    >>> X.shape, bool(np.allclose(X[1], d.solve(B[1], alpha=1e-2)))
    ((2, 32, 32), True)
    """

    def __init__(
        self,
        kernel: ParametricKernel,
        theta,
        *,
        L=None,
        solver: str = "auto",
        preconditioner: str | None = "auto",
        rtol: float = 1e-6,
        maxiter: int | None = None,
    ) -> None:
        as_kernel(kernel)
        if solver not in SOLVERS:
            raise ValueError(f"`solver` must be one of {SOLVERS!r}, got {solver!r}.")
        if preconditioner is not None and preconditioner not in PRECONDITIONERS:
            raise ValueError(f"`preconditioner` must be None or one of {PRECONDITIONERS!r}, got {preconditioner!r}.")
        self.rtol = check_number(rtol, "rtol", minimum=0.0)
        if not self.rtol < 1:
            raise ValueError(f"`rtol` must be in [0, 1), got {rtol!r}.")
        self.maxiter = check_positive_int(MAXITER if maxiter is None else maxiter, "maxiter")
        self.kernel, self.theta = kernel, kernel.validate_theta(theta)
        self.K = kernel.op(self.theta)
        # the structure comes from the route selection, as for every solver: exact (a shared transform) or iterative
        self._route: Route | None = route(kernel, self.theta, "tikhonov", L=L) if solver in ("auto", "exact") else None
        reg = None if self._route is None else self._route.regularizer
        self.reg = as_regularizer(L, kernel) if reg is None else reg
        self.exact = self._route is not None and self._route.exact
        if solver == "exact" and not self.exact:
            D = None if self._route is None else self._route.diagonal
            err = structure_error(kernel, D, self.reg, "tikhonov(solver='exact')")
            raise ValueError(str(err).replace("preconditioner='chan'", f"preconditioner={self._advice()!r}"))
        self.diagonal: Diagonalized | None = self._route.diagonal if self.exact and self._route else None
        self.solver = "lsqr" if solver in ("auto", "exact") else solver
        self.preconditioner = preconditioner
        self._models: dict[str, PreconditionerModel] = {}

    def __repr__(self) -> str:
        route = "exact" if self.exact else f"{self.solver}, preconditioner={self.preconditioner!r}"
        return f"Deblurrer({self.kernel!r}, L={self.reg.describe()}, {route})"

    # ------------------------------------------------------------ routes
    def _advice(self) -> str | None:
        """The preconditioner that works for this kernel (named in errors)."""
        if single_conv(self.kernel, MIRRORS) is not None:
            return "dct"
        if single_conv(self.kernel, ("zero", "periodic")) is not None:
            return "chan"
        return None

    def _model(self, kind: str) -> PreconditionerModel:
        if kind not in self._models:
            self._models[kind] = build_model(self.kernel, self.theta, self.reg, kind)
        return self._models[kind]

    def _kind(self, alpha: float) -> str | None:
        """The preconditioner used at ``alpha`` (``"auto"`` resolved)."""
        if self.preconditioner != "auto":
            return self.preconditioner
        auto = self._advice()
        if auto == "dct" and not cosine_model_helps(self.kernel, self.theta, self.reg, alpha):
            return None
        if auto is not None:
            try:
                self._model(auto)
            except ValueError:  # L without a model of this kind
                return None
        if auto == "chan" and self.solver == "cg" and self._model("strang").band is not None:
            return "strang"  # as many iterations, and cg's A z comes from its FFT pair (edge_cg)
        return auto

    def _check_unregularised(self, kind: str | None) -> None:
        """``alpha = 0``: raise on a singular ``K`` and warn on an ill-conditioned one, the same way on every route."""
        if self.exact and self.diagonal is not None:
            sv, what = self.diagonal.block_singular_values(), "K(θ)"
        elif kind is not None:
            sv, what = np.sqrt(self._model(kind).k2), f"K(θ) (its {kind} model)"
        else:
            sv, what = None, "K(θ) (solved iteratively; its condition number is not known here)"
        dtype = self.theta.dtype
        condition = np.inf if sv is None or float(sv.min()) == 0 else float(sv.max() / sv.min())
        advice = "pass `alpha` > 0 (structops.solvers.choose_alpha picks one from the data)"
        if sv is not None and condition > 1.0 / (SINGULAR_FACTOR * float(np.finfo(dtype).eps)):
            raise np.linalg.LinAlgError(
                f"`alpha` = 0.0: {what} is singular or near-singular (condition number {condition:.3e}); {advice}."
            )
        if condition > float(np.finfo(dtype).eps) ** (-1 / 3):
            warnings.warn(
                f"`alpha` = 0: {what} is ill-conditioned (condition number {condition:.3e} > eps^(-1/3) in {dtype}), "
                f"so the unregularised solution magnifies the noise in b by up to that factor; {advice}.",
                IllConditionedWarning,
                stacklevel=4,
            )

    def _exact_rows(self, rows: np.ndarray, alpha: float, out: np.ndarray) -> None:
        D = self.diagonal
        assert D is not None
        if isinstance(D, KroneckerMultiplier) and len(D.grid) == 2:
            C = self.reg.blocks()
            l2 = None if C is None else np.abs(C[..., 0, 0]) ** 2
            _kron_solve(D, _kron_filter(D, l2, alpha, out.dtype), rows, out)
            return
        assert self._route is not None
        out[:] = np.asarray(self._route.tikhonov(alpha) @ rows.T).T

    def _solve_rows(self, rows: np.ndarray, alphas: np.ndarray):
        """Solve every row; ``(X, iterations, converged, method)``."""
        X = np.empty((rows.shape[0], self.K.shape[1]), dtype=self.theta.dtype)
        its = np.zeros(rows.shape[0], dtype=np.int64)
        ok = np.ones(rows.shape[0], dtype=bool)
        kinds = {float(a): (None if self.exact else self._kind(float(a))) for a in np.unique(alphas)}
        for a, kind in kinds.items():
            if a == 0:
                self._check_unregularised(kind)
            idx = np.flatnonzero(alphas == a)
            if self.exact and idx.size == rows.shape[0]:
                self._exact_rows(rows, a, X)
                continue
            if self.exact:
                part = np.empty((idx.size, X.shape[1]), dtype=X.dtype)
                self._exact_rows(rows[idx], a, part)
                X[idx] = part
                continue
            power = 1.0 if self.solver == "cg" else 0.5
            P = None if kind is None else self._model(kind).applier(a, power, self.theta.dtype)
            for i in idx:
                X[i], its[i], ok[i] = krylov_solve(
                    self.K, self.reg, a, rows[i], self.solver, P, self.rtol, self.maxiter
                )
        named = {self.solver if k is None else f"{self.solver}+{k}" for k in kinds.values()}
        method = "exact" if self.exact else "/".join(sorted(named))
        if not ok.all():
            warnings.warn(
                f"tikhonov: {method} stopped at maxiter={self.maxiter} before reaching rtol={self.rtol:g}; raise "
                "`maxiter`, or use a preconditioner.",
                ConvergenceWarning,
                stacklevel=3,
            )
        return X, its, bool(ok.all()), method

    # -------------------------------------------------------------- public
    def solve(self, b, alpha, *, full_output: bool = False) -> np.ndarray | TikhonovResult:
        r"""The Tikhonov solution for one image or a stack.

        Parameters
        ----------
        b : array_like
            One output of ``kernel`` (``out_shape``, flat, or the output grid) or a stack ``(m, ...)`` of them.
        alpha : float or array_like, shape (m,)
            :math:`\alpha \ge 0`, one for all images or one per image.
        full_output : bool
            Return a :class:`~structops.solvers.TikhonovResult` (per-image fields as arrays for a stack).

        Returns
        -------
        numpy.ndarray or TikhonovResult
            ``x`` shaped like ``b`` (``in_shape``, the input grid or flat; leading ``m`` for a stack).
        """
        if not isinstance(full_output, (bool, np.bool_)):
            raise TypeError(f"`full_output` must be True or False, got {full_output!r}.")
        rows, x_shape, single = as_stack(self.kernel, b, self.theta.dtype)
        alphas = _alphas(alpha, rows.shape[0])
        X, its, ok, method = self._solve_rows(rows, alphas)
        x = X.reshape(x_shape)
        if not full_output:
            return x
        res = np.linalg.norm(np.asarray(self.K @ X.T).T - rows, axis=1)
        if single:
            return TikhonovResult(x, int(its[0]), float(res[0]), method, float(alphas[0]), ok)
        return TikhonovResult(x, its, res, method, alphas, ok)

    def normal_solve(self, g, alpha: float) -> np.ndarray:
        r""":math:`\lambda = (K^\top K + \alpha L^\top L)^{-1} g` on this solver's route.

        The adjoint solve of implicit differentiation (:func:`structops.solvers.implicit.tikhonov_vjp`): exact in
        the shared basis, or ``cg`` with the preconditioner model of the Krylov route.

        Parameters
        ----------
        g : array_like, shape ``(N_in,)``
            The right-hand side (a loss gradient with respect to ``x``).
        alpha : float
            :math:`\alpha \ge 0`.
        """
        g = np.asarray(g, dtype=self.theta.dtype).ravel()
        alpha = check_number(alpha, "alpha", minimum=0.0)
        D = self.diagonal
        if D is not None:
            B, C = D.blocks, self.reg.blocks()
            if B.shape[-2:] != (1, 1):
                inv = regularized_inverse(self.kernel, self.theta, alpha=alpha, normal=True, L=self.reg.op)
                return np.asarray(inv @ g)
            G = np.abs(B[..., 0, 0]) ** 2 + alpha * (1.0 if C is None else np.abs(C[..., 0, 0]) ** 2)
            return np.asarray(D.with_blocks((1.0 / G)[..., None, None].astype(B.dtype), normal=True) @ g)
        kind = self._kind(alpha)
        M = None if kind is None else self._model(kind).applier(alpha, 1.0, self.theta.dtype)
        lam, _, ok = normal_cg(normal_operator(self.K, self.reg, alpha), g, M, self.rtol, self.maxiter)
        if not ok:
            warnings.warn(
                f"normal_solve: cg stopped at maxiter={self.maxiter} before rtol={self.rtol:g}.",
                ConvergenceWarning,
                stacklevel=2,
            )
        return np.asarray(lam, dtype=self.theta.dtype)

    def _grid_scale(self) -> float:
        norm = spectral_norm(self.kernel, self.theta)
        scale = (norm if isinstance(norm, float) else norm.value) ** 2
        return scale / (1.0 if self.reg.op is None else _operator_norm(self.reg.op) ** 2)

    def _choose_one(self, row: np.ndarray, method: str, target, alphas, probes: int) -> AlphaChoice:
        D = self.diagonal
        if D is not None and D.blocks.shape[-2:] == (1, 1):
            L_blocks = self.reg.blocks()
            if L_blocks is None or L_blocks.shape[-2:] == (1, 1):
                assert self._route is not None
                return exact_choice(self._route.filter_spectrum(row.astype(np.float64)), method, alphas, target)
        if method in HYBRID_METHODS and self.reg.op is None and alphas is None:  # one Golub-Kahan run (_hybrid)
            h = hybrid_choice(self.K, row, method, target=target, maxiter=min(self.maxiter, 1000), probes=probes)
            if h.reachable and (h.converged or method == "discrepancy"):
                return AlphaChoice(h.alpha, method, h.grid, h.values, False, target, h.iterations)

        def solve(rhs: np.ndarray, a: float) -> np.ndarray:
            return self._solve_rows(rhs[None], np.array([a]))[0][0]

        grid = default_grid(alphas, self._grid_scale() if alphas is None else 1.0)
        return grid_choice(solve, self.K, self.reg.op, row, method, grid, target, probes)

    def choose_alpha(
        self, b, *, method: str = "gcv", noise: float | None = None, tau: float = 1.01, alphas=None, probes: int = 4
    ) -> AlphaChoice:
        r"""Choose :math:`\alpha` for each image of ``b``; see :func:`structops.solvers.choose_alpha`.

        Returns
        -------
        AlphaChoice
            For a stack, ``alpha`` of shape ``(m,)`` (one per image) and per-image curves.
        """
        if method not in METHODS:
            raise ValueError(f"`method` must be one of {METHODS!r}, got {method!r}.")
        tau = check_number(tau, "tau", minimum=1.0)
        probes = check_positive_int(probes, "probes")
        rows, _, single = as_stack(self.kernel, b, self.theta.dtype)
        target = None
        if method == "discrepancy":
            if noise is None:
                raise ValueError(
                    "`noise` (the noise's standard deviation per pixel) is needed by method='discrepancy'."
                )
            noise = check_number(noise, "noise", minimum=0.0)
            if noise == 0:
                raise ValueError("`noise` must be > 0 for method='discrepancy', got 0.")
            target = tau * noise * float(np.sqrt(rows.shape[1]))
        choices = [self._choose_one(row, method, target, alphas, probes) for row in rows]
        if single:
            return choices[0]
        width = max(c.alphas.size for c in choices)

        def pad(a: np.ndarray) -> np.ndarray:
            return np.pad(a.astype(np.float64), (0, width - a.size), constant_values=np.nan)

        return AlphaChoice(
            np.array([c.alpha for c in choices]),
            method,
            np.stack([pad(c.alphas) for c in choices]),
            np.stack([pad(c.values) for c in choices]),
            all(c.exact for c in choices),
            target,
            np.array([c.iterations for c in choices]),
        )
