"""Variational families q(z|x): each maps the encoder's output to a distribution over ``z``.

A family declares ``param_shape``, the shape of the encoder output it needs; pyrovae builds the
encoder network to produce exactly that.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pyro import distributions as dist
from torch.distributions.utils import vec_to_tril_matrix

from pyrovae.components.base import VariationalFamily
from pyrovae.components.guides import kl  # noqa: F401  (registers KL(MVN || diagonal normal) for TraceMeanField_ELBO)
from pyrovae.components.independent_normal import IndependentNormal
from pyrovae.registry import register

__all__ = ["VariationalFamily", "DiagonalNormal", "FullNormal"]


@register("guide", "diagonal_normal")
class DiagonalNormal(VariationalFamily):
    """N(mu(x), diag(sigma(x)^2)), sigma = softplus(raw) + ``min_scale``: mean-field Gaussian."""

    def __init__(self, latent_dim: int, min_scale: float = 1e-4) -> None:
        super().__init__(latent_dim)
        self.param_shape = (2 * latent_dim,)
        self.min_scale = min_scale

    def forward(self, params: torch.Tensor) -> dist.TorchDistribution:
        loc, raw_scale = params.split(self.latent_dim, dim=-1)
        scale = F.softplus(raw_scale) + self.min_scale
        return IndependentNormal(loc, scale)  # per datapoint: fits its plate


@register("guide", "full_normal")
class FullNormal(VariationalFamily):
    """N(mu(x), L(x) L(x)^T): a full-covariance Gaussian whose Cholesky factor L comes from the
    encoder (diagonal softplus(raw) + ``min_scale``, free strictly-lower part).

    The encoder outputs D means, D raw diagonal entries and D (D - 1) / 2 off-diagonal entries.
    """

    def __init__(self, latent_dim: int, min_scale: float = 1e-4) -> None:
        super().__init__(latent_dim)
        self.param_shape = (2 * latent_dim + latent_dim * (latent_dim - 1) // 2,)
        self.min_scale = min_scale

    def forward(self, params: torch.Tensor) -> dist.TorchDistribution:
        d = self.latent_dim
        loc, raw_diag, lower = params.split([d, d, d * (d - 1) // 2], dim=-1)
        scale_tril = vec_to_tril_matrix(lower, diag=-1) + torch.diag_embed(
            F.softplus(raw_diag) + self.min_scale
        )
        return dist.MultivariateNormal(loc, scale_tril=scale_tril)
