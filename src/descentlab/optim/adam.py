"""Adam and AdamW — torch.optim.Adam's rule (AdamW is the same rule with decoupled decay).

    g ← ∇f(w) (+ λ·w for Adam's L2 penalty)          AdamW instead: w ← w·(1 − γ·λ) first
    m ← β1·m + (1 − β1)·g                             (exp_avg)
    s ← β2·s + (1 − β2)·g²                            (exp_avg_sq)
    amsgrad: ŝmax ← max(ŝmax, s), used in place of s  (max_exp_avg_sq)
    m̂ = m / (1 − β1ᵗ),  ŝ = s / (1 − β2ᵗ)
    w ← w − γ·m̂ / (√ŝ + ε)

Often misquoted: the second moment averages g² (not g), the step divides by √ŝ (not ŝ), both
moments are bias-corrected (without it the first steps are ~1/(1 − β) too small), and ε is added
*after* the square root and the bias correction (torch default 1e-8; Keras' 1e-7 sits in a slightly
different place, ε·√(1 − β2ᵗ)).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from .define import DefinedRule
from .hyper import engine_option, flag, learning_rate, real, real_pair
from .ops import add_ratio
from .rule import Buffer


def adam_update(param: torch.Tensor, grad: torch.Tensor, state: Mapping[str, torch.Tensor | None], *,
                step: Any, lr: Any, betas: tuple[float, float], eps: float, weight_decay: float,
                amsgrad: bool, decoupled_weight_decay: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    beta1, beta2 = betas
    if weight_decay != 0:
        if decoupled_weight_decay:
            # in place on a copy, as torch does: a 0-dim tensor lr must not promote a 0-dim bf16 param
            param = param.clone().mul_(1 - lr * weight_decay)
        else:
            grad = grad.add(param, alpha=weight_decay)
    exp_avg = state["exp_avg"].lerp(grad, 1 - beta1)
    exp_avg_sq = state["exp_avg_sq"].mul(beta2).addcmul_(grad, grad, value=1 - beta2)
    new_state = {"exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}
    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    step_size = lr / bias_correction1
    second = exp_avg_sq
    if amsgrad:
        second = torch.maximum(state["max_exp_avg_sq"], exp_avg_sq)
        new_state["max_exp_avg_sq"] = second
    denom = (second.sqrt() / bias_correction2**0.5).add_(eps)
    return add_ratio(param, exp_avg, denom, -step_size), new_state


ADAM_RULE = DefinedRule(
    name="Adam",
    update=adam_update,
    hypers=(
        learning_rate(1e-3),
        real_pair("betas", (0.9, 0.999), doc="decay rates (β1, β2) of the two moment averages"),
        real("eps", 1e-8, doc="ε added to √ŝ (outside the root, after bias correction)"),
        real("weight_decay", 0.0, doc="λ: L2 penalty, or decoupled decay when decoupled_weight_decay"),
        flag("amsgrad", False, doc="use the running maximum of the second moment (AMSGrad)"),
        engine_option("foreach", None),
        flag("maximize", False, keyword_only=True, doc="ascend instead of descend"),
        engine_option("capturable", False),
        engine_option("differentiable", False),
        engine_option("fused", None),
        flag("decoupled_weight_decay", False, keyword_only=True, doc="AdamW-style decay w ← w·(1 − γλ)"),
    ),
    buffers=(
        Buffer("exp_avg"),
        Buffer("exp_avg_sq"),
        Buffer("max_exp_avg_sq", when=lambda h: h["amsgrad"]),
    ),
    doc=__doc__ or "",
)

ADAMW_RULE = ADAM_RULE.with_defaults("AdamW", fixed={"decoupled_weight_decay": True}, weight_decay=1e-2)
