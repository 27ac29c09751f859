"""Checkpoints: everything a training run needs to resume, in one ``.npz``, written atomically.

A checkpoint holds the parameters ``theta, b, W, c``, the optimiser state, the training
configuration (JSON), the state of the random generator (JSON), the number of finished
epochs and the per-epoch metrics. It is written to a temporary file in the destination
folder, flushed to disk and moved into place with :func:`os.replace`, so an interrupted
write (crash, Ctrl-C) leaves the previous checkpoint untouched. Loading checks the format
tag, the zip CRCs and every required entry, and raises :class:`CheckpointError` otherwise.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .metrics import count
from .model import LayerClassifier, Params

__all__ = [
    "CHECKPOINT_NAME",
    "FORMAT",
    "CheckpointError",
    "Checkpoint",
    "CheckpointFolder",
    "ResumePoint",
    "load_checkpoint",
    "resolve_checkpoint",
    "save_checkpoint",
]

#: Format tag stored in every checkpoint.
FORMAT = "structops-train-checkpoint/1"
#: File name of the checkpoint in a training run's output folder.
CHECKPOINT_NAME = "checkpoint.npz"
_PARAMS = ("theta", "bias", "W", "c")


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, corrupted or not a structops checkpoint."""


@dataclass
class Checkpoint:
    """The content of a checkpoint.

    Attributes
    ----------
    params : Params
    config : dict
        The training configuration (JSON-compatible).
    epoch : int
        Number of finished epochs.
    rng_state : dict
        ``numpy.random.Generator.bit_generator.state`` after the last finished epoch.
    optimizer_state : dict of str to numpy.ndarray
    history : dict of str to numpy.ndarray
        Per-epoch metrics, one array per column.
    """

    params: Params
    config: dict
    epoch: int
    rng_state: dict
    optimizer_state: dict[str, np.ndarray] = field(default_factory=dict)
    history: dict[str, np.ndarray] = field(default_factory=dict)


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """The checkpoint a ``--resume`` argument names: ``path`` itself, or ``path/checkpoint.npz`` for a folder."""
    path = Path(path)
    return path / CHECKPOINT_NAME if path.is_dir() else path


def _umask() -> int:
    mask = os.umask(0o022)  # the only portable way to read it: set, then restore at once
    os.umask(mask)
    return mask


def save_checkpoint(path: str | os.PathLike, ckpt: Checkpoint) -> Path:
    """Write ``ckpt`` to ``path`` atomically (temporary file in the same folder + ``os.replace``).

    The file gets the permissions of any file the user creates (``0o666`` less the umask,
    usually ``0o644``), like ``metrics.csv`` and the plots: not the ``0o600`` of a temporary
    file.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {
        "format": np.array(FORMAT),
        "config": np.array(json.dumps(ckpt.config, sort_keys=True)),
        "epoch": np.array(int(ckpt.epoch)),
        "rng_state": np.array(json.dumps(ckpt.rng_state)),
    }
    for name in _PARAMS:
        arrays[f"params/{name}"] = np.asarray(getattr(ckpt.params, name))
    for key, val in ckpt.optimizer_state.items():
        arrays[f"optimizer/{key}"] = np.asarray(val)
    for key, val in ckpt.history.items():
        arrays[f"history/{key}"] = np.asarray(val)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            np.savez_compressed(fh, **arrays)  # type: ignore[arg-type]
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint written by :func:`~structops.train.save_checkpoint`.

    Raises
    ------
    CheckpointError
        If the file does not exist, is truncated or corrupted (bad zip structure or CRC), is
        not a structops checkpoint, or lacks an entry.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist.")
    try:
        with np.load(path, allow_pickle=False) as f:
            data = {key: f[key] for key in f.files}  # reads (and CRC-checks) every member
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as exc:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is truncated or corrupted and cannot be read ({type(exc).__name__}: {exc})."
        ) from exc
    fmt = str(data.get("format", ""))
    if fmt != FORMAT:
        raise CheckpointError(f"{str(path)!r} is not a structops checkpoint: format tag {fmt!r}, expected {FORMAT!r}.")
    missing = [k for k in ("config", "epoch", "rng_state", *(f"params/{n}" for n in _PARAMS)) if k not in data]
    if missing:
        raise CheckpointError(f"checkpoint {str(path)!r} lacks the entries {missing!r}.")
    try:
        config = json.loads(str(data["config"]))
        rng_state = json.loads(str(data["rng_state"]))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"checkpoint {str(path)!r} holds an unreadable configuration: {exc}.") from exc
    params = Params(*(np.array(data[f"params/{n}"]) for n in _PARAMS))
    opt = {k.split("/", 1)[1]: v for k, v in data.items() if k.startswith("optimizer/")}
    hist = {k.split("/", 1)[1]: v for k, v in data.items() if k.startswith("history/")}
    return Checkpoint(params, config, int(data["epoch"]), rng_state, opt, hist)


@dataclass
class ResumePoint:
    """Where a run resumes: a checkpoint read from ``path`` (see :meth:`load`).

    Attributes
    ----------
    path : pathlib.Path
        The checkpoint file.
    checkpoint : Checkpoint
    """

    path: Path
    checkpoint: Checkpoint

    @classmethod
    def load(cls, resume: str | os.PathLike) -> ResumePoint:
        """Read the checkpoint a ``--resume`` argument names (a file, or a folder holding ``checkpoint.npz``)."""
        path = resolve_checkpoint(resume)
        return cls(path, load_checkpoint(path))

    @property
    def epochs(self) -> int:
        """The total number of epochs the saved run was started for."""
        return int(self.checkpoint.config["epochs"])

    def complete(self, epochs: int) -> str | None:
        """None while fewer than ``epochs`` epochs are done, else the sentence that says there is nothing to do."""
        done = self.checkpoint.epoch
        if done < epochs:
            return None
        return f"the run in {self.path} is already complete: {count(done, 'epoch')} of {epochs}; nothing to do"

    def restore(self, model: LayerClassifier, rng: np.random.Generator, optimizer) -> Params:
        """The saved parameters; ``rng`` and ``optimizer`` (``load_state_dict``) are put back in their saved state."""
        rng.bit_generator.state = self.checkpoint.rng_state
        optimizer.load_state_dict(self.checkpoint.optimizer_state)
        return model.as_params(self.checkpoint.params)


class CheckpointFolder:
    """The checkpoint of a run in its output folder, rewritten after every epoch (nothing without a folder).

    Parameters
    ----------
    folder : path-like, optional
        Created if needed; None for a run that writes no files (or a rank other than 0).
    """

    def __init__(self, folder: str | os.PathLike | None) -> None:
        self.folder = None if folder is None else Path(folder)
        self.path = None if self.folder is None else self.folder / CHECKPOINT_NAME
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)

    def save(self, ckpt: Checkpoint) -> None:
        """Write ``ckpt`` atomically (:func:`~structops.train.save_checkpoint`), if there is a folder."""
        if self.path is not None:
            save_checkpoint(self.path, ckpt)

    def exists(self) -> bool:
        """Whether a checkpoint has been written."""
        return self.path is not None and self.path.exists()

    def kept(self, epoch: int) -> str:
        """The clause telling where the checkpoint of epoch ``epoch`` is kept (empty when none was written)."""
        return f"; the last good checkpoint (epoch {epoch}) is kept at {self.path}" if self.exists() else ""
