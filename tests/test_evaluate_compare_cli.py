"""``pyrovae evaluate``, ``pyrovae gradients`` and ``pyrovae compare`` end to end on digits."""

from __future__ import annotations

import csv
import json

import pytest
import torch

import pyrovae
from pyrovae.errors import ConfigError
from pyrovae.evaluation.compare import compare, load_variants, merge_variant
from pyrovae.evaluation.gradients import measure
from tests.conftest import run_cli

KEYS = {"elbo", "log_likelihood", "log_likelihood_stderr", "particles", "reconstruction", "kl"}


def test_evaluate_json_matches_the_python_api(run_dir):
    result = run_cli("evaluate", str(run_dir), "--particles", "50", "--limit", "40", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert KEYS | {"active_units"} <= set(report)
    expected = pyrovae.evaluate(run_dir, particles=50, limit=40)  # same seed, same test split
    for key in KEYS:
        assert report[key] == pytest.approx(getattr(expected, key), rel=1e-6), key
    assert report["particles"] == 50 and report["datapoints"] == 40
    # Jensen: the log-likelihood estimate with 50 particles lies above the ELBO.
    assert report["elbo"] < report["log_likelihood"] < 0


def test_evaluate_prints_a_report_and_user_errors_are_one_line(run_dir, tmp_path):
    result = run_cli("evaluate", str(run_dir), "--particles", "10", "--quiet")
    assert result.returncode == 0, result.stderr
    assert "log p(x), K=10" in result.stdout and "active units" in result.stdout
    missing = run_cli("evaluate", str(tmp_path / "nothing"))
    assert missing.returncode == 2
    assert missing.stderr.strip().count("\n") == 0 and "does not exist" in missing.stderr
    with pytest.raises(ConfigError, match="particles must be >= 1"):
        pyrovae.evaluate(run_dir, particles=0)


def test_gradients_prints_a_table_and_writes_a_plot(run_dir, tmp_path):
    plot = tmp_path / "snr.png"
    result = run_cli(
        "gradients", str(run_dir), "--estimators", "iwae:2", "dreg:2", "--draws", "5",
        "--batch-size", "10", "--out", str(plot),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "| `iwae:2` |" in result.stdout and "| `dreg:2` |" in result.stdout
    assert plot.stat().st_size > 0
    with pytest.raises(ConfigError, match="unknown estimator 'nope'"):
        measure(pyrovae.load_run(run_dir)[1], torch.zeros(2, 1, 8, 8), ["nope:3"], draws=2)


def test_compare_trains_evaluates_and_tabulates_two_variants(tmp_path):
    variants = tmp_path / "variants.toml"
    variants.write_text(
        '[variants.trace]\ntrain.estimator = "trace"\n\n'
        '[variants.iwae3]\ntrain.estimator = { name = "iwae", particles = 3 }\n'
    )
    out = tmp_path / "cmp"
    args = ["compare", "--variants", str(variants), "--out", str(out), "--particles", "20",
            "--limit", "50", "--quiet", "train.epochs=2", "train.device='cpu'"]  # fmt: skip
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["variant"] for r in rows] == ["trace", "iwae3"]
    assert [r["estimator"] for r in rows] == ["trace", "iwae:3"]
    table = (out / "results.md").read_text()
    assert "| trace | `trace` | 2 |" in table and "| iwae3 | `iwae:3` | 2 |" in table
    for row in rows:
        run = out / row["variant"]
        evaluation = json.loads((run / "evaluation.json").read_text())["evaluation"]
        assert float(row["log_likelihood"]) == pytest.approx(evaluation["log_likelihood"])
        line = next(t for t in table.splitlines() if t.startswith(f"| {row['variant']} |"))
        cell = line.split("|")[5]  # "| variant | estimator | epochs | -ELBO | -log p(x) |"
        assert -float(row["log_likelihood"]) == pytest.approx(float(cell.split("±")[0]), abs=0.006)
        assert pyrovae.load_config(run / "config.toml").train.seed == 0  # same seed and budget
    # The paired difference to the first variant, from the per-datapoint estimates.
    per_datapoint = [
        json.loads((out / r["variant"] / "evaluation.json").read_text())["log_likelihoods"]
        for r in rows
    ]
    differences = [a - b for a, b in zip(*per_datapoint, strict=True)]
    assert len(differences) == 50
    assert float(rows[1]["nll_minus_first"]) == pytest.approx(sum(differences) / 50, abs=1e-9)
    assert (out / "learning_curves.png").stat().st_size > 0
    assert (out / "results.png").stat().st_size > 0
    # A second call reuses the finished runs and evaluations.
    again = run_cli(*args[:-3], "train.epochs=2", "train.device='cpu'")
    assert again.returncode == 0 and (out / "results.csv").read_text().count("\n") == 3


def test_variants_merge_into_the_base_config():
    base = pyrovae.Config().to_dict()
    renamed = merge_variant(base, {"train": {"estimator": {"name": "iwae", "particles": 5}}})
    assert renamed["train"]["estimator"] == {"name": "iwae", "particles": 5}
    assert renamed["train"]["epochs"] == base["train"]["epochs"]
    by_name = merge_variant(base, {"model": {"prior": "learned_normal"}, "train": {"lr": 3e-4}})
    assert by_name["model"]["prior"] == "learned_normal" and by_name["train"]["lr"] == 3e-4
    tuned = merge_variant(base, {"train": {"estimator": {"particles": 10}}})
    assert tuned["train"]["estimator"] == {"name": "meanfield", "particles": 10}
    assert pyrovae.Config.from_dict(tuned).train.estimator.options["particles"] == 10


def test_bad_variants_files_are_config_errors(tmp_path):
    path = tmp_path / "v.toml"
    path.write_text("[train]\nepochs = 3\n")
    with pytest.raises(ConfigError, match=r"only \[variants.NAME\] tables"):
        load_variants(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_variants(tmp_path / "missing.toml")
    path.write_text('[variants.a]\ntrain.estimator = "nope"\n')
    with pytest.raises(ConfigError, match="variant 'a': .*unknown estimator 'nope'"):
        compare(pyrovae.Config(), load_variants(path), tmp_path / "out")
