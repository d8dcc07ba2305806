"""One configuration of a batched training run and its :class:`~.track.RunTrack`.

The k members of a batch step together (same step count, same examples seen) until one is lost or
stops early; from then on its track is frozen and it leaves the stack.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .track import RunTrack


@dataclass(frozen=True)
class Config:
    """What distinguishes one member: its optimizer (a registry name), schedule, lr, seed and the other
    hyper-parameters it sets (``hypers``: (name, value) pairs), whether it evaluates the test split at
    the end, and its early stopping."""

    optimizer: str
    schedule: str
    lr: float
    seed: int
    evaluate_test: bool = False
    hypers: tuple[tuple[str, Any], ...] = ()
    patience: int | None = None
    """Early stopping after that many evaluations without a better validation point (None: the whole budget)."""


@dataclass(eq=False)
class Member:
    """One member of a batch, compared by identity (two members may hold the same config)."""

    config: Config
    track: RunTrack
    last_weights: list[torch.Tensor] | None = field(default=None, repr=False)
    """Set when the member leaves the stack (its weights then)."""
