r"""Checks users run on their own operators and kernel families.

* :func:`adjoint_test` -- the dot test :math:`\langle Au, v\rangle = \langle u, A^H v\rangle`;
* :func:`taylor_test` -- the derivative check of the lecture notes:
  :math:`E_0(h) = \|f(\theta+hv) - f(\theta)\| = O(h)` and
  :math:`E_1(h) = \|f(\theta+hv) - f(\theta) - hJv\| = O(h^2)`;
* :func:`check_kernel` -- every check of the kernel contract on one family.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from ._validation import as_float_array, check_finite
from .kernels._base import ParametricKernel, as_kernel

__all__ = [
    "QUADRATIC_ORDER",
    "TAYLOR_REGIMES",
    "AdjointTestError",
    "AdjointResult",
    "TaylorResult",
    "CheckResult",
    "KernelReport",
    "default_rtol",
    "adjoint_test",
    "taylor_test",
    "check_kernel",
]


def default_rtol(dtype, size: int = 1) -> float:
    r"""Relative tolerance for ``size`` terms in ``dtype``: :math:`100\,\varepsilon \log_2(2 + size)`.

    Summation (pairwise or blocked, as in numpy, BLAS and the FFT) loses about
    :math:`\varepsilon \log_2 n` relative accuracy; the factor 100 covers the operator's
    own rounding. A wrong adjoint or Jacobian is off by :math:`O(1)`, far above it.

    Parameters
    ----------
    dtype : numpy dtype
        Floating or complex dtype (its real precision is used); integer dtypes count as float64.
    size : int, optional
        Number of terms summed (e.g. the larger dimension of an operator).

    Returns
    -------
    float

    Examples
    --------
    >>> default_rtol(np.float64) < 1e-13 < default_rtol(np.float32) < 1e-4
    True
    >>> default_rtol(np.complex64) == default_rtol(np.float32)
    True
    """
    dt = np.dtype(dtype)
    eps = float(np.finfo(dt if dt.kind in "fc" else np.float64).eps)
    return 100.0 * eps * float(np.log2(2.0 + max(int(size), 0)))


class AdjointTestError(AssertionError):
    """Raised by :func:`adjoint_test` when the dot test fails."""


@dataclass
class AdjointResult:
    """Outcome of a dot test: both inner products, their relative gap and the tolerance."""

    lhs: float | complex
    rhs: float | complex
    error: float
    rtol: float

    @property
    def passed(self) -> bool:
        """Whether the relative gap is within the tolerance."""
        return bool(self.error <= self.rtol)


def _test_dtype(op) -> np.dtype:
    """The dtype of the random vectors of a dot test: the operator's, float64 for integers."""
    dt = getattr(op, "dtype", None)
    dt = np.dtype(np.float64 if dt is None else dt)
    return dt if dt.kind in "fc" else np.dtype(np.float64)


def _random(rng: np.random.Generator, n: int, dtype: np.dtype) -> np.ndarray:
    if dtype.kind == "c":
        return (rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(dtype)
    return rng.standard_normal(n).astype(dtype)


def adjoint_test(
    op,
    *,
    rtol: float | None = None,
    rng: np.random.Generator | int | None = None,
    raise_on_failure: bool = True,
) -> AdjointResult:
    r"""Dot test of a linear operator: :math:`\langle A u, v\rangle = \langle u, A^H v\rangle`.

    Parameters
    ----------
    op : LinearOperator
        Anything with ``shape``, ``dtype``, ``matvec`` and ``rmatvec`` (pylops, scipy).
    rtol : float, optional
        Tolerance on the gap relative to the Cauchy--Schwarz scale
        :math:`\|Au\|\|v\| + \|u\|\|A^H v\|`; default :func:`default_rtol` of the
        operator's dtype and size.
    rng : numpy.random.Generator or int, optional
        Source of the random vectors ``u`` and ``v`` (drawn in the operator's dtype; complex
        operators get complex vectors).
    raise_on_failure : bool, optional
        Raise :class:`AdjointTestError` (with both numbers) when the test fails.

    Returns
    -------
    AdjointResult
        ``lhs`` :math:`= v^H (A u)`, ``rhs`` :math:`= (A^H v)^H u`, the relative gap ``error``
        and the tolerance ``rtol``.

    Raises
    ------
    AdjointTestError
        If the gap exceeds ``rtol`` and ``raise_on_failure`` is True.

    Examples
    --------
    >>> import pylops
    >>> adjoint_test(pylops.MatrixMult(np.arange(6.0).reshape(2, 3)), rng=0).passed
    True
    """
    rng = np.random.default_rng(rng)
    if isinstance(op, np.ndarray) or sp.issparse(op):  # a matrix: test it as the operator it is
        op = spla.aslinearoperator(op)
    m, n = op.shape
    dtype = _test_dtype(op)
    u = _random(rng, n, dtype)
    v = _random(rng, m, dtype)
    wide = np.complex128 if dtype.kind == "c" else np.float64
    au = np.asarray(op.matvec(u)).astype(wide, copy=False).ravel()
    ahv = np.asarray(op.rmatvec(v)).astype(wide, copy=False).ravel()
    dots = np.vdot(v.astype(wide), au), np.vdot(ahv, u.astype(wide))
    lhs: float | complex
    rhs: float | complex
    lhs, rhs = (complex(dots[0]), complex(dots[1])) if dtype.kind == "c" else (float(dots[0].real), float(dots[1].real))
    scale = float(np.linalg.norm(au) * np.linalg.norm(v) + np.linalg.norm(u) * np.linalg.norm(ahv))
    error = abs(lhs - rhs) / scale if scale > 0 else abs(lhs - rhs)
    tol = default_rtol(dtype, max(m, n)) if rtol is None else float(rtol)
    result = AdjointResult(lhs, rhs, float(error), tol)
    if raise_on_failure and not result.passed:
        raise AdjointTestError(
            f"adjoint test failed for {getattr(op, 'name', None) or type(op).__name__} "
            f"of shape {op.shape}: <A u, v> = {lhs!r} but <u, A^H v> = {rhs!r} "
            f"(relative gap {error:.3e} > rtol {tol:.3e})."
        )
    return result


@dataclass
class TaylorResult:
    r"""Table and verdict of a Taylor (derivative) test.

    Attributes
    ----------
    h, E0, E1 : numpy.ndarray
        Step sizes and the two remainders at each step.
    order0, order1 : numpy.ndarray
        Observed orders :math:`\log(E(h_k)/E(h_{k+1})) / \log(h_k/h_{k+1})` between steps.
    floor : numpy.ndarray
        Round-off level at each step; remainders below it carry no information.
    regime : str
        ``"quadratic"`` (E1 falls as O(h²)), ``"roundoff"`` (E1 sits at round-off: ``f``
        is linear in θ along ``v``) or ``"failed"``.
    passed : bool
        Whether the regime is ``"quadratic"`` or ``"roundoff"``.
    message : str
        How the verdict was reached.
    """

    h: np.ndarray
    E0: np.ndarray
    E1: np.ndarray
    order0: np.ndarray
    order1: np.ndarray
    floor: np.ndarray
    regime: str
    passed: bool
    message: str = ""

    def __str__(self) -> str:
        lines = [f"{'h':>10} {'E0':>11} {'E1':>11} {'order0':>7} {'order1':>7} {'floor':>10}"]
        for k, h in enumerate(self.h):
            o0 = f"{self.order0[k - 1]:7.2f}" if k else " " * 7
            o1 = f"{self.order1[k - 1]:7.2f}" if k else " " * 7
            lines.append(f"{h:10.3e} {self.E0[k]:11.3e} {self.E1[k]:11.3e} {o0} {o1} {self.floor[k]:10.2e}")
        lines.append(f"regime: {self.regime}; passed: {self.passed}. {self.message}")
        return "\n".join(lines)


#: Observed order of E1 (median over the smallest informative steps) needed for "quadratic".
QUADRATIC_ORDER = 1.75
#: Number of the smallest informative step pairs the verdict on E1 looks at.
TAIL_PAIRS = 3


def taylor_test(
    f: Callable[[np.ndarray], np.ndarray],
    jvp,
    theta,
    v=None,
    *,
    h0: float = 1.0,
    nsteps: int = 10,
    factor: float = 0.5,
    rng: np.random.Generator | int | None = None,
    rtol_roundoff: float | None = None,
) -> TaylorResult:
    r"""Derivative check of the lecture notes (and of their MATLAB ``checkDerivative``).

    With a direction :math:`v` and steps :math:`h_k = h_0\,\text{factor}^k`,

    .. math::
        E_0(h) = \|f(\theta + hv) - f(\theta)\| = O(h), \qquad
        E_1(h) = \|f(\theta + hv) - f(\theta) - h\,Jv\| = O(h^2).

    Parameters
    ----------
    f : callable
        ``theta -> array``, the function to check.
    jvp : callable or LinearOperator
        The claimed derivative at ``theta``: ``jvp(v)`` (or ``jvp.matvec(v)``) returns :math:`Jv`.
    theta : array_like
        Point of expansion (real; float32 stays float32).
    v : array_like, optional
        Direction, same size as ``theta``; default a random vector of the norm of ``theta``
        (unit norm when ``theta`` is zero).
    h0, nsteps, factor : optional
        First step (``> 0``), number of steps (``>= 2``) and the ratio between consecutive
        steps (in ``(0, 1)``).
    rng : numpy.random.Generator or int, optional
        Source of the random direction.
    rtol_roundoff : float, optional
        Round-off level relative to :math:`\|f(\theta)\| + \|f(\theta + hv)\| + h\|Jv\|`;
        default ``0.1 * default_rtol(dtype, f.size)``, i.e. :math:`10\,\varepsilon \log_2(2 + size)`:
        an order of magnitude above the round-off measured on the built-in families, low
        enough that a derivative wrong by 1% fails in float32 as well as in float64.

    Returns
    -------
    TaylorResult
        The table, the observed orders and the verdict.

    Raises
    ------
    TypeError
        If ``theta`` or ``v`` is not real.
    ValueError
        If ``theta`` or ``v`` holds NaN/Inf, ``v`` is zero or does not match ``theta``, or ``h0``,
        ``nsteps`` or ``factor`` is out of range.

    Notes
    -----
    A step pair is *informative* when :math:`E_1` is above the round-off floor at both steps.
    The verdict is ``"quadratic"`` when the median observed order of :math:`E_1` over the
    (up to ``TAIL_PAIRS``) *smallest* informative pairs is at least ``QUADRATIC_ORDER``: the
    Taylor expansion is an asymptotic statement, and a derivative wrong by a small relative
    amount :math:`\delta` only shows at :math:`h \lesssim \delta`, where :math:`E_1 \approx
    \delta h \|Jv\|` falls as O(h). With fewer than two informative pairs and :math:`E_1` at
    the floor at the smallest step the verdict is ``"roundoff"`` (``f`` is linear in θ along
    ``v``). :math:`E_0` must also fall at least linearly (median order >= 0.8).

    Examples
    --------
    >>> t0 = np.array([0.3, -1.2])
    >>> taylor_test(np.sin, lambda v: np.cos(t0) * v, t0, rng=0).regime
    'quadratic'
    >>> taylor_test(lambda t: 3 * t, lambda v: 3 * v, t0, rng=0).regime
    'roundoff'
    >>> taylor_test(np.sin, lambda v: 1.01 * np.cos(t0) * v, t0, rng=0).passed
    False
    """
    theta = as_float_array(theta, "theta")
    check_finite(theta, "theta")
    dtype = theta.dtype
    if not (np.isfinite(h0) and h0 > 0):
        raise ValueError(f"`h0` must be a positive step, got {h0!r}.")
    if int(nsteps) != nsteps or nsteps < 2:
        raise ValueError(f"`nsteps` must be an integer >= 2, got {nsteps!r}.")
    if not 0 < factor < 1:
        raise ValueError(f"`factor` must lie in (0, 1), got {factor!r}.")
    nsteps = int(nsteps)
    rng = np.random.default_rng(rng)
    if v is None:
        v = rng.standard_normal(theta.shape)
        v *= (np.linalg.norm(theta) or 1.0) / (np.linalg.norm(v) or 1.0)
    v = np.asarray(v)
    if v.dtype.kind == "c":
        raise TypeError(f"`v` must be real, got dtype {v.dtype}.")
    if v.size != theta.size:
        raise ValueError(f"`v` must have the size of theta ({theta.size}), got shape {v.shape}.")
    check_finite(as_float_array(v, "v"), "v")
    if not np.any(v):
        raise ValueError("`v` is zero: every Jacobian passes a Taylor test along it; pass a nonzero direction.")
    v = v.reshape(theta.shape).astype(dtype)
    apply_j = jvp.matvec if hasattr(jvp, "matvec") else jvp
    f0 = np.asarray(f(theta), dtype=np.float64).ravel()
    jv = np.asarray(apply_j(v), dtype=np.float64).ravel()
    rtol = 0.1 * default_rtol(dtype, f0.size) if rtol_roundoff is None else float(rtol_roundoff)
    hs = h0 * factor ** np.arange(nsteps)
    E0, E1, floor = np.empty(nsteps), np.empty(nsteps), np.empty(nsteps)
    with np.errstate(over="ignore", invalid="ignore"):
        for k, h in enumerate(hs):
            fk = np.asarray(f((theta + dtype.type(h) * v).astype(dtype)), dtype=np.float64).ravel()
            d = fk - f0
            E0[k] = np.linalg.norm(d)
            E1[k] = np.linalg.norm(d - h * jv)
            floor[k] = rtol * (np.linalg.norm(f0) + np.linalg.norm(fk) + h * np.linalg.norm(jv))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        step = np.log(1.0 / factor)
        order0 = np.log(E0[:-1] / E0[1:]) / step
        order1 = np.log(E1[:-1] / E1[1:]) / step
    finite = np.isfinite(E0) & np.isfinite(E1) & np.isfinite(floor)
    usable = finite[:-1] & finite[1:]
    informative0 = usable & (E0[:-1] > floor[:-1]) & (E0[1:] > floor[1:])
    informative1 = usable & (E1[:-1] > floor[:-1]) & (E1[1:] > floor[1:])
    pairs = np.flatnonzero(informative1)
    if not (np.isfinite(f0).all() and np.isfinite(jv).all()):
        regime, message = "failed", "f(theta) or J v is not finite."
    elif pairs.size >= 2:
        tail = order1[pairs[-TAIL_PAIRS:]]
        med = float(np.median(tail))
        regime = "quadratic" if med >= QUADRATIC_ORDER else "failed"
        message = (
            f"median order of E1 over the {tail.size} smallest steps above round-off: {med:.2f} "
            f"(want >= {QUADRATIC_ORDER})."
        )
    elif finite[-1] and E1[-1] <= floor[-1]:
        regime, message = "roundoff", "E1 at round-off: f is linear in theta along v."
    else:
        regime, message = "failed", "E1 neither falls as O(h^2) nor sits at round-off."
    if informative0.any():
        med0 = float(np.median(order0[informative0]))
        if med0 < 0.8:
            regime = "failed"
            message += f" E0 does not fall as O(h) (median order {med0:.2f})."
    return TaylorResult(hs, E0, E1, order0, order1, floor, regime, regime != "failed", message)


#: Notes that mark the rows of Taylor tests in a :class:`KernelReport` (their regime).
TAYLOR_REGIMES = ("quadratic", "roundoff", "failed")


@dataclass
class CheckResult:
    """One row of a :class:`KernelReport`: a check, its error, its tolerance and the verdict.

    For Taylor rows ``error`` is the smallest remainder :math:`E_1`, ``tol`` the round-off
    floor at that step and ``note`` the regime.
    """

    check: str
    error: float
    tol: float
    passed: bool
    note: str = ""

    @property
    def is_taylor(self) -> bool:
        """Whether this row is a Taylor test (its error is not measured against ``tol``)."""
        return self.check.startswith("taylor") and self.note in TAYLOR_REGIMES

    @property
    def ratio(self) -> float:
        """``error / tol`` (0 for an exact zero error, inf for a nonzero error at zero tolerance)."""
        if self.tol > 0:
            return self.error / self.tol
        return 0.0 if self.error == 0 else float("inf")


@dataclass
class KernelReport:
    """Everything :func:`check_kernel` measured on one family at one dtype."""

    kernel: str
    dtype: str
    results: list[CheckResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """Whether every check passed."""
        return all(r.passed for r in self.results)

    @property
    def failures(self) -> list[CheckResult]:
        """The checks that failed."""
        return [r for r in self.results if not r.passed]

    def worst(self) -> CheckResult | None:
        """The first failed check, else the non-Taylor check with the largest ``error / tol``."""
        if self.failures:
            return self.failures[0]
        rows = [r for r in self.results if not r.is_taylor and r.tol > 0] or self.results
        return max(rows, key=lambda r: r.ratio) if rows else None

    def add(self, check: str, error: float, tol: float, note: str = "", passed: bool | None = None) -> None:
        """Record one check (passes when ``error <= tol`` unless ``passed`` is given)."""
        ok = bool(error <= tol) if passed is None else bool(passed)
        self.results.append(CheckResult(check, float(error), float(tol), ok, note))

    def __str__(self) -> str:
        lines = [f"{self.kernel} [{self.dtype}]"]
        for r in self.results:
            status = "ok" if r.passed else "FAIL"
            lines.append(f"  {r.check:<30} {r.error:10.2e} (tol {r.tol:8.1e}) {status:<4} {r.note}".rstrip())
        return "\n".join(lines)


def _relerr(a, b) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return float("inf")
    scale = max(np.linalg.norm(b), np.linalg.norm(a))
    return float(np.linalg.norm(a - b) / scale) if scale > 0 else float(np.linalg.norm(a - b))


#: ``check_kernel`` builds dense references only below this many entries.
_DENSE_CHECK_LIMIT = 4_000_000
#: ``check_kernel`` builds the dense ``J^T`` (one ``rmatvec`` per row of ``J``) up to this many rows.
_DENSE_JAC_ROWS = 2048


def _dense_jacobian(kernel: ParametricKernel, x: np.ndarray, transpose: bool) -> np.ndarray:
    r"""Reference Jacobian from the nonzeros of ``Q`` (never densified).

    With ``Q[r + c m, k]`` the coefficient of :math:`\theta_k` in :math:`K_{rc}`, the forward
    map has :math:`\partial (K x_a)_r / \partial\theta_k = \sum_c Q[r + cm, k]\, x_{a,c}` and
    the transposed one :math:`\partial (K^\top x_a)_c / \partial\theta_k = \sum_r Q[r + cm, k]\, x_{a,r}`.
    """
    m, N = kernel.shape
    Q = kernel.Q.tocoo()
    r, c = Q.row % m, Q.row // m
    out_idx, in_idx, out_size = (c, r, N) if transpose else (r, c, m)
    Jt = np.zeros((out_size, kernel.nparams, x.shape[0]))
    np.add.at(Jt, (out_idx, Q.col), Q.data[:, None] * x[:, in_idx].T)
    return Jt.transpose(2, 0, 1).reshape(-1, kernel.nparams)


def _unit(n: int, j: int, dtype: np.dtype) -> np.ndarray:
    e = np.zeros(n, dtype=dtype)
    e[j] = 1
    return e


def _feasible_direction(kernel: ParametricKernel, theta: np.ndarray, v: np.ndarray, h0: float) -> np.ndarray:
    """Flip the entries of ``v`` that would leave ``kernel.bounds`` within a step ``h0`` (θ on a bound)."""
    if kernel.bounds is None:
        return v
    lo, hi = kernel.bounds
    v = np.where(theta + h0 * v < lo, np.abs(v), v)
    v = np.where(theta + h0 * v > hi, -np.abs(v), v)
    # a box narrower than the step: shrink the direction into it
    room = np.minimum(theta - lo, hi - theta)
    too_far = h0 * np.abs(v) > room
    v = np.where(too_far, np.sign(v) * room / (2 * h0), v)
    return v.astype(theta.dtype)


def check_kernel(
    kernel: ParametricKernel,
    *,
    theta=None,
    nexamples: int = 3,
    dtype=np.float64,
    rng: np.random.Generator | int | None = 0,
) -> KernelReport:
    r"""Run every check of the kernel contract on one family.

    Checks dense agreement of ``op`` (and its adjoint), ``Q`` (and ``q``), ``apply`` (both
    directions) and ``jac`` (against a Jacobian assembled from ``Q`` for affine families;
    for all families, ``J @ I`` against ``(J.H @ I).T``); adjoint tests of ``op`` and of
    ``jac`` in both directions; Taylor tests of ``jac``; per-example gradients summing to the
    reduced one with shape ``(n, p)``; dtype preservation of every output. Dense checks are
    skipped for families whose matrices exceed a few million entries.

    Parameters
    ----------
    kernel : ParametricKernel
        The family to check.
    theta : array_like, optional
        Point of the checks; default ``kernel.random_theta(rng, dtype)``.
    nexamples : int, optional
        Batch size of the ``apply``/``jac`` checks (0 is allowed).
    dtype : numpy dtype, optional
        float32 or float64.
    rng : numpy.random.Generator or int, optional
        Source of ``theta``, the examples and the random vectors.

    Returns
    -------
    KernelReport
        One row per check; ``report.passed`` is the verdict.

    Raises
    ------
    TypeError
        If ``kernel`` is not a :class:`~structops.kernels.ParametricKernel` or ``dtype`` is not
        float32/float64.
    ValueError
        If ``nexamples`` is negative.

    Examples
    --------
    >>> from structops import MMatrix
    >>> report = check_kernel(MMatrix(3), dtype=np.float32)
    >>> report.passed, report.dtype
    (True, 'float32')
    """
    as_kernel(kernel)
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"`dtype` must be float32 or float64, got {dtype!r}.")
    if isinstance(nexamples, bool) or int(nexamples) != nexamples or nexamples < 0:
        raise ValueError(f"`nexamples` must be an integer >= 0, got {nexamples!r}.")
    nexamples = int(nexamples)
    gen = np.random.default_rng(rng)
    theta = kernel.random_theta(gen, dtype) if theta is None else np.asarray(theta, dtype=dtype)
    m, N = kernel.shape
    ctx = _Check(
        kernel=kernel,
        theta=theta,
        dtype=dtype,
        rng=gen,
        tol=default_rtol(dtype, max(m, N, kernel.nparams)),
        x=gen.standard_normal((nexamples, *kernel.in_shape)).astype(dtype),
        y=gen.standard_normal((nexamples, *kernel.out_shape)).astype(dtype),
        report=KernelReport(repr(kernel), dtype.name),
    )
    op = kernel.op(theta)
    if m * N <= _DENSE_CHECK_LIMIT:
        _check_dense(ctx, op)
    else:
        ctx.report.add("dense checks", 0.0, 0.0, note=f"skipped: {m}x{N} too large")
    _check_operator(ctx, op)
    for transpose, data in ((False, ctx.x), (True, ctx.y)):
        _check_jacobian(ctx, data, transpose)
    _check_outputs(ctx)
    return ctx.report


@dataclass
class _Check:
    """What the checks of :func:`check_kernel` share: the point, the batches and the report."""

    kernel: ParametricKernel
    theta: np.ndarray
    dtype: np.dtype
    rng: np.random.Generator
    tol: float
    x: np.ndarray
    y: np.ndarray
    report: KernelReport
    dtypes_ok: list[bool] = field(default_factory=list)

    #: Size of the first Taylor step.
    h0: float = 0.25


def _check_dense(ctx: _Check, op) -> None:
    """``op``, ``Q``/``q``, ``apply`` and (affine families) ``jac`` against the dense matrix."""
    kernel, theta, dtype, tol, report = ctx.kernel, ctx.theta, ctx.dtype, ctx.tol, ctx.report
    m, N = kernel.shape
    n = ctx.x.shape[0]
    M = kernel.matrix(theta)
    ctx.dtypes_ok.append(M.dtype == dtype)
    M = M.astype(np.float64)
    report.add("op @ I == matrix", _relerr(op.matmat(np.eye(N, dtype=dtype)), M), tol)
    report.add("op.H @ I == matrix.T", _relerr(op.H.matmat(np.eye(m, dtype=dtype)), M.T), tol)
    if kernel.linear:
        vecK = kernel.Q @ theta.astype(np.float64)
        if kernel.q is not None:
            vecK = vecK + kernel.q
        report.add("mat(Q theta + q) == matrix", _relerr(vecK.reshape((m, N), order="F"), M), tol)
    x2, y2 = ctx.x.reshape(n, N), ctx.y.reshape(n, m)
    report.add("apply == X M^T", _relerr(kernel.apply(theta, ctx.x).reshape(n, m), x2 @ M.T), tol)
    report.add("apply(T) == Y M", _relerr(kernel.apply(theta, ctx.y, transpose=True).reshape(n, N), y2 @ M), tol)
    for transpose, data in ((False, x2), (True, y2)):
        _check_dense_jacobian(ctx, data, transpose)


def _check_dense_jacobian(ctx: _Check, data: np.ndarray, transpose: bool) -> None:
    """``J @ I`` against ``(J.H @ I)^T`` and, for affine families, against the Jacobian from ``Q``."""
    kernel, dtype, tol, p = ctx.kernel, ctx.dtype, ctx.tol, ctx.kernel.nparams
    J = kernel.jac(ctx.theta, data, transpose=transpose)
    if not p or J.shape[0] * p > _DENSE_CHECK_LIMIT:
        return
    tag = "(T)" if transpose else ""
    Jd = np.stack([J.matvec(_unit(p, j, dtype)) for j in range(p)], 1)
    if J.shape[0] <= _DENSE_JAC_ROWS:  # one rmatvec per output entry: small batches only
        JHd = np.stack([J.rmatvec(c) for c in np.eye(J.shape[0], dtype=dtype)], 0) if J.shape[0] else Jd
        ctx.report.add(f"jac{tag} @ I == (jac.H @ I)^T", _relerr(Jd, JHd), tol)
    if kernel.linear:
        Jref = _dense_jacobian(kernel, data.astype(np.float64), transpose)
        ctx.report.add(f"jac{tag} @ I == from Q", _relerr(Jd, Jref), tol)
        w = ctx.rng.standard_normal(J.shape[0]).astype(dtype)
        ctx.report.add(f"jac{tag}.H @ w == from Q", _relerr(J.rmatvec(w), Jref.T @ w), tol)


def _check_operator(ctx: _Check, op) -> None:
    """The adjoint test of ``op``; its products keep the dtype."""
    m, N = ctx.kernel.shape
    ctx.report.add("adjoint op", adjoint_test(op, rng=ctx.rng, raise_on_failure=False).error, ctx.tol)
    ctx.dtypes_ok.append(op.matvec(np.ones(N, dtype=ctx.dtype)).dtype == ctx.dtype)
    ctx.dtypes_ok.append(op.rmatvec(np.ones(m, dtype=ctx.dtype)).dtype == ctx.dtype)


def _check_jacobian(ctx: _Check, data: np.ndarray, transpose: bool) -> None:
    """Adjoint and Taylor tests of ``jac``, per-example gradients, and products that repeat bitwise."""
    kernel, theta, dtype, p = ctx.kernel, ctx.theta, ctx.dtype, ctx.kernel.nparams
    tag = "(T)" if transpose else ""
    J = kernel.jac(theta, data, transpose=transpose)
    res = adjoint_test(J, rng=ctx.rng, raise_on_failure=False)
    ctx.report.add(f"adjoint jac{tag}", res.error, res.rtol)
    if p:
        step = kernel.random_theta(ctx.rng, dtype) - kernel.random_theta(ctx.rng, dtype)
        v = _feasible_direction(kernel, theta, step, ctx.h0)

        def model(t: np.ndarray) -> np.ndarray:
            return kernel.apply(t, data, transpose=transpose)

        tt = taylor_test(model, J, theta, v, h0=ctx.h0, nsteps=8)
        k = int(np.argmin(tt.E1))
        ctx.report.add(f"taylor jac{tag}", float(tt.E1[k]), float(tt.floor[k]), note=tt.regime, passed=tt.passed)
    w = ctx.rng.standard_normal(J.shape[0]).astype(dtype)
    per = J.per_example(w)
    reduced = J.rmatvec(w)
    forward = J.matvec(np.ones(p, dtype=dtype))
    ctx.dtypes_ok += [forward.dtype == dtype, reduced.dtype == dtype, per.dtype == dtype]
    shape_ok = per.shape == (data.shape[0], p) and reduced.shape == (p,)
    # relative to the size of the summands: per-example gradients may cancel in the sum
    scale = max(float(np.linalg.norm(np.abs(per.astype(np.float64)).sum(0))), float(np.linalg.norm(reduced)))
    diff = float(np.linalg.norm(per.sum(0, dtype=np.float64) - reduced))
    err = diff / scale if scale > 0 else diff
    ctx.report.add(f"per-example sum{tag}", err, ctx.tol, passed=shape_ok and err <= ctx.tol)
    # a built Jacobian is a fixed operator: every product repeats bitwise
    again = (J.rmatvec(w), J.matvec(np.ones(p, dtype=dtype)), J.per_example(w))
    same = all(np.array_equal(a, b) for a, b in zip((reduced, forward, per), again))
    ctx.report.add(f"jac{tag} products repeat", 0.0 if same else 1.0, 0.0)


def _check_outputs(ctx: _Check) -> None:
    """Output shapes of ``apply`` (both directions) and the dtype verdict of every check."""
    kernel, n = ctx.kernel, ctx.x.shape[0]
    out = kernel.apply(ctx.theta, ctx.x)
    out_t = kernel.apply(ctx.theta, ctx.y, transpose=True)
    shapes_ok = out.shape == (n, *kernel.out_shape) and out_t.shape == (n, *kernel.in_shape)
    ctx.dtypes_ok += [out.dtype == ctx.dtype, out_t.dtype == ctx.dtype]
    ctx.report.add("output shapes", 0.0 if shapes_ok else 1.0, 0.0)
    ctx.report.add("dtype preserved", float(len(ctx.dtypes_ok) - sum(map(bool, ctx.dtypes_ok))), 0.0)
