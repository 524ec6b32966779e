"""The standard bound on one scale: the negative ELBO per datapoint at weight beta = 1, whatever
estimator trained the program (the validation loss of every run)."""

from __future__ import annotations

import pyro
import torch
from pyro.infer import Trace_ELBO, TraceEnum_ELBO, TraceMeanField_ELBO

__all__ = ["negative_elbo"]


@torch.no_grad()
def negative_elbo(
    program: torch.nn.Module,
    x: torch.Tensor,
    batch_size: int = 1000,
    particles: int = 1,
    y: torch.Tensor | None = None,
) -> float:
    """The negative ELBO per datapoint in nats, at weight beta = 1: with the analytic KL where
    registered if the program allows it (``Program.analytic_kl``), with the discrete sites its
    guide marks for enumeration summed out exactly (``Program.enumerates``: M2's bound U(x)
    with the label unobserved), else Monte Carlo. ``y``: labels passed to the program with x.

    The same bound whatever estimator trained the model, so runs compare on one scale.
    """
    if getattr(program, "enumerates", False):
        elbo_class = TraceEnum_ELBO
    elif getattr(program, "analytic_kl", False):
        elbo_class = TraceMeanField_ELBO
    else:
        elbo_class = Trace_ELBO
    elbo = elbo_class(
        num_particles=particles,
        vectorize_particles=particles > 1,
        max_plate_nesting=getattr(program, "max_plate_nesting", 1),
    )
    total = 0.0
    labels = [None] * len(x.split(batch_size)) if y is None else y.split(batch_size)
    with pyro.validation_enabled(False):
        for chunk, known in zip(x.split(batch_size), labels, strict=True):
            extra = () if known is None else (known,)
            # TraceEnum_ELBO's differentiable_loss refuses a loss without gradient: its loss.
            score = elbo.loss if isinstance(elbo, TraceEnum_ELBO) else elbo.differentiable_loss
            total += float(score(program.model, program.guide, chunk, *extra))
    return total / len(x)
