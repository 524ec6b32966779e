"""Test components that inject faults: imported by the tests, or loaded with ``--plugin``.

``faulty_bernoulli`` is the Bernoulli likelihood with faults on chosen training calls, counted
from 0 (one call per training step; calls in eval mode, i.e. validation, are not counted). The
count is a buffer, so it is saved in checkpoints and a resumed run counts on. When the
environment variable ``PYROVAE_TEST_PROGRESS`` names a file, every training call appends one
byte to it, so a test can see how far a training subprocess has got.
"""

from __future__ import annotations

import os

import torch
from pyro import distributions as dist

from pyrovae import register
from pyrovae.components.likelihoods import Bernoulli

PROGRESS_ENV = "PYROVAE_TEST_PROGRESS"


@register("likelihood", "faulty_bernoulli")
class FaultyBernoulli(Bernoulli):
    """Bernoulli pixels; on training call k: a NaN loss if k is in ``nan_loss`` or k >=
    ``nan_from`` >= 0, a NaN gradient (with a finite loss) if k is in ``nan_grad``."""

    def __init__(
        self,
        x_shape: tuple[int, ...],
        nan_loss: tuple[int, ...] = (),
        nan_grad: tuple[int, ...] = (),
        nan_from: int = -1,
    ) -> None:
        super().__init__(x_shape)
        self.nan_loss = set(nan_loss)
        self.nan_grad = set(nan_grad)
        self.nan_from = nan_from
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def forward(self, params: torch.Tensor) -> dist.TorchDistribution:
        if self.training:
            call = int(self.calls)
            self.calls += 1
            progress = os.environ.get(PROGRESS_ENV)
            if progress:
                with open(progress, "ab") as handle:
                    handle.write(b".")
            if call in self.nan_loss or 0 <= self.nan_from <= call:
                params = params * torch.nan
            elif call in self.nan_grad:
                # value: params + 0; gradient: 0 * d sqrt(u)/du at u = 0 (infinite) * 0 = NaN
                params = params + 0.0 * torch.sqrt(params * 0.0)
        return super().forward(params)
