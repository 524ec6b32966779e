"""Training speed of M2: pyrovae's loop against the hand-written PyTorch M2 of
``torch_m2.py`` (the 10 classes of an unlabelled batch summed in a batch dimension).

Both train examples/configs/m2_mnist.toml's sizes (z 50, one hidden layer of 500 softplus
units in q(y|x), q(z|x,y) and p(x|y,z), Bernoulli, Adam 1e-3) on the same steps: pyrovae's
``labelled_batches`` of ``data.labelled`` labels, ``--steps`` steps of 100 unlabelled and
min(100, N) labelled images. pyrovae's step is its training loop's own (``TrainingLoop._epoch``:
``TraceEnum_ELBO`` through ``ELBOLoss``, the step guard, Adam), cut to the same first
``--steps`` batches; the reference's is ``torch_m2.epoch_seconds``' step. They alternate in one
process, ``--repeats`` times each, and the script prints the ratio of the medians, of
wall-clock and of CPU time (the process's: with one thread, less disturbed by other jobs).

    OMP_NUM_THREADS=1 python benchmarks/m2_speed.py --data-dir /work/shared/data --steps 50 \
        --repeats 5 --threads 1
    python benchmarks/m2_speed.py --data-dir /work/shared/data --profile   # cProfile a step
"""

from __future__ import annotations

import argparse
import cProfile
import itertools
import pstats
import statistics
import time

import torch
from torch_m2 import M2

import pyrovae
from pyrovae.components.datasets import load_splits
from pyrovae.components.labelled_batches import labelled_batches
from pyrovae.components.programs import build_program
from pyrovae.training.distributed import Group
from pyrovae.training.loop import TrainingLoop


class FixedSteps(TrainingLoop):
    """pyrovae's training loop with an epoch cut to its first ``steps`` batches."""

    steps = 50

    def _batches(self, n: int):  # noqa: ANN202 - the loop's own iterator of index batches
        return itertools.islice(super()._batches(n), self.steps)


class Quiet:
    """The progress bar's ``update``, doing nothing."""

    def update(self, n: int) -> None:
        pass


def pyrovae_seconds(loop: FixedSteps) -> tuple[float, float]:
    """Wall-clock and CPU seconds of the loop's first ``steps`` steps of an epoch."""
    started, cpu = time.perf_counter(), time.process_time()
    loop._epoch(Quiet(), 1)
    return time.perf_counter() - started, time.process_time() - cpu


def reference_seconds(
    model: M2, optimizer, splits, generator, steps: int, alpha: float
) -> tuple[float, float]:
    """Wall-clock and CPU seconds of torch_m2.epoch_seconds' work on its first ``steps``
    batches."""
    started, cpu = time.perf_counter(), time.process_time()
    x_epoch = torch.bernoulli(splits.train, generator=generator)
    batches = labelled_batches(splits, 100, generator, splits.train.device)
    for unlabelled, labelled in itertools.islice(batches, steps):
        loss = model.loss(
            x_epoch[unlabelled], x_epoch[labelled], splits.train_labels[labelled], alpha
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        float(loss.detach())
    return time.perf_counter() - started, time.process_time() - cpu


def main(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    overrides = [
        f"data.root={args.data_dir!r}".replace("'", '"'),
        f"data.labelled={args.labels}",
        f"model.program.alpha={args.alpha}",
        'train.device="cpu"',
    ]
    config = pyrovae.load_config("examples/configs/m2_mnist.toml", overrides)
    device = torch.device("cpu")
    splits = load_splits(config.data, device)
    torch.manual_seed(0)
    program = build_program(config.model, splits.x_shape, splits.num_classes).to(device)
    loop = FixedSteps(config, program, splits, Group(device), quiet=True)
    loop.steps = args.steps
    reference = M2(splits.train[0].numel(), splits.num_classes)
    optimizer = torch.optim.Adam(reference.parameters(), lr=config.train.lr)
    generator = torch.Generator().manual_seed(0)
    if args.profile:
        pyrovae_seconds(loop)  # warm-up: Pyro's first-step checks
        profile = cProfile.Profile()
        profile.runcall(pyrovae_seconds, loop)
        pstats.Stats(profile).sort_stats("cumulative").print_stats(30)
        pstats.Stats(profile).sort_stats("tottime").print_stats(20)
        return
    pyrovae_seconds(loop)  # warm-up of both: Pyro's first-step checks, allocations
    reference_seconds(reference, optimizer, splits, generator, args.steps, args.alpha)
    ours, theirs = [], []
    for repeat in range(args.repeats):
        ours.append(pyrovae_seconds(loop))
        theirs.append(
            reference_seconds(reference, optimizer, splits, generator, args.steps, args.alpha)
        )
        print(
            f"repeat {repeat + 1} ({args.steps} steps): pyrovae {ours[-1][0]:.2f} s wall"
            f" {ours[-1][1]:.2f} s CPU, hand-written {theirs[-1][0]:.2f} s wall"
            f" {theirs[-1][1]:.2f} s CPU; ratio wall {ours[-1][0] / theirs[-1][0]:.3f},"
            f" CPU {ours[-1][1] / theirs[-1][1]:.3f}",
            flush=True,
        )
    per_step = 1000 / args.steps
    for kind, i in (("wall-clock", 0), ("CPU", 1)):
        mine = statistics.median(t[i] for t in ours)
        reference_time = statistics.median(t[i] for t in theirs)
        print(
            f"median {kind} of {args.repeats}: pyrovae {per_step * mine:.1f} ms/step,"
            f" hand-written {per_step * reference_time:.1f} ms/step, ratio"
            f" {mine / reference_time:.3f} (M2 MNIST, {args.labels} labelled, batch 100 +"
            f" {min(100, args.labels)}, {torch.get_num_threads()} thread(s))"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--labels", type=int, default=3000, help="data.labelled")
    parser.add_argument("--alpha", type=float, default=0.1)
    parser.add_argument("--steps", type=int, default=50, help="steps per timed repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--profile", action="store_true", help="cProfile pyrovae's steps")
    main(parser.parse_args())
