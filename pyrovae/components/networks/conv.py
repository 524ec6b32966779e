"""Convolutional encoder and decoder for images of shape (C, H, W), such as 28x28 MNIST and
32x32 CIFAR-10, with the interface of the MLP: ``in_shape``, ``out_shape``, and any number of
leading batch dimensions (data, particles), flattened for the convolutions and restored after.

Every convolution is 4x4 with stride 2 and padding 1, so each layer halves the height and width
(28 -> 14 -> 7, 32 -> 16 -> 8); the decoder mirrors the encoder with transposed convolutions
that double them, and crops to the image size when it is not a multiple of 2^layers.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from pyrovae.components.networks.mlp import ACTIVATIONS, Activation
from pyrovae.errors import ConfigError
from pyrovae.registry import register

__all__ = ["ConvEncoder", "ConvDecoder"]

KERNEL, STRIDE, PADDING = 4, 2, 1


def _halved(size: int, layers: int) -> int:
    for _ in range(layers):
        size = (size + 2 * PADDING - KERNEL) // STRIDE + 1
    return size


def _check(name: str, channels: tuple[int, ...], hidden: int) -> None:
    if not channels or any(c < 1 for c in channels):
        raise ConfigError(f"{name}: channels must be a non-empty list of positive widths")
    if hidden < 0:
        raise ConfigError(f"{name}: hidden must be >= 0 (0: no dense layer), got {hidden}")


@register("network", "conv_encoder")
class ConvEncoder(nn.Module):
    """Convolutional encoder: stride-2 convolutions of ``channels`` widths, each halving the
    image, then a dense layer of ``hidden`` units (0: none) and a linear output of ``out_shape``.
    Needs image input (C, H, W): use it as ``model.encoder``."""

    def __init__(
        self,
        in_shape: tuple[int, ...],
        out_shape: tuple[int, ...],
        channels: tuple[int, ...] = (32, 64),
        hidden: int = 256,
        activation: Activation = "relu",
    ) -> None:
        super().__init__()
        _check("conv_encoder", channels, hidden)
        if len(in_shape) != 3:
            raise ConfigError(
                f"conv_encoder: needs images of shape (C, H, W), got in_shape {tuple(in_shape)};"
                " use it as model.encoder, and conv_decoder as model.decoder"
            )
        self.in_shape, self.out_shape = tuple(in_shape), tuple(out_shape)
        height, width = (_halved(s, len(channels)) for s in in_shape[1:])
        if min(height, width) < 1:
            raise ConfigError(
                f"conv_encoder: {len(channels)} stride-2 layers shrink a {in_shape[1]}x"
                f"{in_shape[2]} image to nothing; use fewer channels entries"
            )
        layers: list[nn.Module] = []
        widths = [in_shape[0], *channels]
        for n_in, n_out in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Conv2d(n_in, n_out, KERNEL, STRIDE, PADDING), ACTIVATIONS[activation]()]
        layers.append(nn.Flatten())
        flat = channels[-1] * height * width
        if hidden:
            layers += [nn.Linear(flat, hidden), ACTIVATIONS[activation]()]
            flat = hidden
        layers.append(nn.Linear(flat, math.prod(self.out_shape)))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[: x.dim() - 3]
        out = self.layers(x.reshape(-1, *self.in_shape))  # (prod(batch), prod(out_shape))
        return out.reshape(*batch, *self.out_shape)


@register("network", "conv_decoder")
class ConvDecoder(nn.Module):
    """Convolutional decoder, the mirror of ``conv_encoder`` (give it the same ``channels``): a
    dense layer of ``hidden`` units (0: none) to a small feature map, then stride-2 transposed
    convolutions that double it up to the image. ``out_shape`` must end in (C, H, W); leading
    parameter dimensions are folded into the channels. Use it as ``model.decoder``."""

    def __init__(
        self,
        in_shape: tuple[int, ...],
        out_shape: tuple[int, ...],
        channels: tuple[int, ...] = (32, 64),
        hidden: int = 256,
        activation: Activation = "relu",
    ) -> None:
        super().__init__()
        _check("conv_decoder", channels, hidden)
        if len(out_shape) < 3:
            raise ConfigError(
                f"conv_decoder: needs an image output (C, H, W), got out_shape"
                f" {tuple(out_shape)}; use it as model.decoder, and conv_encoder as model.encoder"
            )
        self.in_shape, self.out_shape = tuple(in_shape), tuple(out_shape)
        self.image = tuple(out_shape[-2:])
        scale = STRIDE ** len(channels)
        start = tuple(math.ceil(s / scale) for s in self.image)
        widths = [*reversed(channels), math.prod(out_shape[:-2])]
        layers: list[nn.Module] = []
        flat = math.prod(self.in_shape)
        if hidden:
            layers += [nn.Linear(flat, hidden), ACTIVATIONS[activation]()]
            flat = hidden
        layers += [
            nn.Linear(flat, widths[0] * math.prod(start)),
            ACTIVATIONS[activation](),
            nn.Unflatten(1, (widths[0], *start)),
        ]
        for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            if i:
                layers.append(ACTIVATIONS[activation]())
            layers.append(nn.ConvTranspose2d(n_in, n_out, KERNEL, STRIDE, PADDING))
        self.layers = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        batch = z.shape[: z.dim() - len(self.in_shape)]
        out = self.layers(z.reshape(-1, math.prod(self.in_shape)))
        out = out[..., : self.image[0], : self.image[1]]  # crop sizes not a multiple of 2^layers
        return out.reshape(*batch, *self.out_shape)
