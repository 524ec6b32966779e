"""The ELBO estimators on a Bernoulli VAE with random weights and real (binarized) digits.

This file proves:
- ``trace`` (Trace_ELBO) and ``meanfield`` (TraceMeanField_ELBO) estimate the same bound, within
  Monte Carlo error, for a prior with an analytic KL and for one without;
- ``meanfield`` really uses the analytic KL: at the same draws of z its value is exactly
  -log p(x|z) + KL(q || p), and the analytic KL equals a Monte Carlo KL;
- with a prior that has no registered KL (a test-only Student-t prior), ``meanfield`` falls back
  to the Monte Carlo term: at the same draws it equals ``trace`` exactly;
- the KL weight (beta) scales the latent term only: loss(beta) - loss(1) = (beta - 1) KL;
- vectorized particles estimate the same expectation as one particle, with K times less
  variance (so the particles are independent draws, not one draw broadcast).

Tolerances are k standard errors of the Monte Carlo estimates; the seeds are fixed, so the tests
are deterministic, and k = 4 or 5 keeps them valid for any seed with probability > 0.9999.
"""

from __future__ import annotations

import math

import pyro
import pytest
import torch
from pyro import distributions as dist
from pyro import poutine
from torch.distributions import kl_divergence

import pyrovae
from pyrovae.data import load_splits
from pyrovae.estimators import meanfield, trace
from pyrovae.latent_weight import weight_latents
from pyrovae.model import LATENT
from pyrovae.priors import Prior
from pyrovae.registry import _REGISTRY, register


class StudentTPrior(Prior):
    """Independent Student-t latents: torch registers no KL from a Normal to a StudentT."""

    def __init__(self, latent_dim: int, df: float = 4.0) -> None:
        super().__init__(latent_dim)
        self.df = df
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))

    def forward(self) -> dist.TorchDistribution:
        return dist.StudentT(self.df, self.loc, self.scale).to_event(1)


@pytest.fixture
def student_t_prior():
    """Register the Student-t prior for one test only, through the public decorator."""
    register("prior", "test_student_t")(StudentTPrior)
    yield "test_student_t"
    del _REGISTRY["prior"]["test_student_t"]


@pytest.fixture(scope="module")
def binary_digits() -> torch.Tensor:
    """64 real digits, binarized once with pyrovae's fixed seed (the validation split)."""
    splits = load_splits(pyrovae.load_config().data, torch.device("cpu"))
    return splits.valid[:64].double()


def make_vae(prior: str) -> pyrovae.VAE:
    config = pyrovae.load_config(
        None,
        [
            f"model.prior={prior}",
            "model.latent_dim=4",
            'model.encoder={name="mlp", hidden=[32]}',
            'model.decoder={name="mlp", hidden=[32]}',
        ],
    )
    torch.manual_seed(0)
    vae = pyrovae.build_vae(config.model, (1, 8, 8)).double()
    if prior == "learned_normal":  # move the learned prior away from N(0, I)
        vae.prior.loc = torch.linspace(-1, 1, 4, dtype=torch.double)
        vae.prior.scale = torch.linspace(0.5, 2, 4, dtype=torch.double)
    return vae


def elbo_samples(estimator, vae: pyrovae.VAE, x: torch.Tensor, repeats: int) -> torch.Tensor:
    values = [-estimator.loss(vae.model, vae.guide, x) for _ in range(repeats)]
    return torch.tensor(values, dtype=torch.double)


def loss_at_seed(
    estimator, vae: pyrovae.VAE, x: torch.Tensor, seed: int = 7, kl_weight: float = 1.0
) -> float:
    pyro.set_rng_seed(seed)
    model, guide = (weight_latents(fn, kl_weight) for fn in (vae.model, vae.guide))
    return estimator.loss(model, guide, x)


def guide_draw_at_seed(vae: pyrovae.VAE, x: torch.Tensor, seed: int = 7) -> torch.Tensor:
    """The z an estimator with one particle draws at ``seed`` (the guide runs first)."""
    pyro.set_rng_seed(seed)
    return poutine.trace(vae.guide).get_trace(x).nodes[LATENT]["value"]


@pytest.mark.parametrize("prior", ["standard_normal", "learned_normal", "student_t"])
def test_trace_and_meanfield_estimate_the_same_bound(prior, binary_digits, request):
    if prior == "student_t":
        prior = request.getfixturevalue("student_t_prior")
    vae = make_vae(prior)
    a = elbo_samples(trace(particles=20), vae, binary_digits, repeats=30)
    b = elbo_samples(meanfield(particles=20), vae, binary_digits, repeats=30)
    stderr = math.sqrt(a.var() / len(a) + b.var() / len(b))
    assert abs(a.mean() - b.mean()) < 4 * stderr, (a.mean(), b.mean(), stderr)
    # The comparison is sharp: the standard error is below 0.05 nats per datapoint.
    assert stderr < 0.05 * len(binary_digits)


@pytest.mark.parametrize("prior", ["standard_normal", "learned_normal"])
def test_meanfield_is_reconstruction_minus_the_analytic_kl(prior, binary_digits):
    vae = make_vae(prior)
    x = binary_digits
    loss = loss_at_seed(meanfield(particles=1), vae, x)
    z = guide_draw_at_seed(vae, x)
    with torch.no_grad():
        kl = kl_divergence(vae.encode(x), vae.prior())
        expected = -vae.decode(z).log_prob(x).sum() + kl.sum()
    assert loss == pytest.approx(float(expected), rel=1e-12)
    # ... which differs from the all-Monte-Carlo Trace_ELBO at the same draw of z.
    assert abs(loss - loss_at_seed(trace(particles=1), vae, x)) > 1.0


@pytest.mark.parametrize("prior", ["standard_normal", "learned_normal"])
def test_analytic_kl_equals_a_monte_carlo_kl(prior, binary_digits):
    vae = make_vae(prior)
    with torch.no_grad():
        q, p = vae.encode(binary_digits), vae.prior()
        analytic = kl_divergence(q, p)  # (64,): one KL per datapoint
        z = q.sample((20_000,))
        terms = q.log_prob(z) - p.log_prob(z)  # (20000, 64)
    estimate = terms.mean(0)
    stderr = terms.std(0) / math.sqrt(len(terms))
    assert (analytic > 0.1).all()  # a non-trivial KL to get right
    # 5 standard errors for each of 64 datapoints: P(any false failure) < 64 * 6e-7.
    assert ((estimate - analytic).abs() < 5 * stderr).all(), (estimate - analytic) / stderr


def test_no_registered_kl_falls_back_to_monte_carlo(student_t_prior, binary_digits):
    vae = make_vae(student_t_prior)
    x = binary_digits
    with pytest.raises(NotImplementedError), torch.no_grad():
        kl_divergence(vae.encode(x), vae.prior())
    # Monte Carlo at the same draws of z: log p(x|z) + log p(z) - log q(z|x), as in Trace_ELBO.
    fallback = loss_at_seed(meanfield(particles=1), vae, x)
    assert fallback == pytest.approx(loss_at_seed(trace(particles=1), vae, x), rel=1e-12)
    z = guide_draw_at_seed(vae, x)
    with torch.no_grad():
        expected = -(
            vae.decode(z).log_prob(x) + vae.prior().log_prob(z) - vae.encode(x).log_prob(z)
        )
    assert fallback == pytest.approx(float(expected.sum()), rel=1e-12)


@pytest.mark.parametrize("beta", [0.0, 0.25, 3.0])
def test_kl_weight_scales_only_the_latent_term(beta, binary_digits):
    vae = make_vae("learned_normal")
    x = binary_digits
    with torch.no_grad():
        kl = float(kl_divergence(vae.encode(x), vae.prior()).sum())
        z = guide_draw_at_seed(vae, x)
        log_ratio = float((vae.encode(x).log_prob(z) - vae.prior().log_prob(z)).sum())
    for estimator, latent_term in ((meanfield(particles=1), kl), (trace(particles=1), log_ratio)):
        base = loss_at_seed(estimator, vae, x)
        scaled = loss_at_seed(estimator, vae, x, kl_weight=beta)
        assert scaled - base == pytest.approx((beta - 1) * latent_term, rel=1e-9, abs=1e-9)


def test_vectorized_particles_match_one_particle(binary_digits):
    vae = make_vae("standard_normal")
    k = 20
    vectorized = trace(particles=k)
    assert vectorized.vectorize_particles and vectorized.num_particles == k
    single = elbo_samples(trace(particles=1), vae, binary_digits, repeats=400)
    many = elbo_samples(vectorized, vae, binary_digits, repeats=100)
    stderr = math.sqrt(single.var() / len(single) + many.var() / len(many))
    assert abs(single.mean() - many.mean()) < 4 * stderr, (single.mean(), many.mean(), stderr)
    # K independent particles divide the variance by K. The ratio of two sample variances from
    # 400 and 100 draws (an F(399, 99) variable) is within a factor 2 of its expectation with
    # probability 1 - 3e-5.
    ratio = float(single.var() / many.var())
    assert k / 2 < ratio < 2 * k, ratio
