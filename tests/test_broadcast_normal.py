"""``BroadcastNormal`` expanded as plates expand it, against torch's ``Normal`` expanded the same
way: ``log_prob`` and KL equal bit for bit without autograd (computed on the unexpanded
parameters), torch's own path (and gradients) with autograd, the shapes torch gives, and the
guide and priors that use it still scored and sampled as before."""

from __future__ import annotations

import pytest
import torch
from pyro import distributions as dist
from pyro.distributions.kl import kl_divergence

from pyrovae.components.broadcast_normal import BroadcastNormal
from pyrovae.components.guides.gaussian import DiagonalNormal
from pyrovae.components.priors.gaussian import LearnedNormal, StandardNormal


def _params(*shape):
    g = torch.Generator().manual_seed(len(shape))
    loc = torch.randn(*shape, generator=g, dtype=torch.float64)
    scale = torch.exp(0.5 * torch.randn(*shape, generator=g, dtype=torch.float64))
    return loc, scale


def _pair(loc, scale, batch):
    ours = BroadcastNormal(loc, scale, validate_args=False).to_event(1).expand(batch)
    theirs = dist.Normal(loc, scale, validate_args=False).to_event(1).expand(batch)
    return ours, theirs


@pytest.mark.parametrize("value_shape", [(7, 4, 3), (4, 3), (1, 4, 3)])
def test_log_prob_equals_torchs_expanded_normal(value_shape):
    loc, scale = _params(4, 3)  # (batch, D), expanded to (particles, batch)
    ours, theirs = _pair(loc, scale, (7, 4))
    z = torch.randn(value_shape, dtype=torch.float64)
    with torch.no_grad():
        result = ours.log_prob(z)
    expected = theirs.log_prob(z)
    assert result.shape == expected.shape == (7, 4)
    assert torch.equal(result, expected)


def test_kl_equals_torchs_expanded_normal():
    loc, scale = _params(4, 3)
    prior_loc, prior_scale = _params(3)
    q, q_torch = _pair(loc, scale, (7, 4))
    p, p_torch = _pair(prior_loc, prior_scale, (7, 4))
    with torch.no_grad():
        result = kl_divergence(q, p)
    expected = kl_divergence(q_torch, p_torch)
    assert result.shape == expected.shape == (7, 4)
    assert torch.equal(result, expected)


def test_autograd_takes_torchs_path_with_its_gradients():
    loc, scale = (t.requires_grad_() for t in _params(4, 3))
    ours, theirs = _pair(loc, scale, (7, 4))
    z = torch.randn(7, 4, 3, dtype=torch.float64)
    for a, b in [
        (ours.log_prob(z), theirs.log_prob(z)),
        (kl_divergence(ours, _pair(*_params(3), (7, 4))[0]), None),
    ]:
        if b is None:
            b = kl_divergence(theirs, _pair(*_params(3), (7, 4))[1])
        assert torch.equal(a, b)
        grads = [torch.autograd.grad(v.sum(), [loc, scale], retain_graph=True) for v in (a, b)]
        for ga, gb in zip(*grads, strict=True):
            assert torch.equal(ga, gb)


def test_a_smaller_value_is_scored_against_the_whole_batch():
    loc, scale = _params(3)
    ours, theirs = _pair(loc, scale, (5, 2))
    z = torch.randn(3, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(ours.log_prob(z), theirs.log_prob(z))
    assert ours.log_prob(z).shape == (5, 2)


def test_validation_refuses_a_non_finite_value():
    ours = BroadcastNormal(*_params(3), validate_args=True).expand((2, 3))
    with torch.no_grad(), pytest.raises(ValueError):
        ours.log_prob(torch.full((2, 3), float("nan"), dtype=torch.float64))


def test_guide_and_priors_use_it_and_sample_as_before():
    guide = DiagonalNormal(3)
    params = torch.randn(4, 6)
    q = guide(params)
    assert isinstance(q.base_dist, BroadcastNormal)
    torch.manual_seed(0)
    draw = q.expand((5, 4)).rsample()
    loc, raw = params.split(3, dim=-1)
    torch.manual_seed(0)
    expected = (
        dist.Normal(loc, torch.nn.functional.softplus(raw) + guide.min_scale)
        .to_event(1)
        .expand((5, 4))
        .rsample()
    )
    assert torch.equal(draw, expected)
    for prior in (StandardNormal(3), LearnedNormal(3)):
        assert isinstance(prior().base_dist, BroadcastNormal)
