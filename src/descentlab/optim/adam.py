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

from ._state import scalar_dtype
from .define import DefinedRule
from .hyper import engine_option, flag, learning_rate, real, real_pair, tensors_refused_with_plain_foreach
from .ops import add_ratio
from .rule import Buffer


def adam_update(param: torch.Tensor, grad: torch.Tensor, state: Mapping[str, torch.Tensor | None], *,
                step: Any, lr: Any, betas: tuple[Any, Any], eps: float, weight_decay: Any,
                amsgrad: bool, decoupled_weight_decay: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    beta1, beta2 = betas
    autograd = _differentiable(param)
    if weight_decay != 0:
        if decoupled_weight_decay:
            # in place on a copy, as torch does: a 0-dim tensor lr must not promote a 0-dim bf16 param
            param = param.clone().mul_(1 - lr * weight_decay)
        else:
            grad = _l2_penalty(grad, param, weight_decay, autograd)
    exp_avg = state["exp_avg"].lerp(grad, 1 - _in_dtype_of(param, beta1))
    exp_avg_sq = _second_moment(state["exp_avg_sq"], grad, beta2, autograd)
    new_state = {"exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}
    second = exp_avg_sq
    if amsgrad:
        second = torch.maximum(state["max_exp_avg_sq"], exp_avg_sq)
        new_state["max_exp_avg_sq"] = second
    if autograd:
        return _differentiable_step(param, exp_avg, second, step, lr, beta1, beta2, eps), new_state
    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    step_size = lr / bias_correction1
    denom = (second.sqrt() / bias_correction2**0.5).add_(eps)
    return add_ratio(param, exp_avg, denom, -step_size), new_state


# Helpers of the update (trusted by the fused path's screens, as :mod:`.ops`: the type tests below answer the
# same on every step of a group, and on the trace's stand-ins they take the for-loop's branch).


def _differentiable(param: Any) -> bool:
    """Whether this is a ``differentiable=True`` step: the core steps such a group with autograd on and
    every other with it off (torch's ``_use_grad_for_differentiable``), and torch's Adam computes otherwise
    there. (A traced stand-in is not a tensor: the fused path never steps a differentiable group.)"""
    return torch.is_grad_enabled() and isinstance(param, torch.Tensor)


def _in_dtype_of(param: Any, beta: Any) -> Any:
    """A tensor β as the parameter's dtype and device, a number as it is: torch's for-loop casts a tensor
    β1 so before ``exp_avg.lerp_(grad, 1 - β1)`` (its ``beta1_dict``, pytorch#140601), so ``1 − β1`` is
    computed in the parameter's dtype."""
    if isinstance(beta, torch.Tensor) and isinstance(param, torch.Tensor):
        return beta.to(device=param.device, dtype=param.dtype)
    return beta


def _l2_penalty(grad: Any, param: Any, weight_decay: Any, autograd: bool) -> Any:
    """g + λ·w. torch's ``grad.add(param, alpha=λ)``, or, in a differentiable step with a λ that requires
    grad, ``grad.addcmul(param, λ)`` (autograd then sees λ; torch writes that one into ``p.grad`` in place,
    this rule does not)."""
    if autograd and isinstance(weight_decay, torch.Tensor) and weight_decay.requires_grad:
        return grad.addcmul(param, weight_decay)
    return grad.add(param, alpha=weight_decay)


def _second_moment(exp_avg_sq: Any, grad: Any, beta2: Any, autograd: bool) -> Any:
    """s ← β2·s + (1 − β2)·g²: torch's ``s.mul_(β2).addcmul_(g, g, value=1 − β2)``, or, in a differentiable
    step with a β2 that requires grad, its ``s.lerp_(g², 1 − β2)`` (the same average; addcmul's value cannot
    carry a gradient)."""
    if autograd and isinstance(beta2, torch.Tensor) and beta2.requires_grad:
        return exp_avg_sq.lerp(torch.square(grad), 1 - beta2)
    return exp_avg_sq.mul(beta2).addcmul_(grad, grad, value=1 - beta2)


def _differentiable_step(param: torch.Tensor, exp_avg: torch.Tensor, second: torch.Tensor, step: Any, lr: Any,
                         beta1: Any, beta2: Any, eps: float) -> torch.Tensor:
    """torch's differentiable (and capturable) arithmetic of the same step, operation for operation:

        t a 0-dim tensor of ``state['step']``'s dtype (float32 unless the default dtype is float64)
        c1 = 1 − β1ᵗ,  c2 = 1 − β2ᵗ  (tensors: float32 for float betas, so they differ from the for-loop's
        doubles by ~1e-5 relative for β2 = 0.999, as torch's own do)
        a = −γ/c1;  denom = √s / (√c2 · a) + ε/a;  w ← w + m/denom  (= w − γ·m̂/(√ŝ + ε))"""
    step_t = step if isinstance(step, torch.Tensor) else torch.tensor(float(step), dtype=scalar_dtype())
    bias_correction1 = 1 - beta1**step_t
    bias_correction2 = 1 - beta2**step_t
    step_size_neg = (lr / bias_correction1).neg()
    denom = (second.sqrt() / (bias_correction2.sqrt() * step_size_neg)).add_(eps / step_size_neg)
    return torch.addcdiv(param, exp_avg, denom)


ADAM_RULE = DefinedRule(
    name="Adam",
    update=adam_update,
    hypers=(
        learning_rate(1e-3),
        real_pair("betas", (0.9, 0.999), doc="decay rates (β1, β2) of the two moment averages"),
        real("eps", 1e-8, doc="ε added to √ŝ (outside the root, after bias correction)"),
        real("weight_decay", 0.0, doc="λ: L2 penalty, or decoupled decay when decoupled_weight_decay",
             accepts_tensor=True),
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
    constraints=(tensors_refused_with_plain_foreach("lr", "betas"),),
    doc=__doc__ or "",
)

ADAMW_RULE = ADAM_RULE.with_defaults("AdamW", fixed={"decoupled_weight_decay": True}, weight_decay=1e-2)
