"""Normalizing-flow guides: a diagonal normal q0(z|x) pushed through transforms conditioned on a
context vector h(x) that the encoder outputs beside the normal's parameters.

Built from Pyro's conditional transforms (``pyro.distributions.transforms``): each step is a
``ConditionalTransformModule`` (a registered submodule, so trained and saved with the VAE) and
``forward`` conditions every step on h(x), returning a ``TransformedDistribution``. Samples are
scored from the transforms' cache, so these families are fully reparameterized and work with
vectorized particles: a leading particle dimension broadcasts against the context.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pyro import distributions as dist
from pyro.distributions import transforms as T
from torch import nn

from pyrovae.components.base import VariationalFamily
from pyrovae.errors import ConfigError
from pyrovae.registry import register

__all__ = ["FlowFamily", "IAF", "Planar"]


class FlowFamily(VariationalFamily):
    """Base of the flow guides: splits the encoder's output into (loc, raw scale, context)."""

    def __init__(self, latent_dim: int, context_dim: int, min_scale: float) -> None:
        super().__init__(latent_dim)
        if context_dim < 1:
            raise ConfigError(f"{self._name}: context_dim must be >= 1, got {context_dim}")
        self.context_dim = context_dim
        self.min_scale = min_scale
        self.param_shape = (2 * latent_dim + context_dim,)
        self.flows = nn.ModuleList()

    @property
    def _name(self) -> str:
        return type(self).__name__.lower()

    def _parts(self, params: torch.Tensor) -> tuple[dist.TorchDistribution, list[T.Transform]]:
        d = self.latent_dim
        loc, raw_scale, context = params.split([d, d, self.context_dim], dim=-1)
        base = dist.Normal(loc, F.softplus(raw_scale) + self.min_scale).to_event(1)
        return base, [step.condition(context) for step in self.flows]

    def forward(self, params: torch.Tensor) -> dist.TorchDistribution:
        base, transforms = self._parts(params)
        return dist.TransformedDistribution(base, transforms)

    def point(self, params: torch.Tensor) -> torch.Tensor:
        """The base normal's mean pushed through the flow (a flow's mean has no closed form)."""
        base, transforms = self._parts(params)
        z = base.mean
        for transform in transforms:
            z = transform(z)
        return z


def _hidden(hidden: tuple[int, ...], name: str) -> list[int] | None:
    if any(h < 1 for h in hidden):
        raise ConfigError(f"{name}: hidden sizes must be positive, got {list(hidden)}")
    return list(hidden) or None  # empty: Pyro's default for the transform


def _steps(steps: int, name: str) -> int:
    if steps < 1:
        raise ConfigError(f"{name}: steps must be >= 1, got {steps}")
    return steps


@register("guide", "iaf")
class IAF(FlowFamily):
    """Inverse autoregressive flow (Kingma et al. 2016): a diagonal normal, then ``steps``
    conditional affine autoregressive steps (MADE networks) conditioned on the encoder's context.

    ``stable`` uses the paper's gated update z' = s z + (1 - s) m with s = sigmoid(...);
    ``hidden`` empty means Pyro's default of one layer of 10 x latent_dim units (each layer
    must be at least latent_dim wide). Every step orders the dimensions by its own random
    permutation, saved with the model.
    """

    def __init__(
        self,
        latent_dim: int,
        steps: int = 2,
        context_dim: int = 16,
        hidden: tuple[int, ...] = (),
        stable: bool = True,
        min_scale: float = 1e-4,
    ) -> None:
        super().__init__(latent_dim, context_dim, min_scale)
        hidden_dims = _hidden(hidden, "iaf")
        if hidden_dims and min(hidden_dims) < latent_dim:
            raise ConfigError(
                f"iaf: hidden sizes must be >= latent_dim ({latent_dim}) for an autoregressive"
                f" network, got {list(hidden)}"
            )
        for _ in range(_steps(steps, "iaf")):
            self.flows.append(
                T.conditional_affine_autoregressive(
                    latent_dim, context_dim, hidden_dims=hidden_dims, stable=stable
                )
            )


@register("guide", "planar")
class Planar(FlowFamily):
    """Planar flows (Rezende and Mohamed 2015): a diagonal normal, then ``steps`` conditional
    planar maps z' = z + u tanh(w^T z + b) whose (u, w, b) a dense network computes from the
    encoder's context.

    A planar map has no inverse: q(z|x) scores only its own samples, which is all the ELBO
    needs, but the VampPrior cannot use this family. ``hidden`` empty means Pyro's default of
    two layers of 10 x latent_dim units.
    """

    scores_any_point = False

    def __init__(
        self,
        latent_dim: int,
        steps: int = 4,
        context_dim: int = 16,
        hidden: tuple[int, ...] = (),
        min_scale: float = 1e-4,
    ) -> None:
        super().__init__(latent_dim, context_dim, min_scale)
        hidden_dims = _hidden(hidden, "planar")
        for _ in range(_steps(steps, "planar")):
            self.flows.append(
                T.conditional_planar(latent_dim, context_dim, hidden_dims=hidden_dims)
            )
