"""pyrovae: variational auto-encoders written as Pyro probabilistic programs.

A VAE is a model p(z) p(x|z) and a guide q(z|x) over one latent site, each part a registered
component chosen by name in a config file. Train with ``pyrovae.train(config)`` or the
``pyrovae`` command.
"""

from .boundary import guard_startup_interrupt

guard_startup_interrupt()  # the pyrovae command: Ctrl-C during the imports below is one line

import pyro

# Parameters live in the modules (saved with their state dicts, optimized by torch optimizers),
# not in Pyro's global param store: two VAEs in one process never share parameters by name.
# This must hold before any PyroModule is built, so it is set when pyrovae is imported.
pyro.settings.set(module_local_params=True)

from .config import Component, Config, DataConfig, ModelConfig, TrainConfig, load_config
from .data import Dataset, load_splits
from .errors import CheckpointError, ConfigError, DataError, PyrovaeError, TrainingError
from .evaluate import Evaluation, evaluate
from .model import LATENT, OBSERVED, VAE, build_vae
from .registry import register, registered
from .resume import resume
from .run import Run, load_run
from .train import train

__all__ = [
    "Component",
    "Config",
    "DataConfig",
    "ModelConfig",
    "TrainConfig",
    "load_config",
    "Dataset",
    "load_splits",
    "PyrovaeError",
    "ConfigError",
    "DataError",
    "CheckpointError",
    "TrainingError",
    "LATENT",
    "OBSERVED",
    "VAE",
    "build_vae",
    "register",
    "registered",
    "Run",
    "load_run",
    "resume",
    "train",
    "Evaluation",
    "evaluate",
]  # noqa: E402 (imports follow the setting above)

__version__ = "0.1.0"
