"""The summary table (terminal and HTML) and the small formatters the report's sentences share."""

from __future__ import annotations

import math

from ..racing.summary import TARGET_FRACTION, ArmSummary, RaceSummary


def format_lr(lr: float | None) -> str:
    return "-" if lr is None else f"{lr:.3g}"


def format_seconds(seconds: float) -> str:
    """Wall time as people read it: two significant digits below 10 s, whole seconds above (no 1.5e+02)."""
    return f"{seconds:.2g} s" if abs(seconds) < 10 else f"{seconds:.0f} s"


def format_time_to_target(s: ArmSummary) -> str:
    """``epoch E (N steps, T s)``: medians over seeds (a seed that never got there counts as never; seconds:
    mean over the seeds that got there), or ``not reached``."""
    epochs, steps = s.median_target_epochs(), s.median_target_steps()
    if not math.isfinite(epochs) or s.target_seconds.mean is None:
        return "not reached"
    return f"epoch {epochs:.3g} ({steps:.0f} steps, {format_seconds(s.target_seconds.mean)})"


def format_setting(s: ArmSummary) -> str:
    return s.selected.describe() if s.selected is not None else "-"


def format_headline(s: ArmSummary, classification: bool) -> str:
    """Mean [95 % interval] over seeds; ``(k/n seeds ok)`` when some confirmation runs did not finish."""
    text = s.interval.format(100, 1, "%") if classification else s.interval.format(1, 3)
    return text + (f" ({s.interval.n}/{s.seeds} seeds ok)" if s.interval.n < s.seeds else "")


def format_vs_best(s: ArmSummary, classification: bool) -> str:
    """The paired shortfall against the best arm, ``tie`` when its interval contains 0."""
    if s.comparison is None:
        return "best" if s.interval.mean is not None else "-"
    gap = s.comparison.shortfall.format(100, 1) if classification else s.comparison.shortfall.format(1, 3)
    return f"{gap} (tie)" if s.comparison.tied else gap


def format_best_epoch(s: ArmSummary) -> str:
    """Mean epoch of the confirmation runs' best validation points, flagged when some were the last one."""
    if s.best_epoch.mean is None:
        return "-"
    text = f"{s.best_epoch.mean:.3g}"
    if s.best_is_last:
        text += f" (last in {s.best_is_last}/{s.best_epoch.n})"
    return text


def arm_label(s: ArmSummary, summary: RaceSummary) -> str:
    return s.optimizer if len(summary.schedules) == 1 else f"{s.optimizer} / {s.schedule}"


def table_rows(summary: RaceSummary) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the summary table (shared by the terminal and the HTML report)."""
    classification = summary.classification
    what = "acc" if classification else "loss"
    header = ["optimizer" if len(summary.schedules) == 1 else "optimizer / schedule", "selected setting",
              f"test {what} (best val point) [95% CI]", "behind the best (paired) [95% CI]", "best epoch",
              f"test {what} (end)"]
    if classification:
        header.append("test loss (best val point)")
    header += ["time to target", "steps", "diverged"]
    rows = []
    for s in summary.arms:
        label = arm_label(s, summary)
        if s.all_diverged:
            main = [label, s.no_result_reason(), "-", "-", "-", "-"] + (["-"] if classification else [])
        else:
            end = s.end_test_acc if classification else s.end_test_loss
            main = [label, format_setting(s), format_headline(s, classification), format_vs_best(s, classification),
                    format_best_epoch(s), end.format(percent=classification)]
            if classification:
                main.append(s.test_loss.format())
        ttt = format_time_to_target(s)
        if s.reached_target and s.reached_target < s.seeds:
            ttt += f" ({s.reached_target}/{s.seeds} seeds)"
        rows.append([*main, ttt, "-" if s.steps is None else str(s.steps), f"{s.diverged}/{len(s.sensitivity)}"])
    return header, rows


def format_table(summary: RaceSummary) -> str:
    """The summary table as aligned plain text, with the sentences that explain it."""
    header, rows = table_rows(summary)
    widths = [max(len(line[i]) for line in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
             for line in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(target_sentence(summary))
    short = [arm_label(s, summary) for s in summary.arms if s.best_is_last]
    if short:
        lines.append(f"best point = last evaluation for {', '.join(short)}: the budget may be too short (--epochs)")
    if len(summary.schedules) > 1:
        lines.append(ranking_sentence(summary))
    return "\n".join(lines)


def target_sentence(summary: RaceSummary) -> str:
    """How time-to-target was measured, in one sentence."""
    if summary.target is None:
        return "time to target: no optimizer finished, so there is no target"
    if summary.classification:
        return (f"time to target: the first evaluation at which validation accuracy reaches {summary.target:.1%} "
                f"({TARGET_FRACTION:.0%} of the best optimizer's mean best validation accuracy); epochs and steps: "
                "median over seeds (a seed that never got there counts as never); seconds: mean over the seeds that "
                "reached it")
    return (f"time to target: the first evaluation at which validation loss falls to {summary.target:.3g} "
            f"(the best optimizer's mean best validation loss / {TARGET_FRACTION:g}); epochs and steps: median "
            "over seeds (a seed that never got there counts as never); seconds: mean over the seeds that reached it")


def ranking_sentence(summary: RaceSummary) -> str:
    """Whether the schedule changed the optimizers' order, with the order under each schedule."""
    rankings = summary.ranking_by_schedule()
    orders = "; ".join(f"{schedule}: {' > '.join(names) or 'no finished optimizer'}"
                       for schedule, names in rankings.items())
    verdict = "the schedule changed the ranking" if summary.ranking_changed() else \
        "the schedule did not change the ranking"
    return f"{verdict} (by mean test {'accuracy' if summary.classification else 'loss'} at the best point: {orders})"
