"""Training speed of the ``two_layer`` program: ``pyrovae.train`` against a hand-written PyTorch
VAE with the same two stochastic layers.

Both train Burda et al.'s (2015) MNIST architecture, 784-[100,100]-100-[50,50]-50 with tanh,
diagonal-normal conditionals (scale softplus(raw) + 1e-4), a Bernoulli likelihood, Adam 1e-3,
the batch size of examples/configs/two_layer_mnist.toml (100), one reparameterized sample per
datapoint and a Monte Carlo KL (the ``trace`` estimator, as Trace_ELBO computes it), dynamic
binarization. Both see the same images: the first ``--train-limit`` MNIST training images are
written to a temporary ``.pt`` file read by pyrovae's ``file`` dataset, and the reference takes
the training tensor ``pyrovae.components.datasets.load_splits`` returns for that config.
They run back to back
in one process, in alternating blocks, and the script prints the ratio of median epoch times
(pyrovae / reference). pyrovae's epoch time is its ``epoch_seconds`` metric (training steps
only, validation excluded); the reference times the same work.

    OMP_NUM_THREADS=1 python benchmarks/two_layer_speed.py --data-dir ../shared/data \
        --threads 1 --blocks 3 --epochs 1 --train-limit 20000
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from timing import (
    VALIDATION_IMAGES,
    add_timing_options,
    file_overrides,
    parse_timing_args,
    pyrovae_epochs,
    timed_epochs,
    write_images,
)
from torch import nn

import pyrovae
from pyrovae.components.datasets import load_splits

LOG_2PI = math.log(2 * math.pi)


def mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers with tanh between them, as pyrovae's ``mlp`` network builds them."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        if i > 0:
            layers.append(nn.Tanh())
        layers.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*layers)


def normal_params(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    loc, raw = out.chunk(2, dim=-1)
    return loc, F.softplus(raw) + 1e-4


def normal_log_prob(z: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return (-0.5 * ((z - loc) / scale) ** 2 - scale.log() - 0.5 * LOG_2PI).sum(-1)


class ReferenceTwoLayerVAE(nn.Module):
    """p(z2) p(z1|z2) p(x|z1) and q(z1|x) q(z2|z1), every network two tanh layers deep."""

    def __init__(self, x_dim: int = 784, z1: int = 100, z2: int = 50) -> None:
        super().__init__()
        self.encoder1 = mlp([x_dim, 100, 100, 2 * z1])
        self.encoder2 = mlp([z1, 50, 50, 2 * z2])
        self.decoder2 = mlp([z2, 50, 50, 2 * z1])
        self.decoder1 = mlp([z1, 100, 100, x_dim])

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """Negative ELBO per datapoint from one reparameterized sample of (z1, z2)."""
        x = x.reshape(len(x), -1)
        q1_loc, q1_scale = normal_params(self.encoder1(x))
        z1 = q1_loc + q1_scale * torch.randn_like(q1_loc)
        q2_loc, q2_scale = normal_params(self.encoder2(z1))
        z2 = q2_loc + q2_scale * torch.randn_like(q2_loc)
        p1_loc, p1_scale = normal_params(self.decoder2(z2))
        logits = self.decoder1(z1)
        log_px = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
        log_p = log_px + normal_log_prob(z1, p1_loc, p1_scale) - 0.5 * (z2**2 + LOG_2PI).sum(-1)
        log_q = normal_log_prob(z1, q1_loc, q1_scale) + normal_log_prob(z2, q2_loc, q2_scale)
        return (log_q - log_p).mean()


def reference_epochs(
    train: torch.Tensor, epochs: int, batch_size: int, lr: float, seed: int, lean: bool = False
) -> tuple[list[float], list[float]]:
    """Epoch times and mean training losses (nats per datapoint) of a fresh reference model."""
    torch.manual_seed(seed)
    model = ReferenceTwoLayerVAE(x_dim=math.prod(train.shape[1:])).to(train.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, fused=lean)

    def step(x: torch.Tensor) -> torch.Tensor:
        loss = model.loss(x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return timed_epochs(train, epochs, batch_size, seed, step, lean)


def main(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    root = f"data.root={args.data_dir!r}".replace("'", '"')
    with tempfile.TemporaryDirectory() as folder:
        images = Path(folder) / "mnist_train.pt"
        write_images(
            pyrovae.load_config(args.config, [root]), args.train_limit + VALIDATION_IMAGES, images
        )
        overrides = file_overrides(images, args.epochs, args.device)
        config = pyrovae.load_config(args.config, overrides)
        program = config.model.program
        if program.name != "two_layer":
            raise SystemExit(f"--config must choose model.program two_layer, not {program.name}")
        device = torch.device("cuda" if args.device == "cuda" else "cpu")
        train = load_splits(config.data, device).train
        cfg = config.train
        ours, reference = [], []

        def run_reference() -> list[float]:
            times, losses = reference_epochs(
                train, args.epochs, cfg.batch_size, cfg.lr, cfg.seed, args.lean
            )
            reference.extend(times)
            return losses

        def run_pyrovae() -> list[float]:
            times, losses = pyrovae_epochs(config)
            ours.extend(times)
            return losses

        for block in range(args.blocks):
            # Alternate which goes first, so that neither always runs on a warmer machine.
            if block % 2 == 0:
                reference_loss, our_loss = run_reference(), run_pyrovae()
            else:
                our_loss, reference_loss = run_pyrovae(), run_reference()
            # The training losses per epoch: the same objective, so they should be close.
            print(
                f"block {block + 1}: reference {statistics.median(reference):.3f} s/epoch,"
                f" pyrovae {statistics.median(ours):.3f} s/epoch; training -ELBO per epoch:"
                f" reference {', '.join(f'{v:.1f}' for v in reference_loss)},"
                f" pyrovae {', '.join(f'{v:.1f}' for v in our_loss)}",
                flush=True,
            )
    ratio = statistics.median(ours) / statistics.median(reference)
    print(
        f"median epoch: pyrovae two_layer {statistics.median(ours):.3f} s, reference"
        f" {statistics.median(reference):.3f} s, ratio pyrovae/reference {ratio:.3f}"
        f" ({len(ours)} epochs each of {len(train)} images, batch {cfg.batch_size}, trace,"
        f" {device}, {torch.get_num_threads()} threads,"
        f" {'lean' if args.lean else 'plain'} reference,"
        f" {'CPU' if args.cpu_clock else 'wall'} clock)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="examples/configs/two_layer_mnist.toml")
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per block (1)")
    parser.add_argument("--blocks", type=int, default=3, help="alternating blocks (3)")
    parser.add_argument(
        "--train-limit", type=int, default=50000, help="train on the first N images (50000)"
    )
    add_timing_options(parser, lean=True)
    main(parse_timing_args(parser))
