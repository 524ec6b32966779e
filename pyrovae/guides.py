"""Variational families q(z|x): each maps the encoder's output to a distribution over ``z``.

A family declares ``param_shape``, the shape of the encoder output it needs; pyrovae builds the
encoder network to produce exactly that.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pyro import distributions as dist
from pyro.nn import PyroModule

from .registry import register

__all__ = ["VariationalFamily", "DiagonalNormal"]


class VariationalFamily(PyroModule):
    """Base class: set ``param_shape`` and implement ``forward(params) -> Distribution``."""

    param_shape: tuple[int, ...]

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim

    def forward(self, params: torch.Tensor) -> dist.TorchDistribution:
        raise NotImplementedError


@register("guide", "diagonal_normal")
class DiagonalNormal(VariationalFamily):
    """N(mu(x), diag(sigma(x)^2)), sigma = softplus(raw) + ``min_scale``: mean-field Gaussian."""

    def __init__(self, latent_dim: int, min_scale: float = 1e-4) -> None:
        super().__init__(latent_dim)
        self.param_shape = (2 * latent_dim,)
        self.min_scale = min_scale

    def forward(self, params: torch.Tensor) -> dist.TorchDistribution:
        loc, raw_scale = params.split(self.latent_dim, dim=-1)
        return dist.Normal(loc, F.softplus(raw_scale) + self.min_scale).to_event(1)
