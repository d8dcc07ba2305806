"""Memory a training run needs, estimated before anything is allocated, so that a model that cannot fit
(``--hidden 100000000``: 5·10⁹ weights) is refused in one line instead of failing minutes later.

The sizes a user types are model options (``hidden=...``), so when options are given the model is
built once more on torch's ``meta`` device (shapes only, no storage, nothing run) and its parameters
counted. With ``b`` bytes per element (the data's float size):

    bytes ≈ b · P · (2 + S)

P = parameters (weights and their gradients: the 2), S = optimizer state buffers per parameter (2,
Adam's, the most among the built-in rules). Activations, allocator slack and temporaries come on top:
it is a floor, which is what a refusal should rest on. A model built from its factory's own defaults
is the task's and is not built twice (a user's factory may count its calls or draw random numbers).
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


def parameter_count(task: Task, model_name: str, model_options: Mapping[str, Any]) -> int:
    """Parameters of ``task``'s model ``model_name`` built with ``model_options``, counted on the meta device.

    Raises ValueError when a size cannot even be represented (beyond int64).
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
    return sum(p.numel() for p in net.parameters())


def check(task: Task, model_name: str, model_options: Mapping[str, Any]) -> None:
    """Refuse (ValueError naming the model, its options and the memory) a model that cannot fit in memory."""
    if not model_options:
        return
    parameters = parameter_count(task, model_name, model_options)
    sample = task.input_example()
    element = sample.element_size() if sample.is_floating_point() else 4
    check_fits(f"{_describe(model_name, model_options)} has {parameters:.3g} parameters; training it",
               element * parameters * (2 + STATE_BUFFERS))
