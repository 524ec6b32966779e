"""The conditional VAE (Sohn et al. 2015): its bound against the terms computed from its
distributions, generation per label, and the config keys it reads."""

from __future__ import annotations

import pyro
import pytest
import torch
from pyro import poutine
from pyro.distributions.kl import kl_divergence
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

import pyrovae
from pyrovae.components.programs import build_program
from pyrovae.components.programs.cvae import ConditionalVAE, joined
from pyrovae.errors import ConfigError

CLASSES = 4
SHAPE = (1, 3, 3)
CONFIG = [
    "model.program=cvae",
    "model.latent_dim=2",
    "model.encoder={name='mlp', hidden=[8]}",
    "model.decoder={name='mlp', hidden=[8]}",
]


@pytest.fixture
def program() -> ConditionalVAE:
    return build_program(pyrovae.load_config(None, CONFIG).model, SHAPE, CLASSES)


@pytest.fixture
def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    x = torch.bernoulli(torch.full((6, *SHAPE), 0.3), generator=g)
    return x, torch.randint(CLASSES, (6,), generator=g)


def test_the_bound_is_its_terms_at_the_same_draws(program, data):
    x, y = data
    pyro.set_rng_seed(4)
    monte_carlo = -Trace_ELBO().loss(program.model, program.guide, x, y)
    pyro.set_rng_seed(4)
    analytic = -TraceMeanField_ELBO().loss(program.model, program.guide, x, y)
    pyro.set_rng_seed(4)
    with torch.no_grad():
        q = program.encode(x, y)
        z = q.rsample()
        reconstruction = program.decode(z, y).log_prob(x)
        by_hand = reconstruction + program.prior().log_prob(z) - q.log_prob(z)
        with_kl = reconstruction - kl_divergence(q, program.prior().expand([len(x)]))
    assert monte_carlo == pytest.approx(float(by_hand.sum()), abs=1e-4)
    assert analytic == pytest.approx(float(with_kl.sum()), abs=1e-4)


def test_the_label_changes_what_the_networks_see(program, data):
    x, y = data
    other = (y + 1) % CLASSES
    assert not torch.allclose(program.encode(x, y).mean, program.encode(x, other).mean)
    z = torch.zeros(len(x), 2)
    assert not torch.allclose(program.decode(z, y).mean, program.decode(z, other).mean)
    # An enumerated label (C, 1, C) beside a batch (B, D) broadcasts to (C, B, D + C).
    assert joined(torch.zeros(5, 7), torch.zeros(3, 1, 4)).shape == (3, 5, 11)


def test_it_generates_per_label_and_draws_labels_uniformly(program, data):
    _, y = data
    assert program.model(None, y=y).shape == (6, *SHAPE)
    trace = poutine.trace(program.model).get_trace(None, batch_size=5)
    assert trace.nodes["y"]["value"].shape == (5,)
    assert "y" not in poutine.trace(program.model).get_trace(None, y=y).nodes
    assert program.sample_labels(torch.tensor([3, 3])).shape == (2, *SHAPE)
    assert program.sample(7).shape == (7, *SHAPE)
    assert program.reconstruct(*data).shape == (6, *SHAPE)
    assert program.latent_mean(*data).shape == (6, 2)
    with pytest.raises(ConfigError, match="pass y with x"):
        program.model(data[0])


def test_it_reads_the_vae_sections_but_not_the_prior_and_needs_labels():
    config = pyrovae.load_config(None, CONFIG)
    assert set(config.to_dict()["model"]) == {
        "program",
        "latent_dim",
        "guide",
        "likelihood",
        "encoder",
        "decoder",
    }
    with pytest.raises(ConfigError, match="does not use it"):
        pyrovae.load_config(None, [*CONFIG, "model.prior=mixture"])
    with pytest.raises(ConfigError, match="needs a dataset with labels"):
        build_program(config.model, SHAPE, None)
