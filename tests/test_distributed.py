"""structops.distributed: pylops-mpi operators over examples split across MPI ranks.

In-process tests run on one rank (``COMM_WORLD`` of a plain ``python``); the multi-rank checks
run ``tests/_mpi_checks.py`` under ``mpiexec -n 2`` and compare every distributed product with
the serial operators on the whole batch.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pylops_mpi")
pytest.importorskip("mpi4py")

import structops
from structops import distributed as D
from structops.solvers import learn_stencil


class FakeComm:
    """Just what :func:`structops.distributed.local_rows` asks of a communicator."""

    def __init__(self, size, rank):
        self.size, self.rank = size, rank

    def Get_size(self):
        return self.size

    def Get_rank(self):
        return self.rank


@pytest.mark.parametrize("n", [0, 1, 5, 12, 13])
@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_local_rows_partition_the_batch_like_pylops_mpi(n, size):
    from pylops_mpi import Partition
    from pylops_mpi.DistributedArray import local_split

    shares = [D.local_rows(n, FakeComm(size, r)) for r in range(size)]
    covered = np.concatenate([np.arange(n)[s] for s in shares])
    np.testing.assert_array_equal(covered, np.arange(n))  # contiguous, in rank order, disjoint
    for r, s in enumerate(shares):
        assert (s.stop - s.start,) == local_split((n,), FakeComm(size, r), Partition.SCATTER, 0)


@pytest.mark.parametrize(
    ("bad", "error", "message"),
    [
        (-1, ValueError, r"`n` must be an integer >= 0, got -1"),
        (2.5, TypeError, r"`n` must be an integer, got 2.5"),
        ("3", TypeError, r"`n` must be an integer, got '3'"),
        (True, TypeError, r"`n` must be an integer, got True"),
    ],
)
def test_local_rows_rejects_bad_counts(bad, error, message):
    with pytest.raises(error, match=message):
        D.local_rows(bad)


@pytest.mark.parametrize("transpose", [False, True])
def test_one_rank_matches_the_serial_operators(transpose, dtype, rng):
    k = structops.Conv((9, 8), (3, 3), bc="periodic", in_channels=2, out_channels=3)
    n = 4
    rows_in, rows_out = k.shape if transpose else k.shape[::-1]
    X = rng.standard_normal((n, rows_in)).astype(dtype)
    W = rng.standard_normal((n, rows_out)).astype(dtype)
    theta = k.random_theta(rng, dtype=dtype)
    v = rng.standard_normal(k.nparams).astype(dtype)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=1e-4, atol=1e-4)

    J = D.jacobian(k, theta, X, transpose=transpose)
    Jref = k.jac(theta, X, transpose=transpose)
    np.testing.assert_allclose(J.matvec(D.broadcast(v)).asarray(), Jref.matvec(v), **tol)
    np.testing.assert_allclose(J.rmatvec(D.scatter(W)).asarray(), Jref.rmatvec(W.ravel()), **tol)

    op = D.operator(k, theta, n, transpose=transpose)
    assert op.shape == (W.size, X.size)
    np.testing.assert_allclose(op.matvec(D.scatter(X)).asarray(), k.apply(theta, X, transpose=transpose).ravel(), **tol)
    back = k.apply(theta, W, transpose=not transpose).ravel()
    np.testing.assert_allclose(op.rmatvec(D.scatter(W)).asarray(), back, **tol)


def test_batch_operator_passes_the_adjoint_test(rng):
    from structops.testing import adjoint_test

    k = structops.Conv((7, 6), (3, 2), bc="reflect", in_channels=2, out_channels=2, stride=(2, 1))
    B = D.BatchOperator(k, k.random_theta(rng), 3)
    assert B.shape == (3 * k.shape[0], 3 * k.shape[1])
    adjoint_test(B, rng=rng)


def test_learn_stencil_recovers_theta_like_the_serial_solver(rng):
    k = structops.Conv((16, 16), (3, 3), bc="zero")
    theta = rng.standard_normal(k.nparams)
    X = rng.standard_normal((3, 1, 16, 16))
    Y = k.apply(theta, X) + 1e-3 * rng.standard_normal((3, 1, 16, 16))
    fit = D.learn_stencil(k, X, Y)
    serial = learn_stencil(k, X, Y)
    np.testing.assert_allclose(fit.theta, serial.theta, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(fit.residual_norm, serial.residual_norm, rtol=1e-8)
    assert 0 < fit.relative_residual < 1e-2
    damped = D.learn_stencil(k, X, Y, damp=10.0)
    np.testing.assert_allclose(damped.theta, learn_stencil(k, X, Y, damp=10.0).theta, rtol=1e-6, atol=1e-9)
    assert np.linalg.norm(damped.theta) < np.linalg.norm(fit.theta)


def test_learn_stencil_rejects_what_the_serial_solver_rejects(rng):
    k = structops.Conv(8, 3)
    X = rng.standard_normal((2, 8))
    with pytest.raises(TypeError, match="not affine"):
        D.learn_stencil(structops.Softplus(k), X, X)
    with pytest.raises(ValueError, match="`Y`"):
        D.learn_stencil(k, X, X[:, :5])
    with pytest.raises(ValueError, match="`damp`"):
        D.learn_stencil(k, X, X, damp=-1.0)
    with pytest.raises(ValueError, match="`maxiter`"):
        D.learn_stencil(k, X, X, maxiter=0)
    with pytest.raises(ValueError, match="no examples on any rank"):
        D.learn_stencil(k, X[:0], X[:0])


def _mpiexec() -> str | None:
    here = Path(sys.executable).parent
    return shutil.which("mpiexec", path=f"{here}{os.pathsep}{os.environ.get('PATH', '')}")


@pytest.mark.skipif(_mpiexec() is None, reason="no mpiexec (pip install mpich)")
def test_two_ranks_match_the_serial_operators():
    script = Path(__file__).with_name("_mpi_checks.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    run = subprocess.run(
        [_mpiexec(), "-n", "2", sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "ok 2" in run.stdout


@pytest.mark.slow  # the example end to end on two ranks; the quick run keeps the two-rank operators above
@pytest.mark.skipif(_mpiexec() is None, reason="no mpiexec (pip install mpich)")
def test_distributed_deblur_example_learns_the_blur_and_deblurs():
    script = Path(__file__).resolve().parents[1] / "examples" / "distributed_deblur.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [_mpiexec(), "-n", "2", sys.executable, str(script), "--images", "6", "--size", "48"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = run.stdout
    assert "2 rank(s), 6 images 48×48" in out
    stencil = float(re.search(r"learned stencil: relative error (\S+)", out).group(1))
    blurred, restored = map(float, re.search(r"blurred (\S+), deblurred (\S+)", out).groups())
    assert stencil < 0.1
    assert restored < 0.9 * blurred


def test_learn_stencil_refuses_a_fit_outside_the_bounds(rng):
    # the serial solver redoes such a fit within the bounds; the distributed one says it cannot
    from structops import MMatrix

    k = MMatrix(3)
    theta = np.array([1.0, 0.0, 2.0, 0.0, 0.5, 3.0])
    X = rng.standard_normal((6, 3))
    Y = k.apply(theta, X).reshape(6, -1) + 0.3 * rng.standard_normal((6, 3))
    serial = learn_stencil(k, X, Y)
    assert serial.solver == "lsq_linear"  # the unconstrained fit left the bounds
    with pytest.raises(ValueError, match="leaves the bounds of MMatrix"):
        D.learn_stencil(k, X, Y)
    feasible = D.learn_stencil(k, X, k.apply(theta + 1.0, X).reshape(6, -1))
    np.testing.assert_allclose(feasible.theta, theta + 1.0, atol=1e-8)


def test_learn_stencil_takes_the_serial_keywords_and_returns_a_learn_result(rng):
    import inspect

    from structops.solvers import LearnResult

    serial, dist = inspect.signature(learn_stencil).parameters, inspect.signature(D.learn_stencil).parameters
    for name in ("damp", "transpose", "atol", "btol", "maxiter", "theta0"):
        assert dist[name].kind is inspect.Parameter.KEYWORD_ONLY, name
        assert dist[name].default == serial[name].default, name
    k = structops.Conv((12, 12), (3, 3), bc="periodic")
    theta = rng.standard_normal(k.nparams)
    X = rng.standard_normal((2, 1, 12, 12))
    exact = D.learn_stencil(k, X, k.apply(theta, X))  # consistent data: LSQR's first test stops it
    assert isinstance(exact, LearnResult) and exact.solver == "cgls"
    assert (exact.istop, exact.converged) == (1, True)
    np.testing.assert_allclose(exact.theta, theta, rtol=1e-10, atol=1e-10)
    Y = k.apply(theta, X) + 0.1 * rng.standard_normal((2, 1, 12, 12))
    noisy = D.learn_stencil(k, X, Y, atol=1e-6, btol=1e-6)  # least squares: the second test stops it
    assert (noisy.istop, noisy.converged) == (2, True)
    np.testing.assert_allclose(noisy.theta, learn_stencil(k, X, Y).theta, rtol=1e-5, atol=1e-6)
    capped = D.learn_stencil(k, X, Y, maxiter=2)
    assert (capped.istop, capped.iterations, capped.converged) == (7, 2, False)
    zero = D.learn_stencil(k, X, np.zeros_like(Y))
    assert (zero.istop, zero.iterations, zero.relative_residual) == (0, 0, 0.0)
    assert not zero.theta.any()
    X32, Y32 = X.astype(np.float32), Y.astype(np.float32)
    assert D.learn_stencil(k, X32, Y32).theta.dtype == np.float32
    for name in ("atol", "btol"):
        with pytest.raises(ValueError, match=f"`{name}` must be a finite number >= 0"):
            D.learn_stencil(k, X, Y, **{name: -1.0})
