"""The README's set-up commands stay true to the repository.

This file proves:
- the README's set-up section holds exactly two commands: install and train, and install and
  test;
- the test command is run verbatim by CI (.ci/run);
- the training command names a config file that exists and that the ``pyrovae`` command (the
  console script declared in pyproject.toml) accepts, and the test extra it installs exists.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

from conftest import run_cli

import pyrovae
from pyrovae.cli.main import build_parser

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def setup_commands() -> list[str]:
    section = README.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)\n```", section, flags=re.DOTALL)


def test_readme_has_two_one_line_setup_commands():
    commands = setup_commands()
    assert len(commands) == 2, commands
    assert all("\n" not in command for command in commands)
    install = "python3 -m venv .venv && . .venv/bin/activate && pip install"
    assert all(command.startswith(install) for command in commands)


def test_ci_runs_the_readme_test_command_verbatim():
    test_command = setup_commands()[1]
    assert test_command.endswith("python -m pytest")
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert test_command in ci, "README's test command must be a line of .ci/run, verbatim"


def test_readme_train_command_runs_an_existing_config():
    train_command = setup_commands()[0].split(" && ")[-1]
    program, *args = shlex.split(train_command)
    assert program == "pyrovae"
    parsed = build_parser().parse_args(args)
    assert parsed.command == "train"
    assert (REPO / parsed.config).is_file()
    config = pyrovae.load_config(REPO / parsed.config, parsed.overrides)
    assert config.data.name == "digits"  # bundled with scikit-learn: no network needed


def test_pyproject_declares_the_command_and_the_test_extra():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["pyrovae"] == "pyrovae.cli:main"
    extras = pyproject["project"]["optional-dependencies"]["test"]
    assert {re.split(r"[<>=]", e)[0] for e in extras} >= {"pytest", "pytest-timeout"}
    assert '".[test]"' in setup_commands()[1]


def test_readme_examples_are_the_example_files_and_run(tmp_path):
    # A block after <!-- example:PATH --> is that file, verbatim; the files run as scripts.
    readme = (REPO / "README.md").read_text()
    marked = re.findall(r"<!-- example:(\S+) -->\n```python\n(.*?)```", readme, re.S)
    assert marked, "the README shows no example file"
    for path, block in marked:
        assert block.strip() == (REPO / path).read_text().strip(), f"README's {path} is stale"
        done = subprocess.run(
            [sys.executable, str(REPO / path)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        assert done.returncode == 0, done.stderr[-2000:]


def test_the_program_example_trains_from_the_command_line(tmp_path):
    done = run_cli(
        "train",
        "--plugin",
        str(REPO / "examples" / "my_program.py"),
        "--out",
        str(tmp_path / "run"),
        "--quiet",
        "model.program=cluster_vae",
        "train.estimator=tracegraph",
        "train.epochs=2",
        "train.device=cpu",
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "run" / "samples.png").is_file()
