"""The guide's minibatch task: a real, tiny regression trained by the library's SGD at several batch sizes.

Data: scikit-learn's diabetes set (442 patients, shipped with the package, no download): body-mass index x
→ disease progression after one year y, both standardised. The model is a line, w = (slope, intercept),
and the loss of a batch B is L_B(w) = ½·mean_{i∈B} (w₀·xᵢ + w₁ − yᵢ)², so the whole landscape is a 2-D
quadratic the page draws as contours (its minimum: slope = corr(x, y), intercept 0).

An epoch visits the samples in an order drawn by Fisher–Yates from the SplitMix64 stream of
:mod:`descentlab.landscape_noise` (``j = ⌊u·(i + 1)⌋`` for i = N−1 … 1), so the page shuffles exactly as
Python does; batches are consecutive slices of that order, the last one short (a DataLoader without
drop_last). Gradient noise at w, for a batch of size B drawn without replacement:
E‖∇L_B − ∇L‖² = (N − B)/(B·(N − 1)) · (1/N)·Σᵢ ‖∇ℓᵢ − ∇L‖² — zero for the full batch.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..landscape_noise import SplitMix64

BATCHES = (32, 64, 128)
"""The article's batch sizes; the guide adds the full batch (GD)."""


@functools.cache
def regression_data() -> tuple[np.ndarray, np.ndarray]:
    """(x, y): standardised body-mass index and disease progression of scikit-learn's diabetes data."""
    from sklearn.datasets import load_diabetes

    data = load_diabetes()
    x, y = data.data[:, 2].astype(np.float64), data.target.astype(np.float64)
    return (x - x.mean()) / x.std(), (y - y.mean()) / y.std()


def epoch_orders(seed: int, n: int, epochs: int) -> list[list[int]]:
    """The visiting order of each epoch: Fisher–Yates driven by one SplitMix64 stream seeded with ``seed``."""
    generator = SplitMix64(seed)
    orders = []
    for _ in range(epochs):
        order = list(range(n))
        for i in range(n - 1, 0, -1):
            j = min(math.floor(generator.uniform() * (i + 1)), i)
            order[i], order[j] = order[j], order[i]
        orders.append(order)
    return orders


def full_loss(w: Sequence[float], x: np.ndarray, y: np.ndarray) -> float:
    """L(w) = ½·mean (w₀·x + w₁ − y)² over every sample."""
    r = w[0] * x + w[1] - y
    return float(0.5 * np.mean(r * r))


def gradient_noise(w: Sequence[float], batch: int, x: np.ndarray, y: np.ndarray) -> float:
    """√E‖∇L_B − ∇L‖² at w for batches of ``batch`` samples drawn without replacement (0 for the full batch)."""
    n = len(x)
    r = w[0] * x + w[1] - y
    per_sample = np.stack([r * x, r], axis=1)
    spread = float(np.mean(np.sum((per_sample - per_sample.mean(axis=0)) ** 2, axis=1)))
    return math.sqrt(max(0.0, (n - batch) / (batch * (n - 1)) * spread))


def sgd_run(batch: int, *, lr: float, epochs: int, seed: int, start: Sequence[float]) -> dict[str, Any]:
    """Train the line with ``descentlab.optim``'s SGD (torch, float64) at one batch size.

    Returns ``points`` (w after each step, the start first), ``losses`` (the full-data loss at each point)
    and ``steps_per_epoch`` = ⌈N/B⌉.
    """
    import torch

    from ..optim import resolve

    x_np, y_np = regression_data()
    x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
    n = len(x_np)
    w = torch.tensor(list(start), dtype=torch.float64, requires_grad=True)
    opt = resolve("sgd").create([w], lr=lr)
    points, losses = [list(map(float, start))], [full_loss(start, x_np, y_np)]
    for order in epoch_orders(seed, n, epochs):
        for i in range(0, n, batch):
            idx = torch.tensor(order[i:i + batch])
            xb, yb = x[idx], y[idx]
            loss = 0.5 * ((w[0] * xb + w[1] - yb) ** 2).mean()
            w.grad = None
            loss.backward()
            opt.step()
            point = [float(w.detach()[0]), float(w.detach()[1])]
            points.append(point)
            losses.append(full_loss(point, x_np, y_np))
    return {"points": points, "losses": losses, "steps_per_epoch": math.ceil(n / batch)}
