"""``IndependentNormal``: ``Normal(loc, scale).to_event(n)`` whose ``log_prob`` sums as it goes.

torch's ``Normal.log_prob`` builds every term of ``-(x - m)^2 / (2 s^2) - log s - log sqrt(2 pi)``
at full size (``s^2``, ``log s``, the square, its negation, ``2 s^2``, the quotient, two
differences) and ``Independent`` then sums them: nine passes over the latent tensor, each a node
the backward pass walks, at every latent site of every training step. The same density as

    -1/2 sum_i ((x_i - m_i) / s_i)^2 - sum_i log s_i - n log sqrt(2 pi)

is four passes (a difference, a quotient, a square, a sum) plus a sum of ``log s``, taken on the
parameters before any plate expanded them (``BroadcastNormal``'s), so a prior's ``log s`` is
computed once per latent dimension, not once per datapoint. Equal to torch's to float rounding
(``tests/test_independent_normal.py``); Pyro's validation checks the value as torch's does.
"""

from __future__ import annotations

import math

import torch

from pyrovae.components.broadcast_normal import BroadcastNormal
from pyrovae.components.lean_independent import LeanIndependent

__all__ = ["IndependentNormal"]

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


class IndependentNormal(LeanIndependent):
    """``Independent(BroadcastNormal(loc, scale), event_dims)`` with a fused ``log_prob``."""

    def __init__(
        self,
        loc: torch.Tensor,
        scale: torch.Tensor,
        event_dims: int = 1,
        validate_args: bool | None = None,
    ) -> None:
        self._init(BroadcastNormal(loc, scale, validate_args=validate_args), event_dims)

    def _init(self, base: BroadcastNormal, event_dims: int) -> None:
        super().__init__(base, event_dims, validate_args=base.__dict__.get("_validate_args"))

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        n = self.reinterpreted_batch_ndims
        if n == 0:
            return super().log_prob(value)
        if self.base_dist._validate_args:  # torch's checks of the value's shape and support
            self.base_dist._validate_sample(value)
        loc, scale = self.base_dist._unexpanded
        standardized = (value - loc) / scale
        shape, event = standardized.shape, self.event_shape
        if shape[len(shape) - n :] != event:
            return super().log_prob(value)  # the value widens the event: torch's
        dims = tuple(range(-n, 0))
        log_density = (
            -0.5 * standardized.square().sum(dims)
            - scale.log().sum(dims)
            - event.numel() * _LOG_SQRT_2PI
        )
        if log_density.shape != self.batch_shape:  # e.g. one value for a whole plate
            batch = torch.broadcast_shapes(shape[: len(shape) - n], self.batch_shape)
            log_density = log_density.expand(batch)  # a view
        return log_density

    def _expanded(self, batch_shape: torch.Size, _instance=None) -> IndependentNormal:
        new = IndependentNormal.__new__(IndependentNormal)
        new._init(
            self.base_dist.expand(batch_shape + self.event_shape), self.reinterpreted_batch_ndims
        )
        return new
