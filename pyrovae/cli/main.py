"""The ``pyrovae`` command: ``train``, ``sample``, ``config``, ``evaluate``, ``gradients`` and
``compare``.

Flags only map onto the config (``--data-dir`` is ``data.root``, ``--device`` is
``train.device``); any other key is set with ``KEY=VALUE`` arguments. A user mistake prints one
line, ``pyrovae: error: ...``, and exits with status 2; Ctrl-C prints ``pyrovae: interrupted``
and exits 130; the rules are in ``pyrovae.boundary`` (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import traceback
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from pyrovae import boundary
from pyrovae.boundary import EXIT_USER_ERROR, SEED_LIMIT, OneLineParser, bounded_int
from pyrovae.errors import PyrovaeError

__all__ = ["main", "build_parser", "load_plugins", "EXIT_USER_ERROR", "SAMPLE_LIMIT"]

#: The most samples ``pyrovae sample`` draws into one picture.
SAMPLE_LIMIT = 10_000
#: What ``pyrovae sample --out`` may write (PIL picks the format from the extension).
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _common(parser: argparse.ArgumentParser) -> None:
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
    from pyrovae.runs.directory import BEST_FILE, CHECKPOINT_FILE, check_output_file, load_run
    from pyrovae.runs.pictures import sample, save_grid

    given = None
    if args.out is not None:  # checked before the run is loaded, "" included
        given = check_output_file(args.out, Path(), PICTURE_SUFFIXES, "--out")
    _, program, _ = load_run(args.run_dir)  # the run directory exists from here on
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
    parser = OneLineParser(
        prog="pyrovae", description="Variational auto-encoders as Pyro programs."
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
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
    sample.add_argument(
        "--count",
        type=bounded_int(1, SAMPLE_LIMIT),
        default=64,
        help=f"number of samples, at most {SAMPLE_LIMIT} (64)",
    )
    sample.add_argument(
        "--seed", type=bounded_int(0, SEED_LIMIT), default=0, help="random seed (0)"
    )
    sample.add_argument(
        "--out", metavar="FILE", help="PNG or JPEG to write (RUN_DIR/samples-new.png)"
    )
    sample.set_defaults(handler=cmd_sample)

    config = commands.add_parser("config", help="print the resolved config or the reference")
    _common(config)
    _config_arguments(config)
    config.add_argument("--reference", action="store_true", help="print every key as Markdown")
    config.set_defaults(handler=cmd_config)

    _evaluation_parsers(commands)
    return parser


def load_plugins(plugins: Sequence[str]) -> None:
    """Import user modules (dotted names or ``.py`` paths) so their ``@register`` calls run.

    A plugin that fails to load (a syntax error, an exception, a failed import, a duplicate
    registration, a call of ``sys.exit``) is a one-line ``PyrovaeError`` naming its file and
    line; the original error is its ``__cause__`` (shown with ``--debug``)."""
    for plugin in plugins:
        if not plugin.strip():
            raise PyrovaeError("--plugin: empty name; pass a module name or a .py file")
        if plugin.endswith(".py"):
            path = Path(plugin)
            if not path.is_file():
                raise PyrovaeError(f"--plugin: file {plugin!r} does not exist")
            name = path.stem
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None:
                raise PyrovaeError(f"--plugin: cannot load {plugin!r} as a Python module")
            module = importlib.util.module_from_spec(spec)
            previous = sys.modules.get(name)
            sys.modules[name] = module
            try:
                spec.loader.exec_module(module)
            except (Exception, SystemExit) as error:
                if previous is None:
                    sys.modules.pop(name, None)
                else:
                    sys.modules[name] = previous
                raise _plugin_error(plugin, str(path.resolve()), error) from error
        else:
            try:
                spec = importlib.util.find_spec(plugin)
            except (ImportError, ValueError) as error:
                raise PyrovaeError(f"--plugin: cannot import {plugin!r}: {error}") from None
            if spec is None:
                raise PyrovaeError(f"--plugin: cannot import {plugin!r}: no module of that name")
            try:
                importlib.import_module(plugin)
            except (Exception, SystemExit) as error:
                raise _plugin_error(plugin, spec.origin or "", error) from error


def _plugin_error(plugin: str, origin: str, error: BaseException) -> PyrovaeError:
    """One line naming the plugin's file and line where ``error`` arose."""
    if isinstance(error, SyntaxError) and error.filename:
        where = f"{error.filename}:{error.lineno}"
        return PyrovaeError(f"--plugin {where}: syntax error: {error.msg}")
    frames = [(f.f_code.co_filename, n) for f, n in traceback.walk_tb(error.__traceback__)]
    own = [
        (file, n) for file, n in frames if origin and Path(file).resolve() == Path(origin).resolve()
    ]
    user = own[-1] if own else boundary.user_frame(error.__traceback__)
    where = f"{user[0]}:{user[1]}" if user else plugin
    if isinstance(error, SystemExit):
        return PyrovaeError(
            f"--plugin {where}: called sys.exit({error.code!r}) while loading; a plugin only"
            " registers components"
        )
    return PyrovaeError(f"--plugin {where}: {type(error).__name__}: {boundary.first_line(error)}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pyrovae`` command; returns the exit status (see ``boundary``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = boundary.debug_requested(argv)
    boundary.catch_interrupt()
    try:
        try:
            parser = build_parser()
            args, extra = parser.parse_known_args(argv)
        except SystemExit as done:  # --help and --version print and stop here, by design
            return done.code if isinstance(done.code, int) else 0
        # KEY=VALUE overrides may come after options (``--out DIR train.epochs=3``).
        unknown = [item for item in extra if "=" not in item or item.startswith("-")]
        if unknown or (extra and not hasattr(args, "overrides")):
            raise boundary.UsageError(f"unrecognized arguments: {' '.join(unknown or extra)}")
        if extra:
            args.overrides = [*args.overrides, *extra]
        handler: Callable[[argparse.Namespace], int] = args.handler
        # Warnings are held back until the command succeeds: a refusal is one line.
        with warnings.catch_warnings(record=True) as held:
            load_plugins(args.plugin)
            status = handler(args)
        for warning in held:
            warnings.showwarning(
                warning.message, warning.category, warning.filename, warning.lineno
            )
        return status
    except (Exception, SystemExit, KeyboardInterrupt) as error:
        return boundary.report(error, debug)
    finally:
        boundary.guard_shutdown_interrupt()


if __name__ == "__main__":
    sys.exit(main())
