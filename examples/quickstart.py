"""Quick start: the kernel contract on the lecture notes' models and on a 2D convolution.

The models are those of Lars Ruthotto's lecture notes *Numerical Methods for Deep Learning*,
"Parametric Models". Run with ``python examples/quickstart.py``; every random draw is seeded,
so each run prints the same numbers. Every family offers ``matrix``, ``Q``, ``op``,
``apply`` and ``jac``; the checks of :mod:`structops.testing` run on any of them.
"""

import numpy as np
import scipy.sparse.linalg as spla

import structops as so
from structops.testing import adjoint_test, check_kernel, taylor_test

rng = np.random.default_rng(0)

# The lecture notes' 3x3 M-matrix and its 9x6 Q (vec stacks columns).
k = so.MMatrix(3)
theta = np.arange(1.0, 7.0)
print("K(theta) =\n", k.matrix(theta))
print("Q =\n", k.Q.toarray().astype(int))

# A 2D convolution, 3 -> 4 channels, periodic boundary, applied to a batch of 16 images.
conv = so.Conv((32, 32), (3, 3), bc="periodic", in_channels=3, out_channels=4)
theta = rng.standard_normal(conv.nparams)
X = rng.standard_normal((16, 3, 32, 32))
Z = conv.apply(theta, X)  # (16, 4, 32, 32)
print("apply:", X.shape, "->", Z.shape, "with", conv.nparams, "parameters")

# Its Jacobian with respect to theta: the gradient of <W, K(theta) X> summed over examples.
J = conv.jac(theta, X)
W = rng.standard_normal(Z.shape)
grad = J.rmatvec(W.ravel())
print("gradient shape:", grad.shape, "per-example:", J.per_example(W).shape)

# The checks users run on their own kernels.
print("adjoint test gap:", adjoint_test(conv.op(theta), rng=0).error)
print(taylor_test(lambda t: conv.apply(t, X[:2]), conv.jac(theta, X[:2]), theta, rng=0))
print(check_kernel(so.Conv((6, 5), (3, 2), bc="reflect", in_channels=2, out_channels=2, stride=(1, 2)), rng=0))

# Scipy's solvers take the operators as they are: a shifted antisymmetric system with GMRES.
A = so.Antisymmetric(50).op(rng.standard_normal(50 * 49 // 2))
import pylops  # noqa: E402

shifted = A + 5.0 * pylops.Identity(50)
b = rng.standard_normal(50)
x, info = spla.gmres(shifted, b, rtol=1e-10)
print("gmres info:", info, "residual:", np.linalg.norm(shifted @ x - b))

# Periodic single-channel convolutions are diagonalised by the FFT.
c1 = so.Conv(16, 3, bc="periodic")
lam = c1.eigvals(np.array([1.0, -2.0, 1.0]))
print("eigenvalues of the periodic Laplacian stencil:", np.round(np.sort(lam.real), 3))
