"""Importance weights from Pyro traces, kept per datapoint, shared by the estimators and the
importance-sampled log-likelihood.

A log weight is log p(x, z) - log q(z|x), the sum of every sample site's ``log_prob`` in the
model trace minus the guide trace's. As in Pyro's ``RenyiELBO``, plates common to all sites (the
particles plate and the data plate of a VAE) are kept and the others are summed, so the result
has shape ``(particles, batch)``: one weight per particle and datapoint, never summed over the
data plate (Pyro's ``vectorized_importance_weights`` sums it).
"""

from __future__ import annotations

from collections.abc import Callable

import pyro
import torch
from pyro import poutine
from pyro.distributions.score_parts import ScoreParts
from pyro.infer.util import get_dependent_plate_dims, torch_sum
from pyro.poutine import Trace
from pyro.poutine.util import prune_subsample_sites

from pyrovae.errors import ConfigError

__all__ = [
    "PARTICLES_PLATE",
    "sample_sites",
    "log_weights",
    "particle_traces",
    "enumerated_sites",
    "path_derivative_trace",
    "aliased",
    "check_reparameterized",
]

#: Name of the plate that vectorizes particles in :func:`particle_traces`.
PARTICLES_PLATE = "particles"


def sample_sites(trace: Trace, observed: bool | None = None) -> list[dict]:
    """The sample sites of ``trace``; only observed (or only latent) ones if ``observed`` is set."""
    return [
        site
        for site in trace.nodes.values()
        if site["type"] == "sample" and (observed is None or site["is_observed"] == observed)
    ]


def enumerated_sites(guide_trace: Trace) -> list[dict]:
    """The guide's latent sites that took all their values in parallel (``poutine.enum``)."""
    return [
        site
        for site in sample_sites(guide_trace, observed=False)
        if site["infer"].get("_enumerate_dim") is not None
    ]


def log_weights(model_trace: Trace, guide_trace: Trace) -> torch.Tensor:
    """log p(x, z) - log q(z|x) over the plates common to every site (scales applied).

    The traces must hold ``log_prob`` (``compute_log_prob``); Pyro's ELBOs compute it.
    """
    model_trace.compute_log_prob()
    guide_trace.compute_log_prob()
    sum_dims = get_dependent_plate_dims(sample_sites(model_trace))
    total = sum(torch_sum(site["log_prob"], sum_dims) for site in sample_sites(model_trace))
    return total - sum(torch_sum(site["log_prob"], sum_dims) for site in sample_sites(guide_trace))


def particle_traces(
    model: Callable,
    guide: Callable,
    *args,
    particles: int,
    max_plate_nesting: int = 1,
    **kwargs,
) -> tuple[Trace, Trace]:
    """The guide's trace and the model's replayed against it, with ``particles`` draws of every
    latent site vectorized in a plate left of the model's own plates. A site the guide marks
    ``infer={"enumerate": "parallel"}`` takes all its values at once, in a dimension left of the
    particles (``enumerated_sites``)."""
    plate = pyro.plate(PARTICLES_PLATE, particles, dim=-(max_plate_nesting + 1))
    enumerated = poutine.enum(plate(guide), first_available_dim=-(max_plate_nesting + 2))
    guide_trace = poutine.trace(enumerated).get_trace(*args, **kwargs)
    model_trace = poutine.trace(poutine.replay(plate(model), trace=guide_trace)).get_trace(
        *args, **kwargs
    )  # subsample sites (the plates' own) are pruned, as in Pyro's ELBOs
    return prune_subsample_sites(model_trace), prune_subsample_sites(guide_trace)


_CACHED = ("log_prob", "log_prob_sum", "unscaled_log_prob", "score_parts")


def path_derivative_trace(guide: Callable, guide_trace: Trace, *args, **kwargs) -> Trace:
    """A copy of ``guide_trace`` whose latent sites score log q(z|x) with a gradient that
    reaches the guide's parameters only through the values z (the path derivative), the
    score term E_q[grad log q] = 0 left out.

    ``guide`` is run again on the trace's values detached: its log q has the same explicit
    dependence on the parameters and none on z, so subtracting it (and adding back its value)
    leaves only the path through z. Unlike detaching each distribution's tensors, this keeps a
    site's dependence on the values of the sites it is conditioned on: q(z2|z1) keeps its path
    through z1. Costs one more pass of the guide.
    """
    guide_trace.compute_log_prob()
    fixed = guide_trace.copy()
    for name, site in guide_trace.nodes.items():
        if site["type"] == "sample" and not site["is_observed"]:
            fixed.nodes[name] = {**site, "value": site["value"].detach()}
    score_trace = prune_subsample_sites(
        poutine.trace(poutine.replay(guide, trace=fixed)).get_trace(*args, **kwargs)
    )
    score_trace.compute_log_prob()
    path = guide_trace.copy()
    for name, site in guide_trace.nodes.items():
        if site["type"] == "sample" and not site["is_observed"]:
            score = score_trace.nodes[name]["log_prob"]
            log_prob = site["log_prob"] - score + score.detach()
            path.nodes[name] = {
                **site,
                "log_prob": log_prob,
                "log_prob_sum": log_prob.sum(),
                "score_parts": ScoreParts(
                    log_prob=log_prob, score_function=0, entropy_term=log_prob
                ),
            }
    return path


def aliased(guide_trace: Trace) -> Trace:
    """A copy of ``guide_trace`` whose latent values are new autograd nodes (views) of the
    originals: a gradient hook on one acts on what reaches z from the terms computed on the
    copy, not on the guide's own use of z (q(z2|z1) inside the guide)."""
    copy = guide_trace.copy()
    for name, site in guide_trace.nodes.items():
        if site["type"] == "sample" and not site["is_observed"]:
            kept = {k: v for k, v in site.items() if k not in _CACHED}
            copy.nodes[name] = {**kept, "value": site["value"].view_as(site["value"])}
    return copy


def check_reparameterized(guide_trace: Trace, estimator: str) -> None:
    """Refuse a guide with a latent site that cannot be sampled by reparameterization."""
    for site in sample_sites(guide_trace, observed=False):
        if not site["fn"].has_rsample:
            raise ConfigError(
                f"estimator {estimator!r} needs a reparameterizable guide, but site"
                f" {site['name']!r} ({type(site['fn']).__name__}) has no rsample; choose"
                " train.estimator = 'trace' or a reparameterizable guide"
            )
