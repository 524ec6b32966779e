"""Learning-rate schedules, early stopping, the time budget and the best checkpoint.

This file proves:
- every built-in schedule gives the lr sequence of its formula (step, exponential, cosine,
  Burda et al.'s 3^i-epoch stages with their boundaries), and a training run records the lr
  each epoch trained with;
- the plateau schedule reacts to a validation curve as ReduceLROnPlateau's rule says;
- early stopping stops at the epoch its rule names on a forced validation curve, writes the
  last checkpoint then and the best one at the lowest epoch between checkpoints, and says why;
- ``load_run``, ``evaluate`` and the commands load ``best.pt`` by default, ``checkpoint.pt``
  with ``last``;
- a run with a schedule (step, plateau, burda) or early stopping resumed half-way ends bit for
  bit where the uninterrupted run ends, with the same lr sequence; a checkpoint written before
  schedules existed resumes exactly; a finished cosine run or an early-stopped run is refused;
- bad schedule options are one-line ConfigErrors;
- the time budget (``train.max_seconds``) stops at the end of the first epoch whose summed
  seconds reach it, says so, refuses a resume under the same budget and counts the seconds
  already spent under a larger one; early stopping is named when both stop the same epoch.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from conftest import tiny

import pyrovae
from pyrovae.cli.main import main
from pyrovae.errors import ConfigError
from pyrovae.evaluation import evaluate as evaluate_module
from pyrovae.runs.checkpoint import load_checkpoint, save_checkpoint
from pyrovae.runs.directory import BEST_FILE, CHECKPOINT_FILE, read_metrics
from pyrovae.training import loop as loop_module
from pyrovae.training.schedules import build_schedule, current_lr, step_schedule
from pyrovae.training.stopping import EarlyStopping

LR = 0.01


def lr_sequence(schedule: str, epochs: int, losses: list[float] | None = None) -> list[float]:
    """The lr each of ``epochs`` epochs trains with under ``schedule`` (a config value)."""
    config = pyrovae.load_config(
        None, [f"train.schedule={schedule}", f"train.lr={LR}", f"train.epochs={epochs}"]
    )
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=config.train.lr)
    scheduler = build_schedule(config.train, optimizer)
    lrs = []
    for epoch in range(epochs):
        lrs.append(current_lr(optimizer))
        optimizer.step()  # no gradients: the parameter stays; the schedule follows a step
        step_schedule(scheduler, losses[epoch] if losses else 0.0)
    return lrs


def close(a: list[float], b: list[float], rel: float = 1e-12) -> bool:
    return len(a) == len(b) and all(
        math.isclose(x, y, rel_tol=rel) for x, y in zip(a, b, strict=True)
    )


# ------------------------------------------------------------------ the formulas
def test_constant_step_exponential_and_cosine_follow_their_formulas():
    assert lr_sequence("constant", 5) == [LR] * 5
    step = lr_sequence("{name='step', step_size=3, gamma=0.5}", 10)
    assert close(step, [LR * 0.5 ** (n // 3) for n in range(10)])
    exponential = lr_sequence("{name='exponential', gamma=0.9}", 10)
    assert close(exponential, [LR * 0.9**n for n in range(10)])
    eta = 1e-4
    cosine = lr_sequence(f"{{name='cosine', eta_min={eta}}}", 10)  # over train.epochs = 10
    expected = [eta + (LR - eta) * (1 + math.cos(math.pi * n / 10)) / 2 for n in range(10)]
    assert close(cosine, expected, rel=1e-9)
    assert cosine[0] == LR and cosine[-1] < LR / 20  # nearly down at the last epoch


def test_burda_stages_are_3_to_the_i_epochs_at_ten_to_the_minus_i_over_7():
    lrs = lr_sequence("burda", 3300)
    stages: list[list[float]] = []  # runs of equal lr
    for lr in lrs:
        if stages and lr == stages[-1][0]:
            stages[-1].append(lr)
        else:
            stages.append([lr])
    assert [len(s) for s in stages] == [1, 3, 9, 27, 81, 243, 729, 2187 + 20]
    assert close([s[0] for s in stages], [LR * 10 ** (-i / 7) for i in range(8)])
    # Stage boundaries in epochs (1-based): each stage starts after sum 3^j, j < i, epochs.
    starts = [1 + (3**i - 1) // 2 for i in range(8)]
    assert starts == [1, 2, 5, 14, 41, 122, 365, 1094]
    assert all(lrs[s - 1] != lrs[s - 2] for s in starts[1:])
    assert math.isclose(lrs[-1], LR / 10)  # after 3280 epochs the last stage's lr stays


def test_plateau_reduces_after_patience_epochs_without_improvement():
    """ReduceLROnPlateau (threshold 0): the lr times factor once more than ``patience`` epochs
    in a row have not lowered the best loss; then the count starts over; never below min_lr."""
    losses = [10, 9, 9, 9, 9, 8, 8, 8, 8, 7, 7, 7, 7, 7, 7, 7]
    lrs = lr_sequence(
        f"{{name='plateau', factor=0.5, patience=2, threshold=0.0, min_lr={LR / 3}}}",
        len(losses),
        losses,
    )
    # Epochs 3, 4, 5 do not improve on 9: after epoch 5, 0.5x; 7, 8, 9 on 8: after 9, 0.25x,
    # clipped to min_lr = LR / 3; it stays there.
    expected = [LR] * 5 + [LR / 2] * 4 + [LR / 3] * 7
    assert close(lrs, expected)


def test_a_run_records_the_lr_each_epoch_trained_with(tmp_path):
    run = pyrovae.train(
        tiny("train.epochs=5", "train.schedule=burda", f"train.lr={LR}"), out=tmp_path, quiet=True
    )
    expected = [LR * 10 ** (-i / 7) for i in (0, 1, 1, 1, 2)]
    assert close([m["lr"] for m in run.metrics], expected)
    assert close([m["lr"] for m in read_metrics(tmp_path)], expected)


# ------------------------------------------------------------------ early stopping
def test_early_stopping_counts_improvements_by_more_than_min_delta():
    stopping = EarlyStopping(patience=3, min_delta=0.5)
    curve = [5.0, 4.0, 3.8, 3.6, 3.9, 3.0, 2.9, 2.8, 2.7]
    stops = [stopping.update(epoch, loss) for epoch, loss in enumerate(curve, 1)]
    # 4.0 improves on 5.0 by 1; 3.8, 3.6, 3.9 by less than 0.5 (3 epochs: stop), 3.0 by 1.
    assert stops == [False, False, False, False, True, False, False, False, True]
    assert (stopping.best, stopping.best_epoch) == (3.0, 6)
    assert not any(EarlyStopping(patience=0).update(e, 1.0) for e in range(1, 100))  # 0: off


@pytest.fixture
def forced_curve(monkeypatch):
    """The loop's validation loss replaced by a scripted curve, one value per epoch."""
    curve = iter([5.0, 4.0, 3.8, 3.6, 3.9, 3.7, 3.0, 2.0])

    def scripted(program, x):
        return next(curve)

    monkeypatch.setattr(loop_module, "negative_elbo", scripted)


def test_early_stopping_stops_at_the_right_epoch_and_keeps_the_best(tmp_path, forced_curve):
    config = tiny(
        "train.epochs=8", "train.patience=3", "train.min_delta=0.5", "train.checkpoint_every=10"
    )
    run = pyrovae.train(config, out=tmp_path / "r", quiet=True)
    assert [m["epoch"] for m in run.metrics] == [1, 2, 3, 4, 5]  # 3 epochs after epoch 2
    assert "stopped" not in run.metrics[-2]
    assert run.metrics[-1]["stopped"].startswith("early stopping")
    assert (
        "did not improve on 4.0000 (epoch 2) by more than 0.5 for 3 epochs"
        in (run.metrics[-1]["stopped"])
    )
    assert read_metrics(tmp_path / "r")[-1]["stopped"] == run.metrics[-1]["stopped"]
    last = load_checkpoint(tmp_path / "r" / CHECKPOINT_FILE)
    best = load_checkpoint(tmp_path / "r" / BEST_FILE)
    assert last["epoch"] == 5  # written at the stop, though checkpoint_every is 10
    assert best["epoch"] == 4  # the lowest loss, 3.6, between checkpoints
    assert last["early_stopping"] == {"best": 4.0, "best_epoch": 2, "bad_epochs": 3}
    assert any(not torch.equal(last["model"][k], best["model"][k]) for k in last["model"])
    with pytest.raises(ConfigError, match=r"early stopping ended the run at epoch 5.*N > 3"):
        pyrovae.resume(tmp_path / "r")
    # A patience that would not have stopped it trains further (patience may change).
    go_on = pyrovae.resume(tmp_path / "r", ["train.patience=0"], quiet=True)
    assert [m["epoch"] for m in go_on.metrics] == list(range(1, 9))


def test_the_commands_load_the_best_checkpoint_by_default(tmp_path, forced_curve, monkeypatch):
    config = tiny("train.epochs=5", "train.checkpoint_every=10", "train.patience=10")
    pyrovae.train(config, out=tmp_path / "r", quiet=True)
    _, _, payload = pyrovae.load_run(tmp_path / "r")
    assert payload["epoch"] == 4  # 3.6 is the lowest of 5, 4, 3.8, 3.6, 3.9
    assert pyrovae.load_run(tmp_path / "r", checkpoint="last")[2]["epoch"] == 5
    with pytest.raises(ConfigError, match="choose best or last"):
        pyrovae.load_run(tmp_path / "r", checkpoint="first")

    seen = []
    original = evaluate_module.evaluate_model

    def spy(program, *args, **kwargs):
        seen.append({k: v.clone() for k, v in program.state_dict().items()})
        return original(program, *args, **kwargs)

    monkeypatch.setattr(evaluate_module, "evaluate_model", spy)
    pyrovae.evaluate(tmp_path / "r", particles=2, limit=3)
    pyrovae.evaluate(tmp_path / "r", particles=2, limit=3, checkpoint="last")
    args = ["evaluate", str(tmp_path / "r"), "--particles", "2", "--limit", "3", "--quiet"]
    assert main(args) == 0 and main([*args, "--checkpoint", "last"]) == 0
    best = load_checkpoint(tmp_path / "r" / BEST_FILE)["model"]
    last = load_checkpoint(tmp_path / "r" / CHECKPOINT_FILE)["model"]
    for state, expected in zip(seen, [best, last, best, last], strict=True):
        assert all(torch.equal(state[k], expected[k]) for k in expected)


# ------------------------------------------------------------------ resume
def without_time(metrics: list[dict]) -> list[dict]:
    return [{k: v for k, v in m.items() if k != "epoch_seconds"} for m in metrics]


def assert_same_weights(a, b) -> None:
    for name in (CHECKPOINT_FILE, BEST_FILE):
        state_a, state_b = load_checkpoint(a / name)["model"], load_checkpoint(b / name)["model"]
        assert all(torch.equal(state_a[k], state_b[k]) for k in state_a), name  # bit for bit


@pytest.mark.parametrize(
    "schedule",
    [
        "{name='step', step_size=2, gamma=0.5}",
        # threshold 0.02: an epoch that does not lower the loss by 2% counts as a plateau
        "{name='plateau', factor=0.5, patience=0, threshold=0.02}",
        "burda",
    ],
    ids=["step", "plateau", "burda"],
)
def test_a_scheduled_run_resumed_half_way_equals_the_uninterrupted_run(tmp_path, schedule):
    settings = [f"train.schedule={schedule}", f"train.lr={LR}", "train.patience=20"]
    full = pyrovae.train(tiny("train.epochs=6", *settings), out=tmp_path / "full", quiet=True)
    pyrovae.train(tiny("train.epochs=3", *settings), out=tmp_path / "part", quiet=True)
    resumed = pyrovae.resume(tmp_path / "part", ["train.epochs=6"], quiet=True)
    lrs = [m["lr"] for m in full.metrics]
    assert len(set(lrs)) > 1, lrs  # the schedule does change the lr in these 6 epochs
    assert [m["lr"] for m in resumed.metrics] == lrs
    assert without_time(resumed.metrics) == without_time(full.metrics)
    assert_same_weights(tmp_path / "part", tmp_path / "full")
    saved = load_checkpoint(tmp_path / "part" / CHECKPOINT_FILE)
    assert saved["schedule"] == load_checkpoint(tmp_path / "full" / CHECKPOINT_FILE)["schedule"]


def test_a_checkpoint_from_before_schedules_resumes_exactly(tmp_path):
    """Decided: a checkpoint without the schedule's state and early-stopping counters (its run
    had the constant schedule, no early stopping) resumes with both rebuilt from its metrics."""
    config = tiny("train.epochs=4")
    full = pyrovae.train(config, out=tmp_path / "full", quiet=True)
    pyrovae.train(tiny("train.epochs=2"), out=tmp_path / "old", quiet=True)
    payload = load_checkpoint(tmp_path / "old" / CHECKPOINT_FILE)
    del payload["schedule"], payload["early_stopping"]
    for record in payload["metrics"]:
        record.pop("lr")
    save_checkpoint(tmp_path / "old" / CHECKPOINT_FILE, payload)
    resumed = pyrovae.resume(tmp_path / "old", ["train.epochs=4"], quiet=True)
    assert without_time(resumed.metrics[2:]) == without_time(full.metrics[2:])
    state = load_checkpoint(tmp_path / "old" / CHECKPOINT_FILE)["model"]
    assert all(torch.equal(v, full.model.state_dict()[k]) for k, v in state.items())


def test_a_cosine_run_cannot_be_extended(tmp_path):
    pyrovae.train(tiny("train.epochs=2", "train.schedule=cosine"), out=tmp_path, quiet=True)
    with pytest.raises(ConfigError, match="cosine schedule anneals over the run's 2 epochs"):
        pyrovae.resume(tmp_path, ["train.epochs=4"])


# ------------------------------------------------------------------ bad options
@pytest.mark.parametrize(
    "schedule, message",
    [
        ("nope", r"train\.schedule: unknown schedule 'nope'; choose from: burda, constant,"),
        ("{name='step', gamma=-0.5}", r"train\.schedule: gamma must be in \(0, 1\]"),
        ("{name='exponential', gamma=0}", r"train\.schedule: gamma must be in \(0, 1\]"),
        ("{name='step', step_size=0}", r"train\.schedule: step_size must be > 0"),
        ("{name='step', size=3}", r"train\.schedule\.size: not an option of schedule 'step'"),
        ("{name='plateau', factor=1.5}", r"train\.schedule: factor must be in \(0, 1\)"),
        ("{name='plateau', patience=-1}", r"train\.schedule: patience must be >= 0"),
        ("{name='plateau', min_lr='low'}", r"train\.schedule\.min_lr: expected a number"),
        ("{name='cosine', eta_min=0.5}", r"train\.schedule: eta_min must be <= train\.lr"),
    ],
)
def test_bad_schedule_options_are_one_line_config_errors(tmp_path, schedule, message):
    with pytest.raises(ConfigError, match=message) as error:
        pyrovae.train(tiny("train.epochs=1", f"train.schedule={schedule}"), out=tmp_path / "r")
    assert "\n" not in str(error.value)
    assert not (tmp_path / "r" / "config.toml").exists()  # refused before anything is written


@pytest.fixture
def one_second_epochs(monkeypatch):
    """The loop's clock advanced by 1 s a reading: every epoch takes 1.0 s of training."""
    readings = iter(range(10_000))
    clock = SimpleNamespace(perf_counter=lambda: float(next(readings)))
    monkeypatch.setattr(loop_module, "time", clock)


def test_the_time_budget_stops_at_the_first_epoch_that_reaches_it(tmp_path, one_second_epochs):
    config = tiny("train.epochs=8", "train.max_seconds=2.5", "train.checkpoint_every=10")
    run = pyrovae.train(config, out=tmp_path / "r", quiet=True)
    assert [m["epoch_seconds"] for m in run.metrics] == [1.0, 1.0, 1.0]
    assert run.metrics[-1]["stopped"] == (
        "time budget: 3.0 s of training reached train.max_seconds = 2.5"
    )
    assert "stopped" not in run.metrics[-2]
    assert load_checkpoint(tmp_path / "r" / CHECKPOINT_FILE)["epoch"] == 3  # saved at the stop
    with pytest.raises(ConfigError, match=r"trained 3\.0 s.*max_seconds=S with S > 3\.0, or 0"):
        pyrovae.resume(tmp_path / "r")
    # A larger budget goes on, counting the seconds already spent: 2 more epochs to reach 5.
    go_on = pyrovae.resume(tmp_path / "r", ["train.max_seconds=5"], quiet=True)
    assert [m["epoch"] for m in go_on.metrics] == [1, 2, 3, 4, 5]
    unlimited = pyrovae.resume(tmp_path / "r", ["train.max_seconds=0"], quiet=True)
    assert len(unlimited.metrics) == 8 and "stopped" not in unlimited.metrics[-1]


def test_early_stopping_names_itself_when_both_stop_the_same_epoch(
    tmp_path, forced_curve, one_second_epochs
):
    config = tiny(
        "train.epochs=8", "train.patience=3", "train.min_delta=0.5", "train.max_seconds=5"
    )
    run = pyrovae.train(config, out=tmp_path / "r", quiet=True)
    assert len(run.metrics) == 5 and run.metrics[-1]["stopped"].startswith("early stopping")
