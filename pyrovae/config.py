"""Typed, frozen run configuration: TOML round-trip, dotted overrides, validation in one place.

A config has three sections, ``data``, ``model`` and ``train``, plus a run ``name``. Components
(prior, guide, likelihood, encoder, decoder, estimator, schedule) are a ``name`` plus that
component's own options, which are checked against the registered component's signature::

    [model.prior]
    name = "learned_normal"

Every error names the offending key and, where there is a closed set, the valid choices.
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import tomli_w

from pyrovae.errors import ConfigError
from pyrovae.registry import check_type, resolve_options

__all__ = [
    "Component",
    "DataConfig",
    "ModelConfig",
    "TrainConfig",
    "Config",
    "load_config",
    "apply_overrides",
    "read_toml",
    "parse_toml",
    "TOML_MAX_BYTES",
    "TOML_MAX_DEPTH",
    "INT_LIMIT",
]


def _option(
    default: Any,
    help: str,
    minimum: float | None = None,
    exclusive: bool = False,
    maximum: float | None = None,
    **kwargs: Any,
) -> Any:
    """A dataclass field with the help text and bounds used by validation and the README."""
    metadata = {"help": help, "min": minimum, "exclusive": exclusive, "max": maximum}
    if isinstance(default, Component):
        return field(default_factory=lambda: default, metadata={**metadata, **kwargs})
    return field(default=default, metadata={**metadata, **kwargs})


@dataclass(frozen=True)
class Component:
    """A registered component chosen by ``name``, with its own ``options``."""

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **{k: _to_toml(v) for k, v in self.options.items()}}


@dataclass(frozen=True)
class DataConfig:
    name: str = _option("digits", "dataset", kind="dataset")
    root: str = _option("", "folder holding the dataset; empty: $PYROVAE_DATA_DIR, else ./data")
    download: bool = _option(True, "download a torchvision dataset missing from `root`")
    path: str = _option("", "file of a user dataset (`.npy`, `.npz` or `.pt`) for name `file`")
    binarize: Literal["dynamic", "none"] = _option(
        "dynamic", "`dynamic`: a fresh Bernoulli draw of every training image each epoch"
    )
    validation_size: float = _option(
        0.1,
        "held out of the training split: a fraction if below 1, else a count",
        0.0,
        exclusive=True,
    )
    labelled: int | Literal["all"] = _option(
        "all",
        "training labels kept (a dataset with labels): `all`, or a count balanced over the"
        " classes (count // classes each, one more for each of the first count % classes"
        " classes); the others are hidden",
        1,
    )
    labelled_seed: int = _option(
        0, "seed of the choice of the kept labels (not train.seed)", 0, maximum=2**32 - 1
    )


@dataclass(frozen=True)
class ModelConfig:
    program: Component = _option(
        Component("vae"),
        "the model/guide pair; `vae` builds it from the components below",
        kind="program",
    )
    latent_dim: int = _option(10, "dimension of the latent variable z", 1)
    prior: Component = _option(Component("standard_normal"), "p(z)", kind="prior")
    guide: Component = _option(Component("diagonal_normal"), "q(z|x)", kind="guide")
    likelihood: Component = _option(Component("bernoulli"), "p(x|z)", kind="likelihood")
    encoder: Component = _option(
        Component("mlp", {"hidden": (200,)}), "network x -> guide parameters", kind="network"
    )
    decoder: Component = _option(
        Component("mlp", {"hidden": (200,)}),
        "network z -> likelihood parameters",
        kind="network",
    )

    def read_keys(self) -> tuple[str, ...]:
        """The other keys of this section that the chosen program reads (its
        ``config_sections``; the one-site ``vae`` reads them all)."""
        from pyrovae.registry import lookup

        factory = lookup("program", self.program.name, "model.program")
        return tuple(getattr(factory, "config_sections", ()))


@dataclass(frozen=True)
class TrainConfig:
    estimator: Component = _option(Component("meanfield"), "ELBO estimator", kind="estimator")
    epochs: int = _option(30, "passes over the training split", 1)
    checkpoint_every: int = _option(
        1, "epochs between checkpoints (the last epoch is always saved); resume starts there", 1
    )
    batch_size: int = _option(100, "datapoints per step", 1)
    lr: float = _option(
        1e-3, "Adam learning rate (the schedule's starting value)", 0.0, exclusive=True
    )
    schedule: Component = _option(
        Component("constant"),
        "learning-rate schedule, stepped once per epoch after validation",
        kind="schedule",
    )
    patience: int = _option(
        0,
        "early stopping: stop after this many epochs without the validation loss improving by"
        " more than `min_delta`; 0: off",
        0,
    )
    min_delta: float = _option(
        0.0, "early stopping: the least decrease of the validation loss that counts (nats)", 0.0
    )
    max_seconds: float = _option(
        0.0,
        "time budget: stop at the end of the first epoch at which the run's training seconds"
        " (validation not counted, summed over resumes) reach this; 0: off",
        0.0,
    )
    clip_norm: float = _option(0.0, "clip the gradient's global norm to this; 0: off", 0.0)
    max_bad_steps: int = _option(
        20, "stop after this many steps in a row with a non-finite loss or gradient", 1
    )
    beta: float = _option(1.0, "weight of the KL (latent) terms", 0.0)
    warmup_epochs: int = _option(0, "epochs of linear KL warm-up from 0 to beta", 0)
    adam_eps: float = _option(
        1e-8, "Adam's epsilon (Burda et al. 2015 use 1e-4)", 0.0, exclusive=True
    )
    seed: int = _option(0, "seed of every random draw", 0, maximum=2**32 - 1)
    dist_timeout: float = _option(
        600.0,
        "seconds a process of a torchrun run waits for the others before stopping with an error",
        0.0,
        exclusive=True,
    )
    device: str = _option("auto", "`cpu`, `cuda`, `cuda:N` or `auto`")


@dataclass(frozen=True)
class Config:
    name: str = _option("vae", "run name: the run directory is runs/<name>")
    data: DataConfig = field(default_factory=DataConfig, metadata={"help": "data"})
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "model"})
    train: TrainConfig = field(default_factory=TrainConfig, metadata={"help": "training"})

    def __post_init__(self) -> None:
        # The name becomes a folder under runs/: it must not be empty or climb out of it.
        if (
            not self.name.strip()
            or self.name in (".", "..")
            or any(c in self.name for c in "/\\\0")
        ):
            raise ConfigError(
                f"name: {self.name!r} cannot name a run folder; use letters, digits, - or _"
            )

    # ----------------------------------------------------------------- conversions
    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Config:
        """Validate a nested mapping (as read from TOML) into a Config."""
        if _structure_depth(raw) > TOML_MAX_DEPTH:  # a crafted checkpoint's config, say
            raise ConfigError(f"config: nested deeper than {TOML_MAX_DEPTH} levels")
        _check_integers(raw, "")
        config = _parse_section(cls, raw, "")
        model = raw.get("model", {}) if isinstance(raw, Mapping) else {}
        unread = set(model) - {"program", *config.model.read_keys()}
        if unread:
            key, program = sorted(unread)[0], config.model.program.name
            raise ConfigError(
                f"model.{key}: program {program!r} does not use it; remove it, or choose"
                " model.program = 'vae'"
            )
        return config

    def to_dict(self) -> dict[str, Any]:
        """A nested dict of plain TOML values; ``from_dict(to_dict())`` gives back ``self``.
        The model section holds only the keys its program reads."""
        out = _section_to_dict(self)
        keep = {"program", *self.model.read_keys()}
        out["model"] = {k: v for k, v in out["model"].items() if k in keep}
        return out

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_toml())

    def replace(self, overrides: Iterable[str]) -> Config:
        """A new config with dotted ``key=value`` overrides applied."""
        return Config.from_dict(apply_overrides(self.to_dict(), overrides))


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> Config:
    """Read a TOML file (or start from the defaults), apply overrides, and validate."""
    raw = read_toml(path, "config file") if path is not None else {}
    return Config.from_dict(apply_overrides(raw, overrides))


#: The largest TOML file pyrovae reads (a config is a few hundred bytes).
TOML_MAX_BYTES = 1 << 20
#: The deepest nesting of tables and arrays pyrovae reads (a config needs 4).
TOML_MAX_DEPTH = 32
#: The largest integer a config may hold: what torch and NumPy index with (int64).
INT_LIMIT = 2**63 - 1


def read_toml(path: str | Path, what: str) -> dict[str, Any]:
    """Parse a TOML file with ``tomllib`` (never code). The one reader of every TOML file
    (config, variants, a run's ``config.toml``): a missing, oversized, non-UTF-8, invalid or
    too deeply nested file is a one-line ConfigError naming ``what`` it is and the file."""
    path = Path(path)
    where = f"{what} {str(path)!r}"
    if not path.exists():
        raise ConfigError(f"{where} does not exist")
    if not path.is_file():
        raise ConfigError(f"{where} is not a regular file")
    try:
        with open(path, "rb") as handle:
            data = handle.read(TOML_MAX_BYTES + 1)
    except OSError as error:
        raise ConfigError(f"{where} cannot be read: {error.strerror or error}") from None
    if len(data) > TOML_MAX_BYTES:
        raise ConfigError(f"{where} is larger than the limit of {TOML_MAX_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{where} is not UTF-8 text (byte {error.start} is {data[error.start]:#04x})"
        ) from None
    return parse_toml(text, where)


def parse_toml(text: str, where: str) -> dict[str, Any]:
    """``tomllib.loads(text)``; invalid or too deeply nested text (brackets or dotted keys) is a
    one-line ConfigError that starts with ``where``."""
    deep = ConfigError(f"{where} nests tables or arrays deeper than {TOML_MAX_DEPTH} levels")
    if _nesting_depth(text) > TOML_MAX_DEPTH:  # before tomllib, which recurses per bracket
        raise deep
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{where} is not valid TOML: {error}") from None
    except ValueError as error:  # an integer of more than 4300 digits
        raise ConfigError(f"{where} is not valid TOML: {error}") from None
    except RecursionError:
        raise deep from None
    if _structure_depth(raw) > TOML_MAX_DEPTH:  # dotted keys nest without brackets
        raise deep
    return raw


def _structure_depth(value: Any) -> int:
    """The nesting depth of dicts and lists in ``value``, found without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(node, Mapping):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list | tuple):
            stack.extend((v, depth + 1) for v in node)
    return deepest


def _nesting_depth(text: str) -> int:
    """An upper bound of the nesting of inline arrays and tables: the deepest run of open
    ``[``/``{`` (brackets in strings and comments count too, which only overestimates)."""
    depth = deepest = 0
    for char in text:
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth = max(0, depth - 1)
    return deepest


def apply_overrides(raw: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings; values are TOML literals, bare words are strings."""
    result = _deep_copy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key=value (train.epochs=5)")
        value = _parse_value(text.strip())
        if key.count(".") >= TOML_MAX_DEPTH:
            raise ConfigError(f"override key nests deeper than {TOML_MAX_DEPTH} levels")
        *parents, leaf = key.split(".")
        node = result
        for i, part in enumerate(parents):
            child = node.get(part)
            if isinstance(child, str) and _is_component_path(parents[: i + 1]):
                child = {"name": child}  # a component given by name alone gains options
            if child is None and _is_component_path(parents[: i + 1]):
                child = _default_component(parents[: i + 1]).to_dict()  # a default's options
            if child is None:
                child = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {'.'.join(parents[: i + 1])} is not a table")
            node[part] = child
            node = child
        node[leaf] = value
    return result


# --------------------------------------------------------------------- internals
def _parse_value(text: str) -> Any:
    if _nesting_depth(text) > TOML_MAX_DEPTH:
        raise ConfigError(f"override value nests deeper than {TOML_MAX_DEPTH} levels")
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text
    except ValueError as error:  # an integer of more than 4300 digits
        raise ConfigError(f"override value: {error}") from None


def _is_component_path(parts: list[str]) -> bool:
    node: Any = Config
    for part in parts:
        fields = (
            {f.name: f for f in dataclasses.fields(node)} if dataclasses.is_dataclass(node) else {}
        )
        if part not in fields:
            return False
        node = typing.get_type_hints(node)[part]
    return node is Component


def _default_component(parts: list[str]) -> Component:
    """The default of the component field at the dotted path ``parts`` (a component path)."""
    node: Any = Config
    for part in parts[:-1]:
        node = typing.get_type_hints(node)[part]
    return _default({f.name: f for f in dataclasses.fields(node)}[parts[-1]])


def _deep_copy(raw: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in raw.items()}


def _parse_section(cls: type, raw: Mapping[str, Any], prefix: str) -> Any:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a table, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in raw:
        if key not in fields:
            raise ConfigError(_unknown_key(prefix + key, key, fields))
    values = {}
    for name, f in fields.items():
        where = prefix + name
        hint = hints[name]
        if name not in raw:
            if hint is Component:  # defaults are resolved too, so the saved config is complete
                values[name] = _parse_component(_default(f), f.metadata["kind"], where)
            elif dataclasses.is_dataclass(hint):  # so are the components of an absent section
                values[name] = _parse_section(hint, {}, where + ".")
            continue
        value = raw[name]
        if hint is Component:
            values[name] = _parse_component(value, f.metadata["kind"], where)
        elif dataclasses.is_dataclass(hint):
            values[name] = _parse_section(hint, value, where + ".")
        else:
            value = check_type(value, hint, where)
            _check_range(value, f, where)
            if f.metadata.get("kind"):
                from pyrovae.registry import lookup

                lookup(f.metadata["kind"], value, where)
            values[name] = value
    return cls(**values)


def _parse_component(value: Any, kind: str, where: str) -> Component:
    if isinstance(value, Component):
        value = value.to_dict()
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, Mapping) or not isinstance(value.get("name"), str):
        raise ConfigError(f"{where}: expected a {kind} name or a table with a 'name' key")
    options = {k: v for k, v in value.items() if k != "name"}
    return Component(value["name"], resolve_options(kind, value["name"], options, where))


def _check_range(value: Any, f: dataclasses.Field, where: str) -> None:
    maximum = f.metadata.get("max")
    if maximum is not None and isinstance(value, int | float) and value > maximum:
        raise ConfigError(f"{where}: must be <= {maximum}, got {value!r}")
    minimum = f.metadata.get("min")
    if minimum is None or not isinstance(value, int | float):
        return
    strict = f.metadata["exclusive"]
    if value < minimum or (strict and value == minimum):
        bound = f"> {minimum}" if strict else f">= {minimum}"
        raise ConfigError(f"{where}: must be {bound}, got {value!r}")


def _check_integers(raw: Any, where: str) -> None:
    """Refuse integers beyond ``INT_LIMIT`` anywhere in a config (component options too)."""
    if isinstance(raw, Mapping):
        for key, value in raw.items():
            _check_integers(value, f"{where}.{key}" if where else str(key))
    elif isinstance(raw, list | tuple):
        for i, value in enumerate(raw):
            _check_integers(value, f"{where}[{i}]")
    elif isinstance(raw, int) and not isinstance(raw, bool) and abs(raw) > INT_LIMIT:
        raise ConfigError(
            f"{where}: an integer of {raw.bit_length()} bits is beyond the largest pyrovae"
            " accepts (2**63 - 1)"
        )


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory()  # type: ignore[misc]


def _unknown_key(where: str, key: str, fields: Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(key, fields, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{where}: unknown key{hint}; valid keys: {', '.join(fields)}"


def _section_to_dict(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, Component):
            out[f.name] = value.to_dict()
        elif dataclasses.is_dataclass(value):
            out[f.name] = _section_to_dict(value)
        else:
            out[f.name] = _to_toml(value)
    return out


def _to_toml(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_to_toml(v) for v in value]
    return value
