"""Priors p(z): each is a module whose ``forward()`` returns a distribution over ``z``.

The distribution has event shape ``(latent_dim,)`` and empty batch shape; the model's data plate
broadcasts it over the batch.
"""

from __future__ import annotations

import torch
from pyro import distributions as dist
from pyro.distributions import constraints
from pyro.nn import PyroParam

from pyrovae.components.base import Prior
from pyrovae.components.independent_normal import IndependentNormal
from pyrovae.components.priors.diagonal_mixture import DiagonalNormalMixture
from pyrovae.registry import register

__all__ = ["Prior", "StandardNormal", "LearnedNormal", "MixturePrior"]


@register("prior", "standard_normal")
class StandardNormal(Prior):
    """N(0, I): the classic VAE prior."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__(latent_dim)
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))

    def forward(self) -> dist.TorchDistribution:
        return IndependentNormal(self.loc, self.scale)


@register("prior", "learned_normal")
class LearnedNormal(Prior):
    """N(m, diag(s^2)) with a learned mean and scale, initialised at N(0, I)."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__(latent_dim)
        self.loc = PyroParam(torch.zeros(latent_dim))
        self.scale = PyroParam(torch.ones(latent_dim), constraint=constraints.positive)

    def forward(self) -> dist.TorchDistribution:
        return IndependentNormal(self.loc, self.scale)


@register("prior", "mixture")
class MixturePrior(Prior):
    """A learned mixture of ``components`` diagonal Gaussians, scored by matrix products
    (``DiagonalNormalMixture``: the density of ``MixtureSameFamily``, without a tensor of z
    against every component).

    Means start at N(0, ``init_spread``^2) draws so the components differ, scales at one,
    weights equal; ``learn_weights = false`` keeps the weights equal.
    """

    def __init__(
        self,
        latent_dim: int,
        components: int = 10,
        init_spread: float = 1.0,
        learn_weights: bool = True,
    ) -> None:
        super().__init__(latent_dim)
        if components < 1:
            from pyrovae.errors import ConfigError

            raise ConfigError(f"mixture: components must be >= 1, got {components}")
        if init_spread < 0:
            from pyrovae.errors import ConfigError

            raise ConfigError(f"mixture: init_spread must be >= 0, got {init_spread}")
        self.loc = PyroParam(init_spread * torch.randn(components, latent_dim))
        self.scale = PyroParam(torch.ones(components, latent_dim), constraint=constraints.positive)
        logits = torch.zeros(components)
        if learn_weights:
            self.logits = PyroParam(logits)
        else:
            self.register_buffer("logits", logits)

    def forward(self) -> dist.TorchDistribution:
        return DiagonalNormalMixture(self.logits, self.loc, self.scale)
