"""RMSprop — torch.optim.RMSprop's rule.

    g ← ∇f(w) (+ λ·w)
    s ← α·s + (1 − α)·g²                                  (square_avg)
    centered:  m ← α·m + (1 − α)·g;  v = s − m²           (grad_avg; v estimates the variance)
    otherwise: v = s
    momentum ρ > 0: b ← ρ·b + g / (√v + ε);  w ← w − γ·b
    otherwise:      w ← w − γ·g / (√v + ε)

The running average is of the *squared* gradient, and the step divides by its *square root* with
ε outside the root (torch default 1e-8; Keras uses 1e-7). α is torch's name for Hinton's ρ/decay.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from .define import DefinedRule
from .hyper import engine_option, flag, learning_rate, real
from .ops import add_ratio, add_scaled
from .rule import Buffer


def rmsprop_update(param: torch.Tensor, grad: torch.Tensor, state: Mapping[str, torch.Tensor | None], *,
                   step: Any, lr: Any, alpha: float, eps: float, weight_decay: float, momentum: float,
                   centered: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    if weight_decay != 0:
        grad = grad.add(param, alpha=weight_decay)
    square_avg = state["square_avg"].mul(alpha).addcmul_(grad, grad, value=1 - alpha)
    new_state = {"square_avg": square_avg}
    if centered:
        grad_avg = state["grad_avg"].lerp(grad, 1 - alpha)
        new_state["grad_avg"] = grad_avg
        avg = square_avg.addcmul(grad_avg, grad_avg, value=-1).sqrt_()
    else:
        avg = square_avg.sqrt()
    avg = avg.add_(eps)
    if momentum > 0:
        buf = state["momentum_buffer"].mul(momentum).addcdiv_(grad, avg)
        new_state["momentum_buffer"] = buf
        return add_scaled(param, buf, -lr), new_state
    return add_ratio(param, grad, avg, -lr), new_state


RMSPROP_RULE = DefinedRule(
    name="RMSprop",
    update=rmsprop_update,
    hypers=(
        learning_rate(1e-2),
        real("alpha", 0.99, high=1.0, doc="smoothing constant α of the squared-gradient average"),
        real("eps", 1e-8, doc="ε added to the root (outside it)"),
        real("weight_decay", 0.0, doc="L2 penalty λ added to the gradient"),
        real("momentum", 0.0, doc="momentum factor ρ"),
        flag("centered", False, doc="normalise by the estimated variance instead of the second moment"),
        engine_option("capturable", False, keyword_only=False),
        engine_option("foreach", None, keyword_only=False),
        flag("maximize", False, doc="ascend instead of descend"),
        engine_option("differentiable", False, keyword_only=False),
    ),
    buffers=(
        Buffer("square_avg"),
        Buffer("momentum_buffer", when=lambda h: h["momentum"] > 0),
        Buffer("grad_avg", when=lambda h: h["centered"]),
    ),
    doc=__doc__ or "",
)
