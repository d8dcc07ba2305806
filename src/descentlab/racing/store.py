"""The race's results store: ``results.jsonl`` (append-only, one fsynced line per finished run) and
``race.json`` (the race's config, written atomically once).

Crash safety: a run's line is written with one ``write`` and fsynced before the race moves on, so a
kill (even SIGKILL) loses at most the runs in flight. The only damage a kill can leave is a truncated
last line; :meth:`ResultsStore.open` detects it (no trailing newline, or not valid JSON), cuts it off
and the run it held is redone. A damaged line anywhere else is not something a kill produces, so it
is reported, never silently dropped. Only the race's parent process writes; an advisory lock keeps
two races from writing to the same directory at once. The lock is the kernel's (``flock``), held by the
race's main process alone (its workers close their inherited copies), so it ends with that process —
a killed race's directory can be resumed at once.

Each line is a :class:`~descentlab.racing.record.RunRecord`. A directory written by an earlier
results format (its ``race.json`` has no ``results_format``, or another one) is refused, untouched:
its runs were selected by another rule, so they cannot be mixed with new ones.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_json, dumps
from ..outpaths import check_directory, check_entries_are_files
from .protocol import RaceConfig
from .record import RESULTS_FORMAT, RunRecord, RunSpec

RESULTS = "results.jsonl"
CONFIG = "race.json"
LOCK = ".race.lock"
REPORT = "report.html"
"""Written into the same directory at the end of a race (by :mod:`descentlab.report`)."""

def config_differences(stored: dict[str, Any], wanted: dict[str, Any], ignore: Collection[str] = ()) -> list[str]:
    """Human-readable ``key: stored -> wanted`` lines for every field that differs (``binding`` only when
    ``wanted`` has one: it is known once the task is loaded, see :func:`check_binding`), but ``ignore``."""
    keys = sorted((set(stored) | set(wanted)) - (set() if wanted.get("binding") is not None else {"binding"})
                  - set(ignore))
    return [f"{key}: {stored.get(key)!r} -> {wanted.get(key)!r}" for key in keys if stored.get(key) != wanted.get(key)]


class ResultsStore:
    """``results.jsonl`` + ``race.json`` in one directory. Use :meth:`open`; close (or ``with``) at the end."""

    def __init__(self, directory: Path, config: dict[str, Any], records: list[RunRecord], lock_fd: int,
                 dropped_tail: bool) -> None:
        self.directory = directory
        self.config = config
        self.records = records
        self.dropped_tail = dropped_tail
        self._lock_fd: int | None = lock_fd
        self._done = {record.spec for record in records}

    @property
    def results_path(self) -> Path:
        return self.directory / RESULTS

    @classmethod
    def check(cls, directory: str | os.PathLike[str], config: dict[str, Any], ignore: Collection[str] = ()) -> None:
        """Raise ValueError if ``directory`` cannot hold a race with ``config``; changes nothing. ``ignore``:
        fields of ``config`` not known yet (not compared; its results are then read at the full check)."""
        path = check_directory("--out", directory)  # can be created and written: not under a file, not /proc
        check_entries_are_files("--out", path, (CONFIG, RESULTS, LOCK))
        config_path = path / CONFIG
        if config_path.exists():
            stored = _read_config(config_path)
            if stored.get("results_format") != RESULTS_FORMAT:
                found = stored.get("results_format", 1)
                raise ValueError(f"--out {str(path)!r} holds a race written in results format {found!r} by an "
                                 f"earlier descentlab (this one writes format {RESULTS_FORMAT}: settings tuned over "
                                 "seeds with early stopping, results bound to their data); it cannot be resumed or "
                                 "mixed with new runs, so it is left untouched: use another --out")
            differences = config_differences(stored, config, ignore)
            if differences and config.get("binding") is not None and stored.get("binding") != config["binding"]:
                before, now = stored.get("binding"), config["binding"]
                code_only = isinstance(before, dict) and all(before.get(k) == now.get(k) for k in now
                                                             if k != OPTIMIZER_CODE)
                if code_only and OPTIMIZER_CODE not in before:
                    raise ValueError(f"--out {str(path)!r} holds a race written by an earlier descentlab, which did "
                                     "not record its optimizers' code: its runs cannot be checked against the code "
                                     "that would train the rest, so they are not mixed; use another --out")
                if code_only:
                    raise ValueError(f"--out {str(path)!r} holds a race run with other optimizer code "
                                     f"({_binding_change(before, now)}): its runs cannot be mixed with new ones; use "
                                     "another --out, or restore the optimizer as it was")
                raise ValueError(f"--out {str(path)!r} holds a race on other data or another model "
                                 f"({_binding_change(before, now)}): its runs cannot be "
                                 "mixed with new ones; use another --out, or restore the task as it was (a Dataset "
                                 "that draws random numbers in __getitem__ changes its data on every read: seed it)")
            if differences:
                raise ValueError(f"--out {str(path)!r} holds another race (its {CONFIG} differs: "
                                 f"{'; '.join(differences)}); use another --out or the same options")
        else:
            for name in (RESULTS, REPORT):  # files a race writes: without race.json they are someone else's
                if (path / name).exists():
                    raise ValueError(f"--out {str(path)!r} holds a {name} without {CONFIG}; not a race this tool "
                                     "can resume (use another --out)")
        if not ignore:
            _read_rows(path / RESULTS, config)

    @classmethod
    def open(cls, directory: str | os.PathLike[str], config: dict[str, Any]) -> ResultsStore:
        """Open (or create) the store for a race with ``config``.

        Raises ValueError, before anything in the directory is changed, when the directory holds a
        different race (its ``race.json`` differs from ``config``), holds files that are not a race,
        is locked by a running race, or has a damaged line other than the last one.
        """
        cls.check(directory, config)
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        lock_fd = _lock(path / LOCK)
        try:
            cls.check(path, config)  # again, now that no other race can write here: one may have just finished
            stored_config = (path / CONFIG).exists()
            rows, keep_bytes, dropped = _read_rows(path / RESULTS, config)
        except ValueError:
            _HELD_LOCKS.discard(lock_fd)
            os.close(lock_fd)
            raise
        if dropped:
            # The partial line a kill left behind: cut it off so the next append starts a fresh line.
            with open(path / RESULTS, "r+b") as handle:
                handle.truncate(keep_bytes)
                handle.flush()
                os.fsync(handle.fileno())
        if not stored_config:
            atomic_write_json(path / CONFIG, config)
        return cls(path, config, rows, lock_fd, dropped)

    def __contains__(self, spec: RunSpec) -> bool:
        return spec in self._done

    def append(self, record: RunRecord) -> None:
        """Write one finished run: a single write of one line, then fsync. Duplicates are refused."""
        key = record.spec
        if key in self._done:
            raise ValueError(f"run {key} is already in {self.results_path}")
        line = (dumps(record.to_json(), sort_keys=True) + "\n").encode("utf-8")
        fd = os.open(self.results_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            written = os.write(fd, line)
            while written < len(line):  # os.write may write less on a signal; finish the line
                written += os.write(fd, line[written:])
            os.fsync(fd)
        finally:
            os.close(fd)
        self.records.append(RunRecord.from_json(json.loads(line)))
        self._done.add(key)

    def close(self) -> None:
        if self._lock_fd is not None:
            _HELD_LOCKS.discard(self._lock_fd)
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- the lock ------------------------------------------------------------------------------------
_HELD_LOCKS: set[int] = set()
"""Lock descriptors this process holds. A forked child (a race worker) closes its copies at once
(``os.register_at_fork``), so the lock is held by the race's main process alone and the kernel drops
it the moment that process ends, however it ends: no worker, alive or not, can keep it."""


def _close_inherited_locks() -> None:
    for fd in _HELD_LOCKS:
        try:
            os.close(fd)  # the child's copy only: the parent's lock stays (flock belongs to the open file)
        except OSError:
            pass
    _HELD_LOCKS.clear()


os.register_at_fork(after_in_child=_close_inherited_locks)


def _lock(path: Path) -> int:
    """Take the race lock in ``path`` (an exclusive ``flock``) and write our pid into it; the descriptor.

    A ``flock`` belongs to its holder's open file and the kernel releases it when the holder dies, so
    a lock that cannot be taken proves a live process holds it: its pid, from the file, is named.
    """
    fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
        os.close(fd)
        who = f" (pid {owner})" if owner.isdigit() else ""
        raise ValueError(f"--out {str(path.parent)!r} is in use by another running race{who}") from None
    _HELD_LOCKS.add(fd)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    return fd


def _read_config(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read {path}: {error}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path} does not hold a race config (a JSON object)")
    return value


OPTIMIZER_CODE = "optimizers_sha256"
"""The binding's field of the raced optimizers' code fingerprints (:func:`.binding.of`)."""


def _binding_change(stored: Any, wanted: dict[str, Any]) -> str:
    if not isinstance(stored, dict):
        return "it holds no fingerprint"
    names = {"data_sha256": "the task's data", "model_sha256": "the model's parameters",
             "n_train": "the training split's size", "n_val": "the validation split's size",
             "n_test": "the test split's size"}
    keys = sorted(set(stored) | set(wanted))
    changed = [f"{names.get(k, k)} changed" for k in keys if stored.get(k) != wanted.get(k)
               and k != OPTIMIZER_CODE]
    before, now = stored.get(OPTIMIZER_CODE) or {}, wanted.get(OPTIMIZER_CODE) or {}
    changed += [f"the code of optimizer {name} changed" if name in before
                else f"no fingerprint of optimizer {name}'s code was stored"
                for name in sorted(now) if before.get(name) != now[name]]
    return ", ".join(changed)


def _read_rows(path: Path, config: dict[str, Any]) -> tuple[list[RunRecord], int, bool]:
    """(records, bytes to keep, whether a truncated last line was found). A line that repeats an earlier
    run, or a run that is not of this race (``config``), is refused naming the line: averaged in, it would
    move the race's numbers silently."""
    if not path.exists():
        return [], 0, False
    race = RaceConfig.from_json(config)
    seen: dict[RunSpec, int] = {}
    data = path.read_bytes()
    rows: list[RunRecord] = []
    offset = 0
    lines = list(_split_lines(data))
    for number, (line, complete) in enumerate(lines, start=1):
        last = number == len(lines)
        try:
            row = RunRecord.from_json(json.loads(line)) if complete else None
        except (ValueError, KeyError, TypeError):
            row = None
        if row is None:
            if last:
                return rows, offset, True
            raise ValueError(f"{path}: line {number} is damaged (not a complete JSON run record); a kill only "
                             "ever damages the last line, so this file was edited — fix or move it")
        spec = row.spec
        if spec in seen:
            raise ValueError(f"{path}: line {number} repeats the run of line {seen[spec]} ({_describe(spec)}); a race "
                             "writes each run once, so this file was edited — remove one of them")
        foreign = race.foreign(spec)
        if foreign is not None:
            raise ValueError(f"{path}: line {number} is not a run of this race ({foreign}: {_describe(spec)}) — "
                             "remove it or move the file")
        seen[spec] = number
        rows.append(row)
        offset += len(line) + 1
    return rows, offset, False


def _describe(spec: RunSpec) -> str:
    return f"{spec.phase} {spec.optimizer}/{spec.schedule} {spec.setting.describe()} seed {spec.seed}"


def _split_lines(data: bytes) -> Iterator[tuple[bytes, bool]]:
    """Each line of ``data`` without its newline, and whether it had one (a complete line)."""
    start = 0
    while start < len(data):
        end = data.find(b"\n", start)
        if end < 0:
            yield data[start:], False
            return
        yield data[start:end], True
        start = end + 1


check_store = ResultsStore.check
