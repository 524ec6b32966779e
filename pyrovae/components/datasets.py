"""Datasets as tensors on the training device, splits, binarization and index-slice batches.

A dataset is a registered function ``(DataConfig) -> Dataset`` returning float tensors of shape
``(N, *x_shape)`` for its train and test splits. ``load_splits`` then holds a validation split out
of the training data, binarizes the validation and test splits once with a fixed seed (for
``binarize = "dynamic"``) and moves everything to the device; ``check_likelihood`` refuses data
the likelihood cannot score. Training batches are slices of a per-epoch permutation: no
per-item loader.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pickle
import socket
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pyrovae.components.base import Likelihood
from pyrovae.components.labels import (
    HIDDEN,
    balanced_selection,
    check_labels,
    count_classes,
    hide_labels,
)
from pyrovae.config import DataConfig
from pyrovae.errors import DataError, first_line, refusal_detail
from pyrovae.registry import lookup, register

__all__ = [
    "Dataset",
    "Splits",
    "data_root",
    "load_splits",
    "check_likelihood",
    "batch_slices",
    "EVAL_BINARIZE_SEED",
    "check_idx_file",
]

#: Seed of the one-off binarization of the validation and test splits, shared by every run.
EVAL_BINARIZE_SEED = 20151101

#: Seconds a download may wait on the network before it counts as failed.
DOWNLOAD_TIMEOUT = 20.0


@dataclass(frozen=True)
class Dataset:
    """A dataset's train and test splits: float tensors of shape ``(N, *x_shape)``, and their
    class labels (integer tensors of shape ``(N,)``, checked by ``load_splits``) or None."""

    train: torch.Tensor
    test: torch.Tensor
    train_labels: torch.Tensor | None = None
    test_labels: torch.Tensor | None = None


@dataclass(frozen=True)
class Splits:
    """Train, validation and test tensors on the device, ready for training and evaluation."""

    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    dynamic_binarization: bool
    #: LongTensor ``(len(train),)``; ``HIDDEN`` (-1) where ``data.labelled`` hides the label.
    train_labels: torch.Tensor | None = None
    #: The true labels of the validation and test splits (for evaluation only).
    valid_labels: torch.Tensor | None = None
    test_labels: torch.Tensor | None = None
    num_classes: int | None = None

    @property
    def has_labels(self) -> bool:
        """Whether the dataset has labels (some training ones may be hidden)."""
        return self.train_labels is not None

    @property
    def labelled_indices(self) -> torch.Tensor:
        """Indices of the training datapoints whose label is kept (empty without labels)."""
        if self.train_labels is None:
            return torch.zeros(0, dtype=torch.int64, device=self.train.device)
        return (self.train_labels != HIDDEN).nonzero().squeeze(1)

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
    labels = _labels(dataset, config, len(train), len(test))
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
    splits = Splits(train.to(device), valid.to(device), test.to(device), dynamic)
    if labels is None:
        return splits
    train_labels, test_labels, num_classes = labels
    train_labels, valid_labels = train_labels[:-n_valid], train_labels[-n_valid:]
    if config.labelled != "all":
        keep = balanced_selection(train_labels, config.labelled, num_classes, config.labelled_seed)
        train_labels = hide_labels(train_labels, keep)
    return dataclasses.replace(
        splits,
        train_labels=train_labels.to(device),
        valid_labels=valid_labels.to(device),
        test_labels=test_labels.to(device),
        num_classes=num_classes,
    )


def _labels(
    dataset: Dataset, config: DataConfig, n_train: int, n_test: int
) -> tuple[torch.Tensor, torch.Tensor, int] | None:
    """The dataset's checked train and test labels and its number of classes, or None."""
    given = (dataset.train_labels is not None, dataset.test_labels is not None)
    if given == (False, False):
        if config.labelled != "all":
            raise DataError(
                f"data.labelled: dataset {config.name!r} has no labels; remove data.labelled"
            )
        return None
    if given != (True, True):
        which, other = ("train", "test") if given[0] else ("test", "train")
        raise DataError(
            f"data: the dataset has {which} labels but no {other} labels; give both or neither"
        )
    train = check_labels(dataset.train_labels, n_train, "train")
    test = check_labels(dataset.test_labels, n_test, "test")
    return train, test, count_classes(train, test)


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
    """scikit-learn's bundled 8x8 digits (1797 images, 10 classes), scaled to [0, 1]; 20% held out
    as test."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float32) / 16.0
    images = images.unsqueeze(1)  # (N, 1, 8, 8)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    images, labels = images[order], torch.as_tensor(bunch.target, dtype=torch.int64)[order]
    n_test = len(images) // 5
    return Dataset(images[n_test:], images[:n_test], labels[n_test:], labels[:n_test])


def _torchvision(
    dataset_class: type, config: DataConfig, subfolder: str | None = None, rgb: bool = False
) -> Dataset:
    """A torchvision dataset read from (or downloaded to) the data root. ``subfolder`` names
    the folder torchvision keeps it in (default ``<Class>/raw``); ``rgb`` images are stored
    ``(N, H, W, 3)`` and become ``(N, 3, H, W)``, grey ones gain a channel dimension.

    Files that are there but damaged (an idx file with a wrong magic number, a header or size
    that disagree, a checksum that does not match) are a one-line ``DataError`` naming them."""
    root = data_root(config)
    folder = root / (subfolder or f"{dataset_class.__name__}/raw")
    files = _dataset_files(dataset_class)
    present = [name for name in files if os.path.lexists(folder / name)]
    if present and len(present) == len(files) and hasattr(dataset_class, "resources"):
        for name in files:
            check_idx_file(folder / name)
    try:
        splits = [dataset_class(str(root), train=t, download=False) for t in (True, False)]
    except RuntimeError:
        missing = [name for name in files if name not in present]
        if present and (not missing or not config.download):
            problem = (
                f"lacks {', '.join(missing)}"
                if missing
                else "holds files that are damaged (their checksums do not match)"
            )
            raise DataError(
                f"data: {folder} {problem}; replace the {dataset_class.__name__} files there"
            ) from None
        if not config.download:
            raise DataError(
                f"data: {dataset_class.__name__} is not in {folder}; pass --data-dir DIR (a folder"
                " holding that subfolder), set PYROVAE_DATA_DIR, or set data.download = true"
            ) from None
        splits = _download(dataset_class, root, folder)
    except Exception as error:  # files torchvision found but could not read
        raise DataError(
            f"data: cannot read {dataset_class.__name__} from {folder} (damaged files?):"
            f" {first_line(error)}"
        ) from None
    images = [torch.as_tensor(s.data).to(torch.float32).div(255.0) for s in splits]
    images = [x.permute(0, 3, 1, 2) if rgb else x.unsqueeze(1) for x in images]
    labels = [torch.as_tensor(s.targets, dtype=torch.int64) for s in splits]
    for split, x, y in zip(("train", "test"), images, labels, strict=True):
        if len(x) != len(y):
            raise DataError(
                f"data: {folder} holds {len(y)} {split} labels for {len(x)} {split} images;"
                f" replace the {dataset_class.__name__} files there"
            )
    return Dataset(images[0], images[1], labels[0], labels[1])


def _dataset_files(dataset_class: type) -> list[str]:
    """The names of the files a torchvision dataset reads from its folder."""
    if hasattr(dataset_class, "resources"):  # MNIST and its kin: the unpacked idx files
        return [os.path.splitext(os.path.basename(url))[0] for url, _ in dataset_class.resources]
    lists = getattr(dataset_class, "train_list", []) + getattr(dataset_class, "test_list", [])
    return [name for name, _ in lists]


#: idx files (LeCun's MNIST format): type code (3rd byte of the magic number) -> bytes a value.
_IDX_TYPES = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}


def check_idx_file(path: Path) -> None:
    """Refuse an idx file whose magic number, header or size is wrong, naming the file: MNIST
    images are unsigned bytes of 3 dimensions (N, H, W), labels of 1 (N)."""
    where = f"data: {str(path)!r}"
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            magic = handle.read(4)
            if len(magic) < 4:
                raise DataError(f"{where} is truncated: {len(magic)} bytes, no idx header")
            ndim = magic[3]
            dims = handle.read(4 * ndim)
    except OSError as error:
        raise DataError(f"{where} cannot be read: {error.strerror or error}") from None
    wanted = 1 if "labels" in path.name else 3
    if magic[:2] != b"\0\0" or magic[2] != 0x08 or ndim != wanted:
        raise DataError(
            f"{where} is not an idx file of unsigned bytes in {wanted} dimensions (magic number"
            f" {magic.hex()}; MNIST's is {'00000801' if wanted == 1 else '00000803'})"
        )
    if len(dims) < 4 * ndim:
        raise DataError(f"{where} is truncated inside its header ({size} bytes)")
    expected = 4 + 4 * ndim + math.prod(struct.unpack(f">{ndim}I", dims)) * _IDX_TYPES[magic[2]]
    if size != expected:
        raise DataError(
            f"{where} holds {size} bytes but its header announces {expected}: damaged or truncated"
        )


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
    """A user's array in ``data.path``: ``.npy``/``.pt`` (the first 10% is test) or ``.npz``/``.pt``
    dict with ``train`` and ``test`` (and, for labels, ``train_labels`` and ``test_labels``),
    or with ``data`` and ``labels`` (the first 10% is test). Shape ``(N, ...)``; the file is only
    read.
    """
    if not config.path:
        raise DataError("data.path: dataset 'file' needs data.path = 'FILE.npy|.npz|.pt'")
    path = Path(config.path)
    if not path.is_file():
        raise DataError(f"data.path: file {str(path)!r} does not exist")
    where = f"data.path: {str(path)!r}"
    if path.suffix not in (".npy", ".npz", ".pt"):
        raise DataError(f"{where} must end in .npy, .npz or .pt")
    try:
        if path.suffix == ".npy":
            content = torch.as_tensor(np.load(path, allow_pickle=False))
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                content = {k: torch.as_tensor(archive[k]) for k in archive.files}
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                content = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise DataError(
            f"{where} is refused: it holds pickled objects other than tensors and plain data"
            f" (never loaded: they could run code): {refusal_detail(error)}"
        ) from None
    except Exception as error:
        raise DataError(f"{where} cannot be read: {first_line(error)}") from None
    parts = content.values() if isinstance(content, dict) else [content]
    for part in parts:
        if torch.is_tensor(part) and (
            part.layout != torch.strided or part.is_meta or part.is_quantized or part.is_nested
        ):
            kind = "meta" if part.is_meta else "quantized" if part.is_quantized else part.layout
            kind = str(kind).removeprefix("torch.")
            raise DataError(f"{where} holds a {kind} tensor; store a dense array")
    if isinstance(content, dict) and "data" not in content:
        _check_keys(content, ("train", "test"), ("train_labels", "test_labels"), where)
        train_labels, test_labels = content.get("train_labels"), content.get("test_labels")
        return Dataset(content["train"], content["test"], train_labels, test_labels)
    labels = None
    if isinstance(content, dict):
        _check_keys(content, ("data",), ("labels",), where)
        content, labels = content["data"], content.get("labels")
    if not torch.is_tensor(content) or content.dim() < 2 or len(content) < 10:
        raise DataError(f"{where} must hold an array of shape (N, ...) with N >= 10")
    n_test = len(content) // 10
    if labels is None:
        return Dataset(train=content[n_test:], test=content[:n_test])
    labels = check_labels(labels, len(content), "file's")
    return Dataset(content[n_test:], content[:n_test], labels[n_test:], labels[:n_test])


def _check_keys(
    content: dict, required: tuple[str, ...], optional: tuple[str, ...], where: str
) -> None:
    """Refuse a dict of arrays that lacks a ``required`` key or holds a key not in either."""
    accepted = (*required, *optional)
    missing = [key for key in required if key not in content]
    unknown = [str(key) for key in content if key not in accepted]
    if missing or unknown:
        problem = f"lacks {missing[0]!r}" if missing else f"holds an unknown array {unknown[0]!r}"
        raise DataError(
            f"{where} {problem}; it must hold arrays named {' and '.join(map(repr, required))}"
            f" (and optionally {' and '.join(map(repr, optional))})"
        )
