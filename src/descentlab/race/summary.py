"""What a race found, per optimizer, computed from the results rows alone (so a report can be rebuilt
from ``results.jsonl`` at any time).

Time-to-target: the target is ``TARGET_FRACTION`` (90 %) of the best final mean validation accuracy
that any optimizer reached at its selected lr (for a task without accuracy — regression — it is the
best final mean validation loss times ``1 / TARGET_FRACTION``). A run's time-to-target is the first
evaluation at which it meets the target: its epoch and its wall-clock seconds. The summary gives the
mean over the seeds that reached it and how many did.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .protocol import FINAL, TUNE, select_lr

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
class OptimizerSummary:
    optimizer: str
    selected_lr: float | None
    grid_size: int
    diverged: int
    failed: int
    test_acc: Stat
    test_loss: Stat
    val_acc: Stat
    val_loss: Stat
    target_epoch: Stat
    target_seconds: Stat
    reached_target: int
    seeds: int
    steps: int | None
    wall_s: Stat
    sensitivity: list[dict[str, Any]] = field(default_factory=list)

    @property
    def all_diverged(self) -> bool:
        """No lr to select: every tuning run diverged or failed (or none has finished yet)."""
        return self.selected_lr is None

    def no_result_reason(self) -> str:
        """Why there is no selected lr, in a few words (for an optimizer with ``all_diverged``)."""
        if not self.grid_size:
            return "no runs yet"
        if self.failed and self.diverged:
            return "all lrs diverged or failed"
        return "all lrs failed" if self.failed else "all lrs diverged"


@dataclass
class RaceSummary:
    optimizers: list[OptimizerSummary]
    metric: str
    """``val_acc`` (classification) or ``val_loss`` (regression): what time-to-target watches."""
    target: float | None

    def ranked(self) -> list[OptimizerSummary]:
        """Optimizers with a test score (a selected lr and at least one finished final run), best first:
        highest mean test accuracy, or lowest mean test loss for a task without accuracy."""
        sign = -1.0 if self.metric == "val_acc" else 1.0
        scores = {s.optimizer: s.test_acc.mean if sign < 0 else s.test_loss.mean for s in self.optimizers}
        scored = [s for s in self.optimizers if scores[s.optimizer] is not None]
        return sorted(scored, key=lambda s: sign * float(scores[s.optimizer] or 0.0))

    def by_name(self, name: str) -> OptimizerSummary | None:
        return next((s for s in self.optimizers if s.optimizer == name), None)


def _final(value: Any) -> float | None:
    return float(value) if value is not None and math.isfinite(float(value)) else None


def time_to_target(history: Sequence[Mapping[str, Any]], metric: str, target: float) -> tuple[float, float] | None:
    """(epoch, wall seconds) of the first evaluation meeting ``target``, or None."""
    for entry in history:
        value = entry.get(metric)
        if value is None or not math.isfinite(float(value)):
            continue
        if (value >= target) if metric == "val_acc" else (value <= target):
            return float(entry.get("epoch") or 0.0), float(entry.get("wall_s") or 0.0)
    return None


def summarize(config: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> RaceSummary:
    """Per-optimizer summary of a race; ``config`` is the race's ``race.json`` (``RaceConfig.to_json()``)."""
    finals = [r for r in rows if r.get("phase") == FINAL]
    tuning = [r for r in rows if r.get("phase") == TUNE]
    classification = any(r.get("val_acc") is not None for r in rows)
    metric = "val_acc" if classification else "val_loss"
    by_opt: dict[str, list[Mapping[str, Any]]] = {}
    for row in finals:
        by_opt.setdefault(row["optimizer"], []).append(row)
    means = [Stat.of(r.get(metric) for r in group).mean for group in by_opt.values()]
    means = [m for m in means if m is not None]
    if not means:
        target = None
    elif classification:
        target = TARGET_FRACTION * max(means)
    else:
        target = min(means) / TARGET_FRACTION
    summaries = []
    for opt in config["optimizers"]:
        opt_tuning = sorted((r for r in tuning if r["optimizer"] == opt), key=lambda r: r["lr"])
        opt_finals = by_opt.get(opt, [])
        times = [time_to_target(r.get("history") or [], metric, target) for r in opt_finals] \
            if target is not None else []
        reached = [t for t in times if t is not None]
        steps = [r.get("steps") for r in opt_finals if r.get("steps") is not None]
        summaries.append(OptimizerSummary(
            optimizer=opt,
            selected_lr=select_lr(opt_tuning),
            grid_size=len(opt_tuning),
            diverged=sum(r.get("status") == "diverged" for r in opt_tuning),
            failed=sum(r.get("status") == "error" for r in opt_tuning),
            test_acc=Stat.of(r.get("test_acc") for r in opt_finals),
            test_loss=Stat.of(r.get("test_loss") for r in opt_finals),
            val_acc=Stat.of(r.get("val_acc") for r in opt_finals),
            val_loss=Stat.of(r.get("val_loss") for r in opt_finals),
            target_epoch=Stat.of(t[0] for t in reached),
            target_seconds=Stat.of(t[1] for t in reached),
            reached_target=len(reached),
            seeds=len(opt_finals),
            steps=int(max(steps)) if steps else None,
            wall_s=Stat.of(r.get("wall_s") for r in opt_finals),
            sensitivity=[{"lr": float(r["lr"]), "status": r.get("status"), "val_loss": _final(r.get("val_loss")),
                          "val_acc": _final(r.get("val_acc"))} for r in opt_tuning],
        ))
    return RaceSummary(summaries, metric, target)


def format_lr(lr: float | None) -> str:
    return "-" if lr is None else f"{lr:.3g}"


def format_seconds(seconds: float) -> str:
    """Wall time as people read it: two significant digits below 10 s, whole seconds above (no 1.5e+02)."""
    return f"{seconds:.2g} s" if abs(seconds) < 10 else f"{seconds:.0f} s"


def format_time_to_target(s: OptimizerSummary) -> str:
    """``epoch E, T s`` (means over the seeds that reached the target), or ``not reached``."""
    if not s.reached_target or s.target_epoch.mean is None or s.target_seconds.mean is None:
        return "not reached"
    return f"epoch {s.target_epoch.mean:.3g}, {format_seconds(s.target_seconds.mean)}"


def table_rows(summary: RaceSummary) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the summary table (shared by the terminal and the HTML report)."""
    classification = summary.metric == "val_acc"
    header = ["optimizer", "selected lr", "test acc" if classification else "test loss", "test loss",
              "time to target", "steps", "diverged"]
    if not classification:
        header.pop(3)
    rows = []
    for s in summary.optimizers:
        if s.all_diverged:
            reason = s.no_result_reason()
            main = [s.optimizer, reason, "-", "-"] if classification else [s.optimizer, reason, "-"]
        else:
            main = [s.optimizer, format_lr(s.selected_lr)]
            score = s.test_acc if classification else s.test_loss
            main.append(score.format(percent=classification)
                        + (f" ({score.n}/{s.seeds} seeds ok)" if score.n < s.seeds else ""))
            if classification:
                main.append(s.test_loss.format())
        ttt = format_time_to_target(s)
        if s.reached_target and s.reached_target < s.seeds:
            ttt += f" ({s.reached_target}/{s.seeds} seeds)"
        rows.append([*main, ttt, "-" if s.steps is None else str(s.steps), f"{s.diverged}/{s.grid_size}"])
    return header, rows


def format_table(summary: RaceSummary) -> str:
    """The summary table as aligned plain text."""
    header, rows = table_rows(summary)
    widths = [max(len(line[i]) for line in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
             for line in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if summary.target is not None:
        lines.append(target_sentence(summary))
    return "\n".join(lines)


def target_sentence(summary: RaceSummary) -> str:
    """How time-to-target was measured, in one sentence."""
    if summary.target is None:
        return "time to target: no optimizer finished, so there is no target"
    if summary.metric == "val_acc":
        return (f"time to target: first epoch / seconds at which validation accuracy reaches {summary.target:.1%} "
                f"({TARGET_FRACTION:.0%} of the best optimizer's final mean); mean over the seeds that reached it")
    return (f"time to target: first epoch / seconds at which validation loss falls to {summary.target:.3g} "
            f"(the best optimizer's final mean / {TARGET_FRACTION:g}); mean over the seeds that reached it")
