"""The ``pyrovae`` command: ``main`` parses the command line and runs one command."""

from pyrovae.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
