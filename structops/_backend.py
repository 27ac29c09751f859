"""Process-wide compute settings: the numba switch and the thread counts.

This module sits at the bottom of the package (it imports nothing from structops), so every
layer can ask it which backend runs and with how many threads:

* the direct convolution sums run on numba's threads when numba is installed and enabled
  (:func:`set_accelerator`; environment variable ``STRUCTOPS_NUMBA=0`` to start disabled);
* ``scipy.fft`` gets :func:`workers` workers;
* BLAS keeps its own pool. On few cores, an OpenBLAS pool that spins after a product slows the
  next numba kernel several times over, so :func:`set_num_threads` can also cap BLAS
  (through ``threadpoolctl`` when it is installed): one pool decides, the others yield.

Both switches change process-wide state. Each returns a :class:`Setting`, so it also reads as
a context manager that puts the previous state back on exit::

    structops.set_num_threads(2)              # from now on
    with structops.set_num_threads(1):        # only inside the block
        ...
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from types import TracebackType

import numpy as np

__all__ = [
    "Setting",
    "accelerator",
    "have_numba",
    "num_threads",
    "set_accelerator",
    "set_num_threads",
    "total",
    "workers",
]

_NUMBA_INSTALLED: bool = importlib.util.find_spec("numba") is not None

#: Whether the direct method runs the numba kernels (when numba is installed).
_USE_NUMBA: bool = os.environ.get("STRUCTOPS_NUMBA", "1").strip().lower() not in ("0", "false", "no", "off")

#: Threads for the FFTs and the numba kernels; None: every core.
_THREADS: int | None = None

#: Sizes below which a numpy sum beats starting numba's threads.
_PARALLEL_SUM_MIN = 4096


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
        Threads for the convolutions; ``None`` (the default) uses every core. Under MPI with
        several ranks per machine give each rank its share
        (:func:`structops.distributed.threads_per_rank`; ``structops train`` does).
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
        threads = _positive(threads, "threads")
    blas = None
    if blas_threads is not None:
        blas_threads = _positive(blas_threads, "blas_threads")
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
        numba.set_num_threads(min(numba_threads or _THREADS or most, most))


def num_threads() -> int | None:
    """The thread count set by :func:`set_num_threads` (None: every core)."""
    return _THREADS


def workers() -> int:
    """``scipy.fft`` workers: the configured thread count, else every core (-1)."""
    return _THREADS or -1


def _positive(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"`{name}` must be an integer, got {value!r}.")
    if value < 1:
        raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}.")
    return int(value)


def total(flat: np.ndarray) -> float:
    """The sum of a 1-D array: on numba's threads when the numba kernels are on, else numpy's.

    Not a BLAS product with ones: OpenBLAS's threads keep spinning after the call and then
    compete with numba's for the cores (a 5 ms convolution took 16 ms after such a scan).
    """
    if have_numba() and flat.size >= _PARALLEL_SUM_MIN:
        from ._numba_scan import total as numba_total

        return float(numba_total(flat))
    return float(flat.sum())
