"""The VAE: one ``PyroModule`` holding a model and a guide over the latent site ``z``."""

from __future__ import annotations

import pyro
import torch
from pyro import distributions as dist
from pyro import poutine
from pyro.nn import PyroModule

from .config import ModelConfig
from .guides import VariationalFamily
from .likelihoods import Likelihood
from .priors import Prior
from .registry import build

__all__ = ["LATENT", "OBSERVED", "DATA_PLATE", "VAE", "build_vae"]

#: Site and plate names shared by the model and the guide.
LATENT = "z"
OBSERVED = "x"
DATA_PLATE = "data"


class VAE(PyroModule):
    """p(z) p(x|z) with a decoder network, and q(z|x) with an encoder network.

    ``kl_weight`` scales the latent site in both programs (``poutine.scale``), so every ELBO
    estimator sees beta * KL while the reconstruction term keeps weight one.
    """

    def __init__(
        self,
        prior: Prior,
        posterior: VariationalFamily,
        likelihood: Likelihood,
        encoder: torch.nn.Module,
        decoder: torch.nn.Module,
    ) -> None:
        super().__init__()
        self.prior = prior
        self.posterior = posterior
        self.likelihood = likelihood
        self.encoder = encoder
        self.decoder = decoder
        self.x_shape = likelihood.x_shape
        self.latent_dim = posterior.latent_dim
        self.kl_weight = 1.0

    def model(self, x: torch.Tensor) -> None:
        """p(z) p(x|z) for a batch ``x`` of shape ``(batch, *x_shape)``."""
        with pyro.plate(DATA_PLATE, x.shape[0]):
            with self._latent_weight():
                z = pyro.sample(LATENT, self.prior())  # ([particles,] batch, latent_dim)
            pyro.sample(OBSERVED, self.decode(z), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        """q(z|x) for a batch ``x`` of shape ``(batch, *x_shape)``."""
        with pyro.plate(DATA_PLATE, x.shape[0]), self._latent_weight():
            pyro.sample(LATENT, self.encode(x))

    def _latent_weight(self) -> poutine.messenger.Messenger:
        """``poutine.scale`` by ``kl_weight``; a weight of 0 masks the latent terms out instead
        (``poutine.scale`` refuses 0), leaving the reconstruction term alone."""
        if self.kl_weight == 0:
            return poutine.mask(mask=False)
        return poutine.scale(scale=self.kl_weight)

    def encode(self, x: torch.Tensor) -> dist.TorchDistribution:
        """q(z|x), batched over the leading dimensions of ``x``."""
        return self.posterior(self.encoder(x))

    def decode(self, z: torch.Tensor) -> dist.TorchDistribution:
        """p(x|z), batched over the leading dimensions of ``z``."""
        return self.likelihood(self.decoder(z))

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """The likelihood's mean for ``n`` draws of z from the prior: ``(n, *x_shape)``."""
        z = self.prior().sample((n,))
        return self.decode(z).mean

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
