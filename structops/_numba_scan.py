"""The numba sum behind the NaN/Inf scan of input batches (imported only when numba is installed)."""

from __future__ import annotations

import numba as nb


@nb.njit(parallel=True, fastmath={"reassoc", "nsz", "arcp", "contract"}, cache=True, nogil=True)
def total(a):  # pragma: no cover - compiled
    """Sum of a 1-D array on numba's threads (input validation's NaN/Inf scan).

    Reassociation lets LLVM vectorise; unlike full ``fastmath`` these flags keep NaN and Inf
    semantics, so a NaN or Inf entry makes the sum NaN or Inf.
    """
    s = 0.0
    for i in nb.prange(a.shape[0]):
        s += a[i]
    return s
