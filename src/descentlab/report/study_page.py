"""The study's report: one self-contained HTML page (the race report's style, tables and embedded
figures), a pure function of the study's races (:class:`descentlab.study.StudyResult`)."""

from __future__ import annotations

import math
import shlex
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..racing.summary import TARGET_FRACTION
from ..study import claim, profiles
from ..study.analysis import Entry, WorkloadView, view
from . import study_plots
from .html import CSS, _e, _img, _table
from .table import format_lr, format_seconds

if TYPE_CHECKING:
    from ..study.run import StudyResult

TAUS = [1.0 + 3.0 * i / 300 for i in range(301)]


def _time(value: float, seconds: bool) -> str:
    if not math.isfinite(value):
        return "not reached"
    return format_seconds(value) if seconds else f"{value:.0f}"


def _ratio(value: float) -> str:
    return "not reached" if not math.isfinite(value) else f"{value:.2g}x"


def _metric(e: Entry, classification: bool) -> str:
    return e.test.format(percent=classification) + (f" ({e.test.n}/{e.seeds} seeds ok)" if e.test.n < e.seeds else "")


def study_command(result: StudyResult) -> str:
    """The ``descentlab study`` command that redoes (or, with the same --out, resumes) this study: options
    left at their defaults are left out."""
    from ..racing.protocol import DEFAULT_OPTIMIZERS
    from ..study.config import DEFAULT_SEEDS, QUICK_SEEDS
    from ..study.suite import default_suite

    config = result.config
    seeds = config.seeds
    words = ["descentlab", "study"]
    if config.quick:
        words.append("--quick")
    if tuple(config.workloads) != default_suite(config.quick):
        words += ["--workloads", ",".join(f"{w.task}{'/' + w.model if w.model else ''}@{w.epochs}"
                                          for w in config.workloads)]
    if tuple(config.optimizers) != DEFAULT_OPTIMIZERS:
        words += ["--optimizers", ",".join(config.optimizers)]
    if tuple(seeds) != tuple(range(QUICK_SEEDS if config.quick else DEFAULT_SEEDS)):
        words += ["--seeds", str(len(seeds)) if tuple(seeds) == tuple(range(len(seeds)))
                  else ",".join(map(str, seeds)) + ","]
    if config.device != "cpu":
        words += ["--device", config.device]
    return shlex.join([*words, "--out", str(result.out)])


def _claim_section(views: Sequence[WorkloadView]) -> list[str]:
    parts = ["<h2 id='claim'>The article's claim, checked</h2>",
             "<p>\"ADAM is very good to start with, with beta1 = 0.9, beta2 = 0.999, learning_rate in [1e-3, 1e-4, "
             "5e-4]\". On every workload, Adam with its default betas (0.9, 0.999) at each of those lrs, "
             "<em>untuned</em> (a race with that single lr, same budget and seeds), against every optimizer "
             "<em>tuned</em> by the race. Gap: points of test accuracy at the best validation point behind the best "
             "tuned optimizer (regression: test loss over the best tuned one's); time: time to target over the fastest "
             f"tuned optimizer's. Within = at most {claim.ACC_POINTS * 100:g} point (regression: "
             f"{claim.LOSS_RATIO:g}x the loss).</p><ul class='rec' id='claim-verdict'>"]
    parts.extend(f"<li>{_e(s)}</li>" for s in claim.summary_sentences(views))
    parts.append("</ul>")
    header = ["workload", "best tuned (lr): test"]
    lrs = sorted({float(e.lr or 0) for v in views for e in v.untuned()}, reverse=True)
    header += [f"adam {lr:g} untuned: test, gap, time (s / steps)" for lr in lrs]
    rows = []
    for v in views:
        best = v.best_tuned()
        row = [v.name, "-" if best is None else
               f"{best.label} ({format_lr(best.lr)}): {_metric(best, v.classification)}"]
        for lr in lrs:
            e = next((u for u in v.untuned() if float(u.lr or 0) == lr), None)
            if e is None:
                row.append("-")
                continue
            g = claim.gap(v, e)
            row.append(f"{_metric(e, v.classification)}, {g.metric_text()}, {_ratio(g.seconds_ratio)} / "
                       f"{_ratio(g.steps_ratio)}")
        rows.append(row)
    parts.append(_table(header, rows))
    return parts


def _profiles_section(views: Sequence[WorkloadView]) -> list[str]:
    parts = ["<h2 id='profiles'>Performance profiles</h2>",
             "<p>For each optimizer, ρ(τ) is the share of workloads on which its time to the target was within τ "
             "times the fastest one's (AlgoPerf's performance profile). Target per workload: "
             f"{TARGET_FRACTION:.0%} of the best tuned optimizer's mean best validation accuracy (regression: its "
             f"mean best validation loss / {TARGET_FRACTION:g}); time: median over seeds, a seed that never got "
             "there counting as infinite. Score: AlgoPerf's normalised area under ρ for τ from 1 to "
             f"{profiles.TAU_MAX:g}, (1/{profiles.TAU_MAX - 1:g})∫ρ(τ)dτ — 1 is fastest everywhere, 0 never within "
             f"{profiles.TAU_MAX:g}x; one number that counts both how often an optimizer wins and how far behind it "
             "is otherwise, and the score benchmark readers know. Seconds are what a user waits (runs shared the "
             "cores, so they are noisy); steps favour full-batch GD, whose one step is a whole pass over the "
             "data.</p>"]
    scores: dict[str, dict[str, float]] = {}
    for unit, key in (("seconds", "seconds_to_target"), ("steps", "steps_to_target")):
        times = {}
        for v in views:
            for e in v.entries:
                times.setdefault(e.label, {})[v.name] = getattr(e, key)
        ratio = profiles.ratios(times)
        curves = {name: profiles.profile(r, TAUS) for name, r in ratio.items()}
        scores[unit] = {name: profiles.score(r) for name, r in ratio.items()}
        parts.append(_img(study_plots.profiles(curves, TAUS, scores[unit], f"performance profile: time to target in "
                                               f"{unit}"), f"performance profiles ({unit})", f"profile-{unit}"))
    names = list(scores["seconds"])
    order = sorted(names, key=lambda n: -scores["seconds"][n])
    wins = {n: sum(1 for v in views for e in v.entries if e.label == n and math.isfinite(e.seconds_to_target))
            for n in names}
    parts.append(_table(["optimizer", "score (seconds)", "score (steps)", "reached the target on"],
                        [[n, f"{scores['seconds'][n]:.2f}", f"{scores['steps'][n]:.2f}", f"{wins[n]} of {len(views)}"]
                         for n in order], 0 if order else None))
    return parts


def _workload_section(result: StudyResult, views: Sequence[WorkloadView]) -> list[str]:
    parts = ["<h2 id='workloads'>Per workload</h2>"]
    for data, v in zip(result.workloads, views, strict=True):
        what = "accuracy" if v.classification else "loss"
        target = "-" if v.target is None else (f"{v.target:.1%} validation accuracy" if v.classification
                                               else f"validation loss {v.target:.3g}")
        parts.append(f"<h3>{_e(v.name)}</h3><p class='muted'>Task {_e(data.race.config.task)}, model "
                     f"{_e(data.race.config.model)}, {v.epochs} epochs per run; target {_e(target)}. The race: "
                     f"<a href='{_e(data.race.folder)}/report.html'>{_e(data.race.folder)}/report.html</a>.</p>")
        rows = [[e.label, format_lr(e.lr), _metric(e, v.classification), e.best_val.format(percent=v.classification),
                 _time(e.steps_to_target, False), _time(e.seconds_to_target, True), f"{e.reached}/{e.seeds}"]
                for e in v.entries]
        best = v.best_tuned()
        parts.append(_table(["optimizer", "lr", f"test {what} (best val point)", f"best val {what}",
                             "steps to target", "seconds to target", "seeds that reached it"], rows,
                            v.entries.index(best) if best is not None else None))
    return parts


def _sensitivity_section(result: StudyResult, views: Sequence[WorkloadView]) -> list[str]:
    parts = ["<h2 id='sensitivity'>Learning-rate sensitivity across workloads</h2>",
             "<p>Selected lr of every optimizer on every workload (the race's best-validation protocol), and how far "
             "it moves: the spread, in decades, between the smallest and the largest selected lr.</p>"]
    optimizers = list(result.config.optimizers)
    header = ["optimizer", *[v.name for v in views], "spread (decades)"]
    rows = []
    panels: dict[str, dict[str, list[tuple[float, float | None]]]] = {}
    selected: dict[str, dict[str, float | None]] = {}
    for name in optimizers:
        lrs = []
        row = [name]
        for data, v in zip(result.workloads, views, strict=True):
            arm = data.race.summary.by_arm(name)
            lr = arm.selected_lr if arm is not None else None
            row.append(format_lr(lr))
            if lr is not None:
                lrs.append(lr)
            if arm is not None:
                key = "best_val_acc" if v.classification else "best_val_loss"
                values = [p.get(key) for a in data.race.summary.arms for p in a.sensitivity
                          if p.get("status") == "ok" and p.get(key) is not None]
                best = (max(values) if v.classification else min(values)) if values else None
                panels.setdefault(name, {})[v.name] = study_plots.sensitivity_points(arm.sensitivity, best,
                                                                                     v.classification)
                selected.setdefault(name, {})[v.name] = lr
        row.append(f"{math.log10(max(lrs) / min(lrs)):.1f}" if lrs else "-")
        rows.append(row)
    parts.append(_table(header, rows))
    if panels:
        parts.append(_img(study_plots.sensitivity(panels, selected), "lr sensitivity across workloads", "sensitivity"))
    return parts


def build_study_html(result: StudyResult) -> str:
    views = [view(data) for data in result.workloads]
    config = result.config
    runs = sum(len(d.race.records) + sum(len(c.records) for c in d.claim.values()) for d in result.workloads)
    trained = sum(r.wall_s or 0.0 for d in result.workloads for r in d.race.records) + sum(
        r.wall_s or 0.0 for d in result.workloads for c in d.claim.values() for r in c.records)
    budgets = ", ".join(f"{w.name} {w.epochs} epochs" for w in config.workloads)
    parts = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
             "<meta name='viewport' content='width=device-width, initial-scale=1'>"
             f"<title>descentlab study: {len(views)} workloads</title><style>{CSS}</style></head><body>",
             "<h1>Is Adam with lr 1e-3 a good default? A study over "
             f"{len(views)} workload{'s' if len(views) != 1 else ''}</h1>",
             f"<p>One race per workload ({_e(budgets)}): every optimizer of {_e(', '.join(config.optimizers))} tuned "
             "on its grid of learning rates on the first seed and judged at each run's best validation point, the "
             f"selected lr confirmed on {len(config.seeds)} seed(s) and scored on the test split at that point "
             "(the race protocol, docs/race-protocol.md). Beside each race, Adam at each of the article's lrs, "
             "untuned. The test split never took part in any choice.</p>",
             f"<p class='muted'>{runs} runs, {trained:.0f} s of training in all (summed over runs, which ran in "
             f"parallel){'; --quick: a demo budget, not a result' if config.quick else ''}.</p>"]
    parts += _claim_section(views)
    parts += _profiles_section(views)
    parts += _workload_section(result, views)
    parts += _sensitivity_section(result, views)
    parts.append("<h2>Reproduction</h2><p>To redo this study (the same --out resumes it: finished races are "
                 "read back, an interrupted one resumes):</p>")
    parts.append(f"<pre>{_e(study_command(result))}</pre></body></html>")
    return "\n".join(parts)
