"""A hand-written PyTorch M2 (Kingma et al. 2014, semi-supervised VAE), the speed reference of
pyrovae's M2: the same sizes, the classes summed in a batch dimension, no Pyro.

Networks (softplus hidden layers, D = image size, C = 10 classes):
q(y|x): D-500-C logits; q(z|x,y): [x, onehot y]-500-(mu, log sigma) of a 50-d Normal;
p(x|z,y): [z, onehot y]-500-D Bernoulli logits; p(z) = N(0, I), p(y) uniform.

Per step, with ``L(x, y) = -(log p(x|y,z) + log p(y) - KL(q(z|x,y) || p(z)))``, one
reparameterized z per (x, y), the KL from ``torch.distributions`` and
``U(x) = sum_y q(y|x) L(x, y) - H(q(y|x))``, the loss is that of pyrovae's M2 (docs/labels.md):

    loss = mean over the step's datapoints of U(x) (unlabelled) or L(x, y) (labelled)
         + alpha * mean over the labelled datapoints of -log q(y|x)

(alpha 0.1 by default: Kingma's alpha = 0.1 N on sums over the data set, per datapoint).

The unlabelled sum over the classes expands the batch to ``(C * B)`` rows (every image beside
every class) and weights the ``L`` of each row by ``q(y|x)``. Batches are pyrovae's
``labelled_batches`` of ``load_splits`` with ``data.labelled = N``: per step, ``--batch-size``
images with hidden labels and ``min(batch size, N)`` labelled ones, binarized afresh every epoch
(Adam 1e-3, as examples/configs/m2_mnist.toml). ``epoch_seconds`` times one such epoch;
the command line prints the epoch times and, as a check that it learns, the test error of q(y|x)
after each epoch.

    OMP_NUM_THREADS=1 python benchmarks/torch_m2.py --data-dir /work/shared/data --labels 100 \
        --epochs 3 --threads 1
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from torch import nn
from torch.distributions import Bernoulli, Normal, kl_divergence

import pyrovae
from pyrovae.components.datasets import Splits, load_splits
from pyrovae.components.labelled_batches import labelled_batches

LATENT, HIDDEN = 50, 500


def mlp(n_in: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, HIDDEN), nn.Softplus(), nn.Linear(HIDDEN, n_out))


class M2(nn.Module):
    """Kingma et al.'s M2 with one hidden layer of 500 in every network."""

    def __init__(self, x_dim: int, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.classifier = mlp(x_dim, num_classes)  # q(y|x)
        self.encoder = mlp(x_dim + num_classes, 2 * LATENT)  # q(z|x,y)
        self.decoder = mlp(LATENT + num_classes, x_dim)  # p(x|z,y)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x.flatten(1))

    def labelled_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``L(x, y)`` of each row: the negative ELBO of x with its label y observed."""
        x = x.flatten(1)
        onehot = nn.functional.one_hot(y, self.num_classes).to(x.dtype)
        mu, log_sigma = self.encoder(torch.cat([x, onehot], -1)).chunk(2, -1)
        q = Normal(mu, log_sigma.exp())
        z = q.rsample()
        logits = self.decoder(torch.cat([z, onehot], -1))
        log_px = Bernoulli(logits=logits).log_prob(x).sum(-1)
        kl = kl_divergence(q, Normal(torch.zeros_like(mu), torch.ones_like(mu))).sum(-1)
        return -(log_px - math.log(self.num_classes) - kl)

    def unlabelled_loss(self, x: torch.Tensor) -> torch.Tensor:
        """``sum_y q(y|x) L(x, y) - H(q(y|x))`` of each row, the classes in one batch of C*B."""
        n, c = len(x), self.num_classes
        log_q = self.classify(x).log_softmax(-1)  # (B, C)
        y = torch.arange(c, device=x.device).repeat_interleave(n)  # class-major: (C*B,)
        losses = self.labelled_loss(x.repeat(c, *([1] * (x.dim() - 1))), y).view(c, n).T
        q = log_q.exp()
        return (q * losses).sum(-1) + (q * log_q).sum(-1)

    def loss(
        self, x_u: torch.Tensor, x_l: torch.Tensor, y_l: torch.Tensor, alpha: float
    ) -> torch.Tensor:
        """The step's loss per datapoint (see the module's docstring)."""
        classification = nn.functional.cross_entropy(self.classify(x_l), y_l)  # the mean
        total = self.labelled_loss(x_l, y_l).sum()
        if len(x_u):
            total = total + self.unlabelled_loss(x_u).sum()
        return total / (len(x_u) + len(x_l)) + alpha * classification


def epoch_seconds(
    model: M2,
    optimizer: torch.optim.Optimizer,
    splits: Splits,
    generator: torch.Generator,
    batch_size: int = 100,
    alpha: float = 0.1,
) -> tuple[float, float, int]:
    """Seconds, mean step loss and number of steps of one training epoch."""
    started = time.perf_counter()
    x_epoch = torch.bernoulli(splits.train, generator=generator)
    total, steps = 0.0, 0
    for unlabelled, labelled in labelled_batches(
        splits, batch_size, generator, splits.train.device
    ):
        loss = model.loss(
            x_epoch[unlabelled], x_epoch[labelled], splits.train_labels[labelled], alpha
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += float(loss.detach())
        steps += 1
    return time.perf_counter() - started, total / steps, steps


@torch.no_grad()
def test_error(model: M2, x: torch.Tensor, y: torch.Tensor) -> float:
    """Percent of ``x`` whose most probable class under q(y|x) is not ``y``."""
    wrong = sum(
        int((model.classify(xb).argmax(-1) != yb).sum())
        for xb, yb in zip(x.split(2000), y.split(2000), strict=True)
    )
    return 100.0 * wrong / len(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--data-dir", default="")
    parser.add_argument(
        "--validation-size",
        type=float,
        default=0.16666667,
        help="data.validation_size, as examples/configs/m2_mnist.toml (10,000 MNIST images):"
        " the labelled images are chosen from the rest",
    )
    parser.add_argument("--labels", type=int, default=100, help="data.labelled")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--alpha", type=float, default=0.1, help="weight of -log q(y|x)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    overrides = [
        f"data.name={args.dataset}",
        f"data.labelled={args.labels}",
        f"data.validation_size={args.validation_size}",
    ]
    if args.data_dir:
        overrides.append(f"data.root={args.data_dir!r}")
    splits = load_splits(pyrovae.load_config(None, overrides).data, device)
    torch.manual_seed(args.seed)
    model = M2(splits.train[0].numel(), splits.num_classes).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    print(
        f"hand-written PyTorch M2 ({args.dataset}, {len(splits.train)} training images,"
        f" {args.labels} labelled, batch {args.batch_size}, alpha {args.alpha}, Adam"
        f" {args.lr}, {device}, {args.threads} thread(s), seed {args.seed})",
        flush=True,
    )
    for epoch in range(1, args.epochs + 1):
        model.train()
        seconds, loss, steps = epoch_seconds(
            model, optimizer, splits, generator, args.batch_size, args.alpha
        )
        model.eval()
        error = test_error(model, splits.test, splits.test_labels)
        print(
            f"epoch {epoch}: {seconds:.1f} s ({1000 * seconds / steps:.1f} ms/step, {steps}"
            f" steps), loss {loss:.2f}, test error {error:.2f}%"
            f" ({len(splits.test)} test images)",
            flush=True,
        )


if __name__ == "__main__":
    main()
