"""Independent Bernoulli pixels from logits, with a log-density of fewer passes over memory.

``Bernoulli(logits=l).to_event(k).log_prob(x)`` runs torch's composite
``binary_cross_entropy_with_logits`` (a log-sigmoid with its buffer, ``1 - x``, a product, two
differences), negates the whole tensor and sums it: six passes over every pixel of every
particle, each allocating a tensor of the logits' size. For binary x,

    log Bernoulli(x | l) = x l - softplus(l) = -softplus((1 - 2x) l),

one product with a sign that has the size of x (not of the particles), one softplus in place and
a sum. :class:`IndependentBernoulli` is ``Independent(Bernoulli(logits), k)`` whose ``log_prob``
takes that path where it cannot change a result: no autograd through the logits or x (a training
step keeps torch's kernels and gradients bit for bit) and x binary (checked on x itself, before
it is broadcast against the particles); anywhere else it is torch's. The two agree to float
rounding (``tests/test_independent_bernoulli.py``: 1e-12 in float64, logits up to 1e4).
"""

from __future__ import annotations

import torch
from pyro import distributions as dist

__all__ = ["IndependentBernoulli"]


class IndependentBernoulli(dist.Independent):
    """``Bernoulli(logits=logits)`` with its last ``event_dims`` dimensions as the event."""

    def __init__(
        self, logits: torch.Tensor, event_dims: int, validate_args: bool | None = None
    ) -> None:
        base = dist.Bernoulli(logits=logits, validate_args=validate_args)
        super().__init__(base, event_dims, validate_args=validate_args)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        logits = self.base_dist.logits
        if torch.is_grad_enabled() and (logits.requires_grad or value.requires_grad):
            return super().log_prob(value)
        if self._validate_args:
            self._validate_sample(value)
        if not bool(((value == 0) | (value == 1)).all()):
            return super().log_prob(value)  # soft targets: torch's cross-entropy
        sign = 1 - 2 * value.to(logits.dtype)
        terms = torch.mul(logits, sign)  # (1 - 2x) l, broadcast as torch broadcasts them
        torch.logaddexp(terms, torch.zeros((), dtype=terms.dtype, device=terms.device), out=terms)
        if self.reinterpreted_batch_ndims:
            terms = terms.flatten(-self.reinterpreted_batch_ndims).sum(-1)
        return terms.neg_()

    def expand(self, batch_shape, _instance=None) -> IndependentBernoulli:
        shape = torch.Size(batch_shape) + self.event_shape
        return IndependentBernoulli(
            self.base_dist.logits.expand(shape),
            self.reinterpreted_batch_ndims,
            validate_args=self.__dict__.get("_validate_args"),
        )
