"""pyrovae: variational auto-encoders written as Pyro probabilistic programs.

A VAE is a ``Program``: a ``PyroModule`` with a Pyro ``model`` and ``guide``, trained by
``pyro.infer.SVI`` or by ``pyrovae.train(config)`` / the ``pyrovae`` command. The one-site VAE
is built from registered components (prior, variational family, likelihood, networks) chosen by
name in a config file; any Pyro program can be registered as a whole. Importing pyrovae changes
no global state: no Pyro setting, nothing in the param store.
"""

from .boundary import guard_startup_interrupt

guard_startup_interrupt()  # the pyrovae command: Ctrl-C during the imports below is one line

from .config import Component, Config, DataConfig, ModelConfig, TrainConfig, load_config
from .data import Dataset, load_splits
from .errors import CheckpointError, ConfigError, DataError, PyrovaeError, TrainingError
from .evaluate import Evaluation, evaluate
from .model import LATENT, OBSERVED, VAE, build_vae
from .program import DATA_PLATE, Program, build_program
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
    "DATA_PLATE",
    "Program",
    "build_program",
    "register",
    "registered",
    "Run",
    "load_run",
    "resume",
    "train",
    "Evaluation",
    "evaluate",
]

__version__ = "0.1.0"
