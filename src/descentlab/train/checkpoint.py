"""Checkpoints: one file per saved step, written atomically, the last two kept.

File layout: ``MAGIC`` + SHA-256 of the payload (32 bytes) + the payload (``torch.save`` of a dict of
tensors and plain values, loaded back with ``weights_only=True``). A file whose digest does not
match — truncated, overwritten, half-copied — is reported and skipped in favour of the previous one.
"""

from __future__ import annotations

import hashlib
import io
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from ..atomic import atomic_write_bytes, fsync_directory

MAGIC = b"DLCKPT1\n"
KEEP = 2
_NAME = re.compile(r"^ckpt-(\d{10})\.pt$")


class CorruptCheckpoint(ValueError):
    """A checkpoint file that cannot be trusted."""


def path_for(directory: Path, step: int) -> Path:
    return directory / f"ckpt-{step:010d}.pt"


def _by_step(directory: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of the checkpoint files in ``directory``, newest (highest step) first."""
    if not directory.is_dir():
        return []
    return sorted(((int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))), reverse=True)


def list_checkpoints(directory: Path) -> list[Path]:
    """Checkpoint files in ``directory``, newest (highest step) first."""
    return [p for _, p in _by_step(directory)]


def save(directory: Path, step: int, payload: dict[str, Any], keep: int = KEEP) -> Path:
    """Write the checkpoint for ``step`` atomically, then delete all but the newest ``keep`` up to ``step``.

    Checkpoints of later steps are deleted too: they belong to a future the run has left (it resumed
    from an earlier one because they failed to load), and kept they would push out the new ones."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    body = buffer.getvalue()
    path = path_for(directory, step)
    atomic_write_bytes(path, MAGIC + hashlib.sha256(body).digest() + body)
    found = _by_step(directory)
    later = [p for s, p in found if s > step]
    for old in later + [p for s, p in found if s <= step][keep:]:
        old.unlink(missing_ok=True)
    fsync_directory(directory)
    return path


def load(path: Path) -> dict[str, Any]:
    """Read and verify one checkpoint; raise :class:`CorruptCheckpoint` saying what is wrong."""
    data = path.read_bytes()
    header = len(MAGIC) + 32
    if len(data) < header or not data.startswith(MAGIC):
        raise CorruptCheckpoint(f"{path.name}: not a descentlab checkpoint or truncated ({len(data)} bytes)")
    body = data[header:]
    if hashlib.sha256(body).digest() != data[len(MAGIC):header]:
        raise CorruptCheckpoint(f"{path.name}: checksum mismatch (truncated or corrupt, {len(data)} bytes)")
    try:
        return torch.load(io.BytesIO(body), weights_only=True)
    except Exception as error:  # verified bytes that torch cannot read: a format from elsewhere
        raise CorruptCheckpoint(f"{path.name}: unreadable ({type(error).__name__}: {error})") from None


def load_latest(directory: Path) -> dict[str, Any] | None:
    """The newest checkpoint that verifies, warning about each newer one that does not (naming the one
    tried next); None when there is no usable checkpoint."""
    candidates = list_checkpoints(directory)
    for index, path in enumerate(candidates):
        try:
            return load(path)
        except CorruptCheckpoint as error:
            problem = str(error)
        except OSError as error:
            problem = f"{path.name} cannot be read ({error})"
        following = (f"falling back to the previous one, {candidates[index + 1].name}" if index + 1 < len(candidates)
                     else "no earlier checkpoint to fall back to")
        warnings.warn(f"checkpoint {problem}; {following}", RuntimeWarning, stacklevel=3)
    return None
