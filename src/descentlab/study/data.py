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

    def budgets_json(self) -> dict[str, Any]:
        """The budget rule's path on this workload, for ``claim.json``."""
        return {"workload": self.workload.name, "epochs": self.epochs, "settled": self.settled,
                "tried": [{"epochs": t.epochs, "best_optimizer": t.optimizer, "best_lr": t.lr, "settled": t.settled}
                          for t in self.tried]}

    @property
    def epochs(self) -> int:
        return self.race.config.epochs

    @property
    def settled(self) -> bool:
        return bool(self.tried) and self.tried[-1].settled


@dataclass(frozen=True)
class BudgetTry:
    """One budget of the doubling rule: its epochs, the tuned best arm there and whether it settled."""

    epochs: int
    optimizer: str | None
    lr: float | None
    settled: bool


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
