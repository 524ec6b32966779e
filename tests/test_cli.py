"""The ``pyrovae`` command, run in a subprocess exactly as a user runs it.

This file proves:
- ``train`` works end to end on the digits (progress bar, summary line, full run directory),
  ``sample RUN_DIR`` writes a grid, ``config`` prints the resolved config and the reference;
- every bad input (unknown component, key or type; data outside [0, 1], grey levels or NaN for
  a Bernoulli likelihood; MNIST missing offline; a taken run directory; a missing plugin or run)
  exits with status 2 and one stderr line ``pyrovae: error: ...``, without a traceback;
- the classic MNIST VAE of examples/configs/mnist.toml trains an epoch on the real MNIST
  (``mnist_dir`` fixture; skipped with a reason when the data is absent), whose 60,000 + 10,000
  images really load.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, run_cli
from PIL import Image

import pyrovae
from pyrovae.cli.config import config_reference
from pyrovae.components.datasets import load_splits
from pyrovae.registry import builtin
from pyrovae.runs.pictures import MIN_SIDE

DIGITS = str(REPO / "examples" / "configs" / "digits.toml")
MNIST = str(REPO / "examples" / "configs" / "mnist.toml")


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """``pyrovae train`` on the digits for two epochs, with its progress bar."""
    out = tmp_path_factory.mktemp("cli") / "run"
    result = run_cli("train", "--config", DIGITS, "--out", str(out), "train.epochs=2")
    return out, result


def assert_png(path: Path) -> None:
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.verify()


# ------------------------------------------------------------------------------ commands
def test_train_end_to_end(cli_run):
    out, result = cli_run
    assert result.returncode == 0, result.stderr
    assert "trained digits: valid_loss" in result.stdout and str(out) in result.stdout
    assert "26/26" in result.stderr  # the progress bar: 2 epochs of 13 steps
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2]
    assert all(math.isfinite(m["valid_loss"]) for m in metrics)
    expected = pyrovae.load_config(DIGITS, ["train.epochs=2"])
    assert pyrovae.load_config(out / "config.toml") == expected
    for picture in ("samples", "reconstructions", "learning_curves"):
        assert_png(out / f"{picture}.png")
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 2


def test_sample_writes_a_grid_of_new_samples(cli_run, tmp_path):
    out, _ = cli_run
    result = run_cli("sample", str(out), "--count", "16")
    assert result.returncode == 0, result.stderr
    assert f"wrote 16 samples to {out / 'samples-new.png'}" in result.stdout
    assert_png(out / "samples-new.png")
    side = 8 * (MIN_SIDE // 8) + 2  # 8x8 digits enlarged to at least MIN_SIDE, 2 pixels apart
    with Image.open(out / "samples-new.png") as image:  # 2 rows of 8 digits
        assert image.size == (8 * side + 2, 2 * side + 2)


def test_config_prints_the_reference_and_the_resolved_config():
    reference = run_cli("config", "--reference")
    assert reference.returncode == 0, reference.stderr
    assert reference.stdout == config_reference() + "\n"
    resolved = run_cli("config", "--config", DIGITS, "train.epochs=3", "--data-dir", "/d")
    assert resolved.returncode == 0, resolved.stderr
    expected = pyrovae.load_config(DIGITS, ["train.epochs=3", 'data.root="/d"'])
    assert resolved.stdout == expected.to_toml()


# ------------------------------------------------------------------------------ bad inputs
def write_array(tmp_path: Path, name: str, array: np.ndarray) -> str:
    path = tmp_path / f"{name}.npy"
    np.save(path, array.astype(np.float32))
    return str(path)


def grey(tmp_path: Path) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 1, size=(100, 16))


def with_nan(tmp_path: Path) -> str:
    array = grey(tmp_path)
    array[50, 3] = np.nan
    return write_array(tmp_path, "nan", array)


BAD_INPUTS = {
    "unknown component": (
        lambda tmp: ["model.prior=gaussian_mixture"],
        "model.prior: unknown prior 'gaussian_mixture'; choose from: "
        + ", ".join(builtin("prior")),  # the subprocess has pyrovae's components only
    ),
    "wrong type": (
        lambda tmp: ["train.epochs=abc"],
        "train.epochs: expected an integer, got 'abc'",
    ),
    "unknown key": (
        lambda tmp: ["train.epoch=3"],
        "train.epoch: unknown key (did you mean 'epochs'?); valid keys:",
    ),
    "data outside [0, 1] for bernoulli": (
        lambda tmp: [
            "data.name=file",
            f"data.path={write_array(tmp, 'wide', 2 * grey(tmp))}",
            "data.binarize=none",
        ],
        "likelihood Bernoulli needs values in [0.0, 1.0]",
    ),
    "data outside [0, 1] for dynamic binarization": (
        lambda tmp: ["data.name=file", f"data.path={write_array(tmp, 'wide', 2 * grey(tmp))}"],
        "data.binarize: 'dynamic' needs values in [0, 1]",
    ),
    "grey levels for bernoulli": (
        lambda tmp: ["data.binarize=none"],
        "likelihood Bernoulli needs binary data but the data has grey levels",
    ),
    "NaN in the data": (
        lambda tmp: ["data.name=file", f"data.path={with_nan(tmp)}", "data.binarize=none"],
        "holds NaN or infinite values (first at datapoint",
    ),
    "MNIST missing offline": (
        lambda tmp: ["data.name=mnist", f"data.root={tmp}"],
        "MNIST is not in {tmp}/MNIST/raw",
    ),
    "MNIST missing, no download": (
        lambda tmp: ["data.name=mnist", f"data.root={tmp}", "data.download=false"],
        "MNIST is not in {tmp}/MNIST/raw; pass --data-dir DIR",
    ),
    "missing plugin": (
        lambda tmp: ["--plugin", f"{tmp}/nowhere.py"],
        "--plugin: file '{tmp}/nowhere.py' does not exist",
    ),
}


@pytest.mark.parametrize(("make_args", "message"), BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input_gives_one_error_line_and_exit_status_2(make_args, message, tmp_path):
    out = tmp_path / "run"
    result = run_cli("train", "--quiet", "--out", str(out), *make_args(tmp_path), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("pyrovae: error: ")
    assert message.format(tmp=tmp_path) in lines[0], lines[0]
    assert not (out / "checkpoint.pt").exists()


def test_a_taken_run_directory_or_a_missing_run_is_refused(cli_run, tmp_path):
    out, _ = cli_run
    taken = run_cli("train", "--quiet", "--out", str(out), "train.epochs=1")
    assert taken.returncode == 2
    assert taken.stderr.strip().splitlines() == [
        f"pyrovae: error: {out} already holds a run; choose another --out, or pass --overwrite"
    ]
    missing = run_cli("sample", str(tmp_path / "no-run"))
    assert missing.returncode == 2
    assert missing.stderr.startswith("pyrovae: error: run directory")
    assert len(missing.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------------------ MNIST
def test_mnist_loads_sixty_thousand_and_ten_thousand_images(mnist_dir):
    config = pyrovae.load_config(MNIST, [f"data.root={str(mnist_dir)!r}"])
    splits = load_splits(config.data, torch.device("cpu"))
    assert len(splits.train) + len(splits.valid) == 60_000 and len(splits.valid) == 10_000
    assert len(splits.test) == 10_000
    assert splits.x_shape == (1, 28, 28)
    assert float(splits.train.min()) >= 0 and float(splits.train.max()) == 1.0
    assert len(splits.train[:100].unique()) > 2  # grey levels, binarized afresh each epoch
    for held_out in (splits.valid, splits.test):  # binarized once, with a fixed seed
        assert set(held_out.unique().tolist()) == {0.0, 1.0}


def test_mnist_example_trains_an_epoch_from_the_command_line(mnist_dir, tmp_path):
    out = tmp_path / "mnist"
    result = run_cli(
        "train",
        "--config",
        MNIST,
        "--data-dir",
        str(mnist_dir),
        "--out",
        str(out),
        "--quiet",
        "--device",
        "cpu",
        "train.epochs=1",
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # --quiet: no progress bar
    (record,) = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert record["step"] == math.ceil(50_000 / 256)
    # An untrained decoder scores 784 log 2 = 543 nats; one epoch of the classic VAE reaches
    # about 159 (measured); below 200 means it learned.
    assert record["valid_loss"] < 200, record
    config = pyrovae.load_config(out / "config.toml")
    assert config.model.encoder.options["hidden"] == (400,) and config.model.latent_dim == 50


def test_overrides_may_follow_options_and_unknown_arguments_are_refused():
    resolved = run_cli(
        "config", "--name", "n", "train.epochs=3", "--device", "cpu", "model.latent_dim=4"
    )
    assert resolved.returncode == 0, resolved.stderr
    expected = pyrovae.load_config(
        None, ["name=n", "train.epochs=3", "train.device=cpu", "model.latent_dim=4"]
    )
    assert resolved.stdout == expected.to_toml()
    refused = run_cli("config", "--bogus", "train.epochs=3")
    assert refused.returncode == 2
    assert "unrecognized arguments: --bogus" in refused.stderr
