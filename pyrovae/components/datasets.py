"""Datasets as tensors on the training device, splits, binarization and index-slice batches.

A dataset is a registered function ``(DataConfig) -> Dataset`` returning float tensors of shape
``(N, *x_shape)`` for its train and test splits. ``load_splits`` then holds a validation split out
of the training data, binarizes the validation and test splits once with a fixed seed (for
``binarize = "dynamic"``) and moves everything to the device; ``check_likelihood`` refuses data
the likelihood cannot score. Training batches are slices of a per-epoch permutation: no
per-item loader.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pyrovae.components.base import Likelihood
from pyrovae.config import DataConfig
from pyrovae.errors import DataError
from pyrovae.registry import lookup, register

__all__ = [
    "Dataset",
    "Splits",
    "data_root",
    "load_splits",
    "check_likelihood",
    "batch_slices",
    "EVAL_BINARIZE_SEED",
]

#: Seed of the one-off binarization of the validation and test splits, shared by every run.
EVAL_BINARIZE_SEED = 20151101

#: Seconds a download may wait on the network before it counts as failed.
DOWNLOAD_TIMEOUT = 20.0


@dataclass(frozen=True)
class Dataset:
    """A dataset's train and test splits: float tensors of shape ``(N, *x_shape)``."""

    train: torch.Tensor
    test: torch.Tensor


@dataclass(frozen=True)
class Splits:
    """Train, validation and test tensors on the device, ready for training and evaluation."""

    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    dynamic_binarization: bool

    @property
    def x_shape(self) -> tuple[int, ...]:
        return tuple(self.train.shape[1:])

    def training_epoch(self, generator: torch.Generator) -> torch.Tensor:
        """The training data for one epoch: a fresh Bernoulli draw under dynamic binarization."""
        if self.dynamic_binarization:
            return torch.bernoulli(self.train, generator=generator)
        return self.train


def batch_slices(
    n: int, batch_size: int, generator: torch.Generator, device: torch.device
) -> Iterator[torch.Tensor]:
    """Index tensors of a random permutation of ``range(n)``, ``batch_size`` at a time."""
    order = torch.randperm(n, generator=generator, device=device)
    yield from order.split(batch_size)


def data_root(config: DataConfig) -> Path:
    """The folder datasets are read from: ``data.root``, else $PYROVAE_DATA_DIR, else ./data."""
    return Path(config.root or os.environ.get("PYROVAE_DATA_DIR") or "data")


def load_splits(config: DataConfig, device: torch.device) -> Splits:
    """Load, check, split, binarize and move the dataset named in ``config``."""
    dataset = lookup("dataset", config.name, "data.name")(config)
    train, test = _as_float(dataset.train, "train"), _as_float(dataset.test, "test")
    if train.shape[1:] != test.shape[1:]:
        raise DataError(
            "data: train and test shapes differ:"
            f" {tuple(train.shape[1:])} vs {tuple(test.shape[1:])}"
        )
    n_valid = _validation_count(config.validation_size, len(train))
    train, valid = train[:-n_valid], train[-n_valid:]
    dynamic = config.binarize == "dynamic"
    if dynamic:
        for x in (train, valid, test):  # valid too: it is split off train above
            if x.min() < 0 or x.max() > 1:
                raise DataError(
                    "data.binarize: 'dynamic' needs values in [0, 1] but the data spans"
                    f" [{float(x.min()):.4g}, {float(x.max()):.4g}]; rescale it or set"
                    " data.binarize = 'none'"
                )
        generator = torch.Generator().manual_seed(EVAL_BINARIZE_SEED)
        valid = torch.bernoulli(valid, generator=generator)
        test = torch.bernoulli(test, generator=generator)
    return Splits(train.to(device), valid.to(device), test.to(device), dynamic)


def check_likelihood(splits: Splits, likelihood: Likelihood) -> None:
    """Refuse data the likelihood cannot score: out of its range, or grey levels where it
    needs binary values and no binarization is applied."""
    name = type(likelihood).__name__
    for x in (splits.train, splits.valid, splits.test):
        if likelihood.data_range is not None:
            low, high = likelihood.data_range
            if x.min() < low or x.max() > high:
                raise DataError(
                    f"data: likelihood {name} needs values in [{low}, {high}] but the data spans"
                    f" [{float(x.min()):.4g}, {float(x.max()):.4g}]; rescale the data or choose"
                    " model.likelihood = 'gaussian'"
                )
        binary = bool(((x == 0) | (x == 1)).all())
        if likelihood.requires_binary and not splits.dynamic_binarization and not binary:
            raise DataError(
                f"data: likelihood {name} needs binary data but the data has grey levels;"
                " set data.binarize = 'dynamic' or choose"
                " model.likelihood = 'continuous_bernoulli'"
            )


# ------------------------------------------------------------------------ checks
def _as_float(x: torch.Tensor, split: str) -> torch.Tensor:
    if not torch.is_tensor(x):
        raise DataError(f"data: the {split} split is not a tensor but {type(x).__name__}")
    if x.is_complex():
        raise DataError(f"data: the {split} split has unsupported dtype {x.dtype}")
    if x.dim() < 2:
        raise DataError(
            f"data: the {split} split must have shape (N, ...) with N datapoints,"
            f" got {tuple(x.shape)}"
        )
    if len(x) == 0:
        raise DataError(f"data: the {split} split is empty")
    if x[0].numel() == 0:
        raise DataError(
            f"data: the {split} split's datapoints are empty (shape {tuple(x.shape[1:])});"
            " each needs at least one value"
        )
    x = x.to(torch.float32)
    bad = ~torch.isfinite(x)
    if bad.any():
        where = int(bad.reshape(len(x), -1).any(dim=1).nonzero()[0])
        raise DataError(
            f"data: the {split} split holds NaN or infinite values (first at datapoint {where});"
            " clean the data before training"
        )
    return x


def _validation_count(size: float, n: int) -> int:
    count = round(size * n) if size < 1 else int(size)
    if size >= 1 and size != int(size):
        raise DataError(f"data.validation_size: a count must be a whole number, got {size}")
    if not 1 <= count < n:
        raise DataError(
            f"data.validation_size: {size} leaves no data for validation or training"
            f" ({n} training datapoints)"
        )
    return count


# ---------------------------------------------------------------------- datasets
@register("dataset", "digits")
def digits(config: DataConfig) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1797 images), scaled to [0, 1]; 20% held out as test."""
    from sklearn.datasets import load_digits

    images = torch.as_tensor(load_digits().images, dtype=torch.float32) / 16.0
    images = images.unsqueeze(1)  # (N, 1, 8, 8)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    images = images[order]
    n_test = len(images) // 5
    return Dataset(train=images[n_test:], test=images[:n_test])


def _torchvision(
    dataset_class: type, config: DataConfig, subfolder: str | None = None, rgb: bool = False
) -> Dataset:
    """A torchvision dataset read from (or downloaded to) the data root. ``subfolder`` names
    the folder torchvision keeps it in (default ``<Class>/raw``); ``rgb`` images are stored
    ``(N, H, W, 3)`` and become ``(N, 3, H, W)``, grey ones gain a channel dimension."""
    root = data_root(config)
    folder = root / (subfolder or f"{dataset_class.__name__}/raw")
    try:
        splits = [dataset_class(str(root), train=t, download=False) for t in (True, False)]
    except RuntimeError:
        if not config.download:
            raise DataError(
                f"data: {dataset_class.__name__} is not in {folder}; pass --data-dir DIR (a folder"
                " holding that subfolder), set PYROVAE_DATA_DIR, or set data.download = true"
            ) from None
        splits = _download(dataset_class, root, folder)
    images = [torch.as_tensor(s.data).to(torch.float32).div(255.0) for s in splits]
    images = [x.permute(0, 3, 1, 2) if rgb else x.unsqueeze(1) for x in images]
    return Dataset(train=images[0], test=images[1])


def _download(dataset_class: type, root: Path, folder: Path) -> list:
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT)
    try:
        return [dataset_class(str(root), train=t, download=True) for t in (True, False)]
    except Exception as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DataError(
            f"data: {dataset_class.__name__} is not in {folder} and downloading it failed"
            f" ({reason}); pass --data-dir DIR with the files, or set PYROVAE_DATA_DIR"
        ) from None
    finally:
        socket.setdefaulttimeout(previous)


@register("dataset", "mnist")
def mnist(config: DataConfig) -> Dataset:
    """MNIST (60,000 train, 10,000 test 28x28 grey images) through torchvision."""
    from torchvision.datasets import MNIST

    return _torchvision(MNIST, config)


@register("dataset", "fashion_mnist")
def fashion_mnist(config: DataConfig) -> Dataset:
    """Fashion-MNIST through torchvision."""
    from torchvision.datasets import FashionMNIST

    return _torchvision(FashionMNIST, config)


@register("dataset", "kmnist")
def kmnist(config: DataConfig) -> Dataset:
    """Kuzushiji-MNIST through torchvision."""
    from torchvision.datasets import KMNIST

    return _torchvision(KMNIST, config)


@register("dataset", "cifar10")
def cifar10(config: DataConfig) -> Dataset:
    """CIFAR-10 (50,000 train, 10,000 test 32x32 colour images, scaled to [0, 1]) through
    torchvision; set data.binarize = "none"."""
    from torchvision.datasets import CIFAR10

    return _torchvision(CIFAR10, config, subfolder=CIFAR10.base_folder, rgb=True)


@register("dataset", "file")
def from_file(config: DataConfig) -> Dataset:
    """A user's array in ``data.path``: ``.npy``/``.pt`` (last 10% is test) or ``.npz``/``.pt``
    dict with ``train`` and ``test``. Shape ``(N, ...)``; the file is only read.
    """
    if not config.path:
        raise DataError("data.path: dataset 'file' needs data.path = 'FILE.npy|.npz|.pt'")
    path = Path(config.path)
    if not path.is_file():
        raise DataError(f"data.path: file {str(path)!r} does not exist")
    try:
        if path.suffix == ".npy":
            content = torch.as_tensor(np.load(path, allow_pickle=False))
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                content = {k: torch.as_tensor(archive[k]) for k in archive.files}
        elif path.suffix == ".pt":
            content = torch.load(path, map_location="cpu", weights_only=True)
        else:
            raise DataError(f"data.path: {str(path)!r} must end in .npy, .npz or .pt")
    except DataError:
        raise
    except Exception as error:
        raise DataError(f"data.path: cannot read {str(path)!r}: {error}") from None
    if isinstance(content, dict):
        if "train" not in content or "test" not in content:
            raise DataError(f"data.path: {str(path)!r} must hold arrays named 'train' and 'test'")
        return Dataset(train=content["train"], test=content["test"])
    if not torch.is_tensor(content) or content.dim() < 2 or len(content) < 10:
        raise DataError(
            f"data.path: {str(path)!r} must hold an array of shape (N, ...) with N >= 10"
        )
    n_test = len(content) // 10
    return Dataset(train=content[n_test:], test=content[:n_test])
