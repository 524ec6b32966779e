"""The command line's boundary: whatever happens inside a command leaves it as one line on
stderr and an exit status, never a traceback (the traceback is shown behind ``--debug`` or
``PYROVAE_DEBUG=1``).

- a user mistake (``PyrovaeError``, a refused flag, an out-of-range size, an allocation failure,
  an error in a plugin's code): ``pyrovae: error: ...``, status 2;
- Ctrl-C at any moment, start-up and imports included: ``pyrovae: interrupted``, status 130;
- anything else is a bug in pyrovae: ``pyrovae: internal error: ...`` naming the place, status 1.

This module imports the standard library only: ``pyrovae/__init__.py`` loads it before torch so
that Ctrl-C during the imports is caught too.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import sysconfig
import traceback
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from pyrovae.errors import first_line

__all__ = [
    "EXIT_USER_ERROR",
    "EXIT_BUG",
    "EXIT_INTERRUPTED",
    "SEED_LIMIT",
    "UsageError",
    "OneLineParser",
    "bounded_int",
    "started_as_command",
    "guard_startup_interrupt",
    "catch_interrupt",
    "debug_requested",
    "report",
    "user_frame",
]

EXIT_USER_ERROR = 2
EXIT_BUG = 1
EXIT_INTERRUPTED = 130
#: Seeds must fit NumPy's generator: 0 <= seed < 2**32.
SEED_LIMIT = 2**32 - 1

_PACKAGE = Path(__file__).resolve().parent
_LIBRARIES = {
    Path(p).resolve()
    for key in ("stdlib", "platstdlib", "purelib", "platlib")
    if (p := sysconfig.get_paths().get(key))
}


def _user_error_base() -> type[Exception]:
    from pyrovae.errors import PyrovaeError

    return PyrovaeError


class UsageError(Exception):
    """A command line argparse refuses (an unknown flag, a value out of its range)."""


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (no usage block) and raise, so that the
    command line's one boundary reports them (``--help`` still prints and exits 0)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        parsed, extra = super().parse_known_args(args, namespace)
        # argparse drops a value of "--" (``--seed=--``) and stores [] unconverted: refuse it.
        for action in self._actions:
            value = getattr(parsed, action.dest, None)
            if action.type is not None and action.nargs is None and isinstance(value, list):
                raise UsageError(f"argument {'/'.join(action.option_strings)}: expected a value")
        return parsed, extra


def bounded_int(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse ``type``: an integer in ``[low, high]``; otherwise one line naming the limit."""

    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text[:40]!r}") from None
        if value < low or (high is not None and value > high):
            limit = f"at least {low}" if high is None else f"from {low} to {high}"
            shown = text if len(text) <= 40 else f"an integer of {len(text)} digits"
            raise argparse.ArgumentTypeError(f"must be {limit}, got {shown}")
        return value

    parse.__name__ = "integer"
    return parse


# ------------------------------------------------------------------------ Ctrl-C
def started_as_command() -> bool:
    """Whether this process is the ``pyrovae`` command (or ``python -m pyrovae``)."""
    if sys.argv and Path(sys.argv[0]).name == "pyrovae":
        return True
    orig = list(getattr(sys, "orig_argv", []))
    return any(
        a == "-m" and b in ("pyrovae", "pyrovae.cli") for a, b in zip(orig, orig[1:], strict=False)
    )


def _exit_interrupted(signum: int, frame: object) -> None:
    os.write(2, b"pyrovae: interrupted\n")
    os._exit(EXIT_INTERRUPTED)


def guard_startup_interrupt() -> None:
    """In the ``pyrovae`` command only: Ctrl-C exits at once with one line and status 130 until
    ``catch_interrupt`` takes over (nothing is written during start-up, so nothing is cut)."""
    if started_as_command() and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _exit_interrupted)


def catch_interrupt() -> None:
    """From here on Ctrl-C raises ``KeyboardInterrupt`` (so writes in progress clean up), which
    the command line reports in one line."""
    if signal.getsignal(signal.SIGINT) is _exit_interrupted:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def guard_shutdown_interrupt() -> None:
    """Once a command has returned, Ctrl-C during the interpreter's exit is one line too."""
    if started_as_command():
        signal.signal(signal.SIGINT, _exit_interrupted)


# ------------------------------------------------------------------------ reports
def debug_requested(argv: list[str] | None) -> bool:
    """``--debug`` on the command line or ``PYROVAE_DEBUG`` set to anything but ``0``/empty."""
    args = sys.argv[1:] if argv is None else argv
    return "--debug" in args or os.environ.get("PYROVAE_DEBUG", "0") not in ("", "0")


def user_frame(tb: TracebackType | None) -> tuple[str, int] | None:
    """The deepest frame of ``tb`` in neither pyrovae, the standard library nor an installed
    package: the user's code (a plugin), or None."""
    found = None
    for frame, line in traceback.walk_tb(tb):
        name = frame.f_code.co_filename
        if name.startswith("<"):
            continue
        path = Path(name).resolve()
        if path.is_relative_to(_PACKAGE) or any(path.is_relative_to(p) for p in _LIBRARIES):
            continue
        found = (name, line)
    return found


def _deepest_frame(tb: TracebackType | None) -> tuple[str, int] | None:
    frames = [(f.f_code.co_filename, line) for f, line in traceback.walk_tb(tb)]
    return frames[-1] if frames else None


_ALLOCATION = ("can't allocate memory", "out of memory", "cannot allocate memory", "bad_alloc")
_SIZE = (
    "overflow when unpacking long",
    "integer multiplication overflow",
    "negative dimension",
    "too many elements",
)


def _size_problem(error: BaseException) -> str | None:
    """One line for an allocation failure or a size beyond what torch can index, else None."""
    text = str(error).lower()
    if isinstance(error, MemoryError) or any(s in text for s in _ALLOCATION):
        detail = first_line(error)
        if "you tried to allocate" in text:
            detail = "tried to allocate" + first_line(error).split("tried to allocate", 1)[1]
            detail = detail.split(". Error code")[0]
        return (
            f"out of memory ({detail}); lower the sizes (model.latent_dim, hidden layers,"
            " train.batch_size, --count, --particles, --chunk-size)"
        )
    if isinstance(error, OverflowError | RuntimeError | ValueError) and any(
        s in text for s in _SIZE
    ):
        return f"a size is out of range ({first_line(error)}); lower it"
    return None


def report(error: BaseException, debug: bool = False) -> int:
    """Print ``error`` as one line on stderr (after the traceback with ``debug``); the status."""
    if isinstance(error, KeyboardInterrupt):
        if started_as_command():
            # Leave at once: a second Ctrl-C, or one still pending while the interpreter shuts
            # down (it puts the default handler back), would end the process by the signal.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            sys.stdout.flush()
            _exit_interrupted(signal.SIGINT, None)
        print("pyrovae: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    if isinstance(error, BrokenPipeError):  # the reader went away (``pyrovae ... | head``)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return 0
    if debug:
        traceback.print_exception(error)
    if isinstance(error, _user_error_base() | UsageError):
        print(f"pyrovae: error: {first_line(error)}", file=sys.stderr)
        return EXIT_USER_ERROR
    problem = _size_problem(error)
    if problem is not None:
        print(f"pyrovae: error: {problem}", file=sys.stderr)
        return EXIT_USER_ERROR
    hint = "" if debug else "; rerun with --debug for the traceback"
    user = user_frame(error.__traceback__)
    if isinstance(error, SystemExit):
        code = error.code
        where = f" at {user[0]}:{user[1]}" if user else ""
        print(
            f"pyrovae: error: sys.exit({code!r}) was called{where} before the command finished",
            file=sys.stderr,
        )
        return EXIT_USER_ERROR
    if user is not None:  # the user's code (a plugin's component) failed
        print(
            f"pyrovae: error: {user[0]}:{user[1]}: {type(error).__name__}: {first_line(error)}"
            f"{hint}",
            file=sys.stderr,
        )
        return EXIT_USER_ERROR
    place = _deepest_frame(error.__traceback__)
    where = f" at {place[0]}:{place[1]}" if place else ""
    print(
        f"pyrovae: internal error: {type(error).__name__}: {first_line(error)}{where}{hint}",
        file=sys.stderr,
    )
    return EXIT_BUG
