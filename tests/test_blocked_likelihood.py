"""p(x|z) scored over cache-sized blocks of z (``BlockedLikelihood``) against the whole
distribution ``likelihood(decoder(z))``: the same log-density (float64, 1e-12) for blocks that do
and do not divide the particles, value shapes that broadcast, the same mean and samples; the
choice of ``decoded`` (only without autograd, a plain decoder, a likelihood without
parameters); and pyrovae's K-particle evaluation of a VAE and of the two-layer VAE equal with
and without blocks."""

from __future__ import annotations

import pyro
import pytest
import torch
from pyro.nn import PyroModule

from pyrovae.components import blocked_likelihood
from pyrovae.components.blocked_likelihood import BlockedLikelihood, decoded
from pyrovae.components.likelihoods import Bernoulli, Gaussian
from pyrovae.components.networks.mlp import MLP
from pyrovae.components.programs.two_layer import TwoLayerVAE
from pyrovae.components.programs.vae import build_vae
from pyrovae.config import Component, ModelConfig
from pyrovae.inference.marginal_likelihood import importance_estimate

X_SHAPE = (1, 4, 3)


def _parts(likelihood=None):
    torch.manual_seed(0)
    likelihood = likelihood or Bernoulli(X_SHAPE)
    decoder = MLP((5,), likelihood.param_shape, (7,)).double()
    return likelihood, decoder


def _binary(*shape):
    return torch.bernoulli(torch.full(shape, 0.4, dtype=torch.float64))


@pytest.mark.parametrize("block_elements", [1, 12, 50, 120, 10**6])
@pytest.mark.parametrize("make", [lambda: Bernoulli(X_SHAPE), lambda: Gaussian(X_SHAPE, 0.3)])
def test_log_prob_equals_the_whole_distribution(block_elements, make):
    likelihood, decoder = _parts(make())
    z = torch.randn(9, 4, 5, dtype=torch.float64)  # (particles, batch, latent)
    x = _binary(4, *X_SHAPE)  # broadcast over the particles, as the data are
    blocked = BlockedLikelihood(likelihood, decoder, z, block_elements=block_elements)
    whole = likelihood(decoder(z))
    assert blocked.batch_shape == whole.batch_shape == (9, 4)
    assert blocked.event_shape == whole.event_shape == X_SHAPE
    torch.testing.assert_close(blocked.log_prob(x), whole.log_prob(x), atol=1e-12, rtol=0)
    full_x = _binary(9, 4, *X_SHAPE)  # one value per particle and datapoint
    torch.testing.assert_close(blocked.log_prob(full_x), whole.log_prob(full_x), atol=1e-12, rtol=0)


def test_a_value_with_more_batch_dimensions_is_scored_whole():
    likelihood, decoder = _parts()
    z = torch.randn(6, 5, dtype=torch.float64)
    x = _binary(3, 6, *X_SHAPE)
    blocked = BlockedLikelihood(likelihood, decoder, z, block_elements=12)
    torch.testing.assert_close(blocked.log_prob(x), likelihood(decoder(z)).log_prob(x))
    assert blocked.log_prob(x).shape == (3, 6)


def test_mean_samples_and_expand_are_the_whole_distributions():
    likelihood, decoder = _parts()
    z = torch.randn(4, 5, dtype=torch.float64)
    blocked = BlockedLikelihood(likelihood, decoder, z, block_elements=12)
    whole = likelihood(decoder(z))
    torch.testing.assert_close(blocked.mean, whole.mean, atol=0, rtol=0)
    torch.testing.assert_close(blocked.variance, whole.variance, atol=0, rtol=0)
    torch.manual_seed(1)
    draw = blocked.sample((2,))
    torch.manual_seed(1)
    torch.testing.assert_close(draw, whole.sample((2,)), atol=0, rtol=0)
    assert blocked.support is whole.support or str(blocked.support) == str(whole.support)
    expanded = blocked.expand((3, 4))
    x = _binary(*X_SHAPE)
    assert expanded.batch_shape == (3, 4)
    torch.testing.assert_close(
        expanded.log_prob(x), whole.expand((3, 4)).log_prob(x), atol=1e-12, rtol=0
    )


@pytest.fixture(autouse=True)
def any_threads(monkeypatch):
    """Blocks on however many threads the test runs with (pyrovae blocks on one only)."""
    monkeypatch.setattr(blocked_likelihood, "BLOCK_THREADS", 10**6)


def test_decoded_blocks_only_on_one_thread(monkeypatch):
    likelihood, decoder = _parts()
    z = torch.randn(50, 8, 5, dtype=torch.float64)
    monkeypatch.setattr(blocked_likelihood, "BLOCK_THREADS", 1)
    threads = torch.get_num_threads()
    try:
        with torch.no_grad():
            torch.set_num_threads(2)
            assert not isinstance(
                decoded(likelihood, decoder, z, block_elements=24), BlockedLikelihood
            )
            torch.set_num_threads(1)
            assert isinstance(decoded(likelihood, decoder, z, block_elements=24), BlockedLikelihood)
    finally:
        torch.set_num_threads(threads)


def test_decoded_blocks_only_without_autograd_and_side_effects():
    likelihood, decoder = _parts()
    z = torch.randn(50, 8, 5, dtype=torch.float64)
    with torch.no_grad():
        assert isinstance(decoded(likelihood, decoder, z, block_elements=24), BlockedLikelihood)
        # one block of work: the distribution itself
        assert not isinstance(decoded(likelihood, decoder, z[:1, :1]), BlockedLikelihood)
        learned = Gaussian(X_SHAPE, learn_scale=True)  # a parameter: read in the Pyro context
        assert not isinstance(decoded(learned, decoder, z, block_elements=24), BlockedLikelihood)
        pyro_decoder = PyroModule[torch.nn.Linear](5, 12).double()
        assert not isinstance(
            decoded(likelihood, pyro_decoder, z, block_elements=24), BlockedLikelihood
        )
    assert not isinstance(decoded(likelihood, decoder, z, block_elements=24), BlockedLikelihood)


def _vae() -> torch.nn.Module:
    config = ModelConfig(
        latent_dim=3,
        encoder=Component("mlp", {"hidden": [16]}),
        decoder=Component("mlp", {"hidden": [16]}),
        likelihood=Component("bernoulli"),
    )
    torch.manual_seed(2)
    return build_vae(config, X_SHAPE).double().eval()


def _two_layer() -> torch.nn.Module:
    config = ModelConfig(likelihood=Component("bernoulli"))
    torch.manual_seed(3)
    return TwoLayerVAE(X_SHAPE, config, 3, 2, (8,), (8,)).double().eval()


def _estimate(vae, x):
    pyro.set_rng_seed(5)
    return importance_estimate(
        vae.model, vae.guide, x, particles=40, chunk_size=120, analytic_kl=vae.analytic_kl
    )


@pytest.mark.parametrize("build", [_vae, _two_layer])
def test_importance_estimate_equals_the_unblocked_one(monkeypatch, build):
    vae = build()
    x = _binary(7, *X_SHAPE)
    scored = []
    log_prob = BlockedLikelihood.log_prob
    monkeypatch.setattr(
        BlockedLikelihood, "log_prob", lambda self, v: scored.append(1) or log_prob(self, v)
    )
    monkeypatch.setattr(blocked_likelihood, "BLOCK_ELEMENTS", 24)  # 1 particle per block
    blocked = _estimate(vae, x)
    assert scored  # the blocks were used
    monkeypatch.setattr(blocked_likelihood, "BLOCK_ELEMENTS", 10**9)  # never blocks
    whole = _estimate(vae, x)
    for name in ("log_likelihood", "reconstruction", "kl", "posterior_mean"):
        torch.testing.assert_close(getattr(blocked, name), getattr(whole, name), atol=1e-12, rtol=0)
