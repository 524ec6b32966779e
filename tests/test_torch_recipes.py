"""benchmarks/torch_recipes.py, the hand-written PyTorch twins of examples/reproduce/: with a
pyrovae model's weights loaded and the same seed, each twin draws the same latents and computes
pyrovae's objective and gradients (float64, to 1e-8); a pyrovae-trained model's K-sample
log-likelihood is pyrovae's evaluate within 4 standard errors; the schedule and the VampPrior's
matrix-product mixture equal pyrovae's and the broadcast Normal's."""

from __future__ import annotations

import math
import sys

import pytest
import torch
from torch.distributions import Normal

import pyrovae
from pyrovae.components.datasets import load_splits
from pyrovae.components.programs import build_program
from pyrovae.registry import build
from pyrovae.runs.directory import load_run
from pyrovae.training.distributed import ELBOLoss
from pyrovae.training.schedules import burda_factor
from tests.conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import torch_recipes  # noqa: E402

#: Each recipe of examples/reproduce/ shrunk to digits: (recipe, its model overrides).
TINY_MODELS = {
    "burda_2layer_iwae_k5": [
        "model.program={name='two_layer', latent1=4, latent2=2, hidden1=[16, 16],"
        " hidden2=[8, 8], activation='tanh'}"
    ],
    "burda_2layer_vae_k5": [  # the ELBO averaged over 5 particles, two layers
        "model.program={name='two_layer', latent1=4, latent2=2, hidden1=[16, 16],"
        " hidden2=[8, 8], activation='tanh'}"
    ],
    "tomczak_vampprior": [
        "model.latent_dim=4",
        "model.prior={name='vamp', components=7, init_mean=0.05, init_std=0.01, clamp=true}",
        "model.encoder={name='mlp', hidden=[16, 16], activation='relu'}",
        "model.decoder={name='mlp', hidden=[16, 16], activation='relu'}",
    ],
    "kingma_iaf": [
        "model.latent_dim=4",
        "model.guide={name='iaf', steps=2, context_dim=3, hidden=[9], stable=true}",
        "model.encoder={name='mlp', hidden=[16, 16], activation='relu'}",
        "model.decoder={name='mlp', hidden=[16, 16], activation='relu'}",
    ],
    "tucker_dreg": [
        "model.latent_dim=4",
        "model.encoder={name='mlp', hidden=[16, 16], activation='tanh'}",
        "model.decoder={name='mlp', hidden=[16, 16], activation='tanh'}",
    ],
    "burda_1layer_vae_k1": [
        "model.latent_dim=4",
        "model.encoder={name='mlp', hidden=[16, 16], activation='tanh'}",
        "model.decoder={name='mlp', hidden=[16, 16], activation='tanh'}",
    ],
}
DIGITS = ["data.name='digits'", "data.validation_size=0.1", "train.device='cpu'"]


def tiny_recipe(name: str, *overrides: str) -> pyrovae.Config:
    path = REPO / "examples" / "reproduce" / f"{name}.toml"
    return pyrovae.load_config(path, [*DIGITS, *TINY_MODELS[name], *overrides])


def twin_of(recipe: pyrovae.Config, program: torch.nn.Module) -> torch_recipes.Twin:
    twin = torch_recipes.Twin(recipe, pixels=64)
    torch_recipes.load_pyrovae_state(twin, program.state_dict())
    return twin


def twin_name(key: str) -> str:
    """The twin's name of a pyrovae parameter."""
    if key == "prior.pseudo_inputs_unconstrained":
        return "model.pseudo_inputs"
    return "model." + key.removeprefix("posterior.")


@pytest.mark.parametrize("name", list(TINY_MODELS))
@pytest.mark.parametrize("beta", [1.0, 0.3])
def test_objective_and_gradients_equal_pyrovae_with_the_same_seed(name, beta, float64):
    """trace (1 particle; 5 with two layers), IWAE (k = 5, one and two layers), DReG (k = 64),
    the VampPrior and IAF: the loss and every parameter's gradient, at a KL weight (warm-up) or
    without."""
    recipe = tiny_recipe(name)
    program = build_program(recipe.model, (1, 8, 8))
    twin = twin_of(recipe, program)
    x = torch.bernoulli(torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(1)))
    estimator = recipe.train.estimator
    elbo = build("estimator", estimator.name, estimator.options, "train.estimator")
    torch.manual_seed(5)
    expected = ELBOLoss(program, elbo)(x, beta)
    expected.backward()
    torch.manual_seed(5)
    loss = -twin.bound(x.reshape(6, 64), beta).sum()
    loss.backward()
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), abs=1e-8)
    twin_params = dict(twin.named_parameters())
    for key, param in program.named_parameters():
        grad = twin_params[twin_name(key)].grad
        assert torch.allclose(grad.reshape(param.shape), param.grad, atol=1e-8), key


@pytest.mark.parametrize("name", list(TINY_MODELS))
def test_log_likelihood_agrees_with_pyrovae_evaluate(name, tmp_path):
    """A pyrovae-trained model (1 epoch on digits) scored by the twin with K = 300: within 4
    standard errors of pyrovae's evaluate over 60 test images (independent draws)."""
    recipe = tiny_recipe(name, "train.epochs=1", "train.batch_size=50")
    run = pyrovae.train(recipe, out=tmp_path / name, quiet=True)
    x = load_splits(recipe.data, torch.device("cpu")).test[:60]
    expected = torch.tensor(pyrovae.evaluate(run.directory, x=x, particles=300).log_likelihoods)
    _, program, _ = load_run(run.directory)
    twin = twin_of(recipe, program)
    torch.manual_seed(0)
    got = twin.log_likelihood(x.reshape(60, 64), 300, 100)
    diff = (got - expected).double()
    assert abs(float(diff.mean())) < 4 * float(diff.std()) / math.sqrt(60) + 1e-6


def test_the_mixture_by_matrix_products_is_the_broadcast_normal(float64):
    gen = torch.Generator().manual_seed(0)
    z, loc = torch.randn(3, 5, 4, generator=gen), torch.randn(7, 4, generator=gen)
    scale = 0.05 + torch.rand(7, 4, generator=gen)
    expected = Normal(loc, scale).log_prob(z.unsqueeze(-2)).sum(-1).logsumexp(-1) - math.log(7)
    assert torch.allclose(torch_recipes.log_mixture(z, loc, scale), expected, atol=1e-10)


@pytest.mark.parametrize("hidden", [[9], [12, 10]])
def test_the_made_masks_are_pyro_s_for_the_same_permutation(hidden):
    """The twin builds its own MADE masks; Pyro's conditional MADE builds the same."""
    from pyro.nn.auto_reg_nn import create_mask

    made = torch_recipes.MADE(4, 3, hidden)
    masks, _ = create_mask(4, 3, hidden, made.permutation, 2)
    assert all(torch.equal(layer.mask, m) for layer, m in zip(made.layers, masks, strict=True))


def test_the_burda_schedule_is_pyrovae_s():
    assert all(torch_recipes.burda_factor(e) == burda_factor(e) for e in range(3400))


def test_the_warm_up_is_pyrovae_s():
    from pyrovae.training.loop import kl_weight

    assert all(torch_recipes.kl_weight(s, 30) == kl_weight(s, 1.0, 30) for s in range(40))
    assert torch_recipes.kl_weight(0, 0) == 1.0


def test_training_stops_within_the_time_budget_mid_epoch():
    """With a clock that advances one second per reading (the epoch's start, one before each
    step, one at the end), a budget of 5.5 s takes 5 steps of 10 of the 100 images; the curve
    records the half epoch done, the time spent is the end's reading, 7."""
    recipe = tiny_recipe("burda_1layer_vae_k1", "train.batch_size=10")
    twin = torch_recipes.Twin(recipe, pixels=64)
    x = torch.rand(100, 64)
    ticks = iter(range(1000))
    curve, spent, _ = torch_recipes.train(twin, recipe, x, x[:20], 5.5, lambda: next(ticks))
    assert len(curve) == 1 and curve[0]["fraction"] == 0.5 and spent == 7


def test_the_recipes_time_budget_ends_whole_epochs_as_pyrovae_s():
    """``train.max_seconds = 15`` with the same clock: an epoch of 10 steps spends 11 s (its
    readings 0..11), so the run stops at the end of the 2nd epoch (22 s), whole, as pyrovae's
    loop does."""
    recipe = tiny_recipe(
        "burda_1layer_vae_k1", "train.batch_size=10", "train.epochs=5", "train.max_seconds=15"
    )
    twin = torch_recipes.Twin(recipe, pixels=64)
    x = torch.rand(100, 64)
    ticks = iter(range(1000))
    curve, spent, _ = torch_recipes.train(twin, recipe, x, x[:20], math.inf, lambda: next(ticks))
    assert [row["fraction"] for row in curve] == [1.0, 1.0] and spent == 22


def test_train_cpu_clock_is_pyrovae_train_timed_in_cpu_seconds(tmp_path):
    """benchmarks/train_cpu_clock.py: the same run as ``pyrovae train`` (seeded: the same
    losses), with ``epoch_seconds`` in CPU seconds."""
    import json
    import subprocess

    out = tmp_path / "run"
    args = ["--config", str(REPO / "examples/reproduce/burda_1layer_vae_k1.toml"), "--quiet"]
    args += ["--device", "cpu", "data.name=digits", "train.epochs=1", "--out", str(out)]
    env = {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    script = str(REPO / "benchmarks" / "train_cpu_clock.py")
    result = subprocess.run([sys.executable, script, *args], capture_output=True, env=env)
    assert result.returncode == 0, result.stderr
    (record,) = [json.loads(line) for line in (out / "metrics.jsonl").open()]
    recipe = pyrovae.load_config(args[1], ["data.name=digits", "train.epochs=1", *DIGITS[2:]])
    expected = pyrovae.train(recipe, out=tmp_path / "plain", quiet=True).metrics[0]
    assert record["train_loss"] == expected["train_loss"] and record["epoch_seconds"] > 0
