"""Time pyrovae's importance-sampled evaluation against a hand-written batched PyTorch one.

Both score the 784-400-50 MNIST VAE of ``examples/configs/mnist.toml`` (randomly initialised, or
the weights of ``--run``) on the binarized MNIST test split with K particles per datapoint, with
the same networks and the same chunking (``--chunk-size`` particle-datapoint pairs per pass), and
compute the same quantities: log p(x) by importance sampling, the reconstruction term, the
analytic KL and the posterior means. They run back to back, interleaved, ``--repeats`` times;
the script prints each time and the median ratio pyrovae / reference (target: at most 1).

pyrovae decodes the particles in cache-sized blocks (``components/blocked_likelihood.py``,
``--block-elements`` decoder outputs per block); the plain reference decodes each pass whole,
as a hand-written evaluation does; ``--lean`` gives the reference the same blocks.

    OMP_NUM_THREADS=1 python benchmarks/eval_speed.py --data-dir ../shared/data --limit 20 \
        --threads 1 --cpu-clock
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from timing import add_timing_options, interleaved, parse_timing_args  # noqa: E402

import pyrovae  # noqa: E402
from pyrovae.components import blocked_likelihood  # noqa: E402
from pyrovae.components.programs.vae import VAE  # noqa: E402
from pyrovae.evaluation.evaluate import evaluate_model  # noqa: E402
from pyrovae.inference.marginal_likelihood import DEFAULT_CHUNK_SIZE  # noqa: E402

CONFIG = Path(__file__).resolve().parents[1] / "examples" / "configs" / "mnist.toml"


def log_px(vae: VAE, z: torch.Tensor, flat: torch.Tensor, lean: bool) -> torch.Tensor:
    """sum_d log Bernoulli(x_d | logits_d(z)): ``(count, b)``; with ``lean`` the decoder and the
    log-density run on blocks of particles of ``BLOCK_ELEMENTS`` logits (pyrovae's blocks)."""
    count, b = z.shape[:2]
    step = max(1, blocked_likelihood.BLOCK_ELEMENTS // (b * flat.shape[-1])) if lean else count
    parts = []
    for start in range(0, count, step):
        logits = vae.decoder(z[start : start + step]).reshape(-1, b, flat.shape[-1])
        parts.append(
            -F.binary_cross_entropy_with_logits(
                logits, flat.expand_as(logits), reduction="none"
            ).sum(-1)
        )
    return parts[0] if len(parts) == 1 else torch.cat(parts)


@torch.no_grad()
def reference(
    vae: VAE, x: torch.Tensor, particles: int, chunk_size: int, lean: bool = False
) -> dict[str, float]:
    """The same estimate written directly in PyTorch: encoder, reparameterized draws, decoder,
    Bernoulli log-likelihood from logits, Gaussian log-densities in closed form."""
    n = len(x)
    d = vae.latent_dim
    per_block = max(1, min(n, chunk_size // particles))
    log_likelihood, reconstruction, kl, means = [], [], [], []
    half_log_2pi = 0.5 * math.log(2 * math.pi)
    for block in x.split(per_block):
        b = len(block)
        draws = max(1, min(particles, chunk_size // b))
        flat = block.reshape(b, -1)
        log_sum = torch.full((b,), -math.inf, dtype=torch.float64)
        recon = torch.zeros(b, dtype=torch.float64)
        for start in range(0, particles, draws):
            count = min(draws, particles - start)
            loc, raw = vae.encoder(block).split(d, dim=-1)
            scale = F.softplus(raw) + vae.posterior.min_scale
            eps = torch.randn(count, b, d)
            z = loc + scale * eps
            log_x = log_px(vae, z, flat, lean)
            log_pz = (-0.5 * z**2 - half_log_2pi).sum(-1)
            log_qz = (-0.5 * eps**2 - scale.log() - half_log_2pi).sum(-1)
            log_w = log_x + log_pz - log_qz
            log_sum = torch.logaddexp(log_sum, torch.logsumexp(log_w.double(), dim=0))
            recon += log_x.double().sum(0)
        log_likelihood.append(log_sum - math.log(particles))
        reconstruction.append(recon / particles)
        kl.append(0.5 * (scale**2 + loc**2 - 1 - 2 * scale.log()).sum(-1))
        means.append(loc)
    ll = torch.cat(log_likelihood)
    active = int((torch.cat(means).var(0) > 0.01).sum())
    return {
        "log_likelihood": float(ll.mean()),
        "reconstruction": float(torch.cat(reconstruction).mean()),
        "kl": float(torch.cat(kl).mean()),
        "active_units": active,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default="../shared/data", help="folder holding MNIST/")
    parser.add_argument("--run", help="run directory whose weights to load (default: random)")
    parser.add_argument("--particles", type=int, default=5000, help="K (5000)")
    parser.add_argument("--limit", type=int, default=200, help="test datapoints (200)")
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE)
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats (5)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument(
        "--block-elements",
        type=int,
        default=blocked_likelihood.BLOCK_ELEMENTS,
        help=f"decoder outputs per block ({blocked_likelihood.BLOCK_ELEMENTS})",
    )
    add_timing_options(parser, lean=True)
    args = parse_timing_args(parser)
    if args.threads:
        torch.set_num_threads(args.threads)
    blocked_likelihood.BLOCK_ELEMENTS = args.block_elements
    print(f"(load average at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())})")

    if args.run:
        config, vae, _ = pyrovae.load_run(args.run)
        config = config.replace([f"data.root={args.data_dir!r}"])
    else:
        config = pyrovae.load_config(CONFIG, [f"data.root={args.data_dir!r}"])
        torch.manual_seed(0)
        vae = pyrovae.build_vae(config.model, (1, 28, 28))
    vae.eval()
    x = pyrovae.load_splits(config.data, torch.device("cpu")).test[: args.limit]
    print(
        f"{len(x)} MNIST test datapoints, K = {args.particles}, chunk {args.chunk_size},"
        f" blocks of {args.block_elements} outputs, {torch.get_num_threads()} threads,"
        f" {'CPU' if args.cpu_clock else 'wall'} clock,"
        f" {'lean' if args.lean else 'plain'} reference"
    )

    def run(name: str, repeat: int) -> dict:
        torch.manual_seed(repeat)
        if name == "reference":
            return reference(vae, x, args.particles, args.chunk_size, args.lean)
        result = evaluate_model(vae, x, args.particles, args.chunk_size, seed=repeat)
        return {
            "log_likelihood": result.log_likelihood,
            "reconstruction": result.reconstruction,
            "kl": result.kl,
            "active_units": result.active_units,
        }

    def report(name: str, repeat: int, seconds: float, values: dict) -> None:
        print(
            f"  repeat {repeat} {name:9s} {seconds:7.2f} s   log p(x)"
            f" {values['log_likelihood']:.3f}  recon {values['reconstruction']:.3f}"
            f"  KL {values['kl']:.3f}  active {values['active_units']}"
        )

    times = interleaved(args.repeats, ["pyrovae", "reference"], run, report)
    ratios = [a / b for a, b in zip(times["pyrovae"], times["reference"], strict=True)]
    print(
        f"median pyrovae {statistics.median(times['pyrovae']):.2f} s, reference"
        f" {statistics.median(times['reference']):.2f} s; median ratio"
        f" {statistics.median(ratios):.3f} (per repeat: {', '.join(f'{r:.3f}' for r in ratios)})"
    )
    print(f"(load average at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())})")


if __name__ == "__main__":
    main()
