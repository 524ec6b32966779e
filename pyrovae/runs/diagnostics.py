"""What a researcher must know about a trained run before reading its numbers: the latent
means, the KL per latent dimension, and two warnings, posterior collapse and not converged.

- **Posterior collapse** (``COLLAPSE``): fewer than ``COLLAPSE_FRACTION`` of the latent
  dimensions are active (Burda et al. 2015: Cov_x(E_q[z_j]) > ``ACTIVE_THRESHOLD``), or every
  dimension's KL(q(z_j|x) || p(z_j)) is below ``COLLAPSE_KL`` nats: the decoder ignores z.
- **Not converged** (``NOT_CONVERGED``): the validation loss (negative ELBO per datapoint)
  still falls by more than ``CONVERGENCE_THRESHOLD`` nats per epoch, the least-squares slope
  over the last ``CONVERGENCE_WINDOW`` epochs of ``metrics.jsonl``; or one epoch only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.distributions import Independent
from pyro.distributions.kl import kl_divergence
from pyro.poutine.util import prune_subsample_sites

from pyrovae.components.base import OBSERVED
from pyrovae.errors import ConfigError
from pyrovae.inference.log_weights import particle_traces, sample_sites
from pyrovae.inference.marginal_likelihood import DEFAULT_CHUNK_SIZE

__all__ = [
    "ACTIVE_THRESHOLD",
    "COLLAPSE",
    "COLLAPSE_FRACTION",
    "COLLAPSE_KL",
    "CONVERGENCE_THRESHOLD",
    "CONVERGENCE_WINDOW",
    "KL_PARTICLES",
    "NOT_CONVERGED",
    "active_units",
    "collapse_warning",
    "continuous_sites",
    "elementwise",
    "convergence_warning",
    "kl_per_dimension",
    "latent_means",
    "run_warnings",
    "warning_kinds",
]

#: Burda et al. (2015): a latent dimension is active when Cov_x(E_q[z]) exceeds this.
ACTIVE_THRESHOLD = 0.01
#: Posterior collapse: fewer than this fraction of the latent dimensions active (0 of 2..10).
COLLAPSE_FRACTION = 0.1
#: ... or every latent dimension's KL per datapoint below this many nats.
COLLAPSE_KL = 0.01
#: Not converged: the validation loss falls by more than this many nats per epoch ...
CONVERGENCE_THRESHOLD = 0.1
#: ... as the least-squares slope over this many last epochs.
CONVERGENCE_WINDOW = 5
#: Draws per datapoint of the Monte Carlo KL per dimension (where no closed form applies).
KL_PARTICLES = 16

#: The first words of each warning (``compare`` tables show them).
COLLAPSE = "posterior collapse"
NOT_CONVERGED = "not converged"


def active_units(posterior_mean: torch.Tensor, threshold: float = ACTIVE_THRESHOLD) -> int:
    """Latent dimensions whose posterior mean varies across data: Cov_x(E_q[z]) > threshold."""
    if len(posterior_mean) < 2:
        raise ConfigError("active units need at least 2 datapoints")
    return int((posterior_mean.double().var(dim=0) > threshold).sum())


def _label_kwargs(program: Any, y: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """``{"y": y}`` for a program that takes labels, else nothing."""
    return {"y": y} if y is not None and getattr(program, "uses_labels", False) else {}


@torch.no_grad()
def latent_means(
    program: Any, x: torch.Tensor, y: torch.Tensor | None = None, batch_size: int = 1000
) -> torch.Tensor:
    """``(N, d)``: the program's ``latent_mean(x[, y])`` where it has one (labels ``y`` go to a
    program that uses them), else the guide's mean of its continuous latent sites, flattened
    and concatenated."""
    parts = []
    for start in range(0, len(x), batch_size):
        block = x[start : start + batch_size]
        labels = None if y is None else y[start : start + batch_size]
        kwargs = _label_kwargs(program, labels)
        if callable(getattr(program, "latent_mean", None)):
            mean = program.latent_mean(block, **kwargs)
        else:
            trace = poutine.trace(program.guide).get_trace(block, **kwargs)
            mean = torch.cat(
                [_site_mean(site).reshape(len(block), -1) for site in continuous_sites(trace)],
                dim=1,
            )
        parts.append(mean.reshape(len(block), -1))
    return torch.cat(parts)


def _site_mean(site: dict) -> torch.Tensor:
    try:
        return site["fn"].mean.expand_as(site["value"])
    except NotImplementedError:
        return site["value"]


def continuous_sites(trace: poutine.Trace) -> list[dict]:
    """The latent sites of ``trace`` with a continuous support (not M2's label, nor the data
    site ``OBSERVED`` of a model run to generate)."""
    sites = sample_sites(prune_subsample_sites(trace), observed=False)
    return [s for s in sites if not s["fn"].support.is_discrete and s["name"] != OBSERVED]


def elementwise(fn: Any) -> Any | None:
    """The univariate distribution ``fn`` is a product of (unwrapping ``Independent``), or None
    when ``fn`` does not factorize over its dimensions (a flow, a mixture, a full covariance)."""
    while isinstance(fn, Independent):
        fn = fn.base_dist
    return fn if fn.event_shape == () else None


@torch.no_grad()
def kl_per_dimension(
    program: Any,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    particles: int = KL_PARTICLES,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> tuple[float, ...] | None:
    """The mean over ``x`` of KL(q(z_j|x) || p(z_j)) for each dimension j of the continuous
    latent sites, concatenated in site order; None where a site's q or p does not factorize
    over its dimensions.

    Closed form (``kl_divergence`` of the univariate factors) where the program allows an
    analytic KL (``analytic_kl``, its latent sites independent in the model) and it is
    registered; else the mean of log q(z_j|x) - log p(z_j|...) over ``particles`` draws, whose
    sum over j is the Monte Carlo KL of the whole latent.
    """
    blocks = []
    analytic = bool(getattr(program, "analytic_kl", False))
    per_block = max(1, min(len(x), chunk_size // particles))
    for start in range(0, len(x), per_block):
        block = x[start : start + per_block]
        labels = None if y is None else y[start : start + per_block]
        kl = _block_kl(program, block, labels, particles, analytic)
        if kl is None:
            return None
        blocks.append(kl)
    total = torch.cat(blocks).double().mean(0)
    return tuple(float(v) for v in total)


def _block_kl(
    program: Any, x: torch.Tensor, y: torch.Tensor | None, particles: int, analytic: bool
) -> torch.Tensor | None:
    """``(N, d)`` KL per datapoint and dimension, or None (see ``kl_per_dimension``)."""
    draws = 1 if analytic else particles
    with pyro.validation_enabled(False):
        model_trace, guide_trace = particle_traces(
            program.model,
            program.guide,
            x,
            particles=draws,
            max_plate_nesting=getattr(program, "max_plate_nesting", 1),
            **_label_kwargs(program, y),
        )
    n, columns = len(x), []
    for site in continuous_sites(guide_trace):
        q = elementwise(site["fn"])
        p = elementwise(model_trace.nodes[site["name"]]["fn"])
        if q is None or p is None:
            return None
        value = site["value"]
        kl = None
        if analytic:
            try:
                kl = kl_divergence(q, p).expand(value.shape)
            except NotImplementedError:
                kl = None
        if kl is None:
            if analytic:  # one draw is too few for the Monte Carlo estimate: draw again
                return _block_kl(program, x, y, particles, analytic=False)
            kl = q.log_prob(value) - p.log_prob(value)
        if kl.dim() < 2 or kl.shape[1] != n:
            return None  # the data plate is not next to the particles: no per-datapoint split
        columns.append(kl.reshape(kl.shape[0], n, -1).double().mean(0))
    return torch.cat(columns, dim=1) if columns else None


def collapse_warning(
    active: int, latent_dim: int, kl_per_dim: Sequence[float] | None = None
) -> str | None:
    """The posterior-collapse warning, or None (see the module docstring)."""
    few_active = latent_dim > 0 and active < COLLAPSE_FRACTION * latent_dim
    no_kl = bool(kl_per_dim) and max(kl_per_dim) < COLLAPSE_KL
    if not (few_active or no_kl):
        return None
    text = f"{COLLAPSE}: {active} of {latent_dim} latent dimensions active"
    if kl_per_dim:
        used = sum(v >= COLLAPSE_KL for v in kl_per_dim)
        text += f", {used} with KL >= {COLLAPSE_KL} nats (largest {max(kl_per_dim):.3g})"
    return text + "; the decoder ignores z (try a KL warm-up or a weaker decoder)"


def convergence_warning(
    metrics: Sequence[dict],
    threshold: float = CONVERGENCE_THRESHOLD,
    window: int = CONVERGENCE_WINDOW,
) -> str | None:
    """The not-converged warning from a run's metrics records, or None (see the module
    docstring); no records, no warning."""
    losses = [
        (m["epoch"], m["valid_loss"])
        for m in metrics
        if isinstance(m.get("valid_loss"), int | float) and math.isfinite(m["valid_loss"])
    ]
    if not losses:
        return None
    if len(losses) == 1:
        return f"{NOT_CONVERGED}: 1 epoch trained, too few to see the validation loss level off"
    epochs, values = np.array(losses[-max(2, window) :], dtype=float).T
    slope = float(np.polyfit(epochs, values, 1)[0])
    if -slope <= threshold:
        return None
    return (
        f"{NOT_CONVERGED}: the validation loss still falls by {-slope:.3g} nats per epoch over"
        f" the last {len(epochs)} epochs (threshold {threshold:g}); train longer"
    )


def warning_kinds(warnings: Sequence[str]) -> list[str]:
    """The kind of each warning: its words before the first colon."""
    return [w.split(":", 1)[0] for w in warnings]


def run_warnings(
    program: Any,
    x: torch.Tensor,
    metrics: Sequence[dict],
    y: torch.Tensor | None = None,
) -> list[str]:
    """The warnings of a run: collapse judged on the datapoints ``x`` (the end of training
    uses the validation split), not converged judged on ``metrics``."""
    means = latent_means(program, x, y)
    kl = kl_per_dimension(program, x, y)
    active = active_units(means) if len(x) > 1 else 0
    found = [collapse_warning(active, means.shape[1], kl), convergence_warning(metrics)]
    return [w for w in found if w is not None]
