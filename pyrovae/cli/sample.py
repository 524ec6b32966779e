"""``pyrovae sample``: a grid of new samples from a trained run (of one class with ``--label``),
and the run's pictures of labels and latent space, written into the run directory:
``samples-by-class.png`` (a program that uses labels), ``latent.png`` (a dataset with labels),
``manifold.png`` (a 2-D latent)."""

from __future__ import annotations

import argparse
from pathlib import Path

from pyrovae.boundary import SEED_LIMIT, bounded_int
from pyrovae.cli.arguments import add_checkpoint_argument, add_common
from pyrovae.errors import PyrovaeError

#: The most samples ``pyrovae sample`` draws into one picture.
SAMPLE_LIMIT = 10_000
#: The largest class index ``--label`` accepts on the command line (the run's own bound is
#: checked once it is loaded).
LABEL_LIMIT = 10**6
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
    parser.add_argument(
        "--label",
        type=bounded_int(0, LABEL_LIMIT),
        metavar="CLASS",
        help="samples of this class only (a program that uses labels: cvae, m2)",
    )
    parser.add_argument("--data-dir", metavar="DIR", help="dataset folder (default: the run's)")
    parser.set_defaults(handler=command)
    return parser


def check_label(program: object, label: int | None, run_dir: str) -> None:
    """Refuse ``--label`` for a program without labels or a class it does not have."""
    if label is None:
        return
    if not getattr(program, "uses_labels", False):
        raise PyrovaeError(
            f"--label: the program of run {run_dir!r} ({type(program).__name__}) does not use"
            " labels; train a conditional one (model.program = 'cvae' or 'm2')"
        )
    classes = program.num_classes
    if label >= classes:
        raise PyrovaeError(
            f"--label {label} is out of range: run {run_dir!r} has {classes} classes,"
            f" 0 to {classes - 1}"
        )


def command(args: argparse.Namespace) -> int:
    import torch

    from pyrovae.param_store import own_param_store
    from pyrovae.runs.directory import BEST_FILE, CHECKPOINT_FILE, check_output_file, load_run
    from pyrovae.runs.pictures import sample, save_grid

    given = None
    if args.out is not None:  # checked before the run is loaded, "" included
        given = check_output_file(args.out, Path(), PICTURE_SUFFIXES, "--out")
    # The run directory exists from here on.
    config, program, payload = load_run(args.run_dir, checkpoint=args.checkpoint)
    check_label(program, args.label, args.run_dir)
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
        samples = sample(program, args.count, args.label)
        try:
            if not save_grid(samples, out):
                torch.save(samples, fallback)
                out = fallback
            pictures = run_pictures(program, config, payload, args)
        except OSError as error:
            raise PyrovaeError(f"cannot write {error.filename!r}: {error.strerror}") from None
    of = "" if args.label is None else f" of class {args.label}"
    print(f"wrote {args.count} samples{of} to {out}")
    if pictures:
        print(f"and {', '.join(p.name for p in pictures)} in {args.run_dir}")
    return 0


def run_pictures(program, config, payload: dict, args: argparse.Namespace) -> list[Path]:
    """The run directory's pictures of labels and latent space (the test split is loaded for
    ``latent.png`` when the dataset has labels); the paths written."""
    from dataclasses import replace

    import torch

    from pyrovae.components.datasets import load_splits
    from pyrovae.runs.directory import check_data_shape
    from pyrovae.runs.latent_pictures import save_latent_pictures
    from pyrovae.runs.pictures import save_class_rows

    directory = Path(args.run_dir)
    written = []
    if getattr(program, "uses_labels", False):
        save_class_rows(program, directory / "samples-by-class.png")
        written.append(directory / "samples-by-class.png")
    data = config.data if args.data_dir is None else replace(config.data, root=args.data_dir)
    splits = load_splits(data, torch.device("cpu"))
    check_data_shape(splits.test, payload, directory)
    labels = getattr(splits, "test_labels", None)
    return written + save_latent_pictures(program, directory, splits.test, labels)
