"""Learning a convolution stencil from input/output images with lsqr/lsmr on the Jacobian.

``K(θ)x`` is linear in the stencil ``θ``, so recovering ``θ`` from pairs ``(x_i, y_i = K(θ)x_i + e_i)``
is the linear least-squares problem ``min ||J(X) θ - vec(Y)||² + d²||θ||²`` with the
Jacobian ``J(X) = kernel.jac(θ0, X)`` -- solved matrix-free by ``structops.solvers.learn_stencil``.

The script recovers a 2-in / 3-out channel 3×3 stencil (reflect boundary) and a stride-2
5×5 stencil (zero boundary) from a few random images: exactly without noise, and within the
least-squares error bound with noise (with and without Tikhonov damping).

Run: ``python examples/learn_stencil.py --size 32``.
"""

from __future__ import annotations

import argparse

import numpy as np

import structops
from structops.solvers import learn_stencil


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32, help="image side (default 32)")
    parser.add_argument("--examples", type=int, default=4, help="number of training images")
    parser.add_argument("--noise", type=float, default=0.05, help="noise level relative to the output RMS")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    n = args.size
    edges = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])  # Sobel
    laplace = np.array([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
    cases = {
        "Conv 3×3, 2→3 channels, reflect": (
            structops.Conv((n, n), (3, 3), bc="reflect", in_channels=2, out_channels=3),
            np.stack([np.stack([edges, laplace]), np.stack([edges.T, -edges]), np.stack([laplace, edges.T])]),
        ),
        "Conv 5×5, stride 2, zero": (
            structops.Conv((n, n), (5, 5), bc="zero", stride=2),
            np.outer(np.hanning(7)[1:-1], np.hanning(7)[1:-1])[None, None] + 0.1 * rng.standard_normal((1, 1, 5, 5)),
        ),
    }
    results = {}
    print(f"{'family':<36}{'setting':<22}{'solver':<7}{'iter':>6}{'‖θ̂-θ‖/‖θ‖':>13}{'misfit':>11}")
    for name, (kernel, stencil) in cases.items():
        theta = stencil.ravel()
        X = rng.standard_normal((args.examples, *kernel.in_shape))
        Y = kernel.apply(theta, X)
        noise = args.noise * np.sqrt(np.mean(Y**2)) * rng.standard_normal(Y.shape)
        for setting, data, damp in [
            ("noise-free", Y, 0.0),
            ("noisy", Y + noise, 0.0),
            ("noisy, damp=1", Y + noise, 1.0),
        ]:
            for solver in ("lsqr", "lsmr"):
                fit = learn_stencil(kernel, X, data, solver=solver, damp=damp)
                err = np.linalg.norm(fit.theta - theta) / np.linalg.norm(theta)
                results[(name, setting, solver)] = err
                print(f"{name:<36}{setting:<22}{solver:<7}{fit.iterations:>6}{err:>13.2e}{fit.relative_residual:>11.2e}")
    return results


if __name__ == "__main__":
    main()
