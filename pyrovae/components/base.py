"""The contracts of pyrovae's components, in one place: a ``Program`` (a whole model/guide pair)
and the parts the one-site VAE is built from, ``Prior``, ``VariationalFamily`` and
``Likelihood``. Subclass one, register it by name (``pyrovae.register``), choose it in a config.

A program's contract, whatever its shape (one latent site or several, nested plates, discrete
sites):

- ``model(x=None, batch_size=None)`` puts every sample site inside ``pyro.plate(DATA_PLATE, n)``
  over the first dimension of ``x`` and scores ``x`` at the site ``OBSERVED``; called with
  ``x=None`` it generates ``batch_size`` datapoints (Pyro's generate-when-unobserved idiom).
- ``guide(x)`` samples every latent site of the model inside the same data plate.
- ``x_shape`` is the shape of one datapoint; ``max_plate_nesting`` the number of plates.

A program that uses labels (``uses_labels = True``, with ``num_classes``) takes them as a
LongTensor ``y`` of class indices: ``model(x=None, y=None, batch_size=None)`` and
``guide(x, y=None)``; ``model(None, y=y)`` generates one datapoint per label and
``model(None, batch_size=n)`` draws the labels from p(y). A program with a classifier has
``classify(x) -> logits``; a program with a continuous latent has ``latent_mean(x, y=None)``.
A guide that marks a discrete site ``infer={"enumerate": "parallel"}`` (``enumerates = True``)
has it summed out exactly by ``TraceEnum_ELBO`` (the ``enum`` estimator), the validation loss
and the importance-sampled log-likelihood.

Both programs are ``pyro_method``\\ s, so under Pyro's default settings every parameter they
use is a ``pyro.param`` site and a plain ``pyro.infer.SVI`` loop trains them. Each program
instance gets a name of its own (``vae_3``, ...), the prefix of its parameters' names in Pyro's
param store: two programs in one process never share a parameter.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable

import torch
from pyro import distributions as dist
from pyro import poutine
from pyro.nn import PyroModule

from pyrovae.errors import ConfigError

__all__ = [
    "DATA_PLATE",
    "OBSERVED",
    "Program",
    "Prior",
    "VariationalFamily",
    "Likelihood",
    "observation",
    "generate",
    "reconstruct",
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
    #: Whether ``model`` and ``guide`` take labels ``y`` (class indices, ``num_classes`` of them).
    uses_labels: bool = False
    #: Whether the guide marks discrete sites for parallel enumeration (summed out exactly).
    enumerates: bool = False

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
    so that prediction draws ``x`` from the model instead of returning the data."""
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


class Prior(PyroModule):
    """Base class: subclass it and implement ``forward() -> Distribution`` (event dim 1)."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim

    def forward(self) -> dist.TorchDistribution:
        raise NotImplementedError


class VariationalFamily(PyroModule):
    """Base class: set ``param_shape`` and implement ``forward(params) -> Distribution``.

    ``scores_any_point`` says whether ``log_prob`` works at any z, not only at the family's own
    samples (flows without an inverse score only their cached samples); the VampPrior needs it.
    """

    param_shape: tuple[int, ...]
    scores_any_point: bool = True

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim

    def forward(self, params: torch.Tensor) -> dist.TorchDistribution:
        raise NotImplementedError

    def point(self, params: torch.Tensor) -> torch.Tensor:
        """A representative z for reconstructions: the mean of q(z|x) unless overridden."""
        return self(params).mean


class Likelihood(PyroModule):
    """Base class: implement ``forward(params) -> Distribution`` with event shape ``x_shape``."""

    data_range: tuple[float, float] | None = None
    requires_binary: bool = False

    def __init__(self, x_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.x_shape = tuple(x_shape)
        self.param_shape = self.x_shape

    def forward(self, params: torch.Tensor) -> dist.TorchDistribution:
        raise NotImplementedError
