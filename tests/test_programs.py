"""The program extension point: a user's own Pyro model/guide pair, and the built-in two-layer
VAE, through training, evaluation, checkpoints, resume, sampling and gradients; path-derivative
estimators on a hierarchical guide against a linear-Gaussian chain known in closed form."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch
from conftest import run_cli
from linear_gaussian_chain import LinearGaussianChain
from pyro.nn import pyro_method
from torch import nn

import pyrovae
from pyrovae.components.base import observation
from pyrovae.errors import ConfigError
from pyrovae.inference.estimators import differentiable_loss, dreg, iwae, stl, trace
from pyrovae.inference.marginal_likelihood import importance_estimate


@pyrovae.register("program", "test_cluster_vae")
class ClusterVAE(pyrovae.Program):
    """A user's program: a discrete cluster c and a continuous z per datapoint, a plate over
    pixels nested in the data plate (two plates), trained by score-function gradients."""

    max_plate_nesting = 2

    def __init__(self, x_shape: tuple[int, ...], clusters: int = 3, latent: int = 2) -> None:
        super().__init__(x_shape)
        pixels = math.prod(self.x_shape)
        self.logits = nn.Parameter(torch.zeros(clusters))
        self.centres = nn.Parameter(torch.randn(clusters, latent))
        self.decoder = nn.Linear(latent, pixels)
        self.encoder = nn.Linear(pixels, clusters + 2 * latent)
        self.latent = latent

    @pyro_method
    def model(self, x=None, batch_size=None):
        n = len(x) if x is not None else (batch_size or 1)
        with pyro.plate("data", n, dim=-2):
            c = pyro.sample("c", dist.Categorical(logits=self.logits))
            z = pyro.sample("z", dist.Normal(self.centres[c], 1.0).to_event(1))
            logits = self.decoder(z).squeeze(-2)  # (..., n, pixels): data dim -2, pixels -1
            with pyro.plate("pixels", logits.shape[-1], dim=-1):
                flat = None if x is None else x.reshape(n, -1)
                drawn = pyro.sample("x", dist.Bernoulli(logits=logits), obs=observation(flat))
        return drawn.reshape(*drawn.shape[:-1], *self.x_shape)

    @pyro_method
    def guide(self, x, batch_size=None):
        out = self.encoder(x.reshape(len(x), 1, -1))
        logits, loc, log_scale = out.split([len(self.logits), self.latent, self.latent], -1)
        with pyro.plate("data", len(x), dim=-2):
            pyro.sample("c", dist.Categorical(logits=logits))
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))


USER = [
    "model.program=test_cluster_vae",
    "train.estimator=tracegraph",
    "train.epochs=2",
    "train.batch_size=50",
    "train.device=cpu",
]


def test_a_users_program_trains_evaluates_resumes_samples(tmp_path):
    config = pyrovae.load_config(None, USER)
    run = pyrovae.train(config.replace(["train.epochs=1"]), out=tmp_path / "run", quiet=True)
    assert isinstance(run.model, ClusterVAE)
    resumed = pyrovae.train(config, resume=tmp_path / "run", quiet=True)
    assert [m["epoch"] for m in resumed.metrics] == [1, 2]
    loaded_config, program, _ = pyrovae.load_run(tmp_path / "run", checkpoint="last")
    assert loaded_config == config
    resumed_state = resumed.model.state_dict().values()
    for (k, a), b in zip(program.state_dict().items(), resumed_state, strict=True):
        assert torch.equal(a, b), k
    result = pyrovae.evaluate(tmp_path / "run", particles=20, limit=30)
    assert math.isfinite(result.log_likelihood) and result.log_likelihood >= result.elbo - 1.0
    assert program.sample(5).shape == (5, 1, 8, 8)
    assert (tmp_path / "run" / "samples.png").is_file()


def test_the_command_line_runs_every_command_on_a_program(tmp_path):
    plugin = tmp_path / "plugin.py"
    plugin.write_text(f"import sys\nsys.path.insert(0, {str(Path(__file__).parent)!r})\n")
    out = tmp_path / "run"
    common = ["--plugin", str(plugin)]
    train = run_cli(
        "train",
        *common,
        "--out",
        str(out),
        "--quiet",
        *[
            "model.program=two_layer",
            "model.program.latent1=4",
            "model.program.latent2=2",
            "train.epochs=1",
            "train.estimator={name='dreg', particles=3}",
            "train.device=cpu",
        ],
    )
    assert train.returncode == 0, train.stderr
    evaluated = run_cli("evaluate", str(out), "--json", "--particles", "10", "--limit", "20")
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["datapoints"] == 20
    sampled = run_cli("sample", str(out), "--count", "4")
    assert sampled.returncode == 0, sampled.stderr
    gradients = run_cli(
        "gradients",
        str(out),
        "--estimators",
        "trace",
        "stl",
        "dreg:3",
        "--draws",
        "3",
        "--batch-size",
        "10",
    )
    assert gradients.returncode == 0, gradients.stderr
    assert "| `stl` |" in gradients.stdout


def test_a_key_the_program_does_not_read_is_refused_even_at_its_default():
    for key in ("model.latent_dim=10", "model.encoder=mlp", "model.prior=vamp"):
        with pytest.raises(ConfigError, match=r"program 'two_layer' does not use it"):
            pyrovae.load_config(None, ["model.program=two_layer", key])
    config = pyrovae.load_config(None, ["model.program=two_layer"])
    assert set(config.to_dict()["model"]) == {"program", "likelihood"}  # what the run saves
    assert pyrovae.Config.from_dict(config.to_dict()) == config


def test_a_program_that_cannot_generate_is_refused_in_one_line():
    class NoGeneration(pyrovae.Program):
        @pyro_method
        def model(self, x):
            with pyro.plate("data", len(x)):
                pyro.sample("x", dist.Normal(0.0, 1.0).expand([2]).to_event(1), obs=x)

        @pyro_method
        def guide(self, x):
            pass

    with pytest.raises(ConfigError, match="cannot generate"):
        NoGeneration((2,)).sample(3)
    with pytest.raises(ConfigError, match="no model or guide method|no guide method"):
        pyrovae.evaluate(nn.Linear(2, 2), x=torch.zeros(3, 2))


@pytest.mark.parametrize("estimator", ["trace", "iwae", "dreg", "stl"])
def test_two_layer_vae_trains_with_every_estimator(estimator, tmp_path):
    config = pyrovae.load_config(
        None,
        [
            "model.program={name='two_layer', latent1=6, latent2=3, hidden1=[16], hidden2=[8]}",
            f"train.estimator={estimator}",
            "train.epochs=2",
            "train.device=cpu",
        ],
    )
    run = pyrovae.train(config, out=tmp_path, quiet=True)
    losses = [m["valid_loss"] for m in run.metrics]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]


# ---------------------------------------------------------------- closed forms, two layers
@pytest.fixture
def chain() -> tuple[LinearGaussianChain, torch.Tensor]:
    program = LinearGaussianChain()
    return program, program.marginal().sample((6,))


GUIDE = ("M", "c", "L1", "K", "k", "L2")


def perturb_guide(program: LinearGaussianChain, seed: int, spread: float = 0.3) -> None:
    """Move every guide parameter away from the exact posterior by N(0, spread^2) noise."""
    generator = torch.Generator().manual_seed(seed)
    exact = program.exact_guide()
    noise = {
        k: spread * torch.randn(v.shape, generator=generator, dtype=v.dtype)
        for k, v in exact.items()
    }
    program.set_guide({k: v + noise[k] for k, v in exact.items()})


def guide_gradient(program, x, estimator) -> torch.Tensor:
    loss = differentiable_loss(estimator, program.model, program.guide, x)
    grads = torch.autograd.grad(loss, [getattr(program, n) for n in GUIDE])
    return torch.cat([g.reshape(-1) for g in grads])


def test_at_the_exact_posterior_the_weights_are_log_p_x(chain):
    program, x = chain
    program.set_guide(program.exact_guide())
    estimate = importance_estimate(
        program.model, program.guide, x, particles=7, analytic_kl=program.analytic_kl
    )
    exact = program.marginal().log_prob(x)
    assert torch.allclose(estimate.log_likelihood, exact, atol=1e-10)
    assert torch.allclose(estimate.elbo, exact, atol=1e-10)


def test_path_derivative_guide_gradients_vanish_at_the_exact_posterior(chain):
    # log p(x, z) - log q(z|x) = log p(x) for every z: the path derivative is exactly 0 for both
    # layers, q(z2|z1)'s path through z1 included; the score-function-carrying gradient is not.
    program, x = chain
    program.set_guide(program.exact_guide())
    for estimator in (stl(4), dreg(4)):
        assert guide_gradient(program, x, estimator).abs().max() < 1e-10
    assert guide_gradient(program, x, trace(4)).abs().max() > 1e-2


def test_stl_is_unbiased_for_the_exact_elbo_gradient_of_a_hierarchical_guide(chain):
    program, x = chain
    perturb_guide(program, seed=3)
    params = [getattr(program, n) for n in GUIDE]
    truth = torch.cat(
        [g.reshape(-1) for g in torch.autograd.grad(-program.exact_elbo(x).sum(), params)]
    )
    # The ELBO itself: the Monte Carlo mean of Trace_ELBO against the closed form.
    pyro.set_rng_seed(0)
    values = torch.tensor(
        [
            -differentiable_loss(trace(20_000), program.model, program.guide, x).item()
            for _ in "abcd"
        ]
    )
    exact_elbo = program.exact_elbo(x).sum().item()
    assert abs(values.mean() - exact_elbo) < 5 * values.std() / 2  # measured: std 0.076
    draws = torch.stack([guide_gradient(program, x, stl(1000)) for _ in range(20)])
    se = draws.std(0) / math.sqrt(len(draws))
    z = (draws.mean(0) - truth).abs() / se.clamp(min=1e-9)
    assert z.max() < 5, f"max z-score {z.max():.2f}"


def test_dreg_has_the_expectation_of_the_iwae_gradient_on_a_hierarchical_guide(chain):
    program, x = chain
    perturb_guide(program, seed=4)
    ours = torch.stack([guide_gradient(program, x, dreg(5)) for _ in range(300)])
    reference = torch.stack([guide_gradient(program, x, iwae(5)) for _ in range(300)])
    se = (ours.var(0) / len(ours) + reference.var(0) / len(reference)).sqrt()
    z = (ours.mean(0) - reference.mean(0)).abs() / se.clamp(min=1e-9)
    assert z.max() < 5, f"max z-score {z.max():.2f}"
    assert ours.var(0).sum() < reference.var(0).sum()  # Tucker et al.: lower variance
