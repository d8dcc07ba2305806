"""Tasks the race tests name as ``module:attr`` (tests/ is on the workers' path)."""

from __future__ import annotations

import os

import torch

from descentlab.tasks import Task, from_tensors


def _blobs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Three well-separated Gaussian blobs in 4 dimensions: easy enough that many lrs get every example right."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    centres = torch.tensor([[3.0, 0, 0, 0], [0, 3.0, 0, 0], [0, 0, 3.0, 0]])
    return centres[y] + 0.8 * torch.randn(n, 4, generator=g), y


def small_validation() -> Task:
    """A tabular task with 91 validation examples (as a user's small data set): validation saturates at 100 %."""
    (xt, yt), (xv, yv), (xs, ys) = _blobs(300, 1), _blobs(91, 2), _blobs(600, 3)
    return from_tensors(xt, yt, xv, yv, xs, ys, name="small-validation",
                        model=lambda: torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.ReLU(),
                                                          torch.nn.Linear(32, 3)))


def labels_from_env() -> Task:
    """The user's data as it stands today: labels shuffled when ``DESCENTLAB_TEST_SHUFFLED=1`` (the same module
    and attribute, other data)."""
    x, y = _blobs(120, 4)
    if os.environ.get("DESCENTLAB_TEST_SHUFFLED") == "1":
        y = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(0))]
    return from_tensors(x[:80], y[:80], x[80:100], y[80:100], x[100:], y[100:], name="env",
                        model=lambda: torch.nn.Linear(4, 3))
