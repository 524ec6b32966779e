"""The ``pyrovae`` command: ``train``, ``sample``, ``config``, ``evaluate``, ``gradients`` and
``compare``.

Flags only map onto the config (``--data-dir`` is ``data.root``, ``--device`` is
``train.device``); any other key is set with ``KEY=VALUE`` arguments. A user mistake prints one
line, ``pyrovae: error: ...``, and exits with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from pyrovae.errors import PyrovaeError

__all__ = ["main", "build_parser"]

EXIT_USER_ERROR = 2


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE_OR_FILE",
        help="import a module or .py file that registers components (repeatable)",
    )


def _config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="TOML config file (default: defaults)")
    parser.add_argument("--data-dir", metavar="DIR", help="dataset folder (sets data.root)")
    parser.add_argument("--device", help="cpu, cuda, cuda:N or auto (sets train.device)")
    parser.add_argument("--name", help="run name (sets name)")
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="config overrides: train.epochs=5"
    )


def _overrides(args: argparse.Namespace) -> list[str]:
    flags = [
        ("data.root", args.data_dir),
        ("train.device", args.device),
        ("name", args.name),
    ]
    mapped = [f"{key}={_quote(value)}" for key, value in flags if value is not None]
    return mapped + list(args.overrides)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _load(args: argparse.Namespace):
    from pyrovae.config import load_config

    return load_config(args.config, _overrides(args))


def cmd_train(args: argparse.Namespace) -> int:
    from pyrovae.training.distributed import is_main_process
    from pyrovae.training.train import train

    if args.resume is not None:
        from pyrovae.training.resume import resume_config

        if args.overwrite:
            raise PyrovaeError("--resume goes on with a run, --overwrite replaces it: choose one")
        config = resume_config(args.resume, args.config, _overrides(args))
    else:
        config = _load(args)
    run = train(
        config, out=args.out, quiet=args.quiet, overwrite=args.overwrite, resume=args.resume
    )
    if not is_main_process():  # under torchrun, rank 0 alone reports
        return 0
    last = run.metrics[-1]
    skipped = sum(m.get("skipped_steps", 0) for m in run.metrics)
    note = f" ({skipped} steps skipped: non-finite loss or gradient)" if skipped else ""
    print(
        f"trained {run.config.name}: valid_loss {last['valid_loss']:.3f} nats after"
        f" {last['epoch']} epochs{note}; results in {run.directory}"
    )
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    import torch

    from pyrovae.param_store import own_param_store
    from pyrovae.runs.directory import load_run
    from pyrovae.runs.pictures import sample, save_grid

    if args.count < 1:
        raise PyrovaeError(f"--count must be at least 1, got {args.count}")
    _, program, _ = load_run(args.run_dir)
    torch.manual_seed(args.seed)
    out = Path(args.out) if args.out else Path(args.run_dir) / "samples-new.png"
    with own_param_store():
        samples = sample(program, args.count)
    if not save_grid(samples, out):
        torch.save(samples, out.with_suffix(".pt"))
        out = out.with_suffix(".pt")
    print(f"wrote {args.count} samples to {out}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from pyrovae.cli.config_reference import config_reference

    if args.reference:
        print(config_reference())
    else:
        print(_load(args).to_toml(), end="")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from pyrovae.evaluation.compare import command

    return command(args, _load(args))


def _evaluation_parsers(commands: argparse._SubParsersAction) -> None:
    """``evaluate``, ``gradients`` and ``compare``: parsers and handlers in their own modules."""
    from pyrovae.evaluation.compare import add_parser as compare_parser
    from pyrovae.evaluation.evaluate import add_parser as evaluate_parser
    from pyrovae.evaluation.gradients import add_parser as gradients_parser

    _common(evaluate_parser(commands))
    _common(gradients_parser(commands))
    parser = compare_parser(commands)
    _common(parser)
    _config_arguments(parser)
    parser.set_defaults(handler=cmd_compare)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pyrovae", description="Variational auto-encoders as Pyro programs."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train a VAE and write a run directory")
    _common(train)
    _config_arguments(train)
    train.add_argument("--out", metavar="DIR", help="run directory (default: runs/<name>)")
    train.add_argument("--overwrite", action="store_true", help="replace a run in --out")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="go on with the run in RUN_DIR from its last checkpoint (train.epochs=N extends it)",
    )
    train.set_defaults(handler=cmd_train)

    sample = commands.add_parser("sample", help="write a grid of new samples from a run")
    _common(sample)
    sample.add_argument("run_dir", metavar="RUN_DIR")
    sample.add_argument("--count", type=int, default=64, help="number of samples (64)")
    sample.add_argument("--seed", type=int, default=0, help="random seed (0)")
    sample.add_argument("--out", metavar="FILE", help="PNG to write (RUN_DIR/samples-new.png)")
    sample.set_defaults(handler=cmd_sample)

    config = commands.add_parser("config", help="print the resolved config or the reference")
    _common(config)
    _config_arguments(config)
    config.add_argument("--reference", action="store_true", help="print every key as Markdown")
    config.set_defaults(handler=cmd_config)

    _evaluation_parsers(commands)
    return parser


def load_plugins(plugins: Sequence[str]) -> None:
    """Import user modules (dotted names or ``.py`` paths) so their ``@register`` calls run."""
    for plugin in plugins:
        if plugin.endswith(".py"):
            path = Path(plugin)
            if not path.is_file():
                raise PyrovaeError(f"--plugin: file {plugin!r} does not exist")
            spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
            sys.modules[path.stem] = module
            spec.loader.exec_module(module)  # type: ignore[union-attr]
        else:
            try:
                importlib.import_module(plugin)
            except ModuleNotFoundError as error:
                raise PyrovaeError(f"--plugin: cannot import {plugin!r}: {error}") from None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pyrovae`` command; returns the exit status."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # KEY=VALUE overrides may come after options (``--out DIR train.epochs=3``).
    unknown = [item for item in extra if "=" not in item or item.startswith("-")]
    if unknown or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(unknown or extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        load_plugins(args.plugin)
        return handler(args)
    except PyrovaeError as error:
        print(f"pyrovae: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("pyrovae: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
