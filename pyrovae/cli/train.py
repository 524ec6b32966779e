"""``pyrovae train``: train a program and write a run directory (or go on with one)."""

from __future__ import annotations

import argparse

from pyrovae.cli.arguments import add_common, add_config_arguments, load, overrides
from pyrovae.errors import PyrovaeError

__all__ = ["add_parser", "command"]


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
    parser.set_defaults(handler=command)
    return parser


def command(args: argparse.Namespace) -> int:
    from pyrovae.training.distributed import is_main_process
    from pyrovae.training.train import train

    if args.resume is not None:
        from pyrovae.training.resume import resume_config

        if args.overwrite:
            raise PyrovaeError("--resume goes on with a run, --overwrite replaces it: choose one")
        config = resume_config(args.resume, args.config, overrides(args))
    else:
        config = load(args)
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
