"""The built-in models, each a function ``(input_shape, n_outputs, **options) -> nn.Module``.

- ``linear``: one affine map ``W·x + b`` of the flattened input (logistic regression under
  cross-entropy, linear regression under squared error; ``bias=False`` for a pure ``W·x``).
- ``mlp``: ``Linear → ReLU`` per hidden size (default 100-100, MNIST-1D's baseline), then ``Linear``.
- ``cnn``: a small CNN. 1-D inputs (MNIST-1D signals): three 1-D convolutions (25 channels, stride 2,
  kernels 5/3/3, the MNIST-1D paper's CNN) then a linear layer. 2-D inputs (8x8 digits): two 3x3
  convolutions (16 and 32 channels, the second with stride 2) then a linear layer.

Initialisation is torch's default; :meth:`descentlab.tasks.Task.make_model` seeds it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn


def linear(input_shape: Sequence[int], n_outputs: int, bias: bool = True) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), n_outputs, bias=bias))


def _hidden_sizes(hidden: Any) -> tuple[int, ...]:
    if isinstance(hidden, int):
        hidden = (hidden,)
    try:
        sizes = tuple(hidden)
    except TypeError:
        sizes = ()
    if not sizes or not all(isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in sizes):
        raise ValueError(f"hidden must be a positive integer or a sequence of them, got {hidden!r}")
    return sizes


def mlp(input_shape: Sequence[int], n_outputs: int, hidden: int | Sequence[int] = (100, 100)) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for size in _hidden_sizes(hidden):
        layers += [nn.Linear(width, size), nn.ReLU()]
        width = size
    layers.append(nn.Linear(width, n_outputs))
    return nn.Sequential(*layers)


class Unflatten(nn.Module):
    """Reshape a batch of flat examples to ``(batch, 1, *shape)`` (one input channel)."""

    def __init__(self, shape: Sequence[int]) -> None:
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], 1, *self.shape)


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def cnn(input_shape: Sequence[int], n_outputs: int, channels: int = 25) -> nn.Module:
    shape = tuple(input_shape)
    if len(shape) == 1:
        (length,) = shape
        for kernel in (5, 3, 3):
            length = _conv_out(length, kernel, 2, 1)
        return nn.Sequential(
            Unflatten(shape),
            nn.Conv1d(1, channels, 5, stride=2, padding=1), nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(channels * length, n_outputs),
        )
    if len(shape) == 2:
        height, width = (_conv_out(s, 3, 2, 1) for s in shape)
        return nn.Sequential(
            Unflatten(shape),
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(32 * height * width, n_outputs),
        )
    raise ValueError(f"cnn needs 1-D or 2-D examples, got input shape {shape}")


MODELS: dict[str, Callable[..., nn.Module]] = {"linear": linear, "mlp": mlp, "cnn": cnn}
DESCRIPTIONS = {
    "linear": "logistic / linear regression (one affine layer)",
    "mlp": "multi-layer perceptron, ReLU, hidden sizes configurable (default 100-100)",
    "cnn": "small CNN: 1-D convolutions for signals, 2-D for images",
}
