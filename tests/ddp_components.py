"""Test-only components for the multi-process tests, loaded in the child processes alone
(``--plugin tests/ddp_components.py`` or ``import ddp_components``), never in the pytest process,
so the README's component table stays as it is.

- guide ``ddp_point``: q(z|x) a point mass at the encoder's output. With it the ELBO has no
  Monte Carlo noise (log q = 0, z = encoder(x)), so a run is a deterministic function of the
  data order and binarization, which is how two processes are compared with one.
- network ``ddp_faulty_mlp``: an MLP whose process, when it is rank ``fail_rank``, exits
  abruptly (``os._exit``) or hangs at its ``fail_at``-th call: a rank that dies or stalls.
- likelihood ``ddp_rank_nan``: Bernoulli pixels; on rank ``rank``'s training calls ``calls``
  (counted from 0, one per step) the model gains a NaN factor: that rank's loss is NaN while
  every gradient stays finite, so only a collective verdict makes all ranks skip the step.
"""

from __future__ import annotations

import os
import time

import pyro
import torch
from pyro import distributions as dist

from pyrovae import register
from pyrovae.components.base import VariationalFamily
from pyrovae.components.likelihoods import Bernoulli
from pyrovae.components.networks.mlp import MLP


@register("guide", "ddp_point")
class Point(VariationalFamily):
    """A point mass at the encoder's output (MAP-like): deterministic z, log q(z|x) = 0."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__(latent_dim)
        self.param_shape = (latent_dim,)

    def forward(self, params: torch.Tensor) -> dist.TorchDistribution:
        return dist.Delta(params, event_dim=1)


@register("network", "ddp_faulty_mlp")
class FaultyMLP(MLP):
    """An MLP that kills (``mode = "exit"``) or freezes (``"hang"``) rank ``fail_rank``."""

    def __init__(
        self,
        in_shape: tuple[int, ...],
        out_shape: tuple[int, ...],
        hidden: tuple[int, ...] = (16,),
        fail_rank: int = 1,
        fail_at: int = 3,
        mode: str = "exit",
    ) -> None:
        super().__init__(in_shape, out_shape, hidden)
        self.fail = int(os.environ.get("RANK", "0")) == fail_rank
        self.fail_at = fail_at
        self.mode = mode
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.fail and self.calls == self.fail_at:
            if self.mode == "exit":
                os._exit(3)
            time.sleep(3600)
        return super().forward(x)


@register("likelihood", "ddp_rank_nan")
class RankNaN(Bernoulli):
    """Bernoulli pixels, with a NaN (constant) factor on rank ``rank``'s training ``calls``."""

    def __init__(
        self, x_shape: tuple[int, ...], rank: int = 1, calls: tuple[int, ...] = ()
    ) -> None:
        super().__init__(x_shape)
        self.poisoned = int(os.environ.get("RANK", "0")) == rank
        self.calls = set(calls)
        self.count = 0

    def forward(self, params: torch.Tensor) -> dist.TorchDistribution:
        if self.training:
            if self.poisoned and self.count in self.calls:
                # log p gains a NaN that depends on no parameter: the gradient stays finite
                pyro.factor("ddp_nan", torch.tensor(torch.nan, device=params.device))
            self.count += 1
        return super().forward(params)
