"""What the study page shows, as frozen data: :mod:`descentlab.study` builds a :class:`StudyPage`
(from its races and ``claim.json``) and :func:`descentlab.report.study_page.build_study_html` draws it.
The report layer never imports the study layer: this module is the contract between them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..racing.summary import Stat


@dataclass(frozen=True)
class EntryRow:
    """One optimizer (tuned at its selected lr) or untuned Adam (one lr, one budget) on one workload."""

    label: str
    tuned: bool
    lr: float | None
    budget_epochs: int
    test: Stat
    best_val: Stat
    steps_to_target: float
    seconds_to_target: float
    steps_with_tuning: float
    """Time to target with the tuning runs counted (untuned: the same as without)."""
    seconds_with_tuning: float
    reached: int
    seeds: int
    improving: int
    """Seeds still improving when the budget ended."""


@dataclass(frozen=True)
class BudgetStep:
    """One budget the workload's race ran at, the tuned best there and whether it had settled."""

    epochs: int
    best: str | None
    settled: bool
    how: str = ""
    """How it settled or why not, in a few words ("plateau", "extension to 120: +0.1 point")."""


@dataclass(frozen=True)
class WorkloadSection:
    name: str
    task: str
    model: str
    epochs: int
    classification: bool
    target: float | None
    race_folder: str
    rows: tuple[EntryRow, ...]
    best_index: int | None
    budgets: tuple[BudgetStep, ...]


@dataclass(frozen=True)
class ClaimRow:
    """One entry of ``claim.json``: untuned Adam at (workload, lr, budget) against the tuned best."""

    workload: str
    lr: float
    budget_epochs: int
    multiple: int
    classification: bool
    best: str
    adam_test: float | None
    best_test: float | None
    gap: float | None
    gap_low: float | None
    gap_high: float | None
    paired_seeds: int
    still_improving: bool
    verdict: str
    compute_ratio: float | None
    steps_to_target: float
    best_steps_with_tuning: float
    adam_unfinished: int = 0
    """Seeds on which untuned Adam diverged or failed (never ``within``; shown beside the paired seeds)."""


@dataclass(frozen=True)
class ClaimView:
    demo: bool
    headline: str
    verdict: str | None
    acc_points: float
    loss_ratio: float
    settle_acc: float
    settle_loss: float
    confidence: float
    rows: tuple[ClaimRow, ...]


@dataclass(frozen=True)
class ProfileSet:
    """Performance profiles in one unit: ρ(τ) per entry over ``taus`` and AlgoPerf's score."""

    unit: str
    title: str
    curves: Mapping[str, tuple[float, ...]]
    scores: Mapping[str, float]
    reached: Mapping[str, int]


@dataclass(frozen=True)
class SensitivityView:
    """Selected lr per optimizer per workload (``rows``: optimizer, lrs..., spread) and the figure's data."""

    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    panels: Mapping[str, Mapping[str, tuple[tuple[float, float | None], ...]]]
    selected: Mapping[str, Mapping[str, float | None]]


@dataclass(frozen=True)
class StudyPage:
    workloads: tuple[WorkloadSection, ...]
    optimizers: tuple[str, ...]
    seeds: int
    runs: int
    train_seconds: float
    demo: bool
    command: str
    claim: ClaimView
    taus: tuple[float, ...]
    profiles: tuple[ProfileSet, ...]
    sensitivity: SensitivityView
    tau_max: float
    target_fraction: float
