"""Batches for programs that use labels (semi-supervised M2): per step, one batch of the
training images whose label is hidden and one batch of those whose label is kept.

An epoch is one pass over the unlabelled images (Kingma et al. 2014 apply the unlabelled
objective to them alone), in a fresh random order; the labelled images are cycled alongside,
each pass over them in a fresh order, ``labelled_batch_size`` (default ``min(batch_size,
number labelled)``) per step. With every label kept (``data.labelled = "all"``) there are no
unlabelled images: an epoch is then one pass over the labelled ones, ``batch_size`` per step,
and the unlabelled batches are empty. Both are index tensors into ``splits.train`` (and
``splits.train_labels``) on its device, drawn from the run's generator alone, so an epoch
started from the same generator state draws the same batches (reproducible and resumable at
epoch boundaries). The data is never modified.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from pyrovae.components.datasets import Splits
from pyrovae.components.labels import HIDDEN
from pyrovae.errors import DataError

__all__ = ["labelled_batches", "labelled_steps"]


def _parts(splits: Splits) -> tuple[torch.Tensor, torch.Tensor]:
    """The indices of the training images with a hidden label and of those with a kept one."""
    if splits.train_labels is None:
        raise DataError(
            "data: this program needs labels but the dataset has none; choose a dataset with"
            " labels (mnist, digits, ...) or a file with labels"
        )
    hidden = splits.train_labels == HIDDEN
    kept = (~hidden).nonzero().squeeze(1)
    if len(kept) == 0:
        raise DataError("data.labelled: no training label is kept; keep at least one per class")
    return hidden.nonzero().squeeze(1), kept


def _sizes(
    n_unlabelled: int, n_labelled: int, batch_size: int, labelled_batch_size: int | None
) -> tuple[int, int, int]:
    """Steps per epoch, and the unlabelled and labelled batch sizes."""
    if n_unlabelled == 0:
        return math.ceil(n_labelled / batch_size), batch_size, batch_size
    labelled = labelled_batch_size or min(batch_size, n_labelled)
    return math.ceil(n_unlabelled / batch_size), batch_size, labelled


def labelled_steps(splits: Splits, batch_size: int, labelled_batch_size: int | None = None) -> int:
    """The number of steps of one epoch of ``labelled_batches``."""
    unlabelled, labelled = _parts(splits)
    return _sizes(len(unlabelled), len(labelled), batch_size, labelled_batch_size)[0]


def labelled_batches(
    splits: Splits,
    batch_size: int,
    generator: torch.Generator,
    device: torch.device,
    labelled_batch_size: int | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of ``(unlabelled, labelled)`` index tensors into the training split.

    The unlabelled indices are the slices of a random permutation of the hidden-label images
    (the last batch may be smaller); the labelled ones are ``labelled_batch_size`` consecutive
    entries of back-to-back random permutations of the kept-label images. With no hidden label,
    the labelled indices take the unlabelled ones' role and the unlabelled batches are empty.
    """
    unlabelled, labelled = (part.to(device) for part in _parts(splits))
    steps, size, labelled_size = _sizes(
        len(unlabelled), len(labelled), batch_size, labelled_batch_size
    )
    if len(unlabelled) == 0:
        order = torch.randperm(len(labelled), generator=generator, device=device)
        for batch in labelled[order].split(size):
            yield unlabelled, batch
        return
    order = unlabelled[torch.randperm(len(unlabelled), generator=generator, device=device)]
    passes = math.ceil(steps * labelled_size / len(labelled))
    cycle = torch.cat(
        [
            labelled[torch.randperm(len(labelled), generator=generator, device=device)]
            for _ in range(passes)
        ]
    )
    for step, batch in enumerate(order.split(size)):
        yield batch, cycle[step * labelled_size : (step + 1) * labelled_size]
