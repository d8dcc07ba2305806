"""Learning-rate schedules, built on ``torch.optim.lr_scheduler`` and stepped once per optimizer
step. ``lr`` is the peak learning rate; T is the run's total number of steps.

- ``constant``: lr_t = lr (no scheduler).
- ``cosine``: lr_t = lr · ½(1 + cos(π t / T)) (``CosineAnnealingLR``, T_max = T, down to 0).
- ``warmup-cosine``: a linear warm-up over the first W = max(1, round(WARMUP_FRACTION · T)) steps
  from lr / W to lr (``LinearLR``), then cosine from lr down to 0 over the remaining T − W steps
  (``CosineAnnealingLR``), chained by ``SequentialLR``.
"""

from __future__ import annotations

import warnings

import torch
from torch.optim import lr_scheduler

SCHEDULES = ("constant", "cosine", "warmup-cosine")
WARMUP_FRACTION = 0.05
"""Warm-up length of ``warmup-cosine``, as a fraction of the run's steps (5 %, at least one step)."""


def check_schedule(name: object) -> str:
    if not isinstance(name, str) or name not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {name!r}")
    return name


def warmup_steps(total: int) -> int:
    return max(1, round(WARMUP_FRACTION * total))


def make_scheduler(name: str, optimizer: torch.optim.Optimizer, total: int) -> lr_scheduler.LRScheduler | None:
    """The scheduler of schedule ``name`` over ``total`` steps (None for ``constant``)."""
    if name == "constant":
        return None
    if name == "cosine":
        return lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total))
    warm = warmup_steps(total)
    if warm >= total:  # a run too short to decay after warming up: warm-up only
        return lr_scheduler.LinearLR(optimizer, start_factor=1.0 / warm, total_iters=warm)
    return lr_scheduler.SequentialLR(optimizer, [
        lr_scheduler.LinearLR(optimizer, start_factor=1.0 / warm, total_iters=warm),
        lr_scheduler.CosineAnnealingLR(optimizer, T_max=total - warm)], milestones=[warm])


def lr_values(name: str, lr: float, total: int) -> list[float]:
    """``[lr_0, ..., lr_total]``: the lr a param group holds after t scheduler steps of schedule ``name``
    over ``total`` steps (lr_t is the lr of step t + 1), computed by the same scheduler a run builds."""
    if name == "constant":
        return [float(lr)] * (total + 1)
    optimizer = torch.optim.SGD([torch.zeros(0, requires_grad=True)], lr=lr)
    scheduler = make_scheduler(name, optimizer, total)
    values = [float(optimizer.param_groups[0]["lr"])]
    with warnings.catch_warnings():  # stepped without optimizer.step(): nothing to optimize here
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(total):
            assert scheduler is not None
            scheduler.step()
            values.append(float(optimizer.param_groups[0]["lr"]))
    return values
