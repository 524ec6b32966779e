"""Resume: a run killed at any moment goes on from its last checkpoint and ends exactly where an
uninterrupted run with the same seed ends (on the CPU, where every operation is deterministic)."""

from __future__ import annotations

import importlib
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import fault_components
import numpy as np
import pytest
import torch
from conftest import REPO, TINY, run_cli, tiny

import pyrovae
from pyrovae.errors import CheckpointError, ConfigError
from pyrovae.runs.checkpoint import load_checkpoint, save_checkpoint
from pyrovae.runs.directory import (
    BEST_FILE,
    CHECKPOINT_FILE,
    CONFIG_FILE,
    METRICS_FILE,
    read_metrics,
)
from pyrovae.training.resume import config_differences
from pyrovae.training.rng import capture_rng, restore_rng

PLUGIN = str(Path(fault_components.__file__))


def without_time(metrics: list[dict]) -> list[dict]:
    """The metrics but the wall-clock time, the one entry that may differ between runs."""
    return [{k: v for k, v in m.items() if k != "epoch_seconds"} for m in metrics]


def assert_same_weights(a: Path, b: Path) -> None:
    state_a = load_checkpoint(a / CHECKPOINT_FILE)["model"]
    state_b = load_checkpoint(b / CHECKPOINT_FILE)["model"]
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key  # bit for bit


# ------------------------------------------------------------------ SIGKILL, for real
def test_sigkill_in_the_middle_of_an_epoch_then_resume_equals_an_uninterrupted_run(tmp_path):
    """Train in a subprocess, SIGKILL it in the middle of epoch 4 (its last checkpoint is from
    epoch 2, with checkpoint_every = 2, so metrics.jsonl holds a line the resumed run must drop),
    resume it from the command line, and compare with a run that was never interrupted.

    The likelihood is the plain Bernoulli; the test component only appends a byte to a progress
    file per training step, so the test knows where in an epoch the process is.
    """
    args = [
        "train",
        "--plugin",
        PLUGIN,
        "--quiet",
        *TINY,
        "model.likelihood=faulty_bernoulli",
        "train.batch_size=10",  # 130 steps per epoch
        "train.epochs=5",
        "train.warmup_epochs=4",  # the KL weight's position must survive the kill too
        "train.checkpoint_every=2",
    ]
    steps = math.ceil(1294 / 10)  # digits: 1797 - 359 test - 144 validation = 1294 training
    killed, progress = tmp_path / "killed", tmp_path / "progress"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": "1",
        fault_components.PROGRESS_ENV: str(progress),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "pyrovae", *args, "--out", str(killed)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    reference = subprocess.Popen(  # the uninterrupted run, meanwhile
        [sys.executable, "-m", "pyrovae", *args, "--out", str(tmp_path / "reference")],
        env={**env, fault_components.PROGRESS_ENV: ""},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    target = 3 * steps + steps // 4  # a quarter into epoch 4
    deadline = time.monotonic() + 300
    try:
        while not (progress.exists() and progress.stat().st_size >= target):
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "the training subprocess made no progress"
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    except BaseException:
        for running in (process, reference):
            running.kill()
            running.wait()
        raise
    assert reference.wait(timeout=300) == 0, reference.stderr.read().decode()
    assert process.returncode == -signal.SIGKILL
    done = progress.stat().st_size  # training steps taken before the kill
    assert done % steps != 0, "the kill must land inside an epoch"
    epochs_done = done // steps
    checkpoint = load_checkpoint(killed / CHECKPOINT_FILE)
    assert checkpoint["epoch"] == 2 * (epochs_done // 2)
    lines = len(read_metrics(killed))
    assert lines == epochs_done > checkpoint["epoch"], "metrics.jsonl must run ahead of it"

    # The same thread count as the other two runs: BLAS reductions split by thread round alike.
    resumed = run_cli(
        "train",
        "--plugin",
        PLUGIN,
        "--quiet",
        "--resume",
        str(killed),
        env={"OMP_NUM_THREADS": "1"},
    )
    assert resumed.returncode == 0, resumed.stderr

    expected = read_metrics(tmp_path / "reference")
    assert len(expected) == 5
    assert without_time(read_metrics(killed)) == without_time(expected)  # exactly equal
    assert_same_weights(killed, tmp_path / "reference")


# ------------------------------------------------------------------- in one process
@pytest.mark.parametrize(
    "extra",
    [
        ["train.warmup_epochs=3"],
        # Monte Carlo KL with vectorized particles, a learned prior, grey-level data, clipping
        [
            "train.estimator={name='trace', particles=3}",
            "model.prior=learned_normal",
            "model.likelihood=continuous_bernoulli",
            "data.binarize=none",
            "train.clip_norm=5.0",
        ],
    ],
    ids=["warmup", "trace-particles"],
)
def test_resume_extends_a_finished_run_exactly(tmp_path, extra):
    full = pyrovae.train(tiny("train.epochs=5", *extra), out=tmp_path / "full", quiet=True)
    pyrovae.train(tiny("train.epochs=2", *extra), out=tmp_path / "part", quiet=True)
    # Between the runs, every generator is disturbed: resume must restore them all.
    torch.manual_seed(123)
    random.seed(123)
    np.random.seed(123)
    resumed = pyrovae.resume(tmp_path / "part", ["train.epochs=5"], quiet=True)
    assert without_time(resumed.metrics) == without_time(full.metrics)
    assert without_time(read_metrics(tmp_path / "part")) == without_time(full.metrics)
    assert_same_weights(tmp_path / "part", tmp_path / "full")
    assert resumed.config.train.epochs == 5
    assert pyrovae.load_config(tmp_path / "part" / CONFIG_FILE).train.epochs == 5


def test_metrics_past_the_checkpoint_are_dropped_and_trained_again(tmp_path):
    """A crash after an epoch's metrics but before its checkpoint: the line is dropped."""
    config = tiny("train.epochs=3", "train.checkpoint_every=2")
    full = pyrovae.train(config, out=tmp_path / "full", quiet=True)
    pyrovae.train(config.replace(["train.epochs=2"]), out=tmp_path / "part", quiet=True)
    with open(tmp_path / "part" / METRICS_FILE, "a") as handle:  # a stale line of epoch 3
        handle.write(json.dumps({**full.metrics[2], "valid_loss": -1.0}) + "\n")
    stale = tmp_path / "part" / f".{CHECKPOINT_FILE}.x1y2z3.tmp"  # a write cut short
    stale.write_bytes(b"half a checkpoint")
    resumed = pyrovae.train(config, resume=tmp_path / "part", quiet=True)
    assert without_time(read_metrics(tmp_path / "part")) == without_time(full.metrics)
    assert len(resumed.metrics) == 3
    assert not stale.exists()


def test_a_run_killed_before_its_first_checkpoint_starts_over(tmp_path):
    config = tiny("train.epochs=2")
    full = pyrovae.train(config, out=tmp_path / "full", quiet=True)
    run_dir = tmp_path / "early"
    run_dir.mkdir()
    config.save(run_dir / CONFIG_FILE)  # what prepare_run_dir leaves before epoch 1 ends
    (run_dir / METRICS_FILE).write_text("")
    resumed = pyrovae.resume(run_dir, quiet=True)
    assert without_time(resumed.metrics) == without_time(full.metrics)


def test_checkpoints_every_n_epochs_and_the_best_by_validation_loss(tmp_path, monkeypatch):
    """checkpoint_every = 2 over 5 epochs saves at epochs 2, 4 and 5 (the end); best.pt is the
    checkpointed epoch of lowest validation loss."""
    saved: list[tuple[str, int]] = []
    loop_module = importlib.import_module("pyrovae.training.loop")
    original = loop_module.save_checkpoint

    def spy(path, payload):
        saved.append((Path(path).name, payload["epoch"]))
        original(path, payload)

    monkeypatch.setattr(loop_module, "save_checkpoint", spy)
    config = tiny("train.epochs=5", "train.checkpoint_every=2")
    run = pyrovae.train(config, out=tmp_path / "r", quiet=True)
    assert [e for name, e in saved if name == CHECKPOINT_FILE] == [2, 4, 5]
    losses = {m["epoch"]: m["valid_loss"] for m in run.metrics}
    best = min((2, 4, 5), key=losses.get)
    assert load_checkpoint(tmp_path / "r" / BEST_FILE)["epoch"] == best
    assert load_checkpoint(tmp_path / "r" / CHECKPOINT_FILE)["epoch"] == 5
    _, vae, payload = pyrovae.load_run(tmp_path / "r", checkpoint=BEST_FILE)
    assert payload["best_valid_loss"] == losses[best]


def test_every_generator_state_survives_a_weights_only_round_trip(tmp_path):
    generator = torch.Generator().manual_seed(7)
    torch.manual_seed(1)
    random.seed(2)
    np.random.seed(3)
    random.gauss(0, 1)  # Python caches the second Gaussian draw: that must survive too
    save_checkpoint(tmp_path / "rng.pt", {"rng": capture_rng(generator)})

    def draws():
        return (
            torch.rand(3).tolist(),
            torch.rand(3, generator=generator).tolist(),
            random.gauss(0, 1),
            np.random.rand(3).tolist(),
        )

    expected = draws()
    torch.manual_seed(9)
    random.seed(9)
    np.random.seed(9)
    generator.manual_seed(9)
    restore_rng(load_checkpoint(tmp_path / "rng.pt")["rng"], generator)
    assert draws() == expected


# ------------------------------------------------------------------ refusals
def test_resume_refuses_a_changed_config_naming_the_key(tmp_path):
    pyrovae.train(tiny("train.epochs=1"), out=tmp_path / "r", quiet=True)
    with pytest.raises(ConfigError, match=r"train\.lr is 0\.001 in the run but 0\.01 now"):
        pyrovae.train(tiny("train.epochs=2", "train.lr=0.01"), resume=tmp_path / "r")
    with pytest.raises(ConfigError, match=r"model\.encoder\.hidden is \[32\] in the run"):
        pyrovae.resume(tmp_path / "r", ["train.epochs=2", "model.encoder.hidden=[16]"])
    with pytest.raises(ConfigError, match="already finished 1 epochs"):
        pyrovae.resume(tmp_path / "r")
    with pytest.raises(CheckpointError, match="does not exist"):
        pyrovae.resume(tmp_path / "nothing-here")


def test_config_differences_names_nested_keys():
    a = tiny().to_dict()
    b = tiny("train.lr=0.5", "model.prior=learned_normal").to_dict()
    assert config_differences(a, b) == ["model.prior.name", "train.lr"]
    assert config_differences(a, a) == []


def test_command_line_resume_refusals_exit_2_with_one_line(tmp_path):
    pyrovae.train(tiny("train.epochs=1"), out=tmp_path / "r", quiet=True)
    changed = run_cli("train", "--resume", str(tmp_path / "r"), "train.epochs=3", "train.lr=0.5")
    assert changed.returncode == 2
    assert changed.stderr.count("\n") == 1
    assert "train.lr is 0.001 in the run but 0.5 now" in changed.stderr
    both = run_cli("train", "--resume", str(tmp_path / "r"), "--overwrite")
    assert both.returncode == 2 and "choose one" in both.stderr
