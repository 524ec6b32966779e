"""Priors p(z): each is a module whose ``forward()`` returns a distribution over ``z``.

The distribution has event shape ``(latent_dim,)`` and empty batch shape; the model's data plate
broadcasts it over the batch.
"""

from __future__ import annotations

import torch
from pyro import distributions as dist
from pyro.distributions import constraints
from pyro.nn import PyroModule, PyroParam

from .registry import register

__all__ = ["Prior", "StandardNormal", "LearnedNormal"]


class Prior(PyroModule):
    """Base class: subclass it and implement ``forward() -> Distribution`` (event dim 1)."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim

    def forward(self) -> dist.TorchDistribution:
        raise NotImplementedError


@register("prior", "standard_normal")
class StandardNormal(Prior):
    """N(0, I): the classic VAE prior."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__(latent_dim)
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))

    def forward(self) -> dist.TorchDistribution:
        return dist.Normal(self.loc, self.scale).to_event(1)


@register("prior", "learned_normal")
class LearnedNormal(Prior):
    """N(m, diag(s^2)) with a learned mean and scale, initialised at N(0, I)."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__(latent_dim)
        self.loc = PyroParam(torch.zeros(latent_dim))
        self.scale = PyroParam(torch.ones(latent_dim), constraint=constraints.positive)

    def forward(self) -> dist.TorchDistribution:
        return dist.Normal(self.loc, self.scale).to_event(1)
