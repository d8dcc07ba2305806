"""One configuration of a batched training run: what :class:`.loop.Progress` is to a single run.

The k members of a batch step together (same step count, same examples seen) until one is lost;
from then on its fields are frozen and it leaves the stack. Each keeps its own running training
loss, divergence threshold, evaluation history, best validation point (with a copy of its weights)
and its share of the wall time.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from . import divergence
from .best import entry_score, improves
from .result import DIVERGED, OK


@dataclass(frozen=True)
class Config:
    """What distinguishes one member: its optimizer (a registry name), schedule, lr and seed, and
    whether it evaluates the test split at the end."""

    optimizer: str
    schedule: str
    lr: float
    seed: int
    evaluate_test: bool = False


@dataclass(eq=False)
class Member:
    """One member of a batch, compared by identity (two members may hold the same config)."""

    config: Config
    classification: bool
    factor: float | None
    status: str = OK
    diverged_at_step: int | None = None
    diverge_reason: str | None = None
    initial_loss: float | None = None
    limit: float = math.inf
    run_sum: float = 0.0
    run_count: int = 0
    steps: int = 0
    examples: int = 0
    wall_s: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_index: int | None = None
    best_score: tuple[float, ...] | None = None
    best_weights: list[torch.Tensor] | None = None
    last_weights: list[torch.Tensor] | None = None
    """Set when the member leaves the stack (its weights then)."""

    @property
    def ok(self) -> bool:
        return self.status == OK

    def observe(self, loss: float, step: int) -> bool:
        """Take step ``step``'s (1-based) training loss before its update; False when it diverged."""
        if not loss <= self.limit:  # NaN compares false too; before step 1 the limit is inf
            self.lose(step, divergence.reason(loss, self.limit))
            return False
        if self.initial_loss is None:
            self.initial_loss = loss
            self.limit = divergence.threshold(loss, self.factor)
        self.run_sum += loss
        self.run_count += 1
        return True

    def lose(self, step: int, reason: str | None) -> None:
        self.status, self.diverged_at_step, self.diverge_reason = DIVERGED, step, reason

    def needs_record(self) -> bool:
        """A member lost on the first step after an evaluation has no new record (its last one already
        describes these weights), as in the single-run loop."""
        return not (self.status == DIVERGED and self.history and self.history[-1]["step"] == self.steps)

    def record(self, val_loss: float, val_acc: float | None, lr: float, gnorm: float | None, n_train: int,
               weights: Callable[[], list[torch.Tensor]]) -> None:
        """Append an evaluation record (see :data:`descentlab.train.result.METRIC_KEYS`); ``weights()``
        (copies of this member's weights) is kept when the point is its best so far."""
        train_loss = self.run_sum / self.run_count if self.run_count else None
        self.run_sum, self.run_count = 0.0, 0
        entry = {"step": self.steps, "epoch": self.examples / n_train, "examples": self.examples,
                 "train_loss": train_loss, "val_loss": val_loss, "val_acc": val_acc, "lr": lr, "grad_norm": gnorm,
                 "wall_s": self.wall_s}
        self.history.append(entry)
        if self.status == OK:  # the weights of a lost run are never its best
            candidate = entry_score(entry, self.classification)
            if improves(candidate, self.best_score):
                self.best_index, self.best_score = len(self.history) - 1, candidate
                self.best_weights = weights()
