"""The conditional VAE of Sohn, Lee and Yan (2015): the program ``cvae``, model p(z) p(x|z,y)
and guide q(z|x,y), the label y given. Its encoder sees the flattened x beside the one-hot y,
its decoder z beside the one-hot y; ``m2`` (Kingma et al. 2014) builds on the same parts."""

from __future__ import annotations

import math

import pyro
import torch
import torch.nn.functional as F
from pyro import distributions as dist
from pyro.nn import pyro_method

from pyrovae.components.base import (
    DATA_PLATE,
    OBSERVED,
    Likelihood,
    Program,
    VariationalFamily,
    observation,
)
from pyrovae.components.priors.gaussian import StandardNormal
from pyrovae.config import ModelConfig
from pyrovae.errors import ConfigError
from pyrovae.registry import build, register

__all__ = ["LABEL", "LATENT", "ConditionalVAE", "one_hot", "joined", "check_num_classes"]

#: The label's site, and the continuous latent's.
LABEL = "y"
LATENT = "z"


def one_hot(y: torch.Tensor, num_classes: int, like: torch.Tensor) -> torch.Tensor:
    """The one-hot code of the class indices ``y``, in the dtype and device of ``like``."""
    return F.one_hot(y, num_classes).to(like)


def joined(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a`` and ``b`` broadcast over their leading dimensions and concatenated on the last one
    (an enumerated label of shape ``(C, 1, C)`` beside a batch ``(B, D)`` gives ``(C, B, D+C)``)."""
    shape = torch.broadcast_shapes(a.shape[:-1], b.shape[:-1])
    return torch.cat([a.expand(*shape, a.shape[-1]), b.expand(*shape, b.shape[-1])], dim=-1)


def check_num_classes(num_classes: int | None, program: str) -> int:
    """The number of classes a label-using program was given, or a one-line refusal."""
    if num_classes is None:
        raise ConfigError(
            f"model.program: {program!r} needs a dataset with labels, and this one has none;"
            " choose data.name = 'digits', 'mnist', 'fashion_mnist', ... or a file with labels"
        )
    if num_classes < 2:
        raise ConfigError(f"model.program: {program!r} needs at least 2 classes, got {num_classes}")
    return int(num_classes)


class ConditionalVAE(Program):
    """p(z) p(x|z,y) with z ~ N(0, I), and q(z|x,y); the networks get the one-hot label
    concatenated to their input. ``model(None, batch_size=n)`` draws the labels uniformly."""

    uses_labels = True
    analytic_kl = True  # one latent site, z, when y is observed
    #: The label is needed to score x: the validation and test splits pass theirs.
    labels_required = True

    def __init__(
        self,
        posterior: VariationalFamily,
        likelihood: Likelihood,
        encoder: torch.nn.Module,
        decoder: torch.nn.Module,
        num_classes: int,
    ) -> None:
        super().__init__(likelihood.x_shape)
        self.num_classes = num_classes
        self.latent_dim = posterior.latent_dim
        self.prior = StandardNormal(self.latent_dim)
        self.posterior = posterior
        self.likelihood = likelihood
        self.encoder = encoder
        self.decoder = decoder

    def _count(self, x: torch.Tensor | None, y: torch.Tensor | None, batch_size: int | None) -> int:
        if x is not None:
            if y is not None and y.shape != (len(x),):
                raise ValueError(f"labels of shape {tuple(y.shape)} for {len(x)} datapoints")
            return len(x)
        return len(y) if y is not None else (batch_size or 1)

    def _uniform(self, like: torch.Tensor) -> dist.Categorical:
        """p(y): uniform over the classes."""
        return dist.Categorical(logits=like.new_zeros(self.num_classes))

    @pyro_method
    def model(
        self,
        x: torch.Tensor | None = None,
        y: torch.Tensor | None = None,
        batch_size: int | None = None,
    ) -> torch.Tensor:
        """p(z) p(x|z,y); x needs its labels y. With ``x=None`` it draws one datapoint per
        label, or ``batch_size`` (default 1) with labels drawn uniformly."""
        if x is not None and y is None:
            raise ConfigError("cvae: the model scores x given its labels; pass y with x")
        n = self._count(x, y, batch_size)
        with pyro.plate(DATA_PLATE, n):
            if y is None:
                y = pyro.sample(LABEL, self._uniform(self.prior.loc))
            z = pyro.sample(LATENT, self.prior())
            return pyro.sample(OBSERVED, self.decode(z, y), obs=observation(x))

    @pyro_method
    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """q(z|x,y)."""
        if y is None:
            raise ConfigError("cvae: the guide needs the labels y of x")
        with pyro.plate(DATA_PLATE, len(x)):
            return pyro.sample(LATENT, self.encode(x, y))

    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(*x.shape[: x.dim() - len(self.x_shape)], -1)

    def encode(self, x: torch.Tensor, y: torch.Tensor) -> dist.TorchDistribution:
        """q(z|x,y), batched over the leading dimensions of x and y (broadcast)."""
        flat = self._flat(x)
        return self.posterior(self.encoder(joined(flat, one_hot(y, self.num_classes, flat))))

    def decode(self, z: torch.Tensor, y: torch.Tensor) -> dist.TorchDistribution:
        """p(x|z,y), batched over the leading dimensions of z and y (broadcast)."""
        return self.likelihood(self.decoder(joined(z, one_hot(y, self.num_classes, z))))

    @torch.no_grad()
    def latent_mean(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The guide's point for z given x and its labels: ``(B, latent_dim)``."""
        if y is None:
            raise ConfigError("cvae: latent_mean needs the labels y of x")
        flat = self._flat(x)
        return self.posterior.point(self.encoder(joined(flat, one_hot(y, self.num_classes, flat))))

    @torch.no_grad()
    def sample_labels(self, y: torch.Tensor) -> torch.Tensor:
        """The likelihood's mean for one draw of z per label ``y``: ``(len(y), *x_shape)``."""
        z = self.prior().sample((len(y),))
        return self.decode(z, y).mean.reshape(len(y), *self.x_shape)

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """The likelihood's mean for ``n`` draws of (y, z) from the model."""
        y = torch.randint(self.num_classes, (n,), device=self.prior.loc.device)
        return self.sample_labels(y)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The likelihood's mean at the guide's point for z given x and its labels y."""
        if y is None:
            raise ConfigError("cvae: reconstructions need the labels y of x")
        return self.decode(self.latent_mean(x, y), y).mean.reshape(len(x), *self.x_shape)


def build_parts(
    config: ModelConfig, x_shape: tuple[int, ...], num_classes: int
) -> tuple[VariationalFamily, Likelihood, torch.nn.Module, torch.nn.Module]:
    """q(z|.), p(x|.) and the networks named in ``config``, for inputs with the label beside."""
    latent_dim = config.latent_dim
    ctx = {"latent_dim": latent_dim, "x_shape": tuple(x_shape)}
    posterior = build("guide", config.guide.name, config.guide.options, "model.guide", **ctx)
    likelihood = build(
        "likelihood", config.likelihood.name, config.likelihood.options, "model.likelihood", **ctx
    )
    encoder = build(
        "network",
        config.encoder.name,
        config.encoder.options,
        "model.encoder",
        in_shape=(math.prod(x_shape) + num_classes,),
        out_shape=tuple(posterior.param_shape),
    )
    decoder = build(
        "network",
        config.decoder.name,
        config.decoder.options,
        "model.decoder",
        in_shape=(latent_dim + num_classes,),
        out_shape=tuple(likelihood.param_shape),
    )
    return posterior, likelihood, encoder, decoder


@register("program", "cvae")
def cvae(
    model_config: ModelConfig, x_shape: tuple[int, ...], num_classes: int | None = None
) -> ConditionalVAE:
    """The conditional VAE: q(z|x,y) from ``model.guide`` over ``model.encoder``, p(x|z,y)
    from ``model.likelihood`` over ``model.decoder``, p(z) = N(0, I); the networks take flat
    vectors (x or z, then the one-hot label), so choose ``mlp`` networks."""
    classes = check_num_classes(num_classes, "cvae")
    return ConditionalVAE(*build_parts(model_config, x_shape, classes), num_classes=classes)


cvae.config_sections = ("latent_dim", "guide", "likelihood", "encoder", "decoder")
