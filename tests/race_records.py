"""Hand-made race run records for the protocol, summary and report tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from descentlab.racing.protocol import RaceConfig
from descentlab.racing.record import TUNE, RunRecord, RunSpec
from descentlab.racing.stages import plan_arm


def record(lr: float, val_loss: float | None = 0.5, val_acc: float | None = 0.5, status: str = "ok",
           optimizer: str = "adam", phase: str = TUNE, seed: int = 0, schedule: str = "constant",
           batch_size: int | None = 64, **extra: Any) -> RunRecord:
    """A run whose best validation point has ``val_loss`` / ``val_acc`` (also its last values unless given)."""
    fields: dict[str, Any] = {"val_loss": val_loss, "val_acc": val_acc, "best_val_loss": val_loss,
                              "best_val_acc": val_acc, "best_epoch": 1.0, "best_step": 10, "best_is_last": False}
    fields.update(extra)
    return RunRecord(phase, optimizer, schedule, lr, seed, batch_size=batch_size, status=status, **fields)


def drive(config: RaceConfig, outcome: Callable[[RunSpec], RunRecord], records: list[RunRecord] | None = None,
          limit: int = 10_000) -> list[RunRecord]:
    """Play a race's stages (:func:`descentlab.racing.stages.plan_arm`) to the end with ``outcome`` as the
    trainer (a spec -> its record); returns every record, in the order they were made."""
    records = list(records or [])
    for arm in config.arms():
        while (todo := plan_arm(config, arm, records).next_runs):
            records += [outcome(spec) for spec in todo]
            assert len(records) < limit, "the stages never finish"
    return records


def outcome_of(scores: Callable[[RunSpec], tuple[float | None, float | None] | None],
               **extra: Any) -> Callable[[RunSpec], RunRecord]:
    """A fake trainer: ``scores(spec)`` gives (best val loss, best val acc), or None for a diverged run."""

    def make(spec: RunSpec) -> RunRecord:
        score = scores(spec)
        if score is None:
            return record(spec.lr, None, None, status="diverged", optimizer=spec.optimizer, phase=spec.phase,
                          seed=spec.seed, schedule=spec.schedule, batch_size=spec.batch_size,
                          hypers=dict(spec.hypers), **extra)
        return record(spec.lr, score[0], score[1], optimizer=spec.optimizer, phase=spec.phase, seed=spec.seed,
                      schedule=spec.schedule, batch_size=spec.batch_size, hypers=dict(spec.hypers), **extra)

    return make
