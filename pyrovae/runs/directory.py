"""The run directory: resolved config, metrics, checkpoint and pictures of one training run."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pyrovae.runs.checkpoint import atomic_write_bytes, load_checkpoint
from pyrovae.config import Config
from pyrovae.errors import CheckpointError, ConfigError
from pyrovae.components.programs import build_program

__all__ = [
    "CONFIG_FILE",
    "METRICS_FILE",
    "CHECKPOINT_FILE",
    "BEST_FILE",
    "Run",
    "default_run_dir",
    "check_output_location",
    "prepare_run_dir",
    "read_metrics",
    "load_run",
    "resolve_device",
]

CONFIG_FILE = "config.toml"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_FILE = "checkpoint.pt"
BEST_FILE = "best.pt"  #: the checkpoint with the lowest validation loss so far


@dataclass
class Run:
    """What ``train`` returns: the run directory, its config, the trained program and metrics."""

    directory: Path
    config: Config
    model: torch.nn.Module
    metrics: list[dict[str, Any]] = field(default_factory=list)


def default_run_dir(name: str) -> Path:
    """``./runs/<name>``, or ``./runs/<name>-N`` with the first free N if that is taken."""
    base = Path("runs") / name
    candidate, n = base, 1
    while candidate.exists() and any(candidate.iterdir()):
        n += 1
        candidate = base.with_name(f"{name}-{n}")
    return candidate


def check_output_location(directory: Path) -> None:
    """Create ``directory`` and write and remove a probe file in it: an unwritable or impossible
    location is reported before any data is loaded. An empty folder may remain (it is reused)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".probe-"):
            pass
    except OSError as error:
        raise ConfigError(
            f"cannot write the run directory {str(directory)!r}: {error.strerror}; choose"
            " another --out"
        ) from None


def prepare_run_dir(directory: Path, config: Config, overwrite: bool = False) -> Path:
    """Create the run directory and write the resolved config; fail now if it is unwritable."""
    if (directory / CHECKPOINT_FILE).exists() and not overwrite:
        raise ConfigError(
            f"{directory} already holds a run; choose another --out, or pass --overwrite"
        )
    try:
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(directory / CONFIG_FILE, lambda f: f.write(config.to_toml().encode()))
        (directory / METRICS_FILE).write_text("")
    except OSError as error:
        raise ConfigError(
            f"cannot write the run directory {str(directory)!r}: {error.strerror}; choose"
            " another --out"
        ) from None
    return directory


def append_metrics(directory: Path, record: dict[str, Any]) -> None:
    with open(directory / METRICS_FILE, "a") as handle:
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_metrics(directory: str | Path) -> list[dict[str, Any]]:
    path = Path(directory) / METRICS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when available, else the CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(
            f"train.device: unknown device {name!r}; choose cpu, cuda, cuda:N or auto"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device: CUDA is not available on this machine; use cpu or auto")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"train.device: unsupported device {name!r}; choose cpu, cuda or auto")
    return device


def load_run(
    directory: str | Path, device: str | torch.device = "cpu", checkpoint: str = CHECKPOINT_FILE
) -> tuple[Config, torch.nn.Module, dict[str, Any]]:
    """The config, the program with its trained weights, and the raw checkpoint of a run.

    ``checkpoint`` is ``CHECKPOINT_FILE`` (the last) or ``BEST_FILE`` (the best validation loss).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"run directory {str(directory)!r} does not exist")
    payload = load_checkpoint(directory / checkpoint, map_location=device)
    for key, kind in (("config", dict), ("x_shape", list), ("model", dict)):
        if not isinstance(payload.get(key), kind):
            raise CheckpointError(f"checkpoint {str(directory / checkpoint)!r} lacks {key!r}")
    try:
        config = Config.from_dict(payload["config"])
    except ConfigError as error:
        raise CheckpointError(f"checkpoint config is invalid: {error}") from None
    x_shape = tuple(payload["x_shape"])
    program = build_program(config.model, x_shape).to(device)
    load_weights(program, payload["model"])
    return config, program, payload


def load_weights(program: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a state dict, naming the first difference when the architecture does not match."""
    own = program.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise CheckpointError(f"checkpoint does not match the model: {detail}")
    for key, tensor in state.items():
        if not torch.is_tensor(tensor):
            raise CheckpointError(f"checkpoint does not match the model: {key} is not a tensor")
        if own[key].shape != tensor.shape:
            raise CheckpointError(
                f"checkpoint does not match the model: {key} has shape {tuple(tensor.shape)},"
                f" the model expects {tuple(own[key].shape)}"
            )
    program.load_state_dict(state)
