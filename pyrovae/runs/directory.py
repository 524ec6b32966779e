"""The run directory: resolved config, metrics, checkpoint and pictures of one training run.

Output rule: pyrovae writes a run only into a folder that does not exist, an empty folder, or a
run directory it recognises (``run_state``: only files pyrovae writes, with a ``config.toml`` or
a checkpoint), and replaces a run only with ``overwrite`` (``--overwrite``). Every check is made
before anything is written, so a refused command leaves existing files byte-identical.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from pyrovae.components.programs import build_program
from pyrovae.config import Config
from pyrovae.errors import CheckpointError, ConfigError
from pyrovae.runs.checkpoint import atomic_write_bytes, load_checkpoint

__all__ = [
    "CONFIG_FILE",
    "METRICS_FILE",
    "CHECKPOINT_FILE",
    "BEST_FILE",
    "CHECKPOINTS",
    "checkpoint_path",
    "RUN_FILES",
    "Run",
    "run_state",
    "claim_run_dir",
    "check_output_file",
    "default_run_dir",
    "check_output_location",
    "prepare_run_dir",
    "read_metrics",
    "check_x_shape",
    "check_data_shape",
    "load_run",
    "resolve_device",
]

CONFIG_FILE = "config.toml"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_FILE = "checkpoint.pt"
BEST_FILE = "best.pt"  #: the checkpoint with the lowest validation loss so far
#: The checkpoints ``load_run`` (and ``--checkpoint``) can choose: the best one is the default.
CHECKPOINTS = {"best": BEST_FILE, "last": CHECKPOINT_FILE}
#: Every file pyrovae writes into a run directory (and their temporary ``.NAME.*.tmp`` files).
RUN_FILES = frozenset(
    {
        CONFIG_FILE,
        METRICS_FILE,
        CHECKPOINT_FILE,
        BEST_FILE,
        "samples.png",
        "reconstructions.png",
        "learning_curves.png",
        "samples-new.png",
        "samples-by-class.png",
        "latent.png",
        "manifold.png",
        "samples-new.pt",
        "gradient_snr.png",
        "evaluation.json",
    }
)


@dataclass
class Run:
    """What ``train`` returns: the run directory, its config, the trained program, metrics and
    warnings (``runs.diagnostics.run_warnings``: posterior collapse, not converged)."""

    directory: Path
    config: Config
    model: torch.nn.Module
    metrics: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def default_run_dir(name: str) -> Path:
    """``./runs/<name>``, or ``./runs/<name>-N`` with the first free N if that is taken."""
    base = Path("runs") / name
    candidate, n = base, 1
    while run_state(candidate) not in ("absent", "empty"):
        n += 1
        candidate = base.with_name(f"{name}-{n}")
    return candidate


def run_state(directory: Path) -> Literal["absent", "empty", "run", "other"]:
    """What ``directory`` is to the output rule: absent, an empty folder, a run directory
    pyrovae recognises, or anything else (a file, a user's folder, a link)."""
    if not os.path.lexists(directory):
        return "absent"
    if directory.is_symlink() or not directory.is_dir():
        return "other"
    try:
        names = [entry.name for entry in os.scandir(directory)]
    except OSError:
        return "other"
    if not names:
        return "empty"
    ours = all(
        name in RUN_FILES
        or (name.startswith(".") and name.endswith(".tmp"))
        or name.startswith(".probe-")
        for name in names
    )
    return "run" if ours and (CONFIG_FILE in names or CHECKPOINT_FILE in names) else "other"


def claim_run_dir(directory: Path, overwrite: bool = False) -> None:
    """Refuse to write a new run into ``directory`` unless the output rule allows it."""
    state = run_state(directory)
    if state == "run" and not overwrite:
        stopped = "" if (directory / CHECKPOINT_FILE).exists() else " (stopped before its first"
        stopped += "" if not stopped else " checkpoint; --resume starts it over)"
        raise ConfigError(
            f"{directory} already holds a run{stopped}; choose another --out, or pass --overwrite"
        )
    if state == "other":
        if directory.is_symlink():
            raise ConfigError(
                f"--out {str(directory)!r} is a symbolic link; name the folder itself"
            )
        if os.path.lexists(directory) and not directory.is_dir():
            raise ConfigError(f"--out {str(directory)!r} is not a folder; choose another --out")
        raise ConfigError(
            f"--out {str(directory)!r} holds files that are not a pyrovae run; pyrovae writes"
            " only into an empty folder or a run directory; choose another --out"
        )


def check_output_location(directory: Path, overwrite: bool = False, resuming: bool = False) -> None:
    """Apply the output rule (unless ``resuming`` the run there), then create ``directory`` and
    write and remove a probe file in it: an unwritable or impossible location is reported
    before any data is loaded. An empty folder may remain (it is reused)."""
    if not str(directory).strip():
        raise ConfigError("--out: an empty path; name a folder")
    if not resuming:
        claim_run_dir(directory, overwrite)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".probe-"):
            pass
    except OSError as error:
        raise ConfigError(
            f"cannot write the run directory {str(directory)!r}: {error.strerror}; choose"
            " another --out"
        ) from None


def check_output_file(
    value: str | None, default: Path, suffixes: tuple[str, ...], flag: str
) -> Path:
    """The file a command writes: ``value`` (a flag's text) or ``default``. A given path must
    end in one of ``suffixes`` and lie in an existing folder, and must not be a folder."""
    if value is None:
        return default
    if not value.strip():
        raise ConfigError(f"{flag}: an empty path; name a file ending in {', '.join(suffixes)}")
    path = Path(value)
    if path.is_dir():
        raise ConfigError(f"{flag} {value!r} is a folder; name a file in it")
    if path.suffix.lower() not in suffixes:
        raise ConfigError(f"{flag} {value!r} must end in {', '.join(suffixes)}")
    if not path.parent.is_dir():
        raise ConfigError(f"{flag} {value!r}: folder {str(path.parent)!r} does not exist")
    if os.path.lexists(path) and not path.is_file():
        raise ConfigError(f"{flag} {value!r} exists and is not a regular file")
    return path


def prepare_run_dir(directory: Path, config: Config, overwrite: bool = False) -> Path:
    """Create the run directory and write the resolved config; fail now if it is unwritable.
    With ``overwrite``, the files of the run it replaces are removed first."""
    claim_run_dir(directory, overwrite)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        if overwrite:
            for name in RUN_FILES - {CONFIG_FILE, METRICS_FILE}:
                (directory / name).unlink(missing_ok=True)
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
    """The records of ``metrics.jsonl``; a line that is not a JSON object is a one-line
    ``CheckpointError`` naming the file and line."""
    path = Path(directory) / METRICS_FILE
    if not path.is_file():
        return []
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{str(path)!r} cannot be read as text: {error}") from None
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            record = None
        if not isinstance(record, dict):
            raise CheckpointError(f"{str(path)!r} line {number} is not a JSON object")
        records.append(record)
    return records


#: The largest datapoint a checkpoint may describe: ``x_shape`` of at most 4 dimensions and
#: this many values (a 1024x1024 RGB image is 3 * 2**20).
MAX_DATAPOINT_VALUES = 2**24


def check_x_shape(value: Any, where: str) -> tuple[int, ...]:
    """A checkpoint's ``x_shape``: 1 to 4 positive integers of at most
    ``MAX_DATAPOINT_VALUES`` values in all; else a one-line ``CheckpointError``."""
    if (
        not isinstance(value, list | tuple)
        or not 1 <= len(value) <= 4
        or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in value)
    ):
        raise CheckpointError(f"{where}: x_shape {str(value)[:60]} is not a shape of 1 to 4 sizes")
    total = 1
    for n in value:
        total *= n
        if total > MAX_DATAPOINT_VALUES:
            raise CheckpointError(
                f"{where}: x_shape {str(value)[:60]} has more than {MAX_DATAPOINT_VALUES} values"
            )
    return tuple(value)


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


def checkpoint_path(directory: str | Path, checkpoint: str = "best") -> Path:
    """The checkpoint file of a run that ``checkpoint`` names: ``"best"`` (``best.pt``, the
    lowest validation loss; ``checkpoint.pt`` for a run that has no ``best.pt``, as runs
    written before it existed), ``"last"`` (``checkpoint.pt``) or either file's name."""
    directory = Path(directory)
    name = CHECKPOINTS.get(checkpoint, checkpoint)
    if name not in CHECKPOINTS.values():
        raise ConfigError(
            f"--checkpoint: {checkpoint!r} is not a checkpoint of a run; choose best or last"
        )
    if name == BEST_FILE and not os.path.lexists(directory / BEST_FILE):
        name = CHECKPOINT_FILE  # a run from before best.pt: its last checkpoint is its only one
    return directory / name


def load_run(
    directory: str | Path, device: str | torch.device = "cpu", checkpoint: str = "best"
) -> tuple[Config, torch.nn.Module, dict[str, Any]]:
    """The config, the program with its trained weights, and the raw checkpoint of a run.

    ``checkpoint`` is ``"best"`` (the default: ``best.pt``, the epoch of lowest validation
    loss) or ``"last"`` (``checkpoint.pt``, the end of training); see ``checkpoint_path``.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"run directory {str(directory)!r} does not exist")
    path = checkpoint_path(directory, checkpoint)
    checkpoint = path.name
    payload = load_checkpoint(path, map_location=device)
    for key, kind in (("config", dict), ("x_shape", list), ("model", dict)):
        if not isinstance(payload.get(key), kind):
            raise CheckpointError(f"checkpoint {str(directory / checkpoint)!r} lacks {key!r}")
    try:
        config = Config.from_dict(payload["config"])
    except ConfigError as error:
        raise CheckpointError(f"checkpoint config is invalid: {error}") from None
    x_shape = check_x_shape(payload["x_shape"], f"checkpoint {str(directory / checkpoint)!r}")
    classes = payload.get("num_classes")
    if classes is not None and (not isinstance(classes, int) or not 1 <= classes <= 10**6):
        raise CheckpointError(f"checkpoint {str(directory / checkpoint)!r}: bad num_classes")
    program = build_program(config.model, x_shape, classes).to(device)
    load_weights(program, payload["model"])
    return config, program, payload


def check_data_shape(x: torch.Tensor, payload: dict[str, Any], directory: str | Path) -> None:
    """Refuse data whose datapoints do not have the shape the run's model was built for."""
    saved = tuple(payload["x_shape"])
    if tuple(x.shape[1:]) != saved:
        raise CheckpointError(
            f"run {str(directory)!r} was trained on datapoints of shape {saved},"
            f" the data now has shape {tuple(x.shape[1:])}"
        )


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
        if tensor.layout != torch.strided or tensor.is_meta or tensor.is_quantized:
            raise CheckpointError(f"checkpoint does not match the model: {key} is not dense")
        if own[key].shape != tensor.shape:
            raise CheckpointError(
                f"checkpoint does not match the model: {key} has shape {tuple(tensor.shape)},"
                f" the model expects {tuple(own[key].shape)}"
            )
        if tensor.is_complex() or tensor.is_floating_point() != own[key].is_floating_point():
            raise CheckpointError(
                f"checkpoint does not match the model: {key} has dtype {tensor.dtype}, the model"
                f" expects {own[key].dtype}"
            )
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"checkpoint holds NaN or infinite weights (first in {key})")
    program.load_state_dict(state)
