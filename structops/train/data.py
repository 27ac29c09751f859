r"""Data sets for training: the shipped 8×8 digits and MNIST from IDX files.

Images are returned as ``(n, channels, *grid)`` arrays scaled to ``[0, 1]`` -- exactly the
example layout ``(in_channels, *grid)`` of :class:`structops.Conv`. Matrix families take
the same examples flattened to ``(n, prod(channels, *grid))``.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._validation import FLOAT_DTYPES

__all__ = ["Dataset", "IDXError", "load_digits", "load_mnist", "read_idx"]


@dataclass(frozen=True)
class Dataset:
    """A classification data set split into training and test examples.

    Attributes
    ----------
    x_train, x_test : numpy.ndarray, shape (n, channels, *grid)
        Images in ``[0, 1]``, float32 or float64.
    y_train, y_test : numpy.ndarray of int64, shape (n,)
        Class labels ``0 .. nclasses - 1``.
    nclasses : int
    name : str
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    nclasses: int
    name: str

    @property
    def image_shape(self) -> tuple[int, ...]:
        """Shape ``(channels, *grid)`` of one example."""
        return tuple(self.x_train.shape[1:])

    def subset(self, ntrain: int | None = None, ntest: int | None = None) -> Dataset:
        """The first ``ntrain`` training and ``ntest`` test examples (None keeps all)."""
        return Dataset(
            self.x_train[:ntrain], self.y_train[:ntrain], self.x_test[:ntest], self.y_test[:ntest],
            self.nclasses, self.name,
        )  # fmt: skip


def _check_dtype(dtype) -> np.dtype:
    dt = np.dtype(dtype)
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"`dtype` must be float32 or float64, got {dtype!r}.")
    return dt


def load_digits(*, test_fraction: float = 0.2, split_seed: int = 0, dtype=np.float64) -> Dataset:
    r"""The 1,797 8×8 handwritten digits shipped with structops, split train/test.

    The split is a random permutation drawn from ``numpy.random.default_rng(split_seed)``,
    so it is the same on every machine and independent of the training seed; the last
    ``round(test_fraction * 1797)`` examples of the permutation form the test set.

    Parameters
    ----------
    test_fraction : float, optional
        Fraction of the examples held out, in ``(0, 1)``.
    split_seed : int, optional
        Seed of the permutation.
    dtype : float32 or float64, optional

    Returns
    -------
    Dataset
        Images of shape ``(n, 1, 8, 8)`` with pixels ``0..16`` scaled to ``[0, 1]``.

    Notes
    -----
    Source and licence: see :mod:`structops.data` (UCI optdigits, CC BY 4.0).

    Examples
    --------
    >>> d = load_digits()
    >>> d.x_train.shape, d.x_test.shape, d.nclasses
    ((1438, 1, 8, 8), (359, 1, 8, 8), 10)
    """
    from ..data import data_path

    dt = _check_dtype(dtype)
    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"`test_fraction` must lie strictly between 0 and 1, got {test_fraction!r}.")
    with np.load(data_path("digits.npz"), allow_pickle=False) as f:
        images, labels = f["images"], f["labels"]
    n = images.shape[0]
    perm = np.random.default_rng(split_seed).permutation(n)
    ntest = round(float(test_fraction) * n)
    train, test = perm[: n - ntest], perm[n - ntest :]
    x = (images.astype(dt) / dt.type(16.0))[:, None]
    y = labels.astype(np.int64)
    return Dataset(x[train], y[train], x[test], y[test], 10, "digits")


class IDXError(ValueError):
    """A file that should hold an IDX array (MNIST's format) is missing, malformed or truncated."""


#: IDX type codes: the third byte of the magic number.
_IDX_TYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    r"""Read one IDX file (the MNIST format), plain or gzip-compressed (``.gz``).

    The format: a 4-byte magic number ``0x00 0x00 <type> <ndim>``, then ``ndim`` big-endian
    uint32 sizes, then the data in C order; ``type`` is ``0x08`` (uint8), ``0x09`` (int8),
    ``0x0B`` (int16), ``0x0C`` (int32), ``0x0D`` (float32) or ``0x0E`` (float64).

    Parameters
    ----------
    path : str or path-like
        The file; a name ending in ``.gz`` is decompressed.

    Returns
    -------
    numpy.ndarray
        The array with its stored shape and type (native byte order).

    Raises
    ------
    IDXError
        If the file is missing, not gzip when named ``.gz``, has a bad magic number or type
        code, or holds fewer or more bytes than its header announces.
    """
    path = Path(path)
    if not path.is_file():
        raise IDXError(f"IDX file {str(path)!r} does not exist.")
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                raw = fh.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        raise IDXError(f"cannot read IDX file {str(path)!r}: {exc}") from exc
    if len(raw) < 4:
        raise IDXError(f"IDX file {str(path)!r} is truncated: {len(raw)} bytes, not even a 4-byte magic number.")
    zero0, zero1, code, ndim = raw[:4]
    if zero0 != 0 or zero1 != 0 or code not in _IDX_TYPES or ndim == 0:
        raise IDXError(
            f"IDX file {str(path)!r} has bad magic number 0x{raw[:4].hex()}; expected 0x0000TTDD with type "
            f"code TT in {sorted(f'{c:02x}' for c in _IDX_TYPES)} and DD >= 1 dimensions "
            "(MNIST images: 0x00000803, labels: 0x00000801)."
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IDXError(f"IDX file {str(path)!r} is truncated inside its header ({len(raw)} of {header} bytes).")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_TYPES[code]
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "longer than its header says"
        raise IDXError(
            f"IDX file {str(path)!r} is {what}: header announces shape {dims} of {dtype.name} "
            f"({expected} bytes in all) but the file holds {len(raw)} bytes."
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return data.astype(dtype.newbyteorder("="))


_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def _find_idx(folder: Path, stem: str) -> Path:
    dotted = stem.replace("-idx", ".idx")  # the common "train-images.idx3-ubyte" spelling
    candidates = [folder / name for s in (stem, dotted) for name in (s, s + ".gz")]
    for cand in candidates:
        if cand.is_file():
            return cand
    raise IDXError(
        f"MNIST file {stem!r} not found in {str(folder)!r}: looked for "
        f"{', '.join(c.name for c in candidates)}. Download the four MNIST IDX files "
        "(train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
        "t10k-labels-idx1-ubyte, optionally .gz) into that folder."
    )


def load_mnist(folder: str | os.PathLike, *, dtype=np.float64, limit: int | None = None) -> Dataset:
    r"""MNIST (or any data set in the same four IDX files) from a local folder.

    Parameters
    ----------
    folder : str or path-like
        Folder holding ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
        ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (each optionally ``.gz``;
        ``train-images.idx3-ubyte`` spellings are accepted too).
    dtype : float32 or float64, optional
    limit : int, optional
        Keep only the first ``limit`` training and test examples (quick experiments).

    Returns
    -------
    Dataset
        Images of shape ``(n, 1, rows, cols)`` scaled from ``0..255`` to ``[0, 1]``.

    Raises
    ------
    IDXError
        If the folder or a file is missing or malformed, images are not 3-D uint8, labels not
        1-D, counts disagree or a label is negative.
    """
    dt = _check_dtype(dtype)
    folder = Path(folder)
    if not folder.is_dir():
        raise IDXError(f"`folder` must be a directory holding the MNIST IDX files, got {str(folder)!r}.")
    arrays = {key: read_idx(_find_idx(folder, stem)) for key, stem in _MNIST_FILES.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or images.dtype != np.uint8:
            raise IDXError(
                f"MNIST {split} images must be a 3-D uint8 IDX array (n, rows, cols), "
                f"got shape {images.shape} of {images.dtype}."
            )
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise IDXError(
                f"MNIST {split} labels must be 1-D with one label per image ({images.shape[0]}), "
                f"got shape {labels.shape}."
            )
    if arrays["train_images"].shape[1:] != arrays["test_images"].shape[1:]:
        raise IDXError(
            f"MNIST train and test images differ in size: {arrays['train_images'].shape[1:]} "
            f"vs {arrays['test_images'].shape[1:]}."
        )
    ys = [arrays["train_labels"].astype(np.int64), arrays["test_labels"].astype(np.int64)]
    if min(y.min(initial=0) for y in ys) < 0:
        raise IDXError("MNIST labels must be nonnegative class indices.")
    nclasses = int(max(y.max(initial=0) for y in ys)) + 1
    xs = [(arrays[k].astype(dt) / dt.type(255.0))[:, None] for k in ("train_images", "test_images")]
    data = Dataset(xs[0], ys[0], xs[1], ys[1], nclasses, f"mnist:{folder.name}")
    return data.subset(limit, limit) if limit is not None else data
