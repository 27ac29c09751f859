"""Checkpoints: exact resume, atomic writes, corrupted files rejected, divergence keeps the last good one."""

import re
import zipfile

import numpy as np
import pytest

from structops.train import (
    Checkpoint,
    CheckpointError,
    Params,
    TrainConfig,
    TrainingDiverged,
    load_checkpoint,
    load_digits,
    save_checkpoint,
    train,
)
from structops.train.trainer import CHECKPOINT_NAME


@pytest.fixture(scope="module")
def small():
    return load_digits().subset(160, 80)


def _config(optimizer, epochs, **kw):
    # a constant step: a cosine schedule spans `epochs`, so a 2-epoch run is not the first half of a 4-epoch one
    base = dict(
        kernel="conv",
        channels=2,
        optimizer=optimizer,
        epochs=epochs,
        iters=4,
        batch_size=32,
        seed=3,
        dtype="float64",
        schedule="constant",
    )
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize(
    "optimizer,extra",
    [("lbfgs", {}), ("sgd", {}), ("adam", {"dtype": "float32"}), ("gnk", {"iters": 1})],
)
def test_resume_gives_identical_parameters_to_an_uninterrupted_run(optimizer, extra, small, tmp_path):
    straight = train(_config(optimizer, 4, **extra), small)
    first = train(_config(optimizer, 2, **extra), small, out=tmp_path / "run", plots=False)
    assert load_checkpoint(tmp_path / "run" / CHECKPOINT_NAME).epoch == 2
    resumed = train(_config(optimizer, 4, **extra), small, out=tmp_path / "run", resume=tmp_path / "run", plots=False)
    assert resumed.history["epoch"] == [1.0, 2.0, 3.0, 4.0]
    for name in ("theta", "bias", "W", "c"):
        a, b = getattr(straight.params, name), getattr(resumed.params, name)
        assert a.dtype == b.dtype == np.dtype(extra.get("dtype", "float64"))
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert straight.history["loss"] == resumed.history["loss"]
    assert first.history["loss"] == straight.history["loss"][:2]


def _ckpt(rng):
    params = Params(rng.standard_normal(5), np.zeros(2), rng.standard_normal((3, 4)), np.ones(4))
    state = {"m": rng.standard_normal(7), "t": np.array(3)}
    rs = np.random.default_rng(9).bit_generator.state
    return Checkpoint(params, {"kernel": "dense", "epochs": 2}, 2, rs, state, {"loss": np.array([1.0, 0.5])})


def test_roundtrip_restores_everything(tmp_path):
    rng = np.random.default_rng(0)
    ck = _ckpt(rng)
    path = save_checkpoint(tmp_path / "c.npz", ck)
    back = load_checkpoint(path)
    assert back.config == ck.config and back.epoch == 2 and back.rng_state == ck.rng_state
    for name in ("theta", "bias", "W", "c"):
        np.testing.assert_array_equal(getattr(back.params, name), getattr(ck.params, name))
    np.testing.assert_array_equal(back.optimizer_state["m"], ck.optimizer_state["m"])
    np.testing.assert_array_equal(back.history["loss"], [1.0, 0.5])
    gen = np.random.default_rng()
    gen.bit_generator.state = back.rng_state
    assert gen.random() == np.random.default_rng(9).random()


def test_truncated_checkpoint_is_rejected(tmp_path):
    path = save_checkpoint(tmp_path / "c.npz", _ckpt(np.random.default_rng(0)))
    raw = path.read_bytes()
    for cut in (0, 10, len(raw) // 2, len(raw) - 30):
        bad = tmp_path / f"cut{cut}.npz"
        bad.write_bytes(raw[:cut])
        with pytest.raises(CheckpointError, match="truncated or corrupted"):
            load_checkpoint(bad)


def test_corrupted_checkpoint_is_rejected(tmp_path):
    path = save_checkpoint(tmp_path / "c.npz", _ckpt(np.random.default_rng(0)))
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("params/W.npy")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    raw[start + info.compress_size // 2] ^= 0xFF  # flip bits inside the compressed W
    bad = tmp_path / "flipped.npz"
    bad.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        load_checkpoint(bad)


def test_foreign_or_missing_files_are_rejected(tmp_path):
    np.savez(tmp_path / "other.npz", a=np.ones(3))
    with pytest.raises(CheckpointError, match="not a structops checkpoint"):
        load_checkpoint(tmp_path / "other.npz")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.npz")
    with pytest.raises(CheckpointError, match="does not exist"):
        train(TrainConfig(), resume=tmp_path / "nope.npz")


def test_interrupted_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    good = _ckpt(rng)
    path = save_checkpoint(tmp_path / "c.npz", good)
    before = path.read_bytes()

    def crash(fh, **arrays):
        fh.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez_compressed", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, _ckpt(rng))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npz"]  # no temporary file left behind
    monkeypatch.undo()
    assert load_checkpoint(path).epoch == good.epoch


def test_divergence_stops_and_keeps_the_last_good_checkpoint(small, tmp_path):
    cfg = _config("sgd", 2, kernel="dense", activation="identity", lr=1e-3)
    train(cfg, small, out=tmp_path, plots=False)
    before = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    # continue the run with an absurd step size: the next epoch blows up
    edited = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    edited.config["lr"] = 1e12
    save_checkpoint(tmp_path / CHECKPOINT_NAME, edited)
    with pytest.raises(TrainingDiverged, match=r"diverged.*epoch \d of 5.*last good checkpoint") as info:
        train(_config("sgd", 5), small, out=tmp_path, resume=tmp_path, plots=False)
    m = re.search(r"epoch (\d) of 5.*last good checkpoint \(epoch (\d)\)", str(info.value))
    bad_epoch, kept = int(m.group(1)), int(m.group(2))
    assert kept == bad_epoch - 1 >= 2
    after = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert after.epoch == kept
    assert all(np.all(np.isfinite(getattr(after.params, n))) for n in ("theta", "bias", "W", "c"))
    if kept == 2:
        np.testing.assert_array_equal(after.params.W, before.params.W)


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_checkpoint_gets_the_permissions_of_any_new_file(tmp_path, umask):
    import os

    old = os.umask(umask)
    try:
        path = save_checkpoint(tmp_path / "c.npz", _ckpt(np.random.default_rng(0)))
        other = tmp_path / "other.csv"
        other.write_text("x")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == other.stat().st_mode & 0o777 == 0o666 & ~umask


def test_resolve_checkpoint_accepts_a_file_or_its_folder(tmp_path):
    from structops.train.checkpoint import resolve_checkpoint

    assert resolve_checkpoint(tmp_path) == tmp_path / CHECKPOINT_NAME
    assert resolve_checkpoint(tmp_path / "x.npz") == tmp_path / "x.npz"
