"""The run directory (``out``): ``config.json`` (what run this is), ``metrics.jsonl`` (one line per
evaluation), ``ckpt-*.pt`` (the last two checkpoints) and ``result.json`` (final metrics, status,
config, versions).

A directory holding a different run, or files that are not a run, is refused; one holding this same
run is continued only with ``resume=True``, which is refused where there is no run to continue.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

from ..atomic import append_line, atomic_write_json, atomic_write_text, dumps, jsonable
from ..outpaths import check_directory, check_entries_are_files
from . import checkpoint

CONFIG = "config.json"
METRICS = "metrics.jsonl"
RESULT = "result.json"


def _normal(value: Any) -> Any:
    return json.loads(dumps(jsonable(value)))


def _differences(stored: dict[str, Any], wanted: dict[str, Any]) -> str:
    keys = sorted(set(stored) | set(wanted))
    diffs = [f"{k}: {stored.get(k)!r} there vs {wanted.get(k)!r} now" for k in keys if stored.get(k) != wanted.get(k)]
    return "; ".join(diffs[:3]) + ("; ..." if len(diffs) > 3 else "")


class RunDir:
    """Files of one run under ``path``."""

    def __init__(self, path: str | os.PathLike[str], config: dict[str, Any], versions: dict[str, str],
                 resume: bool) -> None:
        self.path = Path(path)
        self.config = _normal(config)
        self.versions = versions
        self.resume = resume
        self.existing = False  # whether path already holds this run (set by _check)
        self._check()

    def _check(self) -> None:
        check_directory("out", self.path)  # can be created and written (not under a file, not /proc, ...)
        check_entries_are_files("out", self.path, (CONFIG, METRICS, RESULT))
        config_file = self.path / CONFIG
        if config_file.exists():
            try:
                stored = json.loads(config_file.read_text())["config"]
            except (OSError, ValueError, KeyError, TypeError) as error:
                raise ValueError(f"out {str(self.path)!r}: {CONFIG} is unreadable ({error}); "
                                 "choose another out") from None
            if stored != self.config:
                raise ValueError(f"out {str(self.path)!r} holds a different run ({_differences(stored, self.config)});"
                                 " choose another out")
            if not self.resume:
                raise ValueError(f"out {str(self.path)!r} already holds this run; pass resume=True (--resume) "
                                 "to continue it, or choose another out")
            self.existing = True
        elif self.path.is_dir() and any(self.path.iterdir()):
            raise ValueError(f"out {str(self.path)!r} is not empty and holds no descentlab run; choose another out")
        elif self.resume:
            raise ValueError(f"out {str(self.path)!r} holds no run to resume (no {CONFIG}); leave out resume=True "
                             "(--resume) to start a new run there")

    def open(self) -> dict[str, Any] | None:
        """Create the directory (writing ``config.json``) and return the checkpoint to resume from, if any
        (warning when an existing run has none left that verifies: it then starts over from step 0)."""
        self.path.mkdir(parents=True, exist_ok=True)
        if not (self.path / CONFIG).exists():
            atomic_write_json(self.path / CONFIG, {"config": self.config, "versions": self.versions})
        if not self.resume:
            return None
        saved = checkpoint.load_latest(self.path)
        if saved is None and self.existing:
            warnings.warn(f"out {str(self.path)!r}: no usable checkpoint to resume from; the run starts over from "
                          "step 0", RuntimeWarning, stacklevel=3)
        return saved

    def rewrite_metrics(self, history: list[dict[str, Any]]) -> None:
        """Make ``metrics.jsonl`` hold exactly ``history`` (dropping lines written after the checkpoint)."""
        atomic_write_text(self.path / METRICS, "".join(dumps(record) + "\n" for record in history))

    def append_metrics(self, record: dict[str, Any]) -> None:
        append_line(self.path / METRICS, dumps(record))

    def save_checkpoint(self, step: int, payload: dict[str, Any]) -> None:
        checkpoint.save(self.path, step, payload)

    def write_result(self, result: dict[str, Any]) -> None:
        atomic_write_json(self.path / RESULT, {**result, "versions": self.versions})
