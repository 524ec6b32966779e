"""The VampPrior (Tomczak and Welling 2018, "VAE with a VampPrior", AISTATS).

p(z) = (1/K) sum_k q(z | u_k): the variational posterior itself, evaluated at K learned
pseudo-inputs u_k. The prior therefore calls the VAE's encoder and variational family; it keeps
references to them outside its module tree, so the VAE alone owns (saves, moves, optimizes) them
and the state dict holds each parameter once.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from pyro import distributions as dist
from pyro.nn import PyroParam
from torch import nn

from pyrovae.components.base import Prior, VariationalFamily
from pyrovae.components.priors.diagonal_mixture import DiagonalNormalMixture
from pyrovae.errors import ConfigError
from pyrovae.registry import register

__all__ = ["VampPrior"]


class _BroadcastMixture(dist.MixtureSameFamily):
    """``MixtureSameFamily`` that expands z over the components before scoring it.

    torch only unsqueezes z to ``(..., 1, D)`` and lets broadcasting do the rest; a flow
    conditioned on one context per component needs z at ``(..., K, D)`` explicitly.
    """

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        x = super()._pad(x)
        event = self.event_shape
        k = self.mixture_distribution.logits.shape[-1]
        return x.expand(x.shape[: x.dim() - len(event) - 1] + (k,) + event)


@register("prior", "vamp")
class VampPrior(Prior):
    """VampPrior (Tomczak and Welling 2018): an equal-weight mixture of the guide's posteriors
    q(z|u_k) at ``components`` learned pseudo-inputs u_k.

    Pseudo-inputs start at N(``init_mean``, ``init_std``^2) per pixel and, with ``clamp``, pass
    through hardtanh to [0, 1] as in the paper (for image data in [0, 1]). Needs a guide that
    scores any z (not ``planar``). Scoring z costs one encoder pass over the K pseudo-inputs;
    with a diagonal-normal guide the mixture is scored by matrix products
    (``DiagonalNormalMixture``), with any other guide by broadcasting z over the components.
    """

    def __init__(
        self,
        latent_dim: int,
        x_shape: tuple[int, ...],
        encoder: nn.Module,
        guide: VariationalFamily,
        components: int = 500,
        init_mean: float = 0.05,
        init_std: float = 0.01,
        clamp: bool = True,
    ) -> None:
        super().__init__(latent_dim)
        if components < 1:
            raise ConfigError(f"vamp: components must be >= 1, got {components}")
        if init_std < 0:
            raise ConfigError(f"vamp: init_std must be >= 0, got {init_std}")
        if not guide.scores_any_point:
            raise ConfigError(
                "model.prior: 'vamp' scores z under q(z|u) at any z, but the"
                f" {type(guide).__name__} guide has no inverse and scores only its own samples;"
                " choose guide diagonal_normal, full_normal or iaf, or another prior"
            )
        self.pseudo_inputs = PyroParam(init_mean + init_std * torch.randn(components, *x_shape))
        self.clamp = clamp
        # A plain tuple, not submodules: the VAE registers the encoder and the guide family.
        self._posterior = (encoder, guide)

    def inputs(self) -> torch.Tensor:
        """The pseudo-inputs as the encoder sees them: ``(components, *x_shape)``."""
        u = self.pseudo_inputs
        return F.hardtanh(u, 0.0, 1.0) if self.clamp else u

    def forward(self) -> dist.TorchDistribution:
        encoder, guide = self._posterior
        components = guide(encoder(self.inputs()))  # batch shape (K,)
        normal = _diagonal_normal(components)
        if normal is not None:  # scored by matrix products, no (..., K, D) tensor
            return DiagonalNormalMixture(normal.loc.new_zeros(normal.loc.shape[:1]), *normal)
        weights = dist.Categorical(logits=self.pseudo_inputs.new_zeros(components.batch_shape))
        return _BroadcastMixture(weights, components)


class _Normal(NamedTuple):
    loc: torch.Tensor
    scale: torch.Tensor


def _diagonal_normal(components: dist.TorchDistribution) -> _Normal | None:
    """The means and scales of ``components`` if they are diagonal normals over vectors
    (``Normal(loc, scale).to_event(1)`` with batch shape ``(K,)``), else None."""
    if not isinstance(components, dist.Independent) or components.reinterpreted_batch_ndims != 1:
        return None
    base = components.base_dist
    if not isinstance(base, dist.Normal) or base.loc.dim() != 2:
        return None
    loc, scale = torch.broadcast_tensors(base.loc, base.scale)
    return _Normal(loc, scale)
