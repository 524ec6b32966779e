"""``LeanIndependent``: ``Independent`` that Pyro's plates do not copy when it already fits.

Pyro's ``plate`` expands every sample site's distribution to the plate's batch shape, even one
whose batch shape is that already: a new distribution object and a view of every parameter
tensor, each view a node that the backward pass walks. A distribution made per datapoint by a
network (q(z|x), p(x|z)) always fits its plate, so for it ``expand`` to its own batch shape
returns the distribution itself, which is what an expand to the same shape means: distributions
are immutable. Any other shape expands as ``Independent`` does.
"""

from __future__ import annotations

import torch
from pyro import distributions as dist

__all__ = ["LeanIndependent"]


class LeanIndependent(dist.Independent):
    """``Independent(base, n)`` whose ``expand`` to its own batch shape is itself."""

    def expand(self, batch_shape: torch.Size, _instance=None) -> dist.Independent:
        if _instance is None and torch.Size(batch_shape) == self.batch_shape:
            return self
        return self._expanded(torch.Size(batch_shape), _instance)

    def _expanded(self, batch_shape: torch.Size, _instance=None) -> dist.Independent:
        """This distribution at another batch shape: ``Independent``'s ``expand``; a subclass
        with a constructor of its own overrides this hook, not ``expand``."""
        return super().expand(batch_shape, _instance)
