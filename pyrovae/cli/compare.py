"""``pyrovae compare``: train and evaluate variants of one config alike; tables and plots."""

from __future__ import annotations

import argparse
from pathlib import Path

from pyrovae.cli.arguments import add_common, add_config_arguments, add_estimate_arguments, load
from pyrovae.errors import ConfigError
from pyrovae.evaluation.compare import compare, load_variants, markdown_table

__all__ = ["add_parser", "command"]


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``pyrovae compare``."""
    parser = commands.add_parser(
        "compare", help="train and evaluate variants of a config; write a table and plots"
    )
    parser.add_argument(
        "--variants", metavar="FILE", required=True, help="TOML file of [variants.NAME] tables"
    )
    parser.add_argument("--out", metavar="DIR", help="output folder (runs/compare-<name>)")
    add_estimate_arguments(parser)
    parser.add_argument("--overwrite", action="store_true", help="retrain and re-evaluate all")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_common(parser)
    add_config_arguments(parser)
    parser.set_defaults(handler=command)
    return parser


def command(args: argparse.Namespace) -> int:
    """``pyrovae compare``: the base config the command line describes, and its variants."""
    base = load(args)
    variants = load_variants(args.variants)
    if args.out is not None and not args.out.strip():
        raise ConfigError("--out: an empty path; name a folder")
    out = Path(args.out) if args.out else Path("runs") / f"compare-{base.name}"
    results = compare(
        base,
        variants,
        out,
        particles=args.particles,
        chunk_size=args.chunk_size,
        limit=args.limit,
        quiet=args.quiet,
        overwrite=args.overwrite,
    )
    print(markdown_table(results))
    print(f"\ntables and plots in {out}: results.md, results.csv, learning_curves.png, results.png")
    return 0
