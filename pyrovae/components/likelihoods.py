"""Likelihoods p(x|z): each maps the decoder's output to a distribution over one datapoint.

A likelihood declares ``param_shape`` (the decoder output it needs) and what data it accepts:
``data_range`` (closed interval, or None for any finite value) and ``requires_binary``.
"""

from __future__ import annotations

import torch
from pyro import distributions as dist
from pyro.distributions import constraints
from pyro.nn import PyroParam

from pyrovae.components.base import Likelihood
from pyrovae.components.independent_bernoulli import IndependentBernoulli
from pyrovae.registry import register

__all__ = [
    "Likelihood",
    "Bernoulli",
    "ContinuousBernoulli",
    "Gaussian",
    "Laplace",
    "StudentT",
]


@register("likelihood", "bernoulli")
class Bernoulli(Likelihood):
    """Independent Bernoulli pixels with logits from the decoder; needs binary data. Its
    log-density without autograd takes fewer passes over memory (``IndependentBernoulli``)."""

    data_range = (0.0, 1.0)
    requires_binary = True

    def forward(self, params: torch.Tensor) -> dist.TorchDistribution:
        return IndependentBernoulli(params, len(self.x_shape))


@register("likelihood", "continuous_bernoulli")
class ContinuousBernoulli(Likelihood):
    """The continuous Bernoulli (Loaiza-Ganem and Cunningham 2019), for grey levels in [0, 1]."""

    data_range = (0.0, 1.0)

    def forward(self, params: torch.Tensor) -> dist.TorchDistribution:
        return dist.ContinuousBernoulli(logits=params).to_event(len(self.x_shape))


class _LocationScale(Likelihood):
    """Base of the location-scale likelihoods: the decoder gives the location; the scale is
    fixed or learned, one shared value or one per pixel."""

    def __init__(
        self, x_shape: tuple[int, ...], scale: float, learn_scale: bool, per_pixel: bool, name: str
    ) -> None:
        super().__init__(x_shape)
        if scale <= 0:
            from pyrovae.errors import ConfigError

            raise ConfigError(f"{name}: scale must be > 0, got {scale}")
        initial = torch.full(self.x_shape if per_pixel else (), float(scale))
        if learn_scale:
            self.scale = PyroParam(initial, constraint=constraints.positive)
        else:
            self.register_buffer("scale", initial)


@register("likelihood", "gaussian")
class Gaussian(_LocationScale):
    """N(mean(z), scale^2): the scale is fixed or learned, shared or one per pixel."""

    def __init__(
        self,
        x_shape: tuple[int, ...],
        scale: float = 0.1,
        learn_scale: bool = False,
        per_pixel: bool = False,
    ) -> None:
        super().__init__(x_shape, scale, learn_scale, per_pixel, "gaussian")

    def forward(self, params: torch.Tensor) -> dist.TorchDistribution:
        return dist.Normal(params, self.scale).to_event(len(self.x_shape))


@register("likelihood", "laplace")
class Laplace(_LocationScale):
    """Laplace(location(z), scale): heavier tails than the Gaussian, an L1 reconstruction
    error; the scale is fixed or learned, shared or one per pixel."""

    def __init__(
        self,
        x_shape: tuple[int, ...],
        scale: float = 0.1,
        learn_scale: bool = False,
        per_pixel: bool = False,
    ) -> None:
        super().__init__(x_shape, scale, learn_scale, per_pixel, "laplace")

    def forward(self, params: torch.Tensor) -> dist.TorchDistribution:
        return dist.Laplace(params, self.scale).to_event(len(self.x_shape))


@register("likelihood", "student_t")
class StudentT(_LocationScale):
    """Student-t(df, location(z), scale): robust to outlying pixels; ``df`` degrees of freedom
    (> 1, so that samples and reconstructions have a mean), the scale fixed or learned."""

    def __init__(
        self,
        x_shape: tuple[int, ...],
        df: float = 3.0,
        scale: float = 0.1,
        learn_scale: bool = False,
        per_pixel: bool = False,
    ) -> None:
        super().__init__(x_shape, scale, learn_scale, per_pixel, "student_t")
        if df <= 1:
            from pyrovae.errors import ConfigError

            raise ConfigError(
                f"student_t: df must be > 1 (the mean is undefined otherwise), got {df}"
            )
        self.register_buffer("df", torch.tensor(float(df)))

    def forward(self, params: torch.Tensor) -> dist.TorchDistribution:
        return dist.StudentT(self.df, params, self.scale).to_event(len(self.x_shape))
