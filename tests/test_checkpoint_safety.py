"""Checkpoints: written atomically (a write that fails part way leaves the old file whole), read
with ``torch.load(weights_only=True)`` (a file crafted to run code is refused and its code never
runs), damaged or mismatched files refused with a message naming the problem."""

from __future__ import annotations

import errno
import importlib
import os
import pickle
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import TINY, run_cli, tiny

import pyrovae
from pyrovae.errors import CheckpointError, ConfigError
from pyrovae.runs.checkpoint import atomic_write_bytes, load_checkpoint, save_checkpoint
from pyrovae.runs.directory import CHECKPOINT_FILE, CONFIG_FILE, load_weights, read_metrics


class RunsCode:
    """Unpickling this calls ``Path.touch(marker)``: the marker file proves that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def leftover_temporary_files(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.endswith(".tmp")]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished two-epoch run to read, damage and compare against."""
    directory = tmp_path_factory.mktemp("run") / "run"
    pyrovae.train(tiny("train.epochs=2"), out=directory, quiet=True)
    return directory


# ------------------------------------------------------------------ code in a file
@pytest.mark.parametrize(
    "layout, message",
    [
        ("torch.save", "is refused: it holds objects other than tensors and plain data"),
        (2, "cannot be loaded safely.*not a zip file"),  # a bare pickle is never unpickled
        (5, "cannot be loaded safely.*not a zip file"),
    ],
    ids=["torch.save", "pickle-protocol-2", "pickle-protocol-5"],
)
def test_a_checkpoint_crafted_to_run_code_is_refused_and_nothing_runs(tmp_path, layout, message):
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pt"
    payload = {"format": 1, "config": {}, "model": RunsCode(marker)}
    if layout == "torch.save":
        torch.save(payload, path)
        unsafe_load = lambda: torch.load(path, weights_only=False)  # noqa: E731
    else:
        path.write_bytes(pickle.dumps(payload, protocol=layout))
        unsafe_load = lambda: pickle.loads(path.read_bytes())  # noqa: E731
    # The file really is hostile: an unsafe load runs its code (then the marker is removed).
    unsafe_load()
    assert marker.exists()
    marker.unlink()

    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)
    assert not marker.exists()


def test_a_run_directory_with_a_hostile_checkpoint_is_refused_by_every_command(tmp_path):
    marker = tmp_path / "code-ran"
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    torch.save({"format": 1, "model": RunsCode(marker)}, run_dir / CHECKPOINT_FILE)
    with pytest.raises(CheckpointError, match="refused"):
        pyrovae.load_run(run_dir)
    with pytest.raises(CheckpointError, match="refused"):
        pyrovae.resume(run_dir)
    for args in (["sample", str(run_dir)], ["train", "--resume", str(run_dir)]):
        result = run_cli(*args)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith("pyrovae: error: checkpoint")
        assert result.stderr.count("\n") == 1  # one line
    assert not marker.exists()


# ------------------------------------------------------------------ damaged files
@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda data: data[: len(data) // 2], "damaged, truncated or not a pyrovae checkpoint"),
        (lambda data: data[:100], "damaged, truncated or not a pyrovae checkpoint"),
        (lambda data: b"", "damaged, truncated or not a pyrovae checkpoint"),
        (lambda data: bytes(range(256)) * 40, "damaged, truncated or not a pyrovae checkpoint"),
        (lambda data: data[:2000] + b"\0" * 4096 + data[6096:], "cannot be loaded safely"),
    ],
    ids=["half", "100-bytes", "empty", "noise", "zeroed-block"],
)
def test_a_damaged_checkpoint_gives_a_clear_error(tmp_path, trained, damage, message):
    data = (trained / CHECKPOINT_FILE).read_bytes()
    path = tmp_path / "damaged.pt"
    path.write_bytes(damage(data))
    with pytest.raises(CheckpointError, match=message) as error:
        load_checkpoint(path)
    assert "\n" not in str(error.value)


def test_a_file_of_plain_data_that_is_not_a_checkpoint_is_refused(tmp_path):
    torch.save([1, 2, 3], tmp_path / "list.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    for name in ("list.pt", "foreign.pt"):
        with pytest.raises(CheckpointError, match="not a pyrovae checkpoint of format 2"):
            load_checkpoint(tmp_path / name)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "absent.pt")


# ------------------------------------------------------------------ mismatches
def test_a_checkpoint_of_another_architecture_names_the_difference(tmp_path, trained):
    payload = load_checkpoint(trained / CHECKPOINT_FILE)
    payload["config"]["model"]["latent_dim"] = 6  # the config now disagrees with the weights
    run_dir = tmp_path / "edited"
    run_dir.mkdir()
    save_checkpoint(run_dir / CHECKPOINT_FILE, {k: v for k, v in payload.items() if k != "format"})
    with pytest.raises(
        CheckpointError,
        match=r"prior\.loc has shape \(4,\), the model expects \(6,\)",
    ):
        pyrovae.load_run(run_dir)

    other = pyrovae.build_vae(tiny("model.prior=learned_normal").model, (1, 8, 8))
    with pytest.raises(CheckpointError, match=r"missing \['prior\.loc_unconstrained'"):
        load_weights(other, payload["model"])


def test_resume_with_other_data_names_the_shapes(tmp_path, trained):
    """Same config, but the data changed shape under it (a user file replaced)."""
    import numpy as np

    data = tmp_path / "data.npy"
    np.save(data, np.random.default_rng(0).random((40, 5)).astype(np.float32))
    config = tiny("train.epochs=1", "data.name=file", f"data.path='{data}'")
    pyrovae.train(config, out=tmp_path / "r", quiet=True)
    np.save(data, np.random.default_rng(0).random((40, 6)).astype(np.float32))
    with pytest.raises(CheckpointError, match=r"had shape \(5,\), the data now has shape \(6,\)"):
        pyrovae.train(config.replace(["train.epochs=2"]), resume=tmp_path / "r")


# ------------------------------------------------------------------ atomic writes
class FailingFile:
    """A file whose writes stop with ENOSPC (a full disk) after ``budget`` bytes."""

    def __init__(self, handle, budget: int) -> None:
        self.handle, self.budget = handle, budget

    def write(self, data) -> int:
        data = bytes(data)
        if len(data) > self.budget:
            self.handle.write(data[: self.budget])  # part of it reaches the disk
            self.handle.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.budget -= len(data)
        return self.handle.write(data)

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()


def fail_writes_after(monkeypatch, budget: int) -> None:
    module = importlib.import_module("pyrovae.runs.checkpoint")
    real_fdopen = os.fdopen
    monkeypatch.setattr(
        module.os, "fdopen", lambda fd, *a, **k: FailingFile(real_fdopen(fd, *a, **k), budget)
    )


def test_a_write_that_fails_part_way_leaves_the_last_checkpoint_whole(
    tmp_path, trained, monkeypatch
):
    path = tmp_path / CHECKPOINT_FILE
    shutil.copy(trained / CHECKPOINT_FILE, path)
    before = path.read_bytes()
    payload = load_checkpoint(path)
    payload.pop("format")
    fail_writes_after(monkeypatch, budget=len(before) // 3)
    with pytest.raises(CheckpointError, match="No space left on device; any previous checkpoint"):
        save_checkpoint(path, {**payload, "epoch": 99})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert load_checkpoint(path)["epoch"] == 2
    assert leftover_temporary_files(tmp_path) == []


def test_a_full_disk_during_training_loses_nothing_and_the_run_resumes(tmp_path, monkeypatch):
    """The disk is full when epoch 3 is saved: training stops with one line, epoch 2's
    checkpoint is whole, and resuming ends exactly where an uninterrupted run ends."""
    config = tiny("train.epochs=4")
    full = pyrovae.train(config, out=tmp_path / "full", quiet=True)

    checkpoint_module = importlib.import_module("pyrovae.runs.checkpoint")
    loop_module = importlib.import_module("pyrovae.training.loop")
    real_fdopen, real_save, epoch = os.fdopen, loop_module.save_checkpoint, [0]

    def saving(path, payload):
        epoch[0] = payload["epoch"]
        real_save(path, payload)

    def disk_full_in_epoch_3(fd, *args, **kwargs):
        handle = real_fdopen(fd, *args, **kwargs)
        return FailingFile(handle, 1000) if epoch[0] == 3 else handle

    monkeypatch.setattr(loop_module, "save_checkpoint", saving)
    monkeypatch.setattr(checkpoint_module.os, "fdopen", disk_full_in_epoch_3)
    with pytest.raises(CheckpointError, match="No space left on device"):
        pyrovae.train(config, out=tmp_path / "r", quiet=True)
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "r" / CHECKPOINT_FILE)["epoch"] == 2
    assert leftover_temporary_files(tmp_path / "r") == []

    resumed = pyrovae.resume(tmp_path / "r", quiet=True)
    strip = [{k: v for k, v in m.items() if k != "epoch_seconds"} for m in full.metrics]
    assert [{k: v for k, v in m.items() if k != "epoch_seconds"} for m in resumed.metrics] == strip
    assert len(read_metrics(tmp_path / "r")) == 4


def _mount_tmpfs(directory: Path, size: str) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)],
        capture_output=True,
    )
    return result.returncode == 0


def test_a_really_full_disk_keeps_the_old_checkpoint(tmp_path, trained):
    """A 256 KiB tmpfs holds one checkpoint (about 40 KiB) plus filler: the next write fails
    with a real ENOSPC from the kernel, not a simulated one."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if not _mount_tmpfs(disk, "256k"):
        pytest.skip("cannot mount a small tmpfs here (needs root and mount permission)")
    try:
        path = disk / CHECKPOINT_FILE
        shutil.copy(trained / CHECKPOINT_FILE, path)
        before = path.read_bytes()
        free = shutil.disk_usage(disk).free
        (disk / "filler").write_bytes(b"\0" * (free - len(before) // 2))
        payload = load_checkpoint(path)
        payload.pop("format")
        with pytest.raises(CheckpointError, match="No space left on device"):
            save_checkpoint(path, payload)
        assert path.read_bytes() == before
        assert leftover_temporary_files(disk) == []
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_atomic_write_keeps_the_mode_a_plain_write_would_give(tmp_path):
    atomic_write_bytes(tmp_path / "a", lambda f: f.write(b"x"))
    (tmp_path / "b").write_bytes(b"x")
    assert (tmp_path / "a").stat().st_mode == (tmp_path / "b").stat().st_mode


# ------------------------------------------------------------------ the output location
def test_an_unwritable_output_location_is_reported_before_training(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    train_module = importlib.import_module("pyrovae.training.train")

    def too_late(*args, **kwargs):
        raise AssertionError("data loaded before the output location was checked")

    monkeypatch.setattr(train_module, "load_splits", too_late)
    with pytest.raises(ConfigError, match="cannot write the run directory .*: Not a directory"):
        pyrovae.train(tiny("train.epochs=1"), out=blocker / "run", quiet=True)

    if os.geteuid() != 0:  # root writes through permission bits: the case above covers it
        read_only = tmp_path / "read-only"
        read_only.mkdir(mode=0o555)
        with pytest.raises(ConfigError, match="Permission denied"):
            pyrovae.train(tiny("train.epochs=1"), out=read_only / "run", quiet=True)


def test_an_unwritable_output_location_exits_2_from_the_command_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = run_cli("train", "--out", str(blocker / "run"), *TINY, "train.epochs=1")
    assert result.returncode == 2
    assert result.stderr.startswith("pyrovae: error: cannot write the run directory")
    assert result.stderr.count("\n") == 1
    assert blocker.read_text() == "not a folder"
    assert not (tmp_path / CONFIG_FILE).exists()


# ------------------------------------------------------------------ integrity digest
def test_a_zeroed_block_anywhere_in_a_checkpoint_is_refused(tmp_path, trained):
    """torch does not check its archive's CRCs; pyrovae checks them and a sha256 digest of the
    content, so a zeroed 4 KiB block at any offset (every 1 KiB here) is refused."""
    data = (trained / CHECKPOINT_FILE).read_bytes()
    path = tmp_path / "damaged.pt"
    for offset in range(0, len(data), 1024):
        damaged = (data[:offset] + bytes(4096) + data[offset + 4096 :])[: len(data)]
        if damaged == data:
            continue
        path.write_bytes(damaged)
        with pytest.raises(CheckpointError, match="damaged") as error:
            load_checkpoint(path)
        assert "\n" not in str(error.value)


def test_content_that_does_not_match_its_digest_is_refused(tmp_path, trained):
    """A well-formed archive whose content was changed after the digest was taken."""
    payload = torch.load(trained / CHECKPOINT_FILE, weights_only=True)
    next(iter(payload["model"].values())).add_(1.0)
    torch.save(payload, tmp_path / "edited.pt")
    with pytest.raises(CheckpointError, match="does not match its sha256 digest"):
        load_checkpoint(tmp_path / "edited.pt")


def test_a_checkpoint_without_digest_is_refused_until_upgraded(tmp_path, trained):
    """Decided: format 1 (no digest) is refused, naming upgrade_checkpoint, which a user who
    trusts the file runs once; the run then loads as before."""
    from pyrovae.runs.checkpoint import upgrade_checkpoint

    payload = torch.load(trained / CHECKPOINT_FILE, weights_only=True)
    payload.pop("sha256")
    payload["format"] = 1
    run_dir = tmp_path / "old"
    shutil.copytree(trained, run_dir)
    torch.save(payload, run_dir / CHECKPOINT_FILE)
    with pytest.raises(CheckpointError, match="format 1.*upgrade_checkpoint"):
        pyrovae.load_run(run_dir, checkpoint="last")
    upgrade_checkpoint(run_dir / CHECKPOINT_FILE)
    _, vae, _ = pyrovae.load_run(run_dir, checkpoint="last")
    _, reference, _ = pyrovae.load_run(trained, checkpoint="last")
    for (key, a), b in zip(vae.state_dict().items(), reference.state_dict().values(), strict=True):
        assert torch.equal(a, b), key


def test_a_dangling_checkpoint_link_is_named(tmp_path):
    (tmp_path / CHECKPOINT_FILE).symlink_to(tmp_path / "gone.pt")
    with pytest.raises(CheckpointError, match="dangling symbolic link"):
        load_checkpoint(tmp_path / CHECKPOINT_FILE)
