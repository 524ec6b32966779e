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
from pyro.distributions.util import detach
from pyro.infer.util import get_dependent_plate_dims, torch_sum
from pyro.poutine import Trace
from pyro.poutine.util import prune_subsample_sites

from .errors import ConfigError

__all__ = [
    "PARTICLES_PLATE",
    "sample_sites",
    "log_weights",
    "particle_traces",
    "detach_guide_parameters",
    "check_reparameterized",
    "check_single_latent",
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
    latent site vectorized in a plate left of the model's own plates."""
    plate = pyro.plate(PARTICLES_PLATE, particles, dim=-(max_plate_nesting + 1))
    guide_trace = poutine.trace(plate(guide)).get_trace(*args, **kwargs)
    model_trace = poutine.trace(poutine.replay(plate(model), trace=guide_trace)).get_trace(
        *args, **kwargs
    )  # subsample sites (the plates' own) are pruned, as in Pyro's ELBOs
    return prune_subsample_sites(model_trace), prune_subsample_sites(guide_trace)


def detach_guide_parameters(guide_trace: Trace) -> Trace:
    """A copy of ``guide_trace`` whose latent sites score their values under distributions with
    every parameter detached (``pyro.distributions.util.detach`` deep-copies the distribution,
    detaching its tensors): log q(z|x) then depends on the guide's parameters only through the
    reparameterized value z. Sites and values are otherwise the same objects."""
    copy = guide_trace.copy()
    cached = ("log_prob", "log_prob_sum", "unscaled_log_prob", "score_parts")
    for name, site in guide_trace.nodes.items():
        if site["type"] == "sample" and not site["is_observed"]:
            node = {k: v for k, v in site.items() if k not in cached}
            node["fn"] = detach(site["fn"])
            copy.nodes[name] = node
    copy.compute_score_parts()
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


def check_single_latent(guide_trace: Trace, estimator: str) -> None:
    """Refuse a guide with more than one latent site: detaching the parameters of a site whose
    distribution depends on another latent draw would also cut that draw's pathwise gradient."""
    names = [site["name"] for site in sample_sites(guide_trace, observed=False)]
    if len(names) != 1:
        raise ConfigError(
            f"estimator {estimator!r} supports guides with exactly one latent site, got"
            f" {len(names)} ({', '.join(names) or 'none'}); choose train.estimator = 'trace'"
            " or 'iwae'"
        )
