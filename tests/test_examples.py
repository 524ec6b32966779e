"""The example scripts run end to end (subprocess, tiny budgets)."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO


def run_example(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, text=True, timeout=600
    )


def test_train_mnist_script_runs_on_digits(tmp_path):
    # The same script with the offline digits config, so the smoke test needs no MNIST.
    digits = str(REPO / "examples" / "configs" / "digits.toml")
    script = str(REPO / "examples" / "train_mnist.py")
    result = run_example(
        script, "--config", digits, "--epochs", "2", "--out", str(tmp_path / "r"), "--quiet"
    )
    assert result.returncode == 0, result.stderr
    assert "test negative ELBO:" in result.stdout
    assert (tmp_path / "r" / "samples.png").is_file()


def test_train_mnist_script_reports_missing_data_in_one_line(tmp_path):
    script = str(REPO / "examples" / "train_mnist.py")
    result = run_example(
        script, "--data-dir", str(tmp_path), "--epochs", "1", "--out", str(tmp_path / "r")
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("train_mnist: error: data: MNIST")
    assert len(result.stderr.strip().splitlines()) == 1
