"""``Q`` is O(nnz) in memory and time: families with ``10**12`` entries of ``vec(K)`` build it.

``Q`` has ``rows * cols`` rows, one per entry of ``K``; a CSR array (or a sparse product) over
those rows costs ``O(n**2)`` for an ``n x n`` family. The reference at small sizes is the
contract's generic construction, column ``k`` of ``Q`` being ``vec(K(e_k)) - vec(K(0))``.
"""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp

from structops import Antisymmetric, Banded, Diagonal, MMatrix, Sparse
from structops.kernels import Dense, LinearKernel, ParametricKernel
from structops.kernels.compose import Chain
from structops.kernels.reparam import LinearReparam

from ._helpers import atol_for

#: Bytes of traced allocations allowed per nonzero of Q: its CSC arrays (12-16 bytes) plus the
#: pattern and a few temporaries of the same length, and nothing that grows with rows * cols.
BYTES_PER_NNZ = 160


def _peak(fn):
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        start = time.perf_counter()
        out = fn()
        seconds = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return out, peak, seconds


def _reparam(n: int) -> LinearReparam:
    # every parameter of the diagonal tied to its neighbour: P is n x ceil(n / 2)
    P = sp.csr_array((np.ones(n), (np.arange(n), np.arange(n) // 2)), shape=(n, (n + 1) // 2))
    return LinearReparam(Diagonal(n), P)


def _chain(n: int) -> Chain:
    # a sparse bidiagonal map after a tridiagonal family
    A = sp.diags_array([np.ones(n), -np.ones(n - 1)], offsets=[0, 1], format="csr")
    return Chain(A, Banded(n, 1, 1))


SMALL = {
    "diagonal": lambda: Diagonal(5),
    "banded": lambda: Banded(6, 2, 1),
    "sparse": lambda: Sparse(sp.random_array((5, 4), density=0.4, random_state=2, format="csr")),
    "mmatrix": lambda: MMatrix(4),
    "antisymmetric": lambda: Antisymmetric(4),
    "dense": lambda: Dense(3, 4),
    "linear-offset": lambda: LinearKernel(
        sp.random_array((12, 5), density=0.3, random_state=3), (4, 3), q=np.arange(12.0)
    ),
    "reparam": lambda: _reparam(5),
    "chain": lambda: _chain(6),
}


@pytest.mark.parametrize("make", SMALL.values(), ids=SMALL.keys())
def test_Q_equals_the_column_by_column_reference_at_small_sizes(make):
    k = make()
    Q = k.Q
    assert sp.issparse(Q) and Q.format == "csc"
    assert Q.shape == (k.shape[0] * k.shape[1], k.nparams)
    np.testing.assert_allclose(
        Q.toarray(),
        ParametricKernel._build_Q(k).toarray(),
        rtol=0,
        atol=atol_for(ParametricKernel._build_Q(k).toarray()),
    )
    theta = k.random_theta(0)
    q = np.zeros(Q.shape[0]) if k.q is None else k.q
    np.testing.assert_allclose(
        Q @ theta + q, k.matrix(theta).ravel(order="F"), rtol=0, atol=atol_for(k.matrix(theta).ravel(order="F"))
    )


LARGE = {
    "Diagonal(10**6)": (lambda: Diagonal(10**6), 10**6),
    "Banded(10**6, 1, 1)": (lambda: Banded(10**6, 1, 1), 3 * 10**6 - 2),
    "Sparse(identity(10**6))": (lambda: Sparse(sp.identity(10**6, format="csr")), 10**6),
    "LinearReparam(Diagonal(10**6))": (lambda: _reparam(10**6), 10**6),
    "Chain(bidiagonal, Banded(10**5))": (lambda: _chain(10**5), None),
}


@pytest.mark.parametrize(("make", "nnz"), LARGE.values(), ids=LARGE.keys())
def test_Q_at_a_million_rows_is_linear_in_its_nonzeros(make, nnz):
    k = make()
    Q, peak, seconds = _peak(lambda: k.Q)
    rows, cols = k.shape
    assert Q.shape == (rows * cols, k.nparams)
    if nnz is not None:
        assert Q.nnz == nnz
    assert peak < BYTES_PER_NNZ * Q.nnz, f"Q of {k!r} peaked at {peak:,} bytes for {Q.nnz:,} nonzeros"
    assert seconds < 30, f"Q of {k!r} took {seconds:.1f} s"
    # spot-check a few columns against K(e_k) applied to the unit vectors it touches
    for j in (0, k.nparams // 2, k.nparams - 1):
        e = np.zeros(k.nparams)
        e[j] = 1.0
        col = Q[:, [j]].tocoo()
        r, c = col.row % rows, col.row // rows
        Kx = k.apply(e, np.eye(1, cols, int(c[0]))[0][None])[0].reshape(-1)
        np.testing.assert_array_equal(Kx[r[c == c[0]]], col.data[c == c[0]])
