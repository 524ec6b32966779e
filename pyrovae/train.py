"""The training loop: the ELBO as a ``torch.nn.Module`` (``elbo(model, guide)``) and torch's Adam.

One path for the command line and for Python: ``pyrovae.train(config)``. Pyro's validation
checks the first batch (shapes, supports, reparameterization) and is then switched off for the
hot loop; the data stays on the device and batches are index slices. A step with a non-finite
loss or gradient is skipped (``faults.StepGuard``); checkpoints are written at epoch ends and a
run goes on from its last one with ``train(..., resume=RUN_DIR)`` (``resume``).
"""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path
from typing import Any

import pyro
import torch
from tqdm.auto import tqdm

from .checkpoint import save_checkpoint
from .config import Config
from .data import Splits, batch_slices, check_likelihood, load_splits
from .errors import CheckpointError, ConfigError, PyrovaeError, TrainingError
from .evaluate import negative_elbo
from .faults import StepGuard
from .model import VAE, build_vae
from .plots import save_learning_curves, save_reconstructions, save_samples
from .registry import build
from .resume import capture_rng, open_resume, restore_rng
from .run import (
    BEST_FILE,
    CHECKPOINT_FILE,
    Run,
    append_metrics,
    check_output_location,
    default_run_dir,
    load_weights,
    prepare_run_dir,
    resolve_device,
)

__all__ = ["train", "kl_weight"]


def kl_weight(step: int, beta: float, warmup_steps: int) -> float:
    """Linear warm-up of the KL weight from beta / warmup_steps at step 0 to beta."""
    if warmup_steps <= 0:
        return beta
    return beta * min(1.0, (step + 1) / warmup_steps)


def train(
    config: Config,
    out: str | Path | None = None,
    quiet: bool = False,
    overwrite: bool = False,
    resume: str | Path | None = None,
) -> Run:
    """Train the VAE described by ``config``; results go to ``out`` (default ``runs/<name>``).

    ``resume=RUN_DIR`` goes on with that run from its last checkpoint, in that directory;
    ``config`` must be the run's own (``resume.RESUMABLE_KEYS`` may differ).
    """
    point = None
    if resume is not None:
        if out is not None and Path(out).resolve() != Path(resume).resolve():
            raise ConfigError(
                "a resumed run stays in its directory: drop --out, or make it RUN_DIR"
            )
        point = open_resume(resume, config)
        out = point.directory
    device = resolve_device(config.train.device)
    pyro.set_rng_seed(config.train.seed)
    directory = Path(out) if out is not None else default_run_dir(config.name)
    check_output_location(directory)  # before the data: a bad --out is known at once

    splits = load_splits(config.data, device)
    vae = build_vae(config.model, splits.x_shape).to(device)
    check_likelihood(splits, vae.likelihood)
    if point is None:
        prepare_run_dir(directory, config, overwrite)
    else:
        point.prepare(splits.x_shape, device)

    loop = _Loop(config, vae, splits, device, quiet)
    if point is not None and point.payload is not None:
        loop.restore(point.payload)
    metrics = loop.run(directory)
    _save_pictures(vae, splits, metrics, directory)
    return Run(directory=directory, config=config, model=vae, metrics=metrics)


class _Loop:
    """State of one training run: model, optimizer, estimator, generators and counters."""

    def __init__(
        self, config: Config, vae: VAE, splits: Splits, device: torch.device, quiet: bool
    ) -> None:
        self.config = config
        self.vae = vae
        self.splits = splits
        self.device = device
        self.quiet = quiet
        cfg = config.train
        self.optimizer = torch.optim.Adam(vae.parameters(), lr=cfg.lr)
        estimator = build("estimator", cfg.estimator.name, cfg.estimator.options, "train.estimator")
        self.loss_fn = estimator(vae.model, vae.guide)  # an ELBOModule: forward(x) -> -ELBO
        self.generator = torch.Generator(device=device).manual_seed(cfg.seed)
        self.steps_per_epoch = math.ceil(len(splits.train) / cfg.batch_size)
        self.warmup_steps = cfg.warmup_epochs * self.steps_per_epoch
        self.step = 0
        self.epoch = 0  # the last epoch done
        self.metrics: list[dict[str, Any]] = []
        self.best_valid_loss = math.inf  # the lowest of the checkpointed epochs
        self.guard = StepGuard(cfg.max_bad_steps)

    def run(self, directory: Path) -> list[dict[str, Any]]:
        cfg = self.config.train
        metrics = self.metrics
        total = cfg.epochs * self.steps_per_epoch
        with tqdm(
            total=total, initial=self.step, disable=self.quiet, unit="step", dynamic_ncols=True
        ) as bar:
            for epoch in range(self.epoch + 1, cfg.epochs + 1):
                started = time.perf_counter()
                train_loss = self._epoch(bar, epoch)
                seconds = time.perf_counter() - started
                skipped = self.guard.end_epoch(epoch)
                self.vae.eval()
                valid_loss = negative_elbo(self.vae, self.splits.valid)
                self.vae.train()
                if not math.isfinite(valid_loss):
                    raise TrainingError(
                        f"the validation loss is {valid_loss} after epoch {epoch}; the last"
                        " checkpoint is intact: lower train.lr, set train.clip_norm, or check"
                        " the data"
                    )
                record = {
                    "epoch": epoch,
                    "step": self.step,
                    "train_loss": train_loss,
                    "valid_loss": valid_loss,
                    "kl_weight": self.vae.kl_weight,
                    "skipped_steps": skipped,
                    "epoch_seconds": seconds,
                }
                metrics.append(record)
                append_metrics(directory, record)
                self.epoch = epoch
                if epoch % cfg.checkpoint_every == 0 or epoch == cfg.epochs:
                    self._save(directory, valid_loss)
                bar.set_postfix(epoch=epoch, loss=f"{train_loss:.2f}", valid=f"{valid_loss:.2f}")
        return metrics

    def _save(self, directory: Path, valid_loss: float) -> None:
        """Write the last checkpoint, and the best one if this epoch's validation loss is the
        lowest so far (each atomically: a crash leaves the previous file whole)."""
        best = valid_loss < self.best_valid_loss
        if best:
            self.best_valid_loss = valid_loss
        payload = self.checkpoint(self.epoch)
        if best:  # first: a crash in between leaves a best file at least as new as the last
            save_checkpoint(directory / BEST_FILE, payload)
        save_checkpoint(directory / CHECKPOINT_FILE, payload)

    def _epoch(self, bar: tqdm, epoch: int) -> float:
        cfg = self.config.train
        x_train = self.splits.training_epoch(self.generator)
        total = torch.zeros((), device=self.device)
        n = len(x_train)
        counted = 0  # datapoints of the steps that were not skipped
        for indices in batch_slices(n, cfg.batch_size, self.generator, self.device):
            batch = x_train[indices]
            self.vae.kl_weight = kl_weight(self.step, cfg.beta, self.warmup_steps)
            with pyro.validation_enabled(self.step == 0):
                loss = self._loss(batch)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            # A non-finite loss or gradient is skipped: it never reaches the parameters.
            if self.guard.check(loss, self.vae.parameters(), cfg.clip_norm, epoch, self.step):
                self.optimizer.step()
                total += loss.detach() * len(batch)
                counted += len(batch)
            self.step += 1
            bar.update(1)
        return float(total) / counted if counted else math.nan

    def _loss(self, batch: torch.Tensor) -> torch.Tensor:
        """The loss per datapoint; Pyro's checks of the first step become one-line errors."""
        try:
            with warnings.catch_warnings():
                # Pyro warns of every NaN loss; the guard counts them into the metrics instead.
                warnings.filterwarnings("ignore", message="Encountered NaN", category=UserWarning)
                return self.loss_fn(batch) / len(batch)
        except PyrovaeError:
            raise
        except (ValueError, RuntimeError) as error:
            if self.step > 0:
                raise
            first = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
            raise TrainingError(
                f"the first training step failed Pyro's checks of the model and guide: {first}"
            ) from error

    def checkpoint(self, epoch: int) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "x_shape": list(self.splits.x_shape),
            "model": self.vae.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": epoch,
            "step": self.step,
            "device": self.device.type,
            "rng": capture_rng(self.generator),
            "metrics": list(self.metrics),
            "best_valid_loss": self.best_valid_loss,
            "bad_steps_in_row": self.guard.in_a_row,
        }

    def restore(self, payload: dict[str, Any]) -> None:
        """Take up the state ``checkpoint`` saved (``resume.open_resume`` checked its keys)."""
        load_weights(self.vae, payload["model"])
        try:
            self.optimizer.load_state_dict(payload["optimizer"])
        except (ValueError, KeyError, TypeError, RuntimeError) as error:
            raise CheckpointError(
                f"the checkpoint's optimizer state does not fit the model: {error}"
            ) from None
        self.epoch, self.step = payload["epoch"], payload["step"]
        self.metrics = list(payload["metrics"])
        self.best_valid_loss = payload["best_valid_loss"]
        self.guard.in_a_row = payload["bad_steps_in_row"]
        restore_rng(payload["rng"], self.generator)


def _save_pictures(vae: VAE, splits: Splits, metrics: list[dict], directory: Path) -> None:
    vae.eval()
    save_samples(vae, directory / "samples.png")
    save_reconstructions(vae, splits.valid, directory / "reconstructions.png")
    save_learning_curves(metrics, directory / "learning_curves.png")
