"""One run of a race, as one typed record: made from the training loop's :class:`RunResult`,
written to ``results.jsonl`` and read back by the store, summarized, and drawn in the report.

``test_loss`` / ``test_acc`` are the headline test numbers: the test split at the run's best
validation point (its weights kept for that), present only on confirmation (``final``) runs.
``end_test_loss`` / ``end_test_acc`` are the test split at the end of the budget. ``val_loss`` /
``val_acc`` are the last evaluation's; ``best_*`` the best validation point's (see
:mod:`descentlab.train.best`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, NamedTuple

from ..train.result import RunResult

RESULTS_FORMAT = 3
"""Version of ``race.json`` / ``results.jsonl``. 1 (unversioned): selection on the final validation
loss, test at the end only. 2: best-validation-point selection, schedules, device. 3: a run is a
configuration (lr, batch size, other hyper-parameters), tuned over seeds with early stopping; the race
is bound to its data and model (fingerprints)."""

TUNE = "tune"
FINAL = "final"


Hypers = tuple[tuple[str, Any], ...]
"""Hyper-parameters other than the lr, as sorted (name, value) pairs (a pair of floats as a tuple)."""


def frozen(value: Any) -> Any:
    """``value`` with every list made a tuple (JSON gives lists back for tuples)."""
    return tuple(frozen(v) for v in value) if isinstance(value, (list, tuple)) else value


def hypers_of(mapping: Any) -> Hypers:
    """Sorted, hashable (name, value) pairs of a mapping of hyper-parameters."""
    return tuple(sorted((str(k), frozen(v)) for k, v in dict(mapping or {}).items()))


class Setting(NamedTuple):
    """One point of an arm's search space: the lr, the batch size (None: full batch) and the other
    hyper-parameters."""

    lr: float
    batch_size: int | None
    hypers: Hypers = ()

    def describe(self) -> str:
        """``lr 0.01, batch 64, momentum 0.9``."""
        parts = [f"lr {self.lr:g}", f"batch {'full' if self.batch_size is None else self.batch_size}"]
        parts += [f"{name} {_value_text(value)}" for name, value in self.hypers]
        return ", ".join(parts)


def _value_text(value: Any) -> str:
    if isinstance(value, tuple):
        return "(" + ", ".join(_value_text(v) for v in value) + ")"
    return f"{value:g}" if isinstance(value, float) else str(value)


class RunSpec(NamedTuple):
    """What identifies one run of a race."""

    phase: str
    optimizer: str
    schedule: str
    lr: float
    seed: int
    batch_size: int | None
    hypers: Hypers = ()

    @property
    def arm(self) -> tuple[str, str]:
        return self.optimizer, self.schedule

    @property
    def setting(self) -> Setting:
        return Setting(self.lr, self.batch_size, self.hypers)


def _finite(value: Any) -> float | None:
    return float(value) if value is not None and math.isfinite(float(value)) else None


@dataclass
class RunRecord:
    phase: str
    optimizer: str
    schedule: str
    lr: float
    seed: int
    batch_size: int | None
    status: str
    """``ok``, ``diverged`` (recorded, never selectable) or ``error`` (the run raised)."""
    epochs: float | None = None
    steps: int | None = None
    wall_s: float | None = None
    val_loss: float | None = None
    val_acc: float | None = None
    best_step: int | None = None
    best_epoch: float | None = None
    best_val_loss: float | None = None
    best_val_acc: float | None = None
    best_is_last: bool | None = None
    test_loss: float | None = None
    test_acc: float | None = None
    end_test_loss: float | None = None
    end_test_acc: float | None = None
    diverged_at_step: int | None = None
    diverge_reason: str | None = None
    error: str | None = None
    traceback: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    task: str = ""
    model: str = ""
    device: str = "cpu"
    engine: str = "per-run"
    """``per-run`` (trained alone) or ``batched`` (trained stacked with other runs, :mod:`.batching`)."""
    hypers: dict[str, Any] = field(default_factory=dict)
    """The hyper-parameters this run set besides the lr (the optimizer's defaults for the others)."""
    stopped_early_at: int | None = None
    """The step at which early stopping ended this (tuning) run; None: it trained its whole budget."""
    versions: dict[str, str] = field(default_factory=dict)
    machine: dict[str, str] = field(default_factory=dict)

    @property
    def spec(self) -> RunSpec:
        return RunSpec(self.phase, self.optimizer, self.schedule, float(self.lr), int(self.seed), self.batch_size,
                       hypers_of(self.hypers))

    @property
    def setting(self) -> Setting:
        return self.spec.setting

    @property
    def arm(self) -> tuple[str, str]:
        return self.optimizer, self.schedule

    @property
    def selected(self) -> bool:
        """A confirmation run of the selected lr (the only runs that read the test split)."""
        return self.phase == FINAL

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @classmethod
    def from_result(cls, spec: RunSpec, result: RunResult, **stamp: Any) -> RunRecord:
        return cls(*spec[:5], batch_size=spec.batch_size, hypers=dict(spec.hypers), status=result.status,
                   stopped_early_at=result.stopped_early_at, epochs=result.epochs, steps=result.steps,
                   wall_s=result.wall_s, val_loss=_finite(result.val_loss), val_acc=_finite(result.val_acc),
                   best_step=result.best_step, best_epoch=result.best_epoch,
                   best_val_loss=_finite(result.best_val_loss), best_val_acc=_finite(result.best_val_acc),
                   best_is_last=result.best_is_last, test_loss=_finite(result.test_loss),
                   test_acc=_finite(result.test_acc), end_test_loss=_finite(result.end_test_loss),
                   end_test_acc=_finite(result.end_test_acc), diverged_at_step=result.diverged_at_step,
                   diverge_reason=result.diverge_reason, history=[dict(e) for e in result.history], **stamp)

    @classmethod
    def failed(cls, spec: RunSpec, error: str, traceback: str, wall_s: float, **stamp: Any) -> RunRecord:
        return cls(*spec[:5], batch_size=spec.batch_size, hypers=dict(spec.hypers), status="error", wall_s=wall_s,
                   error=error, traceback=traceback, **stamp)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "selected": self.selected}

    @classmethod
    def from_json(cls, data: Any) -> RunRecord:
        """A record read back; ValueError when ``data`` is not one (missing or unknown fields)."""
        if not isinstance(data, dict):
            raise ValueError(f"a run record is a JSON object, got {type(data).__name__}")
        names = {f.name for f in fields(cls)}
        missing = {"phase", "optimizer", "schedule", "lr", "seed", "batch_size", "status"} - set(data)
        unknown = set(data) - names - {"selected"}
        if missing or unknown:
            raise ValueError(f"not a run record of results format {RESULTS_FORMAT} (missing {sorted(missing)}, "
                             f"unknown {sorted(unknown)})")
        record = cls(**{k: v for k, v in data.items() if k in names})
        record.lr, record.seed = float(record.lr), int(record.seed)
        return record
