"""Learning-rate schedules: registered ``"schedule"`` components built on
``torch.optim.lr_scheduler``, chosen by ``[train.schedule] name = ...``.

A schedule is stepped once per epoch, after validation (``step_schedule``): the lr an epoch
trains with is the schedule's value after the epochs before it. A factory receives the Adam
``optimizer`` (its lr is ``train.lr``) and ``train_epochs`` from the loop, its options from the
config, and returns an ``LRScheduler``; its ``state_dict`` goes into every checkpoint.
"""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import (
    CosineAnnealingLR,
    ExponentialLR,
    LambdaLR,
    LRScheduler,
    ReduceLROnPlateau,
    StepLR,
)

from pyrovae.config import TrainConfig
from pyrovae.errors import ConfigError
from pyrovae.registry import build, register

__all__ = ["BURDA_STAGES", "build_schedule", "step_schedule", "current_lr", "burda_factor"]

#: Burda et al. (2015): stages i = 0..7 of 3^i epochs each, 3280 epochs in all.
BURDA_STAGES = 8


def build_schedule(train: TrainConfig, optimizer: Optimizer) -> LRScheduler:
    """The schedule ``train.schedule`` names, on ``optimizer``; one-line errors for bad options."""
    component = train.schedule
    scheduler = build(
        "schedule",
        component.name,
        component.options,
        "train.schedule",
        optimizer=optimizer,
        train_epochs=train.epochs,
    )
    if not isinstance(scheduler, LRScheduler):
        raise ConfigError(
            f"train.schedule: {component.name!r} built a {type(scheduler).__name__}, not a"
            " torch.optim.lr_scheduler.LRScheduler"
        )
    return scheduler


def step_schedule(scheduler: LRScheduler, valid_loss: float) -> None:
    """Step at the end of an epoch; a plateau schedule reads the epoch's validation loss."""
    if isinstance(scheduler, ReduceLROnPlateau):
        scheduler.step(valid_loss)
    else:
        scheduler.step()


def current_lr(optimizer: Optimizer) -> float:
    """The learning rate the next step takes (every parameter group has the same)."""
    return float(optimizer.param_groups[0]["lr"])


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{name} must be > 0, got {value!r}")


def _decay(name: str, value: float) -> None:
    if not 0 < value <= 1:
        raise ConfigError(f"{name} must be in (0, 1] (a decay factor), got {value!r}")


def _non_negative(name: str, value: float) -> None:
    if not value >= 0:
        raise ConfigError(f"{name} must be >= 0, got {value!r}")


@register("schedule", "constant")
def constant(optimizer: Optimizer) -> LRScheduler:
    """``train.lr`` throughout."""
    return LambdaLR(optimizer, lambda epoch: 1.0)


@register("schedule", "step")
def step(optimizer: Optimizer, step_size: int = 30, gamma: float = 0.1) -> LRScheduler:
    """``StepLR``: the lr times ``gamma`` every ``step_size`` epochs."""
    _positive("step_size", step_size)
    _decay("gamma", gamma)
    return StepLR(optimizer, step_size=step_size, gamma=gamma)


@register("schedule", "exponential")
def exponential(optimizer: Optimizer, gamma: float = 0.99) -> LRScheduler:
    """``ExponentialLR``: the lr times ``gamma`` after every epoch."""
    _decay("gamma", gamma)
    return ExponentialLR(optimizer, gamma=gamma)


@register("schedule", "cosine")
def cosine(optimizer: Optimizer, train_epochs: int, eta_min: float = 0.0) -> LRScheduler:
    """``CosineAnnealingLR``: from ``train.lr`` down to ``eta_min`` over ``train.epochs``.

    A cosine run cannot be resumed with more epochs (its curve is fixed by the first
    ``train.epochs``).
    """
    _non_negative("eta_min", eta_min)
    lr = current_lr(optimizer)
    if eta_min > lr:
        raise ConfigError(f"eta_min must be <= train.lr ({lr}), got {eta_min!r}")
    return CosineAnnealingLR(optimizer, T_max=train_epochs, eta_min=eta_min)


@register("schedule", "plateau")
def plateau(
    optimizer: Optimizer,
    factor: float = 0.1,
    patience: int = 10,
    threshold: float = 1e-4,
    min_lr: float = 0.0,
) -> LRScheduler:
    """``ReduceLROnPlateau`` on the validation loss: the lr times ``factor`` once the loss has
    not improved (by the relative ``threshold``) for more than ``patience`` epochs, down to
    ``min_lr``."""
    if not 0 < factor < 1:
        raise ConfigError(f"factor must be in (0, 1), got {factor!r}")
    _non_negative("patience", patience)
    _non_negative("threshold", threshold)
    _non_negative("min_lr", min_lr)
    return ReduceLROnPlateau(
        optimizer, mode="min", factor=factor, patience=patience, threshold=threshold, min_lr=min_lr
    )


def burda_factor(epochs_done: int) -> float:
    """Burda et al. (2015)'s lr over ``train.lr`` after ``epochs_done`` epochs: 10^(-i/7) in
    stage i, which holds 3^i epochs (i = 0..7); after stage 7, its value stays."""
    stage = 0
    while stage < BURDA_STAGES - 1 and (3 ** (stage + 1) - 1) // 2 <= epochs_done:
        stage += 1
    return 10.0 ** (-stage / 7)


@register("schedule", "burda")
def burda(optimizer: Optimizer) -> LRScheduler:
    """Burda et al. (2015): lr = ``train.lr`` * 10^(-i/7) for 3^i epochs in stage i = 0..7
    (3280 epochs in all; the paper's lr is 1e-3); then the last value stays."""
    return LambdaLR(optimizer, burda_factor)
