"""benchmarks/paired_loglik.py and benchmarks/torch_vae_recipe.py score the test set in blocks,
saving after each and resuming an interrupted call: the same numbers as an uninterrupted one."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import torch

import pyrovae
from pyrovae.components.datasets import load_splits
from tests.conftest import REPO


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def scored(path) -> torch.Tensor:
    return torch.load(path)["log_likelihoods"]


def test_one_block_is_evaluate_with_the_seed(run_dir, tmp_path):
    paired = load_script("paired_loglik")
    paired.score(str(run_dir), k=50, limit=40, seed=3, out=str(tmp_path / "a.pt"))
    expected = pyrovae.evaluate(run_dir, particles=50, limit=40, seed=3).log_likelihoods
    assert torch.equal(scored(tmp_path / "a.pt"), torch.tensor(expected))


def test_blocks_use_seed_plus_block_and_resume_exactly(run_dir, tmp_path, capsys):
    paired = load_script("paired_loglik")
    whole, part = str(tmp_path / "whole.pt"), str(tmp_path / "part.pt")
    paired.score(str(run_dir), k=50, limit=40, seed=3, out=whole, block=16)
    config = pyrovae.load_config(run_dir / "config.toml")
    x = load_splits(config.data, torch.device("cpu")).test[:40]
    expected = [
        pyrovae.evaluate(run_dir, x=x[start : start + 16], particles=50, seed=3 + b)
        for b, start in enumerate(range(0, 40, 16))
    ]
    assert torch.equal(
        scored(whole), torch.tensor([v for e in expected for v in e.log_likelihoods])
    )
    # interrupted after the first block, then resumed on a longer limit
    paired.score(str(run_dir), k=50, limit=16, seed=3, out=part, block=16)
    assert len(scored(part)) == 16
    first = torch.load(part)["summary"]
    paired.score(str(run_dir), k=50, limit=40, seed=3, out=part, block=16)
    assert "resuming" in capsys.readouterr().out
    assert torch.equal(scored(part), scored(whole))
    summary = torch.load(part)["summary"]
    assert summary["test_images"] == 40
    # the clocks add up over a resume: the resumed total includes the first call's block
    assert summary["eval_seconds"] >= first["eval_seconds"]
    assert summary["eval_cpu_seconds"] >= first["eval_cpu_seconds"]
    assert summary["threads"] == torch.get_num_threads()
    assert len(summary["load_average"]) == 3


def recipe(*args: str) -> None:
    script = str(REPO / "benchmarks" / "torch_vae_recipe.py")
    env = {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, script, *args], capture_output=True, text=True, env=env, timeout=600
    )
    assert result.returncode == 0, result.stderr


def test_hand_written_scoring_resumes_exactly_and_keeps_the_training_time(mnist_dir, tmp_path):
    data = ["--data-dir", str(mnist_dir), "--k", "20", "--hidden", "16", "--z", "4"]
    weights, whole, part = (str(tmp_path / n) for n in ("w.pt", "whole.pt", "part.pt"))
    recipe(*data, "--epochs", "1", "--test-limit", "1", "--out", weights)
    train_seconds = torch.load(weights)["summary"]["train_seconds"]
    scoring = [*data, "--load", weights, "--block", "3"]
    recipe(*scoring, "--test-limit", "7", "--out", whole)
    recipe(*scoring, "--test-limit", "3", "--out", part)
    recipe(*scoring, "--test-limit", "7", "--out", part)
    assert len(scored(whole)) == 7
    assert torch.equal(scored(part), scored(whole))
    assert torch.load(part)["summary"]["train_seconds"] == train_seconds > 0
