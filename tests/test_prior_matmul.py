"""The mixture priors scored by matrix products (``DiagonalNormalMixture``) against Pyro's
``MixtureSameFamily(Categorical, Independent(Normal))``: the same log-density (float64, 1e-10)
and gradients at z with particle and batch dimensions, samples with the mixture's moments, and
the mixture and VampPrior models still declaring ``pyro.sample("z", prior())`` under plates."""

from __future__ import annotations

import pyro
import pytest
import torch
from pyro import distributions as dist
from pyro import poutine

from pyrovae.components.priors.diagonal_mixture import DiagonalNormalMixture
from pyrovae.components.priors.gaussian import MixturePrior
from pyrovae.components.programs.vae import build_vae
from pyrovae.config import Component, ModelConfig


def _parameters(k: int, d: int, seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(k, generator=g, dtype=torch.float64)
    loc = 2 * torch.randn(k, d, generator=g, dtype=torch.float64)
    scale = torch.exp(0.7 * torch.randn(k, d, generator=g, dtype=torch.float64))
    return logits, loc, scale


def _reference(logits, loc, scale) -> dist.MixtureSameFamily:
    return dist.MixtureSameFamily(
        dist.Categorical(logits=logits), dist.Normal(loc, scale).to_event(1)
    )


@pytest.mark.parametrize("k, d", [(1, 1), (5, 3), (40, 7)])
def test_log_prob_equals_mixture_same_family(k, d):
    logits, loc, scale = _parameters(k, d, seed=k)
    z = 3 * torch.randn(4, 6, d, dtype=torch.float64)  # (particles, batch, D)
    ours = DiagonalNormalMixture(logits, loc, scale, validate_args=True).log_prob(z)
    expected = _reference(logits, loc, scale).log_prob(z)
    assert ours.shape == (4, 6)
    torch.testing.assert_close(ours, expected, atol=1e-10, rtol=0)


def test_gradients_equal_mixture_same_family():
    params = [p.requires_grad_() for p in _parameters(6, 4, seed=3)]
    z = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    ours = torch.autograd.grad(DiagonalNormalMixture(*params).log_prob(z).sum(), [z, *params])
    expected = torch.autograd.grad(_reference(*params).log_prob(z).sum(), [z, *params])
    for a, b in zip(ours, expected, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


def test_expanded_by_plates_scores_each_entry_alike():
    logits, loc, scale = _parameters(5, 3, seed=1)
    mixture = DiagonalNormalMixture(logits, loc, scale)
    expanded = mixture.expand((4, 6))  # (particles, batch), as plates expand it
    z = expanded.sample()
    assert z.shape == (4, 6, 3)
    torch.testing.assert_close(expanded.log_prob(z), mixture.log_prob(z), atol=0, rtol=0)
    assert expanded.log_prob(z[0, 0]).shape == (4, 6)  # broadcast to the batch shape


def test_samples_have_the_mixture_moments():
    torch.manual_seed(0)
    logits, loc, scale = _parameters(3, 2, seed=2)
    mixture = DiagonalNormalMixture(logits, loc, scale)
    z = mixture.sample((200_000,))
    reference = _reference(logits, loc, scale)
    torch.testing.assert_close(mixture.mean, reference.mean, atol=1e-12, rtol=0)
    torch.testing.assert_close(mixture.variance, reference.variance, atol=1e-12, rtol=0)
    # standard error of the mean: sqrt(var / n) <= ~0.01 here; 5 of them as the tolerance
    sem = (reference.variance / len(z)).sqrt()
    assert ((z.mean(0) - reference.mean).abs() < 5 * sem).all()
    assert ((z.var(0) / reference.variance - 1).abs() < 0.02).all()


def test_samples_pick_components_by_their_weights():
    torch.manual_seed(1)
    logits = torch.tensor([0.0, 1.0, -1.0], dtype=torch.float64)
    loc = torch.tensor([[0.0], [100.0], [200.0]], dtype=torch.float64)  # far apart: each draw's
    z = DiagonalNormalMixture(logits, loc, torch.ones_like(loc)).sample((50_000,))  # component
    counts = torch.bincount((z[:, 0] / 100).round().long(), minlength=3).double()  # is plain
    weights = torch.softmax(logits, 0)
    sem = (weights * (1 - weights) / len(z)).sqrt()  # binomial standard error, <= 0.0023
    assert ((counts / len(z) - weights).abs() < 5 * sem).all()


def test_mixture_prior_builds_the_matmul_distribution():
    prior = MixturePrior(latent_dim=3, components=4)
    d = prior()
    assert isinstance(d, DiagonalNormalMixture)
    z = torch.randn(2, 5, 3)
    expected = _reference(prior.logits, prior.loc, prior.scale).log_prob(z)
    torch.testing.assert_close(d.log_prob(z), expected, atol=1e-5, rtol=0)


def test_vamp_prior_is_the_average_posterior_at_the_pseudo_inputs(float64):
    config = ModelConfig(
        latent_dim=4,
        prior=Component("vamp", {"components": 7, "init_std": 0.3}),
        encoder=Component("mlp", {"hidden": [16]}),
        decoder=Component("mlp", {"hidden": [16]}),
    )
    vae = build_vae(config, (1, 4, 4))
    prior = vae.prior()
    assert isinstance(prior, DiagonalNormalMixture)
    posteriors = vae.posterior(vae.encoder(vae.prior.inputs()))  # (7,) diagonal normals
    z = torch.randn(3, 2, 4, dtype=torch.float64)
    expected = torch.logsumexp(posteriors.log_prob(z.unsqueeze(-2)), -1) - torch.log(
        torch.tensor(7.0, dtype=torch.float64)
    )
    torch.testing.assert_close(prior.log_prob(z), expected, atol=1e-10, rtol=0)
    # the model declares the prior at site "z" under the data plate, expanded to the batch
    x = torch.bernoulli(torch.rand(5, 1, 4, 4, dtype=torch.float64))
    with pyro.validation_enabled(True):
        trace = poutine.trace(vae.model).get_trace(x)
    site = trace.nodes["z"]
    assert site["fn"].batch_shape == (5,)
    torch.testing.assert_close(site["fn"].log_prob(site["value"]), prior.log_prob(site["value"]))
