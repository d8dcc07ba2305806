"""Argument checks and the optimizer factory for :func:`descentlab.train.train`."""

from __future__ import annotations

import math
import platform
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from ..optim import resolve
from ..version import __version__

OptimizerSpec = str | type[torch.optim.Optimizer] | Callable[..., torch.optim.Optimizer]


def check_int(name: str, value: Any, low: int, allow_none: bool = False, high: int | None = None,
              high_text: str | None = None) -> int | None:
    """``value`` if it is an integer in ``[low, high]`` (or None where allowed); else a ValueError naming it."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        more = " or None" if allow_none else ""
        bounds = f">= {low}" if high is None else f"in [{low}, {high_text or high}]"
        raise ValueError(f"{name} must be an integer {bounds}{more}, got {value!r}")
    return value


def check_lr(lr: Any) -> float:
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr < 0:
        raise ValueError(f"lr must be a finite number >= 0, got {lr!r}")
    return float(lr)


def optimizer_label(spec: OptimizerSpec) -> str:
    """How the optimizer is named in configs: its registry name, or the class / factory's import path."""
    if isinstance(spec, str):
        return spec
    module = getattr(spec, "__module__", None) or "?"
    return f"{module}:{getattr(spec, '__qualname__', type(spec).__name__)}"


def check_optimizer(spec: Any) -> OptimizerSpec:
    if isinstance(spec, torch.optim.Optimizer):
        raise TypeError("optimizer must be a registry name, an Optimizer class or a factory "
                        f"(params, lr, **options) -> Optimizer, not an instance ({type(spec).__name__}): the loop "
                        "builds the optimizer for the model it creates")
    if isinstance(spec, str):
        resolve(spec)  # raises ValueError naming the unknown optimizer
        return spec
    if callable(spec):
        return spec
    raise TypeError(f"optimizer must be a registry name, an Optimizer class or a factory, got {spec!r}")


AUTO_BATCH = "auto"
"""``batch_size="auto"`` (train's and lr_find's default): the whole training set for a full-batch registry
optimizer (``gd``), :data:`DEFAULT_BATCH_SIZE` for every other."""
DEFAULT_BATCH_SIZE = 64


def check_batch_size(batch_size: Any, optimizer: OptimizerSpec) -> int | None:
    """``batch_size`` checked against ``optimizer``: None is the full batch; ``"auto"`` as :data:`AUTO_BATCH`
    says; a minibatch size for a full-batch optimizer (GD: g over the whole training set) is refused, not
    trained as minibatch SGD under GD's name."""
    full = isinstance(optimizer, str) and resolve(optimizer).full_batch
    if isinstance(batch_size, str) and batch_size == AUTO_BATCH:
        return None if full else DEFAULT_BATCH_SIZE
    size = check_int("batch_size", batch_size, 1, allow_none=True)
    if full and size is not None:
        raise ValueError(f"batch size {size} (--batch-size): optimizer {optimizer!r} is full-batch gradient descent "
                         "(each step takes the whole training set); use 'sgd' for minibatches, or --batch-size full "
                         "(batch_size=None), or leave it out")
    return size


def check_optimizer_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The optimizer's hyper-parameters beyond the lr: ``lr`` among them is refused (it has its own argument)."""
    values = dict(options or {})
    if "lr" in values:
        raise ValueError(f"--hp lr={values['lr']!r} (optimizer_options): the learning rate is set by --lr (lr=), "
                         "not among the other hyper-parameters")
    return values


def make_optimizer(spec: OptimizerSpec, params: list[torch.Tensor], lr: float,
                   options: Mapping[str, Any]) -> torch.optim.Optimizer:
    """``spec(params, lr=lr, **options)``, through the registry for a name."""
    if isinstance(spec, str):
        return resolve(spec).create(params, lr=lr, **options)
    optimizer = spec(params, lr=lr, **options)
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer factory {optimizer_label(spec)} returned {type(optimizer).__name__}, "
                        "not a torch.optim.Optimizer")
    return optimizer


def versions() -> dict[str, str]:
    found = {"descentlab": __version__, "torch": torch.__version__, "numpy": np.__version__,
             "python": platform.python_version()}
    try:
        from importlib.metadata import version

        found["mnist1d"] = version("mnist1d")
    except Exception:
        pass
    return found
