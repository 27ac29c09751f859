"""Chain(A, K): a fixed linear map after a kernel family, its Jacobian and its Q."""

from __future__ import annotations

import importlib.util

import numpy as np
import pylops
import pytest
import scipy.sparse as sp

from structops.kernels import Antisymmetric, Dense, Diagonal, LinearKernel, MMatrix, ParametricKernel, Softplus
from structops.kernels.compose import Chain, LinearMap
from structops.kernels.conv.pooling import AvgPool
from structops.testing import check_kernel, default_rtol

from ._helpers import atol_for

DTYPES = [np.float32, np.float64]
HAS_CONV = importlib.util.find_spec("structops.kernels.conv") is not None


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def tol(dtype, size=1):
    return default_rtol(dtype, size)


def dense_jacobian(J) -> np.ndarray:
    """The Jacobian operator as a dense matrix, column by column (J e_k)."""
    p = J.shape[1]
    return np.stack([J.matvec(np.eye(p, dtype=J.dtype)[k]) for k in range(p)], axis=1).astype(np.float64)


def offset_kernel() -> LinearKernel:
    """A 6x3 affine family with a constant part, so Chain's q is exercised."""
    gen = np.random.default_rng(3)
    Q = sp.random_array((18, 4), density=0.4, random_state=gen, format="csr")
    return LinearKernel(Q, (6, 3), q=gen.standard_normal(18))


def chains() -> list[tuple[str, Chain]]:
    cases = [
        ("pool-dense", Chain(AvgPool(8, 2), Dense(8, 5))),
        ("pool2d-dense", Chain(AvgPool((2, 4), (1, 2)), Dense(8, 3))),
        ("pool-diag", Chain(AvgPool(6, 3), Diagonal(6))),
        ("pool-diag-drop", Chain(AvgPool(7, 2, remainder="drop"), Diagonal(7))),
        ("pool-antisym", Chain(AvgPool(4, 2), Antisymmetric(4))),
        ("pool-mmatrix", Chain(AvgPool(4, 4), MMatrix(4))),
        ("pool-softplus", Chain(AvgPool(4, 2), Softplus(MMatrix(4)))),
        ("pool-offset", Chain(AvgPool(6, 2), offset_kernel())),
        ("pool-pool-dense", Chain(AvgPool(4, 2), Chain(AvgPool(8, 2), Dense(8, 3)))),
        ("array-dense", Chain(np.arange(12.0).reshape(3, 4) - 5, Dense(4, 2))),
        ("sparse-diag", Chain(sp.random_array((3, 5), density=0.5, random_state=1, format="csr"), Diagonal(5))),
        ("pylops-diag", Chain(pylops.Diagonal(np.arange(1.0, 6.0)), Diagonal(5))),
        ("kernelop-dense", Chain(Dense(2, 4).op(np.arange(8.0)), Dense(4, 3))),
    ]
    if HAS_CONV:
        from structops.kernels.conv import Conv

        conv = Conv((6, 4), (3, 3), in_channels=2, out_channels=3)
        cases.append(("pool-conv2d", Chain(AvgPool((6, 4), 2, channels=3), conv)))
        conv1 = Conv(9, 2, bc="periodic")
        cases.append(("pool-conv1d-drop", Chain(AvgPool(9, 2, remainder="drop"), conv1)))
        conv3 = Conv((4, 2, 4), (3, 1, 2), bc="reflect", out_channels=2)
        cases.append(("pool-conv3d", Chain(AvgPool((4, 2, 4), (2, 2, 1), channels=2), conv3)))
    return cases


CHAINS = chains()
CHAIN_IDS = [name for name, _ in CHAINS]


def outer_matrix(chain: Chain) -> np.ndarray:
    """The outer map as a dense matrix, by applying it to the identity."""
    n = int(np.prod(chain.outer.in_shape))
    return np.asarray(chain.outer.apply(np.eye(n))).reshape(n, -1).T


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("chain", [c for _, c in CHAINS], ids=CHAIN_IDS)
def test_chain_passes_check_kernel(chain, dtype):
    report = check_kernel(chain, dtype=dtype, rng=1)
    assert report.passed, str(report)


@pytest.mark.parametrize("chain", [c for _, c in CHAINS], ids=CHAIN_IDS)
def test_matrix_is_outer_times_inner(chain, rng):
    theta = chain.kernel.random_theta(rng)
    A = outer_matrix(chain)
    np.testing.assert_allclose(
        chain.matrix(theta), A @ chain.kernel.matrix(theta), rtol=0, atol=atol_for(A @ chain.kernel.matrix(theta))
    )
    assert chain.shape == (A.shape[0], chain.kernel.shape[1])
    assert chain.in_shape == chain.kernel.in_shape and chain.out_shape == tuple(chain.outer.out_shape)


@pytest.mark.parametrize("chain", [c for name, c in CHAINS if c.linear], ids=[n for n, c in CHAINS if c.linear])
def test_Q_is_kron_identity_outer_times_inner_Q(chain):
    Q = chain.Q
    assert sp.issparse(Q) and Q.shape == (chain.shape[0] * chain.shape[1], chain.nparams)
    A = outer_matrix(chain)
    ref = np.kron(np.eye(chain.shape[1]), A) @ chain.kernel.Q.toarray()
    np.testing.assert_allclose(Q.toarray(), ref, rtol=0, atol=atol_for(ref))
    # and the contract's generic column-by-column construction from K(e_k) - K(0)
    np.testing.assert_allclose(
        Q.toarray(),
        ParametricKernel._build_Q(chain).toarray(),
        rtol=0,
        atol=atol_for(ParametricKernel._build_Q(chain).toarray()),
    )
    if chain.kernel.q is None:
        assert chain.q is None
    else:
        q_ref = (A @ chain.kernel.q.reshape(chain.kernel.shape, order="F")).ravel(order="F")
        np.testing.assert_allclose(chain.q, q_ref, rtol=0, atol=atol_for(q_ref))


def test_Q_of_pooled_kernel_stays_sparse():
    chain = Chain(AvgPool((16, 16), 2), Diagonal(256))
    assert chain.Q.nnz == 256  # one entry per parameter: A's single nonzero in each column
    assert chain.outer.tosparse().nnz == 256


def jacobian_at_random_data(chain: Chain, n: int, transpose: bool, dtype, rng):
    """θ, ``n`` random examples (inputs, or outputs if ``transpose``), the chain's dense Jacobian there, and A."""
    theta = chain.kernel.random_theta(rng, dtype)
    data = rng.standard_normal((n, *(chain.out_shape if transpose else chain.in_shape))).astype(dtype)
    return theta, data, dense_jacobian(chain.jac(theta, data, transpose=transpose)), outer_matrix(chain)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("chain", [c for _, c in CHAINS], ids=CHAIN_IDS)
def test_jacobian_is_block_diagonal_outer_times_inner_jacobian(chain, dtype, rng):
    n = 3
    theta, X, J, A = jacobian_at_random_data(chain, n, False, dtype, rng)
    blocks = pylops.BlockDiag([pylops.MatrixMult(A)] * n).todense()  # I_n ⊗ A
    ref = blocks @ dense_jacobian(chain.kernel.jac(theta, X))
    assert J.shape == (n * chain.shape[0], chain.nparams)
    np.testing.assert_allclose(J, ref, rtol=tol(dtype, 64), atol=tol(dtype, 64) * np.abs(ref).max())
    if isinstance(chain.outer, AvgPool):
        # the structured operator itself inside pylops' BlockDiag
        blocks_pool = pylops.BlockDiag([chain.outer] * n).todense()
        np.testing.assert_allclose(blocks_pool, blocks, rtol=0, atol=atol_for(blocks))
    # gradients: J^T w = J_K^T (I ⊗ A^T) w, summed and per example
    W = rng.standard_normal((n, *chain.out_shape)).astype(dtype)
    Jc = chain.jac(theta, X)
    grad = Jc.rmatvec(W.ravel())
    assert grad.dtype == dtype
    np.testing.assert_allclose(grad, J.T @ W.ravel().astype(np.float64), rtol=tol(dtype, 64), atol=tol(dtype, 64))
    pulled = W.reshape(n, -1).astype(np.float64) @ A
    per = Jc.per_example(W)
    per_ref = chain.kernel.jac(theta.astype(np.float64), X.astype(np.float64)).per_example(pulled)
    np.testing.assert_allclose(per, per_ref, rtol=tol(dtype, 64), atol=tol(dtype, 64) * np.abs(per_ref).max())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("chain", [c for _, c in CHAINS], ids=CHAIN_IDS)
def test_transposed_jacobian_is_inner_transposed_jacobian_at_pulled_back_data(chain, dtype, rng):
    # theta -> K(theta)^T A^T y_i: the inner family's transposed Jacobian at the data A^T y_i
    n = 2
    theta, Y, J, A = jacobian_at_random_data(chain, n, True, dtype, rng)
    pulled = Y.reshape(n, -1).astype(np.float64) @ A  # rows A^T y_i
    ref = dense_jacobian(chain.kernel.jac(theta.astype(np.float64), pulled, transpose=True))
    assert J.shape == (n * chain.shape[1], chain.nparams)
    np.testing.assert_allclose(J, ref, rtol=tol(dtype, 64), atol=tol(dtype, 64) * np.abs(ref).max())
    # the same Jacobian from the definition: column k is d/dθ_k of K(θ)^T A^T y_i = mat(Q e_k)^T A^T y_i
    if chain.linear:
        Q = chain.Q.toarray()
        cols = [Y.reshape(n, -1) @ Q[:, k].reshape(chain.shape, order="F") for k in range(chain.nparams)]
        np.testing.assert_allclose(J, np.stack([c.ravel() for c in cols], 1), rtol=tol(dtype, 64), atol=1e-4)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dtype_preserved_through_pool_and_jacobian(dtype, rng):
    chain = Chain(AvgPool((4, 6), (2, 3)), Dense(24, 5))
    theta = chain.random_theta(rng, dtype)
    X = rng.standard_normal((3, 5)).astype(dtype)
    assert chain.apply(theta, X).dtype == dtype
    assert chain.apply(theta, rng.standard_normal((3, 1, 2, 2)).astype(dtype), transpose=True).dtype == dtype
    J = chain.jac(theta, X)
    assert J.dtype == dtype and J.matvec(theta).dtype == dtype and J.rmatvec(np.ones(12, dtype)).dtype == dtype
    assert chain.op(theta).matvec(X[0]).dtype == dtype


def test_inherits_linear_bounds_constraints_from_inner(rng):
    mm = Chain(AvgPool(4, 2), MMatrix(4))
    lo, _ = mm.bounds
    np.testing.assert_array_equal(lo, MMatrix(4).bounds[0])
    assert np.all(mm.random_theta(rng) >= 0)
    with pytest.raises(ValueError, match=">= 0"):
        mm.apply(-np.ones(12), np.zeros((1, 4)))
    nonlinear = Chain(AvgPool(4, 2), Softplus(MMatrix(4)))
    assert not nonlinear.linear and nonlinear.bounds is None
    with pytest.raises(TypeError, match="not affine"):
        _ = nonlinear.Q
    assert Chain(AvgPool(4, 2), Diagonal(4)).linear


def test_pool_matmul_kernel_builds_a_chain(rng):
    pool = AvgPool(6, 2)
    chain = pool @ Diagonal(6)
    assert isinstance(chain, Chain) and chain.outer is pool
    theta = rng.standard_normal(6)
    np.testing.assert_allclose(
        chain.matrix(theta), pool.matrix() @ np.diag(theta), rtol=0, atol=atol_for(pool.matrix() @ np.diag(theta))
    )
    # pylops behaviour is unchanged for arrays and operators
    x = rng.standard_normal(6)
    np.testing.assert_allclose(np.ravel(pool @ x), pool.matrix() @ x, rtol=0, atol=atol_for(pool.matrix() @ x))
    assert isinstance(pool @ pylops.Identity(6), pylops.LinearOperator)


def test_avgpool_satisfies_the_linear_map_protocol():
    assert isinstance(AvgPool((4, 4), 2), LinearMap)
    assert not isinstance(np.eye(3), LinearMap)


def test_protocol_object_without_tosparse_is_probed(rng):
    class Halve:
        in_shape = (300,)
        out_shape = (300,)

        def apply(self, X, transpose=False):
            return np.asarray(X) * 0.5

    chain = Chain(Halve(), Diagonal(300))
    assert chain.Q.nnz == 300
    assert abs(chain.Q - 0.5 * Diagonal(300).Q).max() == 0


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"`outer` takes examples of shape \(1, 6\) but `kernel` Diagonal\(4\)"):
        Chain(AvgPool(6, 2), Diagonal(4))
    with pytest.raises(ValueError, match=r"shape \(2, 4, 4\) but `kernel`"):
        Chain(AvgPool((4, 4), 2, channels=2), _Shaped((4, 2, 4)))
    with pytest.raises(TypeError, match="`kernel` must be a structops kernel family"):
        Chain(AvgPool(6, 2), np.eye(6))
    with pytest.raises(TypeError, match=r"kernel family Dense\(6, 6\); pass `outer.op\(theta\)`"):
        Chain(Dense(6, 6), Diagonal(6))
    with pytest.raises(TypeError, match="`outer` must have `apply"):
        Chain("pool", Diagonal(6))
    with pytest.raises(ValueError, match="must be 2-D"):
        Chain(np.ones(6), Diagonal(6))


class _Shaped(ParametricKernel):
    """A (never applied) family with a 3-D output shape, to test shape matching."""

    def __init__(self, out_shape):
        super().__init__(1, (1,), out_shape)

    def _apply(self, theta, x, transpose):  # pragma: no cover
        raise NotImplementedError

    def _vjp(self, theta, x, w, transpose, per_example):  # pragma: no cover
        raise NotImplementedError


@pytest.mark.skipif(not HAS_CONV, reason="structops.kernels.conv not available")
def test_pooled_conv_matches_torch(rng):
    torch = pytest.importorskip("torch")
    from structops.kernels.conv import Conv

    conv = Conv((6, 4), (3, 3), in_channels=2, out_channels=3)
    chain = AvgPool((6, 4), 2, channels=3) @ conv
    theta = conv.random_theta(rng)
    X = rng.standard_normal((4, 2, 6, 4))
    weight = torch.tensor(theta.reshape(3, 2, 3, 3)[:, :, ::-1, ::-1].copy())  # K(θ) is torch's conv with flipped θ
    ref = torch.nn.functional.avg_pool2d(torch.nn.functional.conv2d(torch.tensor(X), weight, padding=1), 2)
    np.testing.assert_allclose(chain.apply(theta, X), ref.numpy(), rtol=0, atol=atol_for(ref.numpy()))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_chain_outer_must_be_finite(bad):
    A = np.ones((2, 4))
    A[1, 2] = bad
    with pytest.raises(ValueError, match=r"`outer` must be finite, but outer\[1, 2\]"):
        Chain(A, Diagonal(4))
    with pytest.raises(ValueError, match=r"`outer.data` must be finite"):
        Chain(sp.csr_array(A), Diagonal(4))
