r"""Checks users run on their own operators and kernel families.

* :func:`adjoint_test` -- the dot test :math:`\langle Au, v\rangle = \langle u, A^H v\rangle`;
* :func:`taylor_test` -- the derivative check of the seed:
  :math:`E_0(h) = \|f(\theta+hv) - f(\theta)\| = O(h)` and
  :math:`E_1(h) = \|f(\theta+hv) - f(\theta) - hJv\| = O(h^2)`;
* :func:`check_kernel` -- every check of the kernel contract on one family.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .kernels._base import ParametricKernel

__all__ = [
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
    """
    eps = float(np.finfo(np.dtype(dtype) if np.dtype(dtype).kind == "f" else np.float64).eps)
    return 100.0 * eps * float(np.log2(2.0 + size))


class AdjointTestError(AssertionError):
    """Raised by :func:`adjoint_test` when the dot test fails."""


@dataclass
class AdjointResult:
    """Outcome of a dot test: both inner products, their relative gap and the tolerance."""

    lhs: float
    rhs: float
    error: float
    rtol: float

    @property
    def passed(self) -> bool:
        """Whether the relative gap is within the tolerance."""
        return bool(self.error <= self.rtol)


def _real_dtype(op) -> np.dtype:
    dt = np.dtype(getattr(op, "dtype", np.float64))
    return dt if dt.kind == "f" else np.dtype(np.float64)


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
        Source of the random vectors ``u`` and ``v`` (drawn in the operator's dtype).
    raise_on_failure : bool, optional
        Raise :class:`AdjointTestError` (with both numbers) when the test fails.

    Returns
    -------
    AdjointResult
    """
    rng = np.random.default_rng(rng)
    m, n = op.shape
    dtype = _real_dtype(op)
    u = rng.standard_normal(n).astype(dtype)
    v = rng.standard_normal(m).astype(dtype)
    au = np.asarray(op.matvec(u), dtype=np.float64).ravel()
    ahv = np.asarray(op.rmatvec(v), dtype=np.float64).ravel()
    lhs = float(np.dot(au, v.astype(np.float64)))
    rhs = float(np.dot(u.astype(np.float64), ahv))
    scale = float(np.linalg.norm(au) * np.linalg.norm(v) + np.linalg.norm(u) * np.linalg.norm(ahv))
    error = abs(lhs - rhs) / scale if scale > 0 else abs(lhs - rhs)
    tol = default_rtol(dtype, max(m, n)) if rtol is None else float(rtol)
    result = AdjointResult(lhs, rhs, error, tol)
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
        Observed orders :math:`\\log(E(h_k)/E(h_{k+1})) / \\log(h_k/h_{k+1})` between steps.
    floor : numpy.ndarray
        Round-off level at each step; remainders below it carry no information.
    regime : str
        ``"quadratic"`` (E1 falls as O(h²)), ``"roundoff"`` (E1 sits at round-off: ``f``
        is linear in θ along ``v``) or ``"failed"``.
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
        lines = [f"{'h':>10} {'E0':>11} {'E1':>11} {'order0':>7} {'order1':>7}"]
        for k, h in enumerate(self.h):
            o0 = f"{self.order0[k - 1]:7.2f}" if k else " " * 7
            o1 = f"{self.order1[k - 1]:7.2f}" if k else " " * 7
            lines.append(f"{h:10.3e} {self.E0[k]:11.3e} {self.E1[k]:11.3e} {o0} {o1}")
        lines.append(f"regime: {self.regime}; passed: {self.passed}. {self.message}")
        return "\n".join(lines)


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
    r"""Derivative check of the seed (and of its MATLAB ``checkDerivative``).

    With a direction :math:`v` and steps :math:`h_k = h_0\,\text{factor}^k`,

    .. math::
        E_0(h) = \|f(\theta + hv) - f(\theta)\| = O(h), \qquad
        E_1(h) = \|f(\theta + hv) - f(\theta) - h\,Jv\| = O(h^2).

    Parameters
    ----------
    f : callable
        ``theta -> array``, the function to check.
    jvp : callable or LinearOperator
        The claimed derivative at ``theta``: ``jvp(v)`` (or ``jvp @ v``) returns :math:`Jv`.
    theta : array_like
        Point of expansion.
    v : array_like, optional
        Direction; default a random vector of the same norm as ``theta`` (or unit norm).
    h0, nsteps, factor : optional
        First step, number of steps and the ratio between consecutive steps.
    rng : numpy.random.Generator or int, optional
        Source of the random direction.
    rtol_roundoff : float, optional
        Round-off level relative to :math:`\|f(\theta)\| + \|f(\theta + hv)\| + h\|Jv\|`;
        default ``10 * default_rtol(dtype)``.

    Returns
    -------
    TaylorResult
        The table, the observed orders and the verdict. The test passes when :math:`E_0`
        falls at least linearly and :math:`E_1` either falls quadratically (median observed
        order over the steps above round-off at least 1.75) or sits at round-off (models
        linear in θ). The decision uses every step, never a single one.
    """
    theta = np.asarray(theta)
    dtype = theta.dtype if theta.dtype.kind == "f" else np.dtype(np.float64)
    theta = theta.astype(dtype)
    rng = np.random.default_rng(rng)
    if v is None:
        v = rng.standard_normal(theta.shape)
        v *= (np.linalg.norm(theta) or 1.0) / (np.linalg.norm(v) or 1.0)
    v = np.asarray(v).astype(dtype)
    apply_j = jvp.matvec if hasattr(jvp, "matvec") else jvp
    f0 = np.asarray(f(theta), dtype=np.float64).ravel()
    jv = np.asarray(apply_j(v), dtype=np.float64).ravel()
    rtol = 10 * default_rtol(dtype, f0.size) if rtol_roundoff is None else float(rtol_roundoff)
    hs = h0 * factor ** np.arange(nsteps)
    E0, E1, floor = np.empty(nsteps), np.empty(nsteps), np.empty(nsteps)
    for k, h in enumerate(hs):
        fk = np.asarray(f((theta + dtype.type(h) * v).astype(dtype)), dtype=np.float64).ravel()
        d = fk - f0
        E0[k] = np.linalg.norm(d)
        E1[k] = np.linalg.norm(d - h * jv)
        floor[k] = rtol * (np.linalg.norm(f0) + np.linalg.norm(fk) + h * np.linalg.norm(jv))
    with np.errstate(divide="ignore", invalid="ignore"):
        step = np.log(1.0 / factor)
        order0 = np.log(E0[:-1] / E0[1:]) / step
        order1 = np.log(E1[:-1] / E1[1:]) / step
    informative0 = (E0[:-1] > floor[:-1]) & (E0[1:] > floor[1:])
    informative1 = (E1[:-1] > floor[:-1]) & (E1[1:] > floor[1:])
    ok0 = not informative0.any() or float(np.median(order0[informative0])) >= 0.8
    if informative1.sum() >= 2:
        med = float(np.median(order1[informative1]))
        regime = "quadratic" if med >= 1.75 else "failed"
        message = f"median order of E1 above round-off: {med:.2f} (want >= 1.75)."
    elif E1[-1] <= floor[-1]:
        regime, message = "roundoff", "E1 at round-off: f is linear in theta along v."
    else:
        regime, message = "failed", "E1 neither falls as O(h^2) nor sits at round-off."
    if not ok0:
        regime = "failed"
        message += f" E0 does not fall as O(h) (median order {np.median(order0[informative0]):.2f})."
    return TaylorResult(hs, E0, E1, order0, order1, floor, regime, regime != "failed", message)


@dataclass
class CheckResult:
    """One row of a :class:`KernelReport`."""

    check: str
    error: float
    tol: float
    passed: bool
    note: str = ""


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

    def add(self, check: str, error: float, tol: float, note: str = "", passed: bool | None = None) -> None:
        """Record one check (passes when ``error <= tol`` unless ``passed`` is given)."""
        ok = bool(error <= tol) if passed is None else bool(passed)
        self.results.append(CheckResult(check, float(error), float(tol), ok, note))

    def __str__(self) -> str:
        lines = [f"{self.kernel} [{self.dtype}]"]
        for r in self.results:
            status = "ok" if r.passed else "FAIL"
            lines.append(f"  {r.check:<28} {r.error:10.2e} (tol {r.tol:8.1e}) {status} {r.note}")
        return "\n".join(lines)


def _relerr(a, b) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    scale = max(np.linalg.norm(b), np.linalg.norm(a))
    return float(np.linalg.norm(a - b) / scale) if scale > 0 else float(np.linalg.norm(a - b))


#: ``check_kernel`` builds dense references only below this many entries.
_DENSE_CHECK_LIMIT = 4_000_000


def _dense_jacobian(kernel: ParametricKernel, x: np.ndarray, transpose: bool) -> np.ndarray:
    """Reference Jacobian from ``Q``: column k is the output of ``mat(Q e_k)`` on the examples."""
    rows, cols = kernel.shape
    Q3 = kernel.Q.toarray().reshape(cols, rows, kernel.nparams).transpose(1, 0, 2)  # Q3[r, c, k]
    if transpose:
        return np.einsum("rck,ar->ack", Q3, x).reshape(-1, kernel.nparams)
    return np.einsum("rck,ac->ark", Q3, x).reshape(-1, kernel.nparams)


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
    directions) and ``jac`` (against a Jacobian assembled from ``Q``); adjoint tests of
    ``op`` and of ``jac`` in both directions; Taylor tests of ``jac``; per-example gradients
    summing to the reduced one. Dense checks are skipped for families whose matrices exceed
    a few million entries.

    Parameters
    ----------
    kernel : ParametricKernel
    theta : array_like, optional
        Point of the checks; default ``kernel.random_theta(rng, dtype)``.
    nexamples : int, optional
        Batch size of the ``apply``/``jac`` checks.
    dtype : numpy dtype, optional
        float32 or float64.
    rng : numpy.random.Generator or int, optional

    Returns
    -------
    KernelReport
        One row per check; ``report.passed`` is the verdict.
    """
    rng = np.random.default_rng(rng)
    dtype = np.dtype(dtype)
    theta = kernel.random_theta(rng, dtype) if theta is None else np.asarray(theta, dtype=dtype)
    report = KernelReport(repr(kernel), dtype.name)
    m, N = kernel.shape
    tol = default_rtol(dtype, max(m, N, kernel.nparams))
    dense_ok = m * N <= _DENSE_CHECK_LIMIT
    x = rng.standard_normal((nexamples, *kernel.in_shape)).astype(dtype)
    y = rng.standard_normal((nexamples, *kernel.out_shape)).astype(dtype)
    op = kernel.op(theta)

    if dense_ok:
        M = kernel.matrix(theta).astype(np.float64)
        report.add("op @ I == matrix", _relerr(op.matmat(np.eye(N, dtype=dtype)), M), tol)
        report.add("op.H @ I == matrix.T", _relerr(op.H.matmat(np.eye(m, dtype=dtype)), M.T), tol)
        if kernel.linear:
            vecK = kernel.Q @ theta.astype(np.float64)
            if kernel.q is not None:
                vecK = vecK + kernel.q
            report.add("mat(Q theta + q) == matrix", _relerr(vecK.reshape((m, N), order="F"), M), tol)
        x2, y2 = x.reshape(nexamples, -1), y.reshape(nexamples, -1)
        report.add("apply == X M^T", _relerr(kernel.apply(theta, x).reshape(nexamples, -1), x2 @ M.T), tol)
        report.add(
            "apply(T) == Y M",
            _relerr(kernel.apply(theta, y, transpose=True).reshape(nexamples, -1), y2 @ M),
            tol,
        )
        if kernel.linear and kernel.nparams:
            for transpose, data in ((False, x2), (True, y2)):
                J = kernel.jac(theta, data, transpose=transpose)
                Jref = _dense_jacobian(kernel, data.astype(np.float64), transpose)
                ej = np.eye(kernel.nparams, dtype=dtype)
                tag = "(T)" if transpose else ""
                report.add(f"jac{tag} @ I == from Q", _relerr(np.stack([J.matvec(c) for c in ej], 1), Jref), tol)
                w = rng.standard_normal(J.shape[0]).astype(dtype)
                report.add(f"jac{tag}.H @ w == from Q", _relerr(J.rmatvec(w), Jref.T @ w), tol)
    else:
        report.add("dense checks", 0.0, 0.0, note=f"skipped: {m}x{N} too large")

    report.add("adjoint op", adjoint_test(op, rng=rng, raise_on_failure=False).error, tol)
    for transpose, data in ((False, x), (True, y)):
        tag = "(T)" if transpose else ""
        J = kernel.jac(theta, data, transpose=transpose)
        res = adjoint_test(J, rng=rng, raise_on_failure=False)
        report.add(f"adjoint jac{tag}", res.error, res.rtol)
        if kernel.nparams:
            v = kernel.random_theta(rng, dtype) - kernel.random_theta(rng, dtype)
            tt = taylor_test(
                lambda t, d=data, tr=transpose: kernel.apply(t, d, transpose=tr),
                J,
                theta,
                v,
                h0=0.25,
                nsteps=8,
            )
            report.add(
                f"taylor jac{tag}",
                float(tt.E1.min()),
                float(tt.floor.min()),
                note=tt.regime,
                passed=tt.passed,
            )
            w = rng.standard_normal(J.shape[0]).astype(dtype)
            per = J.per_example(w)
            shape_ok = per.shape == (nexamples, kernel.nparams) and per.dtype == dtype
            report.add(
                f"per-example sum{tag}",
                _relerr(per.sum(0), J.rmatvec(w)),
                tol,
                passed=shape_ok and _relerr(per.sum(0), J.rmatvec(w)) <= tol,
            )
    out = kernel.apply(theta, x)
    report.add("dtype preserved", 0.0 if out.dtype == dtype else 1.0, 0.0)
    return report
