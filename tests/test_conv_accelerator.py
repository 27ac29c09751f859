"""The numba direct method and the pure-numpy direct method are the same operator."""

import itertools

import numpy as np
import pytest

import structops
from structops import _backend
from structops.kernels.conv import _core as core
from structops.testing import default_rtol

from ._helpers import atol_for

pytest.importorskip("numba")

CASES = [
    ((9,), (3,), "zero", 1, 1, 1),
    ((10,), (4,), "periodic", 2, 3, 2),
    ((7, 6), (3, 2), "reflect", 2, 2, (1, 2)),
    ((8, 5), (5, 5), "replicate", 1, 3, 1),
    ((6, 7), (3, 3), "valid", 3, 2, 2),
    ((4, 5, 3), (3, 2, 3), "zero", 2, 1, 1),
    ((4, 3, 5), (2, 3, 3), "periodic", 1, 2, (2, 1, 1)),
    # four or more channels: the register-blocked kernels and their leftover channels
    ((9, 8), (3, 3), "zero", 5, 9, 1),
    ((6, 7), (3, 2), "reflect", 9, 4, (2, 1)),
    ((11,), (4,), "periodic", 8, 8, 1),
]


@pytest.fixture
def numpy_backend():
    yield
    _backend.set_accelerator("numba")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[2]}")
def test_numba_and_numpy_direct_paths_agree(case, dtype, numpy_backend):
    grid, stencil, bc, cin, cout, stride = case

    def family():
        return structops.Conv(grid, stencil, bc=bc, in_channels=cin, out_channels=cout, stride=stride, method="direct")

    k = family()
    rng = np.random.default_rng(7)
    theta = rng.standard_normal(k.nparams).astype(dtype)
    # 29 examples: several per parallel block, so the gradient kernel sweeps groups of
    # examples laid end to end (and an uneven last group)
    x = rng.standard_normal((29, *k.in_shape)).astype(dtype)
    y = rng.standard_normal((29, *k.out_shape)).astype(dtype)
    assert core._group(k.geometry, dtype) >= 4
    results = {}
    for backend in ("numba", "numpy"):
        _backend.set_accelerator(backend)
        assert _backend.accelerator().startswith(backend)
        k = family()  # the backend is the family's, fixed when it is built
        assert k.backend == backend
        J = k.jac(theta, x)
        results[backend] = (
            k.apply(theta, x),
            k.apply(theta, y, transpose=True),
            J.rmatvec(y.ravel()),
            J.per_example(y),
        )
    tol = default_rtol(dtype, k.shape[0] * k.shape[1])
    for a, b in itertools.zip_longest(results["numba"], results["numpy"]):
        assert a.dtype == b.dtype == dtype
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * np.abs(b).max())


def test_switching_the_accelerator_after_construction_changes_no_family(numpy_backend, monkeypatch):
    # the direct sums run on the engine switched on when the family was built, whatever the
    # switch says at the time of a product; the cost model keeps pricing that engine
    ran = []
    for name in ("numba_forward", "numba_adjoint", "numba_gradient"):
        monkeypatch.setattr(core, name, _recording(getattr(core, name), ran, "numba"))
    for name in ("direct_forward", "direct_adjoint", "direct_gradient"):
        monkeypatch.setattr(core, name, _recording(getattr(core, name), ran, "numpy"))
    rng = np.random.default_rng(3)
    for built_with, switched_to in (("numba", "numpy"), ("numpy", "numba")):
        _backend.set_accelerator(built_with)
        k = structops.Conv((12, 10), (3, 3), in_channels=2, out_channels=2, method="direct")
        auto = structops.Conv((32, 32), (7, 7), in_channels=4, out_channels=4)  # direct with numba, else FFT
        _backend.set_accelerator(switched_to)
        assert k.backend == auto.backend == built_with
        assert auto.method == auto._choose_method() == ("direct" if built_with == "numba" else "fft")
        theta = k.random_theta(rng)
        x = rng.standard_normal((2, *k.in_shape))
        y = rng.standard_normal((2, *k.out_shape))
        ran.clear()
        k.apply(theta, x)
        k.apply(theta, y, transpose=True)
        k.jac(theta, x).rmatvec(y.ravel())
        assert ran == [built_with] * 3


def _recording(fn, log, name):
    def wrapped(*args, **kwargs):
        log.append(name)
        return fn(*args, **kwargs)

    return wrapped


def test_set_accelerator_rejects_unknown_names():
    with pytest.raises(ValueError, match="name"):
        _backend.set_accelerator("cuda")


def test_thread_count_is_public_validated_and_changes_no_result(rng):
    k = structops.Conv((20, 18), (5, 5), in_channels=2, out_channels=3)
    theta = k.random_theta(rng)
    X = rng.standard_normal((7, k.shape[1]))
    ref = k.apply(theta, X)
    try:
        structops.set_num_threads(1)
        assert _backend.workers() == 1
        np.testing.assert_allclose(k.apply(theta, X), ref, rtol=0, atol=atol_for(ref))
        for bad in (0, -2, 1.5, "2"):
            with pytest.raises((ValueError, TypeError), match="threads"):
                structops.set_num_threads(bad)
    finally:
        structops.set_num_threads(None)
    assert _backend.workers() == 1  # one FFT worker by default (issue 24)
    assert structops.accelerator() == _backend.accelerator()


# ------------------------------------------------------- register blocking by CPU (issue 16)
@pytest.mark.parametrize(
    "cpu, features, registers",
    [
        ("haswell", "", 16),
        ("znver3", "", 16),
        ("alderlake", "", 16),
        ("znver4", "", 32),
        ("skylake-avx512", "", 32),
        ("haswell", "+avx2,+fma,+avx512f", 32),  # NUMBA_CPU_NAME=haswell on an AVX-512 host
        ("znver4", "+avx2,-avx512f", 16),
        ("generic", "", 16),
    ],
)
def test_vector_registers_follow_the_cpu_name_and_features(cpu, features, registers):
    from structops.kernels.conv import _numba

    assert _numba.vector_registers(cpu, features) == registers


def test_the_blocking_chosen_at_import_is_that_of_numbas_target():
    from numba.core.registry import cpu_target

    from structops.kernels.conv import _numba

    codegen = cpu_target.target_context.codegen()
    wide = _numba.vector_registers(codegen._get_host_cpu_name(), codegen._tm_features) >= 32
    assert _numba._WIDE is wide


_AVX2_CHECK = """
import numpy as np, structops
from structops import _backend
from structops.kernels.conv import _numba
assert not _numba._WIDE
rng = np.random.default_rng(3)
for grid, stencil, bc, cin, cout in [((9, 8), (2, 2), "zero", 5, 9), ((7, 6), (3, 3), "periodic", 4, 4)]:
    k = structops.Conv(grid, stencil, bc=bc, in_channels=cin, out_channels=cout, method="direct")
    th = rng.standard_normal(k.nparams).astype(np.float32)
    x = rng.standard_normal((29, *k.in_shape)).astype(np.float32)
    y = rng.standard_normal((29, *k.out_shape)).astype(np.float32)
    res = []
    for name in ("numba", "numpy"):
        _backend.set_accelerator(name)
        res.append((k.apply(th, x), k.apply(th, y, transpose=True), k.jac(th, x).rmatvec(y.ravel())))
    for a, b in zip(*res):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(b).max())
print("ok")
"""


# slow: a fresh interpreter compiling every kernel for a second CPU target (30 s on a cold cache);
# the quick run under CI's AVX2 settings (NUMBA_CPU_NAME=haswell) runs every numba test on 16 registers
@pytest.mark.slow
def test_the_16_register_kernels_agree_with_numpy():
    """Compiled for a Haswell target (AVX2, 16 registers) whatever this machine is."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = dict(os.environ, NUMBA_CPU_NAME="haswell", NUMBA_CPU_FEATURES="", NUMBA_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", _AVX2_CHECK], capture_output=True, text=True, env=env)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
