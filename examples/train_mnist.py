"""Train the classic MNIST VAE (784-400-50 softplus MLPs, Bernoulli likelihood on dynamically
binarized images, batch 256, Adam 1e-3), then report its test ELBO and write new samples.

    python examples/train_mnist.py --data-dir ../shared/data --epochs 10
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pyrovae
from pyrovae.inference.elbo import negative_elbo
from pyrovae.runs.pictures import save_samples

CONFIG = Path(__file__).resolve().parent / "configs" / "mnist.toml"


def main(args: argparse.Namespace) -> int:
    overrides = [f"train.epochs={args.epochs}", f"train.device={args.device!r}".replace("'", '"')]
    if args.data_dir:
        overrides.append(f"data.root={str(args.data_dir)!r}".replace("'", '"'))
    try:
        config = pyrovae.load_config(args.config, overrides)
        run = pyrovae.train(config, out=args.out, quiet=args.quiet)
    except pyrovae.PyrovaeError as error:
        print(f"train_mnist: error: {error}", file=sys.stderr)
        return 2
    test = pyrovae.load_splits(config.data, next(run.model.parameters()).device).test
    print(f"test negative ELBO: {negative_elbo(run.model, test):.2f} nats per image")
    save_samples(run.model, run.directory / "samples.png")
    print(f"run directory: {run.directory}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(CONFIG), help="config file (the classic model)")
    parser.add_argument("--data-dir", help="folder holding MNIST/raw (else $PYROVAE_DATA_DIR)")
    parser.add_argument("--epochs", type=int, default=10, help="training epochs (10)")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto")
    parser.add_argument("--out", help="run directory (default runs/mnist)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    sys.exit(main(parser.parse_args()))
