r"""Sparse building blocks for :math:`Q` in :math:`O(\operatorname{nnz})` memory and time.

:math:`Q` has ``rows * cols`` rows (one per entry of :math:`K`), almost all of them empty. A
CSR array of that shape holds ``rows * cols + 1`` row pointers, and scipy's sparse product
keeps a work array over the rows of its result, so both are :math:`O(n^2)` for an
:math:`n \times n` family. The helpers here never make an array over all rows: they work on
COO triplets and return CSC (whose pointers run over the ``p`` columns).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

__all__ = ["csc_from_triplets", "lift_rows", "matmul_tall"]


def csc_from_triplets(data: np.ndarray, rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> sp.csc_array:
    r"""CSC array of ``shape`` from COO triplets (duplicates summed); :math:`O(\text{nnz} + \text{cols})`."""
    Q = sp.coo_array((data, (rows, cols)), shape=shape).tocsc()
    Q.sum_duplicates()
    return Q


def matmul_tall(A, B) -> sp.csc_array:
    r"""``A @ B`` as CSC for a tall ``A`` with mostly empty rows, in :math:`O(\operatorname{nnz})` memory.

    The product runs on the nonzero rows of ``A`` only (``A_R``): :math:`AB` has the rows of
    :math:`A_R B` at the same places. Memory is that of the nonzeros plus ``B.shape[1]``.
    """
    A = sp.coo_array(A)
    lin, local = np.unique(A.row.astype(np.int64), return_inverse=True)
    AR = sp.csr_array((A.data, (local.reshape(-1), A.col)), shape=(lin.size, A.shape[1]))
    C = sp.coo_array(AR @ sp.csr_array(B))
    return csc_from_triplets(C.data, lin[C.row], C.col, (A.shape[0], B.shape[1]))


def lift_rows(A, Q, rows_in: int) -> sp.csc_array:
    r""":math:`(I_N \otimes A)\,Q` as CSC, never forming :math:`I_N \otimes A` (N nnz(A) entries).

    Row :math:`r + c\,m` of ``Q`` (``m = rows_in``: entry :math:`(r, c)` of a column-major
    :math:`m \times N` matrix) spreads over the rows :math:`i + c\,m'` of the result for every
    nonzero :math:`A_{ir}` (``A`` is :math:`m' \times m`). Time and memory are the number of
    such products, before duplicates are summed.
    """
    A = sp.csc_array(A)
    A.sum_duplicates()
    Qc = sp.coo_array(Q)
    lin = Qc.row.astype(np.int64)
    r, c = lin % rows_in, lin // rows_in
    count = np.diff(A.indptr)[r].astype(np.int64)
    which = np.repeat(np.arange(Qc.nnz), count)
    first = np.repeat(A.indptr[r].astype(np.int64) - (np.cumsum(count) - count), count)
    pos = first + np.arange(which.size, dtype=np.int64)
    rows_out = A.shape[0]
    new_rows = A.indices[pos].astype(np.int64) + c[which] * rows_out
    cols_of_K = Qc.shape[0] // rows_in
    return csc_from_triplets(Qc.data[which] * A.data[pos], new_rows, Qc.col[which], (rows_out * cols_of_K, Qc.shape[1]))
