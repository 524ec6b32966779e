"""A mixture of diagonal Gaussians whose log-density is two matrix products.

``MixtureSameFamily(Categorical, Independent(Normal))`` scores z by broadcasting it against
every component: a ``(..., K, D)`` tensor for K components in D dimensions, which under K = 5000
importance samples and K = 500 components is gigabytes per pass. For diagonal components the
squared Mahalanobis distance expands into matrix products,

    sum_d (z_d - m_kd)^2 / s_kd^2
        = (z * z) @ (1 / s^2)^T - 2 z @ (m / s^2)^T + sum_d m_kd^2 / s_kd^2,

so scoring costs an ``(..., K)`` tensor and one ``(N, 2D) x (2D, K)`` product. Same density,
same gradients; :class:`DiagonalNormalMixture` is a Pyro distribution like the one it replaces
(a model still declares ``pyro.sample("z", prior())``; plates expand it as Pyro expands any
distribution).

The log-sum-exp over the components floors exp's arguments at ``EXP_FLOOR`` (see
:func:`floored_logsumexp`): torch's CPU exp runs about 10 times slower on arguments below about
-87 (results that underflow float32), and a trained mixture puts most of its components that far
from any one z.
"""

from __future__ import annotations

import math

import torch
from pyro import distributions as dist
from pyro.distributions import constraints
from pyro.distributions.torch_distribution import TorchDistributionMixin

__all__ = ["DiagonalNormalMixture", "floored_logsumexp", "EXP_FLOOR"]

#: The smallest argument :func:`floored_logsumexp` passes to exp: above float32's underflow
#: (about -87.3), and e^-80 = 1.8e-35 per floored term is far below float64's resolution.
EXP_FLOOR = -80.0


def floored_logsumexp(a: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``torch.logsumexp(a, dim)`` with every ``a_i - max(a)`` raised to at least ``EXP_FLOOR``
    before exp (a speed path: torch's CPU exp is slow where its result underflows).

    The largest term contributes 1 to the sum, each floored term at most e^EXP_FLOOR instead of
    its own smaller value: the result is at most n e^-80 (n terms) above torch's, and the
    gradient differs only in floored terms' entries (0 instead of at most e^-80). A slice of
    all -inf gives -inf, and +inf and NaN propagate, as in torch.
    """
    peak = a.detach().amax(dim, keepdim=True)
    shift = torch.where(peak.isfinite(), peak, torch.zeros_like(peak))
    shifted = a - shift
    if torch.is_grad_enabled() and a.requires_grad:
        terms = shifted.clamp(min=EXP_FLOOR).exp()
    else:  # in place: no autograd graph to keep
        terms = shifted.clamp_(min=EXP_FLOOR).exp_()
    out = terms.sum(dim).log() + shift.squeeze(dim)
    peak = peak.squeeze(dim)
    return torch.where(peak == -math.inf, peak, out)


class DiagonalNormalMixture(dist.TorchDistribution):
    """sum_k softmax(logits)_k N(z; loc_k, diag(scale_k^2)) over vectors z of ``D`` entries.

    ``logits`` has shape ``(K,)``, ``loc`` and ``scale`` ``(K, D)``; the distribution has event
    shape ``(D,)`` and empty batch shape (``expand`` broadcasts it, as plates do). Sampling
    draws a component by ``Categorical`` and then z from its ``Normal`` (no reparameterized
    sample: the component index is discrete, as in ``MixtureSameFamily``).
    """

    arg_constraints = {
        "logits": constraints.real_vector,
        "loc": constraints.real,
        "scale": constraints.positive,
    }
    support = constraints.real_vector
    has_rsample = False

    def __init__(
        self,
        logits: torch.Tensor,
        loc: torch.Tensor,
        scale: torch.Tensor,
        validate_args: bool | None = None,
    ) -> None:
        if loc.dim() != 2 or scale.shape != loc.shape or logits.shape != loc.shape[:1]:
            raise ValueError(
                "DiagonalNormalMixture: expected logits (K,), loc and scale (K, D); got"
                f" {tuple(logits.shape)}, {tuple(loc.shape)}, {tuple(scale.shape)}"
            )
        self.logits, self.loc, self.scale = logits, loc, scale
        super().__init__(torch.Size(), loc.shape[-1:], validate_args=validate_args)

    def expand(self, batch_shape, _instance=None) -> dist.TorchDistribution:
        """Pyro's ``ExpandedDistribution``: the components are shared by every batch entry."""
        return TorchDistributionMixin.expand(self, batch_shape)

    @property
    def mixture_log_weights(self) -> torch.Tensor:
        """log softmax(logits): ``(K,)``."""
        return torch.log_softmax(self.logits, dim=-1)

    def weighted_component_log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """log w_k + log N(value; loc_k, diag(scale_k^2)) for every component k: ``(..., K)``.

        One matrix product: ``[z * z, z] @ [-precision / 2, loc * precision]^T`` plus a
        constant per component.
        """
        if self._validate_args:
            self._validate_sample(value)
        d = self.loc.shape[-1]
        precision = self.scale.pow(-2)  # (K, D)
        scaled_loc = self.loc * precision
        constant = (
            self.mixture_log_weights
            - 0.5 * (self.loc * scaled_loc).sum(-1)
            - self.scale.log().sum(-1)
            - 0.5 * d * math.log(2 * math.pi)
        )  # (K,)
        weights = torch.cat([-0.5 * precision, scaled_loc], dim=-1)  # (K, 2D)
        z = value.reshape(-1, d)
        out = torch.addmm(constant, torch.cat([z * z, z], dim=-1), weights.T)  # (N, K)
        return out.reshape(*value.shape[:-1], -1)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return floored_logsumexp(self.weighted_component_log_prob(value), dim=-1)

    @torch.no_grad()
    def sample(self, sample_shape: tuple[int, ...] = ()) -> torch.Tensor:
        index = dist.Categorical(logits=self.logits).sample(sample_shape)
        return torch.normal(self.loc[index], self.scale[index])

    @property
    def mean(self) -> torch.Tensor:
        return self.mixture_log_weights.exp() @ self.loc

    @property
    def variance(self) -> torch.Tensor:
        """Within-component variance plus the variance of the component means."""
        weights = self.mixture_log_weights.exp()
        second = weights @ (self.scale.pow(2) + self.loc.pow(2))
        return second - self.mean.pow(2)
