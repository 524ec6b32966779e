"""Numerical faults: a step whose loss or gradient is not finite never reaches the parameters.

``StepGuard.check`` runs after ``loss.backward()`` and before ``optimizer.step()``: it computes
the gradient's global norm (clipping it when ``clip_norm > 0``) and decides with one device sync
whether the step may be applied. A bad step is skipped and counted; ``max_bad_steps`` bad steps
in a row, or an epoch without a single good step, stop training with a ``TrainingError``. Since a
skipped step changes neither the parameters nor the optimizer's state, every checkpoint written
before that holds finite, trained weights.

Under torchrun the verdict is collective (``all_finite`` is ``distributed.Group.all_finite``):
DDP has averaged the gradients by then, so their norm is the same on every rank, and a loss
that is not finite on one rank makes every rank skip. The ranks never disagree on a step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch.nn.utils import clip_grads_with_norm_, get_total_norm

from pyrovae.errors import TrainingError

__all__ = ["StepGuard"]


class StepGuard:
    """Decides whether a step's gradients may be applied, and counts the steps it skips."""

    def __init__(
        self,
        max_bad_steps: int,
        all_finite: Callable[[torch.Tensor], bool] | None = None,
    ) -> None:
        self.max_bad_steps = max_bad_steps
        #: ``values -> bool``: whether every value is finite (on every rank, under torchrun)
        self.all_finite = all_finite if all_finite is not None else _all_finite
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
        norm = _global_norm([p.grad for p in parameters], loss)
        finite = self.all_finite(torch.stack([loss.detach(), norm.to(loss.dtype)]))  # one sync
        if finite:
            if clip_norm > 0:
                clip_grads_with_norm_(parameters, clip_norm, norm)
            self.in_a_row = 0
            return True
        self.epoch_skipped += 1
        self.in_a_row += 1
        if self.in_a_row >= self.max_bad_steps:
            if not torch.isfinite(loss.detach()):
                what = f"a loss of {float(loss.detach())}"
            elif not torch.isfinite(norm):
                what = f"a gradient of {float(norm)}"
            else:  # finite here: another rank's loss was not
                what = "a non-finite loss on another rank"
            raise TrainingError(
                f"{self.in_a_row} steps in a row had a non-finite loss or gradient (the last"
                f" {what} at epoch {epoch}, step {step}); the last checkpoint is intact: lower"
                " train.lr, set train.clip_norm, or check the data and components"
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


def _global_norm(grads: list[torch.Tensor], loss: torch.Tensor) -> torch.Tensor:
    """The 2-norm of all ``grads`` together: one ``_foreach_norm`` where they share a device and
    dtype (the common case; half the time of ``get_total_norm``'s grouping), else torch's."""
    if not grads:
        return torch.zeros((), device=loss.device)
    first = grads[0]
    if all(
        g.device == first.device and g.dtype == first.dtype and g.layout == first.layout
        for g in grads
    ):
        return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    return get_total_norm(grads)


def _all_finite(values: torch.Tensor) -> bool:
    return bool(torch.isfinite(values).all())
