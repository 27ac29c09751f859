"""Data: the shipped digits and the IDX (MNIST) reader on small files written here."""

import gzip
import struct

import numpy as np
import pytest

from structops.train import IDXError, load_digits, load_mnist, read_idx


def _idx_bytes(arr: np.ndarray, code: int) -> bytes:
    header = bytes([0, 0, code, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def _write(path, arr, code, gz=False):
    raw = _idx_bytes(arr, code)
    if gz:
        with gzip.open(path, "wb") as fh:
            fh.write(raw)
    else:
        path.write_bytes(raw)
    return path


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize(
    "dtype,code", [(np.uint8, 0x08), (np.int8, 0x09), (np.int16, 0x0B), (np.int32, 0x0C), (np.float32, 0x0D)]
)
def test_read_idx_roundtrip(dtype, code, gz, tmp_path):
    rng = np.random.default_rng(0)
    arr = (rng.standard_normal((3, 4, 5)) * 50).astype(dtype)
    path = _write(tmp_path / ("a.idx" + (".gz" if gz else "")), arr, code, gz)
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.shape == (3, 4, 5)
    np.testing.assert_array_equal(back, arr)


def test_read_idx_rejects_malformed_files(tmp_path):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    raw = _idx_bytes(arr, 0x08)
    cases = {
        "badmagic": (b"\x01\x00" + raw[2:], "bad magic number"),
        "badtype": (raw[:2] + b"\x07" + raw[3:], "bad magic number"),
        "short": (raw[:3], "not even a 4-byte magic"),
        "header": (raw[:9], "truncated inside its header"),
        "truncated": (raw[:-5], "is truncated: header announces shape \\(2, 3, 4\\)"),
        "long": (raw + b"\x00", "longer than its header says"),
    }
    for name, (data, msg) in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(IDXError, match=msg):
            read_idx(path)
    notgz = tmp_path / "x.gz"
    notgz.write_bytes(raw)
    with pytest.raises(IDXError, match="cannot read"):
        read_idx(notgz)
    with pytest.raises(IDXError, match="does not exist"):
        read_idx(tmp_path / "missing")


def _mnist_folder(folder, gz, ntrain=6, ntest=4):
    rng = np.random.default_rng(1)
    folder.mkdir()
    suf = ".gz" if gz else ""
    tr = rng.integers(0, 256, (ntrain, 5, 7)).astype(np.uint8)
    te = rng.integers(0, 256, (ntest, 5, 7)).astype(np.uint8)
    ytr = rng.integers(0, 10, ntrain).astype(np.uint8)
    yte = rng.integers(0, 10, ntest).astype(np.uint8)
    _write(folder / f"train-images-idx3-ubyte{suf}", tr, 0x08, gz)
    _write(folder / f"train-labels-idx1-ubyte{suf}", ytr, 0x08, gz)
    _write(folder / f"t10k-images-idx3-ubyte{suf}", te, 0x08, gz)
    _write(folder / f"t10k-labels-idx1-ubyte{suf}", yte, 0x08, gz)
    return tr, ytr, te, yte


@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist_from_a_folder(gz, tmp_path):
    tr, ytr, _te, yte = _mnist_folder(tmp_path / "m", gz)
    d = load_mnist(tmp_path / "m", dtype=np.float32)
    assert d.x_train.shape == (6, 1, 5, 7) and d.x_test.shape == (4, 1, 5, 7)
    assert d.x_train.dtype == np.float32 and d.image_shape == (1, 5, 7)
    np.testing.assert_allclose(d.x_train[:, 0], tr / np.float32(255), rtol=1e-7)
    np.testing.assert_array_equal(d.y_test, yte)
    assert d.nclasses == max(ytr.max(), yte.max()) + 1
    assert load_mnist(tmp_path / "m", limit=3).x_train.shape[0] == 3


def test_load_mnist_errors(tmp_path):
    with pytest.raises(IDXError, match="must be a directory"):
        load_mnist(tmp_path / "none")
    _mnist_folder(tmp_path / "m", gz=False)
    (tmp_path / "m" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(IDXError, match="'t10k-labels-idx1-ubyte' not found"):
        load_mnist(tmp_path / "m")
    _write(tmp_path / "m" / "t10k-labels-idx1-ubyte", np.zeros(3, np.uint8), 0x08)  # 3 labels for 4 images
    with pytest.raises(IDXError, match="one label per image"):
        load_mnist(tmp_path / "m")
    _write(tmp_path / "m" / "t10k-labels-idx1-ubyte", np.zeros(4, np.uint8), 0x08)
    _write(tmp_path / "m" / "train-images-idx3-ubyte", np.zeros((6, 35), np.uint8), 0x08)  # 2-D images
    with pytest.raises(IDXError, match="3-D uint8"):
        load_mnist(tmp_path / "m")


def test_digits_split_is_fixed_disjoint_and_complete():
    from sklearn.datasets import load_digits as sk_digits

    a, b = load_digits(), load_digits(dtype=np.float32)
    assert a.x_train.shape == (1438, 1, 8, 8) and a.x_test.shape == (359, 1, 8, 8)
    np.testing.assert_array_equal(a.y_train, b.y_train)
    assert b.x_train.dtype == np.float32 and a.x_train.max() == 1.0 and a.x_train.min() == 0.0
    # the split is a permutation of scikit-learn's data set: every image appears exactly once
    ref = sk_digits()
    keys = lambda x, y: sorted(zip(map(bytes, np.round(x.reshape(len(x), -1) * 16).astype(np.uint8)), y))  # noqa: E731
    ours = keys(np.concatenate([a.x_train, a.x_test]), np.concatenate([a.y_train, a.y_test]))
    theirs = keys(ref.images / 16, ref.target)
    assert ours == theirs
    assert np.bincount(a.y_test, minlength=10).min() > 20  # every class in the test split
    c = load_digits(split_seed=1)
    assert not np.array_equal(c.y_train, a.y_train)
    with pytest.raises(ValueError, match="test_fraction"):
        load_digits(test_fraction=1.5)
    with pytest.raises(TypeError, match="dtype"):
        load_digits(dtype=np.int32)


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_reads_only_the_rows_asked_for(gz, tmp_path):
    arr = np.random.default_rng(2).integers(0, 256, (7, 3, 4)).astype(np.uint8)
    path = _write(tmp_path / ("a.idx" + (".gz" if gz else "")), arr, 0x08, gz)
    for rows in (slice(0, 3), slice(3, 7), slice(2, 2), slice(5, 99), slice(None)):
        np.testing.assert_array_equal(read_idx(path, rows), arr[rows])
    wide = _write(tmp_path / "w.idx", np.arange(12, dtype=np.int32).reshape(4, 3), 0x0C)
    np.testing.assert_array_equal(read_idx(wide, slice(1, 3)), np.arange(3, 9).reshape(2, 3))
    from structops.train.data import read_idx_header

    assert read_idx_header(path) == ((7, 3, 4), np.dtype(np.uint8))


def test_a_share_is_read_without_the_rest_of_the_file(tmp_path):
    # a .gz file cut after the first 3 of 6 images: rank 0 of 2 reads its share, the whole file is refused
    arr = np.arange(6 * 5 * 7, dtype=np.uint8).reshape(6, 5, 7)
    raw = _idx_bytes(arr, 0x08)
    path = tmp_path / "cut.gz"
    path.write_bytes(gzip.compress(raw[: 16 + 3 * 35]))
    np.testing.assert_array_equal(read_idx(path, slice(0, 3)), arr[:3])
    with pytest.raises(IDXError, match="truncated"):
        read_idx(path)
    plain = tmp_path / "cut"
    plain.write_bytes(raw[:-5])
    with pytest.raises(IDXError, match="truncated"):  # a plain file's size is checked whatever the rows
        read_idx(plain, slice(0, 1))


def test_streamed_images_convert_batches_to_the_same_values(tmp_path):
    from structops.train.data import ScaledImages

    _mnist_folder(tmp_path / "m", gz=False)
    full = load_mnist(tmp_path / "m", dtype=np.float32)
    lazy = load_mnist(tmp_path / "m", dtype=np.float32, stream=True)
    assert isinstance(lazy.x_train, ScaledImages) and lazy.x_train.raw.dtype == np.uint8
    assert lazy.x_train.shape == full.x_train.shape and lazy.x_train.dtype == np.float32
    idx = np.array([4, 0, 5])
    np.testing.assert_array_equal(lazy.x_train[idx], full.x_train[idx])
    np.testing.assert_array_equal(np.asarray(lazy.x_test), full.x_test)
    assert lazy.subset(2, 1).x_train.shape == (2, 1, 5, 7)


@pytest.mark.parametrize("size", [1, 2, 4])
def test_shards_cover_the_data_set_and_agree_on_the_classes(size, tmp_path):
    _mnist_folder(tmp_path / "m", gz=True)
    whole = load_mnist(tmp_path / "m", limit=5)
    shares = [load_mnist(tmp_path / "m", limit=5, stream=True, shard=(r, size)) for r in range(size)]
    np.testing.assert_array_equal(np.concatenate([np.asarray(s.x_train) for s in shares]), whole.x_train)
    np.testing.assert_array_equal(np.concatenate([s.y_test for s in shares]), whole.y_test)
    for s in shares:
        assert s.nclasses == whole.nclasses and (s.ntrain, s.ntest) == (5, 4)
        np.testing.assert_array_equal(s.share.head, whole.x_train)  # every rank initialises alike
    # an in-memory data set is split the same way
    digits = load_digits().subset(10, 5)
    parts = [digits.shard(r, size) for r in range(size)]
    np.testing.assert_array_equal(np.concatenate([p.x_train for p in parts]), digits.x_train)
    assert sum(p.x_train.shape[0] for p in parts) == 10 and all(p.ntrain == 10 for p in parts)
