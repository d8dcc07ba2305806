"""What a race found, per arm (optimizer, schedule), computed from its config and run records alone
(so a report can be rebuilt from ``results.jsonl`` at any time).

Scores are means ± sample std over the confirmation seeds whose run finished (status ``ok``): the
test split at each run's best validation point (the headline) and at the end of the budget.

Time-to-target: the target is ``TARGET_FRACTION`` (90 %) of the best mean best-point validation
accuracy that any arm reached at its selected lr (for a task without accuracy — regression — it is
the best mean best-point validation loss times ``1 / TARGET_FRACTION``). A run's time-to-target is
the first evaluation at which it meets the target: its epoch and its wall-clock seconds. The summary
gives the mean over the seeds that reached it and how many did.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .protocol import Arm, RaceConfig, is_classification, select
from .record import FINAL, TUNE, RunRecord

TARGET_FRACTION = 0.9


@dataclass
class Stat:
    """Mean and sample standard deviation of the finite values among ``n``."""

    mean: float | None
    std: float | None
    n: int

    @classmethod
    def of(cls, values: Iterable[float | None]) -> Stat:
        finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
        if not finite:
            return cls(None, None, 0)
        return cls(statistics.fmean(finite), statistics.stdev(finite) if len(finite) > 1 else 0.0, len(finite))

    def format(self, percent: bool = False) -> str:
        """``mean ± std`` (accuracies as percentages), ``-`` when there is no value."""
        if self.mean is None:
            return "-"
        if percent:
            text = f"{self.mean * 100:.1f}%"
            return text + (f" ± {self.std * 100:.1f}" if self.n > 1 and self.std is not None else "")
        text = f"{self.mean:.3g}"
        return text + (f" ± {self.std:.2g}" if self.n > 1 and self.std is not None else "")


@dataclass
class ArmSummary:
    optimizer: str
    schedule: str
    selected_lr: float | None
    grid_size: int
    diverged: int
    failed: int
    test_acc: Stat
    """At each confirmation run's best validation point (the headline); ``end_*`` at the end of the budget."""
    test_loss: Stat
    end_test_acc: Stat
    end_test_loss: Stat
    best_val_acc: Stat
    best_val_loss: Stat
    best_epoch: Stat
    best_is_last: int
    """Confirmation runs whose best validation point was their last evaluation (the budget may be short)."""
    target_epoch: Stat
    target_seconds: Stat
    reached_target: int
    seeds: int
    steps: int | None
    wall_s: Stat
    sensitivity: list[dict[str, Any]] = field(default_factory=list)

    @property
    def arm(self) -> Arm:
        return self.optimizer, self.schedule

    @property
    def all_diverged(self) -> bool:
        """No lr to select: every tuning run diverged or failed (or none has finished yet)."""
        return self.selected_lr is None

    def no_result_reason(self) -> str:
        """Why there is no selected lr, in a few words (for an arm with ``all_diverged``)."""
        if not self.grid_size:
            return "no runs yet"
        if self.failed and self.diverged:
            return "all lrs diverged or failed"
        return "all lrs failed" if self.failed else "all lrs diverged"


@dataclass
class RaceSummary:
    arms: list[ArmSummary]
    metric: str
    """``val_acc`` (classification) or ``val_loss`` (regression): what selection and time-to-target watch."""
    target: float | None
    schedules: tuple[str, ...]

    @property
    def classification(self) -> bool:
        return self.metric == "val_acc"

    def ranked(self, schedule: str | None = None) -> list[ArmSummary]:
        """Arms with a test score (a selected lr and a finished confirmation run), best first: highest
        mean test accuracy at the best point, or lowest mean test loss for a task without accuracy."""
        def key(s: ArmSummary) -> float:
            return -(s.test_acc.mean or 0.0) if self.classification else float(s.test_loss.mean or 0.0)

        scored = [s for s in self.arms if (s.test_acc if self.classification else s.test_loss).mean is not None
                  and (schedule is None or s.schedule == schedule)]
        return sorted(scored, key=key)

    def ranking_by_schedule(self) -> dict[str, list[str]]:
        """The optimizers in order, best first, under each schedule."""
        return {schedule: [s.optimizer for s in self.ranked(schedule)] for schedule in self.schedules}

    def ranking_changed(self) -> bool:
        """Whether the optimizers scored under every schedule are ranked differently by some schedule."""
        rankings = self.ranking_by_schedule()
        common = set.intersection(*(set(r) for r in rankings.values())) if rankings else set()
        orders = {tuple(name for name in ranking if name in common) for ranking in rankings.values()}
        return len(orders) > 1

    def by_arm(self, optimizer: str, schedule: str | None = None) -> ArmSummary | None:
        schedule = schedule or self.schedules[0]
        return next((s for s in self.arms if s.arm == (optimizer, schedule)), None)


def time_to_target(history: Sequence[Mapping[str, Any]], metric: str, target: float) -> tuple[float, float] | None:
    """(epoch, wall seconds) of the first evaluation meeting ``target``, or None."""
    for entry in history:
        value = entry.get(metric)
        if value is None or not math.isfinite(float(value)):
            continue
        if (value >= target) if metric == "val_acc" else (value <= target):
            return float(entry.get("epoch") or 0.0), float(entry.get("wall_s") or 0.0)
    return None


def summarize(config: RaceConfig, records: Sequence[RunRecord]) -> RaceSummary:
    """Per-arm summary of a race (the lr selection is :func:`descentlab.racing.protocol.select`'s)."""
    classification = is_classification(records)
    metric = "val_acc" if classification else "val_loss"
    selected = select(config, records)
    finals: dict[Arm, list[RunRecord]] = {}
    for record in records:
        if record.phase == FINAL:
            finals.setdefault(record.arm, []).append(record)
    best_metric = "best_val_acc" if classification else "best_val_loss"
    means = [Stat.of(getattr(r, best_metric) for r in group if r.ok).mean for group in finals.values()]
    means = [m for m in means if m is not None]
    if not means:
        target = None
    elif classification:
        target = TARGET_FRACTION * max(means)
    else:
        target = min(means) / TARGET_FRACTION
    summaries = []
    for arm in config.arms():
        tuning = sorted((r for r in records if r.phase == TUNE and r.arm == arm), key=lambda r: r.lr)
        runs = finals.get(arm, [])
        ok = [r for r in runs if r.ok]
        times = [time_to_target(r.history, metric, target) for r in ok] if target is not None else []
        reached = [t for t in times if t is not None]
        steps = [r.steps for r in runs if r.steps is not None]
        summaries.append(ArmSummary(
            optimizer=arm[0], schedule=arm[1], selected_lr=selected[arm], grid_size=len(tuning),
            diverged=sum(r.status == "diverged" for r in tuning), failed=sum(r.status == "error" for r in tuning),
            test_acc=Stat.of(r.test_acc for r in ok), test_loss=Stat.of(r.test_loss for r in ok),
            end_test_acc=Stat.of(r.end_test_acc for r in ok), end_test_loss=Stat.of(r.end_test_loss for r in ok),
            best_val_acc=Stat.of(r.best_val_acc for r in ok), best_val_loss=Stat.of(r.best_val_loss for r in ok),
            best_epoch=Stat.of(r.best_epoch for r in ok), best_is_last=sum(bool(r.best_is_last) for r in ok),
            target_epoch=Stat.of(t[0] for t in reached), target_seconds=Stat.of(t[1] for t in reached),
            reached_target=len(reached), seeds=len(runs), steps=int(max(steps)) if steps else None,
            wall_s=Stat.of(r.wall_s for r in runs),
            sensitivity=[{"lr": r.lr, "status": r.status, "best_val_loss": r.best_val_loss,
                          "best_val_acc": r.best_val_acc, "best_epoch": r.best_epoch,
                          "best_is_last": r.best_is_last} for r in tuning],
        ))
    return RaceSummary(summaries, metric, target, tuple(config.schedules))
