"""Compile the numba convolution kernels into numba's on-disk cache, for ``tests/conftest.py``.

A first (cold) test run spends about a minute of one core compiling :class:`structops.Conv`'s
three numba kernels (forward, adjoint, stencil gradient) for float32 and float64, and about 40 s
more for :class:`structops.CayleyConv`'s FFT kernels. The conftest
runs this script in a second process at the start of the session, so that on two cores the
compilation overlaps collection and the first tests; the test process then loads from numba's
cache what this process has already written (numba rereads its cache index before compiling a
new signature), and compiles itself only what is not there yet. Nothing is asserted here: the
tests check the kernels. With a warm cache this only loads them.
"""

from __future__ import annotations

import numpy as np

import structops


def main() -> None:
    for dtype in (np.float32, np.float64):  # in the order the first tests need them
        kernel = structops.Conv((6, 6), (3, 3), in_channels=2, out_channels=2, method="direct")
        if kernel.backend != "numba":
            return
        theta = kernel.random_theta(0, dtype=dtype)
        x = np.ones((2, kernel.shape[1]), dtype=dtype)
        y = kernel.apply(theta, x)
        kernel.apply(theta, y, transpose=True)
        kernel.jac(theta, x).H @ y.ravel()
    # the Cholesky test of the certified projection (structops.solvers._fastclip.within)
    layer = structops.Conv((6, 6), (3, 3), in_channels=2, out_channels=2)
    structops.solvers.project_spectral_norm(layer, np.ones(layer.nparams), 0.1)
    # CayleyConv's 2-D real FFTs (structops.kernels.conv._numba_fft) and float32 resolvents
    cayley = structops.CayleyConv((6, 6), 3, channels=2)
    for dtype in (np.float32, np.float64):
        theta = cayley.random_theta(0, dtype=dtype)
        x = np.ones((2, cayley.shape[1]), dtype=dtype)
        cayley.jac(theta, x).H @ cayley.apply(theta, x).ravel()


if __name__ == "__main__":
    main()
