"""A linear-Gaussian VAE on digits whose exact posterior the diagonal guide can represent.

The decoder's columns are orthogonal, so the posterior covariance (I + W^T W / sigma^2)^-1 is
diagonal and the posterior mean is linear in x: a linear encoder can hold the exact posterior.
``set_guide`` moves the guide away from it by a known shift and scale factor.
"""

from __future__ import annotations

import torch

from pyrovae import VAE, build_vae, load_config, load_splits
from pyrovae.inference.linear_gaussian import posterior

#: Scales of the decoder's orthogonal columns, and the likelihood's noise scale.
COLUMN_SCALES = (2.0, 1.5, 1.0)
NOISE = 0.3


def digits(n: int | None = None) -> torch.Tensor:
    """Grey-level digits test images, ``(n, 1, 8, 8)`` in [0, 1]."""
    config = load_config(None, ["data.binarize='none'"])
    x = load_splits(config.data, torch.device("cpu")).test
    return x if n is None else x[:n]


def linear_gaussian_vae(seed: int = 0) -> VAE:
    """The VAE with its guide at the exact posterior."""
    config = load_config(
        None,
        [
            f"model.latent_dim={len(COLUMN_SCALES)}",
            f"model.likelihood={{name='gaussian', scale={NOISE}}}",
            "model.encoder={name='mlp', hidden=[]}",
            "model.decoder={name='mlp', hidden=[]}",
        ],
    )
    vae = build_vae(config.model, (1, 8, 8))
    generator = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(64, len(COLUMN_SCALES), generator=generator))
    decoder = vae.decoder.layers[0]
    with torch.no_grad():
        decoder.weight.copy_(q * torch.tensor(COLUMN_SCALES))
        decoder.bias.copy_(digits().reshape(-1, 64).mean(0))
    set_guide(vae)
    return vae


def set_guide(vae: VAE, shift: float = 0.0, scale_factor: float = 1.0) -> None:
    """Set the linear encoder to the exact posterior, its mean moved by ``shift`` posterior
    standard deviations and its scale multiplied by ``scale_factor``."""
    d = vae.latent_dim
    decoder = vae.decoder.layers[0]
    weight, bias = decoder.weight.detach(), decoder.bias.detach()
    covariance = torch.linalg.inv(torch.eye(d) + weight.T @ weight / NOISE**2)
    assert torch.allclose(covariance, torch.diag(covariance.diagonal()), atol=1e-6)
    std = covariance.diagonal().sqrt()
    gain = covariance @ weight.T / NOISE**2  # posterior mean = gain (x - bias)
    encoder = vae.encoder.layers[0]
    scale = scale_factor * std - vae.posterior.min_scale
    with torch.no_grad():
        encoder.weight.zero_()
        encoder.weight[:d] = gain
        encoder.bias[:d] = -gain @ bias + shift * std
        encoder.bias[d:] = scale + torch.log(-torch.expm1(-scale))  # softplus^-1


def check_exact(vae: VAE, x: torch.Tensor) -> None:
    """Assert the guide is the exact posterior (as ``pyrovae.inference.linear_gaussian``
    computes it)."""
    exact = posterior(vae, x)
    guide = vae.encode(x)
    assert torch.allclose(guide.mean, exact.mean, atol=1e-4)
    assert torch.allclose(guide.variance, exact.variance, atol=1e-5)
