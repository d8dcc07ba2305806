"""Optimizers whose every run *failed* (raised an error: a bad hyper-parameter, an optimizer the task
cannot use) — as opposed to runs that diverged, which are a result. A race with one is not a result for
that optimizer but a broken setup: the CLI exits non-zero naming it, and the report says so."""

from __future__ import annotations

from collections.abc import Iterable

from ..racing.record import RunRecord

ERROR = "error"
"""A run's ``status`` when it raised instead of finishing (see :func:`descentlab.racing.runner.run_one`)."""


def failed_optimizers(rows: Iterable[RunRecord]) -> dict[str, str]:
    """``{optimizer: first error}`` for every optimizer with runs, all of them failed; in race order."""
    first_error: dict[str, str] = {}
    any_other: set[str] = set()
    for row in rows:
        name = row.optimizer
        if row.status == ERROR:
            first_error.setdefault(name, str(row.error or "unknown error").splitlines()[0] or "unknown error")
        else:
            any_other.add(name)
    return {name: error for name, error in first_error.items() if name not in any_other}


def failure_sentence(optimizer: str, error: str) -> str:
    """One line: which optimizer, that every run failed (not diverged), and the first error."""
    return f"every run of {optimizer} failed (an error, not a divergence); first error: {error}"
