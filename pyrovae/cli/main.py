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
from pyrovae.boundary import EXIT_USER_ERROR, OneLineParser
from pyrovae.cli import compare, config, evaluate, gradients, sample, train
from pyrovae.errors import PyrovaeError

__all__ = ["main", "build_parser", "load_plugins", "EXIT_USER_ERROR", "COMMANDS"]

#: The commands, each a module with ``add_parser(commands)`` (its handler set as a default).
COMMANDS = (train, sample, config, evaluate, gradients, compare)


def build_parser() -> argparse.ArgumentParser:
    """The ``pyrovae`` parser: one sub-parser per module of ``COMMANDS``."""
    parser = OneLineParser(
        prog="pyrovae", description="Variational auto-encoders as Pyro programs."
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(commands)
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
