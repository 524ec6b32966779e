"""What the speed benchmarks share: timed epochs of a hand-written step on the same images and
in the same order pyrovae's loop draws them, pyrovae's own epoch times, and a small image file.

Run the benchmarks from the repository root (``python benchmarks/NAME.py``): this folder is
then on the path.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

import pyrovae
from pyrovae.components.datasets import load_splits

__all__ = [
    "interleaved",
    "timed_epochs",
    "pyrovae_epochs",
    "write_images",
    "file_overrides",
    "use_cpu_clock",
    "add_timing_options",
    "parse_timing_args",
    "binarize",
    "VALIDATION_IMAGES",
]

#: Images of the file dataset held out for validation.
VALIDATION_IMAGES = 1000


#: What the epochs are timed with: wall-clock seconds unless ``use_cpu_clock`` was called.
_clock = time.perf_counter


def use_cpu_clock() -> None:
    """Time the reference's epochs and pyrovae's (its ``epoch_seconds``) in CPU seconds of this
    process (``time.process_time``) instead of wall-clock seconds: on a machine shared with other
    jobs, the work done rather than the share of the cores the process got. With one thread the
    two agree on an idle machine; with several, CPU seconds add up the threads."""
    global _clock
    import types

    from pyrovae.training import loop

    _clock = time.process_time
    loop.time = types.SimpleNamespace(perf_counter=time.process_time)


def add_timing_options(parser: argparse.ArgumentParser, lean: bool = False) -> None:
    """``--cpu-clock`` (and, with ``lean``, ``--lean``): the options every timing script has."""
    parser.add_argument(
        "--cpu-clock", action="store_true", help="time in CPU seconds (a loaded machine)"
    )
    if lean:
        parser.add_argument(
            "--lean",
            action="store_true",
            help="give the reference pyrovae's binarization and fused Adam too",
        )


def parse_timing_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse the command line, switching to the CPU clock when ``--cpu-clock`` asks for it."""
    args = parser.parse_args()
    if args.cpu_clock:
        use_cpu_clock()
    return args


def binarize(train: torch.Tensor, generator: torch.Generator, lean: bool) -> torch.Tensor:
    """One epoch's Bernoulli draw: ``torch.bernoulli``, or with ``lean`` pyrovae's own way (a
    uniform draw compared in place with the intensities: ``Splits.training_epoch``)."""
    if not lean:
        return torch.bernoulli(train, generator=generator)
    draw = torch.rand(train.shape, generator=generator, dtype=train.dtype, device=train.device)
    return torch.lt(draw, train, out=draw)


def interleaved(
    repeats: int,
    names: list[str],
    run: Callable[[str, int], object],
    report: Callable[[str, int, float, object], None] | None = None,
) -> dict[str, list[float]]:
    """Seconds of ``run(name, repeat)`` for every name in each of ``repeats`` rounds, on the
    timing clock (``use_cpu_clock``); the order reverses every other round, so that no name
    always runs first. ``report(name, repeat, seconds, result)`` follows each run."""
    times: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(repeats):
        for name in names if repeat % 2 == 0 else names[::-1]:
            started = _clock()
            result = run(name, repeat)
            times[name].append(_clock() - started)
            if report is not None:
                report(name, repeat, times[name][-1], result)
    return times


def timed_epochs(
    train: torch.Tensor,
    epochs: int,
    batch_size: int,
    seed: int,
    step: Callable[[torch.Tensor], torch.Tensor],
    lean: bool = False,
) -> tuple[list[float], list[float]]:
    """Seconds and mean ``step`` loss of each epoch: a fresh Bernoulli draw of ``train``
    (``binarize``), a random order, ``step(batch)`` on each batch (it returns the batch's mean
    loss)."""
    generator = torch.Generator(device=train.device).manual_seed(seed)
    times, losses = [], []
    for _ in range(epochs):
        started = _clock()
        x_epoch = binarize(train, generator, lean)
        order = torch.randperm(len(train), generator=generator, device=train.device)
        total = torch.zeros((), device=train.device)
        for indices in order.split(batch_size):
            total += step(x_epoch[indices]) * len(indices)
        if train.is_cuda:
            torch.cuda.synchronize()
        times.append(_clock() - started)
        losses.append(float(total) / len(train))
    return times, losses


def pyrovae_epochs(config: pyrovae.Config) -> tuple[list[float], list[float]]:
    """Epoch times and mean training losses of ``pyrovae.train`` (its own metrics)."""
    with tempfile.TemporaryDirectory() as out:
        run = pyrovae.train(config, out=out, quiet=True, overwrite=True)
    return [m["epoch_seconds"] for m in run.metrics], [m["train_loss"] for m in run.metrics]


def write_images(config: pyrovae.Config, limit: int, path: Path) -> None:
    """The first ``limit`` training images of ``config``'s data (and 1000 test images)."""
    splits = load_splits(config.data, torch.device("cpu"))
    torch.save({"train": splits.train[:limit].clone(), "test": splits.test[:1000].clone()}, path)


def file_overrides(images: Path, epochs: int, device: str) -> list[str]:
    """Config overrides that train on the image file ``write_images`` wrote, with ``trace``."""
    return [
        'data.name="file"',
        f"data.path={str(images)!r}".replace("'", '"'),
        f"data.validation_size={VALIDATION_IMAGES}",
        f"train.epochs={epochs}",
        f"train.device={device!r}".replace("'", '"'),
        'train.estimator={name="trace", particles=1}',
    ]
