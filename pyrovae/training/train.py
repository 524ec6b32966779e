"""Training: one path for the command line and for Python, ``pyrovae.train(config)``.

``train`` opens the run's ``distributed.session`` (a single process, or every rank of a
torchrun launch), finds or prepares the run directory, loads the data, builds the model and
hands them to the ``loop.TrainingLoop``; ``train(..., resume=RUN_DIR)`` goes on from the run's
last checkpoint (``resume``). Rank 0 alone writes files; the other ranks receive its results
and errors (``Group.on_main``).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pyro
import torch

from pyrovae.components.base import Likelihood
from pyrovae.components.datasets import Splits, check_likelihood, load_splits
from pyrovae.components.programs import build_program
from pyrovae.config import Config
from pyrovae.errors import ConfigError
from pyrovae.param_store import own_param_store
from pyrovae.runs.diagnostics import run_warnings
from pyrovae.runs.directory import Run, check_output_location, default_run_dir, prepare_run_dir
from pyrovae.runs.latent_pictures import save_latent_pictures
from pyrovae.runs.pictures import (
    save_class_rows,
    save_learning_curves,
    save_reconstructions,
    save_samples,
)
from pyrovae.training.distributed import Group, session
from pyrovae.training.loop import TrainingLoop, kl_weight
from pyrovae.training.resume import ResumePoint, open_resume, resume_config

__all__ = ["train", "resume", "kl_weight"]


def train(
    config: Config,
    out: str | Path | None = None,
    quiet: bool = False,
    overwrite: bool = False,
    resume: str | Path | None = None,
) -> Run:
    """Train the program described by ``config``; results go to ``out`` (default ``runs/<name>``).

    ``resume=RUN_DIR`` goes on with that run from its last checkpoint, in that directory;
    ``config`` must be the run's own (``resume.RESUMABLE_KEYS`` may differ). Under torchrun
    every process calls this and they train together with DDP; rank 0 alone writes ``out``
    (see ``pyrovae.training.distributed``). A run trained on N processes resumes on any number.
    """
    with session(config.train) as group, own_param_store():
        return _train(config, out, quiet, overwrite, resume, group)


def _train(
    config: Config,
    out: str | Path | None,
    quiet: bool,
    overwrite: bool,
    resume: str | Path | None,
    group: Group,
) -> Run:
    point: ResumePoint | None = None
    if resume is not None:
        if out is not None and Path(out).resolve() != Path(resume).resolve():
            raise ConfigError(
                "a resumed run stays in its directory: drop --out, or make it RUN_DIR"
            )
        point = open_resume(resume, config)  # every rank reads the checkpoint
        out = point.directory
    device = group.device
    pyro.set_rng_seed(config.train.seed)
    # Before the data: a bad --out is known at once (on every rank, from rank 0).
    directory = group.on_main(lambda: _locate(out, config.name, overwrite, point is not None))

    splits = load_splits(config.data, device)
    classes = splits.num_classes
    program = build_program(config.model, splits.x_shape, classes).to(device)
    likelihood = getattr(program, "likelihood", None)
    if isinstance(likelihood, Likelihood):
        check_likelihood(splits, likelihood)
    # Built before anything is written: a bad estimator option leaves no half-made run behind.
    loop = TrainingLoop(config, program, splits, group, quiet or not group.is_main)
    if point is None:
        group.on_main(lambda: prepare_run_dir(directory, config, overwrite))
    else:
        point.check(splits.x_shape, device)
        if point.payload is not None:  # before the rewrite: a refused checkpoint changes nothing
            loop.restore(point.payload)
        group.on_main(point.rewrite)  # config.toml, metrics.jsonl, stale temporary files
    group.seed_sampling(config.train.seed)  # ranks > 0: a stream of Pyro's draws of their own
    metrics = loop.run(directory)
    program.eval()
    group.on_main(lambda: _save_pictures(program, splits, metrics, directory))
    valid_labels = getattr(splits, "valid_labels", None)
    warnings = group.on_main(lambda: run_warnings(program, splits.valid, metrics, valid_labels))
    return Run(directory, config, program, metrics, warnings)


def _locate(out: str | Path | None, name: str, overwrite: bool, resuming: bool) -> Path:
    if out is not None and not str(out).strip():
        raise ConfigError("--out: an empty path; name a folder")
    directory = Path(out) if out is not None else default_run_dir(name)
    check_output_location(directory, overwrite, resuming)  # the output rule, before the data
    return directory


def _save_pictures(
    program: torch.nn.Module, splits: Splits, metrics: list[dict], directory: Path
) -> None:
    save_samples(program, directory / "samples.png")
    labels = splits.valid_labels
    labels = labels if getattr(program, "labels_required", False) else None
    save_reconstructions(program, splits.valid, directory / "reconstructions.png", labels)
    save_learning_curves(metrics, directory / "learning_curves.png")
    if getattr(program, "uses_labels", False):
        save_class_rows(program, directory / "samples-by-class.png")
    save_latent_pictures(program, directory, splits.test, getattr(splits, "test_labels", None))


def resume(run_dir: str | Path, overrides: Iterable[str] = (), quiet: bool = False) -> Run:
    """Go on with the run in ``run_dir`` from its last checkpoint (``train.epochs=N`` extends)."""
    return train(resume_config(run_dir, None, overrides), quiet=quiet, resume=run_dir)
