r"""Process-wide compute settings: the numba switch and the thread counts.

This module sits at the bottom of the package (it imports nothing from structops), so every
layer can ask it which backend runs and with how many threads:

* the direct convolution sums run on numba's threads when numba is installed and enabled
  (:func:`set_accelerator`; environment variable ``STRUCTOPS_NUMBA=0`` to start disabled);
* ``scipy.fft`` gets :func:`workers` workers;
* BLAS keeps its own pool. On few cores, an OpenBLAS pool that spins after a product slows the
  next numba kernel several times over, so :func:`set_num_threads` can also cap BLAS
  (through ``threadpoolctl`` when it is installed): one pool decides, the others yield.

The thread policy (decided at import, see :func:`thread_report`): every structops step gets a
*budget* of threads -- the count given to :func:`set_num_threads`, else ``NUMBA_NUM_THREADS``
or ``OMP_NUM_THREADS`` when the user set one, else one in a ``multiprocessing`` child (a pool
worker shares the cores with its siblings), else every core this process may run on -- and
uses more than one only when its work pays for it:

* a numba kernel of :math:`w` multiply-adds over :math:`u` independent parts (examples) runs on
  :math:`\min(\text{budget}, u, \lfloor w / W \rfloor)` threads, :math:`W` =
  :data:`PARALLEL_WORK_MIN` (numba's thread-local count, :func:`kernel_threads`), and on one
  while another structops kernel is running in another thread (the caller's own thread pool);
  while it runs on :math:`t > 1` threads, BLAS is capped at ``budget // t``;
* dense factorisations and products of matrices of side below :data:`BLAS_SIDE_MIN` (the
  Kronecker route's SVDs) run on one BLAS thread (:func:`blas_threads_for`), larger ones on at
  most the budget (never more than BLAS already has);
* ``scipy.fft`` runs on one worker unless :func:`set_num_threads` gave a count;
* numba's threading layer, unless ``NUMBA_THREADING_LAYER`` (or ``..._PRIORITY``) is set, is
  the first of ``tbb``, ``omp``, ``workqueue`` that loads: the thread-safe ones first, as
  structops runs its kernels from whichever thread calls it (``workqueue`` aborts the process
  on concurrent launches). BLAS outside structops' own steps is left as the user set it.

Both switches change process-wide state. Each returns a :class:`Setting`, so it also reads as
a context manager that puts the previous state back on exit::

    structops.set_num_threads(2)              # from now on
    with structops.set_num_threads(1):        # only inside the block
        ...
"""

from __future__ import annotations

import contextlib
import importlib.util
import multiprocessing
import os
import threading
from collections.abc import Callable, Iterator
from types import TracebackType

import numpy as np

from ._integers import check_positive_int

__all__ = [
    "BLAS_SIDE_MIN",
    "PARALLEL_WORK_MIN",
    "Setting",
    "accelerator",
    "blas_threads_for",
    "have_numba",
    "kernel_thread_count",
    "kernel_threads",
    "num_threads",
    "set_accelerator",
    "set_num_threads",
    "thread_budget",
    "thread_report",
    "total",
    "workers",
]

_NUMBA_INSTALLED: bool = importlib.util.find_spec("numba") is not None

#: Whether the direct method runs the numba kernels (when numba is installed).
_USE_NUMBA: bool = os.environ.get("STRUCTOPS_NUMBA", "1").strip().lower() not in ("0", "false", "no", "off")

#: Threads for the FFTs and the numba kernels set by :func:`set_num_threads`; None: the default budget.
_THREADS: int | None = None

#: Multiply-adds each thread of a numba kernel must get before the kernel uses more than one.
#: About 5 ms of one core's work: starting a team and joining it costs tens of microseconds on
#: an idle machine, but on a loaded one (or next to a BLAS pool still spinning) a thread that
#: is not scheduled stalls the join for a scheduler tick, and GNU OpenMP's idle threads spin
#: for milliseconds after each region. A 256² image with a 9×9 stencil (6·10⁶) stays on one.
PARALLEL_WORK_MIN = 1 << 25

#: Dense steps on matrices of a side below this run on one BLAS thread. OpenBLAS threads every
#: level-2 product inside an SVD of this size, and the joins cost more than they save: a 512²
#: SVD took 2× (idle, issue 24) to 10× (loaded 2-core machine) longer on two threads.
BLAS_SIDE_MIN = 1024

#: Sums below this size use numpy (a serial pass of a few ms at most), larger ones numba's threads.
_PARALLEL_SUM_MIN = PARALLEL_WORK_MIN

#: Environment variables through which a user fixes thread counts; structops then follows them.
_THREAD_ENV = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS")
_BLAS_ENV = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS")


def have_numba() -> bool:
    """Whether the direct convolution sums run on the numba kernels."""
    return _NUMBA_INSTALLED and _USE_NUMBA


class Setting:
    """A process-wide setting already applied, which can be undone: what the ``set_*`` switches return.

    Ignored, the setting stays (``structops.set_num_threads(2)``); used as a context manager,
    :meth:`restore` puts the previous state back when the block exits, also on an exception
    (``with structops.set_num_threads(1): ...``). Blocks nest; restoring twice does nothing.
    """

    def __init__(self, restore: Callable[[], None]) -> None:
        self._restore: Callable[[], None] | None = restore

    def restore(self) -> None:
        """Put back the state from before the switch (once; later calls do nothing)."""
        restore, self._restore = self._restore, None
        if restore is not None:
            restore()

    def __enter__(self) -> Setting:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.restore()


def set_accelerator(name: str) -> Setting:
    """Choose the direct-method backend: ``"numba"`` (if installed) or ``"numpy"``.

    Returns
    -------
    Setting
        Used as a context manager (``with structops.set_accelerator("numpy"): ...``), the
        previous backend is back after the block.

    Raises
    ------
    ValueError
        If ``name`` is neither.
    ImportError
        If ``name`` is ``"numba"`` and numba is not installed.
    """
    global _USE_NUMBA
    if name not in ("numba", "numpy"):
        raise ValueError(f"`name` must be 'numba' or 'numpy', got {name!r}.")
    if name == "numba" and not _NUMBA_INSTALLED:
        raise ImportError("numba is not installed: `pip install structops[fast]`.")
    previous = _USE_NUMBA
    _USE_NUMBA = name == "numba"

    def restore() -> None:
        global _USE_NUMBA
        _USE_NUMBA = previous

    return Setting(restore)


def accelerator() -> str:
    """Which direct-method backend is active: ``"numba <version>"`` or ``"numpy"``."""
    if not have_numba():
        return "numpy"
    import numba

    return f"numba {numba.__version__}"


def set_num_threads(threads: int | None, *, blas_threads: int | None = None) -> Setting:
    """Set the threads of the FFTs (``scipy.fft`` workers) and of the numba kernels.

    Parameters
    ----------
    threads : int or None
        The thread budget of every structops step: the numba kernels (each uses up to this
        many, and more than one only for enough work: ``structops._backend.kernel_thread_count``), the
        ``scipy.fft`` workers (this many) and the large dense steps' BLAS threads. ``None``
        (the default) restores the budget chosen at import: ``NUMBA_NUM_THREADS`` or
        ``OMP_NUM_THREADS`` when set, one in a ``multiprocessing`` child, else every core
        (``structops._backend.thread_report()`` says which), with one FFT worker. Under MPI with several ranks
        per machine give each rank its share (:func:`structops.distributed.threads_per_rank`;
        ``structops train`` does).
    blas_threads : int, optional
        Also cap the BLAS pool (numpy's products) at this many threads, through
        ``threadpoolctl`` (``pip install threadpoolctl``). ``structops train`` passes 1 when
        the numba kernels run, so the two pools never compete for the cores. None leaves BLAS
        as it is.

    Returns
    -------
    Setting
        Used as a context manager (``with structops.set_num_threads(1): ...``), the previous
        thread counts, BLAS's included, are back after the block.

    Raises
    ------
    TypeError, ValueError
        If a count is not a positive integer.
    ImportError
        If ``blas_threads`` is given and threadpoolctl is not installed.

    Examples
    --------
    >>> import structops
    >>> from structops import _backend
    >>> with structops.set_num_threads(1):
    ...     _backend.num_threads()
    1
    >>> _backend.num_threads() is None
    True
    """
    if threads is not None:
        threads = check_positive_int(threads, "threads")
    blas = None
    if blas_threads is not None:
        blas_threads = check_positive_int(blas_threads, "blas_threads")
        try:
            import threadpoolctl
        except ImportError:  # pragma: no cover - threadpoolctl ships with the test extra
            raise ImportError("`blas_threads` needs threadpoolctl: `pip install threadpoolctl`.") from None
        blas = threadpoolctl.threadpool_limits(blas_threads, user_api="blas")
    previous = (_THREADS, _numba_threads())
    _set_threads(threads, None)

    def restore() -> None:
        _set_threads(*previous)
        if blas is not None:
            blas.restore_original_limits()

    return Setting(restore)


def _numba_threads() -> int | None:
    """The thread count numba runs with now (None without numba)."""
    if not _NUMBA_INSTALLED:
        return None
    import numba

    return int(numba.get_num_threads())


def _set_threads(threads: int | None, numba_threads: int | None) -> None:
    """Set the FFT workers to ``threads`` and numba's count to ``numba_threads`` (default: ``threads``)."""
    global _THREADS
    _THREADS = threads
    if _NUMBA_INSTALLED:
        import numba

        most = int(numba.config.NUMBA_NUM_THREADS)  # type: ignore[attr-defined]
        numba.set_num_threads(min(numba_threads or thread_budget(), most))


def num_threads() -> int | None:
    """The thread count set by :func:`set_num_threads` (None: the default, :func:`thread_budget`)."""
    return _THREADS


def workers() -> int:
    """``scipy.fft`` workers: the count given to :func:`set_num_threads`, else one.

    One by default: a single image's transforms are too short to share, and pocketfft's
    workers would compete with numba's and BLAS's threads; a count set explicitly applies.
    """
    return _THREADS or 1


def _cores() -> int:
    """CPUs this process may run on (its affinity mask: ``taskset``, a cgroup cpuset), at least one."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS and Windows have no affinity mask
        return max(1, os.cpu_count() or 1)


def _env_count(names: tuple[str, ...]) -> int | None:
    """The first of the environment variables ``names`` set to a positive integer (``OMP``'s ``"4,2"``: 4)."""
    for name in names:
        value = os.environ.get(name, "").split(",")[0].strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return None


def _default_budget() -> tuple[int, str]:
    """The thread budget without :func:`set_num_threads`, and where it comes from."""
    env = _env_count(_THREAD_ENV)
    if env is not None:
        return env, "environment"
    if multiprocessing.parent_process() is not None:
        return 1, "multiprocessing child"
    return _cores(), "cores"


def _choose_threading_layer() -> None:
    """Prefer numba's thread-safe layers (tbb, omp) over workqueue, unless the user chose."""
    if not _NUMBA_INSTALLED or {"NUMBA_THREADING_LAYER", "NUMBA_THREADING_LAYER_PRIORITY"} & set(os.environ):
        return
    from numba import config

    if config.THREADING_LAYER == "default":  # type: ignore[attr-defined]
        config.THREADING_LAYER_PRIORITY = ["tbb", "omp", "workqueue"]  # type: ignore[attr-defined]


_BUDGET, _BUDGET_SOURCE = _default_budget()
_choose_threading_layer()


def thread_budget() -> int:
    """The most threads any structops step uses: :func:`set_num_threads`'s count, else the default budget."""
    return _THREADS or _BUDGET


def _numba_most() -> int:
    """The size of numba's pool (``NUMBA_NUM_THREADS``), 1 without numba."""
    if not _NUMBA_INSTALLED:
        return 1
    from numba import config

    return int(config.NUMBA_NUM_THREADS)  # type: ignore[attr-defined]


def kernel_thread_count(work: float, units: int) -> int:
    r"""Threads for one numba kernel of ``work`` multiply-adds split into ``units`` independent parts.

    :math:`\min(\text{budget}, u, \lfloor w / W\rfloor)`, at least one, with :math:`W` =
    :data:`PARALLEL_WORK_MIN`: every thread gets at least :math:`W` multiply-adds, and no more
    threads than parts (the kernels split the examples of a batch, so one image runs on one).

    Examples
    --------
    >>> kernel_thread_count(256 * 256 * 81, 1)  # one 256² image, a 9×9 stencil
    1
    >>> kernel_thread_count(1e12, 1)  # one part cannot be shared
    1
    """
    most = min(thread_budget(), _numba_most())
    return int(max(1, min(most, int(units), int(work // PARALLEL_WORK_MIN))))


_ACTIVE = 0  # numba kernels running now, in any thread
_ACTIVE_LOCK = threading.Lock()


@contextlib.contextmanager
def kernel_threads(work: float, units: int) -> Iterator[int]:
    """Run the numba kernel called inside the block on :func:`kernel_thread_count` threads.

    Sets numba's (thread-local) count for the block and yields it. A kernel that starts while
    another structops kernel runs in another thread (the caller's own thread pool) runs on one
    thread, so the caller's parallelism is not multiplied by numba's. While more than one
    numba thread runs, BLAS pools above ``budget // threads`` are capped to it, so numba
    threads × BLAS threads never exceed the budget.
    """
    global _ACTIVE
    with _ACTIVE_LOCK:
        alone = _ACTIVE == 0
        _ACTIVE += 1
    try:
        if not _NUMBA_INSTALLED:  # pragma: no cover - the kernels need numba
            yield 1
            return
        import numba

        count = kernel_thread_count(work, units) if alone else 1
        previous = numba.get_num_threads()
        numba.set_num_threads(count)
        capped = _cap_blas(max(1, thread_budget() // count)) if count > 1 else []
        try:
            yield count
        finally:
            numba.set_num_threads(previous)
            _restore_blas(capped)
    finally:
        with _ACTIVE_LOCK:
            _ACTIVE -= 1


_BLAS_LIBS: list | None = None


def _blas_libs() -> list:
    """The threadpoolctl controllers of the BLAS libraries loaded at the first call (none without it)."""
    global _BLAS_LIBS
    if _BLAS_LIBS is None:
        try:
            import threadpoolctl
        except ImportError:  # pragma: no cover - threadpoolctl ships with structops[fast]
            _BLAS_LIBS = []
        else:
            _BLAS_LIBS = list(threadpoolctl.ThreadpoolController().select(user_api="blas").lib_controllers)
    return _BLAS_LIBS


def _cap_blas(limit: int) -> list:
    """Cap every BLAS pool above ``limit`` threads at ``limit``; returns ``(pool, count)`` to restore."""
    changed = []
    for lib in _blas_libs():
        now = lib.get_num_threads()
        if now is not None and now > limit:
            lib.set_num_threads(limit)
            changed.append((lib, now))
    return changed


def _restore_blas(changed: list) -> None:
    for lib, count in reversed(changed):
        lib.set_num_threads(count)


def _blas_counts() -> list[int]:
    """The thread counts of the BLAS pools now."""
    return [int(lib.get_num_threads()) for lib in _blas_libs()]


@contextlib.contextmanager
def blas_threads_for(side: int) -> Iterator[None]:
    """BLAS threads for a dense step (SVD, products) on matrices of side ``side``.

    One below :data:`BLAS_SIDE_MIN`, else at most :func:`thread_budget` (BLAS keeps a smaller
    count it already has); put back after the block. Counts are process-wide: steps run
    concurrently from several threads share them.
    """
    changed = _cap_blas(1 if side < BLAS_SIDE_MIN else thread_budget())
    try:
        yield
    finally:
        _restore_blas(changed)


def thread_report() -> dict:
    """How structops chose its threads in this process: a dict for logs and checks.

    Keys: ``cores`` (affinity mask), ``budget`` and ``budget_source`` (``"set_num_threads"``,
    ``"environment"``, ``"multiprocessing child"`` or ``"cores"``), ``numba_layer`` (the one
    running, else the configured choice), ``numba_pool`` (``NUMBA_NUM_THREADS``),
    ``fft_workers``, ``blas_threads`` (the BLAS pools' counts now),
    ``blas_env`` (whether the user fixed BLAS's count by environment variable).
    """
    layer = "none"
    if _NUMBA_INSTALLED:
        import numba

        try:
            layer = numba.threading_layer()
        except ValueError:  # not launched yet: what numba will try, in order
            cfg = numba.config
            layer = cfg.THREADING_LAYER if cfg.THREADING_LAYER != "default" else "/".join(cfg.THREADING_LAYER_PRIORITY)  # type: ignore[attr-defined]
    return {
        "cores": _cores(),
        "budget": thread_budget(),
        "budget_source": "set_num_threads" if _THREADS else _BUDGET_SOURCE,
        "numba_layer": layer,
        "numba_pool": _numba_most(),
        "fft_workers": workers(),
        "blas_threads": _blas_counts(),
        "blas_env": _env_count(_BLAS_ENV) is not None,
    }


def total(flat: np.ndarray) -> float:
    """The sum of a 1-D array: on numba's threads when the numba kernels are on, else numpy's.

    Not a BLAS product with ones: OpenBLAS's threads keep spinning after the call and then
    compete with numba's for the cores (a 5 ms convolution took 16 ms after such a scan).
    """
    if have_numba() and flat.size >= _PARALLEL_SUM_MIN:
        from ._numba_scan import total as numba_total

        with kernel_threads(flat.size, flat.size):
            return float(numba_total(flat))
    return float(flat.sum())
