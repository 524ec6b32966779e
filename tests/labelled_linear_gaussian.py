"""A semi-supervised model whose evidence is known in closed form: per class y, a linear-Gaussian
p(x|y,z) = N(W_y z + b_y, sigma^2 I) with z ~ N(0, I), and the guide's q(z|x,y) the exact
posterior, so p(x) = sum_y p(y) N(x; b_y, W_y W_y^T + sigma^2 I). The classifier q(y|x) is a
linear map, deliberately not the exact p(y|x)."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import pyro_method
from torch import nn

import pyrovae
from pyrovae.components.base import observation


class LabelledLinearGaussian(pyrovae.Program):
    uses_labels = True
    enumerates = True

    def __init__(self, classes: int = 3, dim: int = 4, latent: int = 2, seed: int = 0) -> None:
        super().__init__((dim,))
        g = torch.Generator().manual_seed(seed)
        self.num_classes = classes
        self.weight = nn.Parameter(
            torch.randn(classes, dim, latent, generator=g, dtype=torch.float64)
        )
        self.bias = nn.Parameter(2 * torch.randn(classes, dim, generator=g, dtype=torch.float64))
        self.noise = 0.5
        self.logits = nn.Parameter(torch.randn(dim, classes, generator=g, dtype=torch.float64))
        self.latent = latent

    def _prior_y(self) -> dist.Categorical:
        return dist.Categorical(logits=self.bias.new_zeros(self.num_classes))

    @pyro_method
    def model(self, x=None, y=None, batch_size=None):
        n = len(x) if x is not None else len(y) if y is not None else batch_size or 1
        with pyro.plate("data", n):
            y = pyro.sample("y", self._prior_y(), obs=y)
            z = pyro.sample("z", dist.Normal(self.bias.new_zeros(self.latent), 1.0).to_event(1))
            loc = (self.weight[y] @ z.unsqueeze(-1)).squeeze(-1) + self.bias[y]
            likelihood = dist.Normal(loc, self.noise).to_event(1)
            return pyro.sample("x", likelihood, obs=observation(x))

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The exact p(z|x,y) for every class: means ``(C, B, d)``, covariances ``(C, d, d)``."""
        w = self.weight
        eye = torch.eye(self.latent, dtype=w.dtype)
        covariance = torch.linalg.inv(eye + w.transpose(-1, -2) @ w / self.noise**2)
        centred = x.unsqueeze(0) - self.bias.unsqueeze(1)  # (C, B, D)
        means = centred @ w @ covariance / self.noise**2  # covariance is symmetric
        return means, covariance

    @pyro_method
    def guide(self, x, y=None):
        means, covariance = self.posterior(x)
        with pyro.plate("data", len(x)):
            if y is None:
                y = pyro.sample(
                    "y", dist.Categorical(logits=x @ self.logits), infer={"enumerate": "parallel"}
                )
            loc = means[y, torch.arange(len(x))]
            pyro.sample("z", dist.MultivariateNormal(loc, covariance_matrix=covariance[y]))

    def log_evidence(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) in closed form, per datapoint."""
        w = self.weight
        covariance = w @ w.transpose(-1, -2) + self.noise**2 * torch.eye(w.shape[1], dtype=w.dtype)
        marginal = dist.MultivariateNormal(self.bias, covariance_matrix=covariance)  # batch (C,)
        log_joint = marginal.log_prob(x.unsqueeze(1)) - math.log(self.num_classes)  # (B, C)
        return log_joint.logsumexp(-1)

    def exact_unlabelled_bound(self, x: torch.Tensor) -> torch.Tensor:
        """U(x) with q(z|x,y) exact: sum_y q(y|x) log p(x, y) + H(q(y|x))."""
        w = self.weight
        covariance = w @ w.transpose(-1, -2) + self.noise**2 * torch.eye(w.shape[1], dtype=w.dtype)
        marginal = dist.MultivariateNormal(self.bias, covariance_matrix=covariance)
        log_joint = marginal.log_prob(x.unsqueeze(1)) - math.log(self.num_classes)
        q = dist.Categorical(logits=x @ self.logits)
        return (q.probs * log_joint).sum(-1) + q.entropy()
