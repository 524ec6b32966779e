"""``IndependentNormal``'s fused ``log_prob`` against torch's ``Normal(loc, scale).to_event(n)``:
equal values and gradients (float64, 1e-12) for every shape a plate, a particle dimension or a
broadcast parameter gives; torch's own path with validation on; plates and KL see the
``Independent`` they saw before."""

from __future__ import annotations

import pyro
import pytest
import torch
from pyro import distributions as dist
from pyro import poutine
from pyro.distributions.kl import kl_divergence

from pyrovae.components.broadcast_normal import BroadcastNormal
from pyrovae.components.guides.gaussian import DiagonalNormal
from pyrovae.components.independent_normal import IndependentNormal
from pyrovae.components.priors.gaussian import LearnedNormal, StandardNormal

TOLERANCE = dict(rtol=1e-12, atol=1e-12)


def _params(*shape, requires_grad=False):
    g = torch.Generator().manual_seed(sum(shape) + len(shape))
    loc = torch.randn(*shape, generator=g, dtype=torch.float64)
    scale = torch.exp(0.5 * torch.randn(*shape, generator=g, dtype=torch.float64))
    return loc.requires_grad_(requires_grad), scale.requires_grad_(requires_grad)


def _pair(loc, scale, event_dims=1, batch=None):
    ours = IndependentNormal(loc, scale, event_dims, validate_args=False)
    theirs = dist.Normal(loc, scale, validate_args=False).to_event(event_dims)
    if batch is not None:
        ours, theirs = ours.expand(batch), theirs.expand(batch)
    return ours, theirs


CASES = [
    # (param shape, event dims, plate batch shape or None, value shape)
    ((4, 3), 1, None, (4, 3)),  # q(z|x): one value per datapoint
    ((4, 3), 1, None, (7, 4, 3)),  # K particles of it
    ((3,), 1, (4,), (4, 3)),  # a prior under the data plate
    ((3,), 1, (7, 4), (7, 4, 3)),  # ... and under a particles plate
    ((3,), 1, (5, 2), (3,)),  # one value scored against the whole batch
    ((2, 4, 3), 2, None, (2, 4, 3)),  # two event dimensions
    ((4, 1), 1, None, (4, 3)),  # a value that widens the event: torch's path
]


@pytest.mark.parametrize("shape, event_dims, batch, value_shape", CASES)
def test_log_prob_and_gradients_equal_torchs(shape, event_dims, batch, value_shape):
    loc, scale = _params(*shape, requires_grad=True)
    ours, theirs = _pair(loc, scale, event_dims, batch)
    value = torch.randn(value_shape, dtype=torch.float64, requires_grad=True)
    result, expected = ours.log_prob(value), theirs.log_prob(value)
    assert result.shape == expected.shape
    torch.testing.assert_close(result, expected, **TOLERANCE)
    weights = torch.rand(expected.shape, dtype=torch.float64)  # not just the sum's gradient
    grads = [
        torch.autograd.grad((v * weights).sum(), [loc, scale, value]) for v in (result, expected)
    ]
    for ours_grad, torch_grad in zip(*grads, strict=True):
        torch.testing.assert_close(ours_grad, torch_grad, **TOLERANCE)
    with torch.no_grad():
        torch.testing.assert_close(ours.log_prob(value), expected.detach(), **TOLERANCE)


def test_the_unexpanded_scale_is_logged_once_per_dimension():
    """A prior's ``log s`` on its own ``(D,)`` parameters, not on the plate's ``(B, D)`` copy:
    the value the plate's copy would give, from a scale that was never expanded."""
    prior = IndependentNormal(*_params(3), validate_args=False).expand((1000,))
    loc, scale = prior.base_dist._unexpanded
    assert loc.shape == scale.shape == (3,)
    assert prior.base_dist.scale.shape == (1000, 3)


def test_validation_refuses_a_bad_value_as_torch_does():
    ours = IndependentNormal(*_params(3), validate_args=True)
    value = torch.randn(3, dtype=torch.float64)
    expected = dist.Normal(*_params(3)).to_event(1).log_prob(value)
    torch.testing.assert_close(ours.log_prob(value), expected, **TOLERANCE)
    with pytest.raises(ValueError):
        ours.log_prob(torch.full((3,), float("nan"), dtype=torch.float64))
    with pytest.raises(ValueError):
        ours.log_prob(torch.zeros(4, dtype=torch.float64))  # the wrong event shape


def test_expand_keeps_the_class_and_the_same_shape_is_itself():
    q = IndependentNormal(*_params(4, 3))
    assert q.expand((4,)) is q
    wider = q.expand((7, 4))
    assert type(wider) is IndependentNormal and wider.batch_shape == (7, 4)
    assert wider.event_shape == (3,) and isinstance(wider.base_dist, BroadcastNormal)
    torch.manual_seed(0)
    draw = wider.rsample()
    torch.manual_seed(0)
    assert torch.equal(draw, dist.Normal(*_params(4, 3)).to_event(1).expand((7, 4)).rsample())


def test_kl_divergence_dispatches_as_for_independent():
    q, q_torch = _pair(*_params(4, 3))
    p, p_torch = _pair(*_params(3), batch=(4,))
    torch.testing.assert_close(kl_divergence(q, p), kl_divergence(q_torch, p_torch), **TOLERANCE)


def test_a_pyro_plate_scores_the_site_as_torch_would():
    loc, scale = _params(3)

    def model(x):
        with pyro.plate("data", len(x)):
            pyro.sample("z", IndependentNormal(loc, scale), obs=x)

    x = torch.randn(5, 3, dtype=torch.float64)
    trace = poutine.trace(model).get_trace(x)
    trace.compute_log_prob()
    expected = dist.Normal(loc, scale).to_event(1).log_prob(x)
    torch.testing.assert_close(trace.nodes["z"]["log_prob"], expected, **TOLERANCE)


def test_the_diagonal_guide_and_the_gaussian_priors_use_it():
    assert type(DiagonalNormal(3)(torch.randn(4, 6))) is IndependentNormal
    for prior in (StandardNormal(3), LearnedNormal(3)):
        assert type(prior()) is IndependentNormal
