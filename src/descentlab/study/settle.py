"""When has a run settled? The plateau rule the study's budgets follow, and "still improving".

A run of budget E epochs evaluates the validation split after every epoch. Split its evaluations at
0.75·E: the *early* ones (epoch ≤ 0.75·E) and the *last quarter* (epoch > 0.75·E). The run is **still
improving** when the best validation value of its last quarter beats the best of its early part by
more than a margin δ:

- classification (validation accuracy, higher is better): best_last − best_early > δ_acc,
  δ_acc = ``SETTLE_ACC`` = 0.005 (half a point);
- regression (validation loss, lower is better): (best_early − best_last) / best_early > δ_loss,
  δ_loss = ``SETTLE_LOSS`` = 0.01 (1 % of the loss).

With δ = 0 this is exactly "its best validation point lies in the last quarter of the budget". The
margin is there because the best of a noisy curve creeps later with every extra evaluation, by gains far
inside the claim's tolerance (1 point, 10 % of the loss: :mod:`.verdict`): accuracy moves in whole
validation examples (0.125 point on MNIST-1D, 0.28 on digits, where one more example came right at epoch
100) and jumps by points between epochs on the MNIST-1D CNN, so its margin is half a point (also the
plateau measure of docs/race-protocol.md); a regression's loss curve is smooth, so a loss still falling by
more than 1 % (a tenth of the tolerance) over the last quarter is falling, not noise — as untuned Adam at
lr 1e-4 on least squares still is at 240 epochs (docs/study.md). The same rule guards the claim's
``behind`` verdict, so a margin too wide would call a slow but still falling Adam "behind".

A group of runs (one optimizer at one lr, over seeds) has **settled** when none of its runs is still
improving. A run that diverged or failed is neither (it has no curve to judge).

**Budget rule** (:func:`next_budget`): a workload's race starts at its suite budget E₀; while the
tuned best optimizer (the race's arm with the best mean best-validation metric over its confirmation
seeds) has not settled, the race is run again at twice the budget, at most ``MAX_DOUBLINGS`` times
(E₀·2³ = 8·E₀). The first budget at which it settled is the workload's budget; when none did, the
largest one is used and the study says the tuned best was still improving there.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

SETTLE_ACC = 0.005
SETTLE_LOSS = 0.01
LAST_QUARTER = 0.75
MAX_DOUBLINGS = 3


def _values(history: Sequence[Mapping[str, Any]], key: str) -> list[tuple[float, float]]:
    out = []
    for entry in history:
        value, epoch = entry.get(key), entry.get("epoch")
        if value is None or epoch is None or not math.isfinite(float(value)):
            continue
        out.append((float(epoch), float(value)))
    return out


def still_improving(history: Sequence[Mapping[str, Any]], budget_epochs: float, classification: bool) -> bool:
    """Whether a run with this evaluation ``history`` was still improving when its budget of
    ``budget_epochs`` ended (see the module docstring). False with no evaluation in either part."""
    key = "val_acc" if classification else "val_loss"
    points = _values(history, key)
    cut = LAST_QUARTER * budget_epochs
    early = [v for epoch, v in points if epoch <= cut]
    last = [v for epoch, v in points if epoch > cut]
    if not last:
        return False
    if not early:
        return True  # nothing to compare with: not settled
    if classification:
        return max(last) - max(early) > SETTLE_ACC
    best_early, best_last = min(early), min(last)
    if best_early <= 0:
        return False
    return (best_early - best_last) / best_early > SETTLE_LOSS


def settled(histories: Iterable[Sequence[Mapping[str, Any]]], budget_epochs: float, classification: bool) -> bool:
    """Whether none of the runs (their histories) was still improving."""
    return not any(still_improving(h, budget_epochs, classification) for h in histories)


def next_budget(epochs: int, base_epochs: int) -> int | None:
    """The budget to try after ``epochs`` when the tuned best had not settled: twice it, or None once
    the budget reached ``base_epochs · 2**MAX_DOUBLINGS``."""
    return 2 * epochs if epochs < base_epochs * 2 ** MAX_DOUBLINGS else None
