"""Numerical faults: a step whose loss or gradient is not finite never reaches the parameters.

``StepGuard.check`` runs after ``loss.backward()`` and before ``optimizer.step()``: it computes
the gradient's global norm (clipping it when ``clip_norm > 0``) and decides with one device sync
whether the step may be applied. A bad step is skipped and counted; ``max_bad_steps`` bad steps
in a row, or an epoch without a single good step, stop training with a ``TrainingError``. Since a
skipped step changes neither the parameters nor the optimizer's state, every checkpoint written
before that holds finite, trained weights.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.nn.utils import clip_grads_with_norm_, get_total_norm

from .errors import TrainingError

__all__ = ["StepGuard"]


class StepGuard:
    """Decides whether a step's gradients may be applied, and counts the steps it skips."""

    def __init__(self, max_bad_steps: int) -> None:
        self.max_bad_steps = max_bad_steps
        self.in_a_row = 0  #: bad steps since the last good one (carried across epochs)
        self.epoch_skipped = 0  #: steps skipped in the current epoch
        self.epoch_steps = 0  #: steps seen in the current epoch

    def check(
        self,
        loss: torch.Tensor,
        parameters: Iterable[torch.Tensor],
        clip_norm: float,
        epoch: int,
        step: int,
    ) -> bool:
        """True if the step is good (gradients clipped in place when ``clip_norm > 0``).

        False if the loss or the gradient's norm is NaN or infinite: the caller must not step.
        Raises ``TrainingError`` once ``max_bad_steps`` steps in a row were bad.
        """
        self.epoch_steps += 1
        parameters = [p for p in parameters if p.grad is not None]
        grads = [p.grad for p in parameters]
        norm = get_total_norm(grads) if grads else torch.zeros((), device=loss.device)
        finite = bool(torch.isfinite(loss.detach()) & torch.isfinite(norm))  # one sync
        if finite:
            if clip_norm > 0:
                clip_grads_with_norm_(parameters, clip_norm, norm)
            self.in_a_row = 0
            return True
        self.epoch_skipped += 1
        self.in_a_row += 1
        if self.in_a_row >= self.max_bad_steps:
            what = "loss" if not torch.isfinite(loss.detach()) else "gradient"
            raise TrainingError(
                f"{self.in_a_row} steps in a row had a non-finite loss or gradient (the last a"
                f" {what} of {float((loss if what == 'loss' else norm).detach())} at epoch {epoch},"
                f" step"
                f" {step}); the last checkpoint is intact: lower train.lr, set train.clip_norm,"
                " or check the data and components"
            )
        return False

    def end_epoch(self, epoch: int) -> int:
        """The number of steps skipped in ``epoch``; an epoch with no good step is an error."""
        skipped, steps = self.epoch_skipped, self.epoch_steps
        self.epoch_skipped = self.epoch_steps = 0
        if steps > 0 and skipped == steps:
            raise TrainingError(
                f"every step of epoch {epoch} ({steps}) had a non-finite loss or gradient, so"
                " nothing was learned; the last checkpoint is intact: lower train.lr, set"
                " train.clip_norm, or check the data and components"
            )
        return skipped
