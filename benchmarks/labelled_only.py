"""The labelled-only baseline of semi-supervised M2: the same network as M2's classifier q(y|x)
(an MLP D-500-10, softplus) trained on the labelled images alone, reporting its test error.

The labelled images are pyrovae's own choice (``load_splits`` with ``data.labelled = N``:
balanced per class, chosen by ``data.labelled_seed``), the training images are binarized afresh
each step (dynamic binarization, as pyrovae's data), the test images are pyrovae's test split
(binarized once with its fixed seed). Adam, learning rate 3e-4, batches of
``min(100, N)`` labelled images drawn as pyrovae's ``labelled_batches`` draws them.

Stopping: the baseline may use no more labels than M2 does, so the reported figure ("fixed") is
the test error after a fixed budget of ``--steps`` steps, chosen beforehand. As a bound, the
script also reports the test error at the step of best validation accuracy ("early"): that
uses the 10,000 validation labels, which M2 never sees, so it flatters the baseline.

    OMP_NUM_THREADS=1 python benchmarks/labelled_only.py --data-dir /work/shared/data \
        --labels 100 600 1000 3000 --seeds 0 1 2
    OMP_NUM_THREADS=1 python benchmarks/labelled_only.py --dataset digits --labels 100
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

import pyrovae
from pyrovae.components.datasets import Splits, load_splits
from pyrovae.components.labelled_batches import labelled_batches


def classifier(x_dim: int, num_classes: int, hidden: int = 500) -> nn.Module:
    """M2's q(y|x): an MLP x_dim-hidden-num_classes with a softplus, returning logits."""
    return nn.Sequential(
        nn.Flatten(), nn.Linear(x_dim, hidden), nn.Softplus(), nn.Linear(hidden, num_classes)
    )


@torch.no_grad()
def error(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Percent of ``x`` whose most probable class is not ``y``."""
    wrong = sum(
        int((net(xb).argmax(-1) != yb).sum())
        for xb, yb in zip(x.split(2000), y.split(2000), strict=True)
    )
    return 100.0 * wrong / len(x)


def train_baseline(
    splits: Splits, steps: int, seed: int, lr: float = 3e-4, every: int = 100
) -> dict[str, float]:
    """Train on the labelled images of ``splits``; the test error after ``steps`` steps, and
    the test error at the step (a multiple of ``every``) of the best validation accuracy."""
    torch.manual_seed(seed)
    net = classifier(splits.train[0].numel(), splits.num_classes)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    labelled = splits.labelled_indices
    batch_size = min(100, len(labelled))
    best = (-1.0, 0, 100.0)  # validation accuracy, step, test error
    step = 0
    while step < steps:
        # labelled_batches yields (unlabelled, labelled) index pairs: the baseline takes the latter
        for _, indices in labelled_batches(splits, batch_size, generator, torch.device("cpu")):
            if step == steps:
                break
            x = torch.bernoulli(splits.train[indices], generator=generator)
            loss = nn.functional.cross_entropy(net(x), splits.train_labels[indices])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            if step % every == 0 or step == steps:
                accuracy = 100.0 - error(net, splits.valid, splits.valid_labels)
                if accuracy > best[0]:
                    best = (accuracy, step, error(net, splits.test, splits.test_labels))
    return {
        "fixed": error(net, splits.test, splits.test_labels),
        "early": best[2],
        "early_step": best[1],
    }


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
    parser.add_argument("--labels", type=int, nargs="+", default=[100, 600, 1000, 3000])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--labelled-seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=5000, help="the fixed budget of steps")
    parser.add_argument("--every", type=int, default=100, help="steps between validations")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"labelled-only classifier D-500-10 softplus, Adam 3e-4, batch min(100, N),"
        f" {args.steps} steps, dynamic binarization, {args.dataset}, labelled_seed"
        f" {args.labelled_seed}, {args.threads} thread(s); test error % (fixed budget | early: at"
        f" the best validation accuracy, checked every {args.every} steps, uses validation labels)"
    )
    for count in args.labels:
        overrides = [
            f"data.name={args.dataset}",
            f"data.labelled={count}",
            f"data.validation_size={args.validation_size}",
            f"data.labelled_seed={args.labelled_seed}",
        ]
        if args.data_dir:
            overrides.append(f"data.root={args.data_dir!r}")
        splits = load_splits(pyrovae.load_config(None, overrides).data, torch.device("cpu"))
        fixed, early = [], []
        for seed in args.seeds:
            started = time.perf_counter()
            result = train_baseline(splits, args.steps, seed, every=args.every)
            fixed.append(result["fixed"])
            early.append(result["early"])
            print(
                f"  N={count} seed={seed}: fixed {result['fixed']:.2f}%, early"
                f" {result['early']:.2f}% (step {result['early_step']}),"
                f" {time.perf_counter() - started:.0f} s",
                flush=True,
            )
        spread = lambda v: statistics.stdev(v) if len(v) > 1 else 0.0  # noqa: E731
        print(
            f"N={count}: test error fixed {statistics.mean(fixed):.2f} +- {spread(fixed):.2f}%,"
            f" early {statistics.mean(early):.2f} +- {spread(early):.2f}%"
            f" ({len(args.seeds)} seeds, {len(splits.test)} test images)",
            flush=True,
        )


if __name__ == "__main__":
    main()
