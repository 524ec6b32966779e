"""The priors of issue 4 against explicit computations: the mixture's density is a log-sum-exp
over its components, the flow prior's density is the change of variables of its sampling map
(with a numerical Jacobian), and the VampPrior is the guide's posterior averaged over learned
pseudo-inputs that receive gradients and move."""

from __future__ import annotations

import math

import pytest
import torch
from pyro import distributions as dist
from torch.autograd.functional import jacobian

from pyrovae.components.priors.flow import FLOW_TRANSFORMS, FlowPrior
from pyrovae.components.priors.gaussian import MixturePrior
from pyrovae.components.programs.vae import build_vae
from pyrovae.config import Component, ModelConfig
from pyrovae.errors import ConfigError
from pyrovae.inference.estimators import meanfield

# float32 log-densities of a few nats: agreement to 1e-4 absolute is ~100 ulps of slack.
ATOL = 1e-4


def test_mixture_density_is_log_sum_exp_over_components():
    prior = MixturePrior(latent_dim=3, components=4)
    with torch.no_grad():  # unequal weights and scales, so every parameter matters
        prior.logits_unconstrained.copy_(torch.tensor([0.5, -1.0, 2.0, 0.0]))
        prior.scale_unconstrained.copy_(torch.randn(4, 3) * 0.3)
    z = torch.randn(7, 3) * 2
    log_w = torch.log_softmax(prior.logits, dim=-1)  # (4,)
    per_component = dist.Normal(prior.loc, prior.scale).log_prob(z.unsqueeze(-2)).sum(-1)
    expected = torch.logsumexp(log_w + per_component, dim=-1)  # (7,)
    torch.testing.assert_close(prior().log_prob(z), expected, atol=ATOL, rtol=0)


def test_mixture_weights_can_stay_fixed():
    prior = MixturePrior(latent_dim=2, components=3, learn_weights=False)
    assert "logits" in dict(prior.named_buffers())
    assert all("logits" not in name for name, _ in prior.named_parameters())


def _sampling_map(prior_dist: dist.TransformedDistribution):
    def g(u: torch.Tensor) -> torch.Tensor:
        for transform in prior_dist.transforms:
            u = transform(u)
        return u

    return g


@pytest.mark.parametrize("transform", sorted(FLOW_TRANSFORMS))
def test_flow_prior_density_is_the_change_of_variables(transform, float64):
    torch.manual_seed(1)
    prior = FlowPrior(latent_dim=3, transform=transform, steps=2, hidden=(8,))
    with torch.no_grad():  # move off the initialization so no step is near the identity
        for p in prior.parameters():
            p.add_(0.3 * torch.randn_like(p))
    d = prior()
    g = _sampling_map(d)
    base = dist.Normal(torch.zeros(3), torch.ones(3)).to_event(1)
    for u in torch.randn(4, 3):
        z = g(u).detach()
        log_det = torch.linalg.slogdet(jacobian(g, u)).logabsdet
        expected = base.log_prob(u) - log_det
        # clone: score z afresh (the forward pass of each step), not from the transforms' cache;
        # in float64 the two computations agree to ~1e-12, so 1e-8 leaves ample room.
        torch.testing.assert_close(d.log_prob(z.clone()), expected, atol=1e-8, rtol=0)


@pytest.mark.parametrize("transform", sorted(FLOW_TRANSFORMS))
def test_flow_prior_samples_and_scores_under_plates(transform):
    prior = FlowPrior(latent_dim=3, transform=transform, steps=2)
    d = prior().expand((2, 5))  # (particles, batch), as the data and particle plates expand it
    z = d.sample()
    assert z.shape == (2, 5, 3)
    log_p = d.log_prob(z.clone())
    assert log_p.shape == (2, 5) and torch.isfinite(log_p).all()
    # the same density point by point: the plates only broadcast
    torch.testing.assert_close(log_p[1, 2], prior().log_prob(z[1, 2].clone()), atol=ATOL, rtol=0)


def test_flow_prior_refuses_bad_options():
    with pytest.raises(ConfigError, match="latent_dim >= 2"):
        FlowPrior(latent_dim=1, transform="affine_coupling")
    with pytest.raises(ConfigError, match="must be >= latent_dim"):
        FlowPrior(latent_dim=5, transform="affine_autoregressive", hidden=(3,))
    with pytest.raises(ConfigError, match="steps must be >= 1"):
        FlowPrior(latent_dim=2, steps=0)


def _vamp_vae(guide: str = "diagonal_normal", components: int = 6):
    config = ModelConfig(
        latent_dim=3,
        prior=Component("vamp", {"components": components}),
        guide=Component(guide),
        encoder=Component("mlp", {"hidden": (16,)}),
        decoder=Component("mlp", {"hidden": (16,)}),
    )
    return build_vae(config, (1, 8, 8))


@pytest.mark.parametrize("guide", ["diagonal_normal", "full_normal", "iaf"])
def test_vamp_prior_is_the_posterior_averaged_over_pseudo_inputs(guide):
    vae = _vamp_vae(guide)
    prior = vae.prior
    z = torch.randn(5, 3)
    log_q = torch.stack([vae.encode(u.unsqueeze(0)).log_prob(z) for u in prior.inputs()])
    expected = torch.logsumexp(log_q, dim=0) - math.log(len(log_q))  # (5,)
    torch.testing.assert_close(prior().log_prob(z), expected, atol=ATOL, rtol=0)


def test_vamp_prior_refuses_a_guide_without_inverse():
    with pytest.raises(ConfigError, match="vamp.*planar|vamp.*Planar"):
        _vamp_vae("planar")


def test_vamp_pseudo_inputs_receive_gradients_and_move(digits_batch):
    vae = _vamp_vae()
    before = vae.prior.pseudo_inputs.detach().clone()
    loss_fn = meanfield()(vae.model, vae.guide)
    optimizer = torch.optim.Adam(vae.parameters(), lr=1e-2)
    for _ in range(5):
        optimizer.zero_grad()
        loss_fn(digits_batch).backward()
        grad = vae.prior.pseudo_inputs.grad
        assert grad is not None and grad.abs().sum() > 0
        optimizer.step()
    # Adam moves each coordinate by about lr per step: 5 steps of 1e-2 move well beyond 1e-3.
    assert (vae.prior.pseudo_inputs.detach() - before).abs().max() > 1e-2


def test_vamp_keeps_the_encoder_once_in_the_state_dict():
    vae = _vamp_vae()
    keys = list(vae.state_dict())
    assert any(k.startswith("encoder.") for k in keys)
    assert not any(k.startswith("prior.encoder") or k.startswith("prior.guide") for k in keys)
    assert [k for k in keys if k.startswith("prior.")] == ["prior.pseudo_inputs_unconstrained"]
