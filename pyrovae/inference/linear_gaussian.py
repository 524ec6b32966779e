"""Closed forms for the linear-Gaussian VAE (probabilistic PCA), the ground truth of the tests.

With a prior N(m, diag(s^2)), a linear decoder x = W z + b and a Gaussian likelihood with scale
sigma, the marginal is p(x) = N(W m + b, W diag(s^2) W^T + diag(sigma^2)) and the posterior
p(z|x) is Gaussian too. Tipping and Bishop (1999) give the maximum-likelihood fit in closed form.
"""

from __future__ import annotations

import math

import torch
from pyro import distributions as dist
from torch import nn

from pyrovae.components.likelihoods import Gaussian
from pyrovae.components.programs.vae import VAE
from pyrovae.errors import ConfigError

__all__ = ["is_linear_gaussian", "marginal", "posterior", "ppca_max_log_likelihood"]


def _affine(decoder: nn.Module) -> nn.Linear | None:
    linears = [m for m in decoder.modules() if isinstance(m, nn.Linear)]
    others = [
        m for m in decoder.modules() if not list(m.children()) and not isinstance(m, nn.Linear)
    ]
    return linears[0] if len(linears) == 1 and not others else None


def is_linear_gaussian(vae: VAE) -> bool:
    """True when the decoder is one affine map and the likelihood is Gaussian."""
    return _affine(vae.decoder) is not None and isinstance(vae.likelihood, Gaussian)


def _parts(vae: VAE) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    if not is_linear_gaussian(vae):
        raise ConfigError(
            "closed forms need a linear decoder (mlp, hidden = []) and a gaussian likelihood"
        )
    linear = _affine(vae.decoder)
    prior = vae.prior()
    base = prior.base_dist if isinstance(prior, dist.Independent) else prior
    if not isinstance(base, dist.Normal):
        raise ConfigError("closed forms need a Normal prior")
    noise = vae.likelihood.scale.expand(vae.x_shape).reshape(-1)
    return linear.weight, linear.bias, base.loc, base.scale, noise


def marginal(vae: VAE) -> dist.MultivariateNormal:
    """The exact p(x) over flattened datapoints."""
    weight, bias, loc, scale, noise = _parts(vae)
    covariance = weight @ torch.diag(scale**2) @ weight.T + torch.diag(noise**2)
    return dist.MultivariateNormal(weight @ loc + bias, covariance_matrix=covariance)


def posterior(vae: VAE, x: torch.Tensor) -> dist.MultivariateNormal:
    """The exact p(z|x) for each datapoint of ``x`` (flattened)."""
    weight, bias, loc, scale, noise = _parts(vae)
    x = x.reshape(len(x), -1)
    precision = torch.diag(scale**-2) + weight.T @ torch.diag(noise**-2) @ weight
    covariance = torch.linalg.inv(precision)
    mean = (((x - bias) / noise**2) @ weight + loc / scale**2) @ covariance.T
    return dist.MultivariateNormal(mean, covariance_matrix=covariance)


def ppca_max_log_likelihood(x: torch.Tensor, latent_dim: int) -> float:
    """The maximum over (W, b, sigma) of the mean log-likelihood per datapoint of ``x`` under
    probabilistic PCA with ``latent_dim`` components (Tipping and Bishop 1999, eq. 7, 15-16)."""
    x = x.reshape(len(x), -1).double()
    d = x.shape[1]
    if not 0 < latent_dim < d:
        raise ConfigError(f"latent_dim must be between 1 and {d - 1}, got {latent_dim}")
    centred = x - x.mean(0)
    eigenvalues = torch.linalg.eigvalsh(centred.T @ centred / len(x)).flip(0)
    sigma2 = eigenvalues[latent_dim:].mean()
    log_det = torch.log(eigenvalues[:latent_dim]).sum() + (d - latent_dim) * torch.log(sigma2)
    # At the optimum, trace(C^-1 S) = d (Tipping and Bishop 1999).
    return float(-0.5 * (d * math.log(2 * math.pi) + log_det + d))
