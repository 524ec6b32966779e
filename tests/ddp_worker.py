"""Run by the multi-process tests, under torchrun or alone.

``python tests/ddp_worker.py OUT KEY=VALUE ...`` opens a
``pyrovae.training.distributed.session`` (one
process, or a torchrun rank), writes the gradient of one step on the first 99 validation (binary)
datapoints, then trains with ``pyrovae.train`` inside that session and writes the trained
parameters and per-epoch losses and skipped steps: ``OUT/<RANK or single>.pt``. The run directory is
``OUT/run``. The test-only components of ``ddp_components`` are registered here.
"""

import os
import sys
from pathlib import Path

import ddp_components  # noqa: F401  (registers the test-only components)
import pyro
import torch

import pyrovae
from pyrovae.components.datasets import load_splits
from pyrovae.registry import build
from pyrovae.training.distributed import session

out = Path(sys.argv[1])
config = pyrovae.load_config(None, sys.argv[2:])
with session(config.train) as group:
    pyro.set_rng_seed(config.train.seed)
    splits = load_splits(config.data, group.device)
    vae = pyrovae.build_vae(config.model, splits.x_shape).to(group.device)
    estimator = build("estimator", config.train.estimator.name, config.train.estimator.options, "e")
    indices = torch.arange(99, device=group.device)  # shares of 50 and 49 on two ranks
    loss_fn = group.loss_module(estimator, vae)
    loss = loss_fn(splits.valid[group.shard(indices)]) * group.loss_scale(len(indices))
    loss.backward()
    gradient = {name: p.grad.cpu() for name, p in vae.named_parameters()}

    run = pyrovae.train(config, out=out / "run", quiet=True, overwrite=True)
    result = {
        "gradient": gradient,
        "params": {k: v.cpu() for k, v in run.model.state_dict().items()},
        "train_loss": [m["train_loss"] for m in run.metrics],
        "valid_loss": [m["valid_loss"] for m in run.metrics],
        "skipped_steps": [m["skipped_steps"] for m in run.metrics],
        "epoch_seconds": [m["epoch_seconds"] for m in run.metrics],
    }
    torch.save(result, out / f"{os.environ.get('RANK', 'single')}.pt")
