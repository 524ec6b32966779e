"""The standard MNIST VAE recipe written by hand in PyTorch, trained and scored exactly as
pyrovae's ``examples/configs/mnist.toml`` is: the quality floor pyrovae is measured against.

784-400-50 with softplus hidden layers, a Bernoulli decoder, a diagonal normal encoder, the
analytic KL; the first 50,000 MNIST training images drawn afresh from Bernoulli(pixel) every
epoch (dynamic binarization), batch 256, Adam 1e-3. The validation and test images are
pyrovae's own (``load_splits``: the last 10,000 training images and the test set, binarized
once with its fixed seed), so the two implementations are scored on the same binary images and
their per-image log-likelihoods can be paired (``benchmarks/paired_loglik.py``).

    OMP_NUM_THREADS=1 python benchmarks/torch_vae_recipe.py --data-dir ../shared/data \\
        --epochs 50 --k 5000 --test-limit 1000 --out torch50.pt

Prints one JSON line per epoch (seconds, training ELBO, validation ELBO) and a summary line;
``--out`` saves the per-image log-likelihoods and the curves.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

import pyrovae
from pyrovae.components.datasets import load_splits


class VAE(nn.Module):
    """Encoder 784-400-(50, 50), decoder 50-400-784, softplus."""

    def __init__(self, hidden: int, z: int):
        super().__init__()
        self.enc = nn.Linear(784, hidden)
        self.enc_loc = nn.Linear(hidden, z)
        self.enc_logscale = nn.Linear(hidden, z)
        self.dec = nn.Linear(z, hidden)
        self.dec_out = nn.Linear(hidden, 784)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.softplus(self.enc(x))
        return self.enc_loc(h), self.enc_logscale(h)

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.dec_out(F.softplus(self.dec(z)))

    def elbo(self, x: torch.Tensor) -> torch.Tensor:
        """The single-sample ELBO of each row of ``x`` (analytic KL)."""
        loc, log_scale = self.encode(x)
        z = loc + log_scale.exp() * torch.randn_like(loc)
        rec = -F.binary_cross_entropy_with_logits(self.logits(z), x, reduction="none").sum(-1)
        kl = 0.5 * (loc.pow(2) + (2 * log_scale).exp() - 1 - 2 * log_scale).sum(-1)
        return rec - kl

    @torch.no_grad()
    def log_likelihood(self, x: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
        """log p(x) by importance sampling with the encoder as proposal, K samples."""
        loc, log_scale = self.encode(x)
        parts = []
        for start in range(0, k, chunk):
            n = min(chunk, k - start)
            eps = torch.randn(n, *loc.shape)
            z = loc + log_scale.exp() * eps
            log_q = (-0.5 * eps.pow(2) - log_scale - 0.5 * math.log(2 * math.pi)).sum(-1)
            log_p_z = (-0.5 * z.pow(2) - 0.5 * math.log(2 * math.pi)).sum(-1)
            logits = self.logits(z)
            log_p_x = -F.binary_cross_entropy_with_logits(
                logits, x.expand(n, -1, -1), reduction="none"
            ).sum(-1)
            parts.append(log_p_x + log_p_z - log_q)
        return torch.logsumexp(torch.cat(parts), 0) - math.log(k)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--hidden", type=int, default=400)
    p.add_argument("--z", type=int, default=50)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    add_scoring_arguments(p)
    a = p.parse_args()

    config = pyrovae.load_config(
        None,
        ['data.name="mnist"', 'data.binarize="dynamic"', "data.validation_size=10000"]
        + [f'data.root="{a.data_dir}"'],
    )
    splits = load_splits(config.data, torch.device("cpu"))
    train, valid, test = (x.reshape(len(x), -1) for x in (splits.train, splits.valid, splits.test))
    test = test if a.test_limit is None else test[: a.test_limit]
    torch.manual_seed(a.seed)
    model = VAE(a.hidden, a.z)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    curve = []
    if a.load:
        saved = torch.load(a.load)
        model.load_state_dict(saved["state"])
        curve, a.epochs = saved["curve"], 0
    started = time.perf_counter()
    for epoch in range(1, a.epochs + 1):
        t0 = time.perf_counter()
        x_epoch = torch.bernoulli(train)
        total = 0.0
        for idx in torch.randperm(len(x_epoch)).split(a.batch):
            opt.zero_grad()
            loss = -model.elbo(x_epoch[idx]).sum()
            (loss / len(idx)).backward()
            opt.step()
            total += float(loss.detach())
        with torch.no_grad():
            valid_elbo = float(torch.cat([model.elbo(v) for v in valid.split(1000)]).mean())
        row = {
            "epoch": epoch,
            "seconds": round(time.perf_counter() - t0, 3),
            "train_elbo": round(-total / len(x_epoch), 3),
            "valid_elbo": round(valid_elbo, 3),
        }
        curve.append(row)
        print(json.dumps(row), flush=True)
    train_s = saved["summary"]["train_seconds"] if a.load else time.perf_counter() - started
    score_blocks(model, test, curve, train_s, a)


def add_scoring_arguments(p: argparse.ArgumentParser) -> None:
    """The options ``score_blocks`` reads (and ``--seed``, the training's seed too)."""
    p.add_argument("--k", type=int, default=5000)
    p.add_argument("--test-limit", type=int, help="score the first N test images (default all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chunk", type=int, default=500, help="importance samples per pass")
    p.add_argument("--out", help="save the weights, per-image log-likelihoods and curves here")
    p.add_argument("--load", help="score the weights an earlier --out saved (no training)")
    p.add_argument(
        "--block",
        type=int,
        help="score and save this many test images at a time, block b with the seed seed + b;"
        " with --load, resume the blocks an interrupted call saved in --out (default: one block"
        " that continues the training's random stream)",
    )


def score_blocks(
    model: nn.Module, test: torch.Tensor, curve: list, train_s: float, a: argparse.Namespace
) -> None:
    """Score ``test`` with ``model.log_likelihood(x, a.k, a.chunk)`` in blocks of ``a.block``
    images (block b with the seed ``a.seed + b``; default one block that continues the random
    stream), printing a summary and saving the weights, per-image log-likelihoods, ``curve``
    and the summary to ``a.out`` after every block; with ``a.load``, resume the blocks an
    interrupted call with the same settings saved in ``a.out``."""
    block = a.block or len(test)
    settings = {"k": a.k, "seed": a.seed, "block": a.block}
    ll, eval_s = torch.zeros(0), 0.0
    if a.load and a.out and Path(a.out).exists():
        partial = torch.load(a.out)
        if partial.get("settings") == settings and partial["curve"] == curve:
            ll, eval_s = partial["log_likelihoods"], partial["summary"]["eval_seconds"]
            print(f"resuming {a.out}: {len(ll)} test images scored", flush=True)
    for b in range(len(ll) // block, math.ceil(len(test) / block)):
        t0 = time.perf_counter()
        if a.block:
            torch.manual_seed(a.seed + b)
        x_block = test[b * block : (b + 1) * block]
        ll = torch.cat([ll] + [model.log_likelihood(x, a.k, a.chunk) for x in x_block.split(100)])
        eval_s += time.perf_counter() - t0
        summary = {
            "implementation": "hand-written PyTorch",
            "epochs": len(curve),
            "k": a.k,
            "test_images": len(ll),
            "test_log_likelihood": round(float(ll.double().mean()), 3),
            "stderr": round(float(ll.double().std()) / math.sqrt(len(ll)), 3),
            "train_seconds": round(train_s, 1),
            "eval_seconds": round(eval_s, 1),
            "threads": torch.get_num_threads(),
        }
        print(json.dumps(summary), flush=True)
        if a.out:
            torch.save(
                {
                    "state": model.state_dict(),
                    "log_likelihoods": ll,
                    "curve": curve,
                    "summary": summary,
                    "settings": settings,
                },
                a.out + ".tmp",
            )
            os.replace(a.out + ".tmp", a.out)  # written whole or not at all


if __name__ == "__main__":
    main()
