"""The semi-supervised VAE "M2" of Kingma, Rezende, Mohamed and Welling (2014): the program
``m2``, model p(y) p(z) p(x|y,z) and guide q(y|x) q(z|x,y).

A labelled datapoint has y observed; an unlabelled one has y as a latent site that the guide
marks for parallel enumeration, so ``TraceEnum_ELBO`` (the estimator ``enum``) sums it out
exactly: U(x) = sum_y q(y|x) (L(x, y)) + H(q(y|x)). Under ``trace`` or ``tracegraph`` the same
guide samples y and its gradient is a score-function estimate (the sampled-label variant).
"""

from __future__ import annotations

import math
from typing import Literal

import pyro
import torch
from pyro import distributions as dist
from pyro.nn import pyro_method

from pyrovae.components.base import DATA_PLATE, OBSERVED, observation
from pyrovae.components.guides.gaussian import DiagonalNormal
from pyrovae.components.networks.mlp import MLP, Activation
from pyrovae.components.programs.cvae import (
    LABEL,
    LATENT,
    ConditionalVAE,
    check_num_classes,
    joined,
    one_hot,
)
from pyrovae.config import ModelConfig
from pyrovae.errors import ConfigError
from pyrovae.registry import build, register

__all__ = ["M2"]


@register("program", "m2")
class M2(ConditionalVAE):
    """M2 with Kingma et al.'s MNIST sizes by default: z of 50 dimensions, one hidden layer of
    500 softplus units in q(z|x,y), p(x|y,z) and the classifier q(y|x); p(y) uniform, p(z) =
    N(0, I), p(x|y,z) from ``model.likelihood``.

    The training objective per datapoint is Kingma et al.'s J / N + alpha E_labelled[-log
    q(y|x)], J = sum over the labelled training images of L(x, y) + sum over the unlabelled of
    U(x), N the training set's size: with ``weighting = "dataset"`` (the default) each step's
    labelled rows' mean bound weighs N_l / N and its unlabelled rows' N_u / N, an unbiased
    estimate of J / N; ``"batch"`` weighs every row of the step alike, so the labelled images,
    drawn in every step, count N_u B_l / (N_l B_u) times more than in J (500 times at 100
    labels of MNIST). ``alpha`` weighs the auxiliary classification loss, the mean over the
    step's labelled datapoints of -log q(y|x) (Kingma's alpha = 0.1 N on sums over the data
    set is alpha = 0.1 here).
    """

    analytic_kl = False  # y and z are both latent for unlabelled data
    enumerates = True
    labels_required = False
    config_sections = ("likelihood",)

    def __init__(
        self,
        x_shape: tuple[int, ...],
        model_config: ModelConfig,
        num_classes: int | None = None,
        latent: int = 50,
        hidden: tuple[int, ...] = (500,),
        classifier: tuple[int, ...] = (500,),
        activation: Activation = "softplus",
        alpha: float = 0.1,
        min_scale: float = 1e-4,
        weighting: Literal["dataset", "batch"] = "dataset",
    ) -> None:
        classes = check_num_classes(num_classes, "m2")
        if latent < 1:
            raise ConfigError(f"latent must be >= 1, got {latent}")
        if alpha < 0:
            raise ConfigError(f"alpha must be >= 0, got {alpha}")
        like = model_config.likelihood
        likelihood = build(
            "likelihood", like.name, like.options, "model.likelihood", x_shape=tuple(x_shape)
        )
        posterior = DiagonalNormal(latent, min_scale)
        flat_in = (math.prod(x_shape) + classes,)
        encoder = MLP(flat_in, posterior.param_shape, hidden, activation)
        decoder = MLP((latent + classes,), likelihood.param_shape, hidden[::-1], activation)
        super().__init__(posterior, likelihood, encoder, decoder, classes)
        self.classifier = MLP(tuple(x_shape), (classes,), classifier, activation)
        self.alpha = float(alpha)
        self.weighting = weighting  # read by the training loss (ELBOLoss)

    @pyro_method
    def model(
        self,
        x: torch.Tensor | None = None,
        y: torch.Tensor | None = None,
        batch_size: int | None = None,
    ) -> torch.Tensor:
        """p(y) p(z) p(x|y,z): y observed where given, else a latent site; with ``x=None`` it
        draws one datapoint per label, or ``batch_size`` (default 1) with y ~ p(y)."""
        n = self._count(x, y, batch_size)
        with pyro.plate(DATA_PLATE, n):
            y = pyro.sample(LABEL, self._uniform(self.prior.loc), obs=y)
            z = pyro.sample(LATENT, self.prior())
            return pyro.sample(OBSERVED, self.decode(z, y), obs=observation(x))

    @pyro_method
    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """q(y|x) q(z|x,y); y is sampled (enumerated under ``TraceEnum_ELBO``) only when not
        given."""
        with pyro.plate(DATA_PLATE, len(x)):
            if y is None:
                y = pyro.sample(
                    LABEL,
                    dist.Categorical(logits=self.classify(x)),
                    infer={"enumerate": "parallel"},
                )
            return pyro.sample(LATENT, self.encode(x, y))

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """The logits of q(y|x): ``(B, num_classes)``."""
        return self.classifier(x)

    def auxiliary_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``alpha`` times the sum over the labelled datapoints of -log q(y|x)."""
        if self.alpha == 0:
            return x.new_zeros(())
        return -self.alpha * dist.Categorical(logits=self.classify(x)).log_prob(y).sum()

    @torch.no_grad()
    def latent_mean(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The guide's point for z given y, or without labels its mean over q(y|x):
        sum_y q(y|x) E[z|x,y]. ``(B, latent_dim)``."""
        if y is not None:
            return super().latent_mean(x, y)
        classes = torch.arange(self.num_classes, device=x.device).unsqueeze(-1)  # (C, 1)
        flat = self._flat(x)
        codes = one_hot(classes, self.num_classes, flat)
        points = self.posterior.point(self.encoder(joined(flat, codes)))  # (C, B, d)
        weights = torch.softmax(self.classify(x), dim=-1).T.unsqueeze(-1)  # (C, B, 1)
        return (weights * points).sum(0)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The likelihood's mean at the guide's point for z, given y or else q(y|x)'s mode."""
        if y is None:
            y = self.classify(x).argmax(-1)
        return super().reconstruct(x, y)
