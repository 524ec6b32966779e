"""Pyro's global param store, left as pyrovae found it: pyrovae's own commands run in a scope."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pyro

__all__ = ["own_param_store"]


@contextmanager
def own_param_store() -> Iterator[None]:
    """Pyro's param store as pyrovae found it, before and after: what pyrovae's own calls
    register there (its programs' parameters) is gone when they return."""
    with pyro.get_param_store().scope():
        yield
