"""Shared fixtures: a clean, seeded, validated Pyro for every test; the command line in a
subprocess; the MNIST folder beside the checkout."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyro
import pytest
import torch

import pyrovae

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PYROVAE_TEST_DATA_DIR", REPO.parent / "shared" / "data"))


#: A small model on digits (26 steps of 50 per epoch): a run takes a fraction of a second.
TINY = [
    "train.device=cpu",
    "model.latent_dim=4",
    "model.encoder={name='mlp', hidden=[32]}",
    "model.decoder={name='mlp', hidden=[32]}",
    "train.batch_size=50",
]


def tiny(*overrides: str) -> pyrovae.Config:
    """The small digits config of ``TINY`` with ``overrides``."""
    return pyrovae.load_config(None, [*TINY, *overrides])


@pytest.fixture(autouse=True)
def clean_pyro():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    with pyro.validation_enabled(True):
        yield


@pytest.fixture
def float64():
    """Double precision for the test: numerical Jacobians exact to ~1e-12, spline inverses that
    lose ~1e-4 nats in float32 exact, closed forms compared to 1e-10."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A digits VAE trained for 2 epochs (a few seconds)."""
    out = tmp_path_factory.mktemp("run") / "digits"
    config = pyrovae.load_config(None, ["train.epochs=2", "train.device='cpu'"])
    pyrovae.train(config, out=out, quiet=True)
    return out


@pytest.fixture
def mnist_dir() -> Path:
    if not (SHARED_DATA / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file():
        pytest.skip(f"MNIST not found in {SHARED_DATA}/MNIST/raw (set PYROVAE_TEST_DATA_DIR)")
    return SHARED_DATA


def run_cli(
    *args: str, cwd: Path | None = None, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run ``python -m pyrovae ARGS`` in a subprocess with this checkout on the path."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "pyrovae", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def digits_batch():
    """32 dynamically binarized 8x8 digits, shape (32, 1, 8, 8), from a fixed seed."""
    import torch
    from sklearn.datasets import load_digits

    x = torch.as_tensor(load_digits().images[:32], dtype=torch.float32).div(16.0).unsqueeze(1)
    return torch.bernoulli(x, generator=torch.Generator().manual_seed(0))
