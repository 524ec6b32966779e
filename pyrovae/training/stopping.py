"""Early stopping on the validation loss (``train.patience``, ``train.min_delta``), and the
time budget (``train.max_seconds``).

An epoch improves when its validation loss is below the best so far by more than ``min_delta``;
the run stops after ``patience`` epochs in a row without an improvement (0: never). The counters
are plain numbers, saved in every checkpoint, so a resumed run stops where the uninterrupted
one does.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pyrovae.errors import CheckpointError

__all__ = ["EarlyStopping", "TimeBudget"]


@dataclass
class EarlyStopping:
    """The counters of early stopping; ``update`` once per epoch."""

    patience: int
    min_delta: float = 0.0
    best: float = math.inf  #: the lowest validation loss that counted as an improvement
    best_epoch: int = 0
    bad_epochs: int = 0  #: epochs in a row since the last improvement

    def update(self, epoch: int, valid_loss: float) -> bool:
        """Count epoch ``epoch``'s validation loss; True when the run should stop now."""
        if valid_loss < self.best - self.min_delta:
            self.best, self.best_epoch, self.bad_epochs = valid_loss, epoch, 0
        else:
            self.bad_epochs += 1
        return self.should_stop

    @property
    def should_stop(self) -> bool:
        return 0 < self.patience <= self.bad_epochs

    def reason(self) -> str:
        """Why the run stopped, in words (for the metrics and the summary)."""
        return (
            f"early stopping: the validation loss did not improve on {self.best:.4f} (epoch"
            f" {self.best_epoch}) by more than {self.min_delta:g} for {self.bad_epochs} epochs"
            f" (train.patience = {self.patience})"
        )

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        try:
            best, best_epoch, bad = state["best"], state["best_epoch"], state["bad_epochs"]
        except (KeyError, TypeError):
            raise CheckpointError("the checkpoint's early-stopping state is damaged") from None
        if not (isinstance(best, float) and isinstance(best_epoch, int) and isinstance(bad, int)):
            raise CheckpointError("the checkpoint's early-stopping state is damaged")
        self.best, self.best_epoch, self.bad_epochs = best, best_epoch, bad

    def replay(self, losses: Iterable[float]) -> None:
        """Rebuild the counters from the validation losses of epochs 1, 2, ... (a checkpoint
        written before early stopping existed)."""
        for epoch, loss in enumerate(losses, 1):
            self.update(epoch, loss)


@dataclass(frozen=True)
class TimeBudget:
    """``train.max_seconds``: the run stops at the end of the first epoch at which its training
    seconds (the ``epoch_seconds`` of its metrics records, over every resume; validation not
    counted) reach ``seconds``; 0: no budget."""

    seconds: float

    @staticmethod
    def spent(metrics: Iterable[Mapping[str, Any]]) -> float:
        return sum(record.get("epoch_seconds", 0.0) for record in metrics)

    def exhausted(self, metrics: Iterable[Mapping[str, Any]]) -> bool:
        return self.seconds > 0 and self.spent(metrics) >= self.seconds

    def reason(self, metrics: Iterable[Mapping[str, Any]]) -> str:
        """Why the run stopped, in words (for the metrics and the summary)."""
        return (
            f"time budget: {self.spent(metrics):.1f} s of training reached train.max_seconds ="
            f" {self.seconds:g}"
        )
