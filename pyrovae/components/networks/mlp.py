"""Networks for encoders and decoders: a network maps a tensor of ``in_shape`` to ``out_shape``.

Every network accepts any number of leading batch dimensions (data, particles), so the same
decoder serves one sample of ``z`` per datapoint or a vectorized stack of particles.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from pyrovae.registry import register

__all__ = ["ACTIVATIONS", "MLP"]

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "softplus": nn.Softplus,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "leaky_relu": nn.LeakyReLU,
}

Activation = Literal["softplus", "relu", "elu", "gelu", "silu", "tanh", "leaky_relu"]


@register("network", "mlp")
class MLP(nn.Module):
    """A multi-layer perceptron: flatten, ``hidden`` fully connected layers, a linear output.

    With ``hidden = []`` it is one affine map, the decoder of probabilistic PCA.
    """

    def __init__(
        self,
        in_shape: tuple[int, ...],
        out_shape: tuple[int, ...],
        hidden: tuple[int, ...] = (200,),
        activation: Activation = "softplus",
    ) -> None:
        super().__init__()
        if any(h < 1 for h in hidden):
            from pyrovae.errors import ConfigError

            raise ConfigError(f"mlp: hidden sizes must be positive, got {list(hidden)}")
        self.in_shape = tuple(in_shape)
        self.out_shape = tuple(out_shape)
        sizes = [math.prod(self.in_shape), *hidden, math.prod(self.out_shape)]
        layers: list[nn.Module] = []
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            if i > 0:
                layers.append(ACTIVATIONS[activation]())
            layers.append(nn.Linear(n_in, n_out))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[: x.dim() - len(self.in_shape)]
        if len(self.in_shape) != 1:  # flat inputs go in as they are: no view in the graph
            x = x.reshape(*batch, -1)
        out = self.layers(x)  # (*batch, prod(out_shape))
        return out if len(self.out_shape) == 1 else out.reshape(*batch, *self.out_shape)
