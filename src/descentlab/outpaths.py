"""Output paths, checked before any work starts: the one rule every command applies to ``--out`` and
``--json`` (and the Python API to ``out``).

A path is accepted when what the command will write there can be created *and written*: the nearest
part of it that exists must be a directory (not a file), and the file system must let this process
create the first missing part there (or, for an existing directory, a file inside it). That last point
is tested by doing it — creating the entry and removing it at once — because permission bits alone do
not tell (root passes every ``access()`` check, yet nothing can be created under ``/proc``). Nothing the
user owns is changed: only a fresh, uniquely named or not-yet-existing entry is made and removed.

Every refusal is a :class:`ValueError` whose message names the option and the path in one line.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path


def _fail(option: str, path: object, why: str) -> ValueError:
    return ValueError(f"{option} {str(path)!r}: {why}")


def _reason(error: OSError) -> str:
    return os.strerror(error.errno) if error.errno else str(error)


def _exists(path: Path, option: str) -> bool:
    """Whether ``path`` exists (a dangling symbolic link counts: nothing can be created there)."""
    try:
        return path.exists() or path.is_symlink()
    except OSError as error:  # e.g. a name too long for the file system
        raise _fail(option, path, f"cannot be used ({_reason(error)})") from None


def _nearest_existing(path: Path, option: str) -> tuple[Path, list[str]]:
    """The longest prefix of ``path`` that exists, and the names after it that do not (outermost first)."""
    missing: list[str] = []
    current = path
    while not _exists(current, option):
        missing.insert(0, current.name)
        parent = current.parent
        if parent == current:
            break
        current = parent
    return current, missing


def _probe_create(directory: Path, name: str, as_directory: bool, option: str, shown: Path) -> None:
    """Create ``directory/name`` and remove it at once: proves the command can create it."""
    target = directory / name
    try:
        if as_directory:
            os.mkdir(target)
            os.rmdir(target)
        else:
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            os.unlink(target)
    except FileExistsError:  # created meanwhile by someone else: it exists, which is what we wanted to know
        return
    except OSError as error:
        raise _fail(option, shown, f"cannot create {str(target)!r} ({_reason(error)})") from None


def _probe_write_in(directory: Path, option: str, shown: Path) -> None:
    """Create a uniquely named temp file in ``directory`` and remove it (atomic writes need exactly this)."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".descentlab-probe-", dir=directory)
    except OSError as error:
        raise _fail(option, shown, f"cannot write in {str(directory)!r} ({_reason(error)})") from None
    os.close(fd)
    os.unlink(tmp)


def _check_missing(base: Path, missing: list[str], option: str, shown: Path, last_is_file: bool) -> None:
    if not base.is_dir():
        raise _fail(option, shown, f"{str(base)!r} is a file, not a directory")
    try:
        name_max = os.pathconf(base, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    for name in missing:
        if len(os.fsencode(name)) > name_max:
            raise _fail(option, shown, f"the name {name[:20]!r}... is longer than {name_max} bytes")
    _probe_create(base, missing[0], as_directory=len(missing) > 1 or not last_is_file, option=option, shown=shown)


def _as_path(option: str, value: str | os.PathLike[str]) -> Path:
    text = os.fspath(value)
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{option} needs a path, got {text!r}")
    if "\x00" in text:
        raise _fail(option, text, "a path cannot contain a NUL character")
    try:
        os.fsencode(text)
    except UnicodeError:
        raise _fail(option, text, "not a valid file name on this system") from None
    return Path(text)


def check_directory(option: str, value: str | os.PathLike[str]) -> Path:
    """``value`` as a directory the command can create (if missing) and write files in; else ValueError."""
    path = _as_path(option, value)
    base, missing = _nearest_existing(path, option)
    if not missing:
        if path.is_symlink() and not path.exists():
            raise _fail(option, path, "is a dangling symbolic link")
        if not path.is_dir():
            raise _fail(option, path, "exists and is not a directory")
        _probe_write_in(path, option, path)
        return path
    _check_missing(base, missing, option, path, last_is_file=False)
    return path


def check_file(option: str, value: str | os.PathLike[str], suffix: str | None = None) -> Path:
    """``value`` as a file the command can write atomically (a temp file beside it, then a rename): its
    directory exists or can be created and is writable, and the path is not a directory. ``suffix``
    (e.g. ``".png"``) is required when given."""
    path = _as_path(option, value)
    if suffix is not None and path.suffix.lower() != suffix:
        raise ValueError(f"{option} must end in {suffix}, got {str(path)!r}")
    base, missing = _nearest_existing(path, option)
    if not missing:
        if path.is_dir():
            raise _fail(option, path, "is a directory, not a file")
        if path.is_symlink() and not path.exists():
            raise _fail(option, path, "is a dangling symbolic link")
        if not path.is_file():
            raise _fail(option, path, "exists and is not a regular file")
        _probe_write_in(path.parent, option, path)
        return path
    _check_missing(base, missing, option, path, last_is_file=True)
    return path


def check_entries_are_files(option: str, directory: Path, names: tuple[str, ...]) -> None:
    """Refuse a ``directory`` where one of the files the command keeps there (``names``) is something else
    (a directory, a device, a dangling link): the command could neither read nor replace it."""
    for name in names:
        entry = directory / name
        try:
            if (entry.exists() or entry.is_symlink()) and not entry.is_file():
                raise _fail(option, directory, f"its {name} is not a regular file")
        except OSError as error:
            if error.errno in (errno.ENOTDIR, errno.ENOENT):
                continue
            raise _fail(option, directory, f"cannot read {name} ({_reason(error)})") from None
