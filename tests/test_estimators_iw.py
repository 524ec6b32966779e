"""The iwae, renyi, stl and dreg estimators: values against Pyro's and the closed forms,
gradient means against the reference estimators', variances where theory fixes them, refusals."""

from __future__ import annotations

import pyro
import pytest
import torch
from pyro import distributions as dist
from pyro.infer import RenyiELBO

from pyrovae.errors import ConfigError
from pyrovae.estimators import ImportanceWeightedELBO
from pyrovae.gradients import parameter_groups
from pyrovae.importance import log_weights, particle_traces
from pyrovae.linear_gaussian import marginal
from pyrovae.registry import build
from tests.linear_gaussian_vae import digits, linear_gaussian_vae, set_guide

N = 20  # datapoints per gradient draw: small, so that 300 draws stay fast


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return digits(N)


@pytest.fixture
def vae():
    vae = linear_gaussian_vae()
    set_guide(vae, shift=1.0, scale_factor=1.5)
    return vae


def gradients(vae, x, elbo, seed: int = 0) -> dict[str, torch.Tensor]:
    """One gradient draw of the loss per datapoint, flattened per parameter group."""
    pyro.set_rng_seed(seed)
    loss = elbo(vae.model, vae.guide)(x) / len(x)
    groups = parameter_groups(vae, x)
    params = [p for group in groups.values() for p in group]
    grads = dict(zip(map(id, params), torch.autograd.grad(loss, params), strict=True))
    return {
        name: torch.cat([grads[id(p)].reshape(-1) for p in group]).double()
        for name, group in groups.items()
    }


def draws(vae, x, elbo, count: int, seed: int) -> dict[str, torch.Tensor]:
    """``count`` independent gradient draws: ``(count, components)`` per group."""
    samples = [gradients(vae, x, elbo, seed + i) for i in range(count)]
    return {name: torch.stack([s[name] for s in samples]) for name in samples[0]}


def assert_same_expectation(a: torch.Tensor, b: torch.Tensor) -> None:
    """Means of two independent sets of draws agree within 5 standard errors per component:
    under equal expectations each of the ~500 components fails with probability 6e-7."""
    se = (a.var(0) / len(a) + b.var(0) / len(b)).sqrt()
    z = (a.mean(0) - b.mean(0)).abs() / se.clamp(min=1e-12)
    assert z.max() < 5, f"max z-score {z.max():.2f}"


# ------------------------------------------------------------------------ values
def test_iwae_value_and_gradient_equal_pyro_renyi_elbo(vae, x):
    ours = ImportanceWeightedELBO(alpha=0.0, num_particles=8)
    pyro.set_rng_seed(3)
    loss = ours.differentiable_loss(vae.model, vae.guide, x)
    ours_grads = torch.autograd.grad(loss, list(vae.parameters()))
    reference = RenyiELBO(alpha=0.0, num_particles=8, vectorize_particles=True, max_plate_nesting=1)
    pyro.set_rng_seed(3)
    assert loss.item() == pytest.approx(reference.loss(vae.model, vae.guide, x), rel=1e-6)
    # Pyro's RenyiELBO.loss_and_grads skips its backward pass when no parameter is in the param
    # store (pyrovae's parameters live in the modules), so apply its surrogate here, on the same
    # draws: sum_k stop_gradient(w~_k) (log p(x, z_k) - log q(z_k|x)).
    pyro.set_rng_seed(3)
    model_trace, guide_trace = particle_traces(vae.model, vae.guide, x, particles=8)
    log_w = log_weights(model_trace, guide_trace)
    surrogate = -(torch.softmax(log_w.detach(), dim=0) * log_w).sum()
    reference_grads = torch.autograd.grad(surrogate, list(vae.parameters()))
    for ours_grad, reference_grad in zip(ours_grads, reference_grads, strict=True):
        assert torch.allclose(ours_grad, reference_grad, rtol=1e-4, atol=1e-5)


def test_renyi_value_equals_pyro_and_is_ordered_in_alpha(vae, x):
    pyro.set_rng_seed(4)
    value = ImportanceWeightedELBO(0.5, 10).differentiable_loss(vae.model, vae.guide, x).item()
    pyro.set_rng_seed(4)
    reference = RenyiELBO(0.5, 10, max_plate_nesting=1, vectorize_particles=True)
    assert value == pytest.approx(reference.loss(vae.model, vae.guide, x), rel=1e-6)
    # On one set of draws, the Renyi bound is non-increasing in alpha (a power-mean inequality):
    # IWAE (alpha 0) >= alpha 0.5 >= the mean of log w (the ELBO's estimate, alpha -> 1).
    pyro.set_rng_seed(5)
    model_trace, guide_trace = particle_traces(vae.model, vae.guide, x, particles=10)
    log_w = log_weights(model_trace, guide_trace).detach()
    bounds = [ImportanceWeightedELBO(a, 10)._bound(log_w) for a in (0.0, 0.5, 0.9)]
    assert (bounds[0] >= bounds[1] - 1e-5).all() and (bounds[1] >= bounds[2] - 1e-5).all()
    assert (bounds[2] >= log_w.mean(0) - 1e-5).all()


def test_iwae_bound_lies_between_elbo_and_log_likelihood_and_rises_with_k(vae, x):
    exact = marginal(vae).log_prob(x.reshape(len(x), -1)).mean().item()
    bounds = {}
    with torch.no_grad():
        for k in (1, 5, 50, 500):
            estimator = build("estimator", "iwae", {"particles": k}, "test")
            values = [
                -estimator.differentiable_loss(vae.model, vae.guide, x).item() / len(x)
                for _ in range(200)
            ]
            bounds[k] = sum(values) / len(values)
    # Measured: ELBO (K = 1) -12.66, K = 5 -10.94, K = 50 -10.619, K = 500 -10.590, exact
    # log p(x) -10.587 nats; standard errors of these means over 200 draws: 0.05, 0.015, 0.004,
    # 0.0012. Each gap asserted below is at least 7 of those standard errors.
    assert bounds[1] < bounds[5] < bounds[50] < bounds[500]
    assert bounds[50] < exact
    assert abs(bounds[500] - exact) < 0.01


@pytest.mark.parametrize(
    ("ours", "reference"),
    [(("stl", {}), ("trace", {})), (("dreg", {"particles": 6}), ("iwae", {"particles": 6}))],
)
def test_stl_and_dreg_change_only_the_guide_gradient(vae, x, ours, reference):
    # Same seed, same draws: same loss value and the same gradient for the model's parameters;
    # the guide's gradient differs (its score term is dropped or reweighted).
    ours, reference = (build("estimator", *spec, "test") for spec in (ours, reference))
    values = []
    for elbo in (ours, reference):
        pyro.set_rng_seed(7)
        values.append(elbo.differentiable_loss(vae.model, vae.guide, x).item())
    assert values[0] == pytest.approx(values[1], rel=1e-6)
    ours_grads, reference_grads = (gradients(vae, x, e, seed=7) for e in (ours, reference))
    assert torch.allclose(ours_grads["decoder"], reference_grads["decoder"], atol=1e-6)
    assert not torch.allclose(ours_grads["encoder"], reference_grads["encoder"], atol=1e-3)


# --------------------------------------------------------------------- gradients
def test_stl_gradient_has_the_expectation_of_the_reparameterized_gradient(vae, x):
    stl = draws(vae, x, build("estimator", "stl", {}, "test"), 300, seed=0)
    trace = draws(vae, x, build("estimator", "trace", {}, "test"), 300, seed=10_000)
    for group in ("encoder", "decoder"):
        assert_same_expectation(stl[group], trace[group])
    # Roeder et al.: with q near the posterior, dropping the score term lowers the guide's
    # gradient variance (measured: 0.31x here, guide one posterior sd off and 1.5x too wide).
    assert stl["encoder"].var(0).sum() < 0.6 * trace["encoder"].var(0).sum()


def test_dreg_gradient_has_the_expectation_of_the_iwae_gradient(vae, x):
    dreg = draws(vae, x, build("estimator", "dreg", {"particles": 5}, "test"), 300, seed=0)
    iwae = draws(vae, x, build("estimator", "iwae", {"particles": 5}, "test"), 300, seed=10_000)
    for group in ("encoder", "decoder"):
        assert_same_expectation(dreg[group], iwae[group])
    # Tucker et al.: lower variance for the guide's parameters (measured: 0.13x here).
    assert dreg["encoder"].var(0).sum() < 0.5 * iwae["encoder"].var(0).sum()


def test_at_the_exact_posterior_stl_and_dreg_guide_gradients_have_zero_variance(vae, x):
    set_guide(vae)  # back to the exact posterior
    for name, options in (("stl", {}), ("dreg", {"particles": 5})):
        samples = draws(vae, x, build("estimator", name, options, "test"), 20, seed=0)
        # log p(x, z) - log q(z|x) = log p(x) for every z: no path derivative, no score term.
        assert samples["encoder"].abs().max() < 1e-4, name
    trace = draws(vae, x, build("estimator", "trace", {}, "test"), 20, seed=0)
    assert trace["encoder"].std(0).max() > 0.1  # the score term's noise that STL removes


# ---------------------------------------------------------------------- refusals
def bernoulli_model(x):
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Bernoulli(0.5))
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)


def bernoulli_guide(x):
    p = torch.sigmoid(torch.zeros(len(x), requires_grad=True))
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Bernoulli(p))


def two_site_model(x):
    with pyro.plate("data", len(x)):
        a = pyro.sample("a", dist.Normal(0.0, 1.0))
        b = pyro.sample("b", dist.Normal(a, 1.0))
        pyro.sample("x", dist.Normal(b, 1.0), obs=x)


def two_site_guide(x):
    loc = torch.zeros(len(x), requires_grad=True)
    with pyro.plate("data", len(x)):
        a = pyro.sample("a", dist.Normal(loc, 1.0))
        pyro.sample("b", dist.Normal(a, 1.0))


@pytest.mark.parametrize(
    ("name", "options"), [("iwae", {}), ("renyi", {}), ("stl", {}), ("dreg", {})]
)
def test_estimators_refuse_a_guide_without_reparameterization(name, options):
    estimator = build("estimator", name, options, "train.estimator")
    with pytest.raises(ConfigError, match="reparameterizable"):
        estimator.differentiable_loss(bernoulli_model, bernoulli_guide, torch.zeros(4))


def test_iwae_accepts_several_latent_sites_and_matches_pyro():
    x = torch.randn(6)
    pyro.set_rng_seed(0)
    ours = ImportanceWeightedELBO(0.0, 4).differentiable_loss(two_site_model, two_site_guide, x)
    pyro.set_rng_seed(0)
    reference = RenyiELBO(0.0, 4, vectorize_particles=True, max_plate_nesting=1)
    assert ours.item() == pytest.approx(reference.loss(two_site_model, two_site_guide, x), rel=1e-6)


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="alpha = 1"):
        build("estimator", "renyi", {"alpha": 1.0}, "train.estimator")
    with pytest.raises(ConfigError, match="particles must be >= 1"):
        build("estimator", "dreg", {"particles": 0}, "train.estimator")


def test_loss_and_grads_backpropagates_the_same_gradient(vae, x):
    # For pyro.infer.SVI: unlike Pyro's RenyiELBO.loss_and_grads, which skips its backward pass
    # when no parameter is in the param store, this one fills the modules' .grad.
    dreg = build("estimator", "dreg", {"particles": 4}, "test")
    expected = gradients(vae, x, dreg, seed=11)
    vae.zero_grad()
    pyro.set_rng_seed(11)
    loss = dreg.loss_and_grads(vae.model, vae.guide, x)
    assert isinstance(loss, float)
    encoder_grad = torch.cat([p.grad.reshape(-1) for p in parameter_groups(vae, x)["encoder"]])
    assert torch.allclose(encoder_grad.double() / len(x), expected["encoder"], atol=1e-6)
