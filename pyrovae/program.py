"""The extension point for whole models: a ``Program`` is a ``PyroModule`` holding a Pyro model
and its guide, registered under kind ``program`` and chosen by ``model.program`` in a config.

The contract every pyrovae tool relies on, whatever the program's shape (one latent site or
several, nested plates, discrete sites):

- ``model(x=None, batch_size=None)`` puts every sample site inside ``pyro.plate(DATA_PLATE, n)``
  over the first dimension of ``x`` and scores ``x`` at the site ``OBSERVED``; called with
  ``x=None`` it generates ``batch_size`` datapoints (Pyro's generate-when-unobserved idiom).
- ``guide(x)`` samples every latent site of the model inside the same data plate.
- ``x_shape`` is the shape of one datapoint; ``max_plate_nesting`` the number of plates.

Both programs are ``pyro_method``\\ s, so under Pyro's default settings every parameter they
use is a ``pyro.param`` site and a plain ``pyro.infer.SVI`` loop trains them. Each program
instance gets a name of its own (``vae_3``, ...), the prefix of its parameters' names in Pyro's
param store: two programs in one process never share a parameter.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.nn import PyroModule

from .config import ModelConfig
from .errors import ConfigError
from .registry import build

__all__ = [
    "DATA_PLATE",
    "OBSERVED",
    "Program",
    "observation",
    "generate",
    "reconstruct",
    "parameter_groups",
    "own_param_store",
    "check_program",
    "build_program",
]

#: The plate over datapoints and the observed site, shared by every program.
DATA_PLATE = "data"
OBSERVED = "x"

_instances = itertools.count(1)


class Program(PyroModule):
    """Base class of a model/guide pair; subclass it, define ``model`` and ``guide`` (decorated
    with ``pyro.nn.pyro_method``) and register it::

        @pyrovae.register("program", "my_program")
        class MyProgram(pyrovae.Program):
            def __init__(self, x_shape: tuple[int, ...], hidden: int = 64): ...
    """

    #: Plates nested inside one another in ``model`` and ``guide``, the data plate included.
    max_plate_nesting: int = 1
    #: Whether KL(q || p) may be computed per latent site in closed form (``meanfield``): true
    #: only when the model's latent sites do not depend on each other.
    analytic_kl: bool = False

    def __init__(self, x_shape: tuple[int, ...]) -> None:
        super().__init__(name=f"{type(self).__name__.lower()}_{next(_instances)}")
        self.x_shape = tuple(x_shape)

    def __deepcopy__(self, memo: dict) -> Program:
        """A copy is a new program: its parameters get a name prefix of their own."""
        cls = type(self)
        clone = cls.__new__(cls)
        memo[id(self)] = clone
        for key, value in self.__dict__.items():
            clone.__dict__[key] = copy.deepcopy(value, memo)
        old, fresh = self._pyro_name, f"{cls.__name__.lower()}_{next(_instances)}"
        for module in clone.modules():
            if isinstance(module, PyroModule) and module._pyro_name.startswith(old):
                module.__dict__["_pyro_name"] = fresh + module._pyro_name[len(old) :]
        return clone

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """The mean of p(x | latents) for ``n`` draws from the model: ``(n, *x_shape)``."""
        return self._as_data(generate(self.model, n), n)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The mean of p(x | latents) at one draw of the latents from the guide."""
        return self._as_data(reconstruct(self.model, self.guide, x), len(x))

    def _as_data(self, values: torch.Tensor, n: int) -> torch.Tensor:
        """``values`` as ``(n, *x_shape)`` (a program may observe x flattened or reshaped)."""
        if values.numel() != n * math.prod(self.x_shape):
            raise ConfigError(
                f"the program's site {OBSERVED!r} has shape {tuple(values.shape)}, not {n}"
                f" datapoints of shape {self.x_shape}"
            )
        return values.reshape(n, *self.x_shape)


def observation(x: torch.Tensor | None) -> torch.Tensor | None:
    """What a program passes as ``obs=`` of its observed site: ``x``, or ``None`` where the log
    density is masked out (``poutine.get_mask() is False``, as under ``pyro.infer.Predictive``),
    so that predicting draws ``x`` from the model instead of returning the data."""
    return None if poutine.get_mask() is False else x


def _observed_site(trace: poutine.Trace) -> dict:
    site = trace.nodes.get(OBSERVED)
    if site is None or site["type"] != "sample":
        raise ConfigError(
            f"the program's model has no sample site {OBSERVED!r}; name the site of the data"
            f" {OBSERVED!r}"
        )
    return site


def _mean(site: dict) -> torch.Tensor:
    try:
        return site["fn"].mean
    except (NotImplementedError, AttributeError):
        return site["value"]


@torch.no_grad()
def generate(model: Callable, n: int) -> torch.Tensor:
    """Run ``model(None, batch_size=n)`` and return the mean of its observed site (a draw where
    the distribution has no mean)."""
    try:
        trace = poutine.trace(model).get_trace(None, batch_size=n)
    except TypeError as error:
        raise ConfigError(
            f"the program cannot generate: model(None, batch_size={n}) failed ({error});"
            " let model take x=None and batch_size"
        ) from None
    return _mean(_observed_site(trace))


@torch.no_grad()
def reconstruct(model: Callable, guide: Callable, x: torch.Tensor) -> torch.Tensor:
    """The mean of the model's observed site with the latents drawn by ``guide(x)``."""
    guide_trace = poutine.trace(guide).get_trace(x)
    trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x)
    return _mean(_observed_site(trace))


def parameter_groups(program: torch.nn.Module, x: torch.Tensor) -> dict[str, list[torch.Tensor]]:
    """The trainable parameters the guide uses (``encoder``) and those only the model uses
    (``decoder``), read from the ``pyro.param`` sites of one run of each on ``x``."""
    with own_param_store():
        guide_trace = poutine.trace(program.guide, param_only=True).get_trace(x)
        model_trace = poutine.trace(program.model, param_only=True).get_trace(x)
    guide = _params(guide_trace)
    guide_ids = {id(p) for p in guide}
    model = [p for p in _params(model_trace) if id(p) not in guide_ids]
    return {"encoder": guide, "decoder": model}


def _params(trace: poutine.Trace) -> list[torch.Tensor]:
    seen: dict[int, torch.Tensor] = {}
    for site in trace.nodes.values():
        if site["type"] == "param":
            value = site["value"]
            leaf = value.unconstrained() if hasattr(value, "unconstrained") else value
            if leaf.requires_grad:
                seen.setdefault(id(leaf), leaf)
    return list(seen.values())


@contextmanager
def own_param_store() -> Iterator[None]:
    """Pyro's param store as pyrovae found it, before and after: what pyrovae's own calls
    register there (its programs' parameters) is gone when they return."""
    with pyro.get_param_store().scope():
        yield


def check_program(program: Any, what: str = "model") -> None:
    """Refuse, in one line, an object that is not a model/guide pair pyrovae can drive."""
    missing = [name for name in ("model", "guide") if not callable(getattr(program, name, None))]
    if not isinstance(program, torch.nn.Module) or missing:
        lacks = f"no {' or '.join(missing)} method" if missing else "not a torch.nn.Module"
        raise ConfigError(
            f"{what}: {type(program).__name__} is {lacks}; pass a pyrovae.Program (a"
            " PyroModule with model(x) and guide(x))"
        )


def build_program(config: ModelConfig, x_shape: tuple[int, ...]) -> torch.nn.Module:
    """Build the program named by ``config.program`` for data of shape ``x_shape``.

    A program reads the other ``model`` keys it lists in ``config_sections`` (the ``vae``
    program reads them all); a config that sets a key its program does not read is refused
    when it is read (``Config.from_dict``), never silently ignored.
    """
    name = config.program.name
    program = build(
        "program",
        name,
        config.program.options,
        "model.program",
        model_config=config,
        x_shape=tuple(x_shape),
        latent_dim=config.latent_dim,
    )
    check_program(program, "model.program")
    return program
