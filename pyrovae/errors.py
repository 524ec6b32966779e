"""Exceptions for user mistakes: the command line prints their message as one line and exits 2."""

__all__ = ["PyrovaeError", "ConfigError", "DataError", "CheckpointError", "TrainingError"]


class PyrovaeError(Exception):
    """Base class of every error caused by the user's input rather than by a bug."""


class ConfigError(PyrovaeError, ValueError):
    """An unknown key, an unknown component name or a value of the wrong type or range."""


class DataError(PyrovaeError, ValueError):
    """A dataset that is missing, malformed, or does not fit the chosen likelihood."""


class CheckpointError(PyrovaeError):
    """A checkpoint that is missing, damaged, unsafe, or does not match the model."""


class TrainingError(PyrovaeError, RuntimeError):
    """Training cannot go on (for example, the loss stayed non-finite)."""
