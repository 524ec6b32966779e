"""The VAE with two stochastic layers of Burda, Grosse and Salakhutdinov (2015): the program
``two_layer``, model p(z2) p(z1|z2) p(x|z1) and guide q(z1|x) q(z2|z1)."""

from __future__ import annotations

import pyro
import torch
from pyro.nn import pyro_method

from pyrovae.components.base import DATA_PLATE, OBSERVED, Program, observation
from pyrovae.components.blocked_likelihood import decoded
from pyrovae.components.guides.gaussian import DiagonalNormal
from pyrovae.components.networks.mlp import MLP, Activation
from pyrovae.components.priors.gaussian import StandardNormal
from pyrovae.config import ModelConfig
from pyrovae.errors import ConfigError
from pyrovae.registry import build, register

__all__ = ["TwoLayerVAE"]


@register("program", "two_layer")
class TwoLayerVAE(Program):
    """Two Gaussian latent layers; every conditional is a diagonal Normal whose parameters an
    MLP computes, p(x|z1) is ``model.likelihood``. The defaults are Burda et al.'s MNIST
    architecture: 100 latent units behind two tanh layers of 100, then 50 behind two of 50.

    The sites are ``z1`` and ``z2``; ``stl`` and ``dreg`` keep q(z2|z1)'s path through z1.
    """

    config_sections = ("likelihood",)

    def __init__(
        self,
        x_shape: tuple[int, ...],
        model_config: ModelConfig,
        latent1: int = 100,
        latent2: int = 50,
        hidden1: tuple[int, ...] = (100, 100),
        hidden2: tuple[int, ...] = (50, 50),
        activation: Activation = "tanh",
        min_scale: float = 1e-4,
    ) -> None:
        super().__init__(x_shape)
        if min(latent1, latent2) < 1:
            raise ConfigError(f"latent sizes must be >= 1, got {latent1} and {latent2}")
        like = model_config.likelihood
        self.likelihood = build(
            "likelihood", like.name, like.options, "model.likelihood", x_shape=self.x_shape
        )
        self.prior = StandardNormal(latent2)
        self.p_z1 = DiagonalNormal(latent1, min_scale)
        self.q_z1 = DiagonalNormal(latent1, min_scale)
        self.q_z2 = DiagonalNormal(latent2, min_scale)
        params1, params2 = self.q_z1.param_shape, self.q_z2.param_shape
        self.encoder1 = MLP(self.x_shape, params1, hidden1, activation)
        self.encoder2 = MLP((latent1,), params2, hidden2, activation)
        self.decoder2 = MLP((latent2,), params1, hidden2[::-1], activation)
        self.decoder1 = MLP((latent1,), self.likelihood.param_shape, hidden1[::-1], activation)

    @pyro_method
    def model(self, x: torch.Tensor | None = None, batch_size: int | None = None) -> torch.Tensor:
        """p(z2) p(z1|z2) p(x|z1); with ``x=None`` it draws ``batch_size`` (default 1)."""
        n = len(x) if x is not None else (batch_size or 1)
        with pyro.plate(DATA_PLATE, n):
            z2 = pyro.sample("z2", self.prior())
            z1 = pyro.sample("z1", self.p_z1(self.decoder2(z2)))
            p_x = decoded(self.likelihood, self.decoder1, z1)  # blocks without autograd
            return pyro.sample(OBSERVED, p_x, obs=observation(x))

    @torch.no_grad()
    def latent_mean(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The mean of q(z1|x), the layer next to the data: ``(batch, latent1)``."""
        return self.q_z1(self.encoder1(x)).mean

    @pyro_method
    def guide(self, x: torch.Tensor, batch_size: int | None = None) -> None:
        """q(z1|x) q(z2|z1)."""
        with pyro.plate(DATA_PLATE, len(x)):
            z1 = pyro.sample("z1", self.q_z1(self.encoder1(x)))
            pyro.sample("z2", self.q_z2(self.encoder2(z1)))
