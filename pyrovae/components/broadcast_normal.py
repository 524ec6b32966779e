"""A Normal that keeps its parameters' own shape when plates expand it.

A Pyro plate expands a site's distribution to the plate's batch shape: under K = 5000
importance samples, the guide's ``Normal(loc, scale)`` of shape ``(batch, D)`` and the prior's
``Normal(0, 1)`` of shape ``(D,)`` both become ``(K, batch, D)`` views, and torch's ``log_prob``
and ``kl_divergence`` then compute ``scale ** 2``, ``scale.log()`` and the KL's every term on the
expanded views: full ``(K, batch, D)`` tensors of values that repeat K times.
:class:`BroadcastNormal` is ``dist.Normal`` (its ``loc`` and ``scale`` are expanded as torch
expands them, so everything else is torch's) that also remembers its parameters before
expansion; without autograd, ``log_prob`` and the KL between two of them run torch's own formulas
on those and let broadcasting against the value do the rest. The same operations on the same
numbers: the results equal torch's bit for bit (``tests/test_broadcast_normal.py``). With
autograd they are torch's, so a training step and its gradients are unchanged.
"""

from __future__ import annotations

import torch
from pyro import distributions as dist
from torch.distributions.kl import _kl_normal_normal, register_kl

__all__ = ["BroadcastNormal"]


def _plain(*tensors: torch.Tensor) -> bool:
    """Whether autograd cannot see ``tensors`` (the compact formulas are then exact)."""
    return not torch.is_grad_enabled() or not any(t.requires_grad for t in tensors)


class BroadcastNormal(dist.Normal):
    """``dist.Normal(loc, scale)`` whose ``expand`` keeps the unexpanded parameters for
    ``log_prob`` and KL without autograd."""

    def __init__(
        self, loc: torch.Tensor, scale: torch.Tensor, validate_args: bool | None = None
    ) -> None:
        super().__init__(loc, scale, validate_args=validate_args)
        self._unexpanded = (self.loc, self.scale)

    @property
    def compact(self) -> dist.Normal:
        """The Normal of the parameters before any ``expand``."""
        return dist.Normal(*self._unexpanded, validate_args=False)

    def expand(self, batch_shape, _instance=None) -> BroadcastNormal:
        new = self._get_checked_instance(BroadcastNormal, _instance)
        new = super().expand(batch_shape, _instance=new)
        new._unexpanded = self._unexpanded
        return new

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args or not _plain(self.loc, self.scale, value):
            return super().log_prob(value)
        shape = torch.broadcast_shapes(value.shape, self.batch_shape)
        if torch.broadcast_shapes(value.shape, self._unexpanded[0].shape) != shape:
            return super().log_prob(value)  # the value alone would not give the batch shape
        return self.compact.log_prob(value)


@register_kl(BroadcastNormal, BroadcastNormal)
def _kl_broadcast_normal(p: BroadcastNormal, q: BroadcastNormal) -> torch.Tensor:
    """torch's KL(p || q) of two Normals, on the unexpanded parameters without autograd (then
    expanded to the batch shape: a view)."""
    if not _plain(p.loc, p.scale, q.loc, q.scale):
        return _kl_normal_normal(p, q)
    shape = torch.broadcast_shapes(p.batch_shape, q.batch_shape)
    return _kl_normal_normal(p.compact, q.compact).expand(shape)
