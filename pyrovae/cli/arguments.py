"""Arguments shared by several commands: plugins and debugging, the config and its overrides,
the importance-sampled estimate's options."""

from __future__ import annotations

import argparse

from pyrovae.boundary import bounded_int
from pyrovae.config import Config, load_config
from pyrovae.inference.marginal_likelihood import DEFAULT_CHUNK_SIZE

#: The most importance samples and particle-datapoint pairs a command accepts.
PARTICLE_LIMIT = 10**7
CHUNK_LIMIT = 10**9

__all__ = [
    "add_common",
    "add_config_arguments",
    "overrides",
    "load",
    "add_estimate_arguments",
    "add_checkpoint_argument",
]


def add_common(parser: argparse.ArgumentParser) -> None:
    """``--plugin`` and ``--debug``, on every command."""
    parser.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE_OR_FILE",
        help="import a module or .py file that registers components (repeatable)",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help="on an error, print the full traceback too (also: PYROVAE_DEBUG=1)",
    )


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config``, the flags that set config keys, and ``KEY=VALUE`` overrides."""
    parser.add_argument("--config", metavar="FILE", help="TOML config file (default: defaults)")
    parser.add_argument("--data-dir", metavar="DIR", help="dataset folder (sets data.root)")
    parser.add_argument("--device", help="cpu, cuda, cuda:N or auto (sets train.device)")
    parser.add_argument("--name", help="run name (sets name)")
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="config overrides: train.epochs=5"
    )


def overrides(args: argparse.Namespace) -> list[str]:
    """The overrides the flags and the ``KEY=VALUE`` arguments describe."""
    flags = [
        ("data.root", args.data_dir),
        ("train.device", args.device),
        ("name", args.name),
    ]
    mapped = [f"{key}={_quote(value)}" for key, value in flags if value is not None]
    return mapped + list(args.overrides)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def load(args: argparse.Namespace) -> Config:
    """The config the command line describes."""
    return load_config(args.config, overrides(args))


def add_checkpoint_argument(parser: argparse.ArgumentParser) -> None:
    """``--checkpoint best|last``: which checkpoint of a run a command loads."""
    parser.add_argument(
        "--checkpoint",
        choices=("best", "last"),
        default="best",
        help="best.pt (lowest validation loss) or checkpoint.pt (end of training) (best)",
    )


def add_estimate_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the importance-sampled estimate, shared by ``evaluate`` and ``compare``."""
    parser.add_argument(
        "--particles",
        type=bounded_int(1, PARTICLE_LIMIT),
        default=5000,
        help="importance samples K per datapoint (5000)",
    )
    parser.add_argument(
        "--chunk-size",
        type=bounded_int(1, CHUNK_LIMIT),
        default=DEFAULT_CHUNK_SIZE,
        help=f"particle-datapoint pairs per pass; bounds memory ({DEFAULT_CHUNK_SIZE})",
    )
    parser.add_argument(
        "--limit", type=bounded_int(1), help="evaluate the first N test datapoints only"
    )
