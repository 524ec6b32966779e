"""Resuming a run: where it stopped, every random generator's state, and what may change.

A checkpoint is written at the end of every ``train.checkpoint_every``-th epoch (and of the last
one). It holds the model, the optimizer, the epoch and step (the KL warm-up follows from the
step), the metrics so far and the state of every random generator: torch's global generator
(Pyro draws from it), CUDA's, the training data's ``torch.Generator``, Python's ``random`` and
NumPy's. All are plain tensors, numbers and lists, so ``torch.load(weights_only=True)`` reads
them back. A run killed at any moment goes on from its last checkpoint: the epochs after it are
trained again from the same state with the same draws, so on the same device the metrics equal
those of a run that was never interrupted; ``metrics.jsonl`` is rewritten from the checkpoint,
dropping the lines of epochs that are trained again.

The learning-rate schedule's state (``LRScheduler.state_dict``) and the early-stopping counters
are in the checkpoint too, so the lr sequence and the epoch where early stopping ends the run are
those of the uninterrupted run. A checkpoint written before schedules existed holds neither: its
run had the constant schedule and no early stopping (the only ones there were), and both are
rebuilt exactly by replaying the checkpoint's recorded validation losses. A run that early
stopping ended resumes only with a ``train.patience`` that would not have stopped it (larger, or
0); a cosine schedule, fixed by ``train.epochs``, cannot be extended.

A resumed run keeps its config. Only the keys in ``RESUMABLE_KEYS`` may change: ``train.epochs``
(to train further; not below the epochs already done), ``train.device`` (the device's type must
stay the one the run trained on: its random draws are that device's), ``train.dist_timeout``,
early stopping's ``train.patience`` and ``train.min_delta`` (they do not change an epoch's
training, only where the run stops) and where the data is read from.

Several processes (torchrun): rank 0 alone writes checkpoints, and they hold its generators. On
resume every rank reads the checkpoint (the run directory must be readable by all of them) and
takes up the model, Adam's state, the counters and every generator as rank 0 had them; the
generator of the batch order and binarization is the same on every rank, and ranks > 0 then
reseed Pyro's stream with ``train.seed + rank``. So a run started on N processes resumes on any
number M, one included: the weights, optimizer, step, KL warm-up, batches and binary data go on
exactly; what is not bit-exact is (a) the draws of ranks > 0 after the resume (their streams
were not saved and restart), and (b) when M differs from N, the float rounding of the gradient,
summed over other shares (about 1e-7 of its size), and which rank draws which datapoint's noise.
Only a single-process run resumed in a single process on the same device is bit for bit the
uninterrupted run.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, LRScheduler

from pyrovae.config import Config, TrainConfig, load_config
from pyrovae.errors import CheckpointError, ConfigError, PyrovaeError
from pyrovae.runs.checkpoint import atomic_write_bytes, load_checkpoint
from pyrovae.runs.directory import (
    BEST_FILE,
    CHECKPOINT_FILE,
    CONFIG_FILE,
    METRICS_FILE,
    check_x_shape,
)
from pyrovae.training.schedules import step_schedule
from pyrovae.training.stopping import EarlyStopping

__all__ = [
    "RESUMABLE_KEYS",
    "ResumePoint",
    "config_differences",
    "resume_config",
    "open_resume",
    "restore_schedule",
]

#: Config keys a resumed run may change; any other difference is refused.
RESUMABLE_KEYS = (
    "train.epochs",
    "train.device",
    "train.dist_timeout",
    "train.patience",
    "train.min_delta",
    "train.max_seconds",
    "data.root",
    "data.download",
)

#: What a resumable checkpoint holds, with the type of each entry.
_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "config": dict,
    "x_shape": list,
    "model": dict,
    "optimizer": dict,
    "epoch": int,
    "step": int,
    "device": str,
    "rng": dict,
    "metrics": list,
    "best_valid_loss": float,
    "bad_steps_in_row": int,
}
#: Entries of checkpoints written since schedules and early stopping exist (older ones lack them).
_OPTIONAL: dict[str, type] = {"schedule": dict, "early_stopping": dict}


@dataclass(frozen=True)
class ResumePoint:
    """A run directory to go on with: its config and its last checkpoint.

    ``payload`` is None when the run stopped before its first checkpoint: it starts over.
    """

    directory: Path
    config: Config
    payload: dict[str, Any] | None

    @property
    def epoch(self) -> int:
        return 0 if self.payload is None else self.payload["epoch"]

    def check(self, x_shape: tuple[int, ...], device: torch.device) -> None:
        """Check the data's shape and the device's type against the checkpoint."""
        if self.payload is not None:
            saved = tuple(self.payload["x_shape"])
            if saved != tuple(x_shape):
                raise CheckpointError(
                    f"cannot resume {str(self.directory)!r}: its data had shape {saved}, the data"
                    f" now has shape {tuple(x_shape)}"
                )
            if self.payload["device"] != device.type:
                raise ConfigError(
                    f"cannot resume {str(self.directory)!r} on {device.type}: it trained on"
                    f" {self.payload['device']} (its random draws are that device's); set"
                    f" train.device={self.payload['device']}"
                )

    def rewrite(self) -> None:
        """Rewrite ``config.toml`` and ``metrics.jsonl`` (only the checkpoint's epochs are kept)
        atomically, and remove temporary files a crash left. Rank 0's work alone."""
        metrics = [] if self.payload is None else self.payload["metrics"]
        lines = "".join(json.dumps(record) + "\n" for record in metrics)
        for name in (CHECKPOINT_FILE, BEST_FILE, CONFIG_FILE, METRICS_FILE):
            for stale in self.directory.glob(f".{name}.*.tmp"):  # a write the crash cut short
                stale.unlink(missing_ok=True)
        try:
            atomic_write_bytes(
                self.directory / CONFIG_FILE, lambda f: f.write(self.config.to_toml().encode())
            )
            atomic_write_bytes(self.directory / METRICS_FILE, lambda f: f.write(lines.encode()))
        except OSError as error:
            raise ConfigError(
                f"cannot write the run directory {str(self.directory)!r}: {error.strerror}"
            ) from None


# -------------------------------------------------------------------- generators
def config_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """The dotted keys whose values differ between two config dicts, in order."""
    a, b = _flatten(old), _flatten(new)
    return [key for key in dict.fromkeys([*a, *b]) if a.get(key, _UNSET) != b.get(key, _UNSET)]


def resume_config(
    run_dir: str | Path, config_file: str | Path | None = None, overrides: Iterable[str] = ()
) -> Config:
    """The config a resumed run asks for: ``config_file`` (if given) or the run's own config,
    with ``overrides`` applied. ``train(..., resume=run_dir)`` then checks it against the run."""
    if config_file is not None:
        return load_config(config_file, overrides)
    return _saved_config(Path(run_dir)).replace(overrides)


def open_resume(run_dir: str | Path, config: Config) -> ResumePoint:
    """Check that the run in ``run_dir`` can go on under ``config``, and load its checkpoint."""
    directory = Path(run_dir)
    if not directory.is_dir():
        raise CheckpointError(f"--resume: run directory {str(directory)!r} does not exist")
    payload = None
    if os.path.lexists(directory / CHECKPOINT_FILE):  # a dangling link is refused, not skipped
        payload = load_checkpoint(directory / CHECKPOINT_FILE, map_location="cpu")
        _check_payload(payload, directory / CHECKPOINT_FILE)
        saved = _parse_config(payload["config"], directory / CHECKPOINT_FILE)
    else:
        saved = _saved_config(directory)
    config = Config.from_dict(config.to_dict())  # every default filled in, as in the run
    changed = config_differences(saved.to_dict(), config.to_dict())
    refused = [k for k in changed if k not in RESUMABLE_KEYS]
    if refused:
        old, new = _flatten(saved.to_dict()), _flatten(config.to_dict())
        key = refused[0]
        more = f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""
        raise ConfigError(
            f"cannot resume {str(directory)!r} with a different config: {key} is"
            f" {old.get(key, _UNSET)!r} in the run but {new.get(key, _UNSET)!r} now{more}; a"
            f" resumed run keeps its config (only {', '.join(RESUMABLE_KEYS)} may change)"
        )
    point = ResumePoint(directory, config, payload)
    if point.epoch >= config.train.epochs:
        verb = "already finished" if point.epoch == config.train.epochs else "is past"
        raise ConfigError(
            f"cannot resume {str(directory)!r}: it {verb} {point.epoch} epochs and"
            f" train.epochs is {config.train.epochs}; pass train.epochs=N with N >"
            f" {point.epoch} to train it further"
        )
    return point


def restore_schedule(
    scheduler: LRScheduler, stopping: EarlyStopping, payload: Mapping[str, Any], train: TrainConfig
) -> None:
    """Take up the schedule's state and the early-stopping counters of a checkpoint (after the
    optimizer's), or rebuild them from its validation losses if it predates them; refuse a run
    that early stopping ended under the current ``train.patience``."""
    losses = [record["valid_loss"] for record in payload["metrics"]]
    if "schedule" in payload:
        try:
            scheduler.load_state_dict(payload["schedule"])
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise CheckpointError(f"the checkpoint's schedule state is damaged: {error}") from None
    else:  # its run had the constant schedule: replaying it is exact
        with warnings.catch_warnings():  # replayed before this process's optimizer steps
            warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step")
            for loss in losses:
                step_schedule(scheduler, loss)
    if isinstance(scheduler, CosineAnnealingLR) and scheduler.T_max != train.epochs:
        raise ConfigError(
            f"cannot resume: the cosine schedule anneals over the run's {scheduler.T_max} epochs"
            f" and cannot be extended to train.epochs = {train.epochs}; train a new run"
        )
    if "early_stopping" in payload:
        stopping.load_state_dict(payload["early_stopping"])
    else:
        stopping.replay(losses)
    if stopping.should_stop:
        raise ConfigError(
            f"cannot resume: early stopping ended the run at epoch {payload['epoch']} (no"
            f" improvement for {stopping.bad_epochs} epochs); pass train.patience=N with N >"
            f" {stopping.bad_epochs}, or 0, to train it further"
        )


# --------------------------------------------------------------------- internals
class _Unset:
    def __repr__(self) -> str:
        return "unset"


_UNSET = _Unset()


def _flatten(raw: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def _parse_config(raw: Any, where: Path) -> Config:
    try:
        return Config.from_dict(raw)
    except PyrovaeError as error:
        raise CheckpointError(
            f"the config in {str(where)!r} is invalid ({error}); if it names components from a"
            " plugin, load it with --plugin"
        ) from None


def _saved_config(directory: Path) -> Config:
    """The run's config: from its checkpoint, else (stopped before one) from config.toml."""
    if not directory.is_dir():
        raise CheckpointError(f"--resume: run directory {str(directory)!r} does not exist")
    if os.path.lexists(directory / CHECKPOINT_FILE):
        payload = load_checkpoint(directory / CHECKPOINT_FILE, map_location="cpu")
        _check_payload(payload, directory / CHECKPOINT_FILE)
        return _parse_config(payload["config"], directory / CHECKPOINT_FILE)
    if (directory / CONFIG_FILE).is_file():
        try:
            return load_config(directory / CONFIG_FILE)
        except PyrovaeError as error:
            raise CheckpointError(f"cannot resume {str(directory)!r}: {error}") from None
    raise CheckpointError(
        f"--resume: {str(directory)!r} holds no run ({CHECKPOINT_FILE} or {CONFIG_FILE})"
    )


def _check_payload(payload: Mapping[str, Any], path: Path) -> None:
    for key, kind in _REQUIRED.items():
        value = payload.get(key, _UNSET)
        if value is _UNSET:
            raise CheckpointError(f"checkpoint {str(path)!r} cannot be resumed: it lacks {key!r}")
        if not isinstance(value, kind) or isinstance(value, bool):
            raise CheckpointError(
                f"checkpoint {str(path)!r} cannot be resumed: {key!r} is a"
                f" {type(value).__name__}, not a {getattr(kind, '__name__', kind)}"
            )
    for key, kind in _OPTIONAL.items():
        if key in payload and not isinstance(payload[key], kind):
            raise CheckpointError(
                f"checkpoint {str(path)!r} cannot be resumed: {key!r} is a"
                f" {type(payload[key]).__name__}, not a {kind.__name__}"
            )
    if len(payload["metrics"]) != payload["epoch"] or payload["epoch"] < 1:
        raise CheckpointError(
            f"checkpoint {str(path)!r} cannot be resumed: it holds {len(payload['metrics'])}"
            f" epochs of metrics for epoch {payload['epoch']}"
        )
    check_x_shape(payload["x_shape"], f"checkpoint {str(path)!r}")
    for epoch, record in enumerate(payload["metrics"], 1):
        _check_record(record, epoch, path)


#: The entries of a metrics record and their types (finite numbers where float).
_RECORD: dict[str, type | tuple[type, ...]] = {
    "epoch": int,
    "step": int,
    "train_loss": (int, float),
    "valid_loss": (int, float),
    "skipped_steps": int,
}


def _check_record(record: Any, epoch: int, path: Path) -> None:
    """A metrics record of the checkpoint: a dict with the epoch's number, a step count and
    finite losses (what training and the command's summary read back)."""
    where = f"checkpoint {str(path)!r} cannot be resumed: metrics of epoch {epoch}"
    if not isinstance(record, dict):
        raise CheckpointError(f"{where} are a {type(record).__name__}, not a table")
    for key, kind in _RECORD.items():
        value = record.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise CheckpointError(f"{where}: {key!r} is missing or not a number")
        if not math.isfinite(value) or value < 0 and kind is int:
            raise CheckpointError(f"{where}: {key!r} is {value!r}")
    if record["epoch"] != epoch:
        raise CheckpointError(f"{where}: 'epoch' is {record['epoch']}")
