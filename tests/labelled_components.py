"""A tiny program that uses labels, written to the agreed interface of label-using programs
(``uses_labels``, ``num_classes``, ``model(x=None, y=None, batch_size=None)``, ``guide(x,
y=None)``, ``classify(x)``, ``latent_mean(x, y=None)``), and a one-site Gaussian program whose
encoder is set by hand: the fixtures of tests/test_labelled_evaluation.py. Also loaded as a
``--plugin`` file by the command-line tests (it registers the program ``tiny_labelled``).
"""

from __future__ import annotations

import math

import pyro
import torch
from pyro import distributions as dist
from pyro.nn import PyroParam, pyro_method

import pyrovae
from pyrovae.components.base import DATA_PLATE, OBSERVED, Program, observation


class TinyLabelled(Program):
    """p(y) p(z) p(x|y,z): y uniform over ``num_classes``, z ~ N(0, I_2), x ~ N(W z + b_y, 1);
    q(y|x) from ``classify`` and q(z|x,y) a diagonal normal. A missing label is sampled."""

    uses_labels = True

    def __init__(self, x_shape: tuple[int, ...], num_classes: int = 3, latent_dim: int = 2):
        super().__init__(x_shape)
        self.num_classes = num_classes
        self.latent_dim = latent_dim
        size = math.prod(x_shape)
        self.weight = PyroParam(0.1 * torch.randn(latent_dim, size))
        self.offsets = PyroParam(0.1 * torch.randn(num_classes, size))
        self.encoder = torch.nn.Linear(size + num_classes, 2 * latent_dim)
        self.classifier = torch.nn.Linear(size, num_classes)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x.reshape(len(x), -1))

    def latent_mean(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if y is None:
            y = self.classify(x).argmax(-1)
        return self._q_z(x, y).mean

    def _q_z(self, x: torch.Tensor, y: torch.Tensor) -> dist.Distribution:
        onehot = torch.nn.functional.one_hot(y, self.num_classes).to(x.dtype)
        flat = x.reshape(len(x), -1)
        features = torch.cat([flat.expand(*onehot.shape[:-1], -1), onehot], dim=-1)
        loc, raw = self.encoder(features).chunk(2, dim=-1)
        return dist.Normal(loc, torch.nn.functional.softplus(raw) + 1e-3).to_event(1)

    @pyro_method
    def model(self, x=None, y=None, batch_size=None):
        n = len(x) if x is not None else len(y) if y is not None else (batch_size or 1)
        with pyro.plate(DATA_PLATE, n):
            prior = dist.Categorical(logits=torch.zeros(self.num_classes))
            y = pyro.sample("y", prior, obs=y)
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            mean = z @ self.weight + self.offsets[y]
            x_obs = None if x is None else observation(x.reshape(n, -1))
            return pyro.sample(OBSERVED, dist.Normal(mean, 1.0).to_event(1), obs=x_obs)

    @pyro_method
    def guide(self, x, y=None):
        with pyro.plate(DATA_PLATE, len(x)):
            if y is None:
                y = pyro.sample("y", dist.Categorical(logits=self.classify(x)))
            return pyro.sample("z", self._q_z(x, y))


@pyrovae.register("program", "tiny_labelled")
def tiny_labelled(x_shape: tuple[int, ...]) -> TinyLabelled:
    """The tiny labelled program, 10 classes (digits)."""
    return TinyLabelled(x_shape, num_classes=10)


tiny_labelled.config_sections = ()


class Gaussian(Program):
    """p(z) = N(0, I_2), p(x|z) = N((z, 0), 1) for x in R^3; q(z|x) = N(a x[:2], s^2 I) with
    ``a`` and ``s`` fixed: ``a = 0, s = 1`` is a collapsed posterior (q = p), ``a = 1,
    s = 0.1`` a healthy one. KL per dimension in closed form: 0.5 (s^2 + m^2 - 1) - log s."""

    analytic_kl = True

    def __init__(self, a: float, s: float) -> None:
        super().__init__((3,))
        self.a, self.s = a, s
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # a parameter: the device is known

    @pyro_method
    def model(self, x=None, batch_size=None):
        n = len(x) if x is not None else (batch_size or 1)
        with pyro.plate(DATA_PLATE, n):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            mean = torch.cat([z, torch.zeros(*z.shape[:-1], 1)], dim=-1) + self.anchor
            return pyro.sample(OBSERVED, dist.Normal(mean, 1.0).to_event(1), obs=observation(x))

    @pyro_method
    def guide(self, x, batch_size=None):
        with pyro.plate(DATA_PLATE, len(x)):
            return pyro.sample("z", dist.Normal(self.a * x[:, :2], self.s).to_event(1))
