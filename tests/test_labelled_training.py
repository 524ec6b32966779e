"""Programs that use labels through training, resume and the command line, on digits with 100
labels kept: M2 (the label summed out, or sampled) and the conditional VAE, and the one-line
refusals of what cannot work."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import REPO, run_cli

import pyrovae
from pyrovae.errors import ConfigError
from pyrovae.evaluation.gradients import measure
from pyrovae.runs.checkpoint import load_checkpoint
from pyrovae.runs.directory import CHECKPOINT_FILE

M2 = [
    "data.name=digits",
    "data.labelled=100",
    "model.program={name='m2', latent=4, hidden=[32], classifier=[32]}",
    "train.estimator=enum",
    "train.batch_size=300",  # 4 steps of 300 unlabelled and 100 labelled images per epoch
    "train.device=cpu",
]
CVAE = [
    "data.name=digits",
    "model.program=cvae",
    "model.latent_dim=4",
    "model.encoder={name='mlp', hidden=[32]}",
    "model.decoder={name='mlp', hidden=[32]}",
    "train.device=cpu",
]


def _metrics(run) -> list[dict]:
    return [{k: v for k, v in m.items() if k != "epoch_seconds"} for m in run.metrics]


def test_m2_resumes_exactly_with_its_labelled_batches(tmp_path):
    # A KL warm-up scales the enumerated label's sites too (one common scale, as Pyro needs).
    config = pyrovae.load_config(None, [*M2, "train.epochs=2", "train.warmup_epochs=2"])
    full = pyrovae.train(config, out=tmp_path / "full", quiet=True)
    pyrovae.train(config.replace(["train.epochs=1"]), out=tmp_path / "part", quiet=True)
    torch.manual_seed(123)  # disturbed between the runs: resume restores every generator
    resumed = pyrovae.resume(tmp_path / "part", ["train.epochs=2"], quiet=True)
    assert _metrics(resumed) == _metrics(full)
    a = load_checkpoint(tmp_path / "part" / CHECKPOINT_FILE)["model"]
    b = load_checkpoint(tmp_path / "full" / CHECKPOINT_FILE)["model"]
    assert all(torch.equal(a[key], b[key]) for key in b)
    losses = [m["valid_loss"] for m in full.metrics]
    assert all(math.isfinite(v) for v in losses) and losses[1] < losses[0]


def test_the_sampled_label_variant_trains(tmp_path):
    config = pyrovae.load_config(None, [*M2, "train.estimator=trace", "train.epochs=1"])
    run = pyrovae.train(config, out=tmp_path, quiet=True)
    assert math.isfinite(run.metrics[0]["valid_loss"])


def test_the_conditional_vae_trains_on_every_label(tmp_path):
    run = pyrovae.train(pyrovae.load_config(None, [*CVAE, "train.epochs=2"]), out=tmp_path)
    losses = [m["valid_loss"] for m in run.metrics]
    assert losses[1] < losses[0]
    assert (tmp_path / "reconstructions.png").is_file()
    # Evaluation scores log p(x|y) with the test labels: above the bound, by a little.
    result = pyrovae.evaluate(tmp_path, particles=20, limit=30)
    assert result.elbo <= result.log_likelihood < result.elbo + 5
    assert result.accuracy is None  # no classifier


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ([*CVAE, "data.labelled=100"], "needs every training label"),
        ([*M2, "train.estimator=meanfield"], "choose enum"),
        ([*M2, "train.estimator=iwae"], "discrete latent"),
        ([*M2[2:], "data.name=file", "data.path=DATA"], "needs a dataset with labels"),
    ],
    ids=["cvae-hidden-labels", "m2-meanfield", "m2-iwae", "m2-no-labels"],
)
def test_what_cannot_train_is_refused_in_one_line(overrides, message, tmp_path):
    data = tmp_path / "data.npy"
    np.save(data, np.random.default_rng(0).random((40, 6)).astype("float32"))
    overrides = [o.replace("DATA", str(data)) for o in overrides]
    with pytest.raises(ConfigError, match=message):
        pyrovae.train(pyrovae.load_config(None, overrides), out=tmp_path / "run", quiet=True)


def test_the_command_line_trains_evaluates_samples_and_resumes_m2(tmp_path):
    out = tmp_path / "run"
    recipe = str(REPO / "examples" / "configs" / "m2_mnist.toml")
    small = "model.program={name='m2', latent=4, hidden=[32], classifier=[32]}"
    common = ["data.name=digits", "data.labelled=100", small, "train.batch_size=300"]
    common.append("train.device=cpu")
    train = run_cli(
        "train", "--config", recipe, "--out", str(out), "--quiet", *common, "train.epochs=1"
    )
    assert train.returncode == 0, train.stderr
    resumed = run_cli("train", "--resume", str(out), "--quiet", "train.epochs=2")
    assert resumed.returncode == 0, resumed.stderr
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    evaluated = run_cli("evaluate", str(out), "--json", "--particles", "20", "--limit", "30")
    assert evaluated.returncode == 0, evaluated.stderr
    result = json.loads(evaluated.stdout)
    assert math.isfinite(result["log_likelihood"])
    assert result["log_likelihood"] >= result["elbo"] - 0.5  # IWAE-style: above the bound
    sampled = run_cli("sample", str(out), "--count", "4")
    assert sampled.returncode == 0, sampled.stderr
    # pyrovae gradients' estimators on the run: the label summed out, or sampled.
    _, program, _ = pyrovae.load_run(out)
    x = torch.rand(20, 1, 8, 8).bernoulli()
    rows = measure(program, x, ["enum", "trace"], draws=3)
    assert [row.estimator for row in rows] == ["enum", "trace"]
    assert all(math.isfinite(row.encoder) and math.isfinite(row.decoder) for row in rows)
