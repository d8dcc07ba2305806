"""When has a run settled? The plateau rule the study's budgets follow, and "still improving".

A run of budget E epochs evaluates the validation split after every epoch. Split its evaluations at
0.75·E: the *early* ones (epoch ≤ 0.75·E) and the *last quarter* (epoch > 0.75·E). The run is **still
improving** when its last quarter beats the best of its early part in either of two ways:

1. a jump beyond noise: the best value of the last quarter beats the early best by more than a margin δ
   — classification (validation accuracy): best_last − best_early > δ_acc = ``SETTLE_ACC`` = 0.005
   (half a point); regression (validation loss): best_early − best_last > δ_loss·|best_early|, δ_loss =
   ``SETTLE_LOSS`` = 0.01 (1 % of the loss; a loss may be negative);
2. a steady trend: the *median* of the last quarter beats the early best (any amount).

With δ = 0, (1) alone is "the best validation point lies in the last quarter of the budget". The margin
is there because the best of a noisy curve creeps later with every extra evaluation, by gains far inside
the claim's tolerance (1 point, 10 % of the loss: :mod:`.verdict`): accuracy moves in whole validation
examples (0.125 point on MNIST-1D, 0.28 on digits, where one more example came right at epoch 100) and
jumps by points between epochs on the MNIST-1D CNN, so its margin is half a point (also the plateau
measure of docs/race-protocol.md); the lowest validation loss of least squares' tuned best crept from
0.0060 to 0.0059 to 0.0058 from 60 to 120 to 240 epochs. (2) catches what a margin misses: a curve
falling slowly but steadily, as untuned Adam at lr 1e-4 on least squares does (0.9 % per quarter of 60
epochs, its best point always the last one), while noise around a plateau leaves the last quarter's
median below the early best. The same rule guards the claim's ``behind`` verdict, so a slow but still
falling Adam is never called behind.

A group of runs (one optimizer at one lr, over seeds) has **settled** when none of its runs is still
improving. A run that diverged or failed is neither (it has no curve to judge).

**Budget rule** (:func:`next_budget`, :func:`gained`): a workload's race starts at its suite budget
E₀. When the tuned best optimizer (the race's arm with the best mean best-validation metric over its
confirmation seeds) has not settled at E, its selected setting alone is trained for 2·E epochs on the
same seeds (the *extension*). Its gain is measured within its own runs (:func:`continued`): the mean
over seeds of each run's best validation metric over all 2·E epochs against the same over its first E
epochs — what training on bought. (Not against the race's E-epoch runs: in float32 the batched engine's
rounding depends on which runs share a stack, so separately trained runs of one seed drift apart within
a few epochs, and their difference is noise, not budget.) When that did not beat the margin
(:func:`gained`), twice the budget buys nothing the claim can see: E is the workload's budget, *settled
by extension* (one arm's runs, not the whole race's). Otherwise the whole race is run again at 2·E, at
most ``MAX_DOUBLINGS`` times (E₀·2³ = 8·E₀). The first budget that settled is the workload's budget; when
none did, the largest one is used and the study says the tuned best was still improving there. A
budget with no tuned best (every run diverged or failed) or whose extension finished no run is not
settled, and the rule stops there: a longer budget cannot be judged better.
"""

from __future__ import annotations

import math
import statistics
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
    trend = statistics.median(last)
    if classification:
        return max(last) - max(early) > SETTLE_ACC or trend > max(early)
    best_early, best_last = min(early), min(last)
    return trend < best_early or _fell(best_early, best_last)


def settled(histories: Iterable[Sequence[Mapping[str, Any]]], budget_epochs: float, classification: bool) -> bool:
    """Whether none of the runs (their histories) was still improving."""
    return not any(still_improving(h, budget_epochs, classification) for h in histories)


def next_budget(epochs: int, base_epochs: int) -> int | None:
    """The budget to try after ``epochs`` when the tuned best had not settled: twice it, or None once
    the budget reached ``base_epochs · 2**MAX_DOUBLINGS``."""
    return 2 * epochs if epochs < base_epochs * 2 ** MAX_DOUBLINGS else None


def best_within(history: Sequence[Mapping[str, Any]], epochs: float, classification: bool) -> float | None:
    """The best validation metric (highest accuracy, lowest loss) among the evaluations at epoch ≤ ``epochs``."""
    values = [v for epoch, v in _values(history, "val_acc" if classification else "val_loss") if epoch <= epochs]
    if not values:
        return None
    return max(values) if classification else min(values)


def continued(histories: Iterable[Sequence[Mapping[str, Any]]], epochs: float,
              classification: bool) -> tuple[float | None, float | None]:
    """Over runs of more than ``epochs`` epochs: the mean of each run's best validation metric within its
    first ``epochs`` epochs, and the mean of its best over the whole run (runs missing either are left out)."""
    pairs = [(best_within(h, epochs, classification), best_within(h, math.inf, classification)) for h in histories]
    kept = [(a, b) for a, b in pairs if a is not None and b is not None]
    if not kept:
        return None, None
    return statistics.fmean(a for a, _ in kept), statistics.fmean(b for _, b in kept)


def gained(before: float | None, after: float | None, classification: bool) -> bool:
    """Whether a mean best-validation metric moved from ``before`` to ``after`` by more than the plateau
    margin: accuracy up by more than ``SETTLE_ACC``, or loss down by more than ``SETTLE_LOSS`` of its size.
    False when either is missing (nothing to compare)."""
    if before is None or after is None or not (math.isfinite(before) and math.isfinite(after)):
        return False
    return after - before > SETTLE_ACC if classification else _fell(before, after)


def _fell(before: float, after: float) -> bool:
    """A loss fell beyond the margin: by more than ``SETTLE_LOSS`` of its size (a loss may be negative, a
    Gaussian negative log-likelihood for one; from 0, any fall)."""
    return before - after > SETTLE_LOSS * abs(before) if before != 0 else after < 0
