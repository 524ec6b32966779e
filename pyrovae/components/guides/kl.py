"""The one analytic KL divergence pyrovae adds to torch's and Pyro's registries.

``TraceMeanField_ELBO`` uses ``kl_divergence(q, p)`` wherever it is registered and falls back on
Monte Carlo when it raises ``NotImplementedError``. torch has KL(MVN || MVN) and Pyro has
KL(Independent(Normal) || MVN), but neither has KL(MVN || Independent(Normal)): the pair a
full-covariance guide meets with a diagonal normal prior. Here it is, as torch's own MVN-to-MVN
closed form after rewriting the diagonal prior as the multivariate normal it is. Any other
``Independent`` base still raises ``NotImplementedError`` and so still takes the Monte Carlo path.
"""

from __future__ import annotations

import torch
from torch.distributions import Independent, MultivariateNormal, Normal, kl_divergence, register_kl

__all__ = ["kl_mvn_diagonal_normal"]


@register_kl(MultivariateNormal, Independent)
def kl_mvn_diagonal_normal(q: MultivariateNormal, p: Independent) -> torch.Tensor:
    """KL(q || p) for a multivariate normal q and a diagonal normal p over vectors."""
    if not isinstance(p.base_dist, Normal) or p.reinterpreted_batch_ndims != 1:
        raise NotImplementedError
    as_mvn = MultivariateNormal(p.base_dist.loc, scale_tril=torch.diag_embed(p.base_dist.scale))
    return kl_divergence(q, as_mvn)
