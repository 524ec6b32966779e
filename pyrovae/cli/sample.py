"""``pyrovae sample``: a grid of new samples from a trained run."""

from __future__ import annotations

import argparse
from pathlib import Path

from pyrovae.boundary import SEED_LIMIT, bounded_int
from pyrovae.cli.arguments import add_checkpoint_argument, add_common
from pyrovae.errors import PyrovaeError

#: The most samples ``pyrovae sample`` draws into one picture.
SAMPLE_LIMIT = 10_000
#: What ``pyrovae sample --out`` may write (PIL picks the format from the extension).
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg")

__all__ = ["add_parser", "command"]


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``pyrovae sample``."""
    parser = commands.add_parser("sample", help="write a grid of new samples from a run")
    add_common(parser)
    parser.add_argument("run_dir", metavar="RUN_DIR")
    add_checkpoint_argument(parser)
    parser.add_argument(
        "--count",
        type=bounded_int(1, SAMPLE_LIMIT),
        default=64,
        help=f"number of samples, at most {SAMPLE_LIMIT} (64)",
    )
    parser.add_argument(
        "--seed", type=bounded_int(0, SEED_LIMIT), default=0, help="random seed (0)"
    )
    parser.add_argument(
        "--out", metavar="FILE", help="PNG or JPEG to write (RUN_DIR/samples-new.png)"
    )
    parser.set_defaults(handler=command)
    return parser


def command(args: argparse.Namespace) -> int:
    import torch

    from pyrovae.param_store import own_param_store
    from pyrovae.runs.directory import BEST_FILE, CHECKPOINT_FILE, check_output_file, load_run
    from pyrovae.runs.pictures import sample, save_grid

    given = None
    if args.out is not None:  # checked before the run is loaded, "" included
        given = check_output_file(args.out, Path(), PICTURE_SUFFIXES, "--out")
    # The run directory exists from here on.
    _, program, _ = load_run(args.run_dir, checkpoint=args.checkpoint)
    default = Path(args.run_dir) / "samples-new.png"
    out = given or check_output_file(str(default), default, PICTURE_SUFFIXES, "--out")
    fallback = out.with_suffix(".pt")  # where samples that are not pictures go
    if fallback.name in (CHECKPOINT_FILE, BEST_FILE):
        raise PyrovaeError(
            f"--out: {str(out)!r} would put samples beside the checkpoints as"
            f" {fallback.name}; choose another name"
        )
    torch.manual_seed(args.seed)
    with own_param_store():
        samples = sample(program, args.count)
    try:
        if not save_grid(samples, out):
            torch.save(samples, fallback)
            out = fallback
    except OSError as error:
        raise PyrovaeError(f"cannot write {str(out)!r}: {error.strerror or error}") from None
    print(f"wrote {args.count} samples to {out}")
    return 0
