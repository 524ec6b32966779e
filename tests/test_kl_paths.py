"""Which KL path ``TraceMeanField_ELBO`` takes for each prior x guide pair, and that the analytic
and the Monte Carlo paths estimate the same bound.

Pyro's ``TraceMeanField_ELBO`` calls ``kl_divergence(q, p)`` on the latent site and falls back on
Monte Carlo (log p(z) - log q(z) at the sampled z) when it raises ``NotImplementedError``; the
tests call it the same way on the distributions of real traces.
"""

from __future__ import annotations

import itertools
import math

import pyro
import pytest
import torch
from pyro import distributions as dist
from pyro import poutine
from pyro.infer import TraceMeanField_ELBO
from torch.distributions import kl_divergence

from pyrovae.components.guides.kl import kl_mvn_diagonal_normal
from pyrovae.components.programs.vae import LATENT, build_vae
from pyrovae.config import Component, ModelConfig
from pyrovae.registry import registered

ANALYTIC = {
    (prior, guide)
    for prior in ("standard_normal", "learned_normal")
    for guide in ("diagonal_normal", "full_normal")
}
SMALL = {"vamp": {"components": 5}, "mixture": {"components": 3}, "flow": {"steps": 2}}
PAIRS = [
    (prior, guide)
    for prior, guide in itertools.product(registered("prior"), registered("guide"))
    if (prior, guide) != ("vamp", "planar")  # refused at build time (test_priors.py)
]


def _vae(prior: str, guide: str):
    config = ModelConfig(
        latent_dim=3,
        prior=Component(prior, SMALL.get(prior, {})),
        guide=Component(guide),
        encoder=Component("mlp", {"hidden": (16,)}),
        decoder=Component("mlp", {"hidden": (16,)}),
    )
    vae = build_vae(config, (1, 8, 8))
    if prior == "learned_normal":  # move off N(0, I) so the learned parameters matter
        with torch.no_grad():
            vae.prior.loc.add_(0.5)
    return vae


def _kl_path(vae, x) -> str:
    guide_trace = poutine.trace(vae.guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(vae.model, trace=guide_trace)).get_trace(x)
    q, p = guide_trace.nodes[LATENT]["fn"], model_trace.nodes[LATENT]["fn"]
    try:
        kl_divergence(q, p)
    except NotImplementedError:
        return "monte carlo"
    return "analytic"


@pytest.mark.parametrize(("prior", "guide"), PAIRS, ids=["-".join(p) for p in PAIRS])
def test_kl_path_and_same_bound(prior, guide, digits_batch):
    x = digits_batch[:8]
    vae = _vae(prior, guide)
    expected_path = "analytic" if (prior, guide) in ANALYTIC else "monte carlo"
    assert _kl_path(vae, x) == expected_path

    n = 2000
    # The Monte Carlo bound, particle by particle: log p(x, z) - log q(z|x), summed over data.
    with torch.no_grad(), pyro.plate("particles", n, dim=-2):
        guide_trace = poutine.trace(vae.guide).get_trace(x)
        model_trace = poutine.trace(poutine.replay(vae.model, trace=guide_trace)).get_trace(x)
        model_trace.compute_log_prob()
        guide_trace.compute_log_prob()
    per_particle = sum(
        site["log_prob"] for site in model_trace.nodes.values() if site["type"] == "sample"
    ) - sum(site["log_prob"] for site in guide_trace.nodes.values() if site["type"] == "sample")
    per_particle = per_particle.sum(-1)  # (n,)
    mc_bound = float(per_particle.mean())
    stderr = float(per_particle.std()) / math.sqrt(n)

    elbo = TraceMeanField_ELBO(num_particles=n, vectorize_particles=True, max_plate_nesting=1)
    with torch.no_grad():
        meanfield_bound = -float(elbo.differentiable_loss(vae.model, vae.guide, x))
    # Two estimates of one bound: their difference has a standard error of at most
    # sqrt(2) * stderr (the analytic KL only removes variance); 5 of them is a 1-in-10^6 miss.
    assert abs(meanfield_bound - mc_bound) < 5 * math.sqrt(2) * stderr, (
        meanfield_bound,
        mc_bound,
        stderr,
    )


def test_kl_full_normal_to_diagonal_normal_matches_the_closed_form():
    torch.manual_seed(3)
    d = 4
    loc_q, loc_p = torch.randn(d), torch.randn(d)
    L = torch.tril(torch.randn(d, d), -1) + torch.diag(torch.rand(d) + 0.5)
    s = torch.rand(d) + 0.5
    q = dist.MultivariateNormal(loc_q, scale_tril=L)
    p = dist.Normal(loc_p, s).to_event(1)
    # KL(N(m, S) || N(mu, diag(s^2))) = 1/2 [tr(S / s^2) + sum((mu - m)^2 / s^2) - d
    #                                         + sum(log s^2) - log det S]
    cov = L @ L.T
    expected = 0.5 * (
        (torch.diagonal(cov) / s**2).sum()
        + ((loc_p - loc_q) ** 2 / s**2).sum()
        - d
        + (s**2).log().sum()
        - torch.logdet(cov)
    )
    torch.testing.assert_close(kl_divergence(q, p), expected)
    torch.testing.assert_close(kl_mvn_diagonal_normal(q, p), expected)
    # Batched, as under the data plate: one KL per datapoint.
    qb = dist.MultivariateNormal(loc_q.expand(5, d), scale_tril=L)
    pb = p.expand((5,))
    torch.testing.assert_close(kl_divergence(qb, pb), expected.expand(5))


def test_kl_full_normal_to_other_independent_falls_back_to_monte_carlo():
    q = dist.MultivariateNormal(torch.zeros(2), scale_tril=torch.eye(2))
    p = dist.Laplace(torch.zeros(2), torch.ones(2)).to_event(1)
    with pytest.raises(NotImplementedError):
        kl_divergence(q, p)
