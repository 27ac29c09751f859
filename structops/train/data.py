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

__all__ = ["Dataset", "IDXError", "ScaledImages", "Share", "load_digits", "load_mnist", "read_idx", "read_idx_header"]

#: Examples of the training set every process reads for the initialisation's scale
#: (:meth:`~structops.train.model.LayerClassifier.init_params` looks at no more).
HEAD = 256


def share_rows(n: int, rank: int, size: int) -> slice:
    """The contiguous share of ``n`` examples held by ``rank`` of ``size`` processes.

    The first ``n % size`` ranks hold ``n // size + 1`` examples, the others ``n // size``:
    pylops-mpi's ``SCATTER`` split (as :func:`structops.distributed.local_rows`).
    """
    base, extra = divmod(int(n), int(size))
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))


class ScaledImages:
    r"""Images kept as stored (uint8 ``0..255``) and scaled to ``[0, 1]`` in ``dtype`` when indexed.

    What :func:`~structops.train.load_mnist` returns with ``stream=True``: the 60,000 MNIST training images
    take 47 MB as uint8 instead of 188 MB (float32) or 376 MB (float64), and a mini-batch
    ``images[idx]`` is converted on the fly (the same values as converting everything first:
    ``raw.astype(dtype) / 255``). ``numpy.asarray(images)`` converts everything.

    Parameters
    ----------
    raw : numpy.ndarray of uint8, shape (n, channels, *grid)
    dtype : float32 or float64
    scale : float, optional
        The stored value of 1.0 (255 for MNIST).
    """

    def __init__(self, raw: np.ndarray, dtype, scale: float = 255.0) -> None:
        self.raw = np.asarray(raw)
        self.dtype = _check_dtype(dtype)
        self.scale = float(scale)

    @property
    def shape(self) -> tuple[int, ...]:
        """``(n, channels, *grid)``."""
        return self.raw.shape

    @property
    def ndim(self) -> int:
        """Number of axes."""
        return self.raw.ndim

    @property
    def size(self) -> int:
        """Number of pixels in all."""
        return self.raw.size

    def __len__(self) -> int:
        return self.raw.shape[0]

    def __repr__(self) -> str:
        return f"ScaledImages(shape={self.shape}, stored as {self.raw.dtype}, scaled to {self.dtype})"

    def __getitem__(self, key) -> np.ndarray:
        """The selected images (any numpy index), converted and scaled: a new float array."""
        out = np.asarray(self.raw[key]).astype(self.dtype)
        out /= self.dtype.type(self.scale)
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[...]
        return out if dtype is None else out.astype(dtype, copy=False)

    def rows(self, key) -> ScaledImages:
        """The images ``raw[key]`` (a slice or index array along the first axis), still stored as uint8."""
        return ScaledImages(self.raw[key], self.dtype, self.scale)


@dataclass(frozen=True)
class Share:
    """Which contiguous share of a data set's examples a :class:`Dataset` holds (data-parallel training).

    Attributes
    ----------
    train, test : slice
        Rows of the whole training / test set held here.
    ntrain, ntest : int
        Examples in the whole training / test set.
    head : numpy.ndarray, shape (min(ntrain, 256), channels, *grid)
        The first training examples of the whole set (float), for the initialisation's scale,
        so that every process starts from the parameters one process would.
    """

    train: slice
    test: slice
    ntrain: int
    ntest: int
    head: np.ndarray


@dataclass(frozen=True)
class Dataset:
    """A classification data set split into training and test examples.

    Attributes
    ----------
    x_train, x_test : numpy.ndarray or ScaledImages, shape (n, channels, *grid)
        Images in ``[0, 1]``, float32 or float64 (:class:`~structops.train.data.ScaledImages`: stored as uint8,
        converted when indexed).
    y_train, y_test : numpy.ndarray of int64, shape (n,)
        Class labels ``0 .. nclasses - 1``.
    nclasses : int
    name : str
    share : Share or None
        None when the data set holds every example; else which share of them it holds.
    """

    x_train: np.ndarray | ScaledImages
    y_train: np.ndarray
    x_test: np.ndarray | ScaledImages
    y_test: np.ndarray
    nclasses: int
    name: str
    share: Share | None = None

    @property
    def ntrain(self) -> int:
        """Training examples of the whole data set (not only of this share)."""
        return self.share.ntrain if self.share is not None else int(self.x_train.shape[0])

    @property
    def ntest(self) -> int:
        """Test examples of the whole data set (not only of this share)."""
        return self.share.ntest if self.share is not None else int(self.x_test.shape[0])

    @property
    def image_shape(self) -> tuple[int, ...]:
        """Shape ``(channels, *grid)`` of one example."""
        return tuple(self.x_train.shape[1:])

    def subset(self, ntrain: int | None = None, ntest: int | None = None) -> Dataset:
        """The first ``ntrain`` training and ``ntest`` test examples (None keeps all)."""
        if self.share is not None:
            raise ValueError("`subset` of a share of a data set: take the subset before sharing it.")
        return Dataset(
            _rows(self.x_train, slice(ntrain)), self.y_train[:ntrain], _rows(self.x_test, slice(ntest)),
            self.y_test[:ntest], self.nclasses, self.name,
        )  # fmt: skip

    def shard(self, rank: int, size: int) -> Dataset:
        """The share of the examples held by process ``rank`` of ``size``: :func:`~structops.train.data.share_rows`."""
        if self.share is not None:
            raise ValueError("this data set is already a share of one.")
        tr, te = share_rows(self.ntrain, rank, size), share_rows(self.ntest, rank, size)
        head = np.asarray(_rows(self.x_train, slice(HEAD)))
        share = Share(tr, te, self.ntrain, self.ntest, head)
        return Dataset(
            _rows(self.x_train, tr), self.y_train[tr], _rows(self.x_test, te), self.y_test[te],
            self.nclasses, self.name, share,
        )  # fmt: skip


def _rows(x, key):
    """Rows of an image array, keeping a :class:`ScaledImages` stored as it is."""
    return x.rows(key) if isinstance(x, ScaledImages) else x[key]


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
_IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _read_exactly(fh, buf: memoryview) -> int:
    """Fill ``buf`` from ``fh``; the number of bytes read (fewer only at the end of the file)."""
    got = 0
    while got < len(buf):
        n = fh.readinto(buf[got:])
        if not n:
            break
        got += n
    return got


def _header(fh, path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    magic = fh.read(4)
    if len(magic) < 4:
        raise IDXError(f"IDX file {str(path)!r} is truncated: {len(magic)} bytes, not even a 4-byte magic number.")
    zero0, zero1, code, ndim = magic
    if zero0 != 0 or zero1 != 0 or code not in _IDX_TYPES or ndim == 0:
        raise IDXError(
            f"IDX file {str(path)!r} has bad magic number 0x{magic.hex()}; expected 0x0000TTDD with type "
            f"code TT in {sorted(f'{c:02x}' for c in _IDX_TYPES)} and DD >= 1 dimensions "
            "(MNIST images: 0x00000803, labels: 0x00000801)."
        )
    header = 4 + 4 * ndim
    raw = fh.read(4 * ndim)
    if len(raw) < 4 * ndim:
        raise IDXError(f"IDX file {str(path)!r} is truncated inside its header ({4 + len(raw)} of {header} bytes).")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim))
    return dims, _IDX_TYPES[code], header


def read_idx_header(path: str | os.PathLike) -> tuple[tuple[int, ...], np.dtype]:
    """The shape and element type an IDX file announces, read from its header alone.

    Raises
    ------
    IDXError
        As :func:`read_idx`, for a missing file or a bad header.
    """
    path = Path(path)
    if not path.is_file():
        raise IDXError(f"IDX file {str(path)!r} does not exist.")
    try:
        with _open(path) as fh:
            dims, dtype, _ = _header(fh, path)
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        raise IDXError(f"cannot read IDX file {str(path)!r}: {exc}") from exc
    return dims, dtype.newbyteorder("=")


def read_idx(path: str | os.PathLike, rows: slice | None = None) -> np.ndarray:
    r"""Read one IDX file (the MNIST format), plain or gzip-compressed (``.gz``), or some of its rows.

    The format: a 4-byte magic number ``0x00 0x00 <type> <ndim>``, then ``ndim`` big-endian
    uint32 sizes, then the data in C order; ``type`` is ``0x08`` (uint8), ``0x09`` (int8),
    ``0x0B`` (int16), ``0x0C`` (int32), ``0x0D`` (float32) or ``0x0E`` (float64).

    Parameters
    ----------
    path : str or path-like
        The file; a name ending in ``.gz`` is decompressed.
    rows : slice, optional
        Read only these entries of the first axis (a contiguous slice, step 1): the header
        is read, then only the bytes of those rows (a seek; a ``.gz`` file is decompressed up
        to them without keeping what it skips). Default: everything.

    Returns
    -------
    numpy.ndarray
        The array with its stored shape (``rows`` selects along the first axis) and type
        (native byte order).

    Raises
    ------
    IDXError
        If the file is missing, not gzip when named ``.gz``, has a bad magic number or type
        code, or holds fewer or more bytes than its header announces (with ``rows``, for a
        ``.gz`` file: fewer than the rows need).
    """
    path = Path(path)
    if not path.is_file():
        raise IDXError(f"IDX file {str(path)!r} does not exist.")
    if rows is not None and rows.step not in (None, 1):
        raise ValueError(f"`rows` must be a contiguous slice (step 1), got {rows!r}.")
    try:
        with _open(path) as fh:
            dims, dtype, header = _header(fh, path)
            expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
            start, stop, _ = (rows or slice(None)).indices(dims[0])
            stop = max(start, stop)
            row_bytes = int(np.prod(dims[1:], dtype=np.int64)) * dtype.itemsize
            out = np.empty((stop - start, *dims[1:]), dtype=dtype)
            plain = path.suffix != ".gz"
            if plain and os.fstat(fh.fileno()).st_size != expected:
                _wrong_size(path, dims, dtype, expected, os.fstat(fh.fileno()).st_size)
            if start:
                fh.seek(header + start * row_bytes)
            got = _read_exactly(fh, memoryview(out.reshape(-1).view(np.uint8)))  # type: ignore[arg-type]
            if got < out.nbytes:
                _wrong_size(path, dims, dtype, expected, header + start * row_bytes + got, at_least=not plain)
            if not plain and stop == dims[0]:
                rest = len(fh.read())
                if rest:
                    _wrong_size(path, dims, dtype, expected, expected + rest)
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        raise IDXError(f"cannot read IDX file {str(path)!r}: {exc}") from exc
    return out if dtype.isnative else out.astype(dtype.newbyteorder("="))


def _wrong_size(path: Path, dims, dtype: np.dtype, expected: int, actual: int, at_least: bool = False):
    what = "truncated" if actual < expected else "longer than its header says"
    holds = f"ends after {actual} bytes" if at_least else f"holds {actual} bytes"
    raise IDXError(
        f"IDX file {str(path)!r} is {what}: header announces shape {dims} of {dtype.name} "
        f"({expected} bytes in all) but the file {holds}."
    )


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


def load_mnist(
    folder: str | os.PathLike,
    *,
    dtype=np.float64,
    limit: int | None = None,
    stream: bool = False,
    shard: tuple[int, int] | None = None,
) -> Dataset:
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
    stream : bool, optional
        Keep the images as stored (uint8) in :class:`~structops.train.data.ScaledImages`, converted to ``dtype``
        when indexed (a mini-batch at a time), instead of converting them all now.
    shard : (rank, size), optional
        Read only the share of the (first ``limit``) training and test images that process
        ``rank`` of ``size`` holds (:func:`~structops.train.data.share_rows`), plus the first 256 training images
        for the initialisation (:class:`~structops.train.data.Share`); the labels (one byte an example) are read
        whole, so that every process agrees on the number of classes.

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
    paths = {key: _find_idx(folder, stem) for key, stem in _MNIST_FILES.items()}
    headers = {key: read_idx_header(p) for key, p in paths.items()}
    counts = {}
    for split in ("train", "test"):
        (ishape, idtype), (lshape, _) = headers[f"{split}_images"], headers[f"{split}_labels"]
        if len(ishape) != 3 or idtype != np.uint8:
            raise IDXError(
                f"MNIST {split} images must be a 3-D uint8 IDX array (n, rows, cols), got shape {ishape} of {idtype}."
            )
        if len(lshape) != 1 or lshape[0] != ishape[0]:
            raise IDXError(
                f"MNIST {split} labels must be 1-D with one label per image ({ishape[0]}), got shape {lshape}."
            )
        counts[split] = ishape[0] if limit is None else min(ishape[0], int(limit))
    if headers["train_images"][0][1:] != headers["test_images"][0][1:]:
        raise IDXError(
            f"MNIST train and test images differ in size: {headers['train_images'][0][1:]} "
            f"vs {headers['test_images'][0][1:]}."
        )
    ys = [read_idx(paths[f"{s}_labels"], slice(counts[s])).astype(np.int64) for s in ("train", "test")]
    if min(y.min(initial=0) for y in ys) < 0:
        raise IDXError("MNIST labels must be nonnegative class indices.")
    nclasses = int(max(y.max(initial=0) for y in ys)) + 1
    rows = {s: slice(counts[s]) if shard is None else share_rows(counts[s], *shard) for s in ("train", "test")}

    def images(split: str, sl: slice):
        raw = read_idx(paths[f"{split}_images"], sl)[:, None]
        x = ScaledImages(raw, dt)
        return x if stream else x[...]

    xs = [images(s, rows[s]) for s in ("train", "test")]
    name = f"mnist:{folder.name}"
    if shard is None:
        return Dataset(xs[0], ys[0], xs[1], ys[1], nclasses, name)
    mine = rows["train"]
    if mine.start == 0 and mine.stop >= min(HEAD, counts["train"]):
        head = np.asarray(_rows(xs[0], slice(HEAD)))
    else:
        head = np.asarray(images("train", slice(min(HEAD, counts["train"]))))
    share = Share(rows["train"], rows["test"], counts["train"], counts["test"], head)
    return Dataset(xs[0], ys[0][rows["train"]], xs[1], ys[1][rows["test"]], nclasses, name, share)
