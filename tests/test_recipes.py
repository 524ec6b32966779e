"""The published recipes of ``examples/reproduce/`` load as written, and ``pyrovae train
--budget`` scales a recipe's epochs for a quick CPU run."""

from __future__ import annotations

import argparse
import json
import re

import pytest
import torch
from conftest import REPO, run_cli

from pyrovae.cli.train import _fraction, scale_to_budget
from pyrovae.components.programs import build_program
from pyrovae.config import Component, load_config

RECIPES = sorted((REPO / "examples" / "reproduce").glob("*.toml"))


def test_every_paper_has_a_recipe():
    names = {p.stem for p in RECIPES}
    burda = {f"burda_{n}layer_{e}_k{k}" for n in (1, 2) for e, k in [("vae", 1), ("vae", 5),
             ("vae", 50), ("iwae", 5), ("iwae", 50)]}  # fmt: skip
    assert burda | {"tomczak_vampprior", "kingma_iaf", "tucker_dreg"} == names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_loads_builds_and_states_its_source(path):
    config = load_config(path)
    assert config.name == path.stem
    assert config.train.device == "cuda"  # runnable unchanged on a GPU; loads without one
    assert (config.data.name, config.data.binarize) == ("mnist", "dynamic")
    program = build_program(config.model, (1, 28, 28))
    assert sum(p.numel() for p in program.parameters()) > 0
    header = path.read_text().split("\nname = ")[0]
    assert re.search(r"\((19|20)\d\d\)", header), "the header cites the paper and its year"
    assert "published" in header.lower() and "Deviations" in header
    assert f"pyrovae evaluate runs/{path.stem} --particles 5000" in header


def test_burda_recipes_follow_the_paper():
    for path in RECIPES:
        if not path.stem.startswith("burda"):
            continue
        train = load_config(path).train
        assert (train.epochs, train.batch_size, train.lr, train.adam_eps) == (3280, 20, 1e-3, 1e-4)
        assert train.schedule == Component("burda")
        k = int(path.stem.rsplit("_k", 1)[1])
        assert train.estimator == Component(
            "iwae" if "iwae" in path.stem else "trace", {"particles": k}
        )


def test_budget_scales_epochs_warmup_and_patience():
    config = load_config(REPO / "examples" / "reproduce" / "tomczak_vampprior.toml")
    small = scale_to_budget(config, 0.01)
    assert (small.train.epochs, small.train.warmup_epochs, small.train.patience) == (20, 1, 1)
    assert small.model == config.model and small.train.lr == config.train.lr
    assert scale_to_budget(config, 1.0) == config
    burda = load_config(REPO / "examples" / "reproduce" / "burda_1layer_iwae_k5.toml")
    assert scale_to_budget(burda, 0.01).train.epochs == 33  # round(32.8)
    assert scale_to_budget(burda, 1e-6).train.epochs == 1  # never below one epoch


def test_budget_scales_epoch_counted_schedules():
    step = load_config(None, ["train.epochs=100", "train.schedule={name='step', step_size=30}"])
    assert scale_to_budget(step, 0.1).train.schedule.options["step_size"] == 3
    expo = load_config(None, ["train.epochs=100", "train.schedule={name='exponential', gamma=0.9}"])
    gamma = scale_to_budget(expo, 0.1).train.schedule.options["gamma"]
    assert gamma**10 == pytest.approx(0.9**100, rel=1e-9)  # the same final learning rate


def test_budget_trains_a_recipe_for_one_epoch_on_digits(tmp_path):
    result = run_cli(
        "train",
        "--config",
        str(REPO / "examples" / "reproduce" / "burda_1layer_vae_k1.toml"),
        "--budget",
        "0.0003",  # 3280 epochs -> 1
        "--device",
        "cpu",
        "data.name=digits",
        "--out",
        str(tmp_path / "run"),
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    assert "after 1 epochs" in result.stdout
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert [m["epoch"] for m in metrics] == [1]
    assert metrics[0]["lr"] == pytest.approx(1e-3)  # stage 0 of Burda's schedule


@pytest.mark.parametrize("budget", ["0", "-0.5", "1.5", "nan", "inf", "half"])
def test_budget_outside_zero_one_is_refused(budget):
    with pytest.raises(argparse.ArgumentTypeError):
        _fraction(budget)


def test_budget_error_is_one_line_on_the_command_line():
    result = run_cli("train", "--budget", "1.5", "train.device=cpu")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "--budget" in result.stderr and "(0, 1]" in result.stderr


def test_adam_eps_reaches_the_optimizer(tmp_path):
    from conftest import tiny

    import pyrovae

    pyrovae.train(tiny("train.epochs=1", "train.adam_eps=1e-4"), out=tmp_path / "r", quiet=True)
    payload = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=False)
    assert [g["eps"] for g in payload["optimizer"]["param_groups"]] == [1e-4]
