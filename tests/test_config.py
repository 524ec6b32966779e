"""The config: TOML round-trip, command-line overrides, one-line errors, the generated reference.

This file proves:
- every file in examples/configs/ round-trips: file -> Config -> TOML -> Config gives an equal
  Config, and the resolved config keeps every value the file sets;
- overrides reach nested keys, swap a component by name, set a component's options (also of a
  component left at its default) and take inline tables and TOML literals;
- an unknown key, unknown component, wrong type or out-of-range value raises a ConfigError with
  one line that names the key and the valid choices (or the bound);
- ``config_reference()`` (the documentation's configuration page) lists every key and component.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

import pyrovae
from pyrovae import Component, Config, ConfigError, load_config
from pyrovae.cli.config import config_reference
from pyrovae.registry import builtin

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_CONFIGS = sorted((REPO / "examples" / "configs").glob("*.toml"))


# ------------------------------------------------------------------------------ round-trip
def contains(resolved: dict, given: dict) -> bool:
    """Every value of the file's table ``given`` is in the resolved table."""
    for key, value in given.items():
        if isinstance(value, dict):
            inner = resolved[key] if isinstance(resolved[key], dict) else {"name": resolved[key]}
            if not contains(inner, value):
                return False
        elif resolved[key] != value:
            return False
    return True


@pytest.mark.parametrize("path", EXAMPLE_CONFIGS, ids=lambda p: p.name)
def test_example_config_round_trips(path, tmp_path):
    config = load_config(path)
    assert Config.from_dict(tomllib.loads(config.to_toml())) == config
    config.save(tmp_path / "saved.toml")
    assert load_config(tmp_path / "saved.toml") == config
    assert contains(config.to_dict(), tomllib.loads(path.read_text()))


def test_example_configs_exist():
    assert {"digits.toml", "mnist.toml"} <= {p.name for p in EXAMPLE_CONFIGS}


def test_defaults_round_trip_and_name_every_component():
    config = Config.from_dict({})
    assert config == load_config()
    assert Config.from_dict(config.to_dict()) == config
    assert config.model.encoder == Component("mlp", {"hidden": (200,), "activation": "softplus"})
    assert config.train.estimator == Component("meanfield", {"particles": 1})


def test_mnist_config_is_the_classic_vae():
    config = load_config(REPO / "examples" / "configs" / "mnist.toml")
    assert config.model.latent_dim == 50
    for network in (config.model.encoder, config.model.decoder):
        assert network == Component("mlp", {"hidden": (400,), "activation": "softplus"})
    assert config.model.likelihood.name == "bernoulli"
    assert config.data.binarize == "dynamic"
    assert (config.train.batch_size, config.train.lr) == (256, 1e-3)


# ------------------------------------------------------------------------------ overrides
def test_nested_overrides_change_only_their_keys():
    base = load_config(REPO / "examples" / "configs" / "digits.toml")
    config = load_config(
        REPO / "examples" / "configs" / "digits.toml",
        ["train.epochs=5", "model.latent_dim=3", "train.lr=0.01", "data.binarize=none"],
    )
    assert (config.train.epochs, config.model.latent_dim) == (5, 3)
    assert (config.train.lr, config.data.binarize) == (0.01, "none")
    assert config.train.batch_size == base.train.batch_size
    assert config.model.prior == base.model.prior


def test_override_values_are_toml_literals_and_bare_words_are_strings():
    config = load_config(
        None, ["name=my-run", 'data.root="/a b/c"', "data.download=false", "train.beta=2"]
    )
    assert (config.name, config.data.root) == ("my-run", "/a b/c")
    assert config.data.download is False
    assert config.train.beta == 2.0 and isinstance(config.train.beta, float)


def test_override_swaps_a_component_by_name():
    config = load_config(None, ["model.prior=learned_normal", "train.estimator=trace"])
    assert config.model.prior == Component("learned_normal", {})
    assert config.train.estimator == Component("trace", {"particles": 1})


def test_override_sets_component_options():
    config = load_config(
        None,
        [
            "model.likelihood=gaussian",
            "model.likelihood.scale=0.5",
            "model.encoder.hidden=[64, 32]",
            "model.encoder.activation=relu",
            "train.estimator.particles=3",  # an option of the default estimator
        ],
    )
    assert config.model.likelihood == Component(
        "gaussian", {"scale": 0.5, "learn_scale": False, "per_pixel": False}
    )
    assert config.model.encoder == Component("mlp", {"hidden": (64, 32), "activation": "relu"})
    assert config.model.decoder.options["hidden"] == (200,)
    assert config.train.estimator == Component("meanfield", {"particles": 3})


def test_override_option_keeps_the_files_other_options():
    config = load_config(REPO / "examples" / "configs" / "mnist.toml", ["model.encoder.hidden=[8]"])
    assert config.model.encoder == Component("mlp", {"hidden": (8,), "activation": "softplus"})
    assert config.model.decoder.options["hidden"] == (400,)


def test_override_takes_inline_tables():
    config = load_config(
        None, ['model.likelihood={name="gaussian", learn_scale=true, per_pixel=true}']
    )
    assert config.model.likelihood == Component(
        "gaussian", {"scale": 0.1, "learn_scale": True, "per_pixel": True}
    )


def test_replace_applies_overrides_to_a_config():
    config = Config().replace(["train.epochs=2", "model.prior=learned_normal"])
    assert config.train.epochs == 2 and config.model.prior.name == "learned_normal"
    assert config.replace([]) == config


# ------------------------------------------------------------------------------ errors
ERRORS = {
    "unknown key": (["train.epochz=3"], ["train.epochz", "'epochs'", "batch_size", "seed"]),
    "unknown section": (["foo=1"], ["foo", "name, data, model, train"]),
    "unknown prior": (["model.prior=foo"], ["model.prior", *builtin("prior")]),
    "unknown likelihood": (
        ['model.likelihood={name="poisson"}'],
        ["model.likelihood", *builtin("likelihood")],
    ),
    "unknown estimator": (
        ["train.estimator=elbo"],
        ["train.estimator", *builtin("estimator")],
    ),
    "unknown dataset": (["data.name=cifar"], ["data.name", "digits", "mnist"]),
    "unknown option": (
        ['model.likelihood={name="gaussian", sigma=1}'],
        ["model.likelihood.sigma", "learn_scale, per_pixel, scale"],
    ),
    "option of the wrong component": (
        ["model.likelihood.scale=0.5"],
        ["model.likelihood.scale", "bernoulli"],
    ),
    "wrong type int": (["train.epochs=abc"], ["train.epochs", "integer", "'abc'"]),
    "wrong type float": (["train.lr=fast"], ["train.lr", "number"]),
    "wrong type bool": (["data.download=yes"], ["data.download", "true or false"]),
    "wrong type option": (
        ['model.likelihood={name="gaussian", learn_scale="yes"}'],
        ["model.likelihood.learn_scale", "true or false"],
    ),
    "wrong type list": (["model.encoder.hidden=200"], ["model.encoder.hidden", "list"]),
    "wrong choice": (["data.binarize=maybe"], ["data.binarize", "'dynamic', 'none'"]),
    "wrong activation": (
        ["model.encoder.activation=sigmoid"],
        ["model.encoder.activation", "'softplus'", "'relu'"],
    ),
    "not a table": (["train=3"], ["train", "table"]),
    "out of range epochs": (["train.epochs=0"], ["train.epochs", ">= 1"]),
    "out of range lr": (["train.lr=0"], ["train.lr", "> 0"]),
    "out of range beta": (["train.beta=-1"], ["train.beta", ">= 0"]),
    "out of range latent": (["model.latent_dim=0"], ["model.latent_dim", ">= 1"]),
    "out of range validation": (["data.validation_size=0"], ["data.validation_size", "> 0"]),
    "not key=value": (["train.epochs"], ["train.epochs", "key=value"]),
}


@pytest.mark.parametrize(("overrides", "expected"), ERRORS.values(), ids=ERRORS.keys())
def test_bad_config_raises_one_line_naming_key_and_choices(overrides, expected):
    with pytest.raises(ConfigError) as raised:
        load_config(None, overrides)
    message = str(raised.value)
    assert "\n" not in message
    for text in expected:
        assert text in message, (text, message)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("model.encoder.hidden=[0]", "model.encoder"),
        ("model.decoder.hidden=[4, -1]", "model.decoder"),
        ('model.likelihood={name="gaussian", scale=0}', "model.likelihood"),
    ],
)
def test_out_of_range_component_option_names_the_key_when_built(override, key):
    config = load_config(None, [override])
    with pytest.raises(ConfigError, match=rf"^{key}: .*must be"):
        pyrovae.build_vae(config.model, (1, 8, 8))


def test_out_of_range_estimator_option_names_the_key_when_built():
    from pyrovae.registry import build

    estimator = load_config(None, ["train.estimator.particles=0"]).train.estimator
    with pytest.raises(ConfigError, match=r"^train\.estimator: .*particles must be >= 1"):
        build("estimator", estimator.name, estimator.options, "train.estimator")


def test_bad_config_files_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[train\nepochs = 3\n")
    with pytest.raises(ConfigError, match="broken.toml.*not valid TOML"):
        load_config(broken)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("[model]\nlatent_dims = 3\n")
    with pytest.raises(ConfigError, match=r"model\.latent_dims: unknown key \(did you mean"):
        load_config(unknown)


# ------------------------------------------------------------------- the reference
def test_reference_lists_every_key_and_every_registered_component():
    reference = config_reference()
    for key in Config().to_dict()["train"]:
        assert f"`train.{key}`" in reference
    for kind in ("prior", "guide", "likelihood", "network", "estimator", "dataset"):
        for name in builtin(kind):
            assert f"| {kind} | `{name}` |" in reference
