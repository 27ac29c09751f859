"""``structops train`` on several ranks (``mpiexec -n 2 python this DATA WORK``), for ``tests/test_train_mpi.py``.

Runs the command line in-process on every rank, as ``mpiexec -n 2 structops train ...`` would:
full-batch L-BFGS, the same run stopped after one epoch and resumed, mini-batch Adam, and GNK
(refused under MPI). Rank 0 prints one ``rc <run> <status>`` line per run; the outputs land in
``WORK/<run>`` for the test to compare with one process.
"""

from __future__ import annotations

import os
import sys

from mpi4py import MPI

from structops.train.cli import main


def run_all() -> None:
    """Every run of the module docstring, on this rank."""
    comm = MPI.COMM_WORLD
    data, work = sys.argv[1], sys.argv[2]
    common = ["--data", data, "--channels", "2", "--stencil", "3", "--pool", "1", "--dtype", "float64", "--quiet"]
    runs = {
        "lbfgs": ["train", *common, "--optimizer", "lbfgs", "--iters", "6", "--epochs", "2"],
        "resumed": ["train", *common, "--optimizer", "lbfgs", "--iters", "6", "--epochs", "1"],
        "resume": ["train", "--resume", os.path.join(work, "resumed"), "--epochs", "2", "--quiet"],
        "adam": ["train", *common, "--optimizer", "adam", "--batch-size", "16", "--epochs", "2"],
        "gnk": ["train", *common, "--optimizer", "gnk", "--epochs", "1"],
    }
    try:
        for name, argv in runs.items():
            if name != "resume":
                argv = [*argv, "--out", os.path.join(work, name)]
            status = main(argv)
            sys.stdout.flush()
            if comm.rank == 0:
                print(f"rc {name} {status}", flush=True)
    except BaseException as err:  # one failing rank must not leave the others waiting
        import traceback

        print(f"rank {comm.rank}: {type(err).__name__}: {err}", flush=True)
        traceback.print_exc()
        comm.Abort(1)


if __name__ == "__main__":  # collected by pytest's --doctest-modules: nothing runs on import
    run_all()
