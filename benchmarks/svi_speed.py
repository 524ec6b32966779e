"""Training speed: a plain ``pyro.infer.SVI`` loop against ``pyrovae.train``, on the same program.

Every pyrovae model is a ``pyrovae.Program`` whose ``model`` and ``guide`` a plain
``SVI(program.model, program.guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO())`` trains. This
script times one epoch of that loop against one epoch of pyrovae's own driver on the 784-400-50
softplus VAE of examples/configs/mnist.toml (Bernoulli likelihood, diagonal-normal guide),
batch 256, Adam 1e-3, the ``trace`` estimator (Trace_ELBO), dynamic binarization.

Both see the same images: the first ``--train-limit`` MNIST training images are written to a
temporary ``.pt`` file read by pyrovae's ``file`` dataset, and the SVI loop takes the training
tensor ``pyrovae.components.datasets.load_splits`` returns for that same config (held in
memory, batches are
index slices of a fresh permutation and Bernoulli draw per epoch, as in pyrovae's loop). They
run back to back in one process, in alternating blocks, and the script prints the ratio of
median epoch times (SVI / pyrovae). pyrovae's epoch time is its ``epoch_seconds`` metric (the
training steps of one epoch, validation excluded); the SVI loop times the same work. The SVI loop
runs under Pyro's default settings (validation on) unless ``--no-pyro-validation``; pyrovae's
loop validates the first batch only.

    OMP_NUM_THREADS=1 python benchmarks/svi_speed.py --data-dir ../shared/data --threads 1 \
        --blocks 3 --epochs 1 --train-limit 20000
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import pyro
import pyro.optim
import torch
from pyro.infer import SVI, Trace_ELBO
from timing import (
    VALIDATION_IMAGES,
    add_timing_options,
    file_overrides,
    parse_timing_args,
    pyrovae_epochs,
    timed_epochs,
    write_images,
)

import pyrovae
from pyrovae.components.datasets import load_splits
from pyrovae.components.programs import build_program
from pyrovae.param_store import own_param_store


def svi_epochs(
    config: pyrovae.Config, train: torch.Tensor, epochs: int, validation: bool, fused: bool
) -> list[float]:
    """Epoch times of a plain SVI loop on a freshly built program of ``config.model``."""
    with own_param_store(), pyro.validation_enabled(validation):
        pyro.set_rng_seed(config.train.seed)
        program = build_program(config.model, tuple(train.shape[1:])).to(train.device)
        options = {"lr": config.train.lr, **({"fused": True} if fused else {})}
        optimizer = pyro.optim.Adam(options)
        svi = SVI(program.model, program.guide, optimizer, loss=Trace_ELBO())

        def step(x: torch.Tensor) -> torch.Tensor:
            return torch.tensor(svi.step(x) / len(x))

        times, _ = timed_epochs(train, epochs, config.train.batch_size, config.train.seed, step)
    return times


def main(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        images = Path(folder) / "mnist_train.pt"
        root = f"data.root={args.data_dir!r}".replace("'", '"')
        mnist = pyrovae.load_config("examples/configs/mnist.toml", [root])
        write_images(mnist, args.train_limit + VALIDATION_IMAGES, images)
        overrides = file_overrides(images, args.epochs, args.device) + ["train.batch_size=256"]
        config = pyrovae.load_config(args.config, overrides)
        device = torch.device("cuda" if args.device == "cuda" else "cpu")
        train = load_splits(config.data, device).train
        svi, ours = [], []
        for block in range(args.blocks):
            # Alternate which goes first, so that neither always runs on a warmer machine.
            if block % 2 == 0:
                svi += svi_epochs(config, train, args.epochs, args.pyro_validation, args.fused_adam)
                ours += pyrovae_epochs(config)[0]
            else:
                ours += pyrovae_epochs(config)[0]
                svi += svi_epochs(config, train, args.epochs, args.pyro_validation, args.fused_adam)
            print(
                f"block {block + 1}: plain SVI {statistics.median(svi):.3f} s/epoch,"
                f" pyrovae.train {statistics.median(ours):.3f} s/epoch",
                flush=True,
            )
    ratio = statistics.median(svi) / statistics.median(ours)
    print(
        f"median epoch: plain SVI {statistics.median(svi):.3f} s, pyrovae.train"
        f" {statistics.median(ours):.3f} s, ratio SVI/pyrovae {ratio:.3f}"
        f" ({len(svi)} epochs each of {len(train)} images, batch {config.train.batch_size},"
        f" Trace_ELBO, Pyro validation {'on' if args.pyro_validation else 'off'} in SVI,"
        f" {'fused' if args.fused_adam else 'default'} pyro.optim.Adam,"
        f" {device}, {torch.get_num_threads()} threads,"
        f" {'CPU' if args.cpu_clock else 'wall'} clock)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="examples/configs/mnist.toml")
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per block (1)")
    parser.add_argument("--blocks", type=int, default=3, help="alternating blocks (3)")
    parser.add_argument(
        "--train-limit", type=int, default=50000, help="train on the first N images (50000)"
    )
    parser.add_argument(
        "--no-pyro-validation",
        dest="pyro_validation",
        action="store_false",
        help="switch Pyro's validation off in the SVI loop (on: Pyro's default)",
    )
    parser.add_argument(
        "--fused-adam",
        action="store_true",
        help='pyro.optim.Adam({"lr": ..., "fused": True}) in the SVI loop (torch\'s fused kernel)',
    )
    add_timing_options(parser)
    main(parse_timing_args(parser))
