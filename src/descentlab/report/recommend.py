"""The report's recommendation: plain sentences drawn from the summary's numbers, nothing else.

- The winner is the optimizer with the best mean test accuracy (regression: lowest test loss) at
  its selected lr. If the runner-up's mean ± std range over seeds overlaps the winner's (the gap is
  at most the sum of the two standard deviations), the two are called a tie and the faster one to the
  target is named. With one finished seed there is no spread: the gap is given, with that caveat.
- lr tolerance: how many lrs of the grid ended within ``TOLERANCE`` (5 points of validation accuracy;
  regression: 2x the validation loss) of the optimizer's best lr.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..race.protocol import FINAL
from ..race.summary import OptimizerSummary, RaceSummary, Stat, format_lr, format_seconds, format_time_to_target
from .failures import failed_optimizers, failure_sentence

TOLERANCE_ACC = 0.05
TOLERANCE_LOSS_RATIO = 2.0


def _score(s: OptimizerSummary, classification: bool) -> str:
    return s.test_acc.format(percent=True) if classification else s.test_loss.format()


def _main(s: OptimizerSummary, classification: bool) -> Stat:
    return s.test_acc if classification else s.test_loss


def tolerant_lrs(s: OptimizerSummary, classification: bool) -> int:
    """How many grid lrs ended near this optimizer's best (see the module docstring)."""
    if classification:
        values = [p["val_acc"] for p in s.sensitivity if p.get("status") == "ok" and p.get("val_acc") is not None]
        return sum(v >= max(values) - TOLERANCE_ACC for v in values) if values else 0
    values = [p["val_loss"] for p in s.sensitivity if p.get("status") == "ok" and p.get("val_loss") is not None]
    return sum(v <= min(values) * TOLERANCE_LOSS_RATIO for v in values) if values else 0


def recommendation(summary: RaceSummary, epochs: int, gd_sgd: Sequence[str] = (),
                   rows: Sequence[Mapping[str, Any]] = ()) -> list[str]:
    """Sentences for the report (and nothing that the numbers in the summary do not support)."""
    classification = summary.metric == "val_acc"
    what = "test accuracy" if classification else "test loss"
    ranked = summary.ranked()
    failures = [f"E{failure_sentence(name, error)[1:]}." for name, error in failed_optimizers(rows).items()]
    out: list[str] = []
    if not ranked:
        return [*failures, "No optimizer has a finished run at its selected learning rate: every run diverged or "
                "failed, so there is nothing to recommend. Try smaller learning rates (--lrs) or check the task."]
    best = ranked[0]
    out.append(f"Use {best.optimizer} with lr {format_lr(best.selected_lr)}: it had the best {what}, "
               f"{_score(best, classification)} over {best.seeds} seed(s), after {epochs} epochs.")
    if len(ranked) > 1:
        second = ranked[1]
        a, b = _main(best, classification), _main(second, classification)
        gap = abs((a.mean or 0.0) - (b.mean or 0.0))
        noise = (a.std or 0.0) + (b.std or 0.0)  # their mean ± std ranges overlap
        points = f"{gap * 100:.1f} points" if classification else f"{gap:.3g}"
        if min(a.n, b.n) < 2:  # one finished seed: no spread measured, so no claim about noise
            out.append(f"The runner-up, {second.optimizer} ({_score(second, classification)}), is {points} behind "
                       "on one seed only: with no spread over seeds this gap may be noise (race with --seeds 3 or "
                       "more to tell).")
        elif gap <= noise:
            reached = [s for s in (best, second) if s.reached_target and s.target_seconds.mean is not None]
            if reached:
                faster = min(reached, key=lambda s: float(s.target_seconds.mean or 0.0))
                speed = f"{faster.optimizer} got to the target sooner ({format_time_to_target(faster)})."
            else:
                speed = "neither reached the target."
            out.append(f"{second.optimizer} (lr {format_lr(second.selected_lr)}, {_score(second, classification)}) "
                       "overlaps it within one standard deviation over seeds, so the two are tied on this budget; "
                       + speed)
        else:
            out.append(f"The runner-up, {second.optimizer} ({_score(second, classification)}), is {points} "
                       "behind — their mean ± std ranges over seeds do not overlap.")
    reached = [s for s in ranked if s.reached_target]
    if reached and summary.target is not None:
        fastest = min(reached, key=lambda s: s.target_seconds.mean)
        target = f"{summary.target:.1%} validation accuracy" if classification else \
            f"validation loss {summary.target:.3g}"
        out.append(f"Fastest to {target}: {fastest.optimizer} ({format_time_to_target(fastest)}).")
        never = [s.optimizer for s in ranked if not s.reached_target]
        if never:
            out.append(f"Never reached it within {epochs} epochs: {', '.join(never)}.")
    tolerance = {s.optimizer: tolerant_lrs(s, classification) for s in ranked}
    if len(tolerance) > 1:
        most = max(ranked, key=lambda s: tolerance[s.optimizer])
        least = min(ranked, key=lambda s: tolerance[s.optimizer])
        near = f"within {TOLERANCE_ACC * 100:.0f} points of its best validation accuracy" if classification else \
            f"within {TOLERANCE_LOSS_RATIO:g}x of its best validation loss"
        if tolerance[most.optimizer] != tolerance[least.optimizer]:
            out.append(f"Most forgiving about the learning rate: {most.optimizer} ({tolerance[most.optimizer]} of "
                       f"{most.grid_size} lrs {near}); least: {least.optimizer} ({tolerance[least.optimizer]} of "
                       f"{least.grid_size}).")
    diverged = [s for s in summary.optimizers if s.diverged]
    if diverged:
        parts = [f"{s.optimizer} at {s.diverged} of {s.grid_size} lrs" for s in diverged]
        out.append("Diverged (kept in the results, not selectable): " + "; ".join(parts) + ".")
    out.extend(failures)
    for s in summary.optimizers:
        if s.all_diverged:
            out.append(f"{s.optimizer}: every learning rate of the grid diverged or failed, so it has no result; "
                       "it is listed, not dropped." if s.grid_size else f"{s.optimizer}: no run has finished yet.")
        elif s not in ranked:
            out.append(f"{s.optimizer}: its selected lr {format_lr(s.selected_lr)} diverged or failed on every seed, "
                       "so it has no test result; it is listed, not dropped.")
    for s in ranked:
        grid = sorted(p["lr"] for p in s.sensitivity)
        if grid and len(grid) > 1 and s.selected_lr in (grid[0], grid[-1]):
            side = "smallest" if s.selected_lr == grid[0] else "largest"
            out.append(f"{s.optimizer}'s selected lr {format_lr(s.selected_lr)} is the {side} of its grid: its best lr "
                       "may lie outside it (widen --lrs to check).")
    out.extend(_gd_vs_sgd(summary, gd_sgd, classification, rows, epochs))
    out.append(f"These numbers hold for this task, model and budget ({epochs} epochs); another budget can "
               "reorder close optimizers.")
    return out


def _value_at(rows: Sequence[Mapping[str, Any]], optimizer: str, metric: str, seconds: float) -> float | None:
    """Mean over the optimizer's final runs of ``metric`` at its last evaluation within ``seconds``."""
    values = []
    for row in rows:
        if row.get("phase") != FINAL or row.get("optimizer") != optimizer:
            continue
        seen = [e.get(metric) for e in row.get("history") or [] if (e.get("wall_s") or 0.0) <= seconds]
        seen = [v for v in seen if v is not None]
        if seen:
            values.append(seen[-1])
    return sum(values) / len(values) if values else None


def _gd_vs_sgd(summary: RaceSummary, pair: Sequence[str], classification: bool,
               rows: Sequence[Mapping[str, Any]], epochs: int) -> list[str]:
    if len(pair) != 2:
        return []
    gd, sgd = summary.by_name(pair[0]), summary.by_name(pair[1])
    if gd is None or sgd is None or gd.all_diverged or sgd.all_diverged:
        return []
    metric = "val_acc" if classification else "val_loss"
    gd_value, sgd_value = getattr(gd, metric).mean, getattr(sgd, metric).mean
    if gd_value is None or sgd_value is None:
        return []
    shown = (lambda v: f"{v:.1%}") if classification else (lambda v: f"{v:.3g}")
    name = "accuracy" if classification else "loss"

    def better(a: float, b: float) -> bool:
        return a > b if classification else a < b

    out = [f"GD vs SGD (the article's comparison): in the same {epochs} epochs GD took {gd.steps} steps "
           f"and SGD {sgd.steps}; final validation {name} {shown(gd_value)} for GD vs {shown(sgd_value)} for SGD, so "
           f"{'SGD' if better(sgd_value, gd_value) else 'GD'} made more progress per epoch."]
    gd_seconds = gd.wall_s.mean
    sgd_then = _value_at(rows, sgd.optimizer, metric, gd_seconds) if gd_seconds else None
    if gd_seconds and sgd_then is not None:
        out.append(f"Per second: GD's whole run took {format_seconds(gd_seconds)}; by then SGD was at "
                   f"{shown(sgd_then)} validation {name} vs GD's final {shown(gd_value)}, so "
                   f"{'SGD' if better(sgd_then, gd_value) else 'GD'} made more progress per second.")
    return out
