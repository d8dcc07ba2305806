"""How an arm's settings are ranked on validation: the one place the race chooses.

A setting's *score* on a tuning seed is its run's best validation point (:mod:`descentlab.train.best`):
the accuracy for classification, minus the loss for regression (higher is better either way). A
diverged or failed run has no score, and a setting with an unscored tuning seed cannot win.

Ranking, best first, by:

1. the mean score over the tuning seeds the setting was trained on;
2. its neighbourhood: the mean first-seed score of the two lrs next to it on its line of the grid (same
   batch size and other hyper-parameters; a neighbour that diverged, or none beyond the grid's edge,
   counts as 0 accuracy: an edge is less proven than an interior point). A setting
   whose lr neighbours also do well is the robust choice when several tie, as on a small validation set
   where many lrs reach 100 %. Regression has no neighbourhood term (its losses rarely tie);
3. the distance of its log-lr from the middle of the settings tied with it on 1-2 — the middle of a
   plateau, not its edge;
4. the smaller lr.

The validation loss never breaks a tie between equal accuracies: on a saturated validation set
(every example right) the lowest loss is the most over-confident setting — on a 91-example task it
picked lr 0.316, whose test loss was 26x the best optimizer's.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from ..train.best import score
from .record import TUNE, RunRecord, Setting

Line = tuple[int | None, tuple]
"""A line of the grid: the settings sharing a batch size and other hyper-parameters (only the lr varies)."""


@dataclass(frozen=True)
class Scored:
    """A setting with its per-seed scores and the ranking keys derived from them."""

    setting: Setting
    scores: Mapping[int, float | None]
    """Tuning seed -> score (None: the run diverged or failed)."""
    mean: float | None
    neighbourhood: float
    plateau_distance: float = 0.0

    @property
    def eligible(self) -> bool:
        return self.mean is not None

    def key(self) -> tuple[float, ...]:
        return (-(self.mean if self.mean is not None else -math.inf), -self.neighbourhood, self.plateau_distance,
                self.setting.lr)


def is_classification(records: Iterable[RunRecord]) -> bool:
    """A race is on a classification task when its runs report an accuracy."""
    return any(r.best_val_acc is not None or r.val_acc is not None for r in records)


def score_of(record: RunRecord, classification: bool) -> float | None:
    """The record's best-point score (higher is better), None for a run that cannot be selected."""
    key = score(record.best_val_loss, record.best_val_acc, classification) if record.status == "ok" else None
    return None if key is None else -key[0]


def tuning_scores(records: Iterable[RunRecord], arm: tuple[str, str],
                  classification: bool) -> dict[Setting, dict[int, float | None]]:
    """Setting -> {tuning seed: score} of one arm's tuning records."""
    out: dict[Setting, dict[int, float | None]] = {}
    for record in records:
        if record.phase == TUNE and record.arm == arm:
            out.setdefault(record.setting, {})[record.seed] = score_of(record, classification)
    return out


def line_of(setting: Setting) -> Line:
    return setting.batch_size, setting.hypers


def rank(scores: Mapping[Setting, Mapping[int, float | None]], seeds: Sequence[int],
         candidates: Iterable[Setting], classification: bool) -> list[Scored]:
    """``candidates`` ranked (best first) on their scores over ``seeds`` (see the module docstring);
    a candidate missing a seed or unscored on one is ineligible and ranked last."""
    first = seeds[0]
    lines: dict[Line, list[Setting]] = {}
    for setting in scores:
        if first in scores[setting]:
            lines.setdefault(line_of(setting), []).append(setting)
    for members in lines.values():
        members.sort(key=lambda s: s.lr)

    def neighbourhood(setting: Setting) -> float:
        if not classification:
            return 0.0
        line = lines.get(line_of(setting), [])
        if setting not in line:
            return 0.0
        at = line.index(setting)
        values = [(scores[line[i]].get(first) or 0.0) if 0 <= i < len(line) else 0.0 for i in (at - 1, at + 1)]
        return sum(values) / 2

    scored = []
    for setting in candidates:
        values = [scores.get(setting, {}).get(seed) for seed in seeds]
        mean = None if any(v is None for v in values) else sum(values) / len(values)  # type: ignore[arg-type]
        scored.append(Scored(setting, dict(scores.get(setting, {})), mean, neighbourhood(setting)))
    groups: dict[tuple[float, float], list[Scored]] = {}
    for item in scored:
        if item.eligible:
            groups.setdefault(_tie(item), []).append(item)
    ranked = []
    for item in scored:
        if item.eligible:
            tied = groups[_tie(item)]
            centre = sum(math.log10(t.setting.lr) for t in tied) / len(tied)
            item = Scored(item.setting, item.scores, item.mean, item.neighbourhood,
                          abs(math.log10(item.setting.lr) - centre))
        ranked.append(item)
    return sorted(ranked, key=Scored.key)


def _tie(item: Scored) -> tuple[float, float]:
    return round(item.mean or 0.0, 12), round(item.neighbourhood, 12)


def tied_with(ranked: Sequence[Scored], best: Scored) -> list[Scored]:
    """The eligible settings whose mean score equals ``best``'s (a plateau when more than one)."""
    return [s for s in ranked if s.eligible and round(s.mean or 0.0, 12) == round(best.mean or 0.0, 12)]
