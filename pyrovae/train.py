"""The training loop: the ELBO as a ``torch.nn.Module`` (``elbo(model, guide)``) and torch's Adam.

One path for the command line and for Python: ``pyrovae.train(config)``. Pyro's validation
checks the first batch (shapes, supports, reparameterization) and is then switched off for the
hot loop; the data stays on the device and batches are index slices.
"""

from __future__ import annotations

import math
import time
from functools import partial
from pathlib import Path
from typing import Any

import pyro
import torch
from tqdm.auto import tqdm

from .checkpoint import save_checkpoint
from .config import Config
from .data import Splits, batch_slices, check_likelihood, load_splits
from .distributed import Group, session
from .errors import TrainingError
from .evaluate import negative_elbo
from .model import VAE, build_vae
from .plots import save_learning_curves, save_reconstructions, save_samples
from .registry import build
from .run import (
    CHECKPOINT_FILE,
    Run,
    append_metrics,
    default_run_dir,
    prepare_run_dir,
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
) -> Run:
    """Train the VAE described by ``config``; results go to ``out`` (default ``runs/<name>``).

    Under torchrun every process calls this and they train together with DDP; rank 0 alone
    writes ``out`` (see ``pyrovae.distributed``).
    """
    with session(config.train) as group:
        return _train(config, out, quiet, overwrite, group)


def _train(
    config: Config, out: str | Path | None, quiet: bool, overwrite: bool, group: Group
) -> Run:
    device = group.device
    pyro.set_rng_seed(config.train.seed)
    directory = Path(out) if out is not None else None

    splits = load_splits(config.data, device)
    vae = build_vae(config.model, splits.x_shape).to(device)
    check_likelihood(splits, vae.likelihood)
    directory = group.on_main(
        lambda: prepare_run_dir(directory or default_run_dir(config.name), config, overwrite)
    )
    group.seed_sampling(config.train.seed)

    loop = _Loop(config, vae, splits, device, quiet or not group.is_main, group)
    metrics = loop.run(directory)
    if group.is_main:
        _save_pictures(vae, splits, metrics, directory)
    return Run(directory=directory, config=config, model=vae, metrics=metrics)


class _Loop:
    """State of one training run: model, optimizer, estimator, generators and counters."""

    def __init__(
        self,
        config: Config,
        vae: VAE,
        splits: Splits,
        device: torch.device,
        quiet: bool,
        group: Group | None = None,
    ) -> None:
        self.group = group if group is not None else Group(device)
        self.config = config
        self.vae = vae
        self.splits = splits
        self.device = device
        self.quiet = quiet
        cfg = config.train
        self.optimizer = torch.optim.Adam(vae.parameters(), lr=cfg.lr)
        estimator = build("estimator", cfg.estimator.name, cfg.estimator.options, "train.estimator")
        # forward(x) -> -ELBO summed over x; wrapped in DistributedDataParallel under torchrun
        self.loss_fn = self.group.loss_module(estimator, vae)
        self.generator = torch.Generator(device=device).manual_seed(cfg.seed)
        self.steps_per_epoch = math.ceil(len(splits.train) / cfg.batch_size)
        self.warmup_steps = cfg.warmup_epochs * self.steps_per_epoch
        self.step = 0

    def run(self, directory: Path) -> list[dict[str, Any]]:
        cfg = self.config.train
        metrics: list[dict[str, Any]] = []
        total = cfg.epochs * self.steps_per_epoch
        with tqdm(total=total, disable=self.quiet, unit="step", dynamic_ncols=True) as bar:
            for epoch in range(1, cfg.epochs + 1):
                started = time.perf_counter()
                train_loss = self._epoch(bar, epoch)
                seconds = time.perf_counter() - started
                self.vae.eval()
                valid_loss = self.group.mean(partial(negative_elbo, self.vae), self.splits.valid)
                self.vae.train()
                record = {
                    "epoch": epoch,
                    "step": self.step,
                    "train_loss": train_loss,
                    "valid_loss": valid_loss,
                    "kl_weight": self.vae.kl_weight,
                    "epoch_seconds": seconds,
                }
                metrics.append(record)
                if self.group.is_main:
                    append_metrics(directory, record)
                bar.set_postfix(epoch=epoch, loss=f"{train_loss:.2f}", valid=f"{valid_loss:.2f}")
        if self.group.is_main:
            save_checkpoint(directory / CHECKPOINT_FILE, self.checkpoint(cfg.epochs))
        return metrics

    def _epoch(self, bar: tqdm, epoch: int) -> float:
        cfg = self.config.train
        x_train = self.splits.training_epoch(self.generator)
        total = torch.zeros((), device=self.device)
        n = len(x_train)
        for indices in batch_slices(n, cfg.batch_size, self.generator, self.device):
            batch = x_train[self.group.shard(indices)]  # this rank's share of the global batch
            self.vae.kl_weight = kl_weight(self.step, cfg.beta, self.warmup_steps)
            with pyro.validation_enabled(self.step == 0):
                loss_sum = self.loss_fn(batch)
            loss = loss_sum * self.group.loss_scale(len(indices))  # mean over the global batch
            if not self.group.all_finite(loss):
                raise TrainingError(
                    f"the loss is {float(loss)} at epoch {epoch}, step {self.step}; lower"
                    " train.lr, set train.clip_norm, or check the data"
                )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.clip_norm > 0:
                torch.nn.utils.clip_grad_norm_(self.vae.parameters(), cfg.clip_norm)
            self.optimizer.step()
            total += loss_sum.detach()
            self.step += 1
            bar.update(1)
        return float(self.group.sum(total)) / n

    def checkpoint(self, epoch: int) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "x_shape": list(self.splits.x_shape),
            "model": self.vae.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": epoch,
            "step": self.step,
        }


def _save_pictures(vae: VAE, splits: Splits, metrics: list[dict], directory: Path) -> None:
    vae.eval()
    save_samples(vae, directory / "samples.png")
    save_reconstructions(vae, splits.valid, directory / "reconstructions.png")
    save_learning_curves(metrics, directory / "learning_curves.png")
