r"""Data parallelism over MPI: a batch of examples split across ranks, with pylops-mpi.

When one machine cannot hold (or process fast enough) the whole batch ``X`` of ``n``
examples, each MPI rank holds a contiguous share ``X_r`` of the examples and the stacked
maps become `pylops-mpi <https://pylops.github.io/pylops-mpi/>`_ operators. Two layers, each
importing only what lies below it:

* :mod:`~structops.distributed.comm` -- the communicator, the ranks an ``mpiexec`` started
  (:func:`training_comm`), each rank's share of the examples (:func:`local_rows`) and of the
  cores (:func:`threads_per_rank`), and :class:`RankSum`, one ``allreduce``;
* :mod:`~structops.distributed.operators` -- :math:`I_n \otimes K(\theta)` over the split
  batch (:func:`operator`), the Jacobian stacked over the ranks (:func:`jacobian`), and
  :func:`learn_stencil`, the distributed :func:`structops.solvers.learn_stencil`.

Data-parallel training (``mpiexec -n R structops train ...``) sits above both, in
:mod:`structops.train.parallel`.

Every rank runs the same script (``mpiexec -n 4 python script.py``) and calls these functions
collectively with its own examples; within a rank the structops operators stay batched
(no loop over examples).

Needs the ``mpi`` extra (``pip install "structops[mpi]"``: pylops-mpi and mpi4py) and an MPI
library: the system's on a cluster, or ``pip install mpich`` on a workstation.

Examples
--------
A stencil fitted to examples spread over the ranks (run with ``mpiexec -n 2``)::

    import numpy as np, structops
    from structops import distributed

    k = structops.Conv((64, 64), (5, 5), bc="periodic")
    rows = distributed.local_rows(1000)            # this rank's share of 1000 examples
    X = load_inputs(rows)                          # (n_r, 1, 64, 64), this rank's examples
    Y = load_outputs(rows)
    fit = distributed.learn_stencil(k, X, Y)       # the same theta on every rank
"""

from ..kernels import BatchOperator
from ..solvers.learn import LearnResult
from .comm import RankSum, launched_ranks, local_rows, threads_per_rank, training_comm
from .operators import broadcast, jacobian, learn_stencil, operator, scatter

__all__ = [
    "BatchOperator",
    "LearnResult",
    "RankSum",
    "broadcast",
    "jacobian",
    "launched_ranks",
    "learn_stencil",
    "local_rows",
    "operator",
    "scatter",
    "threads_per_rank",
    "training_comm",
]
