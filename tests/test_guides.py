"""The guides of issue 4: the full-covariance normal has covariance L L^T; the flow guides'
log-densities equal the change of variables of their sampling map (numerical Jacobian), for a
batch of datapoints under a leading particle dimension, as vectorized particles use them."""

from __future__ import annotations

import pytest
import torch
from torch.autograd.functional import jacobian

from pyrovae.components.guides.flows import IAF, Planar
from pyrovae.components.guides.gaussian import DiagonalNormal, FullNormal
from pyrovae.errors import ConfigError


def test_full_normal_covariance_is_the_cholesky_factor_squared():
    family = FullNormal(latent_dim=3, min_scale=1e-4)
    assert family.param_shape == (9,)  # 3 means, 3 diagonal entries, 3 below the diagonal
    params = torch.tensor([0.1, 0.2, 0.3, 0.0, 1.0, -1.0, 0.5, -0.7, 0.9])
    q = family(params)
    softplus = torch.nn.functional.softplus
    diag = softplus(torch.tensor([0.0, 1.0, -1.0])) + 1e-4
    L = torch.tensor([[diag[0], 0, 0], [0.5, diag[1], 0], [-0.7, 0.9, diag[2]]])
    torch.testing.assert_close(q.loc, params[:3])
    torch.testing.assert_close(q.covariance_matrix, L @ L.T)


def _flow(name: str):
    torch.manual_seed(2)
    family = {"iaf": IAF, "planar": Planar}[name](latent_dim=3, steps=2, context_dim=4)
    with torch.no_grad():  # move off the initialization so no step is near the identity
        for p in family.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return family


@pytest.mark.parametrize("name", ["iaf", "planar"])
def test_flow_guide_density_is_the_change_of_variables_under_particles(name, float64):
    family = _flow(name)
    params = torch.randn(2, family.param_shape[0])  # two datapoints
    q = family(params).expand((3, 2))  # three vectorized particles, as pyro.plate does
    u = q.base_dist.sample()  # (3, 2, 3)

    def g(v: torch.Tensor) -> torch.Tensor:
        for transform in q.transforms:
            v = transform(v)
        return v

    expected = torch.empty(3, 2)
    for s in range(3):
        for b in range(2):

            def g_sb(v, s=s, b=b):
                w = u.clone()
                w[s, b] = v
                return g(w)[s, b]

            log_det = torch.linalg.slogdet(jacobian(g_sb, u[s, b])).logabsdet
            expected[s, b] = q.base_dist.log_prob(u)[s, b] - log_det
    z = g(u)  # sets each step's cache, as rsample does: planar scores only its own samples
    torch.testing.assert_close(q.log_prob(z), expected, atol=1e-8, rtol=0)
    if family.scores_any_point:  # IAF also inverts: score a fresh copy of z
        torch.testing.assert_close(q.log_prob(z.clone()), expected, atol=1e-8, rtol=0)


@pytest.mark.parametrize(
    "family", [DiagonalNormal(3), FullNormal(3), IAF(3), Planar(3)], ids=lambda f: type(f).__name__
)
def test_guides_sample_and_score_with_particles(family):
    params = torch.randn(5, family.param_shape[0])
    q = family(params).expand((4, 5))
    z = q.rsample()
    assert z.shape == (4, 5, 3) and torch.isfinite(q.log_prob(z)).all()
    assert q.log_prob(z).shape == (4, 5)
    assert family.point(params).shape == (5, 3)


def test_flow_guides_refuse_bad_options():
    with pytest.raises(ConfigError, match="context_dim"):
        IAF(latent_dim=3, context_dim=0)
    with pytest.raises(ConfigError, match=">= latent_dim"):
        IAF(latent_dim=8, hidden=(4,))
    with pytest.raises(ConfigError, match="steps"):
        Planar(latent_dim=3, steps=0)
