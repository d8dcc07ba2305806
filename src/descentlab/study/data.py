"""The study's data: the races it read, per workload, and what a study returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..racing import RaceConfig, RaceSummary, RunRecord
from .config import StudyConfig
from .suite import Workload

if TYPE_CHECKING:
    from .verdict import Claim


@dataclass
class RaceData:
    """A finished race as the study reads it."""

    folder: str
    config: RaceConfig
    records: list[RunRecord]
    summary: RaceSummary


@dataclass
class WorkloadData:
    workload: Workload
    race: RaceData
    """The race at the workload's budget (the first that settled, else the largest tried)."""
    claim: dict[tuple[float, int], RaceData]
    """Adam at each (article lr, budget multiple), untuned."""
    tried: list[BudgetTry] = field(default_factory=list)
    """Every budget the race ran at, in order (the last is ``race``'s)."""
    earlier: list[RaceData] = field(default_factory=list)
    """The races at the budgets before ``race``'s (the tuned best had not settled there)."""
    extensions: list[RaceData] = field(default_factory=list)
    """The tuned best's extension races (its setting alone at twice a budget that had not settled)."""

    def budgets_json(self) -> dict[str, Any]:
        """The budget rule's path on this workload, for ``claim.json``."""
        return {"workload": self.workload.name, "epochs": self.epochs, "settled": self.settled,
                "tried": [t.to_json() for t in self.tried]}

    @property
    def epochs(self) -> int:
        return self.race.config.epochs

    @property
    def settled(self) -> bool:
        return bool(self.tried) and self.tried[-1].settled


@dataclass(frozen=True)
class BudgetTry:
    """One budget of the budget rule (:mod:`.settle`): its epochs, the tuned best arm there, whether the
    plateau rule found it settled and, when not, its extension to twice the budget."""

    epochs: int
    optimizer: str | None
    lr: float | None
    plateau: bool
    """Settled by the plateau rule: none of the tuned best's confirmation runs still improving."""
    best_val: float | None = None
    """The tuned best's mean best-validation metric at ``epochs``."""
    extension_epochs: int | None = None
    """The extension's budget (twice ``epochs``), when it ran."""
    extension_first_best_val: float | None = None
    """The extension runs' mean best-validation metric within their first ``epochs`` epochs."""
    extension_best_val: float | None = None
    """The extension runs' mean best-validation metric over all their epochs."""
    extension_gained: bool | None = None
    """Whether the second half of the extension beat its first by more than the plateau margin (None: it
    did not run, or finished no run)."""

    @property
    def settled(self) -> bool:
        """Settled by the plateau rule, or by an extension that gained nothing beyond the margin."""
        return self.plateau or self.extension_gained is False

    @property
    def unsettled_because(self) -> str:
        """Why a budget did not settle, in a few words."""
        if self.optimizer is None:
            return "no tuned best (every run diverged or failed)"
        if self.extension_epochs is not None and self.extension_gained is None:
            return "its extension finished no run"
        return "still improving"

    def to_json(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "best_optimizer": self.optimizer, "best_lr": self.lr, "settled": self.settled,
                "settled_by": "plateau" if self.plateau else ("extension" if self.settled else None),
                "unsettled_because": None if self.settled else self.unsettled_because,
                "best_val": self.best_val, "extension_epochs": self.extension_epochs,
                "extension_first_best_val": self.extension_first_best_val,
                "extension_best_val": self.extension_best_val, "extension_gained": self.extension_gained}


@dataclass
class StudyResult:
    out: Path
    config: StudyConfig
    workloads: list[WorkloadData]
    trained: int
    """Runs trained by this call."""
    wall_s: float
    report_path: Path | None = None
    claim: Claim | None = None
