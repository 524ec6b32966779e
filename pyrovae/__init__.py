"""pyrovae: variational auto-encoders written as Pyro probabilistic programs.

A VAE is a ``Program``: a ``PyroModule`` with a Pyro ``model`` and ``guide``, trained by
``pyro.infer.SVI`` or by ``pyrovae.train(config)`` / the ``pyrovae`` command. The one-site VAE
is built from registered components (prior, variational family, likelihood, networks) chosen by
name in a config file; any Pyro program can be registered as a whole. Importing pyrovae changes
no global state: no Pyro setting, nothing in the param store.
"""

from pyrovae.boundary import guard_startup_interrupt

guard_startup_interrupt()  # the pyrovae command: Ctrl-C during the imports below is one line

import pyrovae.components  # noqa: F401  (registers the built-in components)
import pyrovae.inference.estimators  # noqa: F401  (registers the estimators)
import pyrovae.training.schedules  # noqa: F401  (registers the learning-rate schedules)
from pyrovae.components.base import DATA_PLATE, Program, observation
from pyrovae.components.datasets import Dataset, load_splits
from pyrovae.components.programs import build_program
from pyrovae.components.programs.vae import LATENT, OBSERVED, VAE, build_vae
from pyrovae.config import Component, Config, DataConfig, ModelConfig, TrainConfig, load_config
from pyrovae.errors import CheckpointError, ConfigError, DataError, PyrovaeError, TrainingError
from pyrovae.evaluation.evaluate import Evaluation, evaluate
from pyrovae.registry import register, registered
from pyrovae.runs.directory import Run, load_run
from pyrovae.training.train import resume, train

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
    "observation",
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
