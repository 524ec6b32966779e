"""Training through ``pyrovae.train`` on the digits, and the run directory it writes.

This file proves:
- training lowers the validation loss by a clear margin, and the same seed gives identical
  metrics and weights;
- every registered prior, guide, likelihood, network and estimator trains: each of its
  parameters gets a finite, non-zero gradient, and ``train`` runs one optimizer step with it;
- the run directory holds a config that resolves back to the run's Config, one metrics record
  per epoch, a checkpoint that loads with ``torch.load(weights_only=True)``, and valid PNGs;
  ``load_run`` restores a model with identical outputs;
- the KL warm-up reaches the model at every step with the scheduled weight;
- a component registered by the user with ``@register`` is selectable by name from a config
  file, and from the command line through ``--plugin file.py``.
"""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import pyro
import pytest
import torch
from conftest import run_cli
from PIL import Image
from pyro import distributions as dist

import pyrovae
import pyrovae.training.distributed
from pyrovae.components.base import Likelihood
from pyrovae.components.datasets import check_likelihood, load_splits
from pyrovae.inference.elbo import negative_elbo
from pyrovae.inference.estimators import differentiable_loss
from pyrovae.registry import _REGISTRY, build, lookup, register
from pyrovae.training.train import kl_weight

CPU = torch.device("cpu")
SMALL = [
    "train.device=cpu",
    "model.latent_dim=3",
    'model.encoder={name="mlp", hidden=[16]}',
    'model.decoder={name="mlp", hidden=[16]}',
]


def small_config(*overrides: str) -> pyrovae.Config:
    return pyrovae.load_config(None, [*SMALL, *overrides])


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> pyrovae.Run:
    """Three epochs of a small VAE on the digits, shared by the run-directory tests."""
    config = small_config("name=shared", "train.epochs=3")
    return pyrovae.train(config, out=tmp_path_factory.mktemp("run") / "shared", quiet=True)


# ------------------------------------------------------------------------------ learning
def test_training_lowers_the_validation_loss(tmp_path):
    config = pyrovae.load_config(None, ["train.device=cpu", "train.epochs=10"])
    metrics = pyrovae.train(config, out=tmp_path, quiet=True).metrics
    first, last = metrics[0]["valid_loss"], metrics[-1]["valid_loss"]
    # Measured: 30.5 -> 27.2 nats per datapoint over 10 epochs (64 binary pixels per digit).
    assert last < first - 2.0, (first, last)
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"] - 2.0


def test_same_seed_gives_identical_metrics_and_weights(tmp_path):
    config = small_config("train.epochs=2", "train.seed=3")
    a = pyrovae.train(config, out=tmp_path / "a", quiet=True)
    b = pyrovae.train(config, out=tmp_path / "b", quiet=True)
    for first, second in zip(a.metrics, b.metrics, strict=True):
        assert first.pop("epoch_seconds") > 0 and second.pop("epoch_seconds") > 0
        assert first == second
    state = b.model.state_dict()
    for name, tensor in a.model.state_dict().items():
        assert torch.equal(tensor, state[name]), name
    other = pyrovae.train(config.replace(["train.seed=4"]), out=tmp_path / "c", quiet=True)
    assert other.metrics[0]["train_loss"] != a.metrics[0]["train_loss"]  # the seed matters


# ------------------------------------------------------------------------------ components
COMPONENT_KEYS = {
    "prior": ["model.prior"],
    "guide": ["model.guide"],
    "likelihood": ["model.likelihood"],
    "network": ["model.encoder", "model.decoder"],
    "estimator": ["train.estimator"],
}
#: Networks that serve one side only (an image encoder cannot decode, and the reverse).
ONE_SIDED_NETWORKS = {"conv_encoder": ["model.encoder"], "conv_decoder": ["model.decoder"]}
COMPONENTS = [(kind, name) for kind in COMPONENT_KEYS for name in pyrovae.registered(kind)]


def component_config(kind: str, name: str) -> pyrovae.Config:
    keys = ONE_SIDED_NETWORKS.get(name, COMPONENT_KEYS[kind]) if kind == "network" else None
    overrides = [f"{key}={name}" for key in keys or COMPONENT_KEYS[kind]]
    config = small_config(*overrides)
    needs_binary = lookup("likelihood", config.model.likelihood.name).requires_binary
    return config.replace([f"data.binarize={'dynamic' if needs_binary else 'none'}"])


@pytest.mark.parametrize(("kind", "name"), COMPONENTS, ids=[f"{k}-{n}" for k, n in COMPONENTS])
def test_every_registered_component_trains_a_step(kind, name, tmp_path):
    config = component_config(kind, name)
    splits = load_splits(config.data, CPU)
    vae = pyrovae.build_vae(config.model, splits.x_shape)
    check_likelihood(splits, vae.likelihood)
    estimator = config.train.estimator
    elbo = build("estimator", estimator.name, estimator.options, "train.estimator")
    x = splits.training_epoch(torch.Generator().manual_seed(0))[:64]
    loss = differentiable_loss(elbo, vae.model, vae.guide, x)
    loss.backward()
    assert torch.isfinite(loss)
    for parameter_name, parameter in vae.named_parameters():
        assert parameter.grad is not None, f"{parameter_name} is not in the loss"
        assert torch.isfinite(parameter.grad).all(), parameter_name
        assert parameter.grad.abs().sum() > 0, f"{parameter_name} gets no gradient"

    # One optimizer step through the training loop: one batch holds the whole training split.
    one_step = config.replace(["train.epochs=1", "train.batch_size=5000"])
    run = pyrovae.train(one_step, out=tmp_path, quiet=True)
    assert run.metrics[0]["step"] == 1
    assert math.isfinite(run.metrics[0]["train_loss"])
    assert math.isfinite(run.metrics[0]["valid_loss"])


# ------------------------------------------------------------------------------ run directory
def test_run_directory_config_resolves_to_the_same_config(digits_run):
    saved = pyrovae.load_config(digits_run.directory / "config.toml")
    assert saved == digits_run.config
    assert saved.model.encoder.options == {"hidden": (16,), "activation": "softplus"}


def test_run_directory_metrics_have_one_record_per_epoch(digits_run):
    lines = (digits_run.directory / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert records == digits_run.metrics
    for record in records:
        assert {"epoch", "train_loss", "valid_loss", "epoch_seconds"} <= set(record)
        assert record["epoch_seconds"] > 0
        assert 0 < record["valid_loss"] < 64 * math.log(2) + 10  # nats for 64 binary pixels


def test_run_directory_checkpoint_loads_safely(digits_run):
    checkpoint = torch.load(digits_run.directory / "checkpoint.pt", weights_only=True)
    assert pyrovae.Config.from_dict(checkpoint["config"]) == digits_run.config
    state = digits_run.model.state_dict()
    assert set(checkpoint["model"]) == set(state)
    for key, tensor in state.items():
        assert torch.equal(checkpoint["model"][key], tensor), key


@pytest.mark.parametrize("picture", ["samples", "reconstructions", "learning_curves"])
def test_run_directory_pictures_are_valid_pngs(digits_run, picture):
    path = digits_run.directory / f"{picture}.png"
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.verify()
    with Image.open(path) as image:
        assert min(image.size) >= 20
        darkest, brightest = image.convert("L").getextrema()
        assert brightest - darkest > 50  # not a blank picture


def test_runs_go_to_runs_name_under_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = small_config("name=mine", "train.epochs=1")
    first = pyrovae.train(config, quiet=True)
    assert first.directory == Path("runs/mine") and (tmp_path / "runs/mine/checkpoint.pt").is_file()
    second = pyrovae.train(config, quiet=True)  # never over a finished run
    assert second.directory == Path("runs/mine-2")
    with pytest.raises(pyrovae.ConfigError, match="already holds a run"):
        pyrovae.train(config, out="runs/mine", quiet=True)


def test_load_run_restores_identical_outputs(digits_run):
    config, vae, checkpoint = pyrovae.load_run(digits_run.directory, checkpoint="last")
    assert config == digits_run.config
    assert checkpoint["epoch"] == 3
    trained = digits_run.model
    x = load_splits(config.data, CPU).valid[:16]
    z = torch.randn(16, config.model.latent_dim)
    with torch.no_grad():
        assert torch.equal(vae.reconstruct(x), trained.reconstruct(x))
        assert torch.equal(vae.decode(z).mean, trained.decode(z).mean)
        assert torch.equal(vae.encode(x).mean, trained.encode(x).mean)
    pyro.set_rng_seed(1)
    restored_loss = negative_elbo(vae, x)
    pyro.set_rng_seed(1)
    assert restored_loss == negative_elbo(trained, x)


# ------------------------------------------------------------------------------ KL warm-up
def test_kl_warmup_schedule_values():
    assert [kl_weight(step, 2.0, 4) for step in range(6)] == [0.5, 1.0, 1.5, 2.0, 2.0, 2.0]
    assert kl_weight(0, 0.7, 0) == kl_weight(100, 0.7, 0) == 0.7


def test_kl_warmup_reaches_the_model_at_every_step(tmp_path, monkeypatch):
    weights: list[float] = []
    weight_latents = pyrovae.training.distributed.weight_latents

    def recording(fn, weight):
        if fn.__name__ == "model":
            weights.append(weight)
        return weight_latents(fn, weight)

    monkeypatch.setattr(pyrovae.training.distributed, "weight_latents", recording)
    config = small_config("train.epochs=3", "train.warmup_epochs=2", "train.beta=0.5")
    run = pyrovae.train(config, out=tmp_path, quiet=True)
    steps = run.metrics[0]["step"]  # 13 steps per epoch: 1294 training digits, batches of 100
    # Training steps see the schedule, step by step (validation is never weighted).
    scheduled = [kl_weight(step, 0.5, 2 * steps) for step in range(3 * steps)]
    assert [w for w in weights if w != 1.0] == scheduled
    assert scheduled[0] == pytest.approx(0.5 / (2 * steps)) and scheduled[-1] == 0.5
    assert [m["kl_weight"] for m in run.metrics] == pytest.approx([0.25, 0.5, 0.5])


# ------------------------------------------------------------------------------ user plugins
class LaplaceLikelihood(Likelihood):
    """Laplace pixels with a fixed scale: a user's component, unknown to pyrovae."""

    def __init__(self, x_shape: tuple[int, ...], scale: float = 0.1) -> None:
        super().__init__(x_shape)
        self.scale = scale

    def forward(self, params: torch.Tensor) -> dist.TorchDistribution:
        return dist.Laplace(params, self.scale).to_event(len(self.x_shape))


@pytest.fixture
def laplace_likelihood():
    register("likelihood", "test_laplace")(LaplaceLikelihood)
    yield "test_laplace"
    del _REGISTRY["likelihood"]["test_laplace"]


def test_user_component_is_selected_by_name_from_a_config_file(laplace_likelihood, tmp_path):
    path = tmp_path / "laplace.toml"
    path.write_text(
        textwrap.dedent(
            """
            [data]
            binarize = "none"

            [model.likelihood]
            name = "test_laplace"
            scale = 0.2

            [train]
            epochs = 1
            device = "cpu"
            """
        )
    )
    config = pyrovae.load_config(path, SMALL[1:])
    run = pyrovae.train(config, out=tmp_path / "run", quiet=True)
    assert isinstance(run.model.likelihood, LaplaceLikelihood)
    assert run.model.likelihood.scale == 0.2
    assert (
        pyrovae.load_config(run.directory / "config.toml").model.likelihood.name == "test_laplace"
    )
    with pytest.raises(pyrovae.ConfigError, match="test_laplace.*its options are: scale"):
        pyrovae.load_config(path, ["model.likelihood.sigma=1"])


PLUGIN = '''
import torch
from pyro import distributions as dist

from pyrovae import register
from pyrovae.components.base import Likelihood


@register("likelihood", "plugin_laplace")
class PluginLaplace(Likelihood):
    """Laplace pixels with a fixed scale."""

    def __init__(self, x_shape: tuple[int, ...], scale: float = 0.1) -> None:
        super().__init__(x_shape)
        self.scale = scale

    def forward(self, params: torch.Tensor) -> dist.TorchDistribution:
        return dist.Laplace(params, self.scale).to_event(len(self.x_shape))
'''


def test_user_component_is_selected_through_a_plugin_on_the_command_line(tmp_path):
    plugin = tmp_path / "my_components.py"
    plugin.write_text(PLUGIN)
    args = ["train", "--quiet", "--out", str(tmp_path / "run"), *SMALL]
    args += ["model.likelihood=plugin_laplace", "data.binarize=none", "train.epochs=1"]
    refused = run_cli(*args, cwd=tmp_path)
    assert refused.returncode == 2
    assert "model.likelihood: unknown likelihood 'plugin_laplace'" in refused.stderr

    done = run_cli(*args, "--plugin", str(plugin), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert 'name = "plugin_laplace"' in (tmp_path / "run" / "config.toml").read_text()
    sampled = run_cli("sample", "--plugin", str(plugin), str(tmp_path / "run"), cwd=tmp_path)
    assert sampled.returncode == 0, sampled.stderr
    assert (tmp_path / "run" / "samples-new.png").is_file()


def test_a_bad_estimator_option_is_refused_before_the_run_directory_is_written(tmp_path):
    config = pyrovae.load_config(None, ["train.estimator.particles=0", "train.epochs=1"])
    with pytest.raises(pyrovae.ConfigError, match="train.estimator.*particles must be >= 1"):
        pyrovae.train(config, out=tmp_path / "run", quiet=True)
    assert not (tmp_path / "run" / "config.toml").exists()
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
