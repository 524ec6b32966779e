"""Evaluation of a trained VAE on held-out data."""

from __future__ import annotations

import pyro
import torch
from pyro.infer import TraceMeanField_ELBO

from .model import VAE

__all__ = ["negative_elbo"]


@torch.no_grad()
def negative_elbo(vae: VAE, x: torch.Tensor, batch_size: int = 1000, particles: int = 1) -> float:
    """The negative ELBO per datapoint in nats (analytic KL where registered), at weight beta = 1.

    The same bound whatever estimator trained the model, so runs compare on one scale.
    """
    elbo = TraceMeanField_ELBO(
        num_particles=particles, vectorize_particles=particles > 1, max_plate_nesting=1
    )
    weight, vae.kl_weight = vae.kl_weight, 1.0
    total = 0.0
    try:
        with pyro.validation_enabled(False):
            for chunk in x.split(batch_size):
                total += float(elbo.differentiable_loss(vae.model, vae.guide, chunk))
    finally:
        vae.kl_weight = weight
    return total / len(x)
