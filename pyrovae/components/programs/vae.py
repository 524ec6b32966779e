"""The one-site VAE, p(z) p(x|z) with a decoder and q(z|x) with an encoder: the program
``vae``, built from the prior, guide, likelihood and networks named in the config."""

from __future__ import annotations

import pyro
import torch
from pyro import distributions as dist
from pyro.nn import pyro_method

from pyrovae.components.base import (
    DATA_PLATE,
    OBSERVED,
    Likelihood,
    Prior,
    Program,
    VariationalFamily,
    observation,
)
from pyrovae.components.blocked_likelihood import decoded
from pyrovae.config import ModelConfig
from pyrovae.registry import build, register

__all__ = ["LATENT", "OBSERVED", "DATA_PLATE", "VAE", "build_vae"]

#: The latent site of the one-site VAE.
LATENT = "z"


class VAE(Program):
    """p(z) p(x|z) with a decoder network, and q(z|x) with an encoder network.

    A KL weight (beta, warm-up) is applied from outside by ``latent_weight.weight_latents``.
    """

    analytic_kl = True  # one latent site

    def __init__(
        self,
        prior: Prior,
        posterior: VariationalFamily,
        likelihood: Likelihood,
        encoder: torch.nn.Module,
        decoder: torch.nn.Module,
    ) -> None:
        super().__init__(likelihood.x_shape)
        self.prior = prior
        self.posterior = posterior
        self.likelihood = likelihood
        self.encoder = encoder
        self.decoder = decoder
        self.latent_dim = posterior.latent_dim

    @pyro_method
    def model(self, x: torch.Tensor | None = None, batch_size: int | None = None) -> torch.Tensor:
        """p(z) p(x|z) for a batch ``x`` of shape ``(batch, *x_shape)``; with ``x=None`` it
        draws ``batch_size`` (default 1) new datapoints. Returns x (observed or drawn)."""
        n = len(x) if x is not None else (batch_size or 1)
        with pyro.plate(DATA_PLATE, n):
            z = pyro.sample(LATENT, self.prior())  # ([particles,] batch, latent_dim)
            return pyro.sample(OBSERVED, self.decode(z), obs=observation(x))

    @pyro_method
    def guide(self, x: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        """q(z|x) for a batch ``x`` of shape ``(batch, *x_shape)``."""
        with pyro.plate(DATA_PLATE, len(x)):
            return pyro.sample(LATENT, self.encode(x))

    def encode(self, x: torch.Tensor) -> dist.TorchDistribution:
        """q(z|x), batched over the leading dimensions of ``x``."""
        return self.posterior(self.encoder(x))

    def decode(self, z: torch.Tensor) -> dist.TorchDistribution:
        """p(x|z), batched over the leading dimensions of ``z`` (without autograd, scored over
        cache-sized blocks of z: ``blocked_likelihood.decoded``)."""
        return decoded(self.likelihood, self.decoder, z)

    @torch.no_grad()
    def latent_mean(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The guide's point for z (its mean, or for a flow the base mean pushed through the
        flow): ``(batch, latent_dim)``; ``y`` is ignored (the VAE does not use labels)."""
        return self.posterior.point(self.encoder(x))

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """The likelihood's mean for ``n`` draws of z from the prior: ``(n, *x_shape)``."""
        return self.decode(self.prior().sample((n,))).mean

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The likelihood's mean at the guide's point for z (its mean, or for a flow the base
        mean pushed through the flow): ``(batch, *x_shape)``."""
        return self.decode(self.posterior.point(self.encoder(x))).mean


def build_vae(config: ModelConfig, x_shape: tuple[int, ...]) -> VAE:
    """Build every component named in ``config`` for data of shape ``x_shape``.

    The variational family and the encoder come first: a prior may ask for them by name
    (``guide``, ``encoder``), as the VampPrior does.
    """
    latent_dim = config.latent_dim
    ctx = {"latent_dim": latent_dim, "x_shape": tuple(x_shape)}
    posterior = build("guide", config.guide.name, config.guide.options, "model.guide", **ctx)
    encoder = build(
        "network",
        config.encoder.name,
        config.encoder.options,
        "model.encoder",
        in_shape=tuple(x_shape),
        out_shape=tuple(posterior.param_shape),
    )
    prior = build(
        "prior",
        config.prior.name,
        config.prior.options,
        "model.prior",
        encoder=encoder,
        guide=posterior,
        **ctx,
    )
    likelihood = build(
        "likelihood", config.likelihood.name, config.likelihood.options, "model.likelihood", **ctx
    )
    decoder = build(
        "network",
        config.decoder.name,
        config.decoder.options,
        "model.decoder",
        in_shape=(latent_dim,),
        out_shape=tuple(likelihood.param_shape),
    )
    return VAE(prior, posterior, likelihood, encoder, decoder)


@register("program", "vae")
def vae(model_config: ModelConfig, x_shape: tuple[int, ...]) -> VAE:
    """The one-site VAE: p(z) from ``model.prior``, p(x|z) from ``model.likelihood`` over
    ``model.decoder``, q(z|x) from ``model.guide`` over ``model.encoder``."""
    return build_vae(model_config, x_shape)


vae.config_sections = ("latent_dim", "prior", "guide", "likelihood", "encoder", "decoder")
