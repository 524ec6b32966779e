"""``LeanIndependent``, which a plate it already fits does not copy, and the Bernoulli likelihood's
``IndependentBernoulli`` under autograd (a training step): bit for bit torch's
``Independent(Bernoulli(logits), n)``. Its path without autograd: test_independent_bernoulli.py."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyrovae.components.independent_bernoulli import IndependentBernoulli
from pyrovae.components.lean_independent import LeanIndependent
from pyrovae.components.likelihoods import Bernoulli


def test_training_log_prob_equals_independent_bernoulli_bit_for_bit():
    torch.manual_seed(0)
    logits = torch.randn(5, 3, 1, 6, 6, requires_grad=True) * 4
    x = (torch.rand(3, 1, 6, 6) < 0.4).float()  # broadcast against the particles dimension
    ours = Bernoulli((1, 6, 6))(logits)
    theirs = dist.Bernoulli(logits=logits).to_event(3)
    assert isinstance(ours, IndependentBernoulli)
    assert ours.batch_shape == theirs.batch_shape and ours.event_shape == theirs.event_shape
    mine, ref = ours.log_prob(x), theirs.log_prob(x)
    assert mine.shape == (5, 3) and torch.equal(mine, ref)
    (grad,) = torch.autograd.grad(mine.sum(), logits)
    (ref_grad,) = torch.autograd.grad(ref.sum(), logits)
    assert torch.equal(grad, ref_grad)


def test_expand_and_plates_keep_the_class():
    logits = torch.randn(4, 10)
    d = Bernoulli((10,))(logits)
    assert d.expand((4,)) is d
    expanded = d.expand((2, 4))
    assert isinstance(expanded, IndependentBernoulli) and expanded.batch_shape == (2, 4)
    x = (torch.rand(4, 10) < 0.5).float()
    assert torch.equal(
        expanded.log_prob(x), dist.Bernoulli(logits=logits).to_event(1).log_prob(x).expand(2, 4)
    )
    with pyro.plate("data", 4):
        trace = pyro.poutine.trace(lambda: pyro.sample("x", d, obs=x)).get_trace()
    trace.compute_log_prob()
    assert torch.equal(trace.nodes["x"]["log_prob"], d.log_prob(x))


def test_validation_refuses_a_non_binary_value():
    d = IndependentBernoulli(torch.zeros(2, 3), 1, validate_args=True)
    with pytest.raises(ValueError):
        d.log_prob(torch.full((2, 3), 0.5))


def test_lean_independent_is_not_copied_by_a_plate_it_fits():
    loc = torch.randn(4, 3, requires_grad=True)
    d = LeanIndependent(dist.Normal(loc, 1.0), 1)
    assert d.expand((4,)) is d  # the same shape: the distribution itself
    wider = d.expand((2, 4))  # any other shape expands as Independent does
    z = torch.randn(4, 3)
    assert isinstance(wider, LeanIndependent) and wider.batch_shape == (2, 4)
    assert torch.equal(
        wider.log_prob(z), dist.Normal(loc, 1.0).to_event(1).log_prob(z).expand(2, 4)
    )
    with pyro.plate("data", 4):
        trace = pyro.poutine.trace(lambda: pyro.sample("z", d)).get_trace()
    assert trace.nodes["z"]["fn"] is d
