"""Pictures of a run: sample grids (of one class, or a row per class, for a program that uses
labels), reconstructions beside originals, learning curves."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from pathlib import Path

import torch
from pyro import poutine

from pyrovae.components.base import OBSERVED, Program, generate, reconstruct

#: Images narrower than this are enlarged by an integer factor so a grid is legible.
MIN_SIDE = 28

__all__ = [
    "as_images",
    "legible_images",
    "save_grid",
    "sample",
    "sample_labels",
    "save_class_rows",
    "device_of",
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


def legible_images(x: torch.Tensor) -> torch.Tensor | None:
    """``as_images`` of ``x`` in [0, 1] on the CPU, small images (8x8 digits) enlarged."""
    images = as_images(x.detach().float().cpu().clamp(0, 1))
    if images is None:
        return None
    zoom = max(1, MIN_SIDE // images.shape[-1])
    if zoom > 1:
        images = torch.nn.functional.interpolate(images, scale_factor=zoom, mode="nearest")
    return images


def save_grid(x: torch.Tensor, path: str | Path, nrow: int = 8) -> bool:
    """Write ``x`` as a PNG grid; False (and nothing written) when ``x`` is not image-like."""
    from torchvision.utils import save_image

    images = legible_images(x)
    if images is None:
        return False
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


def sample(program: torch.nn.Module, n: int, label: int | None = None) -> torch.Tensor:
    """``n`` samples of ``program`` (its ``sample``, else its model run with ``x=None``); with
    ``label``, of that class: ``model(None, y=label * ones(n))`` of a program that uses labels."""
    if label is not None:
        return sample_labels(program, torch.full((n,), label, dtype=torch.long))
    return program.sample(n) if isinstance(program, Program) else generate(program.model, n)


@torch.no_grad()
def sample_labels(program: torch.nn.Module, y: torch.Tensor) -> torch.Tensor:
    """One sample per label of ``y`` (the likelihood's mean): ``(len(y), *x_shape)``."""
    y = y.to(device_of(program))
    trace = poutine.trace(program.model).get_trace(None, y=y)
    site = trace.nodes[OBSERVED]
    try:
        values = site["fn"].mean
    except NotImplementedError:
        values = site["value"]
    return values.reshape(len(y), *program.x_shape)


def save_class_rows(program: torch.nn.Module, path: str | Path, per_class: int = 10) -> bool:
    """A grid of ``per_class`` samples of every class of a program that uses labels, one row
    per class (``num_classes`` rows)."""
    classes = torch.arange(program.num_classes).repeat_interleave(per_class)
    return save_grid(sample_labels(program, classes), path, nrow=per_class)


def device_of(program: torch.nn.Module) -> torch.device:
    """The device of the program's first parameter or buffer (the CPU without any)."""
    tensor = next(itertools.chain(program.parameters(), program.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


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
