"""The report's recommendation: plain sentences drawn from the summary's numbers, nothing else.

- The winner is the first arm (optimizer, schedule) of the summary's rank: chosen on validation, after
  every arm whose confirmation seeds all finished (:meth:`RaceSummary.ranked`); its test score at the best
  validation point is stated with its 95 % interval over seeds. An exact tie on validation is said, with
  what broke it. Every other arm is compared
  with it paired by seed (:mod:`descentlab.racing.summary`): those whose interval of the difference
  contains 0 cannot be told from the winner and are named as equally good answers on this budget; a
  clear gap is stated with its interval.
- The split sizes are stated: one validation example is 1/n_val of accuracy, the resolution of every
  comparison made on validation.
- How each winner was chosen, where it matters: a tie on validation (a saturated validation set
  especially), a grid extended beyond its edges, seeds that disagree.
- "Faster" is said of steps (exact) by their median over seeds, a seed that never reached the target
  counting as never; of seconds only beyond timing noise: lower on every paired seed and by at least
  :data:`SECONDS_MARGIN` (10 %).
- lr tolerance: how many of an arm's settings reached, at their best point, within ``TOLERANCE`` (5
  points of validation accuracy; regression: 2x the validation loss) of its best one.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from ..racing.record import FINAL, RunRecord, hypers_of
from ..racing.stats import Interval
from ..racing.summary import ArmSummary, RaceSummary
from .failures import failed_optimizers, failure_sentence
from .table import arm_label, format_lr, format_seconds, ranking_sentence

TOLERANCE_ACC = 0.05
TOLERANCE_LOSS_RATIO = 2.0
SECONDS_MARGIN = 0.10
MIN_TIMED_SECONDS = 1.0
"""GD's run must take this long before "progress per second" is compared: shorter, it is timer noise."""


def _score(s: ArmSummary, classification: bool) -> str:
    if classification:
        return s.interval.format(100, 1, "%") + f" over {s.interval.n} seed(s)"
    return s.interval.format(1, 3) + f" over {s.interval.n} seed(s)"


def _gap(s: ArmSummary, classification: bool, negate: bool = False) -> str:
    """The paired shortfall against the best arm, as ``1.2 points [0.3, 2.1]`` (``negate``: its lead)."""
    assert s.comparison is not None
    interval = s.comparison.shortfall
    if negate:
        interval = Interval(None if interval.mean is None else -interval.mean, -interval.high, -interval.low,
                            interval.n, interval.confidence)
    if classification:
        return interval.format(100, 1) + " points"
    return interval.format(1, 3)


def tolerant_lrs(s: ArmSummary, classification: bool) -> tuple[int, int]:
    """(near, of): how many of the arm's first-seed tuning runs ended near its best, and how many there were
    (see the module docstring)."""
    first = min((p["seed"] for p in s.sensitivity), default=None)
    runs = [p for p in s.sensitivity if p["seed"] == first]
    key = "best_val_acc" if classification else "best_val_loss"
    values = [p[key] for p in runs if p.get("status") == "ok" and p.get(key) is not None]
    if not values:
        return 0, len(runs)
    if classification:
        return sum(v >= max(values) - TOLERANCE_ACC for v in values), len(runs)
    return sum(v <= min(values) * TOLERANCE_LOSS_RATIO for v in values), len(runs)


def recommendation(summary: RaceSummary, epochs: int, gd_sgd: Sequence[str] = (),
                   rows: Sequence[RunRecord] = ()) -> list[str]:
    """Sentences for the report (and nothing that the numbers in the summary do not support)."""
    classification = summary.classification
    failures = [f"E{failure_sentence(name, error)[1:]}." for name, error in failed_optimizers(rows).items()]
    best = summary.best()
    if best is None:
        return [*failures, "No optimizer has a finished run at its selected setting: every run diverged or "
                "failed, so there is nothing to recommend. Try smaller learning rates (--lrs) or check the task."]
    out = [_winner(summary, best, epochs), *_ties(summary, best), *_splits(summary)]
    out += _selection_notes(summary)
    out += _speed(summary, epochs)
    out += _forgiving(summary)
    out += _unfinished(summary, failures)
    out += _budget(summary)
    if len(summary.schedules) > 1:
        out.append(ranking_sentence(summary)[0].upper() + ranking_sentence(summary)[1:] + ".")
    out.extend(_gd_vs_sgd(summary, gd_sgd, classification, rows, epochs))
    out.append(f"These numbers hold for this task, model, schedule and budget ({epochs} epochs, each run judged at "
               "its best validation point); another budget can reorder close optimizers.")
    return out


def _winner(summary: RaceSummary, best: ArmSummary, epochs: int) -> str:
    what = "test accuracy" if summary.classification else "test loss"
    schedule = "" if len(summary.schedules) == 1 else f" and the {best.schedule} schedule"
    setting = best.selected.describe() if best.selected is not None else "-"
    validation = (best.best_val_acc.format(percent=True) if summary.classification
                  else best.best_val_loss.format())
    tied = summary.tied_on_validation(best)
    if tied:
        saturated = summary.classification and best.best_val_acc.mean == 1.0
        why = (f"it tied on validation with {', '.join(arm_label(s, summary) for s in tied)} ({validation} at the "
               "best point, mean over seeds" + ("; the validation split is saturated" if saturated else "") +
               f"), and is named first because {_tie_break(best, tied, summary)}")
    else:
        why = f"it was best on validation ({validation} at the best point, mean over seeds)"
    return (f"Use {best.optimizer}{schedule} with {setting}: {why}, and its {what} at that point is "
            f"{_score(best, summary.classification)} (mean [95 % interval]), within a budget of {epochs} epochs "
            f"(best point at epoch {best.best_epoch.format()} on average).")


def _tie_break(best: ArmSummary, tied: Sequence[ArmSummary], summary: RaceSummary) -> str:
    """Why ``best`` comes before each arm it tied with on validation: the first later key of the rank
    (:func:`descentlab.racing.summary.rank_key`) where the two differ, said per arm."""
    reasons: dict[str, list[str]] = {}
    for other in tied:
        if best.median_target_epochs() < other.median_target_epochs():
            reason = f"it reached the target in fewer epochs ({best.median_target_epochs():g}, median over seeds)"
        elif best.median_target_epochs() == other.median_target_epochs() and _earlier(best, other):
            reason = f"its best point came earlier (epoch {best.best_epoch.format()} on average)"
        else:
            reason = "of its name (nothing else told them apart; the test comparison below says whether they differ)"
        reasons.setdefault(reason, []).append(arm_label(other, summary))
    if len(reasons) == 1:
        return next(iter(reasons))
    return "; ".join(f"before {', '.join(names)} because {reason}" for reason, names in reasons.items())


def _earlier(best: ArmSummary, other: ArmSummary) -> bool:
    first, second = best.best_epoch.mean, other.best_epoch.mean
    return first is not None and (second is None or first < second)


def _ties(summary: RaceSummary, best: ArmSummary) -> list[str]:
    others = [s for s in summary.ranked() if s is not best]
    if not others:
        return []
    if best.interval.n < 2:
        planned = max(best.seeds, summary.seeds_planned)
        if planned >= 2:
            still = " so far (the race has not finished)" if best.seeds < summary.seeds_planned else ""
            return [f"Only {best.interval.n} of {_name(best, summary)}'s {planned} confirmation seeds has a finished "
                    f"run{still}, so there is no spread over seeds and no gap here can be told from noise."]
        return ["With one finished seed there is no spread over seeds, so no gap here can be told from noise "
                "(race with --seeds 3 or more to tell)."]
    out = []
    if best.interval.n == 2:
        out.append("With two seeds a 95 % interval is wide (Student's t is 12.7 for one degree of freedom): race "
                   "with --seeds 3 or more to tell close optimizers apart.")
    tied, better = summary.tied_with_best(), summary.better_on_test()
    if tied:
        parts = [f"{_name(s, summary)} ({_gap(s, summary.classification)} behind on test, P(winner better) "
                 f"{s.comparison.p_best_better:.2f})" for s in tied if s.comparison is not None
                 and s.comparison.p_best_better is not None]
        out.append(f"Cannot be told from {_name(best, summary)} on these seeds (the paired 95 % interval of the "
                   f"test difference contains 0, or the mean gap is at most one test example): {'; '.join(parts)}. "
                   "Each is as good an answer on this budget.")
    if better:
        parts = [f"{_name(s, summary)} (by {_gap(s, summary.classification, negate=True)})" for s in better]
        out.append(f"Better on test than the validation winner beyond the seeds' noise: {'; '.join(parts)} — the "
                   "validation split and the test split disagree; a larger validation split would settle it.")
    behind = [s for s in others if s not in tied and s not in better and s.comparison is not None]
    if behind:
        lead = "The others are" if tied or better else "Every other optimizer is"
        out.append(f"{lead} behind it on test beyond the seeds' noise; the nearest, {_name(behind[0], summary)}, "
                   f"by {_gap(behind[0], summary.classification)} (paired over seeds, 95 % interval).")
    return out


def _name(s: ArmSummary, summary: RaceSummary) -> str:
    return arm_label(s, summary)


def _splits(summary: RaceSummary) -> list[str]:
    sizes = summary.split_sizes
    if not sizes:
        return []
    n_val, n_test = sizes.get("n_val", 0), sizes.get("n_test", 0)
    text = f"Data: {sizes.get('n_train', 0)} training, {n_val} validation and {n_test} test examples"
    if summary.classification and n_val and n_test:
        text += (f"; one validation example is {100 / n_val:.2g} points of validation accuracy and one test "
                 f"example {100 / n_test:.2g} points of test accuracy")
    return [text + "."]


def _selection_notes(summary: RaceSummary) -> list[str]:
    out = []
    for s in summary.arms:
        selection, name = s.selection, arm_label(s, summary)
        if selection is None or selection.chosen is None:
            continue
        if selection.saturated:
            out.append(f"{name}: {selection.tied} settings reached 100 % validation accuracy on the first tuning seed: "
                       "the validation set cannot tell them apart, so the middle of that plateau was taken "
                       f"({selection.chosen.describe()}), not the most confident one.")
        elif selection.tied > 1:
            out.append(f"{name}: {selection.tied} settings tied on validation; the one whose lr neighbours did best "
                       f"(then the middle of the tie) was taken ({selection.chosen.describe()}).")
        if selection.extended:
            grid_edge = _still_at_edge(s)
            added = ", ".join(format_lr(lr) for lr in selection.extended)
            out.append(f"{name}: its lr grid was extended beyond its edge to {added}; the selected lr "
                       f"{format_lr(selection.chosen.lr)} is " + (
                           "still at the new edge (the extension is bounded): its best lr may lie further out."
                           if grid_edge else "interior, or next to a learning rate that diverged."))
        for warning in s.warnings:
            out.append(f"{name}: {warning}.")
    return out


def _still_at_edge(s: ArmSummary) -> bool:
    chosen = s.selected
    if chosen is None:
        return False
    line = sorted({p["lr"] for p in s.sensitivity if p["batch_size"] == chosen.batch_size
                   and hypers_of(p["hypers"]) == chosen.hypers})
    diverged = {p["lr"] for p in s.sensitivity if p.get("status") != "ok"}
    edge = chosen.lr in (line[0], line[-1]) if line else False
    beyond = [lr for lr in line if lr in diverged]
    return edge and not beyond


def _speed(summary: RaceSummary, epochs: int) -> list[str]:
    """Fewest epochs to the target (data passes: fair across batch sizes; exact to one evaluation, so arms
    within one epoch of the fewest are named together), then wall time only beyond noise."""
    ranked = summary.ranked()
    if summary.target is None or not ranked:
        return []
    target = (f"{summary.target:.1%} validation accuracy" if summary.classification
              else f"validation loss {summary.target:.3g}")
    medians = {s.arm: s.median_target_epochs() for s in ranked}
    reached = [s for s in ranked if math.isfinite(medians[s.arm])]
    out = []
    if reached:
        fewest = min(medians[s.arm] for s in reached)
        fastest = [s for s in reached if medians[s.arm] <= fewest + 1]
        who = " and ".join(_name(s, summary) for s in fastest)
        together = " (within one evaluation of each other)" if len(fastest) > 1 else ""
        out.append(f"Fewest epochs to {target}: {who}{together}, median {fewest:.3g} epochs over seeds (a seed that "
                   "never got there counts as never).")
        out += _seconds(summary, reached)
    never = [_name(s, summary) for s in ranked if not math.isfinite(medians[s.arm])]
    if never:
        out.append(f"Did not reach it on most seeds within {epochs} epochs: {', '.join(never)}.")
    return out


def _seconds(summary: RaceSummary, reached: Sequence[ArmSummary]) -> list[str]:
    """Name the fastest in wall time only beyond timing noise (see the module docstring)."""
    def median_seconds(s: ArmSummary) -> float:
        values = [math.inf if v is None else v for v in s.target_wall.values()]
        return statistics.median(values) if values else math.inf

    quickest = min(reached, key=median_seconds)
    rivals = [s for s in reached if s is not quickest]
    if not rivals:
        return []
    beyond = all(
        all(quickest.target_wall.get(seed) is not None and (other.target_wall.get(seed) is None or
            quickest.target_wall[seed] * (1 + SECONDS_MARGIN) <= other.target_wall[seed])  # type: ignore[operator]
            for seed in quickest.target_wall)
        for other in rivals)
    name = arm_label(quickest, summary)
    if beyond:
        return [f"In wall time {name} got there first on every seed, by at least {SECONDS_MARGIN:.0%} "
                f"({format_seconds(median_seconds(quickest))} median)."]
    return [f"In wall time no optimizer was faster beyond timing noise (the quickest median, {name}'s "
            f"{format_seconds(median_seconds(quickest))}, is not {SECONDS_MARGIN:.0%} ahead on every seed)."]


def _forgiving(summary: RaceSummary) -> list[str]:
    """The arms whose share of settings near their best is largest and smallest (shares: extensions give
    arms different numbers of settings)."""
    ranked = summary.ranked()
    tolerance = {s.arm: tolerant_lrs(s, summary.classification) for s in ranked}
    share = {arm: near / total if total else 0.0 for arm, (near, total) in tolerance.items()}
    if len(share) < 2:
        return []
    most = max(ranked, key=lambda s: share[s.arm])
    least = min(ranked, key=lambda s: share[s.arm])
    if share[most.arm] == share[least.arm]:
        return []
    near = (f"within {TOLERANCE_ACC * 100:.0f} points of its best validation accuracy" if summary.classification
            else f"within {TOLERANCE_LOSS_RATIO:g}x of its best validation loss")

    def count(s: ArmSummary) -> str:
        return f"{tolerance[s.arm][0]} of {tolerance[s.arm][1]}"
    return [f"Most forgiving about its settings: {_name(most, summary)} ({count(most)} settings {near}); least: "
            f"{_name(least, summary)} ({count(least)})."]


def _unfinished(summary: RaceSummary, failures: list[str]) -> list[str]:
    out = []
    diverged = [s for s in summary.arms if s.diverged]
    if diverged:
        parts = [f"{arm_label(s, summary)} in {s.diverged} tuning run(s)" for s in diverged]
        out.append("Diverged (kept in the results, not selectable): " + "; ".join(parts) + ".")
    out.extend(failures)
    ranked = summary.ranked()
    for s in summary.arms:
        name = arm_label(s, summary)
        if s in ranked and s.unfinished:
            out.append(f"{name}: its selected setting diverged or failed on {s.unfinished} of its {s.seeds} "
                       f"confirmation seeds; its scores are over the {s.seeds - s.unfinished} that finished, and it "
                       "ranks after every optimizer with fewer such seeds.")
        if s.all_diverged:
            out.append(f"{name}: {s.no_result_reason()}, so it has no result; it is listed, not dropped.")
        elif s not in ranked:
            out.append(f"{name}: its selected setting diverged or failed on every seed, so it has no test result; "
                       "it is listed, not dropped.")
    return out


def _budget(summary: RaceSummary) -> list[str]:
    out = []
    short = [s for s in summary.ranked() if s.best_is_last]
    if short:
        out.append("Best point = last evaluation (still improving when the budget ran out, so the budget may be too "
                   "short; try a larger --epochs): " + "; ".join(f"{arm_label(s, summary)} in {s.best_is_last} of "
                                                                 f"{s.best_epoch.n} seed(s)" for s in short) + ".")
    saved = summary.early_stopping
    if saved.stopped:
        out.append(f"Early stopping ended {saved.stopped} tuning run(s) once their best validation point was "
                   f"patience evaluations old, saving {saved.saved_epochs:.0f} of {saved.budget_epochs:.0f} "
                   f"run-epochs ({saved.share:.0%}).")
    return out


def _value_at(rows: Sequence[RunRecord], arm: tuple[str, str], metric: str, seconds: float) -> float | None:
    """Mean over the arm's confirmation runs of ``metric`` at its last evaluation within ``seconds``."""
    values = []
    for row in rows:
        if row.phase != FINAL or row.arm != arm:
            continue
        seen = [e.get(metric) for e in row.history if (e.get("wall_s") or 0.0) <= seconds]
        seen = [v for v in seen if v is not None]
        if seen:
            values.append(seen[-1])
    return sum(values) / len(values) if values else None


def _gd_vs_sgd(summary: RaceSummary, pair: Sequence[str], classification: bool,
               rows: Sequence[RunRecord], epochs: int) -> list[str]:
    if len(pair) != 2:
        return []
    gd, sgd = summary.by_arm(pair[0]), summary.by_arm(pair[1])
    if gd is None or sgd is None or gd.all_diverged or sgd.all_diverged:
        return []
    metric = "val_acc" if classification else "val_loss"
    gd_value, sgd_value = getattr(gd, "best_" + metric).mean, getattr(sgd, "best_" + metric).mean
    if gd_value is None or sgd_value is None:
        return []
    shown = (lambda v: f"{v:.1%}") if classification else (lambda v: f"{v:.3g}")
    name = "accuracy" if classification else "loss"

    def better(a: float, b: float) -> bool:
        return a > b if classification else a < b

    ahead = "SGD" if better(sgd_value, gd_value) else "GD" if better(gd_value, sgd_value) else None
    verdict = f"{ahead} made more progress per epoch" if ahead else "they made the same progress per epoch"
    out = [f"GD vs SGD (the article's comparison): in the same {epochs} epochs GD took {gd.steps} steps "
           f"and SGD {sgd.steps}; best validation {name} {shown(gd_value)} for GD vs {shown(sgd_value)} for SGD, so "
           f"{verdict}."]
    gd_seconds = gd.wall_s.mean
    sgd_then = _value_at(rows, sgd.arm, metric, gd_seconds) if gd_seconds else None
    if gd_seconds and gd_seconds >= MIN_TIMED_SECONDS and sgd_then is not None:  # shorter: timing noise
        out.append(f"Per second: GD's whole run took {format_seconds(gd_seconds)}; by then SGD was at "
                   f"{shown(sgd_then)} validation {name} vs GD's best {shown(gd_value)}, so "
                   f"{'SGD' if better(sgd_then, gd_value) else 'GD'} made more progress per second.")
    return out
