"""Helpers for the tutorials gallery, named by string in ``docs/conf.py`` (a function defined in
``conf.py`` itself would stop Sphinx from caching the configuration)."""

from __future__ import annotations

from typing import Any


def reset_pyro(gallery_conf: dict[str, Any], fname: str) -> None:  # noqa: ARG001
    """Each tutorial starts as a fresh script would: an empty param store and seed 0."""
    import pyro

    pyro.clear_param_store()
    pyro.set_rng_seed(0)
