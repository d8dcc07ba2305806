"""The best validation point of a run (early stopping): the evaluation whose weights the run is
judged by, and the one value the race compares learning rates with.

Classification: the highest validation accuracy; among equal accuracies the lower validation loss,
then the earlier evaluation. Regression: the lowest validation loss, then the earlier evaluation.
Accuracy, not cross-entropy, because on MNIST-1D's MLP selecting on the lowest validation loss
picked earlier, less accurate points and lrs (``benchmarks/selection_metric.py``, numbers in
docs/race-protocol.md). Non-finite values are never best.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


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
