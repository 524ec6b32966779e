"""A linear-Gaussian chain with two latent layers, the ground truth of the hierarchical tests.

Model: z2 ~ N(0, I), z1 | z2 ~ N(A z2 + a, diag(s1^2)), x | z1 ~ N(B z1 + b, diag(s0^2)).
Then p(x) is Gaussian and so is p(z1, z2 | x) = p(z1 | x) p(z2 | z1): the guide
q(z1|x) q(z2|z1), with q(z1|x) = N(M x + c, L1 L1^T) and q(z2|z1) = N(K z1 + k, L2 L2^T), can
equal it exactly (``exact_guide``).
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import pyro_method
from torch import nn

import pyrovae


class LinearGaussianChain(pyrovae.Program):
    """The chain above as a pyrovae program; every parameter is an ``nn.Parameter``."""

    def __init__(self, x_dim: int = 5, d1: int = 3, d2: int = 2, seed: int = 0) -> None:
        super().__init__((x_dim,))
        g = torch.Generator().manual_seed(seed)

        def param(*shape: int, scale: float = 0.5) -> nn.Parameter:
            return nn.Parameter(scale * torch.randn(*shape, generator=g, dtype=torch.float64))

        self.A, self.a, self.log_s1 = param(d1, d2), param(d1), param(d1, scale=0.2)
        self.B, self.b, self.log_s0 = param(x_dim, d1), param(x_dim), param(x_dim, scale=0.2)
        self.M, self.c = param(d1, x_dim), param(d1)
        self.L1 = param(d1, d1)
        self.K, self.k = param(d2, d1), param(d2)
        self.L2 = param(d2, d2)

    @staticmethod
    def _tril(raw: torch.Tensor) -> torch.Tensor:
        return raw.tril(-1) + torch.diag_embed(raw.diagonal().exp())

    @pyro_method
    def model(self, x=None, batch_size=None):
        n = len(x) if x is not None else (batch_size or 1)
        d2 = self.A.shape[1]
        with pyro.plate("data", n):
            zero = torch.zeros(d2, dtype=torch.float64)
            z2 = pyro.sample("z2", dist.Normal(zero, 1.0).to_event(1))
            z1 = pyro.sample(
                "z1", dist.Normal(z2 @ self.A.T + self.a, self.log_s1.exp()).to_event(1)
            )
            loc = z1 @ self.B.T + self.b
            obs = pyrovae.program.observation(x)
            return pyro.sample("x", dist.Normal(loc, self.log_s0.exp()).to_event(1), obs=obs)

    @pyro_method
    def guide(self, x, batch_size=None):
        with pyro.plate("data", len(x)):
            z1 = pyro.sample(
                "z1", dist.MultivariateNormal(x @ self.M.T + self.c, scale_tril=self._tril(self.L1))
            )
            pyro.sample(
                "z2",
                dist.MultivariateNormal(z1 @ self.K.T + self.k, scale_tril=self._tril(self.L2)),
            )

    # ------------------------------------------------------------------ closed forms
    def marginal(self) -> dist.MultivariateNormal:
        """p(x)."""
        c1 = self.A @ self.A.T + torch.diag(self.log_s1.exp() ** 2)
        cov = self.B @ c1 @ self.B.T + torch.diag(self.log_s0.exp() ** 2)
        return dist.MultivariateNormal(self.B @ self.a + self.b, covariance_matrix=cov)

    def exact_guide(self) -> dict[str, torch.Tensor]:
        """Guide parameters with q(z1, z2 | x) = p(z1, z2 | x)."""
        c1 = self.A @ self.A.T + torch.diag(self.log_s1.exp() ** 2)
        s0_inv = torch.diag(self.log_s0.exp() ** -2)
        p1 = torch.linalg.inv(c1) + self.B.T @ s0_inv @ self.B
        cov1 = torch.linalg.inv(p1)
        gain = cov1 @ self.B.T @ s0_inv  # m1 = gain (x - b) + cov1 C1^-1 a
        s1_inv = torch.diag(self.log_s1.exp() ** -2)
        p2 = torch.eye(self.A.shape[1], dtype=torch.float64) + self.A.T @ s1_inv @ self.A
        cov2 = torch.linalg.inv(p2)
        k_mat = cov2 @ self.A.T @ s1_inv
        return {
            "M": gain,
            "c": cov1 @ torch.linalg.inv(c1) @ self.a - gain @ self.b,
            "L1": _raw_tril(torch.linalg.cholesky(cov1)),
            "K": k_mat,
            "k": -k_mat @ self.a,
            "L2": _raw_tril(torch.linalg.cholesky(cov2)),
        }

    def joint_guide(
        self, x: torch.Tensor, params: dict[str, torch.Tensor]
    ) -> dist.MultivariateNormal:
        """q(z1, z2 | x) as one Gaussian over (z1, z2), for guide parameters ``params``."""
        l1, l2 = self._tril(params["L1"]), self._tril(params["L2"])
        s1, s2 = l1 @ l1.T, l2 @ l2.T
        m1 = x @ params["M"].T + params["c"]
        m2 = m1 @ params["K"].T + params["k"]
        k_mat = params["K"]
        cov = torch.cat(
            [
                torch.cat([s1, s1 @ k_mat.T], 1),
                torch.cat([k_mat @ s1, k_mat @ s1 @ k_mat.T + s2], 1),
            ]
        )
        return dist.MultivariateNormal(torch.cat([m1, m2], -1), covariance_matrix=cov)

    def exact_elbo(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) - KL(q(z1, z2|x) || p(z1, z2|x)) per datapoint, differentiable in the guide."""
        own = {name: getattr(self, name) for name in ("M", "c", "L1", "K", "k", "L2")}
        with torch.no_grad():
            exact = self.exact_guide()
        q = self.joint_guide(x, own)
        p = self.joint_guide(x, exact)
        return self.marginal().log_prob(x) - torch.distributions.kl_divergence(q, p)

    def set_guide(self, params: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for name, value in params.items():
                getattr(self, name).copy_(value)


def _raw_tril(lower: torch.Tensor) -> torch.Tensor:
    return lower.tril(-1) + torch.diag_embed(lower.diagonal().log())
