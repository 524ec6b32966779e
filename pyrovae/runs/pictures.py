"""Pictures of a run: sample grids, reconstructions beside originals, learning curves."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch

from pyrovae.components.base import Program, generate, reconstruct

#: Images narrower than this are enlarged by an integer factor so a grid is legible.
MIN_SIDE = 28

__all__ = [
    "as_images",
    "save_grid",
    "sample",
    "save_samples",
    "save_reconstructions",
    "save_learning_curves",
]


def as_images(x: torch.Tensor) -> torch.Tensor | None:
    """``(N, C, H, W)`` images from data of shape ``(N, *x_shape)``, or None if not image-like."""
    shape = x.shape[1:]
    if len(shape) == 3 and shape[0] in (1, 3):
        return x
    if len(shape) == 2:
        return x.unsqueeze(1)
    side = math.isqrt(shape.numel())
    if len(shape) == 1 and side * side == shape.numel():
        return x.reshape(len(x), 1, side, side)
    return None


def save_grid(x: torch.Tensor, path: str | Path, nrow: int = 8) -> bool:
    """Write ``x`` as a PNG grid; False (and nothing written) when ``x`` is not image-like."""
    from torchvision.utils import save_image

    images = as_images(x.detach().float().cpu().clamp(0, 1))
    if images is None:
        return False
    zoom = max(1, MIN_SIDE // images.shape[-1])  # small images (8x8 digits) are enlarged
    if zoom > 1:
        images = torch.nn.functional.interpolate(images, scale_factor=zoom, mode="nearest")
    save_image(images, str(path), nrow=nrow, padding=2, pad_value=0.5)
    return True


def save_samples(program: torch.nn.Module, path: str | Path, n: int = 64) -> bool:
    """A grid of ``n`` samples from the model (the likelihood's mean)."""
    return save_grid(sample(program, n), path, nrow=math.isqrt(n) or 1)


def save_reconstructions(
    program: torch.nn.Module, x: torch.Tensor, path: str | Path, y: torch.Tensor | None = None
) -> bool:
    """Rows of originals over their reconstructions, 8 pairs to a row (given the labels ``y``
    for a program that needs them, as the conditional VAE)."""
    x = x[:32]
    if y is not None:
        recon = program.reconstruct(x, y[:32])
    elif isinstance(program, Program):
        recon = program.reconstruct(x)
    else:
        recon = reconstruct(program.model, program.guide, x)
    rows = [t for i in range(0, len(x), 8) for t in (x[i : i + 8], recon[i : i + 8])]
    return save_grid(torch.cat(rows), path, nrow=8)


def sample(program: torch.nn.Module, n: int) -> torch.Tensor:
    """``n`` samples of ``program`` (its ``sample``, else its model run with ``x=None``)."""
    return program.sample(n) if isinstance(program, Program) else generate(program.model, n)


def save_learning_curves(metrics: Sequence[dict], path: str | Path) -> None:
    """Training and validation loss per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [m["epoch"] for m in metrics]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, [m["train_loss"] for m in metrics], label="train")
    ax.plot(epochs, [m["valid_loss"] for m in metrics], label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("negative ELBO per datapoint (nats)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
