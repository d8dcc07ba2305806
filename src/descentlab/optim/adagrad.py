"""Adagrad — torch.optim.Adagrad's rule.

    g ← ∇f(w) (+ λ·w),   γ_t = γ / (1 + (t − 1)·η)              (η = lr_decay)
    s ← s + g²                                                   (s starts at initial_accumulator_value)
    w ← w − γ_t · g / (√s + ε)

The accumulator sums the *squared* gradient and the step divides by its *square root*; blog
versions that write ``s ← s + g`` or divide by ``s + ε`` describe a different (and unstable) rule.
ε sits outside the square root, as in torch (default 1e-10; Keras uses 1e-7).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from .define import DefinedRule
from .hyper import engine_option, flag, learning_rate, real
from .ops import add_ratio
from .rule import Buffer, filled_with


def adagrad_update(param: torch.Tensor, grad: torch.Tensor, state: Mapping[str, torch.Tensor | None], *,
                   step: Any, lr: Any, lr_decay: float, weight_decay: float,
                   initial_accumulator_value: float, eps: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    if weight_decay != 0:
        grad = grad.add(param, alpha=weight_decay)
    clr = lr / (1 + (step - 1) * lr_decay)
    total = state["sum"].addcmul(grad, grad, value=1)
    std = total.sqrt().add_(eps)
    return add_ratio(param, grad, std, -clr), {"sum": total}


ADAGRAD_RULE = DefinedRule(
    name="Adagrad",
    update=adagrad_update,
    hypers=(
        learning_rate(1e-2),
        real("lr_decay", 0.0, doc="η: the step size is γ / (1 + (t − 1)·η)"),
        real("weight_decay", 0.0, doc="L2 penalty λ added to the gradient"),
        real("initial_accumulator_value", 0.0, doc="starting value of the sum of squares"),
        real("eps", 1e-10, doc="ε added to √s (outside the root)"),
        engine_option("foreach", None, keyword_only=False),
        flag("maximize", False, keyword_only=True, doc="ascend instead of descend"),
        engine_option("differentiable", False),
        engine_option("fused", None),
    ),
    buffers=(Buffer("sum", init=filled_with("initial_accumulator_value")),),
    eager_state=True,
    doc=__doc__ or "",
)
