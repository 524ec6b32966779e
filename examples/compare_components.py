"""Stop-gap for the components table until ``pyrovae compare`` exists: train each variant of
``compare_components.toml`` with the same seed and budget, and report the test negative ELBO
(nats per datapoint, analytic KL where registered, on the fixed binarization of the test split).

    python examples/compare_components.py --data-dir ../shared/data --epochs 15 --warmup 5

The published figures are importance-sampled log-likelihoods (K = 5000), a tighter number than
the ELBO reported here; ``pyrovae compare`` / ``pyrovae evaluate`` give those.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import pyrovae
from pyrovae.data import load_splits
from pyrovae.evaluate import negative_elbo

BASE = Path(__file__).with_name("compare_components.toml")
VARIANTS = {
    "standard": [],
    "vamp": ['model.prior={name="vamp",components=500}'],
    "mixture": ['model.prior={name="mixture",components=500}'],
    "flow": ['model.prior={name="flow",transform="affine_autoregressive",steps=4,hidden=[128]}'],
    "iaf": ['model.guide={name="iaf",steps=2,context_dim=40,hidden=[320]}'],
    "planar": ['model.guide={name="planar",steps=10,context_dim=40,hidden=[200]}'],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--out", default="runs/components")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS))
    args = parser.parse_args()
    common = [
        f"data.root={json.dumps(args.data_dir)}",
        f"train.epochs={args.epochs}",
        f"train.warmup_epochs={args.warmup}",
    ]
    rows = []
    for name in args.variants:
        config = pyrovae.load_config(BASE, [*common, f"name={name}", *VARIANTS[name]])
        started = time.perf_counter()
        run = pyrovae.train(config, out=Path(args.out) / name, quiet=True, overwrite=True)
        test = load_splits(config.data, torch.device("cpu")).test
        run.model.eval()
        row = {
            "variant": name,
            "test_neg_elbo": negative_elbo(run.model.cpu(), test.cpu()),
            "valid_neg_elbo": run.metrics[-1]["valid_loss"],
            "epochs": args.epochs,
            "seconds_per_epoch": sum(m["epoch_seconds"] for m in run.metrics) / len(run.metrics),
            "wall_seconds": time.perf_counter() - started,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("\n| variant | test -ELBO (nats) | s/epoch |\n|---|---|---|")
    for row in rows:
        print(f"| {row['variant']} | {row['test_neg_elbo']:.2f} | {row['seconds_per_epoch']:.0f} |")


if __name__ == "__main__":
    main()
