"""Per workload, one :class:`Entry` per tuned optimizer (its race's selected lr, confirmation seeds)
and per untuned Adam lr of the article's claim, all measured the same way from the run records.

- ``test``: test accuracy (regression: test loss) at each confirmation run's best validation point,
  mean ± std over seeds.
- Time to target: the target is the race's own (:mod:`descentlab.racing.summary`): 90 % of the best
  tuned optimizer's mean best validation accuracy, or for regression its mean best validation loss
  / 0.9. A run's time is its first evaluation meeting it, in optimizer steps and in wall-clock seconds;
  an entry's time is the median over seeds, a seed that never met it counting as infinite (so an entry
  has a finite time when most of its seeds got there).
- Tuning counted (AlgoPerf's external-tuning view): a tuned optimizer first spent its tuning runs (every
  lr of its grid, one seed, a full budget each); ``tuning_steps`` / ``tuning_seconds`` sum them, and its
  time to target with tuning counted is that plus its own time to target. An untuned entry spent none.
- ``improving``: seeds still improving when the budget ended (:func:`descentlab.study.settle.still_improving`).
- ``unfinished_seeds``: seeds whose run diverged or failed (no test score). They are kept, never dropped:
  the tuned best is the race's best arm (:func:`descentlab.racing.summary.rank_key`: an arm that finished
  every confirmation seed ranks before one that did not, then the mean best validation metric, then time
  to target, best epoch, name), and :func:`descentlab.study.verdict.judge` counts an unfinished seed of
  untuned Adam against it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..racing.record import FINAL, TUNE, RunRecord
from ..racing.summary import Stat, rank_key, time_to_target
from .data import RaceData, WorkloadData
from .settle import still_improving

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
    improving: int = 0
    """Seeds still improving when the budget ended (:mod:`.settle`)."""
    budget_epochs: int = 0
    multiple: int = 1
    """Budget in multiples of the workload's settled budget (tuned entries: 1)."""
    tuning_epochs: float = 0.0
    tuning_steps: float = 0.0
    tuning_seconds: float = 0.0
    per_seed: dict[int, float] = field(default_factory=dict)
    """Test metric per seed (finished runs only), for paired comparisons."""
    unfinished_seeds: tuple[int, ...] = ()
    """Seeds whose run diverged or failed (no test metric): counted against the entry, never dropped."""
    epochs_to_target: float = INF
    """Median over seeds of the epochs to the target (never = inf): a tie-break of the race's ranking."""
    best_epoch: float | None = None
    """Mean best-validation epoch of the finished runs: a tie-break of the race's ranking."""

    @property
    def unfinished(self) -> int:
        """Seeds whose run diverged or failed."""
        return len(self.unfinished_seeds)

    def with_tuning(self, seconds: bool) -> float:
        """Time to target with the tuning runs counted (see the module docstring)."""
        return (self.tuning_seconds + self.seconds_to_target) if seconds else (self.tuning_steps + self.steps_to_target)


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
        """The tuned optimizer the race ranks first (:func:`descentlab.racing.summary.rank_key`): among those
        that finished every confirmation seed if any did, the best mean best-validation metric (validation
        only: the test split takes part in no choice); an exact tie broken by time to target, best epoch,
        name. None when no tuned optimizer finished a run."""
        scored = [e for e in self.tuned() if e.best_val.mean is not None]
        if not scored:
            return None
        return min(scored, key=lambda e: rank_key(e.unfinished, e.best_val.mean, self.classification,
                                                  e.epochs_to_target, e.best_epoch, (e.optimizer, e.label)))


def untuned_label(optimizer: str, lr: float, multiple: int = 1) -> str:
    return f"{optimizer} lr={lr:g}" + (f" x{multiple}" if multiple != 1 else "") + " (untuned)"


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
          target: float | None, budget_epochs: int = 0, multiple: int = 1,
          tuning: Sequence[RunRecord] = ()) -> Entry:
    """One entry from its confirmation ``runs`` (and, for a tuned one, its ``tuning`` runs)."""
    ok = [r for r in runs if r.ok]
    metric = "val_acc" if classification else "val_loss"
    times = [reach(r.history, metric, target) if target is not None and r.ok else (INF, INF) for r in runs]
    epochs = [hit[0] if target is not None and r.ok and (hit := time_to_target(r.history, metric, target)) else INF
              for r in runs]
    per_seed = {int(r.seed): float(v) for r in ok if (v := (r.test_acc if classification else r.test_loss)) is not None}
    return Entry(label=label, optimizer=optimizer, tuned=tuned, lr=lr,
                 test=Stat.of((r.test_acc if classification else r.test_loss) for r in ok),
                 best_val=Stat.of((r.best_val_acc if classification else r.best_val_loss) for r in ok),
                 steps_to_target=_median([t[0] for t in times]), seconds_to_target=_median([t[1] for t in times]),
                 reached=sum(math.isfinite(t[0]) for t in times), seeds=len(runs),
                 improving=sum(still_improving(r.history, budget_epochs, classification) for r in ok),
                 budget_epochs=budget_epochs, multiple=multiple,
                 tuning_epochs=float(sum(r.epochs or 0.0 for r in tuning)),
                 tuning_steps=float(sum(r.steps or 0 for r in tuning)),
                 tuning_seconds=float(sum(r.wall_s or 0.0 for r in tuning)),
                 per_seed=per_seed, unfinished_seeds=tuple(sorted({int(r.seed) for r in runs} - set(per_seed))),
                 epochs_to_target=_median(epochs),
                 best_epoch=Stat.of(r.best_epoch for r in ok).mean)


def _runs(race: RaceData, optimizer: str, phase: str = FINAL) -> list[RunRecord]:
    return [r for r in race.records if r.phase == phase and r.optimizer == optimizer]


def view(data: WorkloadData) -> WorkloadView:
    """Every entry of one workload (see the module docstring): the tuned arms of its settled race, then
    untuned Adam at each (lr, budget multiple)."""
    summary = data.race.summary
    classification = summary.classification
    target = summary.target
    epochs = data.race.config.epochs
    entries = [entry(arm.optimizer, arm.optimizer, True, arm.selected_lr, _runs(data.race, arm.optimizer),
                     classification, target, epochs, 1, _runs(data.race, arm.optimizer, TUNE))
               for arm in summary.arms]
    for (lr, multiple), race in sorted(data.claim.items(), key=lambda kv: (kv[0][1], -kv[0][0])):
        optimizer = race.config.optimizers[0]
        entries.append(entry(untuned_label(optimizer, lr, multiple), optimizer, False, lr, _runs(race, optimizer),
                             classification, target, race.config.epochs, multiple))
    return WorkloadView(data.workload.name, classification, target, epochs, entries)
