"""Checkpoints: written atomically, read with ``torch.load(weights_only=True)`` only."""

from __future__ import annotations

import io
import os
import pickle
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

from pyrovae.errors import CheckpointError

__all__ = ["FORMAT_VERSION", "atomic_write_bytes", "save_checkpoint", "load_checkpoint"]

FORMAT_VERSION = 1

# mkstemp creates files readable by their owner alone; a written file gets the mode a plain
# open() would give it. The umask is read once, here: os.umask can only be read by setting it.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def atomic_write_bytes(path: str | Path, write: Any) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync it, then rename it over
    ``path``: readers see the old file or the whole new one, never a part."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Save ``payload`` (tensors, numbers, strings, lists and dicts only) atomically.

    A failed write (a full disk, a vanished folder) leaves the previous file as it was and no
    temporary file behind, and raises a ``CheckpointError``.
    """
    buffer = io.BytesIO()  # serialized in memory: a disk error surfaces as OSError, below
    torch.save({"format": FORMAT_VERSION, **payload}, buffer)
    try:
        atomic_write_bytes(path, lambda handle: handle.write(buffer.getbuffer()))
    except OSError as error:
        reason = error.strerror or str(error)
        raise CheckpointError(
            f"cannot write checkpoint {str(path)!r}: {reason}; any previous checkpoint there is"
            " intact"
        ) from None


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint without executing code from it; damaged or unsafe files are refused."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of foreign files
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        if "global" not in str(error).lower():  # a malformed stream, not a refused callable
            raise CheckpointError(
                f"checkpoint {str(path)!r} cannot be loaded safely (damaged, truncated or not a"
                f" pyrovae checkpoint): {_unsafe_detail(error)}"
            ) from None
        raise CheckpointError(
            f"checkpoint {str(path)!r} is refused: it holds objects other than tensors and plain"
            f" data, which could run code when loaded ({_unsafe_detail(error)})"
        ) from None
    except Exception as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"checkpoint {str(path)!r} cannot be loaded safely (damaged, truncated or not a"
            f" pyrovae checkpoint): {first}"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is not a pyrovae checkpoint of format {FORMAT_VERSION}"
        )
    return payload


def _unsafe_detail(error: Exception) -> str:
    """The line of torch's weights-only refusal that names what was refused."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in lines:
        if "global" in line.lower() or "unsupported" in line.lower():
            return line
    return lines[-1] if lines else type(error).__name__
