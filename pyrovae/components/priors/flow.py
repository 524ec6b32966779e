"""A normalizing-flow prior: N(0, I) pushed through learned transforms from
``pyro.distributions.transforms``.

The steps run inverted, as in a masked autoregressive flow (Papamakarios et al. 2017): scoring z
(what the ELBO does every step) runs each transform forward, one network pass per step, while
sampling z (only for pictures) runs the inverses, which for autoregressive steps is one pass per
latent dimension. A fixed reversal of the dimensions sits between steps so coupling steps
transform every dimension.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from pyro import distributions as dist
from pyro.distributions import transforms as T
from torch import nn

from pyrovae.components.base import Prior
from pyrovae.errors import ConfigError
from pyrovae.registry import register

__all__ = ["FLOW_TRANSFORMS", "FlowPrior"]

FlowTransform = Literal[
    "affine_autoregressive", "affine_coupling", "spline_autoregressive", "spline_coupling"
]

#: transform name -> builder (latent_dim, hidden or None, count_bins, bound) -> TransformModule.
FLOW_TRANSFORMS: dict[str, Callable[[int, list[int] | None, int, float], T.TransformModule]] = {
    "affine_autoregressive": lambda d, hidden, bins, bound: T.affine_autoregressive(
        d, hidden_dims=hidden
    ),
    "affine_coupling": lambda d, hidden, bins, bound: T.affine_coupling(d, hidden_dims=hidden),
    "spline_autoregressive": lambda d, hidden, bins, bound: T.spline_autoregressive(
        d, hidden_dims=hidden, count_bins=bins, bound=bound
    ),
    "spline_coupling": lambda d, hidden, bins, bound: T.spline_coupling(
        d, hidden_dims=hidden, count_bins=bins, bound=bound
    ),
}


@register("prior", "flow")
class FlowPrior(Prior):
    """N(0, I) pushed through ``steps`` learned ``transform`` steps (autoregressive or coupling,
    affine or rational-quadratic spline; Pyro's transforms).

    ``hidden`` empty means Pyro's default network for the transform (autoregressive layers must
    be at least latent_dim wide); ``count_bins`` and ``bound`` shape the splines. Coupling steps
    need latent_dim >= 2.
    """

    def __init__(
        self,
        latent_dim: int,
        transform: FlowTransform = "affine_autoregressive",
        steps: int = 4,
        hidden: tuple[int, ...] = (),
        count_bins: int = 8,
        bound: float = 3.0,
    ) -> None:
        super().__init__(latent_dim)
        _check(latent_dim, transform, steps, hidden, count_bins, bound)
        build = FLOW_TRANSFORMS[transform]
        self.flows = nn.ModuleList(
            build(latent_dim, list(hidden) or None, count_bins, bound) for _ in range(steps)
        )
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))
        self.register_buffer("reverse", torch.arange(latent_dim - 1, -1, -1))

    def forward(self) -> dist.TorchDistribution:
        transforms: list[T.Transform] = []
        for i, flow in enumerate(self.flows):
            if i:
                transforms.append(T.Permute(self.reverse))
            transforms.append(flow.inv)
        base = dist.Normal(self.loc, self.scale).to_event(1)
        return dist.TransformedDistribution(base, transforms)


def _check(
    latent_dim: int, transform: str, steps: int, hidden: tuple[int, ...], bins: int, bound: float
) -> None:
    if steps < 1:
        raise ConfigError(f"flow: steps must be >= 1, got {steps}")
    if any(h < 1 for h in hidden):
        raise ConfigError(f"flow: hidden sizes must be positive, got {list(hidden)}")
    if "autoregressive" in transform and hidden and min(hidden) < latent_dim:
        raise ConfigError(
            f"flow: hidden sizes of {transform} must be >= latent_dim ({latent_dim}),"
            f" got {list(hidden)}"
        )
    if "coupling" in transform and latent_dim < 2:
        raise ConfigError(f"flow: {transform} needs latent_dim >= 2; use affine_autoregressive")
    if bins < 2 or bound <= 0:
        raise ConfigError(f"flow: count_bins must be >= 2 and bound > 0, got {bins}, {bound}")
