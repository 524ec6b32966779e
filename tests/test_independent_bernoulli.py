"""``IndependentBernoulli``'s log-density without autograd, -softplus((1 - 2x) l) summed over
the event, against torch's ``Bernoulli(logits).to_event(k)`` (float64, 1e-12; logits up to 1e4),
with x broadcast against particles as the evaluation scores it; torch's own path (bit for bit)
where autograd needs it or x is not binary; validation; ``expand``."""

from __future__ import annotations

import pytest
import torch
from pyro import distributions as dist

from pyrovae.components.independent_bernoulli import IndependentBernoulli, all_binary
from pyrovae.components.likelihoods import Bernoulli


def _logits(*shape, scale=3.0):
    g = torch.Generator().manual_seed(sum(shape))
    return scale * torch.randn(*shape, generator=g, dtype=torch.float64)


def _binary(*shape):
    g = torch.Generator().manual_seed(7 + sum(shape))
    return torch.bernoulli(torch.full(shape, 0.3, dtype=torch.float64), generator=g)


def _torch(logits, k):
    return dist.Bernoulli(logits=logits).to_event(k)


@pytest.mark.parametrize("scale", [0.1, 3.0, 60.0, 1e4])
@pytest.mark.parametrize(
    "logit_shape, x_shape, k",
    [
        ((6, 4, 1, 5, 3), (4, 1, 5, 3), 3),  # (particles, batch, image) against the batch's x
        ((6, 4, 1, 5, 3), (6, 4, 1, 5, 3), 3),  # one x per particle
        ((4, 15), (15,), 1),
        ((3, 1, 7), (2, 7), 1),  # both broadcast
        ((5,), (5,), 0),  # no event dimensions
    ],
)
def test_log_prob_equals_torch(scale, logit_shape, x_shape, k):
    logits, x = _logits(*logit_shape, scale=scale), _binary(*x_shape)
    with torch.no_grad():
        ours = IndependentBernoulli(logits, k).log_prob(x)
    expected = _torch(logits, k).log_prob(x)
    assert ours.shape == expected.shape
    torch.testing.assert_close(ours, expected, atol=1e-12, rtol=1e-15)


def test_float32_agrees_to_float_rounding():
    logits, x = _logits(50, 8, 784).float(), _binary(8, 784).float()
    with torch.no_grad():
        ours = IndependentBernoulli(logits, 1).log_prob(x)
    expected = _torch(logits.double(), 1).log_prob(x.double())
    # a sum of 784 float32 terms of a few nats each: relative error near 784 * 2^-24
    torch.testing.assert_close(ours.double(), expected, atol=0, rtol=1e-4)


def test_autograd_and_soft_targets_take_torchs_path_bit_for_bit():
    logits = _logits(3, 4, 6).requires_grad_()
    x = _binary(4, 6)
    ours = IndependentBernoulli(logits, 1).log_prob(x)
    expected = _torch(logits, 1).log_prob(x)
    assert torch.equal(ours, expected)
    grads = [torch.autograd.grad(v.sum(), logits)[0] for v in (ours, expected)]
    assert torch.equal(*grads)
    soft = torch.rand(4, 6, dtype=torch.float64)  # cross-entropy against grey levels
    theirs = dist.Bernoulli(logits=logits, validate_args=False).to_event(1)
    with torch.no_grad():
        ours = IndependentBernoulli(logits, 1, validate_args=False).log_prob(soft)
        assert torch.equal(ours, theirs.log_prob(soft))


def test_validation_still_refuses_values_outside_the_support():
    with torch.no_grad(), pytest.raises(ValueError):
        IndependentBernoulli(_logits(2, 3), 1, validate_args=True).log_prob(
            torch.full((2, 3), 2.0, dtype=torch.float64)
        )


def test_expand_mean_and_samples_are_torchs():
    logits = _logits(4, 1, 2, 3)
    ours, theirs = IndependentBernoulli(logits, 3), _torch(logits, 3)
    assert isinstance(ours, dist.Independent)
    expanded = ours.expand((5, 4))
    assert isinstance(expanded, IndependentBernoulli)
    assert expanded.batch_shape == (5, 4) and expanded.event_shape == (1, 2, 3)
    x = _binary(4, 1, 2, 3)
    with torch.no_grad():
        torch.testing.assert_close(
            expanded.log_prob(x), theirs.expand((5, 4)).log_prob(x), atol=1e-12, rtol=0
        )
    torch.testing.assert_close(ours.mean, theirs.mean, atol=0, rtol=0)
    torch.manual_seed(3)
    draw = ours.sample((2,))
    torch.manual_seed(3)
    assert torch.equal(draw, theirs.sample((2,)))


def test_the_bernoulli_likelihood_uses_it():
    likelihood = Bernoulli((1, 2, 3))
    assert isinstance(likelihood(_logits(4, 1, 2, 3)), IndependentBernoulli)


# ------------------------------------------------------------ validation by float reductions
ENTRIES = [0.0, 1.0, -0.0, 0.5, 1e-30, 1e-45, 1 - 6e-8, 2.0, -1.0, float("nan"), float("inf")]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("entry", ENTRIES)
def test_all_binary_agrees_with_torchs_comparison(entry, dtype):
    """One entry among binary ones: ``all_binary`` says what ``(x == 0) | (x == 1)`` says."""
    x = _binary(4, 5).to(dtype)
    x[2, 3] = entry
    assert all_binary(x) == bool(((x == 0) | (x == 1)).all())
    assert all_binary(x[:0]) and all_binary(x.long().clamp(0, 1))  # empty; not floating


@pytest.mark.parametrize("entry", ENTRIES)
def test_validation_refuses_what_torch_refuses_with_torchs_error(entry):
    logits, x = _logits(4, 5), _binary(4, 5)
    x[1, 2] = entry
    ours = IndependentBernoulli(logits, 1, validate_args=True)
    theirs = dist.Bernoulli(logits=logits, validate_args=True).to_event(1)
    torch.testing.assert_close(ours.support.check(x), theirs.support.check(x))
    if bool(theirs.support.check(x).all()):
        torch.testing.assert_close(ours.log_prob(x), theirs.log_prob(x), rtol=1e-12, atol=1e-12)
    else:
        for distribution in (ours, theirs):  # torch's message: the value, the support
            with pytest.raises(ValueError, match="Expected value argument .* support"):
                distribution.log_prob(x)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_validation_of_the_logits_is_torchs(bad):
    logits = _logits(4, 5)
    logits[0, 1] = bad
    torch_refuses = bool(torch.isnan(logits).any())  # torch's ``real`` allows infinities
    if torch_refuses:
        with pytest.raises(ValueError, match="logits"):
            IndependentBernoulli(logits, 1, validate_args=True)
        with pytest.raises(ValueError, match="logits"):
            dist.Bernoulli(logits=logits, validate_args=True)
    else:
        IndependentBernoulli(logits, 1, validate_args=True)
        dist.Bernoulli(logits=logits, validate_args=True)
