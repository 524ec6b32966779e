"""Dynamic binarization (``Splits.training_epoch``): each pixel is a Bernoulli draw with its
intensity as probability, reproducible from the generator's state, fresh every epoch."""

from __future__ import annotations

import torch

from pyrovae.components.datasets import load_splits
from pyrovae.config import DataConfig


def _splits():
    return load_splits(DataConfig(name="digits", binarize="dynamic"), torch.device("cpu"))


def test_each_pixel_is_a_bernoulli_draw_of_its_intensity():
    splits = _splits()
    p = splits.train
    generator = torch.Generator().manual_seed(0)
    draws = torch.stack([splits.training_epoch(generator) for _ in range(100)])
    assert set(draws.unique().tolist()) <= {0.0, 1.0}
    assert draws.dtype == p.dtype and draws.shape[1:] == p.shape
    assert (draws[:, p == 0] == 0).all() and (draws[:, p == 1] == 1).all()
    # over all pixels of all draws the frequency of ones is mean(p) within 5 standard errors
    n = draws.numel()
    sem = float((p * (1 - p)).sum() * len(draws)) ** 0.5 / n
    assert abs(float(draws.mean()) - float(p.mean())) < 5 * sem
    # and per intensity level: pixels of intensity 0.5 are one half of the time
    half = draws[:, p == 0.5]
    assert half.numel() > 10_000
    assert abs(float(half.mean()) - 0.5) < 5 * 0.5 / half.numel() ** 0.5


def test_draws_are_reproducible_and_fresh_each_epoch():
    splits = _splits()
    first = torch.Generator().manual_seed(3)
    again = torch.Generator().manual_seed(3)
    a, b = splits.training_epoch(first), splits.training_epoch(first)
    torch.testing.assert_close(splits.training_epoch(again), a, atol=0, rtol=0)
    state = again.get_state()  # resuming from a saved generator state gives the same epoch
    torch.testing.assert_close(splits.training_epoch(again), b, atol=0, rtol=0)
    again.set_state(state)
    torch.testing.assert_close(splits.training_epoch(again), b, atol=0, rtol=0)
    assert not torch.equal(a, b)
    assert splits.train.unique().numel() > 2  # the split itself is left as it was
