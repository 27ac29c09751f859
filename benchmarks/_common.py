"""What the benchmark scripts share: their argument parser, thread settings and thread report.

Every ``benchmarks/bench_*.py`` builds its parser with :func:`parser` (the description is the
first line of the script's docstring, and ``--threads`` is there), then calls :func:`setup`,
which parses the arguments, sets the thread counts of structops (numba, FFT workers, BLAS) and,
when the script times PyTorch, of torch, and prints one line saying what the run used: the
``--threads`` asked, the thread environment variables and structops'
``thread_report()`` (``structops._backend``). Timings on a shared machine are only comparable
between rows measured in the same run, under the settings that line states.

The scripts import this module as ``_common``: ``python benchmarks/bench_x.py`` puts
``benchmarks/`` first on ``sys.path`` (a test that loads a script by its path puts it there too).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Sequence

import structops
from structops._backend import thread_report

#: The environment variables that fix thread counts before the libraries start.
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def parser(doc: str | None, *, threads: int | None = None, what: str = "structops") -> argparse.ArgumentParser:
    """An argument parser described by the first line of ``doc``, with ``--threads`` (default ``threads``).

    ``threads=None`` leaves every library at structops' default budget; ``what`` names the
    libraries ``--threads`` sets (for the help text).
    """
    description = (doc or "").strip().split("\n\n")[0].replace("\n", " ")
    p = argparse.ArgumentParser(description=description)
    default = "structops' default budget" if threads is None else threads
    p.add_argument("--threads", type=int, default=threads, help=f"threads for {what} (default: {default})")
    return p


def set_threads(threads: int | None, *, torch: bool = False) -> None:
    """Set structops' threads (numba, FFT workers, BLAS) and, with ``torch``, PyTorch's; None changes nothing."""
    if threads is None:
        return
    structops.set_num_threads(threads, blas_threads=threads)
    if torch:
        import torch as _torch

        _torch.set_num_threads(threads)


def describe(report: dict) -> str:
    """One line from a ``thread_report()`` dict: budget and its source, numba layer and pool, BLAS, FFT workers."""
    return (
        f"budget {report['budget']} ({report['budget_source']}), numba layer {report['numba_layer']}, "
        f"numba pool {report['numba_pool']}, BLAS {report['blas_threads']}, FFT workers {report['fft_workers']}"
    )


def thread_line(threads: int | None) -> str:
    """What the run uses: ``--threads``, the thread environment variables and structops' thread report."""
    env = ", ".join(f"{name}={os.environ.get(name, 'unset')}" for name in THREAD_ENV)
    asked = "default" if threads is None else threads
    return f"threads: --threads {asked}; {env}; structops {describe(thread_report())}; {os.cpu_count()} cpus"


def setup(p: argparse.ArgumentParser, argv: Sequence[str] | None = None, *, torch: bool = False) -> argparse.Namespace:
    """Parse ``argv``, set the threads (:func:`set_threads`), print :func:`thread_line`; return the arguments."""
    args = p.parse_args(argv)
    set_threads(args.threads, torch=torch)
    print(thread_line(args.threads))
    return args


def timed(fn: Callable[[], object], repeat: int) -> tuple[object, float, float]:
    """``(fn(), median wall seconds, median CPU seconds)`` over ``repeat`` calls (CPU: ``time.process_time``)."""
    walls, cpus = [], []
    out = None
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    walls.sort()
    cpus.sort()
    return out, walls[len(walls) // 2], cpus[len(cpus) // 2]
