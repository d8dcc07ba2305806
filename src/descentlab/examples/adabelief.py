"""AdaBelief (Zhuang et al., 2020): Adam whose second moment tracks the *surprise* (g − m)²
instead of g², so the step is large when the gradient agrees with its running mean.

    w ← w·(1 − γλ)                                    decoupled weight decay
    m ← β1·m + (1 − β1)·g                             exp_avg
    s ← β2·s + (1 − β2)·(g − m)² + ε                  exp_avg_var (ε inside, as in the paper)
    w ← w − γ/(1 − β1ᵗ) · m / (√s / √(1 − β2ᵗ) + ε)

Defaults follow the paper's code: lr 1e-3, betas (0.9, 0.999), eps 1e-16.
"""

from __future__ import annotations

from descentlab.optim import define_rule, real
from descentlab.optim.ops import add_ratio


@define_rule(
    name="AdaBelief",
    hypers={"lr": 1e-3, "betas": (0.9, 0.999), "eps": real("eps", 1e-16), "weight_decay": 0.0},
    buffers=["exp_avg", "exp_avg_var"],
)
def adabelief(param, grad, state, *, step, lr, betas, eps, weight_decay):
    """AdaBelief: Adam with the variance of the gradient around its mean as second moment."""
    beta1, beta2 = betas
    param = param.mul(1 - lr * weight_decay)
    m = state["exp_avg"].lerp(grad, 1 - beta1)
    residual = grad - m
    s = state["exp_avg_var"].mul(beta2).addcmul_(residual, residual, value=1 - beta2).add_(eps)
    denom = (s.sqrt() / (1 - beta2**step) ** 0.5).add_(eps)
    return add_ratio(param, m, denom, -lr / (1 - beta1**step)), {"exp_avg": m, "exp_avg_var": s}


AdaBelief = adabelief.optimizer
