"""The standard bound on one scale: the negative ELBO per datapoint at weight beta = 1, whatever
estimator trained the program (the validation loss of every run)."""

from __future__ import annotations

import pyro
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

__all__ = ["negative_elbo"]


@torch.no_grad()
def negative_elbo(
    program: torch.nn.Module, x: torch.Tensor, batch_size: int = 1000, particles: int = 1
) -> float:
    """The negative ELBO per datapoint in nats, at weight beta = 1: with the analytic KL where
    registered if the program allows it (``Program.analytic_kl``), else Monte Carlo.

    The same bound whatever estimator trained the model, so runs compare on one scale.
    """
    elbo_class = TraceMeanField_ELBO if getattr(program, "analytic_kl", False) else Trace_ELBO
    elbo = elbo_class(
        num_particles=particles,
        vectorize_particles=particles > 1,
        max_plate_nesting=getattr(program, "max_plate_nesting", 1),
    )
    total = 0.0
    with pyro.validation_enabled(False):
        for chunk in x.split(batch_size):
            total += float(elbo.differentiable_loss(program.model, program.guide, chunk))
    return total / len(x)
