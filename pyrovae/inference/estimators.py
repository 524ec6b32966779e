"""ELBO estimators, registered by name: each returns a configured Pyro ``ELBO``.

Particles are vectorized over a plate left of the data plate, so ``particles = K`` costs one
batched pass through the networks, not K. The estimators beyond Pyro's own are subclasses of a
Pyro ELBO that override one hook:

- ``iwae`` and ``renyi``: :class:`ImportanceWeightedELBO`, a ``RenyiELBO`` made differentiable
  (``differentiable_loss``, which the training loop calls); its hook ``_surrogate_bound`` maps
  the per-particle, per-datapoint log weights to the bound.
- ``dreg``: :class:`DReGELBO` overrides ``_surrogate_bound`` with the doubly reparameterized
  gradient of the IWAE bound.
- ``stl``: :class:`STLELBO`, a ``Trace_ELBO`` overriding ``_get_trace`` to score the latents
  under the guide with the gradient of its parameters through z only (the path derivative).

``stl`` and ``dreg`` hold for guides with any number of latent sites, conditioned on each
other or not (``log_weights.path_derivative_trace``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from pyro import poutine
from pyro.infer import (
    ELBO,
    RenyiELBO,
    Trace_ELBO,
    TraceEnum_ELBO,
    TraceGraph_ELBO,
    TraceMeanField_ELBO,
)
from pyro.infer.enum import get_importance_trace
from pyro.poutine import Trace
from pyro.poutine.util import prune_subsample_sites
from pyro.util import warn_if_nan

from pyrovae.errors import ConfigError
from pyrovae.inference.log_weights import (
    aliased,
    check_reparameterized,
    log_weights,
    path_derivative_trace,
    sample_sites,
)
from pyrovae.registry import register

__all__ = [
    "differentiable_loss",
    "check_estimator",
    "ImportanceWeightedELBO",
    "DReGELBO",
    "STLELBO",
    "trace",
    "meanfield",
    "tracegraph",
    "enum",
    "iwae",
    "renyi",
    "stl",
    "dreg",
]


class TracedGuide(NamedTuple):
    """The guide as an estimator traced it (particles plate included), with its arguments: what
    a surrogate needs to run it again."""

    guide: Callable
    args: tuple
    kwargs: dict


def _particles_kwargs(particles: int, max_plate_nesting: int = 1) -> dict:
    if particles < 1:
        raise ConfigError(f"estimator: particles must be >= 1, got {particles}")
    return {
        "num_particles": particles,
        "vectorize_particles": particles > 1,
        "max_plate_nesting": max_plate_nesting,
    }


class ImportanceWeightedELBO(RenyiELBO):
    """The Renyi bound (Li and Turner 2016) with alpha = 0 the IWAE bound (Burda et al. 2015):
    per datapoint, 1/(1 - alpha) log (1/K) sum_k w_k^(1 - alpha), w_k = p(x, z_k) / q(z_k|x).

    Pyro's ``RenyiELBO`` computes the same value but has no ``differentiable_loss`` (the hook
    ``ELBOModule`` and pyrovae's training loop call); this class adds it, with the gradient
    taken by autograd through the reparameterized draws. Assumes a reparameterizable guide
    (checked). Weights are kept per datapoint: plates common to every site stay unsummed.
    """

    def __init__(self, alpha: float = 0.0, num_particles: int = 5, max_plate_nesting: int = 1):
        super().__init__(
            alpha=alpha,
            num_particles=num_particles,
            max_plate_nesting=max_plate_nesting,
            vectorize_particles=True,
        )

    @property
    def name(self) -> str:
        return "iwae" if self.alpha == 0 else "renyi"

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """Minus the bound summed over the batch, differentiable in the model and guide."""
        ((model_trace, guide_trace),) = self._get_traces(model, guide, args, kwargs)
        self._check(guide_trace)
        log_w = self._per_particle(log_weights(model_trace, guide_trace))
        bound = self._bound(log_w).sum()
        traced = TracedGuide(self._vectorized_num_particles(guide), args, kwargs)
        surrogate = self._surrogate_bound(log_w, model_trace, guide_trace, traced).sum()
        loss = -(bound.detach() + (surrogate - surrogate.detach()))
        warn_if_nan(loss, "loss")
        return loss

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        """For ``pyro.infer.SVI``: the same gradient as ``differentiable_loss``."""
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        if loss.requires_grad:
            loss.backward()
        return loss.item()

    def _check(self, guide_trace: Trace) -> None:
        check_reparameterized(guide_trace, self.name)

    def _per_particle(self, log_w: torch.Tensor) -> torch.Tensor:
        """``(particles, batch)``: with one particle no particles plate was added."""
        return log_w.unsqueeze(0) if self.num_particles == 1 else log_w

    def _bound(self, log_w: torch.Tensor) -> torch.Tensor:
        """Per datapoint: 1/(1 - alpha) (logsumexp_k (1 - alpha) log w_k - log K)."""
        scaled = (1.0 - self.alpha) * log_w
        return (torch.logsumexp(scaled, dim=0) - math.log(log_w.shape[0])) / (1.0 - self.alpha)

    def _surrogate_bound(
        self,
        log_w: torch.Tensor,
        model_trace: Trace,
        guide_trace: Trace,
        traced: TracedGuide,
    ) -> torch.Tensor:
        """The hook: a per-datapoint surrogate whose gradient is the estimator's (``traced``:
        the guide, to run again if the surrogate needs it)."""
        return self._bound(log_w)


class DReGELBO(ImportanceWeightedELBO):
    """Doubly reparameterized gradients of the IWAE bound (Tucker, Lawson, Gu and Maddison 2018,
    "Doubly reparameterized gradient estimators for Monte Carlo objectives", eq. 5).

    The model's parameters get the IWAE gradient, sum_k w~_k grad log w_k (w~ the normalized
    weights); the guide's get sum_k w~_k^2 (d log w_k / d z_k) (d z_k / d phi), where log q in
    log w_k has its gradient through z only (``log_weights.path_derivative_trace``). The squared
    weights reach the guide's parameters through a gradient hook on views of the draws z_k,
    which multiplies what flows back from log w_k by w~_k once, however many latent sites
    depend on each other; no partition of the parameters into model and guide is needed.

    Assumes a reparameterizable guide (checked) and the bound with alpha = 0. Unbiased for the
    IWAE gradient, with an encoder signal-to-noise ratio that grows with K instead of falling
    (Rainforth et al. 2018).
    """

    def __init__(self, num_particles: int = 5, max_plate_nesting: int = 1):
        super().__init__(0.0, num_particles, max_plate_nesting)

    @property
    def name(self) -> str:
        return "dreg"

    def _get_trace(self, model, guide, args, kwargs):
        """The model and guide traces on views of the guide's draws (``log_weights.aliased``):
        the guide samples, then runs again on the views, and the model on them."""
        sampled = prune_subsample_sites(poutine.trace(guide).get_trace(*args, **kwargs))
        replayed = poutine.replay(guide, trace=aliased(sampled))
        return get_importance_trace("flat", self.max_plate_nesting, model, replayed, args, kwargs)

    def _surrogate_bound(
        self,
        log_w: torch.Tensor,
        model_trace: Trace,
        guide_trace: Trace,
        traced: TracedGuide,
    ) -> torch.Tensor:
        path_guide = path_derivative_trace(traced.guide, guide_trace, *traced.args, **traced.kwargs)
        log_w_path = self._per_particle(log_weights(model_trace, path_guide))
        values = [site["value"] for site in sample_sites(guide_trace, observed=False)]
        weights = torch.softmax(log_w.detach(), dim=0)  # w~: (particles, *batch)
        per_draw = weights if self.num_particles > 1 else weights[0]  # as the draws' batch dims
        for value in values:
            if value.requires_grad:
                scale = per_draw.reshape(per_draw.shape + (1,) * (value.dim() - per_draw.dim()))
                value.register_hook(lambda grad, scale=scale: grad * scale)
        return (weights * log_w_path).sum(0)


class STLELBO(Trace_ELBO):
    """Sticking the landing (Roeder, Wu and Duvenaud 2017): the reparameterized ELBO gradient
    without the score term of the guide's parameters, E_q[grad_phi log q_phi(z)] = 0.

    log q(z|x) is scored with a gradient through z only (``log_weights.path_derivative_trace``),
    so the guide's parameters get only the path derivative; the ELBO's value and the model's
    gradient are those of ``Trace_ELBO``. Unbiased; zero variance for the guide when q is the
    exact posterior. Assumes a reparameterizable guide (checked), with any number of latent
    sites.
    """

    def _get_trace(self, model, guide, args, kwargs):
        model_trace, guide_trace = super()._get_trace(model, guide, args, kwargs)
        check_reparameterized(guide_trace, "stl")
        return model_trace, path_derivative_trace(guide, guide_trace, *args, **kwargs)


def differentiable_loss(elbo: ELBO, model: Callable, guide: Callable, *args, **kwargs):
    """Minus the bound as a tensor whose gradient is ``elbo``'s estimator, for any Pyro ELBO:
    its ``differentiable_loss``, or for ``TraceGraph_ELBO`` (which has only ``loss_and_grads``)
    its surrogate loss carrying the bound's value."""
    if isinstance(elbo, TraceGraph_ELBO):
        bound, surrogate = elbo._loss_and_surrogate_loss(model, guide, args, kwargs)
        loss = -torch.as_tensor(bound).detach()
        return loss + (surrogate - surrogate.detach())
    return elbo.differentiable_loss(model, guide, *args, **kwargs)


def check_estimator(elbo: Any, where: str = "train.estimator") -> ELBO:
    """Refuse, in one line, an estimator that pyrovae's driver cannot differentiate."""
    if not isinstance(elbo, ELBO):
        raise ConfigError(f"{where}: {type(elbo).__name__} is not a pyro.infer.ELBO")
    if not isinstance(elbo, TraceGraph_ELBO) and not hasattr(elbo, "differentiable_loss"):
        raise ConfigError(
            f"{where}: {type(elbo).__name__} has no differentiable_loss; subclass an ELBO that"
            " has one (Trace_ELBO, TraceEnum_ELBO, ...) or TraceGraph_ELBO"
        )
    return elbo


@register("estimator", "trace")
def trace(particles: int = 1, max_plate_nesting: int = 1) -> ELBO:
    """``Trace_ELBO``: the Monte Carlo ELBO, log p(x, z) - log q(z|x) at reparameterized draws."""
    return Trace_ELBO(**_particles_kwargs(particles, max_plate_nesting))


@register("estimator", "meanfield")
def meanfield(particles: int = 1, max_plate_nesting: int = 1) -> ELBO:
    """``TraceMeanField_ELBO``: the analytic KL(q || p) where one is registered, else Monte Carlo.

    Assumes the latent sites are not dependent on each other in the model (true of a one-site
    VAE; for a hierarchical program choose ``trace``).
    """
    return TraceMeanField_ELBO(**_particles_kwargs(particles, max_plate_nesting))


@register("estimator", "tracegraph")
def tracegraph(particles: int = 1, max_plate_nesting: int = 1) -> ELBO:
    """``TraceGraph_ELBO``: score-function gradients with Rao-Blackwellization, for programs
    with latent sites that cannot be reparameterized (discrete latents)."""
    return TraceGraph_ELBO(**_particles_kwargs(particles, max_plate_nesting))


@register("estimator", "enum")
def enum(particles: int = 1, max_plate_nesting: int = 1) -> ELBO:
    """``TraceEnum_ELBO``: the discrete sites a guide marks ``infer={"enumerate": "parallel"}``
    (M2's label) are summed out exactly, in parallel; every other site as in ``trace``."""
    return TraceEnum_ELBO(**_particles_kwargs(particles, max_plate_nesting))


@register("estimator", "iwae")
def iwae(particles: int = 5, max_plate_nesting: int = 1) -> ELBO:
    """The importance-weighted bound with K = ``particles`` (Burda et al. 2015); RenyiELBO, alpha 0.

    Needs a reparameterizable guide.
    """
    _particles_kwargs(particles)
    return ImportanceWeightedELBO(0.0, particles, max_plate_nesting)


@register("estimator", "renyi")
def renyi(alpha: float = 0.5, particles: int = 5, max_plate_nesting: int = 1) -> ELBO:
    """The Renyi alpha bound (Li and Turner 2016): alpha 0 is IWAE, alpha -> 1 the ELBO.

    A lower bound for alpha >= 0; alpha = 1 is refused (use ``trace``). Needs a
    reparameterizable guide.
    """
    _particles_kwargs(particles)
    if alpha == 1:
        raise ConfigError("estimator renyi: alpha = 1 is the ELBO; choose 'trace' or alpha != 1")
    return ImportanceWeightedELBO(alpha, particles, max_plate_nesting)


@register("estimator", "stl")
def stl(particles: int = 1, max_plate_nesting: int = 1) -> ELBO:
    """Sticking the landing (Roeder et al. 2017): the ELBO's path-derivative gradient.

    Needs a reparameterizable guide (any number of latent sites).
    """
    return STLELBO(**_particles_kwargs(particles, max_plate_nesting))


@register("estimator", "dreg")
def dreg(particles: int = 5, max_plate_nesting: int = 1) -> ELBO:
    """Doubly reparameterized IWAE gradients (Tucker et al. 2018) with K = ``particles``.

    Needs a reparameterizable guide (any number of latent sites).
    """
    _particles_kwargs(particles)
    return DReGELBO(particles, max_plate_nesting)
