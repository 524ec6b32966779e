"""Class labels beside the images: their checks, and the balanced choice of the kept ones.

Labels are class indices ``0 .. C-1`` in a LongTensor of shape ``(N,)``; the number of classes
``C`` is the largest label plus one, and every class must occur in the training split. Where
``data.labelled`` keeps only some training labels, the hidden ones read ``HIDDEN`` (-1).
"""

from __future__ import annotations

import torch

from pyrovae.errors import DataError

__all__ = ["HIDDEN", "check_labels", "count_classes", "balanced_selection", "hide_labels"]

#: The label of a training datapoint whose label ``data.labelled`` hides.
HIDDEN = -1


def check_labels(labels: object, n: int, split: str) -> torch.Tensor:
    """``labels`` of a split of ``n`` datapoints as a LongTensor ``(n,)``, or a one-line
    ``DataError`` naming the problem: not an array, wrong shape or length, booleans, values
    that are not whole numbers (fractions, NaN, infinity), negative values."""
    where = f"data: the {split} labels"
    if not torch.is_tensor(labels):
        raise DataError(f"{where} are not an array but {type(labels).__name__}")
    if labels.dim() != 1 or len(labels) != n:
        shape = tuple(labels.shape)
        raise DataError(
            f"{where} have shape {shape} but must be one class index per datapoint, shape ({n},)"
        )
    if labels.dtype == torch.bool or labels.is_complex():
        raise DataError(
            f"{where} have dtype {labels.dtype}; store class indices 0..C-1 as integers"
        )
    if labels.is_floating_point():
        bad = ~torch.isfinite(labels) | (labels != labels.round())
        if bad.any():
            i = int(bad.nonzero()[0])
            raise DataError(
                f"{where} hold {float(labels[i])} at datapoint {i}; labels must be whole"
                " class indices 0..C-1"
            )
        if labels.numel() and float(labels.abs().max()) >= 2**62:
            raise DataError(f"{where} hold {float(labels.abs().max()):.4g}, beyond any class index")
    labels = labels.to(torch.int64)
    if len(labels) and labels.min() < 0:
        i = int((labels < 0).nonzero()[0])
        raise DataError(
            f"{where} hold the negative value {int(labels[i])} at datapoint {i}; labels must be"
            " class indices 0..C-1"
        )
    return labels


def count_classes(train: torch.Tensor, test: torch.Tensor) -> int:
    """The number of classes: the largest label plus one. Refused (one line) if a class has no
    training datapoint (a gap in the numbering, or a test label beyond the training ones)."""
    largest = int(max(train.max(), test.max()))
    if largest >= len(train):
        raise DataError(
            f"data: the labels reach {largest}, so {largest + 1} classes, but the training split"
            f" has only {len(train)} datapoints; number the classes 0..C-1"
        )
    counts = torch.bincount(train, minlength=largest + 1)
    if (counts == 0).any():
        missing = int((counts == 0).nonzero()[0])
        raise DataError(
            f"data: class {missing} (of 0..{largest}) has no training datapoint; number the"
            " classes 0..C-1, each present in the training split"
        )
    return largest + 1


def balanced_selection(
    labels: torch.Tensor, count: int, num_classes: int, seed: int
) -> torch.Tensor:
    """Indices (sorted) of ``count`` datapoints balanced over the classes: ``count //
    num_classes`` of each, and one more of each of the first ``count % num_classes`` classes.

    One permutation of ``range(len(labels))`` seeded by ``seed`` orders each class; a class
    gives its first members in that order, so a larger count keeps every datapoint of a
    smaller one (nested selections), and the choice depends on ``seed`` alone."""
    if count < num_classes:
        raise DataError(
            f"data.labelled: {count} labels cannot cover {num_classes} classes; keep at least"
            f" {num_classes}, or 'all'"
        )
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    ordered = labels[order]
    chosen = []
    for c in range(num_classes):
        wanted = count // num_classes + (c < count % num_classes)
        members = order[ordered == c]
        if len(members) < wanted:
            raise DataError(
                f"data.labelled: {count} labels balanced over {num_classes} classes need {wanted}"
                f" of class {c}, but the training split holds only {len(members)}; keep fewer"
            )
        chosen.append(members[:wanted])
    return torch.cat(chosen).sort().values


def hide_labels(labels: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """A copy of ``labels`` with every label outside the indices ``keep`` set to ``HIDDEN``."""
    hidden = torch.full_like(labels, HIDDEN)
    hidden[keep] = labels[keep]
    return hidden
