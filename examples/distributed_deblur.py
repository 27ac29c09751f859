"""Blind deblurring of an image stack spread over MPI ranks, with pylops-mpi.

Every rank holds its own share of a stack of blurred, noisy images (shifted and scaled
phantoms). The script

1. learns the unknown 7×7 blur stencil from the first few (sharp, blurred) pairs of every
   rank -- ``structops.distributed.learn_stencil``: CGLS on the Jacobian stacked over the ranks
   (one ``allreduce`` of 49 numbers per iteration);
2. deblurs every rank's images at once with Tikhonov-regularised CGLS on the block-diagonal
   operator ``I ⊗ K(θ̂)`` (``structops.distributed.operator``, a ``pylops_mpi.MPIBlockDiag``),

and rank 0 prints the stencil error and the mean error of the blurred and deblurred images.

Run: ``mpiexec -n 2 python examples/distributed_deblur.py --images 16 --size 64``
(or plain ``python`` for one rank). Needs ``pip install "structops[mpi]"`` (pylops-mpi, mpi4py, mpich).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

try:
    import pylops_mpi
    from mpi4py import MPI
except ModuleNotFoundError as missing:  # the `mpi` extra is optional: say which, not a traceback
    raise SystemExit(
        f"examples/distributed_deblur.py needs the `mpi` extra (pylops-mpi, mpi4py, mpich), and "
        f"{missing.name} is not installed: pip install \"structops[mpi]\" (or -e \".[mpi]\" from a clone)"
    ) from None

import structops
from structops import distributed
from structops.data import gaussian_stencil, phantom


def images(rows: slice, size: int) -> np.ndarray:
    """The images ``rows`` of the stack: phantoms rolled and scaled per image (deterministic)."""
    base = phantom(size)
    out = [np.roll(base, (3 * i, -5 * i), axis=(0, 1)) * (0.6 + 0.4 * np.cos(i)) for i in range(rows.start, rows.stop)]
    return np.asarray(out, dtype=np.float64).reshape(-1, 1, size, size)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16, help="images in the whole stack (default 16)")
    parser.add_argument("--size", type=int, default=64, help="image side (default 64)")
    parser.add_argument("--pairs", type=int, default=2, help="calibration pairs per rank (default 2)")
    parser.add_argument("--noise", type=float, default=0.01, help="noise standard deviation (default 0.01)")
    parser.add_argument("--alpha", type=float, default=1e-2, help="Tikhonov weight (default 1e-2)")
    args = parser.parse_args(argv)
    comm = MPI.COMM_WORLD
    structops.set_num_threads(distributed.threads_per_rank())  # no oversubscribed cores
    t0 = time.perf_counter()

    kernel = structops.Conv((args.size, args.size), (7, 7), bc="zero")
    theta = gaussian_stencil(7, 1.4).ravel()  # the blur, unknown to the solver
    rows = distributed.local_rows(args.images)
    sharp = images(rows, args.size)
    rng = np.random.default_rng(1000 + comm.rank)
    blurred = kernel.apply(theta, sharp) + args.noise * rng.standard_normal(sharp.shape)

    # 1. the stencil from the calibration pairs of every rank
    pairs = slice(0, min(args.pairs, sharp.shape[0]))
    fit = distributed.learn_stencil(kernel, sharp[pairs], blurred[pairs], damp=1e-2)
    stencil_error = float(np.linalg.norm(fit.theta - theta) / np.linalg.norm(theta))

    # 2. every rank's images at once: min ||K x - y||² + α ||x||² by CGLS on I ⊗ K(θ̂)
    K = distributed.operator(kernel, fit.theta, sharp.shape[0])
    y = distributed.scatter(blurred)
    x0 = distributed.scatter(np.zeros_like(blurred))
    x = pylops_mpi.cgls(K, y, x0=x0, niter=60, damp=float(np.sqrt(args.alpha)), tol=0.0)[0]
    restored = x.local_array.reshape(sharp.shape)

    def mean_error(images_: np.ndarray) -> float:
        local = np.linalg.norm((images_ - sharp).reshape(sharp.shape[0], -1), axis=1).sum()
        norm = np.linalg.norm(sharp.reshape(sharp.shape[0], -1), axis=1).sum()
        total, total_norm = comm.allreduce(local), comm.allreduce(norm)
        return float(total / total_norm)

    result = {
        "ranks": comm.size,
        "stencil_error": stencil_error,
        "stencil_iterations": fit.iterations,
        "blurred_error": mean_error(blurred),
        "restored_error": mean_error(restored),
        "seconds": time.perf_counter() - t0,
    }
    if comm.rank == 0:
        print(
            f"{comm.size} rank(s), {args.images} images {args.size}×{args.size}\n"
            f"learned stencil: relative error {stencil_error:.2e} after {fit.iterations} CGLS iterations\n"
            f"mean relative error: blurred {result['blurred_error']:.3f}, deblurred {result['restored_error']:.3f}\n"
            f"time {result['seconds']:.1f} s"
        )
    return result


if __name__ == "__main__":
    main()
