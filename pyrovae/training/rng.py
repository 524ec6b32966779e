"""Every random generator of a run as tensors a checkpoint holds (``weights_only`` loads them):
torch's (CPU and CUDA), the data generator's, Python's ``random`` and NumPy's."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from pyrovae.errors import CheckpointError

__all__ = ["capture_rng", "restore_rng"]


def capture_rng(generator: torch.Generator) -> dict[str, Any]:
    """The state of every random generator a training run draws from, as tensors and numbers."""
    version, internal, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    return {
        "torch": torch.get_rng_state(),
        # The training device's generator alone: under torchrun each rank draws on its own GPU,
        # and a run resumes on a machine with another number of GPUs.
        "cuda": [torch.cuda.get_rng_state(generator.device)]
        if generator.device.type == "cuda"
        else [],
        "data": generator.get_state(),
        "python": {
            "version": version,
            "state": torch.tensor(internal, dtype=torch.int64),
            "gauss": gauss,
        },
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
    }


def restore_rng(state: Mapping[str, Any], generator: torch.Generator) -> None:
    """Put every generator back in the state ``capture_rng`` recorded."""
    try:
        torch.set_rng_state(state["torch"].cpu())
        if generator.device.type == "cuda":
            if len(state["cuda"]) != 1:
                raise ValueError(f"it holds {len(state['cuda'])} CUDA generators, not 1")
            torch.cuda.set_rng_state(state["cuda"][0].cpu(), generator.device)
        generator.set_state(state["data"].cpu())
        python = state["python"]
        internal = tuple(int(v) for v in python["state"].tolist())
        random.setstate((int(python["version"]), internal, python["gauss"]))
        numpy = state["numpy"]
        keys = numpy["keys"].numpy().astype(np.uint32)
        np.random.set_state(
            ("MT19937", keys, numpy["pos"], numpy["has_gauss"], numpy["cached_gaussian"])
        )
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as error:
        raise CheckpointError(
            f"checkpoint's random generator states are damaged: {error}"
        ) from None


# ------------------------------------------------------------------------ config
