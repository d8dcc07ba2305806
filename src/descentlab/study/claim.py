"""The article's claim, checked: "Adam is very good to start with, with beta1 = 0.9, beta2 = 0.999,
learning_rate in [1e-3, 1e-4, 5e-4]".

On every workload, Adam at each of those lrs, untuned (its race had that one lr), is set against every
optimizer tuned by the race (its selected lr):

- metric gap: the best tuned optimizer's mean test accuracy at the best validation point minus the
  untuned Adam's, in points (regression: the untuned Adam's mean test loss over the best tuned one's,
  as a ratio);
- time to target: the untuned Adam's time over the fastest tuned optimizer's (steps and seconds);
  infinite when it did not reach the target on most seeds.

"Within" is a gap of at most ``ACC_POINTS`` (1 point of accuracy) or a loss ratio of at most
``LOSS_RATIO`` (1.1); the verdict counts the workloads where that held. "Best of the three" picks, per
workload, the article lr with the best mean best-validation metric (validation only, as the race
selects): what trying the three and keeping the best gives.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from .analysis import Entry, WorkloadView

ACC_POINTS = 0.01
LOSS_RATIO = 1.10


@dataclass
class Gap:
    workload: str
    classification: bool
    best: Entry | None
    untuned: Entry
    metric_gap: float | None
    """Points behind the best tuned (classification), or loss ratio to it (regression); None: no number."""
    seconds_ratio: float
    steps_ratio: float

    @property
    def within(self) -> bool:
        if self.metric_gap is None:
            return False
        return self.metric_gap <= ACC_POINTS if self.classification else self.metric_gap <= LOSS_RATIO

    def metric_text(self) -> str:
        if self.metric_gap is None:
            return "no result"
        if self.classification:
            side = "behind" if self.metric_gap > 0 else "ahead"
            return f"{abs(self.metric_gap) * 100:.1f} points {side}"
        return f"{self.metric_gap:.3g}x the best loss"


def _fastest(entries: Sequence[Entry], key: str) -> float:
    return min((getattr(e, key) for e in entries), default=math.inf)


def _ratio(value: float, best: float) -> float:
    if not math.isfinite(value) or not math.isfinite(best):
        return math.inf
    return value / best if best > 0 else (1.0 if value <= 0 else math.inf)


def gap(view: WorkloadView, untuned: Entry) -> Gap:
    best = view.best_tuned()
    metric_gap = None
    if best is not None and best.test.mean is not None and untuned.test.mean is not None:
        if view.classification:
            metric_gap = best.test.mean - untuned.test.mean
        elif best.test.mean > 0:
            metric_gap = untuned.test.mean / best.test.mean
    tuned = view.tuned()
    return Gap(view.name, view.classification, best, untuned, metric_gap,
               _ratio(untuned.seconds_to_target, _fastest(tuned, "seconds_to_target")),
               _ratio(untuned.steps_to_target, _fastest(tuned, "steps_to_target")))


def gaps_by_lr(views: Sequence[WorkloadView]) -> dict[float, list[Gap]]:
    """For each article lr, its gap on every workload."""
    out: dict[float, list[Gap]] = {}
    for view in views:
        for untuned in view.untuned():
            out.setdefault(float(untuned.lr or 0.0), []).append(gap(view, untuned))
    return out


def best_of_three(views: Sequence[WorkloadView]) -> list[Gap]:
    """Per workload, the gap of the article lr with the best mean best-validation metric."""
    out = []
    for view in views:
        candidates = [e for e in view.untuned() if e.best_val.mean is not None]
        if not candidates:
            continue
        pick = max(candidates, key=lambda e: e.best_val.mean) if view.classification else \
            min(candidates, key=lambda e: e.best_val.mean)
        out.append(gap(view, pick))
    return out


def _median(values: list[float]) -> float:
    values = sorted(values)
    if not values:
        return math.inf
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def verdict(what: str, gaps: Sequence[Gap]) -> str:
    """One plain sentence from the numbers: within-tolerance count, the largest gap, time to target."""
    m = len(gaps)
    if not m:
        return f"{what}: no finished workload."
    within = sum(g.within for g in gaps)
    tolerance = f"{ACC_POINTS * 100:g} point of test accuracy (regression: {LOSS_RATIO:g}x the test loss)"
    sentence = f"{what} was within {tolerance} of the best tuned optimizer on {within} of {m} workloads"
    worst = [g for g in gaps if not g.within]
    if worst:
        sentence += "; behind on " + ", ".join(f"{g.workload} ({g.metric_text()} vs {g.best.label if g.best else '-'})"
                                                for g in worst)
    reached = [g for g in gaps if math.isfinite(g.seconds_ratio)]
    sentence += f". It reached the target on {len(reached)} of {m}"
    if reached:
        sentence += (f", in a median {_median([g.seconds_ratio for g in reached]):.2g}x the fastest tuned optimizer's "
                     f"seconds ({_median([g.steps_ratio for g in reached]):.2g}x its steps)")
    improving = [g.workload for g in worst if g.untuned.still_improving * 2 > g.untuned.seeds]
    if improving:
        sentence += (f". Where it was behind, it was still improving when the budget ended on {', '.join(improving)} "
                     "(best point = last evaluation on most seeds): a longer budget may shrink that gap")
    return sentence + "."


def summary_sentences(views: Sequence[WorkloadView]) -> list[str]:
    """The verdict for each article lr, for the best of the three, and the answer in one line."""
    by_lr = gaps_by_lr(views)
    out = [verdict(f"Untuned Adam at lr {lr:g}", gaps) for lr, gaps in by_lr.items()]
    three = best_of_three(views)
    out.append(verdict("The best of the three article lrs (picked on validation)", three))
    if by_lr:
        counts = {lr: sum(g.within for g in gaps) for lr, gaps in by_lr.items()}
        lr, count = max(counts.items(), key=lambda kv: kv[1])
        m = len(views)
        within_three = sum(g.within for g in three)
        if within_three == m:
            answer = (f"On these {m} workloads and budgets the claim holds: trying Adam at the three article lrs "
                      "and keeping the best came within tolerance of tuning every optimizer everywhere")
        elif within_three >= m / 2:
            answer = (f"On these {m} workloads and budgets the claim mostly holds: the best of Adam's three article "
                      f"lrs came within tolerance of the best tuned optimizer on {within_three} of {m}")
        else:
            answer = (f"On these {m} workloads and budgets the claim does not hold: the best of Adam's three "
                      f"article lrs came within tolerance of the best tuned optimizer on only {within_three} of {m}")
        out.append(f"{answer}; a single lr did best at {lr:g} ({count} of {m}).")
    return out
