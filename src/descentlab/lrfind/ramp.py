"""The learning-rate range test (Smith 2017, "Cyclical Learning Rates for Training Neural Networks";
fastai's ``lr_find``, Lightning's ``Tuner.lr_find``): one short run whose lr rises exponentially, the
training loss watched as it goes.

Step t = 0 .. n−1 trains one minibatch at ``lr_t = start · (end / start)^(t / (n − 1))`` and records that
batch's loss ``ℓ_t`` (computed before the update, as fastai does). The smoothed loss is the bias-corrected
exponential moving average ``a_t = β·a_{t−1} + (1 − β)·ℓ_t``, ``s_t = a_t / (1 − β^(t+1))``. The test stops
early when ``s_t`` exceeds ``stop_factor`` times its lowest value b so far, or a loss is not finite. That
rule reads 0 as the loss's floor; once a batch's loss is below zero (a log-likelihood's, a loss with a
constant offset) there is none, and ``stop_factor·b`` would stop the ramp as soon as the smoothed loss
neared or crossed zero. From then on it stops when ``s_t > b + (stop_factor − 1)·max(|b|, s_0 − b)``: a
rise above the best of (stop_factor − 1) times the larger of its distance from zero and the drop from
the first smoothed loss s_0 — the same test for a loss and that loss shifted by a constant, once the
loss has fallen by more than its distance from zero.

Suggestion rule (:func:`suggest`, fastai's ``minimum``): the lr where the smoothed loss was lowest,
divided by ten; the first tenth of the ramp is left out of that search (Lightning's ``skip_begin``), where
the average holds a handful of batches and one lucky batch can be the minimum. At the minimum the lr is
already about as large as training tolerates (the loss is
about to rise); a tenth of it is the largest lr that is still comfortably stable. The steepest-descent
point (Lightning's default) was the other candidate: on a ramp of 100 steps it moves with the noise
of single batches, so we take the minimum.

Defaults (fastai's): start 1e-7, end 10, 100 steps, β = 0.98, stop at 4× the best smoothed loss. The
number of steps is capped at the budget of one race run (its epochs × steps per epoch), so a range test
never costs more than one run; a ramp of n < 100 steps smooths with β = 1 − 2/n, the same averaging
window relative to the ramp as 0.98 over 100 steps.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from ..tasks import Task, resolve_task
from ..train.data import Data
from ..train.device import check_device
from ..train.setup import (
    AUTO_BATCH,
    OptimizerSpec,
    check_batch_size,
    check_optimizer,
    check_optimizer_options,
    make_optimizer,
    optimizer_label,
)
from ..train.track import Budget

START_LR = 1e-7
END_LR = 10.0
STEPS = 100
BETA = 0.98
STOP_FACTOR = 4.0
SUGGESTION_DIVISOR = 10.0
_SHUFFLE_SALT = 0x1F1D


@dataclass
class RangeTest:
    """What one range test saw: the lr of every step taken, its batch loss and the smoothed loss."""

    task: str
    model: str
    optimizer: str
    batch_size: int | None
    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    stop_reason: str
    suggestion: float | None
    """The suggested lr (see :func:`suggest`), None when no step gave a finite loss."""
    min_loss_lr: float | None
    settings: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def ramp(start: float, end: float, steps: int) -> list[float]:
    """``steps`` learning rates rising exponentially from ``start`` to ``end``."""
    if steps == 1:
        return [start]
    return [start * (end / start) ** (t / (steps - 1)) for t in range(steps)]


def beta_for(steps: int) -> float:
    """The smoothing of a ramp of ``steps`` (see the module docstring)."""
    return BETA if steps >= STEPS else max(0.0, 1 - 2 / steps)


def suggest(lrs: list[float], smoothed: list[float], skip: int = 0) -> tuple[float | None, float | None]:
    """(suggested lr, lr at the lowest smoothed loss after the first ``skip`` steps): the second divided by
    :data:`SUGGESTION_DIVISOR`."""
    pairs = list(zip(smoothed, lrs, strict=True))
    finite = [(s, lr) for s, lr in pairs[skip:] if math.isfinite(s)] or [(s, lr) for s, lr in pairs if
                                                                            math.isfinite(s)]
    if not finite:
        return None, None
    _, at_min = min(finite)
    return at_min / SUGGESTION_DIVISOR, at_min


def check_settings(start: Any, end: Any, steps: Any, stop_factor: Any) -> None:
    """ValueError naming the setting when one is out of range."""
    for name, value in (("start_lr", start), ("end_lr", end)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    if not end > start:
        raise ValueError(f"end_lr must be larger than start_lr, got start_lr={start!r}, end_lr={end!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or not 2 <= steps <= 1_000_000:
        raise ValueError(f"steps must be an integer in [2, 1000000], got {steps!r}")
    if isinstance(stop_factor, bool) or not isinstance(stop_factor, (int, float)) or not (
            math.isfinite(stop_factor) and stop_factor > 1):
        raise ValueError(f"stop_factor must be a finite number > 1, got {stop_factor!r}")


def lr_find(task: Task | str = "mnist1d", *, model: str | None = None, optimizer: OptimizerSpec = "adam",
            batch_size: int | str | None = AUTO_BATCH, start_lr: float = START_LR, end_lr: float = END_LR,
            steps: int = STEPS, max_steps: int | None = None, stop_factor: float = STOP_FACTOR, seed: int = 0,
            device: str = "cpu", optimizer_options: Mapping[str, Any] | None = None) -> RangeTest:
    """Run the range test on ``task``'s ``model`` with ``optimizer`` (its default hyper-parameters plus
    ``optimizer_options``); ``batch_size=None`` is full batch, ``"auto"`` full for GD and 64 otherwise
    (:func:`descentlab.train.setup.check_batch_size`). ``max_steps`` caps the ramp (a race
    passes one run's budget). Returns a :class:`RangeTest` with the suggestion."""
    check_settings(start_lr, end_lr, steps, stop_factor)
    if max_steps is not None:
        steps = max(1, min(steps, int(max_steps)))
    task_obj = resolve_task(task) if isinstance(task, str) else task
    optimizer = check_optimizer(optimizer)
    batch_size = check_batch_size(batch_size, optimizer)
    optimizer_options = check_optimizer_options(optimizer_options)
    model_name = task_obj.default_model if model is None else model
    if model_name not in task_obj.models:
        raise ValueError(f"unknown model {model_name!r} for task {task_obj.name!r}; known: "
                         f"{', '.join(task_obj.models)}")
    torch_device = check_device(device)
    net = task_obj.make_model(model_name, seed).to(torch_device)
    params = [p for p in net.parameters() if p.requires_grad]
    schedule = ramp(start_lr, end_lr, steps)
    opt = make_optimizer(optimizer, params, schedule[0], dict(optimizer_options or {}))
    data = Data(task_obj, torch_device)
    started = time.perf_counter()  # the ramp itself (building the model and optimizer is not its cost)
    budget = Budget.of(data.n_train, None if batch_size is None else int(batch_size), steps=steps)
    n, size, per_epoch = budget.n_train, budget.size, budget.per_epoch
    generator = torch.Generator().manual_seed(seed ^ _SHUFFLE_SALT)
    lrs: list[float] = []
    losses: list[float] = []
    smoothed: list[float] = []
    beta = beta_for(steps)
    average, best, reason = 0.0, math.inf, f"ramp finished ({steps} steps)"
    floor_at_zero = True  # no batch's loss below 0 so far: fastai's stop rule (module docstring)
    batches = None
    for t, lr in enumerate(schedule):
        if t % per_epoch == 0:
            perm = None if size >= n else torch.randperm(n, generator=generator)
            batches = data.train_batches(perm, size)
        for group in opt.param_groups:
            group["lr"] = lr
        xb, yb = batches(t % per_epoch)
        opt.zero_grad(set_to_none=True)
        loss = data.loss_fn(net(xb), yb)
        value = float(loss.item())
        if not math.isfinite(value):
            reason = f"non-finite loss at lr {lr:.3g}"
            break
        average = beta * average + (1 - beta) * value
        current = average / (1 - beta ** (t + 1))
        lrs.append(lr)
        losses.append(value)
        smoothed.append(current)
        best = min(best, current)
        floor_at_zero = floor_at_zero and value >= 0
        scale = best if floor_at_zero else max(abs(best), smoothed[0] - best)
        if current > best + (stop_factor - 1) * scale:
            reason = (f"smoothed loss above {stop_factor:g}x its best at lr {lr:.3g}" if floor_at_zero else
                      f"smoothed loss above its best by {stop_factor - 1:g}x its distance from zero or its drop "
                      f"so far at lr {lr:.3g} (the loss goes below zero)")
            break
        loss.backward()
        opt.step()
    suggestion, at_min = suggest(lrs, smoothed, skip=steps // 10)
    settings = {"start_lr": start_lr, "end_lr": end_lr, "steps": steps, "beta": beta, "stop_factor": stop_factor,
                "seed": seed, "device": str(torch_device), "rule": f"lr at the lowest smoothed loss / "
                f"{SUGGESTION_DIVISOR:g}"}
    return RangeTest(task=task_obj.name, model=model_name, optimizer=optimizer_label(optimizer), batch_size=batch_size,
                     lrs=lrs, losses=losses, smoothed=smoothed, stop_reason=reason, suggestion=suggestion,
                     min_loss_lr=at_min, settings=settings, wall_s=time.perf_counter() - started)
