"""Default threads against one thread, each in a fresh process (issue 24).

Two workloads, timed in a child interpreter per run (the thread pools are chosen at import, so
every configuration needs a process of its own):

* **cgls**: pylops' ``cgls`` (50 iterations, ``tol=0``) on ``Conv((256, 256), (9, 9))`` with a
  zero boundary and a Gaussian stencil (σ = 2); also the time spent inside structops' products
  (``matvec`` + ``rmatvec``), the rest being pylops' own vector operations (BLAS dot products);
* **tikhonov**: ``structops.solvers.tikhonov`` at 512² with the same blur, α = 1e-3 (the exact
  Kronecker route: SVDs of the two 512×512 Toeplitz factors and basis changes).
* **cgls, pylops only** (the control): the same ``cgls`` on pylops' own
  ``Convolve2D`` of the same blur, no structops involved: what the configuration does to
  pylops' vector operations alone.

Configurations: **default** (no thread variable set: structops' own policy, see
``structops._backend``), **one** (``OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1
OPENBLAS_NUM_THREADS=1``) and, with ``--blas-one``, **default+blas1** (only
``OPENBLAS_NUM_THREADS=1``: shows what BLAS's own threads cost in pylops' dot products, which
run outside structops). Runs are interleaved (default, one, default, one, ...); each child
times its workloads ``--inner`` times after a warm-up and reports the median; the table shows
the median over ``--repeats`` children of wall and CPU time, and the ratio to **one**'s
medians (target ≤ 1.1×).

Run: ``python benchmarks/bench_threads.py`` (``--repeats 3`` for a quicker run).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import _common
import numpy as np

_THREAD_VARS = ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
CONFIGS = {
    "default": {},
    "one": {"OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"},
    "default+blas1": {"OPENBLAS_NUM_THREADS": "1"},
}

CHILD = r"""
import json, sys, time
import numpy as np, pylops, structops
from structops import _backend
from structops.data import gaussian_stencil
from structops.solvers import tikhonov

inner = int(sys.argv[1])
theta = gaussian_stencil(9, 2.0).ravel()
rng = np.random.default_rng(0)

def clock():
    return time.perf_counter(), time.process_time()

def since(t):
    return time.perf_counter() - t[0], time.process_time() - t[1]

K = structops.Conv((256, 256), (9, 9)).op(theta)
b = K @ rng.standard_normal(K.shape[1])
spent = [0.0]
matvec, rmatvec = K._matvec, K._rmatvec
def timed(f):
    def g(v):
        t = time.perf_counter()
        out = f(v)
        spent[0] += time.perf_counter() - t
        return out
    return g
K._matvec, K._rmatvec = timed(matvec), timed(rmatvec)
pylops.cgls(K, b, niter=3, tol=0.0)  # warm-up: kernels loaded from numba's cache
cg = []
for _ in range(inner):
    spent[0] = 0.0
    t = clock()
    pylops.cgls(K, b, niter=50, tol=0.0)
    cg.append((*since(t), spent[0]))

P = pylops.signalprocessing.Convolve2D((256, 256), gaussian_stencil(9, 2.0), offset=(4, 4))
pylops.cgls(P, b, niter=3, tol=0.0)
ctl = []
for _ in range(inner):
    t = clock()
    pylops.cgls(P, b, niter=50, tol=0.0)
    ctl.append(since(t))

k2 = structops.Conv((512, 512), (9, 9))
b2 = k2.apply(theta, rng.random((512, 512))) + 0.01 * rng.standard_normal((512, 512))
tikhonov(k2, theta, b2, alpha=1e-3)
tk = []
for _ in range(inner):
    t = clock()
    tikhonov(k2, theta, b2, alpha=1e-3)
    tk.append(since(t))
print(json.dumps({"cgls": np.median(cg, axis=0).tolist(), "tikhonov": np.median(tk, axis=0).tolist(),
                  "cgls, pylops only": np.median(ctl, axis=0).tolist(),
                  "report": _backend.thread_report()}))
"""


def child(config: str, inner: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in _THREAD_VARS and not k.startswith("NUMBA_THREADING")}
    root = str(Path(__file__).resolve().parent.parent)
    env.update(CONFIGS[config], PYTHONPATH=os.pathsep.join([root, env.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", CHILD, str(inner)], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = _common.parser(__doc__)  # --threads: this process's; each child gets its configuration's
    parser.add_argument("--repeats", type=int, default=5, help="children per configuration (interleaved)")
    parser.add_argument("--inner", type=int, default=3, help="timed runs per child (their median)")
    parser.add_argument("--blas-one", action="store_true", help="also run default+blas1")
    args = _common.setup(parser, argv)
    configs = ["default", "one"] + (["default+blas1"] if args.blas_one else [])
    runs: dict[str, list[dict]] = {c: [] for c in configs}
    for r in range(args.repeats):
        for c in configs:
            runs[c].append(child(c, args.inner))
            row = runs[c][-1]
            print(f"run {r} {c}: cgls {row['cgls'][0]:.3f} s, tikhonov {row['tikhonov'][0]:.3f} s", file=sys.stderr)
    for c in configs:
        rep = runs[c][0]["report"]
        print(f"* {c}: {_common.describe(rep)}")
    print()
    print("| workload | config | wall (s) | CPU (s) | in structops' products (s) | wall ÷ one | CPU ÷ one |")
    print("|---|---|---|---|---|---|---|")
    for work in ("cgls", "cgls, pylops only", "tikhonov"):
        med = {c: np.median([run[work] for run in runs[c]], axis=0) for c in configs}
        for c in configs:
            m = med[c]
            ops = f"{m[2]:.3f}" if work == "cgls" else "-"
            print(
                f"| {work} | {c} | {m[0]:.3f} | {m[1]:.3f} | {ops} | "
                f"{m[0] / med['one'][0]:.2f} | {m[1] / med['one'][1]:.2f} |"
            )


if __name__ == "__main__":
    main()
