"""The KL weight (beta, warm-up) as a Pyro effect handler, not as state on the model.

``weight_latents(fn, beta)`` runs ``fn`` (a model or a guide) with every latent sample site's
log-density scaled by ``beta``; the observed sites keep weight one. Applied to both programs,
every ELBO estimator then sees beta * KL(q || p) beside the reconstruction term, for any number
of latent sites. ``beta = 0`` masks the latent terms out (``poutine.scale`` refuses 0).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from pyro.poutine.messenger import Messenger

__all__ = ["LatentWeightMessenger", "weight_latents"]

F = TypeVar("F", bound=Callable)


class LatentWeightMessenger(Messenger):
    """Scale (or, at 0, mask) the log-density of every latent sample site by ``weight``."""

    def __init__(self, weight: float) -> None:
        if weight < 0:
            raise ValueError(f"a latent weight must be >= 0, got {weight}")
        super().__init__()
        self.weight = float(weight)

    def _process_message(self, msg: dict) -> None:
        if msg["type"] != "sample" or msg["is_observed"]:
            return
        if self.weight == 0:
            msg["mask"] = False if msg["mask"] is None else msg["mask"] & False
        else:
            msg["scale"] = self.weight * msg["scale"]


def weight_latents(fn: F, weight: float) -> F:
    """``fn`` with its latent sites weighted by ``weight``; ``fn`` itself when it is 1."""
    return fn if weight == 1 else LatentWeightMessenger(weight)(fn)
