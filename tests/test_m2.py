"""The semi-supervised VAE M2 (Kingma et al. 2014): the enumerated bound against the sum over
classes by hand, the enumerated and sampled-label estimators against each other, M2 with every
label observed against the conditional VAE, the label-summed log p(x) against a model whose
evidence is known in closed form, and Pyro's own idioms on the program."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from labelled_linear_gaussian import LabelledLinearGaussian
from pyro.infer import SVI, Predictive, Trace_ELBO, TraceEnum_ELBO
from pyro.optim import Adam

import pyrovae
from pyrovae.components.programs import build_program
from pyrovae.components.programs.m2 import M2
from pyrovae.errors import ConfigError
from pyrovae.inference.elbo import negative_elbo
from pyrovae.inference.marginal_likelihood import importance_estimate
from pyrovae.training.distributed import ELBOLoss

CLASSES = 3
SHAPE = (1, 2, 3)  # six binary pixels


def tiny_m2(**options) -> M2:
    config = pyrovae.load_config(None, ["model.program=m2"])
    sizes = {"latent": 2, "hidden": (8,), "classifier": (8,), **options}
    return M2(SHAPE, config.model, num_classes=CLASSES, **sizes)


@pytest.fixture
def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.bernoulli(torch.full((5, *SHAPE), 0.4), generator=g)
    return x, torch.randint(CLASSES, (5,), generator=g)


def test_the_enumerated_elbo_is_the_sum_over_classes_by_hand(data):
    x, _ = data
    program = tiny_m2()
    pyro.set_rng_seed(7)
    enumerated = -TraceEnum_ELBO(max_plate_nesting=1).loss(program.model, program.guide, x)
    # By hand: the same draws z_y ~ q(z|x,y) for every class y (one batched draw, as Pyro's),
    # then sum_y q(y|x) [log p(y) + log p(z_y) + log p(x|y,z_y) - log q(z_y|x,y)] + H(q(y|x)).
    pyro.set_rng_seed(7)
    ys = torch.arange(CLASSES).unsqueeze(-1)  # (C, 1)
    with torch.no_grad():
        q_z = program.encode(x, ys)
        z = q_z.rsample()  # (C, B, d)
        q_y = dist.Categorical(logits=program.classify(x))  # batch (B,)
        p_y = dist.Categorical(logits=torch.zeros(CLASSES))
        per_class = (
            p_y.log_prob(ys)
            + program.prior().log_prob(z)
            + program.decode(z, ys).log_prob(x)
            - q_z.log_prob(z)
        )  # (C, B)
        by_hand = (q_y.probs.T * per_class).sum(0) + q_y.entropy()
    assert enumerated == pytest.approx(float(by_hand.sum()), abs=1e-4)


def _draws(program, x, elbo, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` values of the bound and of its gradient for the classifier's parameters."""
    params = list(program.classifier.parameters())
    values, grads = [], []
    for _ in range(count):
        loss = elbo.differentiable_loss(program.model, program.guide, x)
        grad = torch.autograd.grad(loss, params)
        values.append(-loss.detach())
        grads.append(torch.cat([g.reshape(-1) for g in grad]))
    return torch.stack(values), torch.stack(grads)


def test_enumerated_and_sampled_labels_agree_in_expectation_and_enumeration_has_less_variance(
    data,
):
    x, _ = data
    program = tiny_m2()
    pyro.set_rng_seed(0)
    with pyro.validation_enabled(False):
        enum_values, enum_grads = _draws(program, x, TraceEnum_ELBO(max_plate_nesting=1), 200)
        sampled_values, sampled_grads = _draws(program, x, Trace_ELBO(), 200)
    # The same bound: the means differ by less than 4 standard errors of their difference.
    se = math.sqrt(enum_values.var() / 200 + sampled_values.var() / 200)
    assert abs(enum_values.mean() - sampled_values.mean()) < 4 * se
    # The same gradient of q(y|x) in expectation (every component within 5 standard errors)...
    grad_se = (enum_grads.var(0) / 200 + sampled_grads.var(0) / 200).sqrt()
    z = (enum_grads.mean(0) - sampled_grads.mean(0)).abs() / grad_se.clamp(min=1e-12)
    assert z.max() < 5, f"max z-score {z.max():.2f}"
    # ... with a far smaller variance when y is summed out than with the score function
    # (measured: 0.010 of it; the bound's own variance 0.87 against 3.2).
    assert enum_grads.var(0).sum() < 0.1 * sampled_grads.var(0).sum()
    assert enum_values.var() < sampled_values.var()


def test_with_every_label_observed_m2_is_the_conditional_vae_plus_log_p_y(data):
    x, y = data
    config = pyrovae.load_config(
        None,
        [
            "model.program=cvae",
            "model.latent_dim=2",
            "model.encoder={name='mlp', hidden=[8]}",
            "model.decoder={name='mlp', hidden=[8]}",
        ],
    )
    cvae = build_program(config.model, SHAPE, CLASSES)
    m2 = tiny_m2(alpha=0.0)
    missing, unexpected = m2.load_state_dict(cvae.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("classifier.") for k in missing)
    elbo = Trace_ELBO()
    pyro.set_rng_seed(3)
    m2_loss = ELBOLoss(m2, elbo)(x, y=y)
    pyro.set_rng_seed(3)
    cvae_loss = ELBOLoss(cvae, elbo)(x, y=y)
    log_p_y = len(x) * math.log(1 / CLASSES)  # n datapoints, p(y) uniform
    assert m2_loss.item() == pytest.approx(cvae_loss.item() - log_p_y, abs=1e-4)
    # The auxiliary loss adds alpha * sum -log q(y|x) when every label is observed.
    m2.alpha = 0.5
    pyro.set_rng_seed(3)
    with_auxiliary = ELBOLoss(m2, elbo)(x, y=y)
    classify = -dist.Categorical(logits=m2.classify(x)).log_prob(y).sum()
    difference = (with_auxiliary - m2_loss).item()
    assert difference == pytest.approx(0.5 * classify.item(), rel=1e-5)


@pytest.mark.filterwarnings("ignore:TraceEnum_ELBO found no sample sites")  # labelled: none
def test_a_mixed_batch_is_its_labelled_and_unlabelled_parts(data):
    x, y = data
    program = tiny_m2(alpha=0.3)
    hidden = y.clone()
    hidden[:3] = -1  # three unlabelled, two labelled
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    pyro.set_rng_seed(5)
    mixed = ELBOLoss(program, elbo)(x, y=hidden)
    pyro.set_rng_seed(5)
    unlabelled = elbo.differentiable_loss(program.model, program.guide, x[:3])
    labelled = elbo.differentiable_loss(program.model, program.guide, x[3:], y[3:])
    auxiliary = program.auxiliary_loss(x[3:], y[3:]) * 5 / 2
    assert mixed.item() == pytest.approx((unlabelled + labelled + auxiliary).item(), abs=1e-4)


def test_the_label_summed_log_likelihood_is_exact_with_the_exact_posterior(float64):
    program = LabelledLinearGaussian()
    pyro.set_rng_seed(0)
    y = torch.randint(3, (8,))
    x = program.model(None, y=y).detach()
    # With q(z|x,y) exact, every weight sum_y p(x, y, z_y) / q(z_y|x,y) is p(x) itself, however
    # far q(y|x) is from p(y|x): the label is summed out, not importance-sampled.
    estimate = importance_estimate(program.model, program.guide, x, particles=3, chunk_size=12)
    exact = program.log_evidence(x)
    assert torch.allclose(estimate.log_likelihood, exact, atol=1e-8)
    assert torch.allclose(estimate.elbo, program.exact_unlabelled_bound(x), atol=1e-8)
    assert not estimate.analytic_kl
    assert -negative_elbo(program, x) == pytest.approx(
        float(program.exact_unlabelled_bound(x).mean()), abs=1e-8
    )


def test_the_label_summed_log_likelihood_converges_with_an_inexact_guide(float64):
    program = LabelledLinearGaussian()
    pyro.set_rng_seed(1)
    x = program.model(None, batch_size=6).detach()
    exact = program.log_evidence(x)
    program.posterior = _shifted(program)
    estimate = importance_estimate(program.model, program.guide, x, particles=4000)
    # Measured: at most 0.016 from log p(x) (0.1 at K = 100), while the ELBO is 0.5 to 174
    # nats below it (q(y|x) is far from p(y|x)).
    assert (estimate.log_likelihood - exact).abs().max() < 0.05
    assert (estimate.elbo < exact).all()


def _shifted(program: LabelledLinearGaussian):
    """An inexact q(z|x,y): the exact posterior's mean moved by 0.1, its covariance widened."""
    exact = type(program).posterior.__get__(program)

    def posterior(x):
        means, covariance = exact(x)
        return means + 0.1, 1.2 * covariance

    return posterior


def test_pyro_idioms_train_and_run_m2(data):
    x, y = data
    x = x.repeat(4, 1, 1, 1)
    program = tiny_m2()
    svi = SVI(program.model, program.guide, Adam({"lr": 0.02}), TraceEnum_ELBO(max_plate_nesting=1))
    first = svi.evaluate_loss(x)
    for _ in range(60):
        svi.step(x)
    assert svi.evaluate_loss(x) < first - 5  # measured: about 35 nats lower
    assert program.model(None, batch_size=4).shape == (4, *SHAPE)
    assert program.model(None, y=y).shape == (5, *SHAPE)
    drawn = Predictive(program.model, guide=program.guide, num_samples=2)(x[:5])
    assert drawn["x"].shape == (2, 5, *SHAPE) and drawn["y"].shape == (2, 5)
    assert program.classify(x).shape == (20, CLASSES)
    assert program.latent_mean(x).shape == (20, 2) == program.latent_mean(x, y.repeat(4)).shape


def test_the_latent_mean_without_labels_is_the_mean_over_q_y(data):
    x, _ = data
    program = tiny_m2()
    probs = torch.softmax(program.classify(x), -1)
    per_class = torch.stack(
        [program.latent_mean(x, torch.full((len(x),), c)) for c in range(CLASSES)]
    )
    expected = (probs.T.unsqueeze(-1) * per_class).sum(0)
    assert torch.allclose(program.latent_mean(x), expected, atol=1e-6)


def test_m2_refuses_data_without_labels_and_estimators_that_cannot_train_it():
    config = pyrovae.load_config(None, ["model.program=m2"])
    with pytest.raises(ConfigError, match="needs a dataset with labels"):
        build_program(config.model, SHAPE, None)
    with pytest.raises(ConfigError, match="alpha must be >= 0"):
        M2(SHAPE, config.model, num_classes=3, alpha=-1)
