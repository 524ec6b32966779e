"""Accuracy of q(y|x), KL per latent dimension, the posterior-collapse and not-converged
warnings, paired standard errors, the latent pictures and ``pyrovae sample --label``.

Fixtures (tests/labelled_components.py): a tiny program to the agreed interface of
label-using programs, and a Gaussian program whose q(z|x) is set by hand, so that the KL per
dimension has a closed form and collapse is known to be there or not.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyro
import pytest
import torch
from PIL import Image

import pyrovae
from pyrovae.cli.main import main
from pyrovae.evaluation.compare import Result, markdown_table, paired_difference
from pyrovae.evaluation.evaluate import Evaluation, accuracy, evaluate
from pyrovae.runs.diagnostics import (
    COLLAPSE,
    NOT_CONVERGED,
    collapse_warning,
    convergence_warning,
    kl_per_dimension,
    run_warnings,
)
from pyrovae.runs.latent_pictures import manifold, save_latent_pictures
from pyrovae.runs.pictures import save_class_rows
from tests.conftest import run_cli
from tests.labelled_components import Gaussian, TinyLabelled

PLUGIN = str(Path(__file__).with_name("labelled_components.py"))


def gaussian_data(n: int = 2000, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------ accuracy
class Oracle(TinyLabelled):
    """Its classifier reads the label written into the first coordinate of x."""

    def classify(self, x):
        return 5.0 * torch.nn.functional.one_hot(x[:, 0].long(), self.num_classes).float()


class Constant(TinyLabelled):
    """Its classifier always says class 1."""

    def classify(self, x):
        return torch.tensor([0.0, 3.0, 0.0]).expand(len(x), 3)


def labelled_data(n: int = 300) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.randint(0, 3, (n,), generator=torch.Generator().manual_seed(1))
    x = torch.randn(n, 4, generator=torch.Generator().manual_seed(2))
    x[:, 0] = y.float()
    return x, y


def test_accuracy_of_a_known_classifier_is_right():
    x, y = labelled_data()
    assert accuracy(Oracle((4,)), x, y, batch_size=64) == 1.0
    assert accuracy(Constant((4,)), x, y, batch_size=64) == pytest.approx(
        float((y == 1).sum()) / 300
    )
    assert accuracy(Gaussian(1.0, 0.1), x[:, :3], y) is None  # no classifier
    assert accuracy(Oracle((4,)), x, None) is None  # no labels
    with pytest.raises(pyrovae.ConfigError, match="300 datapoints but 299 labels"):
        accuracy(Oracle((4,)), x, y[:-1])


def test_evaluate_reports_accuracy_for_a_labelled_program_and_none_without_labels():
    x, y = labelled_data(60)
    pyro.set_rng_seed(0)
    result = evaluate(Oracle((4,)), x, particles=4, y=y)
    assert result.accuracy == 1.0
    report = json.loads(json.dumps(result.to_dict()))
    assert report["accuracy"] == 1.0 and len(report["kl_per_dim"]) == 2  # z only, not y
    assert "accuracy of q(y|x)     1.0000" in result.summary()
    unlabelled = evaluate(Oracle((4,)), x, particles=4)
    assert unlabelled.accuracy is None and "accuracy" not in unlabelled.summary()
    assert unlabelled.to_dict()["accuracy"] is None


# ------------------------------------------------------------------ KL per dimension, collapse
def closed_form_kl(x: torch.Tensor, a: float, s: float) -> np.ndarray:
    m = a * x[:, :2].double().numpy()
    return (0.5 * (s**2 + m**2 - 1) - math.log(s)).mean(axis=0)


def test_kl_per_dimension_matches_the_closed_form_analytic_and_monte_carlo():
    x = gaussian_data()
    healthy = Gaussian(1.0, 0.1)
    analytic = kl_per_dimension(healthy, x, chunk_size=500)
    assert np.allclose(analytic, closed_form_kl(x, 1.0, 0.1), rtol=1e-6)  # float32
    healthy.analytic_kl = False  # Monte Carlo: 16 draws per datapoint, 2000 datapoints
    pyro.set_rng_seed(0)
    sampled = kl_per_dimension(healthy, x, particles=16)
    # per draw, log q - log p has standard deviation about 1 nat: 1 / sqrt(32000) = 0.006
    assert np.allclose(sampled, closed_form_kl(x, 1.0, 0.1), atol=0.04)


def test_the_collapse_warning_fires_on_a_collapsed_posterior_only():
    x = gaussian_data(500)
    collapsed = run_warnings(Gaussian(0.0, 1.0), x, metrics=[])
    assert len(collapsed) == 1 and collapsed[0].startswith(f"{COLLAPSE}: 0 of 2 latent")
    assert "0 with KL >= 0.01 nats" in collapsed[0]
    assert run_warnings(Gaussian(1.0, 0.1), x, metrics=[]) == []
    result = evaluate(Gaussian(0.0, 1.0), x, particles=4)
    assert result.kl_per_dim == pytest.approx((0.0, 0.0), abs=1e-12)
    assert [w.split(":")[0] for w in result.warnings] == [COLLAPSE]
    assert f"warning: {COLLAPSE}" in result.summary()
    assert evaluate(Gaussian(1.0, 0.1), x, particles=4).warnings == ()


def test_collapse_rule_fraction_of_active_units_or_no_kl():
    assert collapse_warning(0, 10) is not None
    assert collapse_warning(1, 10) is None
    assert collapse_warning(4, 50) is not None and collapse_warning(5, 50) is None
    assert collapse_warning(5, 50, [0.009] * 50) is not None  # active but no KL anywhere
    assert collapse_warning(5, 50, [0.009] * 49 + [0.5]) is None


# ------------------------------------------------------------------ not converged
def records(losses: list[float]) -> list[dict]:
    return [{"epoch": i + 1, "valid_loss": v} for i, v in enumerate(losses)]


def test_not_converged_from_the_slope_of_the_validation_loss():
    falling = convergence_warning(records([100 - 0.5 * e for e in range(20)]))
    assert falling.startswith(NOT_CONVERGED) and "falls by 0.5 nats per epoch" in falling
    assert "last 5 epochs" in falling
    # early epochs fell fast, the last 5 only by 0.05 per epoch: converged at threshold 0.1
    levelled = [100 - 5 * e for e in range(10)] + [50 - 0.05 * e for e in range(5)]
    assert convergence_warning(records(levelled)) is None
    assert convergence_warning(records(levelled), threshold=0.01) is not None
    assert convergence_warning(records([50, 49.5, 50.5, 50, 49.5, 50.5])) is None  # no fall
    assert convergence_warning(records([50.0]))  # one epoch: cannot have levelled off
    assert convergence_warning([]) is None
    assert convergence_warning(records([50, 40])).startswith(NOT_CONVERGED)  # 10 per epoch


# ------------------------------------------------------------------ compare
def result(name: str, log_likelihoods, **fields) -> Result:
    values = np.asarray(log_likelihoods, dtype=float)
    evaluation = Evaluation(
        elbo=float(values.mean()) - 1, elbo_stderr=0.1, log_likelihood=float(values.mean()),
        log_likelihood_stderr=float(values.std(ddof=1) / math.sqrt(len(values))), particles=10,
        reconstruction=-5.0, kl=1.0, kl_analytic=True, active_units=2, latent_dim=2,
        datapoints=len(values), seconds=1.0, log_likelihoods=tuple(values), **fields,
    )  # fmt: skip
    return Result(name, "trace", 3, 0.5, evaluation)


def test_paired_standard_error_matches_a_hand_computation():
    rng = np.random.default_rng(0)
    difficulty = rng.normal(-90, 20, size=200)  # shared: cancels in the paired difference
    first = difficulty + rng.normal(0, 0.3, size=200)
    second = difficulty - 0.4 + rng.normal(0, 0.3, size=200)
    mean, stderr = paired_difference(result("b", second), result("a", first))
    d = (-second) - (-first)
    assert mean == pytest.approx(d.mean(), rel=1e-12)
    assert stderr == pytest.approx(d.std(ddof=1) / np.sqrt(200), rel=1e-12)
    assert stderr < 0.05 < result("b", second).evaluation.log_likelihood_stderr  # pairing helps
    assert all(
        math.isnan(v) for v in paired_difference(result("c", second[:5]), result("a", first))
    )


def test_compare_table_has_accuracy_and_warnings_columns():
    ll = [-1.0, -2.0, -3.0]
    warnings = (f"{COLLAPSE}: 0 of 2", f"{NOT_CONVERGED}: falls")
    plain = [result("a", ll), result("b", ll, warnings=warnings)]
    table = markdown_table(plain)
    assert "accuracy" not in table.splitlines()[0]
    assert table.splitlines()[0].endswith("| warnings |")
    assert table.splitlines()[1].count("|---") == table.splitlines()[0].count(" |")
    assert table.splitlines()[2].endswith("| - |")
    assert table.splitlines()[3].endswith("| collapsed, not converged |")
    classified = markdown_table([result("a", ll), result("m2", ll, accuracy=0.875)])
    lines = classified.splitlines()
    assert "| accuracy | warnings |" in lines[0]
    assert lines[2].endswith("| - | - |") and lines[3].endswith("| 0.8750 | - |")
    row = result("m2", ll, accuracy=0.875, kl_per_dim=(0.5, 0.25), warnings=warnings).row()
    assert row["kl_per_dim"] == "0.5 0.25" and row["warnings"] == "; ".join(warnings)


# ------------------------------------------------------------------ pictures
def size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


def test_manifold_decodes_the_prior_quantiles_row_by_row():
    config = pyrovae.ModelConfig(latent_dim=2)
    vae = pyrovae.build_program(config, (1, 8, 8))
    grid = manifold(vae, n=4)
    quantiles = torch.distributions.Normal(0.0, 1.0).icdf(
        torch.tensor([0.125, 0.375, 0.625, 0.875])
    )
    # row 0 holds the largest z_2, column 0 the smallest z_1 (Kingma and Welling 2014, Fig. 4)
    corners = torch.stack(
        [torch.stack([quantiles[0], quantiles[3]]), torch.stack([quantiles[3], quantiles[0]])]
    )
    expected = vae.decode(corners).mean.reshape(2, 1, 8, 8)
    assert torch.allclose(grid[0], expected[0]) and torch.allclose(grid[15], expected[1])
    ten_d = pyrovae.build_program(pyrovae.ModelConfig(latent_dim=10), (1, 8, 8))
    assert manifold(ten_d) is None  # not a 2-D latent


def test_latent_pictures_and_class_rows_are_written_with_their_sizes(tmp_path):
    torch.manual_seed(0)
    x = torch.rand(50, 1, 8, 8)
    labels = torch.arange(50) % 10
    vae = pyrovae.build_program(pyrovae.ModelConfig(latent_dim=2), (1, 8, 8))
    written = save_latent_pictures(vae, tmp_path, x, labels)
    assert [p.name for p in written] == ["latent.png", "manifold.png"]
    assert size(tmp_path / "latent.png") == (600, 500)  # 6 x 5 inches at 100 dpi
    assert size(tmp_path / "manifold.png") == (501, 501)  # 20 tiles of 24 pixels, 1 apart
    wide = pyrovae.build_program(pyrovae.ModelConfig(latent_dim=5), (1, 8, 8))
    assert [p.name for p in save_latent_pictures(wide, tmp_path / "..", x, labels)] == [
        "latent.png"  # a PCA projection; no manifold for a 5-D latent
    ]
    labelled = TinyLabelled((4,), num_classes=3)  # 2x2 images, enlarged 14 times
    assert save_class_rows(labelled, tmp_path / "rows.png", per_class=10)
    assert size(tmp_path / "rows.png") == (10 * 30 + 2, 3 * 30 + 2)  # one row per class
    assert [p.name for p in save_latent_pictures(labelled, tmp_path)] == ["manifold.png"]
    # 3 classes' grids of 10 x 10 tiles (29 pixels apart), 6 apart in one row
    assert size(tmp_path / "manifold.png") == (3 * (291 + 6) + 6, 291 + 12)


# ------------------------------------------------------------------ sample --label
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The tiny labelled program (registered by tests.labelled_components) and the VAE,
    each trained one epoch on digits (a few seconds)."""
    folder = tmp_path_factory.mktemp("runs")
    labelled = ["model.program=tiny_labelled", "train.estimator=trace"]
    for name, overrides in (("labelled", labelled), ("vae", [])):
        config = pyrovae.load_config(None, [*overrides, "train.epochs=1", "train.device='cpu'"])
        pyrovae.train(config, out=folder / name, quiet=True)
    return folder


def test_training_writes_the_pictures_and_evaluate_scores_the_classifier(runs):
    assert size(runs / "vae" / "latent.png") == (600, 500)  # digits have labels: any program
    assert not (runs / "vae" / "manifold.png").exists()  # a 10-D latent
    for name in ("latent.png", "manifold.png", "samples-by-class.png"):
        assert (runs / "labelled" / name).is_file(), name
    result = evaluate(runs / "labelled", particles=2)
    _, program, _ = pyrovae.load_run(runs / "labelled")
    splits = pyrovae.load_splits(pyrovae.load_config(runs / "labelled" / "config.toml").data, "cpu")
    predicted = program.classify(splits.test).argmax(-1)
    assert result.accuracy == float((predicted == splits.test_labels).double().mean())
    assert evaluate(runs / "vae", particles=2).accuracy is None


def sample(capsys, *args: str) -> tuple[int, str, str]:
    """``pyrovae sample ARGS`` in this process: status, stdout, stderr."""
    status = main(["sample", *args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_sample_label_draws_one_class_and_a_row_per_class(runs, capsys):
    status, out, err = sample(capsys, str(runs / "labelled"), "--label", "3", "--count", "8")
    assert status == 0, err
    assert "wrote 8 samples of class 3" in out
    assert size(runs / "labelled" / "samples-new.png") == (8 * 26 + 2, 26 + 2)  # 8x8 digits x3
    assert size(runs / "labelled" / "samples-by-class.png") == (10 * 26 + 2, 10 * 26 + 2)


def test_sample_label_bad_inputs_are_one_line(runs, capsys):
    status, _, err = sample(capsys, str(runs / "labelled"), "--label", "10")
    assert status == 2 and err.count("\n") == 1
    assert "--label 10 is out of range" in err and "0 to 9" in err
    status, _, err = sample(capsys, str(runs / "labelled"), "--label", "-1")
    assert status == 2 and err.count("\n") == 1 and "--label" in err
    status, _, err = sample(capsys, str(runs / "vae"), "--label", "3")
    assert status == 2 and err.count("\n") == 1 and "does not use labels" in err
    assert not (runs / "vae" / "samples-new.png").exists()
    assert run_cli(
        "sample", "--plugin", PLUGIN, str(runs / "labelled"), "--label", "12"
    ).stderr == (
        f"pyrovae: error: --label 12 is out of range: run {str(runs / 'labelled')!r} has 10"
        " classes, 0 to 9\n"
    )  # the command itself, once
