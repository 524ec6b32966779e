"""Exceptions for user mistakes: the command line prints their message as one line and exits 2."""

__all__ = [
    "PyrovaeError",
    "ConfigError",
    "DataError",
    "CheckpointError",
    "TrainingError",
    "first_line",
    "refusal_detail",
]


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


def first_line(error: BaseException) -> str:
    """The first non-empty line of ``error``'s message, or its type's name."""
    for line in str(error).splitlines():
        if line.strip():
            return line.strip()
    return type(error).__name__


def refusal_detail(error: Exception) -> str:
    """The line of torch's weights-only refusal that names what was refused (one line)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in lines:
        if "global" in line.lower() or "unsupported" in line.lower():
            return line
    return lines[-1] if lines else type(error).__name__
