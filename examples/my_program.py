"""Bring your own Pyro program: a VAE with a discrete cluster latent, registered by name.

    pyrovae train --plugin examples/my_program.py model.program=cluster_vae \
        train.estimator=tracegraph train.epochs=20

The model draws a cluster c ~ Categorical(pi), then z ~ N(mu_c, I), then x ~ p(x|z); the
guide draws c from q(c|x) and z from q(z|x). c cannot be reparameterized, so the estimator is
``tracegraph`` (score-function gradients with Rao-Blackwellization). Every pyrovae command
works on it: ``evaluate``, ``compare``, ``gradients``, ``sample``, ``--resume`` and torchrun.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import pyro_method
from torch import nn

import pyrovae
from pyrovae.program import observation


@pyrovae.register("program", "cluster_vae")
class ClusterVAE(pyrovae.Program):
    """Options (config keys under ``model.program``): ``clusters``, ``latent``, ``hidden``."""

    def __init__(
        self, x_shape: tuple[int, ...], clusters: int = 10, latent: int = 4, hidden: int = 128
    ) -> None:
        super().__init__(x_shape)  # gives the program its own parameter names
        pixels = math.prod(self.x_shape)
        self.clusters, self.latent = clusters, latent
        self.logits = nn.Parameter(torch.zeros(clusters))
        self.centres = nn.Parameter(torch.randn(clusters, latent))
        self.decoder = nn.Sequential(
            nn.Linear(latent, hidden), nn.Softplus(), nn.Linear(hidden, pixels)
        )
        self.encoder = nn.Sequential(
            nn.Flatten(-len(self.x_shape)),
            nn.Linear(pixels, hidden),
            nn.Softplus(),
            nn.Linear(hidden, clusters + 2 * latent),
        )

    @pyro_method
    def model(self, x=None, batch_size=None):
        n = len(x) if x is not None else (batch_size or 1)
        with pyro.plate(pyrovae.DATA_PLATE, n):
            c = pyro.sample("c", dist.Categorical(logits=self.logits))
            z = pyro.sample("z", dist.Normal(self.centres[c], 1.0).to_event(1))
            logits = self.decoder(z).reshape(*z.shape[:-1], *self.x_shape)
            likelihood = dist.Bernoulli(logits=logits).to_event(len(self.x_shape))
            return pyro.sample(pyrovae.OBSERVED, likelihood, obs=observation(x))

    @pyro_method
    def guide(self, x, batch_size=None):
        logits, loc, log_scale = self.encoder(x).split(
            [self.clusters, self.latent, self.latent], -1
        )
        with pyro.plate(pyrovae.DATA_PLATE, len(x)):
            pyro.sample("c", dist.Categorical(logits=logits))
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))
