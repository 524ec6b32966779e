"""ELBO estimators, registered by name: each returns a configured Pyro ``ELBO``.

Particles are vectorized over a plate left of the data plate, so ``particles = K`` costs one
batched pass through the networks, not K.
"""

from __future__ import annotations

from pyro.infer import ELBO, Trace_ELBO, TraceMeanField_ELBO

from .registry import register

__all__ = ["trace", "meanfield"]


def _particles_kwargs(particles: int) -> dict:
    if particles < 1:
        from .errors import ConfigError

        raise ConfigError(f"estimator: particles must be >= 1, got {particles}")
    return {
        "num_particles": particles,
        "vectorize_particles": particles > 1,
        "max_plate_nesting": 1,
    }


@register("estimator", "trace")
def trace(particles: int = 1) -> ELBO:
    """``Trace_ELBO``: the Monte Carlo ELBO, log p(x, z) - log q(z|x) at reparameterized draws."""
    return Trace_ELBO(**_particles_kwargs(particles))


@register("estimator", "meanfield")
def meanfield(particles: int = 1) -> ELBO:
    """``TraceMeanField_ELBO``: the analytic KL(q || p) where one is registered, else Monte Carlo.

    Assumes the latent sites are not dependent on each other in the model (true of a one-site
    VAE).
    """
    return TraceMeanField_ELBO(**_particles_kwargs(particles))
