"""Gradient signal-to-noise: Rainforth et al. (2018)'s finding on a small model, the spec
parser, and the ``pyrovae gradients`` command."""

from __future__ import annotations

import pyro
import pytest
import torch

from pyrovae.errors import ConfigError
from pyrovae.evaluation.gradients import gradient_snr, measure, parse_estimator
from pyrovae.registry import build
from tests.linear_gaussian_vae import digits, linear_gaussian_vae, set_guide


def test_encoder_snr_falls_with_k_under_iwae_and_not_under_dreg():
    vae = linear_gaussian_vae()
    set_guide(vae, shift=0.5, scale_factor=1.3)
    specs = ["iwae:1", "iwae:10", "iwae:100", "dreg:1", "dreg:10", "dreg:100"]
    snr = {r.estimator: r for r in measure(vae, digits(10), specs, draws=200)}
    # Rainforth et al.: the IWAE encoder gradient's expectation shrinks as O(1/K) and its
    # standard deviation as O(1/sqrt(K)), so its SNR falls (measured: 0.73, 0.17, 0.086; with
    # 200 draws a component of zero signal still reads ~0.06), while DReG's rises (measured:
    # 1.75, 2.5, 7.5). The decoder's SNR rises with K under both (the same gradient).
    assert snr["iwae:1"].encoder > 2 * snr["iwae:10"].encoder > 3 * snr["iwae:100"].encoder
    assert snr["dreg:1"].encoder < snr["dreg:10"].encoder < snr["dreg:100"].encoder
    assert snr["iwae:1"].decoder < snr["iwae:10"].decoder < snr["iwae:100"].decoder
    assert snr["dreg:100"].decoder == pytest.approx(snr["iwae:100"].decoder)


def test_snr_is_mean_over_std_of_the_draws():
    vae = linear_gaussian_vae()
    set_guide(vae, shift=0.5, scale_factor=1.3)
    x = digits(5)
    estimator = build("estimator", "trace", {}, "test")
    snr = gradient_snr(vae, x, estimator, draws=30, seed=3)
    pyro.set_rng_seed(3)  # the same 30 draws, by hand
    loss_fn = estimator(vae.model, vae.guide)
    decoder = list(vae.decoder.parameters())
    grads = torch.stack(
        [
            torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss_fn(x) / len(x), decoder)])
            for _ in range(30)
        ]
    ).double()
    expected = grads.mean(0).abs() / grads.std(0)
    assert torch.allclose(snr["decoder"], expected, rtol=1e-4)


def test_estimator_specs_parse_and_bad_ones_are_config_errors():
    assert parse_estimator("trace") == ("trace", {})
    assert parse_estimator("iwae:50") == ("iwae", {"particles": 50})
    assert parse_estimator("renyi:10,alpha=0.5") == ("renyi", {"particles": 10, "alpha": 0.5})
    with pytest.raises(ConfigError, match="integer"):
        parse_estimator("iwae:many")
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_estimator("renyi:5,alpha")
