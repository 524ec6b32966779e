"""Programs: whole model/guide pairs, chosen by ``model.program`` (``vae``, ``two_layer``, or a
user's own ``Program`` subclass), and the one function that builds the chosen one."""

from __future__ import annotations

from typing import Any

import torch

from pyrovae.config import ModelConfig
from pyrovae.errors import ConfigError
from pyrovae.registry import build

__all__ = ["check_program", "build_program"]


def check_program(program: Any, what: str = "model") -> None:
    """Refuse, in one line, an object that is not a model/guide pair pyrovae can drive."""
    missing = [name for name in ("model", "guide") if not callable(getattr(program, name, None))]
    if not isinstance(program, torch.nn.Module) or missing:
        lacks = f"no {' or '.join(missing)} method" if missing else "not a torch.nn.Module"
        raise ConfigError(
            f"{what}: {type(program).__name__} is {lacks}; pass a pyrovae.Program (a"
            " PyroModule with model(x) and guide(x))"
        )


def build_program(
    config: ModelConfig, x_shape: tuple[int, ...], num_classes: int | None = None
) -> torch.nn.Module:
    """Build the program named by ``config.program`` for data of shape ``x_shape`` (with
    ``num_classes`` classes of labels, None if the data has none).

    A program reads the other ``model`` keys it lists in ``config_sections`` (the ``vae``
    program reads them all); a config that sets a key its program does not read is refused
    when it is read (``Config.from_dict``), never silently ignored.
    """
    name = config.program.name
    program = build(
        "program",
        name,
        config.program.options,
        "model.program",
        model_config=config,
        x_shape=tuple(x_shape),
        latent_dim=config.latent_dim,
        num_classes=num_classes,
    )
    check_program(program, "model.program")
    return program
