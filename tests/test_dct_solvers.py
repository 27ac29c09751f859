"""Exact solves of doubly symmetric stencils with mirror boundaries: the solvers' "cosine" route (DCT).

Every result is compared with dense linear algebra (numpy.linalg.inv, eigvalsh, eigvals,
pinv) on the matrix built entry by entry in test_symmetric_conv.reference_matrix, in 1-D,
2-D and 3-D, for DCT-I (bc="reflect") and DCT-II (bc="symmetric").
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest

import structops
from structops import SymmetricConv
from structops.solvers import CosineMultiplier, implicit_step, inverse, route
from structops.solvers.dct import cosine_symbol
from structops.testing import adjoint_test, default_rtol

from .test_symmetric_conv import reference_matrix, reference_stencils, rel

MIRRORS = ("reflect", "symmetric")


class Case(NamedTuple):
    grid: tuple[int, ...]
    stencil: tuple[int, ...]
    symmetry: str = "double"


CASES = {
    "1d": Case((9,), (3,)),
    "1d-5": Case((7,), (5,)),
    "1d-two-samples": Case((2,), (3,)),
    "2d": Case((6, 5), (3, 5)),
    "2d-iso": Case((5, 7), (3, 3), "isotropic"),
    "2d-size1-axis": Case((1, 6), (1, 3)),
    "3d": Case((3, 4, 5), (3, 1, 3)),
}


@pytest.fixture(params=list(CASES), ids=list(CASES))
def case(request) -> Case:
    return CASES[request.param]


def dense(k: SymmetricConv, theta) -> np.ndarray:
    """The matrix of ``k`` at ``theta``, entry by entry (not through the library)."""
    w = reference_stencils(theta, k.stencil, 1, 1, k.symmetry)
    return reference_matrix(w, k.grid, k.bc)


def spd_theta(k: SymmetricConv, rng) -> np.ndarray:
    """A random theta with a dominant centre tap: K is nonsingular, well conditioned."""
    theta = rng.uniform(-1, 1, k.nparams)
    theta[0] = 2.0 * np.prod(k.stencil)
    return theta


# ----------------------------------------------------------------------- eigenvalues
def test_cosine_symbol_of_the_laplacian():
    n = 8
    lap = np.array([-1.0, 2.0, -1.0])
    k = np.arange(n)
    assert np.allclose(cosine_symbol(lap, (n,), 2), 2 - 2 * np.cos(np.pi * k / n))
    assert np.allclose(cosine_symbol(lap, (n,), 1), 2 - 2 * np.cos(np.pi * k / (n - 1)))


@pytest.mark.parametrize("bc", MIRRORS)
def test_eigvals_match_dense(case, bc, dtype, rng):
    k = SymmetricConv(case.grid, case.stencil, bc=bc, symmetry=case.symmetry)
    theta = rng.standard_normal(k.nparams).astype(dtype)
    lam = structops.solvers.eigvals(k, theta)
    assert lam.shape == case.grid and lam.dtype == dtype and not np.iscomplexobj(lam)
    assert np.array_equal(lam, k.eigvals(theta)) and np.array_equal(lam, k.diagonalize(theta).eigenvalues())
    M = dense(k, theta)
    # symmetric: K is symmetric (eigvalsh); reflect: K = B^-1 S B is similar to a symmetric matrix
    ref = np.linalg.eigvalsh(M) if bc == "symmetric" else np.sort(np.linalg.eigvals(M).real)
    assert rel(np.sort(lam.ravel()), ref) <= default_rtol(dtype, lam.size)


def test_eigenvectors_are_the_dct_basis(rng):
    """K C^T e_k = λ_k C^T e_k for the orthonormal DCT-II basis (and K B^-1 C e_k for DCT-I)."""
    import scipy.fft as sfft

    for bc, t in (("symmetric", 2), ("reflect", 1)):
        k = SymmetricConv((5, 6), (3, 3), bc=bc)
        theta = rng.standard_normal(4)
        lam = k.eigvals(theta)
        E = np.eye(30).reshape(5, 6, 30)
        V = sfft.idctn(E, type=t, axes=(0, 1), norm="ortho").reshape(30, 30)  # columns: basis vectors
        if t == 1:
            b = np.ones((5, 6))
            b[[0, -1], :] /= np.sqrt(2)
            b[:, [0, -1]] /= np.sqrt(2)
            V = V / b.reshape(-1, 1)
        M = dense(k, theta)
        assert rel(M @ V, V * lam.reshape(1, -1)) <= default_rtol(np.float64, 30)


# ------------------------------------------------------------------------- inverses
@pytest.mark.parametrize("bc", MIRRORS)
@pytest.mark.parametrize("alpha", [0.0, 0.7, -0.3])
def test_inverse_matches_dense(case, bc, alpha, dtype, rng):
    k = SymmetricConv(case.grid, case.stencil, bc=bc, symmetry=case.symmetry)
    theta = spd_theta(k, rng).astype(dtype)
    A = structops.solvers.inverse(k, theta, alpha=alpha)
    assert isinstance(A, CosineMultiplier) and A.dtype == dtype
    N = k.shape[0]
    ref = np.linalg.inv(dense(k, theta) + alpha * np.eye(N))
    tol = default_rtol(dtype, N)
    assert rel(A.todense(), ref) <= tol
    assert rel(A.H.todense(), ref.T) <= tol
    X = rng.standard_normal((N, 4)).astype(dtype)
    Y = A @ X
    assert Y.dtype == dtype and rel(Y, ref @ X) <= tol
    assert (A @ np.zeros((N, 0), dtype=dtype)).shape == (N, 0)
    # seeded dot tests (pylops' dottest draws unseeded vectors: an unlucky draw of an
    # ill-conditioned inverse failed once in CI)
    assert adjoint_test(A, rng=0, raise_on_failure=False).passed
    assert adjoint_test(A.H, rng=1, raise_on_failure=False).passed


def test_inverse_solves_the_system(rng):
    k = SymmetricConv((32, 24), (5, 5), bc="symmetric", symmetry="isotropic")
    theta = spd_theta(k, rng)
    x = rng.standard_normal(k.shape[1])
    y = k.op(theta) @ x
    assert rel(inverse(k, theta) @ y, x) <= default_rtol(np.float64, k.shape[0]) * np.linalg.cond(dense(k, theta))


def test_normal_inverse_and_pseudo_inverse_match_dense(rng):
    k = SymmetricConv((5, 6), (3, 3), bc="symmetric")
    lap = np.array([4.0, -1.0, -1.0, 0.0])  # singular: the constants are in the null space
    M = dense(k, lap)
    A = M.T @ M + 0.5 * np.eye(30)
    assert rel(inverse(k, lap, normal=True, alpha=0.5).todense(), np.linalg.inv(A)) <= default_rtol(
        np.float64, 30
    ) * np.linalg.cond(A)
    s = np.linalg.svd(M, compute_uv=False)
    kept = s[s > 1e-10 * s[0]]  # the pseudo-inverse's condition: of the singular values it keeps
    pinv = np.linalg.pinv(M, rcond=1e-10)
    assert rel(inverse(k, lap, rcond=1e-10).todense(), pinv) <= default_rtol(np.float64, 30) * kept[0] / kept[-1]
    with pytest.raises(np.linalg.LinAlgError, match="singular"):
        inverse(k, lap)


@pytest.mark.parametrize("h", [0.0, 0.05, 3.0])
def test_implicit_step_matches_dense(case, h, dtype, rng):
    k = SymmetricConv(case.grid, case.stencil, bc="symmetric", symmetry=case.symmetry)
    theta = rng.standard_normal(k.nparams).astype(dtype)
    step = structops.solvers.implicit_step(k, theta, h)
    assert isinstance(step, CosineMultiplier) and step.dtype == dtype
    M = dense(k, theta)
    N = M.shape[0]
    assert rel(step.todense(), np.linalg.inv(h * M.T @ M + np.eye(N))) <= default_rtol(dtype, N)
    assert step.H is step  # symmetric


# -------------------------------------------------------------------- what is refused
def test_reflect_refuses_what_dct_i_does_not_diagonalise(rng):
    k = SymmetricConv(8, 3, bc="reflect")
    theta = np.array([3.0, -1.0])
    with pytest.raises(ValueError, match=r"not diagonalised by the DCT.*bc='symmetric'"):
        structops.solvers.implicit_step(k, theta, 0.1)
    with pytest.raises(ValueError, match="not diagonalised by the DCT"):
        structops.solvers.inverse(k, theta, normal=True)
    with pytest.raises(ValueError, match="`rcond` must be None"):
        structops.solvers.inverse(k, theta, rcond=1e-8)


def test_dispatch_and_bad_input():
    theta = np.array([2.0, -1.0])
    for bc in MIRRORS:
        k = SymmetricConv(6, 3, bc=bc)
        assert isinstance(k.diagonalize(theta), CosineMultiplier) and route(k, theta, "inverse").name == "cosine"
    two = SymmetricConv(6, 3, bc="symmetric", in_channels=2)
    assert not isinstance(two.diagonalize(two.random_theta(0)), CosineMultiplier)
    assert not isinstance(structops.Conv(6, 3).diagonalize(np.ones(3)), CosineMultiplier)
    with pytest.raises(ValueError, match="`inverse` needs a kernel diagonalised by a fast transform"):
        inverse(SymmetricConv(6, 3, bc="zero"), np.ones(2))
    with pytest.raises(ValueError, match="`implicit_step` needs a kernel diagonalised by a fast transform"):
        implicit_step(structops.Conv(6, 3, bc="symmetric"), np.ones(3), 0.1)
    lam = structops.solvers.eigvals(SymmetricConv(6, 3, bc="symmetric"), theta)
    top = structops.solvers.eigvals(SymmetricConv(6, 3, bc="symmetric"), theta, k=2, which="SR")
    assert np.allclose(top, np.sort(lam)[:2])
    with pytest.raises(ValueError, match="`h`"):
        implicit_step(SymmetricConv(6, 3, bc="symmetric"), np.ones(2), -1.0)
    with pytest.raises(ValueError, match="`dct_type` must be one of"):
        CosineMultiplier(np.ones(4), 3, dtype=np.float64)
    with pytest.raises(TypeError, match="`kernel` must be a structops kernel family"):
        structops.solvers.eigvals("conv", np.ones(2))


@pytest.mark.parametrize(
    ("name", "replacement", "args"),
    [
        ("dct_inverse", "inverse", {"alpha": 0.5}),
        ("dct_implicit_step", "implicit_step", {"h": 0.3}),
        ("dct_eigvals", "eigvals", {}),
    ],
)
def test_deprecated_dct_aliases_warn_and_forward(name, replacement, args):
    k = SymmetricConv((5, 4), (3, 3), bc="symmetric")
    theta = np.array([4.0, -1.0, -1.0, 0.0])
    with pytest.warns(DeprecationWarning, match=rf"solvers\.{name} is deprecated.*{replacement}"):
        old = getattr(structops.solvers, name)(k, theta, **args)
    new = getattr(structops.solvers, replacement)(k, theta, **args)
    dense_old = old.todense() if hasattr(old, "todense") else old
    dense_new = new.todense() if hasattr(new, "todense") else new
    assert np.array_equal(dense_old, dense_new)
    assert name not in structops.solvers.__all__
    with pytest.raises(AttributeError, match="is_cosine"):
        structops.solvers.is_cosine  # noqa: B018 (removed without an alias: no document used it)
