"""Numerical faults: a step with a non-finite loss or gradient never reaches the parameters; it
is skipped and counted, and too many in a row stop training with one line while the last
checkpoint stays whole. Faults come from ``faulty_bernoulli`` (tests/fault_components.py)."""

from __future__ import annotations

import math
from pathlib import Path

import fault_components
import pytest
import torch
from conftest import TINY, run_cli

import pyrovae
from pyrovae.errors import TrainingError
from pyrovae.runs.checkpoint import load_checkpoint
from pyrovae.runs.directory import CHECKPOINT_FILE, read_metrics
from pyrovae.training.step_guard import StepGuard

PLUGIN = str(Path(fault_components.__file__))
STEPS = 26  # digits with batch_size = 50: ceil(1294 / 50) steps per epoch


def faulty(*overrides: str, **faults) -> pyrovae.Config:
    options = ", ".join(f"{k}={v!r}".replace("'", '"') for k, v in faults.items())
    likelihood = "model.likelihood={name='faulty_bernoulli'" + (f", {options}" if options else "")
    return pyrovae.load_config(None, [*TINY, likelihood + "}", *overrides])


def adam_steps(run_dir: Path) -> set[int]:
    """How many updates Adam applied to each parameter, from the last checkpoint."""
    state = load_checkpoint(run_dir / CHECKPOINT_FILE)["optimizer"]["state"]
    return {int(s["step"]) for s in state.values()}


def test_bad_steps_are_skipped_counted_and_never_reach_the_parameters(tmp_path):
    """Four faults in epoch 1 (NaN losses at calls 3 and 7, NaN gradients with a finite loss at
    calls 5 and 9) and one in epoch 2 (call 30): the metrics count them per epoch, Adam made
    exactly the other steps, and every weight is finite."""
    config = faulty("train.epochs=2", "train.clip_norm=1.0", nan_loss=[3, 7, 30], nan_grad=[5, 9])
    run = pyrovae.train(config, out=tmp_path / "r", quiet=True)
    assert [m["skipped_steps"] for m in run.metrics] == [4, 1]
    assert [m["step"] for m in run.metrics] == [STEPS, 2 * STEPS]
    assert adam_steps(tmp_path / "r") == {2 * STEPS - 5}
    assert all(torch.isfinite(p).all() for p in run.model.parameters())
    assert all(
        math.isfinite(m["train_loss"]) and math.isfinite(m["valid_loss"]) for m in run.metrics
    )


def test_the_guard_tells_good_steps_from_bad_ones():
    """The guard's verdicts: NaN loss, infinite loss, NaN gradient under a finite loss."""
    layer = torch.nn.Linear(3, 2)
    guard = StepGuard(max_bad_steps=3)
    x = torch.ones(4, 3)
    for poison in (torch.nan, torch.inf):
        loss = (layer(x) * poison).sum()
        loss.backward()
        assert not guard.check(loss, layer.parameters(), 0.0, epoch=1, step=0)
        layer.zero_grad(set_to_none=True)
    # A finite loss whose gradient is not: sqrt at 0 has an infinite slope.
    loss = (layer(x) + 0.0 * torch.sqrt(layer(x) * 0.0)).sum()
    loss.backward()
    assert torch.isfinite(loss)
    with pytest.raises(TrainingError, match="3 steps in a row had a non-finite loss or gradient"):
        guard.check(loss, layer.parameters(), 0.0, epoch=1, step=2)
    # A good step resets the count in a row; its gradient is clipped to clip_norm.
    layer.zero_grad(set_to_none=True)
    guard.in_a_row = 0
    loss = layer(x).sum() * 100
    loss.backward()
    assert guard.check(loss, layer.parameters(), 1.0, epoch=1, step=3)
    assert guard.in_a_row == 0
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in layer.parameters()]))
    assert norm == pytest.approx(1.0, rel=1e-5)  # clipped to clip_norm (float32 rounding)


def test_too_many_bad_steps_in_a_row_stop_training_and_keep_the_last_checkpoint(tmp_path):
    """From step 60 (epoch 3) every loss is NaN: with max_bad_steps = 5 training stops at step
    64, and checkpoint.pt is still epoch 2's, identical to a run that stopped there."""
    config = faulty("train.epochs=4", "train.max_bad_steps=5", nan_from=60)
    with pytest.raises(TrainingError) as error:
        pyrovae.train(config, out=tmp_path / "r", quiet=True)
    message = str(error.value)
    assert "\n" not in message
    assert "5 steps in a row" in message and "epoch 3, step 64" in message
    assert "the last checkpoint is intact" in message

    clean = faulty("train.epochs=2", nan_from=60)  # same config, never reaches step 60
    pyrovae.train(clean, out=tmp_path / "clean", quiet=True)
    kept = load_checkpoint(tmp_path / "r" / CHECKPOINT_FILE)
    assert kept["epoch"] == 2
    reference = load_checkpoint(tmp_path / "clean" / CHECKPOINT_FILE)["model"]
    assert all(torch.equal(kept["model"][k], reference[k]) for k in reference)
    assert len(read_metrics(tmp_path / "r")) == 2
    _, vae, _ = pyrovae.load_run(tmp_path / "r")  # loadable, and finite
    assert all(torch.isfinite(p).all() for p in vae.parameters())


def test_an_epoch_without_a_good_step_is_an_error_even_below_the_limit(tmp_path):
    config = faulty("train.epochs=3", "train.max_bad_steps=1000", nan_from=STEPS)
    with pytest.raises(
        TrainingError, match=f"every step of epoch 2 \\({STEPS}\\) had a non-finite"
    ):
        pyrovae.train(config, out=tmp_path / "r", quiet=True)
    assert load_checkpoint(tmp_path / "r" / CHECKPOINT_FILE)["epoch"] == 1


def test_a_fault_in_the_first_step_is_a_one_line_error(tmp_path):
    """Pyro validates the first step: a NaN there is reported, not skipped."""
    with pytest.raises(TrainingError, match="the first training step failed Pyro's checks") as e:
        pyrovae.train(faulty("train.epochs=1", nan_loss=[0]), out=tmp_path / "r", quiet=True)
    assert "\n" not in str(e.value)


def test_the_bad_step_count_in_a_row_survives_a_resume(tmp_path):
    """3 bad steps end epoch 1, 3 begin epoch 2: with max_bad_steps = 6 the stop comes at the
    same step whether or not the run was resumed in between."""
    bad = [STEPS - 3, STEPS - 2, STEPS - 1, STEPS, STEPS + 1, STEPS + 2]
    config = faulty("train.epochs=2", "train.max_bad_steps=6", nan_loss=bad)
    with pytest.raises(TrainingError, match=f"step {STEPS + 2}\\)"):
        pyrovae.train(config, out=tmp_path / "straight", quiet=True)
    pyrovae.train(config.replace(["train.epochs=1"]), out=tmp_path / "resumed", quiet=True)
    assert load_checkpoint(tmp_path / "resumed" / CHECKPOINT_FILE)["bad_steps_in_row"] == 3
    with pytest.raises(TrainingError, match=f"step {STEPS + 2}\\)"):
        pyrovae.resume(tmp_path / "resumed", ["train.epochs=2"], quiet=True)


def test_the_command_line_reports_skipped_steps_and_stops_with_exit_2(tmp_path):
    args = ["--plugin", PLUGIN, "--quiet", *TINY, "train.epochs=1"]
    likelihood = "model.likelihood={name='faulty_bernoulli', %s}"
    skipped = run_cli("train", "--out", str(tmp_path / "a"), *args, likelihood % "nan_loss=[4, 5]")
    assert skipped.returncode == 0, skipped.stderr
    assert "(2 steps skipped: non-finite loss or gradient)" in skipped.stdout
    assert "Encountered NaN" not in skipped.stderr  # counted, not warned about per step

    stopped = run_cli(
        "train",
        "--out",
        str(tmp_path / "b"),
        *args,
        "train.max_bad_steps=3",
        likelihood % "nan_from=10",
    )
    assert stopped.returncode == 2
    assert stopped.stderr.startswith("pyrovae: error: 3 steps in a row had a non-finite loss")
    assert stopped.stderr.count("\n") == 1
