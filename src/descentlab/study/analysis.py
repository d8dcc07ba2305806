"""Per workload, one :class:`Entry` per tuned optimizer (its race's selected lr, confirmation seeds)
and per untuned Adam lr of the article's claim, all measured the same way from the run records.

- ``test``: test accuracy (regression: test loss) at each confirmation run's best validation point,
  mean ± std over seeds.
- Time to target: the target is the race's own (:mod:`descentlab.racing.summary`): 90 % of the best
  tuned optimizer's mean best validation accuracy, or for regression its mean best validation loss
  / 0.9. A run's time is its first evaluation meeting it, in optimizer steps and in wall-clock seconds;
  an entry's time is the median over seeds, a seed that never met it counting as infinite (so an entry
  has a finite time when most of its seeds got there).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..racing.record import FINAL, RunRecord
from ..racing.summary import Stat
from .run import RaceData, WorkloadData

INF = math.inf


@dataclass
class Entry:
    label: str
    optimizer: str
    tuned: bool
    lr: float | None
    test: Stat
    best_val: Stat
    steps_to_target: float
    seconds_to_target: float
    reached: int
    seeds: int
    still_improving: int = 0
    """Seeds whose best validation point was their last evaluation (the budget may be too short)."""


@dataclass
class WorkloadView:
    name: str
    classification: bool
    target: float | None
    epochs: int
    entries: list[Entry]

    def tuned(self) -> list[Entry]:
        return [e for e in self.entries if e.tuned]

    def untuned(self) -> list[Entry]:
        return [e for e in self.entries if not e.tuned]

    def best_tuned(self) -> Entry | None:
        """The tuned optimizer with the best mean test metric."""
        scored = [e for e in self.tuned() if e.test.mean is not None]
        if not scored:
            return None
        return max(scored, key=lambda e: e.test.mean) if self.classification else \
            min(scored, key=lambda e: e.test.mean)


def untuned_label(optimizer: str, lr: float) -> str:
    return f"{optimizer} lr={lr:g} (untuned)"


def reach(history: Sequence[Mapping[str, Any]], metric: str, target: float) -> tuple[float, float]:
    """(step, seconds) of the first evaluation meeting ``target``, (inf, inf) when none does."""
    for entry in history:
        value = entry.get(metric)
        if value is None or not math.isfinite(float(value)):
            continue
        if (value >= target) if metric == "val_acc" else (value <= target):
            return float(entry.get("step") or 0), float(entry.get("wall_s") or 0.0)
    return INF, INF


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else INF


def entry(label: str, optimizer: str, tuned: bool, lr: float | None, runs: Sequence[RunRecord], classification: bool,
          target: float | None) -> Entry:
    ok = [r for r in runs if r.ok]
    metric = "val_acc" if classification else "val_loss"
    times = [reach(r.history, metric, target) if target is not None and r.ok else (INF, INF) for r in runs]
    return Entry(label=label, optimizer=optimizer, tuned=tuned, lr=lr,
                 test=Stat.of((r.test_acc if classification else r.test_loss) for r in ok),
                 best_val=Stat.of((r.best_val_acc if classification else r.best_val_loss) for r in ok),
                 steps_to_target=_median([t[0] for t in times]), seconds_to_target=_median([t[1] for t in times]),
                 reached=sum(math.isfinite(t[0]) for t in times), seeds=len(runs),
                 still_improving=sum(bool(r.best_is_last) for r in ok))


def _finals(race: RaceData, optimizer: str) -> list[RunRecord]:
    return [r for r in race.records if r.phase == FINAL and r.optimizer == optimizer]


def view(data: WorkloadData) -> WorkloadView:
    """Every entry of one workload (see the module docstring)."""
    summary = data.race.summary
    classification = summary.classification
    target = summary.target
    entries = [entry(arm.optimizer, arm.optimizer, True, arm.selected_lr, _finals(data.race, arm.optimizer),
                     classification, target) for arm in summary.arms]
    for lr, race in data.claim.items():
        optimizer = race.config.optimizers[0]
        entries.append(entry(untuned_label(optimizer, lr), optimizer, False, lr, _finals(race, optimizer),
                             classification, target))
    return WorkloadView(data.workload.name, classification, target, data.workload.epochs, entries)
