"""K = 5000 evaluation time of trained runs (say a VampPrior, a mixture-prior and a
standard-prior run with the same networks) on the same test images, interleaved, on the CPU
clock (the process's CPU time), with each one's median ratio to the last run given.

    OMP_NUM_THREADS=1 python benchmarks/trained_prior_eval_speed.py runs/vamp20 runs/mixture20 \
        runs/standard20 --limit 100 --repeats 3

``benchmarks/prior_eval_speed.py`` times randomly initialised networks; trained ones can differ
(a trained mixture puts most of its components far from any one z).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

import torch
from timing import interleaved, use_cpu_clock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyrovae  # noqa: E402
from pyrovae.evaluation.evaluate import evaluate_model  # noqa: E402
from pyrovae.runs.directory import load_run  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run directories; the last is the baseline")
    parser.add_argument("--limit", type=int, default=100, help="test images (100)")
    parser.add_argument("--particles", type=int, default=5000, help="K (5000)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats (3)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    use_cpu_clock()
    models = {run: load_run(run)[1] for run in args.runs}
    config = load_run(args.runs[0])[0]
    x = pyrovae.load_splits(config.data, torch.device("cpu")).test[: args.limit]
    print(
        f"{len(x)} MNIST test images, K = {args.particles}, {torch.get_num_threads()} threads,"
        f" CPU clock; load average at start {os.getloadavg()}"
    )

    def report(run: str, repeat: int, seconds: float, result) -> None:
        print(
            f"  repeat {repeat} {run:20s} {seconds:6.2f} s   log p(x) {result.log_likelihood:.3f}",
            flush=True,
        )

    times = interleaved(
        args.repeats,
        args.runs,
        lambda run, repeat: evaluate_model(models[run], x, args.particles, seed=repeat),
        report,
    )
    base = args.runs[-1]
    for run in args.runs:
        ratios = [a / b for a, b in zip(times[run], times[base], strict=True)]
        each = ", ".join(f"{r:.2f}" for r in ratios)
        print(
            f"{run}: median {statistics.median(times[run]):.2f} s; ratio to {base}"
            f" {statistics.median(ratios):.2f} (per repeat: {each})"
        )
    print(f"load average at end {os.getloadavg()}")


if __name__ == "__main__":
    main()
