"""Name -> component registries, and the one generic builder that turns a config entry into
an object.

A component is any callable (usually a ``PyroModule`` subclass) registered under a kind and a
name. Its keyword arguments are its options: the builder checks a config entry's options against
the callable's signature and type hints, fills the defaults, and passes the context the model
provides (``latent_dim``, ``x_shape``, ...) to the parameters that ask for it by name.

Register your own component and select it by name from a config file::

    from pyrovae import register

    @register("likelihood", "my_poisson")
    class MyPoisson(Likelihood):
        ...
"""

from __future__ import annotations

import inspect
import math
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar

from pyrovae.errors import ConfigError

__all__ = [
    "KINDS",
    "register",
    "registered",
    "builtin",
    "lookup",
    "component_options",
    "build",
    "CONTEXT",
]

#: The kinds of component a config can name.
KINDS = (
    "program",
    "prior",
    "guide",
    "likelihood",
    "network",
    "estimator",
    "dataset",
    "schedule",
)

#: Constructor parameters filled by pyrovae from the model, never read from a config file.
CONTEXT = frozenset(
    {
        "latent_dim",
        "x_shape",
        "in_shape",
        "out_shape",
        "encoder",
        "guide",
        "model_config",
        "max_plate_nesting",
        "num_classes",
        "optimizer",
        "train_epochs",
    }
)

_REGISTRY: dict[str, dict[str, Callable[..., Any]]] = {kind: {} for kind in KINDS}

T = TypeVar("T", bound=Callable[..., Any])


def register(kind: str, name: str) -> Callable[[T], T]:
    """Class or function decorator: make ``obj`` selectable as ``name`` for component ``kind``."""
    if kind not in _REGISTRY:
        raise ValueError(f"unknown component kind {kind!r}; choose from {', '.join(KINDS)}")

    def decorator(obj: T) -> T:
        existing = _REGISTRY[kind].get(name)
        if existing is not None and existing is not obj:
            raise ValueError(f"{kind} {name!r} is already registered by {existing!r}")
        _REGISTRY[kind][name] = obj
        return obj

    return decorator


def registered(kind: str) -> list[str]:
    """The names registered for ``kind``, sorted."""
    return sorted(_REGISTRY[kind])


def builtin(kind: str) -> list[str]:
    """The names registered for ``kind`` by pyrovae itself (not by plugins), sorted."""
    return [
        name for name in registered(kind) if _REGISTRY[kind][name].__module__.startswith("pyrovae.")
    ]


def lookup(kind: str, name: str, where: str | None = None) -> Callable[..., Any]:
    """The component registered as ``name``, or a ConfigError that lists the valid names."""
    try:
        return _REGISTRY[kind][name]
    except KeyError:
        key = where or kind
        choices = ", ".join(registered(kind))
        raise ConfigError(f"{key}: unknown {kind} {name!r}; choose from: {choices}") from None


def component_options(kind: str, name: str) -> dict[str, inspect.Parameter]:
    """The user-settable options of a component: its keyword parameters that are not context."""
    factory = lookup(kind, name)
    signature = inspect.signature(factory)
    return {
        p.name: p
        for p in signature.parameters.values()
        if p.name not in CONTEXT and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def resolve_options(kind: str, name: str, options: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Check ``options`` against the component's signature and return them with defaults filled."""
    lookup(kind, name, where)  # an unknown name is reported under the config key ``where``
    params = component_options(kind, name)
    hints = _type_hints(lookup(kind, name))
    resolved: dict[str, Any] = {}
    for key, value in options.items():
        if key not in params:
            valid = ", ".join(sorted(params)) or "none"
            raise ConfigError(
                f"{where}.{key}: not an option of {kind} {name!r}; its options are: {valid}"
            )
        hint = hints.get(key)
        resolved[key] = check_type(value, hint, f"{where}.{key}") if hint else value
    for key, param in params.items():
        if key not in resolved:
            if param.default is inspect.Parameter.empty:
                raise ConfigError(f"{where}.{key}: required option of {kind} {name!r} is missing")
            hint = hints.get(key)
            default = param.default
            resolved[key] = check_type(default, hint, f"{where}.{key}") if hint else default
    return resolved


def build(kind: str, name: str, options: Mapping[str, Any], where: str, **context: Any) -> Any:
    """Build component ``name`` of ``kind`` from its options and the context it asks for."""
    factory = lookup(kind, name, where)
    resolved = resolve_options(kind, name, options, where)
    params = inspect.signature(factory).parameters
    wanted = {k: v for k, v in context.items() if k in params}
    try:
        return factory(**resolved, **wanted)
    except ConfigError as error:  # a component's own check of its options: name the config key
        message = str(error)
        raise ConfigError(message if message.startswith(where) else f"{where}: {message}") from None


def check_type(value: Any, hint: Any, where: str) -> Any:
    """``value`` converted to ``hint`` (int -> float, list -> tuple), or a ConfigError."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return check_type(value, arg, where)
            except ConfigError as error:
                errors.append(str(error))
        if len(errors) == 1:
            raise ConfigError(errors[0])
        expected = " or ".join(_describe(arg) for arg in args if arg is not type(None))
        raise ConfigError(f"{where}: expected {expected}, got {value!r}")
    if origin is Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise ConfigError(f"{where}: {value!r} is not valid; choose from: {choices}")
        return value
    if origin in (tuple, list) or hint in (tuple, list):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        item = args[0] if args else Any
        return tuple(check_type(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        number = float(value) if isinstance(value, float) or abs(value) < 2**1000 else math.inf
        if not math.isfinite(number):  # TOML has nan and inf literals: no option means them
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return number
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def _describe(hint: Any) -> str:
    """What a value of type ``hint`` is, in words (for the errors of a union)."""
    words = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    if hint in words:
        return words[hint]
    if typing.get_origin(hint) is Literal:
        return " or ".join(repr(a) for a in typing.get_args(hint))
    if typing.get_origin(hint) in (tuple, list) or hint in (tuple, list):
        return "a list"
    return getattr(hint, "__name__", str(hint))


def _type_hints(factory: Callable[..., Any]) -> dict[str, Any]:
    target = factory.__init__ if inspect.isclass(factory) else factory
    try:
        return typing.get_type_hints(target)
    except Exception:  # unresolvable annotations in a user's component: skip type checks
        return {}
