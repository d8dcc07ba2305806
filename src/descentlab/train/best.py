"""The best validation point of a run (early stopping): the evaluation whose weights the run is
judged by, and the one value the race compares learning rates with.

Classification: the highest validation accuracy; among equal accuracies the lower validation loss,
then the earlier evaluation. Regression: the lowest validation loss, then the earlier evaluation.
Accuracy, not cross-entropy, because on MNIST-1D's MLP selecting on the lowest validation loss
picked earlier, less accurate points and lrs (``benchmarks/selection_metric.py``, numbers in
docs/race-protocol.md). Non-finite values are never best.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

CLASSIFICATION = "val_acc"
REGRESSION = "val_loss"


def selection_metric(classification: bool) -> str:
    """``val_acc`` for classification, ``val_loss`` for regression."""
    return CLASSIFICATION if classification else REGRESSION


def score(val_loss: float | None, val_acc: float | None, classification: bool) -> tuple[float, ...] | None:
    """A key that sorts better points first (lower is better); None for a point that cannot be best."""
    if val_loss is None or not math.isfinite(val_loss):
        return None
    if not classification:
        return (float(val_loss),)
    if val_acc is None or not math.isfinite(val_acc):
        return None
    return (-float(val_acc), float(val_loss))


def entry_score(entry: Mapping[str, Any], classification: bool) -> tuple[float, ...] | None:
    return score(entry.get("val_loss"), entry.get("val_acc"), classification)


def improves(candidate: tuple[float, ...] | None, best: tuple[float, ...] | None) -> bool:
    """Whether a point scoring ``candidate`` replaces the best so far (strictly better: ties keep the earlier)."""
    return candidate is not None and (best is None or candidate < best)


class Best:
    """The best point of a run so far: its index in the history, its score and a copy of its weights
    (the test split is evaluated on these at the end)."""

    def __init__(self, classification: bool) -> None:
        self.classification = classification
        self.index: int | None = None
        self.score: tuple[float, ...] | None = None
        self.state: dict[str, torch.Tensor] | None = None

    def offer(self, index: int, entry: Mapping[str, Any], net: nn.Module) -> None:
        candidate = entry_score(entry, self.classification)
        if improves(candidate, self.score):
            self.index, self.score = index, candidate
            self.state = {name: value.detach().clone() for name, value in net.state_dict().items()}

    def model_like(self, net: nn.Module) -> nn.Module:
        """A copy of ``net`` holding the best weights (``net`` itself keeps the last ones)."""
        model = copy.deepcopy(net)
        if self.state is not None:
            model.load_state_dict(self.state)
        return model
