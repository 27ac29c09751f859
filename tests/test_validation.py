"""Every bad input raises ValueError/TypeError whose message names the argument and the value."""

from __future__ import annotations

import re

import numpy as np
import pytest
import scipy.sparse as sp

from structops import Antisymmetric, Dense, Diagonal, LinearKernel, MMatrix, Softplus

KERNELS = [Dense(2, 3), Diagonal(3), Antisymmetric(3), MMatrix(3), Softplus(MMatrix(2))]


def entry_points(k, theta):
    """Every public entry point that takes theta (with a valid batch where one is needed)."""
    dt = np.asarray(theta).dtype
    X = np.ones((2, k.shape[1]), dtype=dt if dt in (np.float32, np.float64) else np.float64)
    return [
        lambda: k.matrix(theta),
        lambda: k.op(theta),
        lambda: k.apply(theta, X),
        lambda: k.jac(theta, X),
    ]


@pytest.fixture(params=KERNELS, ids=repr)
def kernel(request):
    return request.param


def theta_for(k, dtype=np.float64):
    return np.full(k.nparams, 0.5, dtype=dtype)


@pytest.mark.parametrize("delta", [-1, 1])
def test_theta_wrong_length(kernel, delta):
    theta = np.ones(kernel.nparams + delta)
    for call in entry_points(kernel, theta):
        with pytest.raises(ValueError, match=rf"`theta` must have length nparams = {kernel.nparams}, got length"):
            call()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_theta_not_finite(kernel, bad, dtype):
    theta = theta_for(kernel, dtype)
    theta[-1] = bad
    for call in entry_points(kernel, theta):
        with pytest.raises(ValueError, match=rf"`theta` must be finite, but theta\[{kernel.nparams - 1}\] = "):
            call()


def test_theta_2d_wrong_size(kernel):
    theta = np.ones((2, kernel.nparams + 1))
    for call in entry_points(kernel, theta):
        with pytest.raises(ValueError, match=re.escape(f"got an array of shape {theta.shape}")):
            call()


def test_theta_2d_of_the_right_size_is_not_reshaped_silently():
    # a matrix for Dense would be read in the wrong order (theta is vec(K), column-major)
    with pytest.raises(ValueError, match=r"`theta` must be a vector of length 4, got an array of shape \(2, 2\)"):
        Dense(2, 2).matrix(np.arange(4.0).reshape(2, 2))


def test_conv_theta_may_be_its_weight_array():
    from structops import Conv

    k = Conv((5, 4), (3, 2), in_channels=2, out_channels=3)
    assert k.theta_shape == (3, 2, 3, 2)
    w = np.arange(36.0).reshape(k.theta_shape)
    np.testing.assert_array_equal(k.matrix(w), k.matrix(w.ravel()))
    with pytest.raises(ValueError, match=r"or an array of shape \(3, 2, 3, 2\)"):
        k.matrix(w.reshape(6, 6))


@pytest.mark.parametrize("bad_dtype", [np.complex128, np.complex64, np.float16, bool, object])
def test_theta_bad_dtype(kernel, bad_dtype):
    theta = np.ones(kernel.nparams, dtype=bad_dtype)
    for call in entry_points(kernel, theta):
        with pytest.raises(TypeError, match="`theta` must be a real float32 or float64 array, got dtype"):
            call()


def test_integer_theta_is_cast_to_float64():
    assert Dense(1, 2).matrix([1, 2]).dtype == np.float64


@pytest.mark.parametrize("transpose", [False, True])
def test_X_wrong_shape(kernel, transpose):
    theta = theta_for(kernel)
    size = kernel.shape[0] if transpose else kernel.shape[1]
    # (np.ones(size) is one example, accepted by apply: see test_apply_takes_one_example)
    for X in [np.ones((2, size + 1)), np.ones((2, size, 1)), np.ones(())]:
        for call in (kernel.apply, kernel.jac):
            with pytest.raises(
                ValueError,
                match=re.escape(
                    f"`X` must hold examples along its first axis with shape (n, {size}), got shape {X.shape}"
                ),
            ):
                call(theta, X, transpose=transpose)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("transpose", [False, True])
def test_X_not_finite(kernel, bad, transpose, dtype):
    # NaN/Inf anywhere in the batch (first, middle or last entry, contiguous or not)
    theta = theta_for(kernel, dtype)
    size = kernel.shape[0] if transpose else kernel.shape[1]
    for where in (0, 7 * size // 2 if size > 1 else 3, -1):
        X = np.ones((7, size), dtype=dtype)
        X.reshape(-1)[where] = bad
        i, j = np.unravel_index(where % X.size, X.shape)
        for arr in (X, np.asfortranarray(X)):
            for call in (kernel.apply, kernel.jac):
                with pytest.raises(ValueError, match=re.escape(f"`X` must be finite, but X[{i}, {j}] = {bad!r}")):
                    call(theta, arr, transpose=transpose)


def test_large_finite_X_is_accepted(dtype):
    # entries whose sum overflows are still finite: the fast check falls back to the exact scan
    big = np.finfo(dtype).max / 2
    out = Diagonal(3000).apply(np.ones(3000, dtype), np.full((2, 3000), big, dtype=dtype))
    assert np.isfinite(out).all()


def test_X_float64_with_theta_float32(kernel):
    theta = theta_for(kernel, np.float32)
    X = np.ones((2, kernel.shape[1]))
    for call in (kernel.apply, kernel.jac):
        with pytest.raises(TypeError, match=r"`X` has dtype float64 but the computation runs in float32"):
            call(theta, X)
    with pytest.raises(TypeError, match=r"`X` has dtype float32 but the computation runs in float64"):
        kernel.apply(theta_for(kernel), X.astype(np.float32))


def test_X_complex(kernel):
    with pytest.raises(TypeError, match="`X` must be a real float32 or float64 array, got dtype complex128"):
        kernel.apply(theta_for(kernel), np.ones((1, kernel.shape[1]), dtype=complex))


def test_integer_X_is_cast_to_theta_dtype():
    k = Diagonal(2)
    out = k.apply(np.ones(2, np.float32), [[1, 2]])
    assert out.dtype == np.float32


def test_per_example_w_wrong_size():
    J = Dense(2, 3).jac(np.ones(6), np.ones((4, 3)))
    with pytest.raises(ValueError, match=re.escape("`w` must have 8 entries (n * prod(out_shape)), got shape (7,)")):
        J.per_example(np.ones(7))


def test_mmatrix_negative_theta_names_theta_and_index():
    k = MMatrix(3)
    theta = np.array([1.0, 0.0, 2.0, -0.25, 3.0, 1.0])
    for call in entry_points(k, theta):
        with pytest.raises(ValueError, match=re.escape("`theta` must be >= 0") + r".*theta\[3\] = -0\.25"):
            call()
    # zero couplings are fine, and the reparametrisation accepts any sign
    k.matrix(np.zeros(6))
    Softplus(k).matrix(theta)


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda v: Dense(v, 2), "rows"),
        (lambda v: Dense(2, v), "cols"),
        (lambda v: Diagonal(v), "n"),
        (lambda v: Antisymmetric(v), "n"),
        (lambda v: MMatrix(v), "n"),
    ],
    ids=["Dense-rows", "Dense-cols", "Diagonal", "Antisymmetric", "MMatrix"],
)
def test_sizes_must_be_positive_integers(make, name):
    for bad in (0, -3):
        with pytest.raises(ValueError, match=rf"`{name}` must be an integer >= 1, got {bad}"):
            make(bad)
    for bad in (2.0, 2.5, "3", None, True):
        with pytest.raises(TypeError, match=rf"`{name}` must be an integer, got {re.escape(repr(bad))}"):
            make(bad)
    assert make(np.int64(2)).shape[0] >= 1  # numpy integers are integers


# ----------------------------------------------------------------------------------------
# LinearKernel


def test_linear_kernel_Q_wrong_row_count():
    with pytest.raises(
        ValueError, match=re.escape("`Q` must have rows * cols = 6 rows for shape (2, 3), got shape (5, 2)")
    ):
        LinearKernel(sp.csr_array(np.ones((5, 2))), (2, 3))
    with pytest.raises(ValueError, match="`Q` must have rows \\* cols = 6 rows"):
        LinearKernel(np.ones((7, 2)), (2, 3))


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_linear_kernel_Q_not_finite(sparse, bad):
    Q = np.eye(4, 2)
    Q[1, 1] = bad
    with pytest.raises(ValueError, match="`Q` must be finite"):
        LinearKernel(sp.csr_array(Q) if sparse else Q, (2, 2))


@pytest.mark.parametrize("sparse", [False, True])
def test_linear_kernel_Q_complex(sparse):
    Q = np.eye(4, 2) * 1j
    with pytest.raises(TypeError, match="`Q` must be a real"):
        LinearKernel(sp.csr_array(Q) if sparse else Q, (2, 2))


def test_linear_kernel_Q_not_2d():
    with pytest.raises(ValueError, match=re.escape("`Q` must be 2-D with shape (rows * cols, p), got shape (4,)")):
        LinearKernel(np.ones(4), (2, 2))


def test_linear_kernel_q_wrong_length_or_not_finite():
    Q = np.eye(4, 2)
    with pytest.raises(ValueError, match=re.escape("`q` must have rows * cols = 4 entries, got 3")):
        LinearKernel(Q, (2, 2), q=np.ones(3))
    with pytest.raises(ValueError, match=re.escape("`q` must be finite, but q[2] = nan")):
        LinearKernel(Q, (2, 2), q=[0.0, 1.0, np.nan, 0.0])
    with pytest.raises(TypeError, match="`q` must be a real"):
        LinearKernel(Q, (2, 2), q=np.ones(4) * 1j)


@pytest.mark.parametrize(
    ("shape", "exc", "msg"),
    [
        ((2, 0), ValueError, "every entry of `shape` must be >= 1"),
        ((2, -1), ValueError, "every entry of `shape` must be >= 1"),
        ((2, 2.0), TypeError, "`shape` must hold integers"),
        ((2, 2, 1), ValueError, "`shape` must have 2 entries"),
        ("ab", TypeError, "`shape` must hold integers"),
        (None, TypeError, "`shape` must be an integer or a sequence of integers"),
    ],
)
def test_linear_kernel_bad_shape(shape, exc, msg):
    with pytest.raises(exc, match=re.escape(msg)):
        LinearKernel(np.eye(4, 2), shape)


def test_softplus_needs_an_affine_kernel():
    with pytest.raises(TypeError, match=r"`kernel` must be an affine kernel family \(kernel.linear is True\)"):
        Softplus(Softplus(MMatrix(2)))
    with pytest.raises(TypeError, match="`kernel` must be a structops kernel family"):
        Softplus(np.eye(2))


def test_softplus_to_theta_names_phi():
    with pytest.raises(ValueError, match="`phi` must have length nparams = 2"):
        Softplus(MMatrix(2)).to_theta(np.ones(3))


def test_matrix_refuses_huge_dense(monkeypatch):
    monkeypatch.setattr("structops.kernels._base.MAX_DENSE_ENTRIES", 15)
    k = Dense(4, 4)
    with pytest.raises(MemoryError, match=re.escape("matrix() of Dense(4, 4) would hold 16 dense entries")):
        k.matrix(np.zeros(16))
    # apply never densifies
    assert k.apply(np.zeros(16), np.ones((1, 4))).shape == (1, 4)


def test_operator_and_jacobian_copy_theta():
    # an in-place update of the caller's theta (as an optimiser does) changes neither
    from structops import Conv

    for method in ("direct", "fft"):
        k = Conv((6, 5), (3, 3), method=method)
        theta = np.arange(9.0)
        X = np.ones((2, 30))
        op, J = k.op(theta), k.jac(theta, X)
        before = (op @ X[0], J.rmatvec(np.ones(60)), op.todense())
        theta *= -3.0
        np.testing.assert_array_equal(op @ X[0], before[0])
        np.testing.assert_array_equal(J.rmatvec(np.ones(60)), before[1])
        np.testing.assert_array_equal(op.todense(), before[2])


@pytest.mark.parametrize("bad", ["no", 0, 1, None])
def test_transpose_must_be_a_bool(bad):
    k = Diagonal(2)
    for call in (k.apply, k.jac):
        with pytest.raises(TypeError, match=r"`transpose` must be True or False"):
            call(np.ones(2), np.ones((1, 2)), transpose=bad)


@pytest.mark.parametrize("bad_dtype", [bool, np.float16, np.complex128])
def test_per_example_w_bad_dtype(bad_dtype):
    J = Diagonal(2).jac(np.ones(2), np.ones((3, 2)))
    with pytest.raises(TypeError, match="`w` must be a real float32 or float64 array"):
        J.per_example(np.ones((3, 2), dtype=bad_dtype))


def test_per_example_w_not_finite():
    J = Diagonal(2).jac(np.ones(2), np.ones((3, 2)))
    w = np.ones((3, 2))
    w[1, 0] = np.inf
    with pytest.raises(ValueError, match=r"`w` must be finite, but w\[1, 0\] = inf"):
        J.per_example(w)
