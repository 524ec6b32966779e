"""Hostile and careless input, property-based: every config, override, data file and training
setting either trains correctly or is refused with a ``PyrovaeError`` of one line (exit status 2
from the command line), never a crash inside torch or Pyro and never a silently wrong run.

Example counts are kept small so that the file runs in a minute or two; each test states what a
correct outcome is, so a wrong run fails it as surely as a crash.
"""

from __future__ import annotations

import builtins
import math
import os
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import pyrovae
from pyrovae.config import Config, apply_overrides, load_config
from pyrovae.errors import ConfigError, DataError, PyrovaeError, TrainingError

TINY = [
    "train.device=cpu",
    "model.latent_dim=2",
    "model.encoder={name='mlp', hidden=[8]}",
    "model.decoder={name='mlp', hidden=[8]}",
]
DIGITS_TRAIN = 1797 - 359  # scikit-learn's digits less the 20% test split

#: Settings for tests that train: a few dozen examples, no per-example deadline (the machine is
#: shared), no health check on slow data generation.
TRAINING = settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
#: Settings for pure config parsing: cheap, so more examples.
PARSING = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))


def one_line(error: BaseException) -> str:
    message = str(error)
    assert message and "\n" not in message, f"not one line: {message!r}"
    return message


# ------------------------------------------------------------------ config tables
HOSTILE = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=10),
    st.booleans(),
    st.lists(st.integers(-3, 300), max_size=3),
    st.dictionaries(st.sampled_from(["name", "hidden", "x"]), st.integers(-2, 5), max_size=2),
)
NETWORK = st.fixed_dictionaries(
    {"name": st.just("mlp"), "hidden": st.lists(st.integers(1, 64), max_size=2)}
)
#: A valid value for every key, so that a good share of the drawn configs is accepted.
VALID = {
    "data": {
        "name": st.sampled_from(["digits", "mnist", "file"]),
        "root": st.text(max_size=8),
        "download": st.booleans(),
        "path": st.text(max_size=8),
        "binarize": st.sampled_from(["dynamic", "none"]),
        "validation_size": st.one_of(st.floats(0.01, 0.9), st.integers(1, 100)),
    },
    "model": {
        "latent_dim": st.integers(1, 64),
        "prior": st.sampled_from(["standard_normal", "learned_normal"]),
        "guide": st.sampled_from(["diagonal_normal", {"name": "diagonal_normal"}]),
        "likelihood": st.one_of(
            st.sampled_from(["bernoulli", "continuous_bernoulli", "gaussian"]),
            st.fixed_dictionaries({"name": st.just("gaussian"), "scale": st.floats(0.01, 1)}),
        ),
        "encoder": NETWORK,
        "decoder": NETWORK,
    },
    "train": {
        "estimator": st.sampled_from(["meanfield", "trace", {"name": "trace", "particles": 2}]),
        "epochs": st.integers(1, 100),
        "checkpoint_every": st.integers(1, 10),
        "batch_size": st.integers(1, 10**6),
        "lr": st.floats(1e-6, 1.0),
        "clip_norm": st.floats(0, 10),
        "max_bad_steps": st.integers(1, 100),
        "beta": st.floats(0, 5),
        "warmup_epochs": st.integers(0, 10),
        "seed": st.integers(0, 2**32 - 1),
        "device": st.sampled_from(["cpu", "auto"]),
    },
}
UNKNOWN = {"data": "bogus", "model": "latentdim", "train": "epoch"}


@st.composite
def config_tables(draw) -> dict:
    """Tables of TOML-like values where each key is, at random, valid or hostile."""
    raw: dict = {}
    if draw(st.booleans()):
        raw["name"] = draw(st.one_of(st.from_regex(r"[a-z0-9_-]{1,8}", fullmatch=True), HOSTILE))
    for section, valid in VALID.items():
        if draw(st.booleans()):
            table = raw.setdefault(section, {})
            keys = [*valid, UNKNOWN[section]]
            for key in draw(st.lists(st.sampled_from(keys), max_size=3, unique=True)):
                sound = valid.get(key, HOSTILE)
                table[key] = draw(sound if draw(st.sampled_from(range(5))) else HOSTILE)
    return raw


def check_accepted(config: Config) -> None:
    """What an accepted config promises: every bound holds and it round-trips exactly."""
    t, m, d = config.train, config.model, config.data
    assert t.epochs >= 1 and t.batch_size >= 1 and t.checkpoint_every >= 1
    assert t.max_bad_steps >= 1 and t.warmup_epochs >= 0 and 0 <= t.seed < 2**32
    assert m.latent_dim >= 1 and d.validation_size > 0
    for value in (t.lr, t.clip_norm, t.beta, d.validation_size):
        assert math.isfinite(value)
    assert t.lr > 0 and t.clip_norm >= 0 and t.beta >= 0
    assert config.name.strip() and "/" not in config.name and config.name not in (".", "..")
    assert Config.from_dict(config.to_dict()) == config
    assert Config.from_dict(tomllib.loads(config.to_toml())) == config


@PARSING
@given(config_tables())
def test_any_config_table_is_valid_or_refused_in_one_line(raw):
    try:
        config = Config.from_dict(raw)
    except ConfigError as error:
        one_line(error)
        event("refused")
    else:
        check_accepted(config)
        event("accepted")


OVERRIDE_KEYS = st.sampled_from(
    [
        "name",
        "data.validation_size",
        "model.latent_dim",
        "model.prior",
        "model.encoder.hidden",
        "model.encoder",
        "model.likelihood.scale",
        "train.lr",
        "train.epochs",
        "train.estimator.particles",
        "train.seed",
        "train",
        "x.y",
        "",
        ".",
    ]
)
OVERRIDE_VALUES = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        [
            "nan",
            "inf",
            "-inf",
            "-1",
            "0",
            "1e400",
            "[1, 2]",
            "{name='mlp'}",
            "[0]",
            "true",
            "9223372036854775808",
            "__import__('os').system('touch hacked')",
            "{",
        ]
    ),
)


SOUND_OVERRIDES = st.sampled_from(
    [
        ("train.lr", "0.01"),
        ("model.latent_dim", "5"),
        ("model.encoder.hidden", "[16, 8]"),
        ("train.estimator.particles", "2"),
        ("model.likelihood", "{name='gaussian', scale=0.5}"),
        ("name", "my-run"),
        ("data.validation_size", "100"),
    ]
)


@PARSING
@given(
    st.lists(
        st.one_of(SOUND_OVERRIDES, st.tuples(OVERRIDE_KEYS, OVERRIDE_VALUES)),
        min_size=1,
        max_size=3,
    )
)
def test_any_override_is_valid_or_refused_in_one_line(pairs):
    overrides = ["model.encoder=mlp", *(f"{key}={value}" for key, value in pairs)]
    try:
        config = load_config(None, overrides)
    except ConfigError as error:
        one_line(error)
        event("refused")
    else:
        check_accepted(config)
        event("accepted")


def _no_os_import(real_import, calls: list):
    """An ``__import__`` that records any import of ``os`` made while a config is parsed."""

    def guarded(name, *args, **kwargs):
        if name == "os":
            calls.append(("import", name))
        return real_import(name, *args, **kwargs)

    return guarded


def test_config_text_is_never_run_as_code(tmp_path, monkeypatch):
    """Strings that look like code stay strings; parsing never evaluates anything."""
    marker = tmp_path / "hacked"
    code = f"__import__('os').system('touch {marker.name}')"
    (tmp_path / "config.toml").write_text(
        f'name = "{code.replace("/", "_")}"\n'
        "[data]\n"
        f'path = "{code}"\n'
        f'root = "$(touch {marker.name})"\n'
    )

    calls = []
    monkeypatch.chdir(tmp_path)  # where the code, if run, would leave its marker
    monkeypatch.setattr(os, "system", lambda *args: calls.append(args))
    monkeypatch.setattr(builtins, "__import__", _no_os_import(builtins.__import__, calls))
    config = load_config(tmp_path / "config.toml", [f"name={code.replace('/', '_')}"])
    monkeypatch.undo()
    assert calls == []
    assert config.data.path == code
    assert config.data.root == f"$(touch {marker.name})"
    assert config.name == code.replace("/", "_")
    with pytest.raises(ConfigError, match="data.binarize: .* is not valid; choose from"):
        load_config(tmp_path / "config.toml", [f"data.binarize={code}", "train.epochs=1"])
    assert not marker.exists()
    assert apply_overrides({}, [f"name={code}"]) == {"name": code}


# ------------------------------------------------------------------ data files
def sometimes(draw, sound, hostile):
    """``sound`` three times in four, else a draw from ``hostile``."""
    return draw(hostile) if draw(st.sampled_from(range(4))) == 0 else sound


@st.composite
def data_arrays(draw) -> tuple[np.ndarray, bool]:
    """An array hostile in some ways (size, shape, dtype, range, NaN and infinity) and sound in
    the others, and whether it is sound in all: finite values in [0, 1], at least 10
    datapoints of at least one value each, a real dtype."""
    n = sometimes(draw, 40, st.sampled_from([0, 1, 9]))
    shape = sometimes(draw, (2, 3), st.lists(st.integers(0, 3), max_size=3).map(tuple))
    kind = sometimes(draw, "unit", st.sampled_from(["bytes", "normal", "huge"]))
    dtype = draw(st.sampled_from(["float32", "float64", "float16", "int64", "uint8", "bool"]))
    dtype = sometimes(draw, dtype, st.just("complex64"))
    poison = sometimes(draw, None, st.sampled_from([math.nan, math.inf, -math.inf]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    size = (n, *shape)
    x = {
        "unit": lambda: rng.random(size),
        "bytes": lambda: rng.integers(0, 256, size).astype(float),
        "normal": lambda: rng.normal(size=size),
        "huge": lambda: rng.random(size) * 1e30,
    }[kind]()
    if poison is not None and x.size:
        x.flat[draw(st.integers(0, x.size - 1))] = poison
    with np.errstate(all="ignore"):  # casting NaN or 1e30 to integers is part of the test
        x = x.astype(dtype)
    values = torch.from_numpy(x)
    sound = (
        len(x) >= 10
        and x.ndim >= 2
        and x[0].size > 0
        and not values.is_complex()
        and bool(torch.isfinite(values.double()).all())
        and float(values.double().min()) >= 0
        and float(values.double().max()) <= 1
    )
    return x, sound


def n_training(n: int, layout: str, validation_size: float) -> int:
    """Training datapoints left after the test and validation splits (data.py's rules)."""
    train = n if layout == "npz" else n - n // 10
    return train - (round(validation_size * train) if validation_size < 1 else int(validation_size))


@TRAINING
@given(
    drawn=data_arrays(),
    layout=st.sampled_from(["npy", "npz", "pt"]),
    likelihood=st.sampled_from(["bernoulli", "bernoulli", "continuous_bernoulli", "gaussian"]),
    binarize=st.sampled_from(["dynamic", "dynamic", "none"]),
    batch_size=st.sampled_from([1, 7, 64, 10**6]),
    validation_size=st.sampled_from([0.1, 0.5, 1, 3]),
)
def test_any_data_file_trains_correctly_or_is_refused_in_one_line(
    drawn, layout, likelihood, binarize, batch_size, validation_size
):
    x, sound = drawn
    values = torch.from_numpy(x).double() if not np.iscomplexobj(x) else None
    binary = values is not None and bool(((values == 0) | (values == 1)).all())
    # Sound data that fits the likelihood must train; anything else must be refused or fit.
    fits = likelihood != "bernoulli" or binarize == "dynamic" or binary
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"data.{layout}"
        if layout == "npy":
            np.save(path, x)
        elif layout == "npz":
            np.savez(path, train=x, test=x[: max(1, len(x) // 4)])
        else:
            torch.save(torch.from_numpy(x), path)
        config = load_config(
            None,
            [
                *TINY,
                "data.name=file",
                f"data.path='{path}'",
                f"model.likelihood={likelihood}",
                f"data.binarize={binarize}",
                f"train.batch_size={batch_size}",
                f"data.validation_size={validation_size}",
                "train.epochs=1",
            ],
        )
        try:
            run = pyrovae.train(config, out=Path(folder) / "run", quiet=True)
        except PyrovaeError as error:
            message = one_line(error)
            event(f"refused: {type(error).__name__}")
            assert not (sound and fits), f"sound data refused: {message}"
            well_formed = len(x) >= 10 and x.ndim >= 2 and x[0].size > 0
            if values is None:
                assert isinstance(error, DataError)
                assert "dtype" in message or not well_formed
            elif not bool(torch.isfinite(values).all()):
                assert isinstance(error, DataError)
                assert "NaN or infinite" in message or not well_formed
            if isinstance(error, TrainingError):  # only data no float32 loss can hold
                assert likelihood == "gaussian" and float(values.abs().max()) > 1e15
            return
    # It trained: then the data was sound and fitted the likelihood, and every step ran.
    event("trained")
    assert values is not None and bool(torch.isfinite(values).all()) and x[0].size > 0
    if likelihood != "gaussian" or binarize == "dynamic":
        assert values.min() >= 0 and values.max() <= 1
    if likelihood == "bernoulli" and binarize == "none":
        assert binary
    (record,) = run.metrics
    assert record["step"] == math.ceil(n_training(len(x), layout, validation_size) / batch_size)
    assert record["skipped_steps"] == 0
    assert math.isfinite(record["train_loss"]) and math.isfinite(record["valid_loss"])


def test_clean_data_of_every_layout_trains(tmp_path):
    """The other side of the property above: sound data is not refused."""
    x = (np.random.default_rng(0).random((30, 2, 3)) > 0.5).astype(np.float32)
    np.save(tmp_path / "a.npy", x)
    np.savez(tmp_path / "a.npz", train=x, test=x[:5])
    torch.save(torch.from_numpy(x), tmp_path / "a.pt")
    for name in ("a.npy", "a.npz", "a.pt"):
        overrides = [*TINY, "data.name=file", f"data.path='{tmp_path / name}'", "train.epochs=1"]
        run = pyrovae.train(load_config(None, overrides), out=tmp_path / f"run-{name}", quiet=True)
        assert math.isfinite(run.metrics[0]["valid_loss"])


# ------------------------------------------------------------------ training settings
#: Per setting: a sound value, and hostile ones (out of range, wrong, or merely extreme).
SETTINGS = {
    "train.batch_size": (64, st.sampled_from([-2, 0, 3000, 2**62])),
    "train.epochs": (1, st.sampled_from([-1, 0, 2])),
    "model.latent_dim": (2, st.sampled_from([-1, 0, 3])),
    "model.encoder": (
        "{name='mlp', hidden=[8]}",
        st.sampled_from(
            ["{name='mlp', hidden=[0]}", "{name='mlp', hidden=[-1, 8]}", "{name='mlp', hidden=[]}"]
        ),
    ),
    "data.validation_size": (
        0.1,
        st.sampled_from([-1.0, 0.0, 0.0001, 1.0, 1.5, 1297.0, 1438.0, 1e300]),
    ),
    "train.lr": (0.001, st.sampled_from([-1.0, 0.0, 1e6])),
    "train.beta": (1.0, st.sampled_from([-1.0, 0.0, 3.0])),
    "train.warmup_epochs": (0, st.sampled_from([-1, 2])),
    "train.estimator": (
        "meanfield",
        st.sampled_from(["trace", "{name='trace', particles=0}", "nope"]),
    ),
    "model.prior": ("standard_normal", st.sampled_from(["learned_normal", "gamma"])),
    "model.likelihood": (
        "bernoulli",
        st.sampled_from(["continuous_bernoulli", "{name='gaussian', scale=-1.0}", "poisson"]),
    ),
    "data.binarize": ("dynamic", st.sampled_from(["none", "sometimes"])),
    "train.seed": (0, st.sampled_from([-3, 3, 2**32, 2**40])),
    "train.max_bad_steps": (20, st.sampled_from([-1, 0, 1])),
    "train.checkpoint_every": (1, st.sampled_from([-1, 0, 2])),
}


@st.composite
def training_settings(draw) -> dict:
    """Every setting sound but up to two, drawn from their hostile values."""
    chosen = {key: sound for key, (sound, _) in SETTINGS.items()}
    for key in draw(st.lists(st.sampled_from(list(SETTINGS)), max_size=2, unique=True)):
        chosen[key] = draw(SETTINGS[key][1])
    return chosen


@TRAINING
@given(training_settings())
def test_any_training_setting_trains_correctly_or_is_refused_in_one_line(chosen):
    # Strings are TOML text already (tables) or bare words, which overrides read as strings.
    overrides = [*TINY, *(f"{key}={value}" for key, value in chosen.items())]
    with tempfile.TemporaryDirectory() as folder:
        try:
            run = pyrovae.train(load_config(None, overrides), out=Path(folder), quiet=True)
        except PyrovaeError as error:
            one_line(error)
            event(f"refused: {type(error).__name__}")
            assert chosen != {key: sound for key, (sound, _) in SETTINGS.items()}
            if isinstance(error, TrainingError):  # only a learning rate that diverges
                assert chosen["train.lr"] == 1e6, str(error)
            return
    event("trained")
    c = chosen
    assert c["train.batch_size"] >= 1 and c["train.epochs"] >= 1 and c["model.latent_dim"] >= 1
    assert "-1" not in c["model.encoder"] and "[0]" not in c["model.encoder"]  # [] is linear
    assert c["train.lr"] > 0 and c["train.beta"] >= 0  # beta = 0 masks the KL term out
    assert 0 <= c["train.seed"] < 2**32 and c["train.max_bad_steps"] >= 1
    assert c["model.likelihood"] in ("bernoulli", "continuous_bernoulli")
    assert c["model.prior"] != "gamma" and c["data.binarize"] != "sometimes"
    assert not (c["model.likelihood"] == "bernoulli" and c["data.binarize"] == "none")
    size = c["data.validation_size"]
    valid = round(size * DIGITS_TRAIN) if size < 1 else int(size)
    assert 1 <= valid < DIGITS_TRAIN
    steps = math.ceil((DIGITS_TRAIN - valid) / c["train.batch_size"])
    epochs = c["train.epochs"]
    assert [m["step"] for m in run.metrics] == [steps * e for e in range(1, epochs + 1)]
    assert all(math.isfinite(m["valid_loss"]) for m in run.metrics)


def test_a_batch_larger_than_the_data_is_one_batch_per_epoch(tmp_path):
    """Decided: allowed. A batch size above the training split's size gives one step per epoch
    on the whole split, as torch's ``split`` does; nothing is dropped or repeated."""
    config = load_config(None, [*TINY, "train.batch_size=1000000", "train.epochs=2"])
    run = pyrovae.train(config, out=tmp_path / "r", quiet=True)
    assert [m["step"] for m in run.metrics] == [1, 2]
    assert all(math.isfinite(m["train_loss"]) for m in run.metrics)


# ------------------------------------------------------------------ the command line
def test_invalid_input_on_the_command_line_exits_2_with_one_line(tmp_path):
    """A handful of mistakes through the real entry point, run side by side."""
    np.save(tmp_path / "nan.npy", np.full((20, 4), np.nan, dtype=np.float32))
    (tmp_path / "broken.toml").write_text("[train\nepochs = 3\n")
    (tmp_path / "a-file").write_text("")
    cases = {
        "train.batch_size=0": "train.batch_size: must be >= 1, got 0",
        "train.lr=nan": "train.lr: expected a finite number, got nan",
        "model.prior=gamma": "model.prior: unknown prior 'gamma'; choose from",
        "train.epochs=many": "train.epochs: expected an integer, got 'many'",
        "train.epoch=3": "train.epoch: unknown key (did you mean 'epochs'?)",
        "name=../../escape": "name: '../../escape' cannot name a run folder",
        "train.seed=-1": "train.seed: must be >= 0, got -1",
        f"data.path='{tmp_path / 'nan.npy'}'": "data: the train split holds NaN or infinite",
        f"--config={tmp_path / 'broken.toml'}": "is not valid TOML",
        f"--out={tmp_path / 'a-file' / 'run'}": "cannot write the run directory",
    }
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    processes = {
        case: subprocess.Popen(
            [sys.executable, "-m", "pyrovae", "train", "--quiet", case, "data.name=file"]
            if case.startswith("data.path")
            else [sys.executable, "-m", "pyrovae", "train", "--quiet", case],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for case in cases
    }
    for case, process in processes.items():
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 2, (case, stderr)
        assert stderr.startswith("pyrovae: error: ") and stderr.count("\n") == 1, (case, stderr)
        assert cases[case] in stderr, (case, stderr)
        assert "Traceback" not in stderr and stdout == ""
