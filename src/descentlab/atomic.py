"""Crash-safe file writes: whole files atomically (temp file, fsync, rename, fsync of the directory),
logs append-only.

A reader sees either the old file or the new one, never a half-written one, even when the writer is
killed mid-write (``os.replace`` is atomic on POSIX within one directory).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _process_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_process_umask()
"""The mode a plain ``open()`` gives a new file (mkstemp's temp files are 0600)."""


def fsync_directory(directory: str | os.PathLike[str]) -> None:
    """Persist a rename: fsync the directory entry (a no-op where the OS does not allow it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _clipped(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` bytes in the file system's encoding (whole characters): a temp
    name must fit the file system's name limit even beside a target name that uses all of it; the
    suffix (a writer such as ``savefig`` reads the format from it) is kept whole when it fits."""
    while len(os.fsencode(text)) > limit:
        text = text[:-1]
    return text


def atomic_write_with(path: str | os.PathLike[str], write: Callable[[Path], None]) -> Path:
    """Produce ``path`` atomically through ``write(tmp_path)`` (e.g. ``fig.savefig``): the writer fills
    a temp file in the same directory, which is fsynced, given normal permissions and renamed."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{_clipped(target.stem, 64)}.", suffix=_clipped(target.suffix, 16) or ".tmp",
                               dir=target.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_directory(target.parent)
    return target


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a temp file in the same directory, fsync, rename."""
    atomic_write_with(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def jsonable(value: Any) -> Any:
    """``value`` with non-finite floats as ``None`` (JSON has no NaN/inf) and tuples as lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    """Strict JSON (non-finite floats become null)."""
    return json.dumps(jsonable(value), allow_nan=False, **kwargs)


def atomic_write_json(path: str | os.PathLike[str], value: Any) -> None:
    atomic_write_text(path, dumps(value, indent=2, sort_keys=True) + "\n")


def append_line(path: str | os.PathLike[str], line: str, fsync: bool = False) -> None:
    """Append one line (a newline is added) to ``path``; ``fsync`` makes it durable now."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line.rstrip("\n") + "\n")
        handle.flush()
        if fsync:
            os.fsync(handle.fileno())
