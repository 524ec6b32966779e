"""``pyrovae gradients``: the signal-to-noise ratio of gradient estimators on a trained run."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from pyrovae.boundary import SEED_LIMIT, bounded_int
from pyrovae.cli.arguments import add_checkpoint_argument, add_common
from pyrovae.errors import ConfigError
from pyrovae.evaluation.gradients import format_table, measure, save_snr_plot

__all__ = ["add_parser", "command"]


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``pyrovae gradients``."""
    parser = commands.add_parser(
        "gradients", help="signal-to-noise ratio of gradient estimators on a trained run"
    )
    add_common(parser)
    parser.add_argument("run_dir", metavar="RUN_DIR")
    add_checkpoint_argument(parser)
    parser.add_argument(
        "--estimators",
        nargs="+",
        default=["trace", "iwae:5", "iwae:50", "dreg:5", "dreg:50"],
        metavar="NAME[:K]",
        help="estimators as NAME[:K][,KEY=VALUE] (trace iwae:5 iwae:50 dreg:5 dreg:50)",
    )
    parser.add_argument(
        "--draws", type=bounded_int(2, 10**6), default=100, help="gradient draws (100)"
    )
    parser.add_argument(
        "--batch-size", type=bounded_int(1, 10**6), default=100, help="fixed batch size (100)"
    )
    parser.add_argument(
        "--seed", type=bounded_int(0, SEED_LIMIT), default=0, help="random seed (0)"
    )
    parser.add_argument(
        "--out", metavar="FILE", help="plot, .png, .pdf or .svg (RUN_DIR/gradient_snr.png)"
    )
    parser.set_defaults(handler=command)
    return parser


def command(args: argparse.Namespace) -> int:
    """``pyrovae gradients RUN_DIR --estimators ...``."""
    from pyrovae.components.datasets import load_splits
    from pyrovae.runs.directory import check_data_shape, check_output_file, load_run

    suffixes = (".png", ".pdf", ".svg")
    given = check_output_file(args.out, Path(), suffixes, "--out") if args.out is not None else None
    # The run directory exists from here on.
    config, program, payload = load_run(args.run_dir, checkpoint=args.checkpoint)
    default = Path(args.run_dir) / "gradient_snr.png"
    out = given or check_output_file(str(default), default, suffixes, "--out")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    splits = load_splits(config.data, torch.device("cpu"))
    check_data_shape(splits.train, payload, args.run_dir)
    x = splits.train[: args.batch_size]
    if splits.dynamic_binarization:
        x = torch.bernoulli(x, generator=torch.Generator().manual_seed(args.seed))
    rows = measure(program, x, args.estimators, args.draws, args.seed)
    print(format_table(rows))
    try:
        save_snr_plot(rows, out)
    except OSError as error:
        raise ConfigError(f"cannot write {str(out)!r}: {error.strerror or error}") from None
    print(f"\n{args.draws} draws on a fixed batch of {len(x)} training datapoints; plot: {out}")
    return 0
