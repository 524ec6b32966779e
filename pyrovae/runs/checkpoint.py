"""Checkpoints: written atomically, read with ``torch.load(weights_only=True)`` only, and
verified on every load.

Integrity: torch does not check its archive's CRCs, so a checkpoint with a zeroed block loads
as garbage weights. Every checkpoint pyrovae writes (format 2) holds ``sha256``, a digest of its
whole content (every key, number, string and tensor's dtype, shape and bytes); ``load_checkpoint``
checks the zip archive's CRCs and recomputes the digest, and refuses any difference. Checkpoints
of format 1 (written before the digest) are refused with a line naming
``upgrade_checkpoint(path)``, which adds the digest to a file the user trusts.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import struct
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from pyrovae.errors import CheckpointError, first_line, refusal_detail

__all__ = [
    "FORMAT_VERSION",
    "atomic_write_bytes",
    "save_checkpoint",
    "load_checkpoint",
    "content_digest",
    "upgrade_checkpoint",
]

FORMAT_VERSION = 2  #: 2: with the ``sha256`` content digest; 1: without (refused)
DIGEST_KEY = "sha256"

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
    content = {k: v for k, v in payload.items() if k not in ("format", DIGEST_KEY)}
    content = {"format": FORMAT_VERSION, **content}
    content[DIGEST_KEY] = content_digest(content)
    buffer = io.BytesIO()  # serialized in memory: a disk error surfaces as OSError, below
    torch.save(content, buffer)
    try:
        atomic_write_bytes(path, lambda handle: handle.write(buffer.getbuffer()))
    except OSError as error:
        reason = error.strerror or str(error)
        raise CheckpointError(
            f"cannot write checkpoint {str(path)!r}: {reason}; any previous checkpoint there is"
            " intact"
        ) from None


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint without executing code from it; damaged, unsafe or unverifiable files
    (no digest, or one that does not match the content) are refused in one line."""
    payload = _load_verified_archive(Path(path), map_location)
    where = f"checkpoint {str(path)!r}"
    if payload.get("format") == 1:
        raise CheckpointError(
            f"{where} is of format 1, written without an integrity digest, so damage cannot be"
            " told from content; retrain, or if you trust the file run"
            " pyrovae.runs.checkpoint.upgrade_checkpoint(path) once"
        )
    if payload.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{where} is not a pyrovae checkpoint of format {FORMAT_VERSION}")
    expected = payload.get(DIGEST_KEY)
    content = {k: v for k, v in payload.items() if k != DIGEST_KEY}
    if not isinstance(expected, str) or content_digest(content, where) != expected:
        raise CheckpointError(f"{where} is damaged: its content does not match its sha256 digest")
    return content


def upgrade_checkpoint(path: str | Path) -> None:
    """Add the integrity digest to a format-1 checkpoint (for a file you trust), in place."""
    payload = _load_verified_archive(Path(path), "cpu")
    if payload.get("format") != 1:
        raise CheckpointError(f"checkpoint {str(path)!r} is not of format 1")
    save_checkpoint(path, payload)


def content_digest(payload: Any, where: str = "checkpoint") -> str:
    """The sha256 of a checkpoint's content: dict keys in order, numbers, strings, and each
    tensor's dtype, shape and bytes (on the CPU). Equal content gives an equal digest."""
    digest = hashlib.sha256()
    stack = [payload]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            digest.update(b"d" + struct.pack("<q", len(node)))
            for key, value in reversed(list(node.items())):
                stack.extend([value, key])
        elif isinstance(node, list | tuple):
            digest.update((b"l" if isinstance(node, list) else b"t") + struct.pack("<q", len(node)))
            stack.extend(reversed(node))
        elif torch.is_tensor(node):
            if node.layout != torch.strided or node.is_meta or node.is_quantized:
                raise CheckpointError(f"{where} holds a {node.layout} tensor; pyrovae writes none")
            tensor = node.detach().cpu().contiguous()
            header = f"T{tensor.dtype}{tuple(tensor.shape)}".encode()
            digest.update(struct.pack("<q", len(header)) + header)
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif node is None or isinstance(node, bool | int | float | str | bytes):
            text = repr(node).encode()
            digest.update(b"v" + struct.pack("<q", len(text)) + text)
        else:
            raise CheckpointError(f"{where} holds a {type(node).__name__}; pyrovae writes none")
    return digest.hexdigest()


def _load_verified_archive(path: Path, map_location: Any) -> dict[str, Any]:
    """The dict in a torch zip archive whose CRCs all hold, read with ``weights_only``."""
    if not path.exists():
        detail = "is a dangling symbolic link" if path.is_symlink() else "does not exist"
        raise CheckpointError(f"checkpoint {str(path)!r} {detail}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} is not a regular file")
    damaged = (
        f"checkpoint {str(path)!r} cannot be loaded safely (damaged, truncated or not a"
        " pyrovae checkpoint)"
    )
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()  # torch reads the members without checking their CRCs
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as error:
        raise CheckpointError(f"{damaged}: {first_line(error)}") from None
    if bad is not None:
        raise CheckpointError(f"{damaged}: the CRC of {bad} does not match")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of foreign files
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        if "global" not in str(error).lower():  # a malformed stream, not a refused callable
            raise CheckpointError(f"{damaged}: {refusal_detail(error)}") from None
        raise CheckpointError(
            f"checkpoint {str(path)!r} is refused: it holds objects other than tensors and plain"
            f" data, which could run code when loaded ({refusal_detail(error)})"
        ) from None
    except Exception as error:
        raise CheckpointError(f"{damaged}: {first_line(error)}") from None
    if not isinstance(payload, dict):
        raise CheckpointError(
            f"checkpoint {str(path)!r} is not a pyrovae checkpoint of format {FORMAT_VERSION}"
        )
    return payload
