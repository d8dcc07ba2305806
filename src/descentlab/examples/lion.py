"""Lion (Chen et al., 2023, "Symbolic Discovery of Optimization Algorithms").

    w ← w·(1 − γλ)                          decoupled weight decay
    d = sign(β1·m + (1 − β1)·g)             the step is the sign of an interpolated momentum
    w ← w − γ·d
    m ← β2·m + (1 − β2)·g                   exp_avg

Every coordinate moves by exactly ±γ, so Lion wants a 3-10x smaller lr than Adam (default 1e-4).
"""

from __future__ import annotations

from descentlab.optim import define_rule


@define_rule(name="Lion", hypers={"lr": 1e-4, "betas": (0.9, 0.99), "weight_decay": 0.0}, buffers=["exp_avg"])
def lion(param, grad, state, *, step, lr, betas, weight_decay):
    """Lion: sign of an interpolated momentum, decoupled weight decay."""
    beta1, beta2 = betas
    momentum = state["exp_avg"]
    direction = momentum.lerp(grad, 1 - beta1).sign_()
    param = param.mul(1 - lr * weight_decay).add(direction * -lr)
    return param, {"exp_avg": momentum.lerp(grad, 1 - beta2)}


Lion = lion.optimizer
