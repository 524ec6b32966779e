"""Evaluation of a trained VAE on held-out data: the ELBO (reconstruction and KL), the
importance-sampled log-likelihood with its standard error, and the active units.

``pyrovae.evaluate(run_dir)`` and ``pyrovae evaluate RUN_DIR`` score the test split, per
datapoint in nats, at weight beta = 1 whatever the training objective was.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import pyro
import torch

from pyrovae.components.programs import check_program
from pyrovae.errors import ConfigError
from pyrovae.inference.marginal_likelihood import DEFAULT_CHUNK_SIZE, importance_estimate
from pyrovae.param_store import own_param_store

__all__ = [
    "Evaluation",
    "evaluate",
    "evaluate_model",
    "active_units",
    "ACTIVE_THRESHOLD",
]

#: The command line's bounds of ``--particles`` and ``--chunk-size``.
PARTICLE_LIMIT = 10**7
CHUNK_LIMIT = 10**9

#: Burda et al. (2015): a latent dimension is active when Cov_x(E_q[z]) exceeds this.
ACTIVE_THRESHOLD = 0.01


@dataclass(frozen=True)
class Evaluation:
    """Per-datapoint means in nats over ``datapoints`` test points, with standard errors."""

    elbo: float
    elbo_stderr: float
    log_likelihood: float
    log_likelihood_stderr: float
    particles: int
    reconstruction: float
    kl: float
    kl_analytic: bool
    active_units: int
    latent_dim: int
    datapoints: int
    seconds: float
    #: log p(x) estimate of each datapoint, in order (not in ``to_dict``): for paired comparisons.
    log_likelihoods: tuple[float, ...] = field(default=(), repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The summary numbers (every field but ``log_likelihoods``)."""
        return {k: v for k, v in asdict(self).items() if k != "log_likelihoods"}

    def summary(self) -> str:
        return "\n".join(
            [
                f"test datapoints        {self.datapoints}",
                f"ELBO                   {self.elbo:.3f} +- {self.elbo_stderr:.3f} nats",
                f"  reconstruction       {self.reconstruction:.3f}",
                f"  KL ({'analytic' if self.kl_analytic else 'Monte Carlo'})"
                f"{' ' * (8 if self.kl_analytic else 5)}{self.kl:.3f}",
                f"log p(x), K={self.particles:<10} {self.log_likelihood:.3f} +-"
                f" {self.log_likelihood_stderr:.3f} nats",
                f"active units           {self.active_units} of {self.latent_dim}",
                f"seconds                {self.seconds:.1f}",
            ]
        )


def active_units(posterior_mean: torch.Tensor, threshold: float = ACTIVE_THRESHOLD) -> int:
    """Latent dimensions whose posterior mean varies across data: Cov_x(E_q[z]) > threshold."""
    if len(posterior_mean) < 2:
        raise ConfigError("active units need at least 2 datapoints")
    return int((posterior_mean.double().var(dim=0) > threshold).sum())


def evaluate_model(
    program: torch.nn.Module,
    x: torch.Tensor,
    particles: int = 5000,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    seed: int = 0,
    progress: bool = False,
) -> Evaluation:
    """Evaluate ``program`` on the datapoints ``x`` (already on the program's device)."""
    check_program(program, "evaluate")
    started = time.perf_counter()
    pyro.set_rng_seed(seed)
    was_training = program.training
    program.eval()
    try:
        with own_param_store():
            estimate = importance_estimate(
                program.model,
                program.guide,
                x,
                particles,
                chunk_size,
                max_plate_nesting=getattr(program, "max_plate_nesting", 1),
                progress=progress,
                analytic_kl=getattr(program, "analytic_kl", False),
            )
    finally:
        program.train(was_training)
    n = len(x)

    def mean_and_stderr(values: torch.Tensor) -> tuple[float, float]:
        stderr = float(values.std()) / math.sqrt(n) if n > 1 else math.nan
        return float(values.mean()), stderr

    elbo, elbo_se = mean_and_stderr(estimate.elbo)
    log_likelihood, log_likelihood_se = mean_and_stderr(estimate.log_likelihood)
    return Evaluation(
        elbo=elbo,
        elbo_stderr=elbo_se,
        log_likelihood=log_likelihood,
        log_likelihood_stderr=log_likelihood_se,
        particles=particles,
        reconstruction=float(estimate.reconstruction.mean()),
        kl=float(estimate.kl.mean()),
        kl_analytic=estimate.analytic_kl,
        active_units=active_units(estimate.posterior_mean) if n > 1 else 0,
        latent_dim=estimate.posterior_mean.shape[1],
        datapoints=n,
        seconds=time.perf_counter() - started,
        log_likelihoods=tuple(estimate.log_likelihood.tolist()),
    )


def evaluate(
    run: str | Path | torch.nn.Module,
    x: torch.Tensor | None = None,
    particles: int = 5000,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    limit: int | None = None,
    seed: int = 0,
    device: str = "cpu",
    data_root: str | None = None,
    progress: bool = False,
    checkpoint: str = "best",
) -> Evaluation:
    """Evaluate a run directory on its test split (``load_splits(config.data).test``), or a
    program (a ``Program``, or any module with ``model`` and ``guide``) on the datapoints
    ``x``; ``limit`` keeps the first N datapoints. A run directory's ``checkpoint`` is
    ``"best"`` (``best.pt``, the lowest validation loss) or ``"last"`` (``checkpoint.pt``)."""
    if isinstance(run, torch.nn.Module):
        check_program(run, "evaluate")
        if not torch.is_tensor(x):
            raise ConfigError(
                "evaluate: pass the datapoints as a tensor x with a model (or a run directory)"
            )
        program = run
    elif not isinstance(run, str | Path):
        raise ConfigError(
            f"evaluate: expected a run directory or a program, got {type(run).__name__}"
        )
    else:
        from pyrovae.components.datasets import load_splits
        from pyrovae.runs.directory import check_data_shape, load_run, resolve_device

        target = resolve_device(device)
        config, program, payload = load_run(run, device=target, checkpoint=checkpoint)
        if x is None:
            data = config.data if data_root is None else replace(config.data, root=data_root)
            x = load_splits(data, target).test
        check_data_shape(x, payload, run)
    if limit is not None:
        if limit < 1:
            raise ConfigError(f"--limit must be >= 1, got {limit}")
        x = x[:limit]
    return evaluate_model(program, x, particles, chunk_size, seed, progress)
