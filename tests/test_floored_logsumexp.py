"""``floored_logsumexp`` (the mixture priors' log-sum-exp over components, exp's arguments floored
at -80 for speed) against ``torch.logsumexp``: equal values (float64 1e-12, float32 to its
resolution) and gradients (float64, 1e-30) where most terms lie far below the floor, the same
-inf, +inf and NaN, and the mixture's log-density still equal to ``MixtureSameFamily``'s for
components hundreds of nats apart."""

from __future__ import annotations

import math

import pytest
import torch
from pyro import distributions as dist

from pyrovae.components.priors.diagonal_mixture import (
    EXP_FLOOR,
    DiagonalNormalMixture,
    floored_logsumexp,
)


def _spread(dtype: torch.dtype) -> torch.Tensor:
    """(6, 500) log-terms from 0 to 400 nats below each row's largest: most below the floor."""
    g = torch.Generator().manual_seed(0)
    return (-400 * torch.rand(6, 500, generator=g, dtype=torch.float64)).to(dtype) + 30


def test_values_equal_torch_logsumexp():
    a = _spread(torch.float64)
    assert (a - a.amax(-1, keepdim=True) < EXP_FLOOR).float().mean() > 0.7
    assert torch.allclose(floored_logsumexp(a), torch.logsumexp(a, -1), rtol=0, atol=1e-12)
    assert torch.allclose(
        floored_logsumexp(a.T, dim=0), torch.logsumexp(a.T, 0), rtol=0, atol=1e-12
    )
    b = _spread(torch.float32)
    assert torch.allclose(floored_logsumexp(b), torch.logsumexp(b, -1), rtol=1e-6, atol=0)


def test_no_grad_path_leaves_its_input_alone():
    a = _spread(torch.float64)
    copy = a.clone()
    with torch.no_grad():
        floored_logsumexp(a)
    assert torch.equal(a, copy)


def test_gradients_equal_torch_logsumexp():
    a = _spread(torch.float64).requires_grad_()
    weights = torch.arange(1.0, 7.0, dtype=torch.float64)
    (ours,) = torch.autograd.grad((floored_logsumexp(a) * weights).sum(), a)
    (expected,) = torch.autograd.grad((torch.logsumexp(a, -1) * weights).sum(), a)
    assert torch.allclose(ours, expected, rtol=1e-12, atol=1e-30)


@pytest.mark.parametrize(
    "row",
    [
        [-math.inf, -math.inf, -math.inf],
        [-math.inf, 2.0, -math.inf],
        [math.inf, 1.0, -3.0],
        [math.nan, 1.0, -3.0],
        [1.0, -1e30, -math.inf],
    ],
)
def test_infinities_and_nan_as_torch(row):
    a = torch.tensor([row], dtype=torch.float64)
    ours, expected = floored_logsumexp(a), torch.logsumexp(a, -1)
    assert torch.equal(ours.isnan(), expected.isnan())
    finite = ~expected.isnan()
    assert torch.allclose(ours[finite], expected[finite], rtol=0, atol=1e-12)


def test_far_apart_components_equal_mixture_same_family():
    g = torch.Generator().manual_seed(1)
    k, d = 50, 4
    logits = torch.randn(k, generator=g, dtype=torch.float64)
    loc = 40 * torch.randn(k, d, generator=g, dtype=torch.float64)  # hundreds of nats apart
    scale = torch.exp(0.3 * torch.randn(k, d, generator=g, dtype=torch.float64))
    z = loc[torch.randint(k, (30,), generator=g)] + torch.randn(30, d, dtype=torch.float64)
    ours = DiagonalNormalMixture(logits, loc, scale).log_prob(z)
    reference = dist.MixtureSameFamily(
        dist.Categorical(logits=logits), dist.Normal(loc, scale).to_event(1)
    )
    assert torch.allclose(ours, reference.log_prob(z), rtol=0, atol=1e-10)
