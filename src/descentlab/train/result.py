"""What a training run returns: :class:`RunResult` (status, final metrics, curve, config)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

OK = "ok"
DIVERGED = "diverged"

METRIC_KEYS = ("step", "epoch", "examples", "train_loss", "val_loss", "val_acc", "lr", "grad_norm", "wall_s")
"""The fields of every evaluation record in ``RunResult.history`` and ``metrics.jsonl``:

- ``step``: optimizer updates applied so far (0 before training).
- ``epoch``: ``examples / n_train`` (fractional between epoch ends); ``examples``: training examples
  that went through an update.
- ``train_loss``: the running training loss, ``(1/k)·Σ ℓ_t`` over the k steps since the previous
  record, each ``ℓ_t`` the minibatch loss *before* step t's update (``None`` at step 0).
- ``val_loss``, ``val_acc``: the whole validation split at the record's weights, in eval mode
  (``val_acc`` ``None`` for regression).
- ``lr``: the first parameter group's learning rate.
- ``grad_norm``: ``‖g‖₂`` of the last step's minibatch gradient (``None`` at step 0 and for a lost run).
- ``wall_s``: seconds of training so far (time spent interrupted before a resume not counted).
"""


@dataclass
class RunResult:
    """The outcome of :func:`descentlab.train.train`.

    ``status`` is ``"ok"`` or ``"diverged"`` (then ``diverged_at_step`` is the 1-based step whose
    training loss was non-finite or above the divergence threshold, and ``diverge_reason`` says
    which). ``epochs`` = examples seen / training-set size; ``steps`` = optimizer updates applied.
    ``val_loss``/``val_acc`` are the last evaluation's. The best validation point (see
    :mod:`descentlab.train.best`) is at ``best_step`` / ``best_epoch`` with ``best_val_loss`` /
    ``best_val_acc``; ``best_is_last`` says it was the last evaluation (the run may want a longer
    budget). ``test_loss``/``test_acc`` are the test split at the best point's weights and
    ``end_test_loss``/``end_test_acc`` at the last weights, all ``None`` unless the run was asked to
    evaluate the test split. ``history`` holds one record per evaluation (see :data:`METRIC_KEYS`),
    the first at step 0 (before training). ``val_acc`` is ``None`` for regression tasks. ``model``
    is the trained module (last weights) when ``keep_model=True``. ``stopped_early_at`` is the step
    at which early stopping (``patience``) ended the run, None when it ran its whole budget.
    """

    status: str
    diverged_at_step: int | None
    diverge_reason: str | None
    epochs: float
    steps: int
    examples: int
    wall_s: float
    train_loss: float | None
    val_loss: float
    val_acc: float | None
    best_step: int
    best_epoch: float
    best_val_loss: float | None
    best_val_acc: float | None
    best_is_last: bool
    test_loss: float | None
    test_acc: float | None
    end_test_loss: float | None
    end_test_acc: float | None
    schedule: str
    device: str
    history: list[dict[str, Any]]
    config: dict[str, Any]
    out: str | None = None
    stopped_early_at: int | None = None
    model: nn.Module | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.status == OK

    def state_dict(self) -> dict[str, Any]:
        """The final model weights (needs ``keep_model=True``)."""
        if self.model is None:
            raise ValueError("the run was not asked to keep its model; pass keep_model=True to train()")
        return self.model.state_dict()

    def to_dict(self) -> dict[str, Any]:
        """Everything but the model, as plain Python values (JSON-ready via descentlab.atomic.dumps)."""
        data = asdict(self)
        data.pop("model")
        return data
