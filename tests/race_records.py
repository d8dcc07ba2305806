"""Hand-made race run records for the protocol, summary and report tests."""

from __future__ import annotations

from typing import Any

from descentlab.racing.record import TUNE, RunRecord


def record(lr: float, val_loss: float | None = 0.5, val_acc: float | None = 0.5, status: str = "ok",
           optimizer: str = "adam", phase: str = TUNE, seed: int = 0, schedule: str = "constant",
           **extra: Any) -> RunRecord:
    """A run whose best validation point has ``val_loss`` / ``val_acc`` (also its last values unless given)."""
    fields: dict[str, Any] = {"val_loss": val_loss, "val_acc": val_acc, "best_val_loss": val_loss,
                              "best_val_acc": val_acc, "best_epoch": 1.0, "best_step": 10, "best_is_last": False}
    fields.update(extra)
    return RunRecord(phase, optimizer, schedule, lr, seed, batch_size=64, status=status, **fields)
