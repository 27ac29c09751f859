"""The metrics sink of a training run: the per-epoch history, what the user sees, and ``metrics.csv``.

:class:`MetricsSink` receives one row per epoch (``epoch, loss, train_acc, test_acc,
seconds``) and one tick per optimiser iteration. It keeps the history (what a checkpoint
stores and :class:`~structops.train.TrainResult` returns), shows the progress either on a
tqdm bar on stderr or as one log line per epoch, and writes the history atomically to
``metrics.csv`` in the run's folder.
"""

from __future__ import annotations

import csv
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

__all__ = ["HISTORY_COLUMNS", "METRICS_NAME", "MetricsSink", "count"]

#: File name of the metrics in a training run's output folder.
METRICS_NAME = "metrics.csv"
#: The columns of the history, in the order of ``metrics.csv``.
HISTORY_COLUMNS = ("epoch", "loss", "train_acc", "test_acc", "seconds")


def count(n: int, noun: str) -> str:
    """``"1 epoch"``, ``"15 epochs"``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _progress_bar(total: int):
    """A tqdm bar on stderr, or None when tqdm is not installed."""
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is in the [train] extra
        return None
    return tqdm(total=total, unit="it", dynamic_ncols=True, file=sys.stderr, leave=True)


class MetricsSink:
    """Where a training run's metrics go: the history, a progress bar or log lines, ``metrics.csv``.

    Parameters
    ----------
    history : mapping of str to sequence, optional
        The rows of the epochs already run (a resumed checkpoint's history); missing columns
        start empty.
    epochs : int
        Epochs of the whole run (for the ``epoch e/E`` labels).
    iterations : int
        Optimiser iterations still to run (the length of the progress bar).
    progress : bool
        Show a tqdm bar on stderr (when tqdm is installed) instead of one line per epoch.
    log : callable, optional
        Receives one line per epoch when there is no bar.
    folder : pathlib.Path, optional
        Where :meth:`write` puts ``metrics.csv``; None writes nothing.

    Call :meth:`close` at the end (``contextlib.closing``) to close the bar.
    """

    def __init__(
        self,
        history: Mapping | None = None,
        *,
        epochs: int,
        iterations: int = 0,
        progress: bool = False,
        log: Callable[[str], None] | None = None,
        folder: Path | None = None,
    ) -> None:
        history = history or {}
        self.history: dict[str, list[float]] = {c: [float(v) for v in history.get(c, [])] for c in HISTORY_COLUMNS}
        self.epochs = epochs
        self.log = log
        self.path = None if folder is None else folder / METRICS_NAME
        self._bar = _progress_bar(iterations) if progress else None

    def begin(self, epoch: int) -> None:
        """Epoch ``epoch`` (counted from 0) starts."""
        if self._bar is not None:
            self._bar.set_description(f"epoch {epoch + 1}/{self.epochs}")

    def tick(self, loss: float) -> None:
        """One optimiser iteration ended with ``loss`` (the optimisers' callback)."""
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

    def record(self, epoch: int, loss: float, train_acc: float, test_acc: float, seconds: float) -> None:
        """Append the row of epoch ``epoch`` (counted from 1) and show it."""
        for col, val in zip(HISTORY_COLUMNS, (epoch, loss, train_acc, test_acc, seconds)):
            self.history[col].append(float(val))
        if self._bar is not None:
            self._bar.set_postfix(loss=f"{loss:.4f}", train=f"{train_acc:.3f}", test=f"{test_acc:.3f}")
        elif self.log is not None:
            self.log(
                f"epoch {epoch}/{self.epochs}: loss {loss:.4f}, train acc {train_acc:.4f}, "
                f"test acc {test_acc:.4f} ({seconds:.1f} s)"
            )

    def write(self) -> Path | None:
        """Write the history to ``metrics.csv`` atomically (temporary file + ``os.replace``); its path."""
        if self.path is None:
            return None
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(HISTORY_COLUMNS)
            for row in zip(*(self.history[c] for c in HISTORY_COLUMNS)):
                writer.writerow([int(row[0]), *(f"{v:.10g}" for v in row[1:])])
        os.replace(tmp, self.path)
        return self.path

    def close(self) -> None:
        """Close the progress bar."""
        if self._bar is not None:
            self._bar.close()
