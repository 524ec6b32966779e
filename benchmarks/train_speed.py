"""Training speed: pyrovae's loop against a hand-written PyTorch VAE of the same network.

Both train the 784-400-50 softplus VAE with a Bernoulli likelihood, batch 256, Adam 1e-3, dynamic
binarization, on the MNIST training split held as tensors on the device. They run back to back in
one process, in alternating blocks, and the script prints the ratio of median epoch times
(pyrovae / reference). pyrovae's epoch time is its own ``epoch_seconds`` metric (the training
steps of one epoch, validation excluded); the reference times the same work.

    python benchmarks/train_speed.py --data-dir ../shared/data --blocks 3 --epochs 2
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F
from timing import add_timing_options, parse_timing_args, pyrovae_epochs, timed_epochs
from torch import nn

import pyrovae
from pyrovae.components.datasets import load_splits


class ReferenceVAE(nn.Module):
    """The same network as pyrovae's mlp encoder/decoder with a diagonal-normal guide."""

    def __init__(self, x_dim: int = 784, hidden: int = 400, z_dim: int = 50) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.encoder = nn.Sequential(
            nn.Linear(x_dim, hidden), nn.Softplus(), nn.Linear(hidden, 2 * z_dim)
        )
        self.decoder = nn.Sequential(
            nn.Linear(z_dim, hidden), nn.Softplus(), nn.Linear(hidden, x_dim)
        )

    def loss(self, x: torch.Tensor, analytic_kl: bool) -> torch.Tensor:
        """Negative ELBO per datapoint: one reparameterized sample, as Trace_ELBO computes it."""
        x = x.reshape(len(x), -1)
        loc, raw = self.encoder(x).split(self.z_dim, dim=-1)
        scale = F.softplus(raw) + 1e-4
        z = loc + scale * torch.randn_like(loc)
        logits = self.decoder(z)
        log_px = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
        if analytic_kl:
            kl = (0.5 * (loc**2 + scale**2 - 1) - scale.log()).sum(-1)
        else:
            log_pz = (-0.5 * z**2 - 0.5 * torch.log(torch.tensor(2 * torch.pi))).sum(-1)
            log_qz = torch.distributions.Normal(loc, scale).log_prob(z).sum(-1)
            kl = log_qz - log_pz
        return (kl - log_px).mean()


def reference_epochs(
    train: torch.Tensor, epochs: int, batch_size: int, analytic_kl: bool, lean: bool = False
) -> list[float]:
    model = ReferenceVAE().to(train.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=lean)

    def step(x: torch.Tensor) -> torch.Tensor:
        loss = model.loss(x, analytic_kl)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return timed_epochs(train, epochs, batch_size, 0, step, lean)[0]


def main(args: argparse.Namespace) -> None:
    overrides = [
        f"data.root={args.data_dir!r}".replace("'", '"'),
        f"train.epochs={args.epochs}",
        f"train.device={args.device!r}".replace("'", '"'),
        f"train.estimator.name={args.estimator!r}".replace("'", '"'),
    ]
    config = pyrovae.load_config(args.config, overrides)
    device = torch.device("cuda" if args.device == "cuda" else "cpu")
    train = load_splits(config.data, device).train
    analytic = args.estimator == "meanfield"
    ours, reference = [], []
    for block in range(args.blocks):
        reference += reference_epochs(
            train, args.epochs, config.train.batch_size, analytic, args.lean
        )
        ours += pyrovae_epochs(config)[0]
        print(
            f"block {block + 1}: reference {statistics.median(reference):.3f} s/epoch,"
            f" pyrovae {statistics.median(ours):.3f} s/epoch"
        )
    ratio = statistics.median(ours) / statistics.median(reference)
    print(
        f"median epoch: pyrovae {statistics.median(ours):.3f} s, reference"
        f" {statistics.median(reference):.3f} s, ratio {ratio:.3f}"
        f" ({len(ours)} epochs each, estimator {args.estimator}, {device},"
        f" {torch.get_num_threads()} threads,"
        f" {'lean' if args.lean else 'plain'} reference,"
        f" {'CPU' if args.cpu_clock else 'wall'} clock)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="examples/configs/mnist.toml")
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--estimator", default="trace", choices=["trace", "meanfield"])
    parser.add_argument("--epochs", type=int, default=2, help="epochs per block")
    parser.add_argument("--blocks", type=int, default=3, help="alternating blocks")
    add_timing_options(parser, lean=True)
    main(parse_timing_args(parser))
