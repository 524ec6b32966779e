"""Evaluation of a trained VAE on held-out data: the ELBO (reconstruction and KL), the
importance-sampled log-likelihood with its standard error, the active units and KL per latent
dimension, the accuracy of a classifier q(y|x), and the warnings of ``runs.diagnostics``
(posterior collapse; not converged, for a run directory).

``pyrovae.evaluate(run_dir)`` and ``pyrovae evaluate RUN_DIR`` score the test split, per
datapoint in nats, at weight beta = 1 whatever the training objective was.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import pyro
import torch

from pyrovae.components.programs import check_program
from pyrovae.errors import ConfigError
from pyrovae.inference.marginal_likelihood import DEFAULT_CHUNK_SIZE, importance_estimate
from pyrovae.param_store import own_param_store
from pyrovae.runs.diagnostics import (
    ACTIVE_THRESHOLD,
    COLLAPSE_KL,
    active_units,
    collapse_warning,
    convergence_warning,
    kl_per_dimension,
)

__all__ = [
    "Evaluation",
    "evaluate",
    "evaluate_model",
    "accuracy",
    "active_units",
    "ACTIVE_THRESHOLD",
]

#: The command line's bounds of ``--particles`` and ``--chunk-size``.
PARTICLE_LIMIT = 10**7
CHUNK_LIMIT = 10**9


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
    #: Test accuracy of the program's classifier q(y|x); None without a classifier or labels.
    accuracy: float | None = None
    #: KL(q(z_j|x) || p(z_j)) per latent dimension, mean over datapoints; None where q or p
    #: does not factorize over dimensions (``runs.diagnostics.kl_per_dimension``).
    kl_per_dim: tuple[float, ...] | None = None
    #: Posterior collapse, not converged: ``runs.diagnostics``.
    warnings: tuple[str, ...] = ()

    def __post_init__(self) -> None:  # lists from JSON become tuples
        object.__setattr__(self, "log_likelihoods", tuple(self.log_likelihoods))
        object.__setattr__(self, "warnings", tuple(self.warnings))
        if self.kl_per_dim is not None:
            object.__setattr__(self, "kl_per_dim", tuple(self.kl_per_dim))

    def to_dict(self) -> dict[str, Any]:
        """The summary numbers (every field but ``log_likelihoods``), JSON-ready."""
        return {
            k: list(v) if isinstance(v, tuple) else v
            for k, v in asdict(self).items()
            if k != "log_likelihoods"
        }

    def summary(self) -> str:
        kl = self.kl_per_dim
        lines = [
            f"test datapoints        {self.datapoints}",
            f"ELBO                   {self.elbo:.3f} +- {self.elbo_stderr:.3f} nats",
            f"  reconstruction       {self.reconstruction:.3f}",
            f"  KL ({'analytic' if self.kl_analytic else 'Monte Carlo'})"
            f"{' ' * (8 if self.kl_analytic else 5)}{self.kl:.3f}",
            f"log p(x), K={self.particles:<10} {self.log_likelihood:.3f} +-"
            f" {self.log_likelihood_stderr:.3f} nats",
            f"active units           {self.active_units} of {self.latent_dim}",
        ]
        if kl:
            used = sum(v >= COLLAPSE_KL for v in kl)
            lines.append(
                f"KL per dimension       {used} of {len(kl)} >= {COLLAPSE_KL} nats, largest"
                f" {max(kl):.3f}, smallest {min(kl):.3f}"
            )
        if self.accuracy is not None:
            lines.append(f"accuracy of q(y|x)     {self.accuracy:.4f}")
        lines.append(f"seconds                {self.seconds:.1f}")
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


@torch.no_grad()
def accuracy(
    program: torch.nn.Module, x: torch.Tensor, y: torch.Tensor | None, batch_size: int = 1000
) -> float | None:
    """The fraction of ``x`` whose most probable class under the program's classifier
    ``classify(x) -> logits`` is the label ``y``; None without a classifier or labels."""
    classify = getattr(program, "classify", None)
    if not callable(classify) or y is None:
        return None
    if len(y) != len(x):
        raise ConfigError(f"accuracy: {len(x)} datapoints but {len(y)} labels")
    was_training = program.training
    program.eval()
    try:
        correct = sum(
            int((classify(x[i : i + batch_size]).argmax(-1) == y[i : i + batch_size]).sum())
            for i in range(0, len(x), batch_size)
        )
    finally:
        program.train(was_training)
    return correct / len(x)


def evaluate_model(
    program: torch.nn.Module,
    x: torch.Tensor,
    particles: int = 5000,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    seed: int = 0,
    progress: bool = False,
    y: torch.Tensor | None = None,
    metrics: Sequence[dict] | None = None,
) -> Evaluation:
    """Evaluate ``program`` on the datapoints ``x`` (already on the program's device), with
    their labels ``y`` if known (for the accuracy of a classifier, and for a program that
    uses labels) and the run's ``metrics`` records if any (for the not-converged warning)."""
    check_program(program, "evaluate")
    started = time.perf_counter()
    pyro.set_rng_seed(seed)
    # log p(x|y) of a program that scores x given its labels (the conditional VAE)
    labels = {"y": y} if getattr(program, "labels_required", False) else {}
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
                **labels,
            )
            kl_per_dim = kl_per_dimension(program, x, y, chunk_size=chunk_size)
            correct = accuracy(program, x, y)
    finally:
        program.train(was_training)
    n = len(x)

    def mean_and_stderr(values: torch.Tensor) -> tuple[float, float]:
        stderr = float(values.std()) / math.sqrt(n) if n > 1 else math.nan
        return float(values.mean()), stderr

    elbo, elbo_se = mean_and_stderr(estimate.elbo)
    log_likelihood, log_likelihood_se = mean_and_stderr(estimate.log_likelihood)
    active = active_units(estimate.posterior_mean) if n > 1 else 0
    latent_dim = estimate.posterior_mean.shape[1]
    warnings = [collapse_warning(active, latent_dim, kl_per_dim)]
    warnings.append(convergence_warning(metrics) if metrics is not None else None)
    return Evaluation(
        elbo=elbo,
        elbo_stderr=elbo_se,
        log_likelihood=log_likelihood,
        log_likelihood_stderr=log_likelihood_se,
        particles=particles,
        reconstruction=float(estimate.reconstruction.mean()),
        kl=float(estimate.kl.mean()),
        kl_analytic=estimate.analytic_kl,
        active_units=active,
        latent_dim=latent_dim,
        datapoints=n,
        seconds=time.perf_counter() - started,
        log_likelihoods=tuple(estimate.log_likelihood.tolist()),
        accuracy=correct,
        kl_per_dim=kl_per_dim,
        warnings=tuple(w for w in warnings if w is not None),
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
    y: torch.Tensor | None = None,
) -> Evaluation:
    """Evaluate a run directory on its test split (``load_splits(config.data).test``, with its
    labels where the dataset has them, and the run's metrics), or a program (a ``Program``, or
    any module with ``model`` and ``guide``) on the datapoints ``x`` with their labels ``y``
    if given; ``limit`` keeps the first N datapoints. A run directory's ``checkpoint`` is
    ``"best"`` (``best.pt``, the lowest validation loss) or ``"last"`` (``checkpoint.pt``)."""
    metrics = None
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
        from pyrovae.runs.directory import check_data_shape, load_run, read_metrics, resolve_device

        target = resolve_device(device)
        config, program, payload = load_run(run, device=target, checkpoint=checkpoint)
        metrics = read_metrics(run)
        if x is None:
            data = config.data if data_root is None else replace(config.data, root=data_root)
            splits = load_splits(data, target)
            x, y = splits.test, getattr(splits, "test_labels", None)
        check_data_shape(x, payload, run)
    if limit is not None:
        if limit < 1:
            raise ConfigError(f"--limit must be >= 1, got {limit}")
        x = x[:limit]
        y = None if y is None else y[:limit]
    return evaluate_model(program, x, particles, chunk_size, seed, progress, y, metrics)
