"""Score trained models on the same test images and compare them pairwise: the importance-sampled
test log-likelihood of each, and each one's paired difference from the first, with standard
errors, the training wall-clock and whether the validation curve has levelled off.

    # score a pyrovae run directory (its best.pt, K = 5000, the first 1000 test images)
    python benchmarks/paired_loglik.py score runs/mnist50 --limit 1000 --out std50.pt
    # a hand-written model scores itself (benchmarks/torch_vae_recipe.py --out torch50.pt)
    python benchmarks/paired_loglik.py report std50.pt torch50.pt best50.pt

Every file holds ``log_likelihoods`` (one per test image, in test-set order), ``curve`` (one
record per epoch with ``valid_elbo``) and ``summary`` (``train_seconds``, ``eval_seconds``,
``eval_cpu_seconds`` (the process's CPU time: all its threads), ``k``, ``test_images``,
``threads``, ``load_average`` after the last block). Every file scores the test set from its
first image on, so ``report`` pairs the first N images of each (N: the fewest any file scored,
or ``--limit``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import torch

from pyrovae.components.datasets import load_splits
from pyrovae.evaluation.evaluate import evaluate
from pyrovae.runs.directory import load_run

#: Epochs over which the validation curve's slope is measured.
SLOPE_EPOCHS = 5
#: A curve still rising by more than this (nats per epoch) over SLOPE_EPOCHS has not converged.
CONVERGED_SLOPE = 0.05


def score(
    run_dir: str, k: int, limit: int | None, seed: int, out: str, block: int | None = None
) -> None:
    """Score the run's first ``limit`` test images (all by default) in blocks of ``block``
    images (one block by default), saving ``out`` after every block and resuming from the
    blocks an earlier, interrupted call with the same settings saved there. Block ``b`` is
    scored with the seed ``seed + b``: one block is exactly ``evaluate(run_dir, seed=seed)``."""
    config, _, _ = load_run(run_dir)
    x = load_splits(config.data, torch.device("cpu")).test
    x = x if limit is None else x[:limit]
    block = block or len(x)
    metrics = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").open()]
    curve = [{"epoch": m["epoch"], "valid_elbo": -m["valid_loss"]} for m in metrics]
    settings = {"k": k, "seed": seed, "block": block}
    scored, eval_s, eval_cpu_s = torch.zeros(0), 0.0, 0.0
    if Path(out).exists():
        saved = torch.load(out)
        if saved.get("settings") == settings and saved["curve"] == curve:
            scored, eval_s = saved["log_likelihoods"], saved["summary"]["eval_seconds"]
            eval_cpu_s = saved["summary"].get("eval_cpu_seconds", 0.0)
            print(f"resuming {out}: {len(scored)} test images scored", flush=True)
    for b in range(len(scored) // block, math.ceil(len(x) / block)):
        started, cpu_started = time.perf_counter(), time.process_time()
        result = evaluate(run_dir, x=x[b * block : (b + 1) * block], particles=k, seed=seed + b)
        eval_s += time.perf_counter() - started
        eval_cpu_s += time.process_time() - cpu_started
        scored = torch.cat([scored, torch.tensor(result.log_likelihoods)])
        summary = {
            "implementation": f"pyrovae ({run_dir})",
            "epochs": len(metrics),
            "k": k,
            "test_images": len(scored),
            "test_log_likelihood": round(float(scored.double().mean()), 3),
            "stderr": round(float(scored.double().std()) / math.sqrt(len(scored)), 3),
            "train_seconds": round(sum(m["epoch_seconds"] for m in metrics), 1),
            "eval_seconds": round(eval_s, 1),
            "eval_cpu_seconds": round(eval_cpu_s, 1),
            "threads": torch.get_num_threads(),
            "load_average": [round(v, 2) for v in os.getloadavg()],
        }
        print(json.dumps(summary), flush=True)
        payload = {"log_likelihoods": scored, "curve": curve, "summary": summary}
        # written whole or not at all: a scoring killed mid-save keeps its earlier blocks
        torch.save(payload | {"settings": settings}, out + ".tmp")
        os.replace(out + ".tmp", out)


def slope(curve: list[dict]) -> float:
    """Mean gain of the validation ELBO per epoch over the last SLOPE_EPOCHS epochs."""
    values = [c["valid_elbo"] for c in curve]
    n = min(SLOPE_EPOCHS, len(values) - 1)
    return (values[-1] - values[-1 - n]) / n if n > 0 else math.nan


def report(paths: list[str], limit: int | None = None) -> None:
    runs = [(Path(p).stem, torch.load(p)) for p in paths]
    base_name, base = runs[0]
    n = min(len(run["log_likelihoods"]) for _, run in runs) if limit is None else limit
    print(
        f"{'model':<12} {'epochs':>6} {'train s':>8} {'log p(x)':>9} {'+-':>6}"
        f" {'vs ' + base_name:>12} {'+-':>6} {'valid slope':>11}  converged"
    )
    for name, run in runs:
        ll, s = run["log_likelihoods"][:n].double(), run["summary"]
        if len(ll) != n:
            raise SystemExit(f"{name}: {len(ll)} test images, fewer than {n}; score more")
        diff = ll - base["log_likelihoods"][:n].double()
        rise = slope(run["curve"])
        print(
            f"{name:<12} {len(run['curve']):>6} {s['train_seconds'] or 0:>8.0f}"
            f" {ll.mean():>9.3f} {ll.std() / math.sqrt(n):>6.3f}"
            f" {diff.mean():>12.3f} {diff.std() / math.sqrt(n):>6.3f}"
            f" {rise:>11.3f}  {'yes' if rise <= CONVERGED_SLOPE else 'no'}"
        )
    k = base["summary"]["k"]
    print(
        f"K = {k} importance samples on the first {n} test images (binarized once, fixed seed);"
        f" +- standard errors over images; 'vs' is the paired difference on the same images;"
        f" valid slope: validation ELBO gain per epoch over the last {SLOPE_EPOCHS} epochs"
        f" (converged: at most {CONVERGED_SLOPE})"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = p.add_subparsers(dest="command", required=True)
    s = commands.add_parser("score", help="score a pyrovae run directory")
    s.add_argument("run_dir")
    s.add_argument("--k", type=int, default=5000)
    s.add_argument("--limit", type=int, help="the first N test images (default all)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", required=True)
    s.add_argument(
        "--block", type=int, help="score and save this many images at a time (default: all)"
    )
    r = commands.add_parser("report", help="compare scored files, the first as the baseline")
    r.add_argument("files", nargs="+")
    r.add_argument("--limit", type=int, help="compare on the first N images (default: all shared)")
    a = p.parse_args()
    if a.command == "score":
        score(a.run_dir, a.k, a.limit, a.seed, a.out, a.block)
    else:
        report(a.files, a.limit)


if __name__ == "__main__":
    main()
