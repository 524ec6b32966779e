"""K = 5000 evaluation under the mixture priors against the standard prior, same networks.

Builds the model of ``--config`` (examples/configs/vamp.toml: 40-300-300 MLPs, 500-component
VampPrior) with its prior, and again with the prior replaced by ``standard_normal`` (the same
encoder and decoder weights), and times ``pyrovae``'s evaluation (importance-sampled log p(x),
K particles, the default chunking) of both on the first ``--limit`` binarized MNIST test images,
interleaved, ``--repeats`` times. ``--broadcast`` scores the mixture the way pyrovae did before
``DiagonalNormalMixture`` (``MixtureSameFamily``, z broadcast against every component), for the
before/after comparison. Prints each time and the median ratio mixture / standard.

    OMP_NUM_THREADS=2 python benchmarks/prior_eval_speed.py --data-dir ../shared/data --limit 20

``--train-images N`` also times training epochs (``pyrovae.train``, ``trace``, on the first N
MNIST training images) of both models, alternating, and prints the median epoch ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import torch
from timing import (
    add_timing_options,
    file_overrides,
    interleaved,
    parse_timing_args,
    pyrovae_epochs,
    write_images,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyrovae  # noqa: E402
from pyrovae.components.priors import gaussian, vamp  # noqa: E402
from pyrovae.evaluation.evaluate import evaluate_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _broadcast_scoring() -> None:
    """Score the mixture and VampPrior by ``MixtureSameFamily`` broadcasting (the old path)."""
    vamp._diagonal_normal = lambda components: None

    def forward(self):
        from pyro import distributions as dist

        return dist.MixtureSameFamily(
            dist.Categorical(logits=self.logits), dist.Normal(self.loc, self.scale).to_event(1)
        )

    gaussian.MixturePrior.forward = forward


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "examples" / "configs" / "vamp.toml"))
    parser.add_argument("--data-dir", default="../shared/data", help="folder holding MNIST/")
    parser.add_argument("--particles", type=int, default=5000, help="K (5000)")
    parser.add_argument("--limit", type=int, default=20, help="test datapoints (20)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats (5)")
    parser.add_argument("--broadcast", action="store_true", help="the old broadcast scoring")
    parser.add_argument("--train-images", type=int, default=0, help="also time training")
    add_timing_options(parser)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    args = parse_timing_args(parser)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.broadcast:
        _broadcast_scoring()

    config = pyrovae.load_config(args.config, [f"data.root={args.data_dir!r}"])
    standard = config.replace(['model.prior={name="standard_normal"}'])
    torch.manual_seed(0)
    models = {"mixture": pyrovae.build_vae(config.model, (1, 28, 28))}
    models["standard"] = pyrovae.build_vae(standard.model, (1, 28, 28))
    weights = {
        k: v for k, v in models["mixture"].state_dict().items() if not k.startswith("prior.")
    }
    models["standard"].load_state_dict(weights, strict=False)
    x = pyrovae.load_splits(config.data, torch.device("cpu")).test[: args.limit]
    print(
        f"{config.name} ({config.model.prior.name}, {args.config}) against standard_normal:"
        f" {len(x)} MNIST test images, K = {args.particles},"
        f" {'broadcast' if args.broadcast else 'matmul'} scoring,"
        f" {torch.get_num_threads()} threads,"
        f" {'CPU' if args.cpu_clock else 'wall'} clock"
    )

    def run(name: str, repeat: int) -> float:
        return evaluate_model(models[name], x, args.particles, seed=repeat).log_likelihood

    def report(name: str, repeat: int, seconds: float, log_likelihood: float) -> None:
        print(f"  repeat {repeat} {name:8s} {seconds:7.2f} s   log p(x) {log_likelihood:.3f}")

    times = interleaved(args.repeats, ["mixture", "standard"], run, report)
    ratios = [a / b for a, b in zip(times["mixture"], times["standard"], strict=True)]
    print(
        f"median {config.model.prior.name} {statistics.median(times['mixture']):.2f} s, standard"
        f" {statistics.median(times['standard']):.2f} s; median ratio"
        f" {statistics.median(ratios):.2f} (per repeat: {', '.join(f'{r:.2f}' for r in ratios)})"
    )
    if args.train_images:
        train_ratio(config, standard, args)


def train_ratio(config: pyrovae.Config, standard: pyrovae.Config, args) -> None:
    """Median training epoch of the mixture model over the standard-prior one."""
    epochs: dict[str, list[float]] = {"mixture": [], "standard": []}
    with tempfile.TemporaryDirectory() as folder:
        images = Path(folder) / "images.pt"
        write_images(config, args.train_images, images)
        overrides = file_overrides(images, 1, "cpu")
        for _ in range(args.repeats):
            for name, base in (("mixture", config), ("standard", standard)):
                epochs[name] += pyrovae_epochs(base.replace(overrides))[0]
    mixture, plain = statistics.median(epochs["mixture"]), statistics.median(epochs["standard"])
    print(
        f"training ({args.train_images} images, batch {config.train.batch_size}, trace,"
        f" {args.repeats} alternating epochs each): {config.model.prior.name} {mixture:.2f}"
        f" s/epoch, standard {plain:.2f} s/epoch; ratio {mixture / plain:.2f}"
    )


if __name__ == "__main__":
    main()
