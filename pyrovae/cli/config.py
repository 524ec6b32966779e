"""``pyrovae config``: the resolved config, or the reference of every key and component
(``config_reference``, also the documentation's configuration page)."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import typing

from pyrovae.cli.arguments import add_common, add_config_arguments, load
from pyrovae.config import Component, Config
from pyrovae.registry import builtin, component_options, lookup

__all__ = ["add_parser", "command", "config_reference"]


def config_reference() -> str:
    """Markdown tables: one for the config's keys, one for every built-in component."""
    lines = ["| key | default | meaning |", "|---|---|---|"]
    lines += _section_rows(Config, "")
    lines += ["", "| kind | name | options (default) | description |", "|---|---|---|---|"]
    for kind in ("dataset", "prior", "guide", "likelihood", "network", "estimator", "schedule"):
        for name in builtin(kind):  # user plugins are not part of pyrovae's reference
            lines.append(f"| {kind} | `{name}` | {_options(kind, name)} | {_summary(kind, name)} |")
    return "\n".join(lines)


def _section_rows(cls: type, prefix: str) -> list[str]:
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint) and hint is not Component:
            rows += _section_rows(hint, f"{prefix}{f.name}.")
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_text = f.metadata.get("help", "")
        kind = f.metadata.get("kind")
        if isinstance(default, Component):
            shown = f"`{default.name}`"
        else:
            shown = f"`{default!r}`".replace("'", '"')
        if typing.get_origin(hint) is typing.Literal:
            help_text += "; one of " + ", ".join(f"`{a}`" for a in typing.get_args(hint))
        if kind:
            help_text += f"; a registered {kind} (below)"
        rows.append(f"| `{prefix}{f.name}` | {shown} | {_cell(help_text)} |")
    return rows


def _options(kind: str, name: str) -> str:
    if kind == "dataset":
        return "the `data.*` keys"
    params = component_options(kind, name)
    if not params:
        return "none"
    parts = []
    for param in params.values():
        default = param.default
        if isinstance(default, tuple):
            default = list(default)
        parts.append(f"`{param.name}` ({default!r})".replace("'", '"'))
    return ", ".join(parts)


def _summary(kind: str, name: str) -> str:
    doc = inspect.getdoc(lookup(kind, name)) or ""
    return _cell(" ".join(doc.split("\n\n")[0].split()))


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|")


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``pyrovae config``."""
    parser = commands.add_parser("config", help="print the resolved config or the reference")
    add_common(parser)
    add_config_arguments(parser)
    parser.add_argument("--reference", action="store_true", help="print every key as Markdown")
    parser.set_defaults(handler=command)
    return parser


def command(args: argparse.Namespace) -> int:
    if args.reference:
        print(config_reference())
    else:
        print(load(args).to_toml(), end="")
    return 0
