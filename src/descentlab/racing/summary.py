"""What a race found, per arm (optimizer, schedule), computed from its config and run records alone
(so a report can be rebuilt from ``results.jsonl`` at any time).

The headline of an arm is its confirmation runs' test score at each run's best validation point: test
accuracy (classification) or test loss (regression), one value per seed. Per arm:

- mean ± sample std, and the 95 % t interval of the mean over seeds (:mod:`.stats`);
- against the best arm — chosen on validation like every choice of the race: the highest mean
  best-point validation accuracy of its confirmation runs (regression: the lowest validation loss) —
  the paired test difference ``best_s − arm_s`` over the seeds both finished (accuracy; for loss
  ``arm_s − best_s``, so a positive difference always means "worse on test than the best") with its 95 %
  interval, and rliable's probability that the best arm beats it. An arm whose interval contains 0 —
  or, in accuracy, whose mean gap is at most one test example (1/n_test: with identical gaps on every
  seed the t interval is a point, and a gap the test split cannot resolve finer is not a finding) —
  *cannot be told from the best*: a tie is an answer, and the report names every such arm (one whose
  interval lies below 0 did better on test than the validation winner, and the report says so);
- its rank: first by how many of its confirmation seeds did *not* finish (diverged or failed: an
  optimizer whose selected setting diverged on some seeds ranks after every one that finished them all,
  however well its finished seeds did), then by its mean best-point validation metric; an exact tie
  there (a saturated validation split) is broken by fewer epochs to the target (median over seeds),
  then the earlier mean best epoch, then the arm's name — never by the order the optimizers were given;
- a warning when its seeds disagree: a spread (max − min) above :data:`SPREAD_POINTS` points of
  accuracy, or a worst loss above :data:`SPREAD_LOSS_RATIO` x the best, naming the worst seed.

Time-to-target: the target is ``TARGET_FRACTION`` (90 %) of the best mean best-point validation
accuracy that any arm reached (regression: the best mean best-point validation loss L / 0.9, written
L + |L|·(1/0.9 − 1) so a loss below zero, a log-likelihood's, gets a target above its best too). A run's
time-to-target is the first evaluation meeting it, in epochs and steps (exact: the same on every
machine, to the resolution of one evaluation) and in seconds (timing noise). A seed that never got there
counts as never — it is not left out: the median over seeds is then "never" when half or more of them
did not reach it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .protocol import Arm, RaceConfig
from .record import FINAL, TUNE, RunRecord, Setting
from .selection import is_classification
from .stages import Selection, select
from .stats import Interval, mean_interval, paired_difference, probability_of_improvement

TARGET_FRACTION = 0.9
SPREAD_POINTS = 0.05
"""Seeds disagree when the selected setting's test accuracies span more than this (5 points)."""
SPREAD_LOSS_RATIO = 1.5
"""... or its worst seed's test loss is above this multiple of its best seed's."""


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
class Comparison:
    """An arm against the best arm, paired by seed (see the module docstring)."""

    shortfall: Interval
    """best − arm for accuracy, arm − best for loss, on test: > 0 means worse than the best."""
    p_best_better: float | None
    tied: bool
    """The interval contains 0, or the mean gap is at most one test example (classification): this arm
    cannot be told from the best."""


@dataclass
class ArmSummary:
    optimizer: str
    schedule: str
    selection: Selection | None
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
    per_seed: dict[int, float | None]
    """The headline per confirmation seed (None: the run diverged or failed)."""
    interval: Interval
    target_epoch: Stat
    target_seconds: Stat
    target_steps: dict[int, int | None]
    """Per confirmation seed, the step at which validation first met the target (None: never)."""
    target_epochs: dict[int, float | None]
    target_wall: dict[int, float | None]
    reached_target: int
    seeds: int
    steps: int | None
    wall_s: Stat
    sensitivity: list[dict[str, Any]] = field(default_factory=list)
    """Every tuning run: its setting, seed, status, best point and early stop."""
    comparison: Comparison | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def arm(self) -> Arm:
        return self.optimizer, self.schedule

    @property
    def selected(self) -> Setting | None:
        return self.selection.chosen if self.selection is not None else None

    @property
    def selected_lr(self) -> float | None:
        return self.selected.lr if self.selected is not None else None

    @property
    def unfinished(self) -> int:
        """Confirmation seeds whose run diverged or failed (the headline is None)."""
        return sum(value is None for value in self.per_seed.values())

    @property
    def all_diverged(self) -> bool:
        """No setting to select: every tuning run diverged or failed (or tuning has not finished)."""
        return self.selected is None

    def no_result_reason(self) -> str:
        """Why there is no selected setting, in a few words (for an arm with ``all_diverged``)."""
        if not self.grid_size:
            return "no runs yet"
        if self.selection is None:
            return "tuning not finished"
        if self.failed and self.diverged:
            return "all settings diverged or failed"
        return "all settings failed" if self.failed else "all settings diverged"

    def median_target_steps(self) -> float:
        """The median over seeds of the steps to the target, a seed that never reached it counting as never
        (inf); inf without seeds."""
        return _median_or_never(self.target_steps.values())

    def median_target_epochs(self) -> float:
        """As :meth:`median_target_steps`, in epochs (data passes: comparable across batch sizes)."""
        return _median_or_never(self.target_epochs.values())


def _median_or_never(values: Iterable[float | None]) -> float:
    finite_or_inf = sorted(math.inf if v is None else float(v) for v in values)
    return statistics.median(finite_or_inf) if finite_or_inf else math.inf


@dataclass
class EarlyStopping:
    """What early stopping saved over the tuning runs: run-epochs not trained."""

    stopped: int
    budget_epochs: float
    saved_epochs: float

    @property
    def share(self) -> float:
        return self.saved_epochs / self.budget_epochs if self.budget_epochs else 0.0


@dataclass
class RaceSummary:
    arms: list[ArmSummary]
    metric: str
    """``val_acc`` (classification) or ``val_loss`` (regression): what selection and time-to-target watch."""
    target: float | None
    schedules: tuple[str, ...]
    split_sizes: dict[str, int] = field(default_factory=dict)
    """``n_train``, ``n_val``, ``n_test`` (from the race's binding)."""
    early_stopping: EarlyStopping = field(default_factory=lambda: EarlyStopping(0, 0.0, 0.0))
    seeds_planned: int = 0
    """The race's confirmation seeds (``--seeds``): a race still running has records for fewer."""

    @property
    def classification(self) -> bool:
        return self.metric == "val_acc"

    def ranked(self, schedule: str | None = None) -> list[ArmSummary]:
        """Arms with a test score (a selected setting and a finished confirmation run), best first *on
        validation*: fewest confirmation seeds that diverged or failed, then the highest mean best-point
        validation accuracy of their confirmation runs (regression: the lowest validation loss), an exact
        tie broken as the module docstring says (:func:`rank_key`). The winner is chosen on validation, like
        every other choice of the race; the test split only measures it."""
        def key(s: ArmSummary) -> tuple[int, float, float, float, tuple[str, ...]]:
            return rank_key(s.unfinished, (s.best_val_acc if self.classification else s.best_val_loss).mean,
                            self.classification, s.median_target_epochs(), s.best_epoch.mean,
                            (s.optimizer, s.schedule))

        scored = [s for s in self.arms if s.interval.mean is not None and (schedule is None or s.schedule == schedule)]
        return sorted(scored, key=key)

    def tied_on_validation(self, arm: ArmSummary) -> list[ArmSummary]:
        """The other ranked arms with ``arm``'s unfinished seeds and exactly its mean best-point validation
        metric: validation cannot order them (the rank's later keys did)."""
        metric = "best_val_acc" if self.classification else "best_val_loss"
        value = getattr(arm, metric).mean
        return [s for s in self.ranked() if s is not arm and s.unfinished == arm.unfinished
                and getattr(s, metric).mean == value]

    def best(self) -> ArmSummary | None:
        ranked = self.ranked()
        return ranked[0] if ranked else None

    def tied_with_best(self) -> list[ArmSummary]:
        """The other arms that cannot be told from the best (paired interval of the difference contains 0)."""
        best = self.best()
        return [s for s in self.ranked() if s is not best and s.comparison is not None and s.comparison.tied]

    def better_on_test(self) -> list[ArmSummary]:
        """Arms whose test score beat the validation winner's beyond the seeds' noise (interval below 0)."""
        return [s for s in self.ranked() if s.comparison is not None and not s.comparison.tied
                and s.comparison.shortfall.high < 0]

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


def rank_key(unfinished: int, best_val: float | None, classification: bool, epochs_to_target: float,
             best_epoch: float | None, names: tuple[str, ...]) -> tuple[int, float, float, float, tuple[str, ...]]:
    """The race's order of arms, smallest first (:meth:`RaceSummary.ranked`; docs/race-protocol.md, item 8):
    first ``unfinished`` (confirmation seeds whose run diverged or failed: an arm that finished them all
    ranks before every arm that did not, however well its finished seeds did), then the mean best-point
    validation metric ``best_val`` (highest accuracy, lowest loss; none ranks last), then, for an exact
    tie there, fewer ``epochs_to_target`` (median over seeds, never = inf), the earlier mean
    ``best_epoch``, and ``names``. The study orders its tuned entries with it too, so its "tuned best" is
    the race's best arm."""
    if classification:
        value = -(best_val if best_val is not None else -math.inf)
    else:
        value = best_val if best_val is not None else math.inf
    return (unfinished, value, epochs_to_target, best_epoch if best_epoch is not None else math.inf, names)


def time_to_target(history: Sequence[Mapping[str, Any]], metric: str, target: float) -> tuple[float, float, int] | None:
    """(epoch, wall seconds, step) of the first evaluation meeting ``target``, or None."""
    for entry in history:
        value = entry.get(metric)
        if value is None or not math.isfinite(float(value)):
            continue
        if (value >= target) if metric == "val_acc" else (value <= target):
            return float(entry.get("epoch") or 0.0), float(entry.get("wall_s") or 0.0), int(entry.get("step") or 0)
    return None


def headline(record: RunRecord, classification: bool) -> float | None:
    """The confirmation run's test score at its best point (None for a run that did not finish)."""
    if not record.ok:
        return None
    return record.test_acc if classification else record.test_loss


def _target(finals: Mapping[Arm, list[RunRecord]], classification: bool) -> float | None:
    best_metric = "best_val_acc" if classification else "best_val_loss"
    means = [Stat.of(getattr(r, best_metric) for r in group if r.ok).mean for group in finals.values()]
    means = [m for m in means if m is not None]
    if not means:
        return None
    if classification:
        return TARGET_FRACTION * max(means)
    best = min(means)
    return best + abs(best) * (1 / TARGET_FRACTION - 1)  # best / 0.9 for a positive loss; above a negative one


def _spread_warning(per_seed: Mapping[int, float | None], classification: bool) -> str | None:
    values = {seed: v for seed, v in per_seed.items() if v is not None}
    if len(values) < 2:
        return None
    worst = min(values, key=values.__getitem__) if classification else max(values, key=values.__getitem__)
    low, high = min(values.values()), max(values.values())
    shown = " / ".join(f"{v * 100:.1f}%" if classification else f"{v:.3g}" for v in values.values())
    if classification and high - low > SPREAD_POINTS:
        return (f"its seeds disagree ({shown}: a spread of {(high - low) * 100:.1f} points; seed {worst} is the "
                "worst): the selected setting is not stable across initialisations")
    if not classification and low > 0 and high / low > SPREAD_LOSS_RATIO:
        return (f"its seeds disagree ({shown}: the worst, seed {worst}, is {high / low:.2g}x the best): the selected "
                "setting is not stable across initialisations")
    return None


def _early_stopping(config: RaceConfig, records: Sequence[RunRecord]) -> EarlyStopping:
    tuning = [r for r in records if r.phase == TUNE and r.epochs is not None]
    stopped = [r for r in tuning if r.stopped_early_at is not None]
    return EarlyStopping(len(stopped), float(config.epochs * len(tuning)),
                         float(sum(config.epochs - (r.epochs or 0.0) for r in stopped)))


def summarize(config: RaceConfig, records: Sequence[RunRecord]) -> RaceSummary:
    """Per-arm summary of a race (the selection is :func:`descentlab.racing.stages.select`'s)."""
    classification = is_classification(records)
    metric = "val_acc" if classification else "val_loss"
    selections = select(config, records)
    finals: dict[Arm, list[RunRecord]] = {}
    for record in records:
        if record.phase == FINAL:
            finals.setdefault(record.arm, []).append(record)
    target = _target(finals, classification)
    summaries = [_arm(config, arm, selections[arm], records, finals.get(arm, []), classification, metric, target)
                 for arm in config.arms()]
    summary = RaceSummary(summaries, metric, target, tuple(config.schedules),
                          {k: int(v) for k, v in (config.binding or {}).items() if k.startswith("n_")},
                          _early_stopping(config, records), len(config.seeds))
    _compare(summary, classification)
    return summary


def _arm(config: RaceConfig, arm: Arm, selection: Selection | None, records: Sequence[RunRecord],
         runs: list[RunRecord], classification: bool, metric: str, target: float | None) -> ArmSummary:
    tuning = sorted((r for r in records if r.phase == TUNE and r.arm == arm), key=_tuning_order)
    ok = [r for r in runs if r.ok]
    per_seed = {r.seed: headline(r, classification) for r in runs}
    times = {r.seed: time_to_target(r.history, metric, target) if r.ok and target is not None else None for r in runs}
    reached = [t for t in times.values() if t is not None]
    steps = [r.steps for r in runs if r.steps is not None]
    warning = _spread_warning(per_seed, classification)
    return ArmSummary(
        optimizer=arm[0], schedule=arm[1], selection=selection, grid_size=len({r.setting for r in tuning}),
        diverged=sum(r.status == "diverged" for r in tuning), failed=sum(r.status == "error" for r in tuning),
        test_acc=Stat.of(r.test_acc for r in ok), test_loss=Stat.of(r.test_loss for r in ok),
        end_test_acc=Stat.of(r.end_test_acc for r in ok), end_test_loss=Stat.of(r.end_test_loss for r in ok),
        best_val_acc=Stat.of(r.best_val_acc for r in ok), best_val_loss=Stat.of(r.best_val_loss for r in ok),
        best_epoch=Stat.of(r.best_epoch for r in ok), best_is_last=sum(bool(r.best_is_last) for r in ok),
        per_seed=per_seed, interval=mean_interval(list(per_seed.values()), bounds=_bounds(per_seed, classification)),
        target_epoch=Stat.of(t[0] for t in reached), target_seconds=Stat.of(t[1] for t in reached),
        target_steps={seed: (t[2] if t is not None else None) for seed, t in times.items()},
        target_epochs={seed: (t[0] if t is not None else None) for seed, t in times.items()},
        target_wall={seed: (t[1] if t is not None else None) for seed, t in times.items()},
        reached_target=len(reached), seeds=len(runs), steps=int(max(steps)) if steps else None,
        wall_s=Stat.of(r.wall_s for r in runs),
        sensitivity=[{"lr": r.lr, "batch_size": r.batch_size, "hypers": dict(r.hypers), "seed": r.seed,
                      "status": r.status, "best_val_loss": r.best_val_loss, "best_val_acc": r.best_val_acc,
                      "best_epoch": r.best_epoch, "best_is_last": r.best_is_last,
                      "stopped_early_at": r.stopped_early_at} for r in tuning],
        warnings=[warning] if warning else [],
    )


def _bounds(per_seed: Mapping[int, float | None], classification: bool) -> tuple[float, float]:
    """The range a headline's interval is clipped to: [0, 1] for accuracy; [0, inf) for a loss whose seeds
    are all at or above 0, else unbounded (a log-likelihood loss goes below 0)."""
    if classification:
        return 0.0, 1.0
    finished = [v for v in per_seed.values() if v is not None and math.isfinite(v)]
    return (0.0 if all(v >= 0 for v in finished) else -math.inf), math.inf


def _tuning_order(record: RunRecord) -> tuple[float, float, str, int]:
    """Tuning runs by lr, batch size (full batch last), hyper-parameters and seed (no None < int comparisons)."""
    size = math.inf if record.batch_size is None else float(record.batch_size)
    return float(record.lr), size, repr(sorted(record.hypers.items())), int(record.seed)


def _compare(summary: RaceSummary, classification: bool) -> None:
    """Each ranked arm against the best, paired by seed (see the module docstring)."""
    best = summary.best()
    if best is None:
        return
    sign = 1.0 if classification else -1.0
    n_test = summary.split_sizes.get("n_test", 0)
    resolution = 1.0 / n_test if classification and n_test else 0.0
    for arm in summary.ranked():
        if arm is best:
            continue
        shortfall = paired_difference({s: _signed(v, sign) for s, v in best.per_seed.items()},
                                      {s: _signed(v, sign) for s, v in arm.per_seed.items()},
                                      bounds=(-1.0, 1.0) if classification else (-math.inf, math.inf))
        p = probability_of_improvement({s: _signed(v, sign) for s, v in best.per_seed.items()},
                                       {s: _signed(v, sign) for s, v in arm.per_seed.items()})
        within_one_example = shortfall.mean is not None and abs(shortfall.mean) <= resolution * (1 + 1e-9)
        arm.comparison = Comparison(shortfall, p, shortfall.contains(0.0) or within_one_example)


def _signed(value: float | None, sign: float) -> float | None:
    return None if value is None else sign * value
