"""The study's report page: the frozen :class:`descentlab.report.study_view.StudyPage` built from the
study's races, views and claim, drawn by :func:`descentlab.report.study_page.build_study_html` and
written atomically. Performance profiles and lr sensitivity are computed here (:mod:`.profiles`)."""

from __future__ import annotations

import math
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..atomic import atomic_write_text
from ..racing.summary import TARGET_FRACTION
from ..report import study_page
from ..report.study_plots import sensitivity_points
from ..report.study_view import (
    BudgetStep,
    ClaimRow,
    ClaimView,
    EntryRow,
    ProfileSet,
    SensitivityView,
    StudyPage,
    WorkloadSection,
)
from ..report.table import format_lr
from . import profiles
from .analysis import Entry, WorkloadView, view
from .config import DEFAULT_SEEDS, QUICK_SEEDS
from .settle import SETTLE_ACC, SETTLE_LOSS
from .suite import default_suite
from .verdict import ACC_POINTS, LOSS_RATIO, Claim

if TYPE_CHECKING:
    from .data import BudgetTry, StudyResult

TAUS = tuple(1.0 + 3.0 * i / 300 for i in range(301))


def study_command(result: StudyResult) -> str:
    """The ``descentlab study`` command that redoes (or, with the same --out, resumes) this study: options
    left at their defaults are left out."""
    from ..racing.protocol import DEFAULT_OPTIMIZERS

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


def _row(e: Entry) -> EntryRow:
    return EntryRow(e.label, e.tuned, e.lr, e.budget_epochs, e.test, e.best_val, e.steps_to_target,
                    e.seconds_to_target, e.with_tuning(False), e.with_tuning(True), e.reached, e.seeds, e.improving)


def _claim_view(claim: Claim) -> ClaimView:
    from ..racing.stats import CONFIDENCE

    rows = tuple(ClaimRow(e.workload, e.lr, e.budget_epochs, e.multiple, e.classification,
                          f"{e.best_optimizer} ({format_lr(e.best_lr)})" if e.best_optimizer else "-",
                          e.adam_test, e.best_test, e.gap, _finite(e.gap_low), _finite(e.gap_high), e.paired_seeds,
                          e.still_improving, e.verdict, e.compute_ratio, e.steps_to_target, e.best_steps_with_tuning,
                          e.adam_unfinished)
                 for e in claim.entries)
    return ClaimView(claim.demo, claim.headline(), claim.verdict, ACC_POINTS * 100, LOSS_RATIO, SETTLE_ACC,
                     SETTLE_LOSS, CONFIDENCE, rows)


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _profiles(views: Sequence[WorkloadView]) -> tuple[ProfileSet, ...]:
    out = []
    units = (("seconds", "time to target in seconds", lambda e: e.seconds_to_target),
             ("steps", "time to target in steps", lambda e: e.steps_to_target),
             ("steps-with-tuning", "time to target in steps, tuning counted", lambda e: e.with_tuning(False)))
    for unit, title, time in units:
        times: dict[str, dict[str, float]] = {}
        for v in views:
            for e in v.entries:
                times.setdefault(e.label, {})[v.name] = time(e)
        ratio = profiles.ratios(times)
        reached = {n: sum(1 for v in views for e in v.entries if e.label == n and math.isfinite(e.steps_to_target))
                   for n in ratio}
        out.append(ProfileSet(unit, f"performance profile: {title}",
                              {n: tuple(profiles.profile(r, TAUS)) for n, r in ratio.items()},
                              {n: profiles.score(r) for n, r in ratio.items()}, reached))
    return tuple(out)


def _sensitivity(result: StudyResult, views: Sequence[WorkloadView]) -> SensitivityView:
    header = ("optimizer", *[v.name for v in views], "spread (decades)")
    rows = []
    panels: dict[str, dict[str, tuple[tuple[float, float | None], ...]]] = {}
    selected: dict[str, dict[str, float | None]] = {}
    for name in result.config.optimizers:
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
                panels.setdefault(name, {})[v.name] = _one_per_lr(sensitivity_points(arm.sensitivity, best,
                                                                                     v.classification))
                selected.setdefault(name, {})[v.name] = lr
        row.append(f"{math.log10(max(lrs) / min(lrs)):.1f}" if lrs else "-")
        rows.append(tuple(row))
    return SensitivityView(header, tuple(rows), panels, selected)


def _one_per_lr(points: Sequence[tuple[float, float | None]]) -> tuple[tuple[float, float | None], ...]:
    """One point per lr (the race tunes some lrs on more than one seed): the mean of the finished ones."""
    by_lr: dict[float, list[float]] = {}
    for lr, value in points:
        by_lr.setdefault(lr, [])
        if value is not None:
            by_lr[lr].append(value)
    return tuple((lr, sum(v) / len(v) if v else None) for lr, v in sorted(by_lr.items()))


def _how(step: BudgetTry, classification: bool) -> str:
    """``plateau``, or the extension's outcome: ``extension to 120 epochs: +0.2 point on its first 60``."""
    if step.plateau:
        return "plateau"
    if step.extension_epochs is None:
        return ""
    before, after = step.extension_first_best_val, step.extension_best_val
    if before is None or after is None:
        change = "no result"
    elif classification:
        change = f"{(after - before) * 100:+.1f} point"
    else:
        change = f"{(after / before - 1) * 100:+.1f} % loss" if before > 0 else f"{after:.3g}"
    return f"extension to {step.extension_epochs} epochs: {change} on its first {step.epochs}"


def build_page(result: StudyResult, claim: Claim) -> StudyPage:
    """The frozen view of the study for the report layer."""
    views = [view(d) for d in result.workloads]
    sections = []
    for data, v in zip(result.workloads, views, strict=True):
        best = v.best_tuned()
        sections.append(WorkloadSection(
            v.name, data.race.config.task, data.race.config.model, v.epochs, v.classification, v.target,
            data.race.folder, tuple(_row(e) for e in v.entries), v.entries.index(best) if best is not None else None,
            tuple(BudgetStep(t.epochs, f"{t.optimizer} ({format_lr(t.lr)})" if t.optimizer else None, t.settled,
                             _how(t, v.classification)) for t in data.tried)))
    races = [r for d in result.workloads for r in (d.race, *d.claim.values())]
    races += [r for d in result.workloads for r in (*d.earlier, *d.extensions)]
    return StudyPage(
        workloads=tuple(sections), optimizers=tuple(result.config.optimizers), seeds=len(result.config.seeds),
        runs=sum(len(r.records) for r in races), train_seconds=sum(x.wall_s or 0.0 for r in races for x in r.records),
        demo=result.config.quick, command=study_command(result), claim=_claim_view(claim), taus=TAUS,
        profiles=_profiles(views), sensitivity=_sensitivity(result, views), tau_max=profiles.TAU_MAX,
        target_fraction=TARGET_FRACTION)


def write_page(result: StudyResult, claim: Claim, path: Path) -> Path:
    """``report.html`` (atomically)."""
    atomic_write_text(path, study_page.build_study_html(build_page(result, claim)))
    return path
