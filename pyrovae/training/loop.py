"""The training loop: epochs of Adam steps on the ELBO, the step guard, and checkpoints.

The ELBO runs as a ``torch.nn.Module`` (``distributed.ELBOLoss``, under
``DistributedDataParallel`` when torchrun started several processes). Pyro's validation checks
the first batch (shapes, supports, reparameterization) and is then switched off for the hot
loop; the data stays on the device and batches are index slices. A step with a non-finite loss
or gradient is skipped on every rank together (``step_guard.StepGuard``). After validation, each
epoch steps the learning-rate schedule (``schedules``) and counts towards early stopping and the
time budget (``stopping``); checkpoints are written at epoch ends by rank 0, and ``restore``
takes up the state one of them holds (``resume``).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pyro
import torch
from pyro.infer import Trace_ELBO, TraceEnum_ELBO, TraceGraph_ELBO, TraceMeanField_ELBO
from torch import nn
from tqdm.auto import tqdm

from pyrovae.components.datasets import Splits, batch_slices
from pyrovae.components.labelled_batches import labelled_batches, labelled_steps
from pyrovae.config import Config
from pyrovae.errors import CheckpointError, ConfigError, PyrovaeError, TrainingError
from pyrovae.inference.elbo import negative_elbo
from pyrovae.inference.estimators import check_estimator
from pyrovae.registry import build
from pyrovae.runs.checkpoint import save_checkpoint
from pyrovae.runs.directory import BEST_FILE, CHECKPOINT_FILE, append_metrics, load_weights
from pyrovae.training.distributed import Group
from pyrovae.training.resume import restore_schedule
from pyrovae.training.rng import capture_rng, restore_rng
from pyrovae.training.schedules import build_schedule, current_lr, step_schedule
from pyrovae.training.step_guard import StepGuard
from pyrovae.training.stopping import EarlyStopping, TimeBudget

__all__ = ["TrainingLoop", "kl_weight"]

#: Pyro's notes, on the first step, that a guide's enumerated site is sampled (``trace``) or
#: that a labelled batch has nothing to enumerate (``enum``): both as intended.
_ENUMERATION_NOTES = ("(?s).*you need to use TraceEnum_ELBO instead", "TraceEnum_ELBO found no")


def kl_weight(step: int, beta: float, warmup_steps: int) -> float:
    """Linear warm-up of the KL weight from beta / warmup_steps at step 0 to beta."""
    if warmup_steps <= 0:
        return beta
    return beta * min(1.0, (step + 1) / warmup_steps)


def _fusable(parameters: list[torch.Tensor]) -> bool:
    """Whether torch has a fused Adam kernel for these parameters (floating, CPU or CUDA)."""
    return all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in parameters)


class TrainingLoop:
    """State of one training run: model, optimizer, estimator, generators and counters.

    Every rank of a multi-process run holds one, with equal parameters, optimizer state and
    counters; only rank 0 (``group.is_main``) writes files.
    """

    def __init__(
        self, config: Config, program: nn.Module, splits: Splits, group: Group, quiet: bool
    ) -> None:
        self.config = config
        self.program = program
        self.splits = splits
        self.group = group
        self.device = group.device
        self.quiet = quiet
        cfg = config.train
        parameters = [p for p in program.parameters() if p.requires_grad]
        if not parameters:
            raise ConfigError(
                "model.program: the program has no trainable parameters; nothing to train"
            )
        # fused: one kernel per parameter instead of a dozen (Adam's update, same arithmetic)
        self.optimizer = torch.optim.Adam(
            parameters, lr=cfg.lr, eps=cfg.adam_eps, fused=_fusable(parameters)
        )
        self.trainable = parameters  # what the step guard checks, listed once
        self.schedule = build_schedule(cfg, self.optimizer)  # stepped once per epoch
        self.stopping = EarlyStopping(cfg.patience, cfg.min_delta)
        self.budget = TimeBudget(cfg.max_seconds)
        estimator = build(
            "estimator",
            cfg.estimator.name,
            cfg.estimator.options,
            "train.estimator",
            max_plate_nesting=getattr(program, "max_plate_nesting", 1),
        )
        check_estimator(estimator)
        self._check_estimator(estimator)
        # Labels of a program that uses them (-1: hidden), else None: the hot loop is unchanged.
        self.labels = self._training_labels(program, splits)
        # N_l / N: ELBOLoss weighs a step's labelled and unlabelled rows by their shares.
        self.labelled_fraction = (
            None if self.labels is None else int((self.labels >= 0).sum()) / len(self.labels)
        )
        # forward(x, kl_weight) -> -ELBO summed over x; under DistributedDataParallel in torchrun
        self.loss_fn = group.loss_module(estimator, program)
        self.kl_weight = kl_weight(0, cfg.beta, 0)
        # The batch order and binarization: seeded alike on every rank, so all draw the same.
        self.generator = torch.Generator(device=self.device).manual_seed(cfg.seed)
        self.steps_per_epoch = (
            math.ceil(len(splits.train) / cfg.batch_size)
            if self.labels is None
            else labelled_steps(splits, cfg.batch_size)
        )
        self.warmup_steps = cfg.warmup_epochs * self.steps_per_epoch
        self.step = 0
        self.epoch = 0  # the last epoch done
        self.metrics: list[dict[str, Any]] = []
        self.best_valid_loss = math.inf  # the lowest of the checkpointed epochs
        self.guard = StepGuard(cfg.max_bad_steps, group.all_finite)

    def _check_estimator(self, estimator: Any) -> None:
        """Refuse an estimator that is wrong for the program, naming the right one."""
        program = self.program
        enumerates = getattr(program, "enumerates", False)
        if isinstance(estimator, TraceMeanField_ELBO) and not getattr(
            program, "analytic_kl", False
        ):
            right = "enum (or trace: the label sampled)" if enumerates else "trace"
            raise ConfigError(
                "train.estimator: meanfield takes the KL per latent site in closed form, which is"
                f" biased for this program (its latent sites depend on each other); choose {right}"
            )
        if enumerates and not isinstance(estimator, (TraceEnum_ELBO, Trace_ELBO, TraceGraph_ELBO)):
            raise ConfigError(
                f"train.estimator: {self.config.train.estimator.name!r} cannot train a program"
                " with a discrete latent; choose enum (summed out), trace or tracegraph (sampled)"
            )

    @staticmethod
    def _training_labels(program: nn.Module, splits: Splits) -> torch.Tensor | None:
        if not getattr(program, "uses_labels", False):
            return None
        labels = splits.train_labels
        if labels is None:
            raise ConfigError(
                "model.program: the program uses labels and the training data has none; choose"
                " a dataset with labels (digits, mnist, ...)"
            )
        if getattr(program, "labels_required", False) and bool((labels < 0).any()):
            raise ConfigError(
                "model.program: the program needs every training label, and data.labelled hides"
                " some; set data.labelled = 'all' or choose model.program = 'm2'"
            )
        return labels

    def _validation_loss(self) -> float:
        """The negative ELBO per validation datapoint: M2's with the label summed out, the
        CVAE's given the validation labels."""
        if not getattr(self.program, "labels_required", False):
            return self.group.mean(partial(negative_elbo, self.program), self.splits.valid)
        valid, labels = self.splits.valid, self.splits.valid_labels

        def score(indices: torch.Tensor) -> float:
            return negative_elbo(self.program, valid[indices], y=labels[indices])

        return self.group.mean(score, torch.arange(len(valid), device=valid.device))

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
                # rank 0's on every rank: the records, and the time budget's verdict, agree
                seconds = self.group.main_value(time.perf_counter() - started)
                skipped = self.guard.end_epoch(epoch)  # equal on every rank: verdicts agree
                self.program.eval()
                valid_loss = self._validation_loss()
                self.program.train()
                if not math.isfinite(valid_loss):  # reduced over ranks: all stop together
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
                    "kl_weight": self.kl_weight,
                    "lr": current_lr(self.optimizer),  # the lr this epoch trained with
                    "skipped_steps": skipped,
                    "epoch_seconds": seconds,
                }
                step_schedule(self.schedule, valid_loss)  # the next epoch's lr
                metrics.append(record)
                stop = self.stopping.update(epoch, valid_loss)
                if stop:
                    record["stopped"] = self.stopping.reason()
                elif self.budget.exhausted(metrics):
                    stop = True
                    record["stopped"] = self.budget.reason(metrics)
                self.epoch = epoch
                self._end_epoch(directory, record, stop)
                bar.set_postfix(epoch=epoch, loss=f"{train_loss:.2f}", valid=f"{valid_loss:.2f}")
                if stop:
                    break
        return metrics

    def _end_epoch(self, directory: Path, record: dict[str, Any], stop: bool) -> None:
        """Append the epoch's metrics and, every ``checkpoint_every`` epochs, at the end and
        when early stopping or the time budget ``stop``s the run, write the last checkpoint,
        and the best one if this epoch's validation loss is the lowest so far (with early
        stopping on, at any epoch, else among the checkpointed ones). Rank 0 writes; a
        ``CheckpointError`` there is raised on every rank."""
        cfg = self.config.train
        save = self.epoch % cfg.checkpoint_every == 0 or self.epoch == cfg.epochs or stop
        lowest = record["valid_loss"] < self.best_valid_loss
        best = lowest and (save or cfg.patience > 0)
        if best:
            self.best_valid_loss = record["valid_loss"]

        def write() -> None:
            append_metrics(directory, record)
            if save:
                payload = self.checkpoint(self.epoch)
                if best:  # first: a crash in between leaves a best file as new as the last
                    save_checkpoint(directory / BEST_FILE, payload)
                save_checkpoint(directory / CHECKPOINT_FILE, payload)  # atomic, each
            elif best:  # early stopping's best epoch between checkpoints
                save_checkpoint(directory / BEST_FILE, self.checkpoint(self.epoch))

        self.group.on_main(write)

    def _epoch(self, bar: tqdm, epoch: int) -> float:
        cfg = self.config.train
        x_train = self.splits.training_epoch(self.generator)
        total = torch.zeros((), device=self.device)
        n = len(x_train)
        counted = 0  # datapoints of the steps that were not skipped (over all ranks)
        for indices in self._batches(n):
            share = self.group.shard(indices)  # this rank's share of the global batch
            batch = x_train[share]
            labels = None if self.labels is None else self.labels[share]
            self.kl_weight = kl_weight(self.step, cfg.beta, self.warmup_steps)
            with pyro.validation_enabled(self.step == 0):
                loss_sum = self._loss(batch, self.kl_weight, labels)
            loss = loss_sum * self.group.loss_scale(len(indices))  # mean over the global batch
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()  # every rank, every step: DDP averages the gradients here
            # A non-finite loss or gradient on any rank is skipped by all: it never reaches the
            # parameters.
            if self.guard.check(loss, self.trainable, cfg.clip_norm, epoch, self.step):
                self.optimizer.step()
                total += loss_sum.detach()
                counted += len(indices)
            self.step += 1
            bar.update(1)
        return float(self.group.sum(total)) / counted if counted else math.nan

    def _batches(self, n: int) -> Iterator[torch.Tensor]:
        """One epoch's index batches: slices of a permutation of the ``n`` training points, or
        for a program that uses labels each step's unlabelled and labelled batches together
        (``labelled_batches``: an epoch is one pass over the unlabelled points)."""
        cfg = self.config.train
        if self.labels is None:
            return batch_slices(n, cfg.batch_size, self.generator, self.device)
        batches = labelled_batches(self.splits, cfg.batch_size, self.generator, self.device)
        return (torch.cat(pair) for pair in batches)

    def _loss(
        self, batch: torch.Tensor, weight: float, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The negative ELBO summed over ``batch`` (with its ``labels``, -1 where hidden, for a
        program that uses them); Pyro's checks of the first step become one-line errors."""
        try:
            with warnings.catch_warnings():
                # Pyro warns of every NaN loss; the guard counts them into the metrics instead.
                warnings.filterwarnings("ignore", message="Encountered NaN", category=UserWarning)
                if labels is None:
                    return self.loss_fn(batch, kl_weight=weight)
                for message in _ENUMERATION_NOTES:  # the estimator chose: sample or sum out
                    warnings.filterwarnings("ignore", message=message, category=UserWarning)
                return self.loss_fn(
                    batch, kl_weight=weight, y=labels, labelled_fraction=self.labelled_fraction
                )
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
        """The state ``restore`` takes up; the generators' are this process's (rank 0's)."""
        return {
            "config": self.config.to_dict(),
            "x_shape": list(self.splits.x_shape),
            "num_classes": self.splits.num_classes,
            "model": self.program.state_dict(),  # the plain program's: no DDP "module." prefix
            "optimizer": self.optimizer.state_dict(),
            "epoch": epoch,
            "step": self.step,
            "device": self.device.type,
            "rng": capture_rng(self.generator),
            "metrics": list(self.metrics),
            "best_valid_loss": self.best_valid_loss,
            "bad_steps_in_row": self.guard.in_a_row,
            "schedule": self.schedule.state_dict(),
            "early_stopping": self.stopping.state_dict(),
        }

    def restore(self, payload: dict[str, Any]) -> None:
        """Take up the state ``checkpoint`` saved (``resume.open_resume`` checked its keys),
        on every rank: the model, Adam's state, the counters and every generator as rank 0 had
        them (ranks > 0 then reseed Pyro's stream: ``Group.seed_sampling``)."""
        load_weights(self.program, payload["model"])
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
        restore_schedule(self.schedule, self.stopping, payload, self.config.train)
        if self.budget.exhausted(self.metrics):
            spent = self.budget.spent(self.metrics)
            raise ConfigError(
                f"cannot resume: the run has trained {spent:.1f} s and train.max_seconds is"
                f" {self.budget.seconds:g}; pass train.max_seconds=S with S > {spent:.1f}, or 0,"
                " to train it further"
            )
