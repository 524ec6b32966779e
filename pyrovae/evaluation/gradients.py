"""Signal-to-noise ratio of gradient estimators (Rainforth et al. 2018, "Tighter variational
bounds are not necessarily better").

For each estimator, ``draws`` independent gradients of the loss per datapoint on one fixed batch;
per parameter component SNR = ``|mean| / std`` over the draws, then averaged over the components of
the encoder (the parameters the guide uses) and of the decoder (those only the model uses), read
from the programs' ``pyro.param`` sites (``parameter_groups``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyro
import torch
from pyro import poutine
from pyro.infer import ELBO

from pyrovae.errors import ConfigError
from pyrovae.inference.estimators import check_estimator, differentiable_loss
from pyrovae.param_store import own_param_store
from pyrovae.registry import build

__all__ = [
    "GradientSNR",
    "parse_estimator",
    "parameter_groups",
    "gradient_snr",
    "format_table",
    "save_snr_plot",
]


@dataclass(frozen=True)
class GradientSNR:
    """Mean SNR over the components of each parameter group, for one estimator."""

    estimator: str
    encoder: float
    decoder: float
    draws: int


def parse_estimator(spec: str) -> tuple[str, dict]:
    """``NAME[:K][,KEY=VALUE...]`` -> (name, options): ``iwae:50``, ``renyi:10,alpha=0.5``."""
    head, *pairs = spec.split(",")
    name, _, particles = head.partition(":")
    options: dict = {}
    if particles:
        try:
            options["particles"] = int(particles)
        except ValueError:
            raise ConfigError(
                f"estimator {spec!r}: particles after ':' must be an integer (iwae:50)"
            ) from None
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(f"estimator {spec!r}: options are KEY=VALUE (renyi:10,alpha=0.5)")
        try:
            options[key.strip()] = float(value) if "." in value or "e" in value else int(value)
        except ValueError:
            options[key.strip()] = value
    return name, options


def parameter_groups(program: torch.nn.Module, x: torch.Tensor) -> dict[str, list[torch.Tensor]]:
    """The trainable parameters the guide uses (``encoder``) and those only the model uses
    (``decoder``), read from the ``pyro.param`` sites of one run of each on ``x``."""
    with own_param_store():
        guide_trace = poutine.trace(program.guide, param_only=True).get_trace(x)
        model_trace = poutine.trace(program.model, param_only=True).get_trace(x)
    guide = _params(guide_trace)
    guide_ids = {id(p) for p in guide}
    model = [p for p in _params(model_trace) if id(p) not in guide_ids]
    return {"encoder": guide, "decoder": model}


def _params(trace: poutine.Trace) -> list[torch.Tensor]:
    seen: dict[int, torch.Tensor] = {}
    for site in trace.nodes.values():
        if site["type"] == "param":
            value = site["value"]
            leaf = value.unconstrained() if hasattr(value, "unconstrained") else value
            if leaf.requires_grad:
                seen.setdefault(id(leaf), leaf)
    return list(seen.values())


def gradient_snr(
    program: torch.nn.Module, x: torch.Tensor, estimator: ELBO, draws: int = 100, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Per-component SNR ``|mean| / std`` of ``draws`` gradients, for each parameter group."""
    if draws < 2:
        raise ConfigError(f"draws must be >= 2 to estimate a standard deviation, got {draws}")
    groups = parameter_groups(program, x)
    params = [p for group in groups.values() for p in group]

    def loss_fn(batch: torch.Tensor) -> torch.Tensor:
        return differentiable_loss(estimator, program.model, program.guide, batch)

    total = torch.zeros(sum(p.numel() for p in params), dtype=torch.float64)
    squares = torch.zeros_like(total)
    pyro.set_rng_seed(seed)
    with pyro.validation_enabled(False):
        for _ in range(draws):
            loss = loss_fn(x) / len(x)
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            flat = torch.cat(
                [
                    (g if g is not None else torch.zeros_like(p)).reshape(-1)
                    for g, p in zip(grads, params, strict=True)
                ]
            ).double()
            total += flat.cpu()
            squares += flat.cpu() ** 2
    mean = total / draws
    std = ((squares - draws * mean**2).clamp(min=0) / (draws - 1)).sqrt()
    snr = mean.abs() / std
    out, start = {}, 0
    for name, group in groups.items():
        size = sum(p.numel() for p in group)
        part = snr[start : start + size]
        out[name] = part[std[start : start + size] > 0]  # constant components carry no signal
        start += size
    return out


def measure(
    program: torch.nn.Module,
    x: torch.Tensor,
    specs: Sequence[str],
    draws: int = 100,
    seed: int = 0,
) -> list[GradientSNR]:
    """The mean SNR of each estimator spec (``iwae:50``) on the batch ``x``."""
    rows = []
    for spec in specs:
        name, options = parse_estimator(spec)
        estimator = build(
            "estimator",
            name,
            options,
            f"estimator {spec!r}",
            max_plate_nesting=getattr(program, "max_plate_nesting", 1),
        )
        check_estimator(estimator, f"estimator {spec!r}")
        with own_param_store():
            snr = gradient_snr(program, x, estimator, draws, seed)
        rows.append(
            GradientSNR(
                spec,
                float(snr["encoder"].mean()) if snr["encoder"].numel() else math.nan,
                float(snr["decoder"].mean()) if snr["decoder"].numel() else math.nan,
                draws,
            )
        )
    return rows


def format_table(rows: Sequence[GradientSNR]) -> str:
    """A Markdown table of the mean SNR per estimator and parameter group."""
    lines = ["| estimator | encoder SNR | decoder SNR |", "|---|---|---|"]
    lines += [f"| `{r.estimator}` | {r.encoder:.4f} | {r.decoder:.4f} |" for r in rows]
    return "\n".join(lines)


def save_snr_plot(rows: Sequence[GradientSNR], path: str | Path) -> None:
    """SNR against K (log scale), one line per estimator name, encoder and decoder panels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines: dict[str, list[tuple[int, GradientSNR]]] = {}
    for row in rows:
        name, options = parse_estimator(row.estimator)
        lines.setdefault(name, []).append((int(options.get("particles", 1)), row))
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, group in zip(axes, ("encoder", "decoder"), strict=True):
        for name, points in lines.items():
            points.sort(key=lambda p: p[0])
            ks = [k for k, _ in points]
            ax.plot(ks, [getattr(r, group) for _, r in points], marker="o", label=name)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("particles K")
        ax.set_ylabel("mean SNR |mean| / std")
        ax.set_title(f"{group} parameters")
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
