"""Memory a training run needs, estimated before anything is allocated, so that a model that cannot fit
(``--hidden 100000000``: 4·10⁹ weights) is refused in one line instead of failing minutes later.

The model is built on torch's ``meta`` device (shapes only, no storage) and one batch is pushed through
it there, counting every module's output. With 4-byte floats (the data's element size in general):

    bytes ≈ size · (P · (2 + S) + 2 · A)

P = parameters (weights and their gradients: the 2), S = optimizer state buffers per parameter (2,
Adam's, the most among the built-in rules), A = activation elements of one batch (kept for the
backward pass, plus their gradients: the 2). It is a floor — allocator slack and temporaries come on
top — which is what a refusal should rest on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..resources import check_fits
from ..tasks.registry import Task

STATE_BUFFERS = 2
"""State buffers per parameter assumed (Adam's exp_avg and exp_avg_sq)."""


def _describe(model_name: str, options: Mapping[str, Any]) -> str:
    shown = ", ".join(f"{key}={value!r}" for key, value in options.items())
    return f"model {model_name!r}" + (f" ({shown})" if shown else "")


def _count_activations(net: torch.nn.Module, sample: torch.Tensor) -> int:
    total = 0

    def count(_module: torch.nn.Module, _inputs: Any, output: Any) -> None:
        nonlocal total
        if isinstance(output, torch.Tensor):
            total += output.numel()

    handles = [module.register_forward_hook(count) for module in net.modules() if module is not net]
    try:
        with torch.no_grad():
            net(sample)
    finally:
        for handle in handles:
            handle.remove()
    return total


def estimate(task: Task, model_name: str, model_options: Mapping[str, Any], batch_size: int) -> tuple[int, int]:
    """``(parameters, bytes)`` of a run training ``model_name`` on ``task`` with batches of ``batch_size``.

    Raises ValueError when the model's shape cannot even be represented (a size beyond int64).
    """
    what = _describe(model_name, model_options)
    try:
        with torch.device("meta"):
            net = task.make_model(model_name, 0, **model_options)
    except (OverflowError, RuntimeError) as error:
        raise ValueError(f"{what} is too large to build ({str(error).splitlines()[0]})") from None
    except TypeError as error:
        if "Overflow" in str(error):  # torch reports a size beyond int64 as a TypeError
            raise ValueError(f"{what} is too large to build (a size does not fit in 64 bits)") from None
        raise
    parameters = sum(p.numel() for p in net.parameters())
    element = task.x_train.element_size() if task.x_train.is_floating_point() else 4
    try:
        sample = torch.empty((batch_size, *task.x_train.shape[1:]), dtype=task.x_train.dtype, device="meta")
        activations = _count_activations(net, sample)
    except Exception:  # a model that cannot run on the meta device: its parameters still count
        activations = 0
    return parameters, element * (parameters * (2 + STATE_BUFFERS) + 2 * activations)


def check(task: Task, model_name: str, model_options: Mapping[str, Any], batch_size: int | None) -> None:
    """Refuse (ValueError naming the model, its options and the memory) a run that cannot fit in memory."""
    batch = task.n_train if batch_size is None else min(batch_size, task.n_train)
    parameters, needed = estimate(task, model_name, model_options, max(1, batch))
    what = f"{_describe(model_name, model_options)} has {parameters:.3g} parameters; training it"
    check_fits(what, needed)
