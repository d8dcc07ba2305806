"""The report's recommendation: plain sentences drawn from the summary's numbers, nothing else.

- The winner is the arm (optimizer, schedule) with the best mean test accuracy at the best
  validation point (regression: lowest test loss) at its selected lr. If the runner-up's mean ± std
  range over seeds overlaps the winner's (the gap is at most the sum of the two standard
  deviations), the two are called a tie and the faster one to the target is named. With one
  finished seed there is no spread: the gap is given, with that caveat.
- lr tolerance: how many lrs of the grid reached, at their best point, within ``TOLERANCE`` (5 points
  of validation accuracy; regression: 2x the validation loss) of the optimizer's best lr.
- A confirmation run whose best point is its last evaluation was still improving: the budget may be
  too short, and the report says so.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..racing.record import FINAL, RunRecord
from ..racing.summary import ArmSummary, RaceSummary, Stat
from .failures import failed_optimizers, failure_sentence
from .table import arm_label, format_lr, format_seconds, format_time_to_target, ranking_sentence

TOLERANCE_ACC = 0.05
TOLERANCE_LOSS_RATIO = 2.0


def _score(s: ArmSummary, classification: bool) -> str:
    return s.test_acc.format(percent=True) if classification else s.test_loss.format()


def _main(s: ArmSummary, classification: bool) -> Stat:
    return s.test_acc if classification else s.test_loss


def tolerant_lrs(s: ArmSummary, classification: bool) -> int:
    """How many grid lrs ended near this optimizer's best (see the module docstring)."""
    if classification:
        values = [p["best_val_acc"] for p in s.sensitivity if p.get("status") == "ok"
                  and p.get("best_val_acc") is not None]
        return sum(v >= max(values) - TOLERANCE_ACC for v in values) if values else 0
    values = [p["best_val_loss"] for p in s.sensitivity if p.get("status") == "ok"
              and p.get("best_val_loss") is not None]
    return sum(v <= min(values) * TOLERANCE_LOSS_RATIO for v in values) if values else 0


def recommendation(summary: RaceSummary, epochs: int, gd_sgd: Sequence[str] = (),
                   rows: Sequence[RunRecord] = ()) -> list[str]:
    """Sentences for the report (and nothing that the numbers in the summary do not support)."""
    classification = summary.classification
    what = "test accuracy at the best validation point" if classification else "test loss at the best validation point"

    def name(s: ArmSummary) -> str:
        return arm_label(s, summary)

    ranked = summary.ranked()
    failures = [f"E{failure_sentence(name, error)[1:]}." for name, error in failed_optimizers(rows).items()]
    out: list[str] = []
    if not ranked:
        return [*failures, "No optimizer has a finished run at its selected learning rate: every run diverged or "
                "failed, so there is nothing to recommend. Try smaller learning rates (--lrs) or check the task."]
    best = ranked[0]
    schedule = "" if len(summary.schedules) == 1 else f" and the {best.schedule} schedule"
    out.append(f"Use {best.optimizer}{schedule} with lr {format_lr(best.selected_lr)}: it had the best {what}, "
               f"{_score(best, classification)} over {best.seeds} seed(s), within a budget of {epochs} epochs "
               f"(best point at epoch {best.best_epoch.format()} on average).")
    if len(ranked) > 1:
        second = ranked[1]
        a, b = _main(best, classification), _main(second, classification)
        gap = abs((a.mean or 0.0) - (b.mean or 0.0))
        noise = (a.std or 0.0) + (b.std or 0.0)  # their mean ± std ranges overlap
        points = f"{gap * 100:.1f} points" if classification else f"{gap:.3g}"
        if min(a.n, b.n) < 2:  # one finished seed: no spread measured, so no claim about noise
            out.append(f"The runner-up, {name(second)} ({_score(second, classification)}), is {points} behind "
                       "on one seed only: with no spread over seeds this gap may be noise (race with --seeds 3 or "
                       "more to tell).")
        elif gap <= noise:
            reached = [s for s in (best, second) if s.reached_target and s.target_seconds.mean is not None]
            if reached:
                faster = min(reached, key=lambda s: float(s.target_seconds.mean or 0.0))
                speed = f"{name(faster)} got to the target sooner ({format_time_to_target(faster)})."
            else:
                speed = "neither reached the target."
            out.append(f"{name(second)} (lr {format_lr(second.selected_lr)}, {_score(second, classification)}) "
                       "overlaps it within one standard deviation over seeds, so the two are tied on this budget; "
                       + speed)
        else:
            out.append(f"The runner-up, {name(second)} ({_score(second, classification)}), is {points} "
                       "behind — their mean ± std ranges over seeds do not overlap.")
    reached = [s for s in ranked if s.reached_target]
    if reached and summary.target is not None:
        fastest = min(reached, key=lambda s: s.target_seconds.mean)
        target = f"{summary.target:.1%} validation accuracy" if classification else \
            f"validation loss {summary.target:.3g}"
        out.append(f"Fastest to {target}: {name(fastest)} ({format_time_to_target(fastest)}).")
        never = [name(s) for s in ranked if not s.reached_target]
        if never:
            out.append(f"Never reached it within {epochs} epochs: {', '.join(never)}.")
    tolerance = {s.arm: tolerant_lrs(s, classification) for s in ranked}
    if len(tolerance) > 1:
        most = max(ranked, key=lambda s: tolerance[s.arm])
        least = min(ranked, key=lambda s: tolerance[s.arm])
        near = f"within {TOLERANCE_ACC * 100:.0f} points of its best validation accuracy" if classification else \
            f"within {TOLERANCE_LOSS_RATIO:g}x of its best validation loss"
        if tolerance[most.arm] != tolerance[least.arm]:
            out.append(f"Most forgiving about the learning rate: {name(most)} ({tolerance[most.arm]} of "
                       f"{most.grid_size} lrs {near}); least: {name(least)} ({tolerance[least.arm]} of "
                       f"{least.grid_size}).")
    diverged = [s for s in summary.arms if s.diverged]
    if diverged:
        parts = [f"{name(s)} at {s.diverged} of {s.grid_size} lrs" for s in diverged]
        out.append("Diverged (kept in the results, not selectable): " + "; ".join(parts) + ".")
    out.extend(failures)
    for s in summary.arms:
        if s.all_diverged:
            out.append(f"{name(s)}: every learning rate of the grid diverged or failed, so it has no result; "
                       "it is listed, not dropped." if s.grid_size else f"{name(s)}: no run has finished yet.")
        elif s not in ranked:
            out.append(f"{name(s)}: its selected lr {format_lr(s.selected_lr)} diverged or failed on every seed, "
                       "so it has no test result; it is listed, not dropped.")
    for s in ranked:
        grid = sorted(p["lr"] for p in s.sensitivity)
        if grid and len(grid) > 1 and s.selected_lr in (grid[0], grid[-1]):
            side = "smallest" if s.selected_lr == grid[0] else "largest"
            out.append(f"{name(s)}'s selected lr {format_lr(s.selected_lr)} is the {side} of its grid: its best lr "
                       "may lie outside it (widen --lrs to check).")
    short = [s for s in ranked if s.best_is_last]
    if short:
        out.append("Best point = last evaluation (still improving when the budget ran out, so the budget may be too "
                   "short; try a larger --epochs): " + "; ".join(f"{name(s)} in {s.best_is_last} of "
                                                                 f"{s.best_epoch.n} seed(s)" for s in short) + ".")
    if len(summary.schedules) > 1:
        out.append(ranking_sentence(summary)[0].upper() + ranking_sentence(summary)[1:] + ".")
    out.extend(_gd_vs_sgd(summary, gd_sgd, classification, rows, epochs))
    out.append(f"These numbers hold for this task, model, schedule and budget ({epochs} epochs, each run judged at "
               "its best validation point); another budget can reorder close optimizers.")
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

    out = [f"GD vs SGD (the article's comparison): in the same {epochs} epochs GD took {gd.steps} steps "
           f"and SGD {sgd.steps}; best validation {name} {shown(gd_value)} for GD vs {shown(sgd_value)} for SGD, so "
           f"{'SGD' if better(sgd_value, gd_value) else 'GD'} made more progress per epoch."]
    gd_seconds = gd.wall_s.mean
    sgd_then = _value_at(rows, sgd.arm, metric, gd_seconds) if gd_seconds else None
    if gd_seconds and sgd_then is not None:
        out.append(f"Per second: GD's whole run took {format_seconds(gd_seconds)}; by then SGD was at "
                   f"{shown(sgd_then)} validation {name} vs GD's best {shown(gd_value)}, so "
                   f"{'SGD' if better(sgd_then, gd_value) else 'GD'} made more progress per second.")
    return out
