"""Every kernel family through scipy's and pylops' solvers, against dense numpy solves.

scipy 1.17 keeps float32 in ``cg``, ``gmres``, ``svds`` and pylops' ``cgls``; ``minres``,
``lsqr``, ``lsmr`` and pylops' ``lsqr`` iterate (and return) in float64 for a float32
operator -- the structops operators then compute in float64 too (they follow the wider of
their own and their input's precision), so nothing is silently truncated.
"""

from __future__ import annotations

import numpy as np
import pylops
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from pylops.optimization.basic import cgls as pylops_cgls
from pylops.optimization.basic import lsqr as pylops_lsqr

import structops
from structops.solvers import inverse, spectral_norm

#: Solvers that return float64 for a float32 operator (scipy 1.17, pylops 2.8).
UPCASTING = {"minres", "lsqr", "lsmr", "pylops.lsqr"}


def linear_kernel() -> structops.LinearKernel:
    rng = np.random.default_rng(3)
    Q = sp.random(49, 10, density=0.3, random_state=rng, format="csr")
    return structops.LinearKernel(Q, (7, 7), q=np.eye(7).ravel())


FAMILIES = {
    "dense-6": lambda: structops.Dense(6, 6),
    "dense-13x9": lambda: structops.Dense(13, 9),
    "diagonal-11": lambda: structops.Diagonal(11),
    "antisymmetric-7": lambda: structops.Antisymmetric(7),
    "antisymmetric-12": lambda: structops.Antisymmetric(12),
    "mmatrix-5": lambda: structops.MMatrix(5),
    "mmatrix-10": lambda: structops.MMatrix(10),
    "linearkernel-7": linear_kernel,
    "softplus-mmatrix-6": lambda: structops.Softplus(structops.MMatrix(6)),
    "conv-zero-1d": lambda: structops.Conv(20, 5),
    "conv-periodic-2d": lambda: structops.Conv((6, 7), (3, 3), bc="periodic"),
    "conv-reflect-2ch": lambda: structops.Conv((7, 6), (3, 2), bc="reflect", in_channels=2, out_channels=2),
    "conv-replicate-3d": lambda: structops.Conv((4, 3, 5), (3, 3, 3), bc="replicate"),
    "conv-valid-stride": lambda: structops.Conv((9, 8), (3, 3), bc="valid", in_channels=2, out_channels=3, stride=2),
    "conv-zero-stride-channels": lambda: structops.Conv(16, 4, in_channels=3, out_channels=2, stride=2),
    "chain-avgpool-conv": lambda: structops.Chain(
        structops.AvgPool((8, 6), 2, channels=3),
        structops.Conv((8, 6), (3, 3), bc="zero", in_channels=2, out_channels=3),
    ),
}


def setup(name, dtype, rng):
    kernel = FAMILIES[name]()
    theta = kernel.random_theta(rng, dtype=dtype)
    op = kernel.op(theta)
    M = kernel.matrix(theta.astype(np.float64))
    return kernel, theta, op, M


def rtol_of(dtype) -> float:
    return 1e-5 if dtype == np.float32 else 1e-10


def check_dtype(x, dtype, solver: str) -> None:
    if solver in UPCASTING:
        assert x.dtype in (dtype, np.float64), (solver, x.dtype)
    else:
        assert x.dtype == dtype, (solver, x.dtype)


def check_close(x, ref, dtype, cond: float, solver: str) -> None:
    err = np.linalg.norm(np.asarray(x, dtype=np.float64).ravel() - ref) / max(np.linalg.norm(ref), 1e-300)
    bound = 50 * rtol_of(dtype) * cond
    assert err <= bound, f"{solver}: relative error {err:.2e} > {bound:.2e}"


@pytest.mark.parametrize("name", list(FAMILIES))
def test_family_through_scipy_and_pylops_solvers(name, dtype, rng):
    _, _, op, M = setup(name, dtype, rng)
    assert op.dtype == dtype
    m, n = M.shape
    norm = max(np.linalg.norm(M, 2), 1e-3)
    alpha = 0.1 * norm**2  # KᵀK + αI is SPD with condition number <= 11
    A = op.H @ op + alpha * pylops.Identity(n, dtype=dtype)
    A_dense = M.T @ M + alpha * np.eye(n)
    cond_A = np.linalg.cond(A_dense)
    b = rng.standard_normal(n).astype(dtype)
    ref = np.linalg.solve(A_dense, b.astype(np.float64))
    tol = rtol_of(dtype)

    x, info = spla.cg(A, b, rtol=tol, maxiter=10 * n)
    assert info == 0
    check_dtype(x, dtype, "cg")
    check_close(x, ref, dtype, cond_A, "cg")

    x, info = spla.minres(A, b, rtol=tol, maxiter=10 * n)
    assert info == 0
    check_dtype(x, dtype, "minres")
    check_close(x, ref, dtype, cond_A, "minres")

    # gmres on a nonsymmetric, nonsingular system: K + c I for square K, else KᵀK + αI
    if m == n:
        c = norm + 1.0
        G = op + c * pylops.Identity(n, dtype=dtype)
        G_dense = M + c * np.eye(n)
    else:
        G, G_dense = A, A_dense
    x, info = spla.gmres(G, b, rtol=tol, restart=n, maxiter=10 * n)
    assert info == 0
    check_dtype(x, dtype, "gmres")
    check_close(x, np.linalg.solve(G_dense, b.astype(np.float64)), dtype, np.linalg.cond(G_dense), "gmres")

    # damped least squares min ||Kx - y||² + d²||x||²: lsqr, lsmr, pylops' cgls and lsqr
    y = rng.standard_normal(m).astype(dtype)
    damp = float(np.sqrt(alpha))  # a python float: a numpy float64 scalar would upcast float32
    ls_ref = np.linalg.solve(A_dense, M.T @ y.astype(np.float64))
    x = spla.lsqr(op, y, damp=damp, atol=tol / 10, btol=tol / 10, iter_lim=20 * n)[0]
    check_dtype(x, dtype, "lsqr")
    check_close(x, ls_ref, dtype, cond_A, "lsqr")
    x = spla.lsmr(op, y.astype(np.float64), damp=damp, atol=tol / 10, btol=tol / 10, maxiter=20 * n)[0]
    check_dtype(x, dtype, "lsmr")
    check_close(x, ls_ref, dtype, cond_A, "lsmr")
    # pylops' cgls stops when the squared norm of the normal-equations residual is below tol
    x = pylops_cgls(op, y, niter=20 * n, damp=damp, tol=(tol * norm * float(np.linalg.norm(y)) / 10) ** 2)[0]
    check_dtype(x, dtype, "cgls")
    check_close(x, ls_ref, dtype, cond_A, "pylops.cgls")
    x = pylops_lsqr(op, y, niter=20 * n, damp=damp, atol=tol / 10, btol=tol / 10)[0]
    check_dtype(x, dtype, "pylops.lsqr")
    check_close(x, ls_ref, dtype, cond_A, "pylops.lsqr")

    # the largest singular value
    if min(m, n) >= 2:
        s = spla.svds(op, k=1, return_singular_vectors=False, random_state=0)
        check_dtype(s, dtype, "svds")
        assert s[0] == pytest.approx(np.linalg.norm(M, 2), rel=20 * rtol_of(dtype))


@pytest.mark.parametrize("name", ["conv-periodic-2d", "dense-13x9", "conv-zero-1d"])
def test_operators_accept_batched_columns_and_match_dense(name, dtype, rng):
    """``matmat`` with several right-hand sides, as block solvers use it, agrees with the dense matrix."""
    _, _, op, M = setup(name, dtype, rng)
    X = rng.standard_normal((M.shape[1], 4)).astype(dtype)
    Y = op.matmat(X)
    assert Y.dtype == dtype
    np.testing.assert_allclose(Y, M @ X.astype(np.float64), rtol=0, atol=100 * rtol_of(dtype) * np.abs(M).sum())


def test_exact_inverse_matches_cg_on_a_periodic_system(dtype, rng):
    kernel = structops.Conv((12, 10), (3, 3), bc="periodic", in_channels=2, out_channels=2)
    theta = kernel.random_theta(rng, dtype=dtype)
    op = kernel.op(theta)
    alpha = 0.5
    A = op.H @ op + alpha * pylops.Identity(op.shape[1], dtype=dtype)
    b = rng.standard_normal(op.shape[1]).astype(dtype)
    x_cg, info = spla.cg(A, b, rtol=rtol_of(dtype), maxiter=1000)
    assert info == 0
    x_fft = inverse(kernel, theta, alpha=alpha, normal=True) @ b
    assert x_fft.dtype == dtype
    cond = (spectral_norm(kernel, theta) ** 2 + alpha) / alpha
    check_close(x_fft, x_cg.astype(np.float64), dtype, cond, "fft")
