"""Optimizers given as ``module:attr`` the way users write them: a partial of a torch class, a factory."""

from __future__ import annotations

import functools
import os
import signal
from typing import Any

import torch

heavy_sgd = functools.partial(torch.optim.SGD, momentum=0.9, nesterov=False)


def make_sgd(params: Any, lr: float = 0.01, momentum: float = 0.0) -> torch.optim.Optimizer:
    """A factory returning an optimizer."""
    return torch.optim.SGD(params, lr=lr, momentum=momentum)


def sgd_that_dies_at_lr_1(params: Any, lr: float = 0.01) -> torch.optim.Optimizer:
    """Kills its own worker process (as the OOM killer would) when built with lr 1: every try of that run
    dies with SIGKILL."""
    if lr == 1.0:
        os.kill(os.getpid(), signal.SIGKILL)
    return torch.optim.SGD(params, lr=lr)
