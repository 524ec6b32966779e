"""``pyrovae train``: train a program and write a run directory (or go on with one)."""

from __future__ import annotations

import argparse
import math

from pyrovae.cli.arguments import add_common, add_config_arguments, load, overrides
from pyrovae.config import Config
from pyrovae.errors import ConfigError, PyrovaeError

__all__ = ["add_parser", "command", "scale_to_budget"]

#: Epoch counts of a schedule's options, scaled with the budget.
_SCHEDULE_EPOCH_OPTIONS = {"step": ("step_size",), "plateau": ("patience",)}


def scale_to_budget(config: Config, fraction: float) -> Config:
    """``config`` with its epoch counts times ``fraction`` (in (0, 1]), each rounded and kept
    >= 1 where it was: train.epochs, train.warmup_epochs, train.patience, the ``step``
    schedule's step_size and the ``plateau`` schedule's patience; the ``exponential``
    schedule's gamma becomes gamma^(1/fraction), so the learning rate ends where the full
    run's does. ``cosine`` follows train.epochs by itself. ``burda`` is defined by its
    published stage lengths (3^i epochs) and is truncated, not compressed: a budget run
    follows the first epochs of the published schedule."""
    if not 0 < fraction <= 1:
        raise ConfigError(f"--budget: a fraction in (0, 1] of the recipe, got {fraction}")

    def scaled(epochs: int) -> int:
        return max(1, round(epochs * fraction)) if epochs > 0 else 0

    raw = config.to_dict()
    train = raw["train"]
    for key in ("epochs", "warmup_epochs", "patience"):
        if key in train:
            train[key] = scaled(train[key])
    schedule = train.get("schedule")
    if isinstance(schedule, dict):
        for key in _SCHEDULE_EPOCH_OPTIONS.get(schedule["name"], ()):
            if key in schedule:
                schedule[key] = scaled(schedule[key])
        if schedule["name"] == "exponential" and "gamma" in schedule:
            schedule["gamma"] = schedule["gamma"] ** (1 / fraction)
    return Config.from_dict(raw)


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction, got {text[:40]!r}") from None
    if not (math.isfinite(value) and 0 < value <= 1):
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text[:40]}")
    return value


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``pyrovae train``."""
    parser = commands.add_parser("train", help="train a VAE and write a run directory")
    add_common(parser)
    add_config_arguments(parser)
    parser.add_argument("--out", metavar="DIR", help="run directory (default: runs/<name>)")
    parser.add_argument("--overwrite", action="store_true", help="replace a run in --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="go on with the run in RUN_DIR from its last checkpoint (train.epochs=N extends it)",
    )
    parser.add_argument(
        "--budget",
        type=_fraction,
        metavar="FRACTION",
        help="train this fraction (0, 1] of the config's epochs, warm-up and patience: a quick"
        " CPU run of a long recipe (--budget 0.01: 33 of 3280 epochs)",
    )
    parser.set_defaults(handler=command)
    return parser


def command(args: argparse.Namespace) -> int:
    from pyrovae.training.distributed import is_main_process
    from pyrovae.training.train import train

    if args.resume is not None:
        from pyrovae.training.resume import resume_config

        if args.overwrite:
            raise PyrovaeError("--resume goes on with a run, --overwrite replaces it: choose one")
        if args.budget is not None:
            raise PyrovaeError(
                "--budget scales a new run; to go on with a run, set train.epochs=N instead"
            )
        config = resume_config(args.resume, args.config, overrides(args))
    else:
        config = load(args)
        if args.budget is not None:
            config = scale_to_budget(config, args.budget)
    run = train(
        config, out=args.out, quiet=args.quiet, overwrite=args.overwrite, resume=args.resume
    )
    if not is_main_process():  # under torchrun, rank 0 alone reports
        return 0
    last = run.metrics[-1]
    skipped = sum(m.get("skipped_steps", 0) for m in run.metrics)
    note = f" ({skipped} steps skipped: non-finite loss or gradient)" if skipped else ""
    stopped = f"; stopped by {last['stopped']}" if "stopped" in last else ""
    print(
        f"trained {run.config.name}: valid_loss {last['valid_loss']:.3f} nats after"
        f" {last['epoch']} epochs{note}{stopped}; results in {run.directory}"
    )
    for warning in run.warnings:
        print(f"warning: {warning}")
    return 0
