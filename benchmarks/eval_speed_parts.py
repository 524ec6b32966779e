"""What each of the evaluation's three speed paths is worth: pyrovae's K-particle evaluation of
the 784-400-50 MNIST VAE (as ``eval_speed.py``) with all of them, without each in turn, without
any, and the plain hand-written reference, interleaved; medians and ratios to the reference.

The paths: ``blocks`` (``components/blocked_likelihood.py``: decoder and likelihood on
cache-sized blocks of particles), ``bernoulli`` (``components/independent_bernoulli.py``: the
Bernoulli log-density in three passes), ``normal`` (``components/independent_normal.py`` and
``broadcast_normal.py``: the Normal log-density summed as it goes and the KL, on the parameters
before the plates expand them). Every variant prints its
log p(x): they agree to float rounding.

    OMP_NUM_THREADS=1 python benchmarks/eval_speed_parts.py --data-dir ../shared/data --threads 1 \\
        --cpu-clock
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from eval_speed import CONFIG, reference
from pyro import distributions as dist
from timing import add_timing_options, interleaved, parse_timing_args

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyrovae  # noqa: E402
from pyrovae.components import blocked_likelihood  # noqa: E402
from pyrovae.components.guides import gaussian as guides  # noqa: E402
from pyrovae.components.likelihoods import Bernoulli  # noqa: E402
from pyrovae.components.priors import gaussian as priors  # noqa: E402
from pyrovae.evaluation.evaluate import evaluate_model  # noqa: E402

PATHS = ("blocks", "bernoulli", "normal")


def _torch_bernoulli(self, params):
    return dist.Bernoulli(logits=params).to_event(len(self.x_shape))


def _torch_normal(loc, scale):
    return dist.Normal(loc, scale).to_event(1)


@contextmanager
def without(paths: tuple[str, ...]) -> Iterator[None]:
    """Switch the named speed paths off (torch's own distributions, no blocks)."""
    saved = (blocked_likelihood.BLOCK_ELEMENTS, Bernoulli.forward, guides.IndependentNormal)
    if "blocks" in paths:
        blocked_likelihood.BLOCK_ELEMENTS = 10**15
    if "bernoulli" in paths:
        Bernoulli.forward = _torch_bernoulli
    if "normal" in paths:
        guides.IndependentNormal = priors.IndependentNormal = _torch_normal
    try:
        yield
    finally:
        blocked_likelihood.BLOCK_ELEMENTS, Bernoulli.forward = saved[:2]
        guides.IndependentNormal = priors.IndependentNormal = saved[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default="../shared/data", help="folder holding MNIST/")
    parser.add_argument("--particles", type=int, default=5000, help="K (5000)")
    parser.add_argument("--limit", type=int, default=20, help="test datapoints (20)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats (5)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    add_timing_options(parser)
    args = parse_timing_args(parser)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"(load average at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())})")
    config = pyrovae.load_config(CONFIG, [f"data.root={args.data_dir!r}"])
    torch.manual_seed(0)
    vae = pyrovae.build_vae(config.model, (1, 28, 28)).eval()
    x = pyrovae.load_splits(config.data, torch.device("cpu")).test[: args.limit]
    variants = {"all paths": (), **{f"without {p}": (p,) for p in PATHS}, "none": PATHS}
    print(
        f"{len(x)} MNIST test datapoints, K = {args.particles}, {torch.get_num_threads()}"
        f" threads, {'CPU' if args.cpu_clock else 'wall'} clock"
    )

    def run(name: str, repeat: int) -> float:
        torch.manual_seed(repeat)
        if name == "reference":
            return reference(vae, x, args.particles, 25_000)["log_likelihood"]
        with without(variants[name]):
            return evaluate_model(vae, x, args.particles, seed=repeat).log_likelihood

    def report(name: str, repeat: int, seconds: float, log_likelihood: float) -> None:
        if repeat == 0:
            print(f"  {name:18s} log p(x) {log_likelihood:.5f}")

    times = interleaved(args.repeats, [*variants, "reference"], run, report)
    base = statistics.median(times["reference"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:18s} median {median:6.3f} s  ratio to the reference {median / base:.3f}")
    print(f"(load average at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())})")


if __name__ == "__main__":
    main()
