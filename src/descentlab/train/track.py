"""One run's bookkeeping, shared by every training loop: :class:`Budget` and :class:`RunTrack`.

The loops (the per-run loop :mod:`.loop`, the batched loop :mod:`.batched`, the lr range test
:mod:`descentlab.lrfind.ramp`) only decide how to step; what a run *is* lives here:

- **Budget**: with n training examples and batch size B (None: the whole set), a step sees
  ``size = min(B, n)`` examples, an epoch is ``per_epoch = ⌈n / size⌉`` steps, and the run makes
  ``total = steps`` or ``epochs · per_epoch`` updates (``epochs`` defaults to :data:`DEFAULT_EPOCHS`).
- **Running training loss**: ``(1/k)·Σ ℓ_t`` over the k steps since the previous evaluation, each ℓ_t
  the minibatch loss before step t's update.
- **Divergence** (:mod:`.divergence`): step t is lost when ℓ_t is non-finite or above
  ``factor · ℓ_1``; at an evaluation, also when the gradient norm is not finite. A run lost on the
  first step after an evaluation gets no new record: the last one already describes its weights.
- **Evaluations**: one typed record per evaluation (:class:`Evaluation`, the fields of
  :data:`descentlab.train.result.METRIC_KEYS`).
- **Best point** (:mod:`.best`): the evaluation the run is judged by, with a copy of its weights
  (whatever the loop passes: a state dict, a list of tensors).
- **Early stopping**: with ``patience`` P, a run whose best point has not improved for P evaluations
  stops (``stopped_early`` with the step); its best point can no longer change.
- **The result**: :meth:`RunTrack.result` assembles the :class:`~descentlab.train.result.RunResult`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypedDict

from . import divergence
from .best import entry_score, improves
from .result import DIVERGED, OK, RunResult

DEFAULT_EPOCHS = 20


class Evaluation(TypedDict):
    """One evaluation of a run (see :data:`descentlab.train.result.METRIC_KEYS` for each field)."""

    step: int
    epoch: float
    examples: int
    train_loss: float | None
    val_loss: float
    val_acc: float | None
    lr: float
    grad_norm: float | None
    wall_s: float


@dataclass(frozen=True)
class Budget:
    """How many updates a run makes, and how they cut the training set (see the module docstring)."""

    n_train: int
    batch_size: int | None
    size: int
    per_epoch: int
    total: int
    epochs: int | None
    steps: int | None

    @property
    def full_batch(self) -> bool:
        return self.size >= self.n_train

    @classmethod
    def of(cls, n_train: int, batch_size: int | None, epochs: int | None = None,
           steps: int | None = None) -> Budget:
        """The budget of ``epochs`` (default :data:`DEFAULT_EPOCHS`) or exactly ``steps`` updates, not both."""
        if epochs is not None and steps is not None:
            raise ValueError(f"give epochs or steps, not both (got epochs={epochs!r}, steps={steps!r})")
        if epochs is None and steps is None:
            epochs = DEFAULT_EPOCHS
        size = n_train if batch_size is None else min(batch_size, n_train)
        per_epoch = math.ceil(n_train / size)
        total = steps if steps is not None else int(epochs or 1) * per_epoch
        return cls(n_train, batch_size, size, per_epoch, total, epochs, steps)


def run_config(*, task: Any, model: str, model_options: Mapping[str, Any], optimizer: str,
               optimizer_options: Mapping[str, Any], lr: float, budget: Budget, seed: int, eval_every: int | None,
               divergence_factor: float | None, schedule: str, device: str, patience: int | None) -> dict[str, Any]:
    """The ``config`` every run result carries (and a run directory is bound to); ``patience`` only when set,
    so that run directories written before early stopping existed still resume."""
    return {"task": task.name, "task_options": task.options, "data_sha256": task.fingerprint(),
            "model": model, "model_options": dict(model_options), "optimizer": optimizer,
            "optimizer_options": dict(optimizer_options), "lr": lr, "batch_size": budget.batch_size,
            "epochs": budget.epochs, "steps": budget.steps, "total_steps": budget.total,
            "steps_per_epoch": budget.per_epoch, "seed": seed, "eval_every": eval_every,
            "divergence_factor": divergence_factor, "schedule": schedule, "device": device,
            **({"patience": patience} if patience is not None else {})}


def check_patience(patience: Any) -> int | None:
    if patience is None:
        return None
    if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
        raise ValueError(f"patience must be an integer >= 1 or None, got {patience!r}")
    return patience


@dataclass(eq=False)
class RunTrack:
    """Where one run is (besides its weights and optimizer state); saved whole in checkpoints
    (:meth:`state` / :meth:`restore`). Compared by identity: two runs may look alike."""

    classification: bool
    factor: float | None = divergence.DEFAULT_FACTOR
    patience: int | None = None
    total: int | None = None
    """The budget in updates: a run whose patience runs out at its last evaluation did not stop early."""
    step: int = 0
    """Optimizer updates applied."""
    examples: int = 0
    run_sum: float = 0.0
    run_count: int = 0
    initial_loss: float | None = None
    status: str = OK
    diverged_at_step: int | None = None
    diverge_reason: str | None = None
    stopped_early_at: int | None = None
    """The step at which early stopping ended the run (None: it ran its budget or was lost)."""
    wall_s: float = 0.0
    history: list[Evaluation] = field(default_factory=list)
    best_index: int | None = None
    best_score: tuple[float, ...] | None = None
    best_weights: Any = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.status == OK

    @property
    def limit(self) -> float:
        """The training loss above which the next step is lost (inf before the first step)."""
        return math.inf if self.initial_loss is None else divergence.threshold(self.initial_loss, self.factor)

    def training(self, total: int) -> bool:
        """Whether the run still has steps to make within a budget of ``total`` updates."""
        return self.ok and self.stopped_early_at is None and self.step < total

    # -- steps ----------------------------------------------------------------------------------
    def observe(self, loss: float, step: int) -> bool:
        """Take 1-based step ``step``'s training loss before its update; False when the run is lost."""
        limit = self.limit
        if not loss <= limit:  # NaN compares false too
            self.lose(step, divergence.reason(loss, limit))
            return False
        if self.initial_loss is None:
            self.initial_loss = loss
        self.run_sum += loss
        self.run_count += 1
        return True

    def lose(self, step: int, reason: str | None) -> None:
        self.status, self.diverged_at_step, self.diverge_reason = DIVERGED, step, reason

    def needs_record(self) -> bool:
        """False for a run lost on the first step after an evaluation (its last record describes these weights)."""
        return not (self.status == DIVERGED and self.history and self.history[-1]["step"] == self.step)

    def check_grad_norm(self, gnorm: float | None) -> float | None:
        """The gradient norm to record at an evaluation (None when no step was taken since the last one, or
        the run is lost); a non-finite one loses the run here."""
        if not self.run_count or not self.ok:
            return None
        if gnorm is not None and not math.isfinite(gnorm):
            self.lose(self.step, f"non-finite gradient norm ({gnorm})")
        return gnorm

    # -- evaluations ----------------------------------------------------------------------------
    def record(self, val_loss: float, val_acc: float | None, lr: float, gnorm: float | None, n_train: int,
               weights: Callable[[], Any]) -> Evaluation:
        """Append an evaluation; ``weights()`` (a copy of the run's weights) is kept when it is the best point
        so far. Early stopping is decided here: the best point older than ``patience`` evaluations."""
        train_loss = self.run_sum / self.run_count if self.run_count else None
        self.run_sum, self.run_count = 0.0, 0
        entry = Evaluation(step=self.step, epoch=self.examples / n_train, examples=self.examples,
                           train_loss=train_loss, val_loss=val_loss, val_acc=val_acc, lr=lr, grad_norm=gnorm,
                           wall_s=self.wall_s)
        self.history.append(entry)
        if self.ok:  # the weights of a lost run are never its best
            candidate = entry_score(entry, self.classification)
            if improves(candidate, self.best_score):
                self.best_index, self.best_score = len(self.history) - 1, candidate
                self.best_weights = weights()
            elif (self.patience is not None and self.best_index is not None
                  and len(self.history) - 1 - self.best_index >= self.patience
                  and (self.total is None or self.step < self.total)):
                self.stopped_early_at = self.step
        return entry

    # -- checkpoints ----------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def restore(self, saved: Mapping[str, Any]) -> None:
        for name, value in saved.items():
            setattr(self, name, tuple(value) if name == "best_score" and value is not None else value)

    # -- the result -----------------------------------------------------------------------------
    def result(self, *, n_train: int, config: dict[str, Any], schedule: str, device: str,
               test: tuple[float | None, float | None] = (None, None),
               end_test: tuple[float | None, float | None] = (None, None), model: Any = None,
               out: str | None = None) -> RunResult:
        """The run's :class:`RunResult` (``test`` at the best point's weights, ``end_test`` at the last)."""
        last = self.history[-1]
        best = self.history[self.best_index] if self.best_index is not None else last
        return RunResult(
            status=self.status, diverged_at_step=self.diverged_at_step, diverge_reason=self.diverge_reason,
            epochs=self.examples / n_train, steps=self.step, examples=self.examples, wall_s=self.wall_s,
            train_loss=last["train_loss"], val_loss=last["val_loss"], val_acc=last["val_acc"],
            best_step=best["step"], best_epoch=best["epoch"], best_val_loss=best["val_loss"],
            best_val_acc=best["val_acc"], best_is_last=best is last, test_loss=test[0], test_acc=test[1],
            end_test_loss=end_test[0], end_test_acc=end_test[1], schedule=schedule, device=device,
            history=[dict(e) for e in self.history], config=config, out=out, model=model,
            stopped_early_at=self.stopped_early_at)

    @property
    def best_is_last(self) -> bool:
        return self.best_index is None or self.best_index == len(self.history) - 1
