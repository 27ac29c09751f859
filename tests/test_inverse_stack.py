"""``inverse(kernel, theta) @ B`` on a stack of images: the same as looping, and as the dense solve.

References: a loop of single-image products, and ``numpy.linalg.solve`` on the dense matrix
``kernel.matrix(theta)`` built entry by entry.
"""

from __future__ import annotations

import numpy as np
import pytest

from structops import Conv, SymmetricConv
from structops.data import gaussian_stencil
from structops.solvers import inverse
from structops.testing import default_rtol

GRID = (6, 5)

# the exact routes of `inverse` (it has no iterative one: a kernel without a transform raises)
ROUTES = {
    "fourier": (Conv(GRID, 3, bc="periodic"), gaussian_stencil(3, 0.8).ravel(), {"alpha": 0.05, "normal": True}),
    "fourier-shift": (Conv(GRID, 3, bc="periodic"), gaussian_stencil(3, 0.8).ravel(), {"alpha": 0.3}),
    "kronecker": (Conv(GRID, (3, 3)), gaussian_stencil(3, 1.0).ravel(), {"alpha": 0.01, "normal": True}),
    "kronecker-plain": (Conv(GRID, (3, 3)), gaussian_stencil(3, 0.6).ravel(), {}),
    "cosine": (SymmetricConv(GRID, 3, bc="symmetric"), np.array([0.4, 0.15, 0.1, 0.05]), {"alpha": 0.02}),
}


def dense_inverse(k, theta, alpha: float = 0.0, normal: bool = False) -> np.ndarray:
    M = k.matrix(np.asarray(theta, dtype=np.float64))
    A = M.T @ M if normal else M
    return np.linalg.inv(A + alpha * np.eye(A.shape[0]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(ROUTES))
def test_stack_equals_loop_and_dense(name, dtype, rng, close):
    k, theta, kw = ROUTES[name]
    theta = theta.astype(dtype)
    A = inverse(k, theta, **kw)
    B = rng.standard_normal((4, *GRID)).astype(dtype)
    X = A @ B
    assert X.shape == B.shape and X.dtype == dtype
    loop = np.stack([A @ b for b in B])
    close(X, loop, dtype, A.shape[0])
    Ainv = dense_inverse(k, theta, **kw)
    ref = (Ainv @ B.reshape(4, -1).T.astype(np.float64)).T.reshape(B.shape)
    # a solve loses up to the condition number times the round-off of the products
    err = np.linalg.norm(X - ref) / np.linalg.norm(ref)
    assert err <= np.linalg.cond(Ainv) * default_rtol(dtype, A.shape[0]), err
    # with its channel axis: (m, 1, H, W) in, (m, 1, H, W) out
    X4 = A @ B[:, None]
    assert X4.shape == (4, 1, *GRID)
    close(X4[:, 0], X, dtype, A.shape[0])


def test_stack_of_one_and_columns_keep_pylops_meaning(rng):
    k, theta, kw = ROUTES["fourier"]
    A = inverse(k, theta, **kw)
    b = rng.standard_normal(GRID)
    assert (A @ b[None]).shape == (1, *GRID)  # (1, H, W) is one example of dims (1, H, W)
    cols = rng.standard_normal((A.shape[1], 3))
    assert (A @ cols).shape == (A.shape[0], 3)  # a 2-D block of columns: pylops' matmat
    np.testing.assert_array_equal(A @ cols, np.stack([A @ c for c in cols.T], axis=1))
    with pytest.raises(ValueError):
        A @ rng.standard_normal((3, 4, 5))  # neither an example nor a stack of them
