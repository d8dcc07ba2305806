"""A NumPy float64 reference of each rule, written to read like the math.

Each function is pure: ``rule(w, g, state, *, hyper-parameters) -> (w, state)`` returns a new
weight array and a new state dict and never modifies its inputs. ``state`` starts as ``{}`` (or
from :func:`initial_state`) and carries ``t``, the step count, plus the rule's buffers under
torch.optim's names. The torch optimizers in :mod:`descentlab.optim` are tested against these
functions step by step, in float64, to 1e-12.

Where the well-known blog formulas go wrong
-------------------------------------------
* AdaGrad / RMSProp / Adam accumulate the *squared* gradient g² (several posts write g).
* The step divides by the *square root* of that accumulator (several posts divide by it directly,
  which makes the step scale like 1/|g|).
* Adam divides both moments by their bias corrections 1 − βᵗ; without them the first steps are
  about 1/(1 − β1) = 10x too small and the second moment starts near zero.
* ε is added *outside* the square root (√s + ε), after bias correction; torch's defaults are
  1e-8 (Adam, RMSprop) and 1e-10 (Adagrad), while Keras (and the article) use 1e-7.
"""

from __future__ import annotations

from typing import Any

import numpy as np

Array = np.ndarray
State = dict[str, Any]


def _grad(w: Array, g: Array, weight_decay: float, maximize: bool) -> Array:
    """g ← ±∇f(w) + λ·w (the L2 penalty folded into the gradient)."""
    g = -g if maximize else g
    return g + weight_decay * w if weight_decay != 0 else g


def sgd(w: Array, g: Array, state: State, *, lr: float, momentum: float = 0.0, dampening: float = 0.0,
        weight_decay: float = 0.0, nesterov: bool = False, maximize: bool = False) -> tuple[Array, State]:
    """SGD with optional momentum.

    g ← g + λw;  b₁ = g,  b_t = ρ·b_{t−1} + (1 − τ)·g;  d = g + ρ·b (Nesterov) or b;  w ← w − γ·d.
    Without momentum (ρ = 0): w ← w − γ·g. GD is this with the full-batch gradient.
    """
    g = _grad(w, g, weight_decay, maximize)
    state = dict(state)
    if momentum != 0:
        b = state.get("momentum_buffer")
        b = g.copy() if b is None else momentum * b + (1 - dampening) * g
        state["momentum_buffer"] = b
        g = g + momentum * b if nesterov else b
    return w - lr * g, state


def adagrad(w: Array, g: Array, state: State, *, lr: float, lr_decay: float = 0.0,
            weight_decay: float = 0.0, initial_accumulator_value: float = 0.0, eps: float = 1e-10,
            maximize: bool = False) -> tuple[Array, State]:
    """AdaGrad.

    s ← s + g²;  γ_t = γ / (1 + (t − 1)·η);  w ← w − γ_t · g / (√s + ε).
    """
    g = _grad(w, g, weight_decay, maximize)
    t = state.get("t", 0) + 1
    s = state.get("sum", np.full_like(w, initial_accumulator_value)) + g * g
    lr_t = lr / (1 + (t - 1) * lr_decay)
    return w - lr_t * g / (np.sqrt(s) + eps), {"t": t, "sum": s}


def rmsprop(w: Array, g: Array, state: State, *, lr: float, alpha: float = 0.99, eps: float = 1e-8,
            weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False,
            maximize: bool = False) -> tuple[Array, State]:
    """RMSProp.

    s ← α·s + (1 − α)·g²;  centered: m ← α·m + (1 − α)·g, v = s − m², else v = s;
    momentum: b ← ρ·b + g/(√v + ε), w ← w − γ·b;  otherwise w ← w − γ·g/(√v + ε).
    """
    g = _grad(w, g, weight_decay, maximize)
    zeros = np.zeros_like(w)
    s = alpha * state.get("square_avg", zeros) + (1 - alpha) * g * g
    new: State = {"t": state.get("t", 0) + 1, "square_avg": s}
    v = s
    if centered:
        m = alpha * state.get("grad_avg", zeros) + (1 - alpha) * g
        new["grad_avg"] = m
        v = s - m * m
    direction = g / (np.sqrt(v) + eps)
    if momentum > 0:
        b = momentum * state.get("momentum_buffer", zeros) + direction
        new["momentum_buffer"] = b
        direction = b
    return w - lr * direction, new


def adam(w: Array, g: Array, state: State, *, lr: float, beta1: float = 0.9, beta2: float = 0.999,
         eps: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False, decoupled: bool = False,
         maximize: bool = False) -> tuple[Array, State]:
    """Adam (and AdamW with ``decoupled=True``).

    AdamW: w ← w·(1 − γλ) first; Adam: g ← g + λw.
    m ← β1·m + (1 − β1)·g;  s ← β2·s + (1 − β2)·g²;  amsgrad: s_max ← max(s_max, s), used for s;
    m̂ = m/(1 − β1ᵗ);  ŝ = s/(1 − β2ᵗ);  w ← w − γ·m̂/(√ŝ + ε).
    """
    g = -g if maximize else g
    if decoupled:
        w = w * (1 - lr * weight_decay)
    elif weight_decay != 0:
        g = g + weight_decay * w
    zeros = np.zeros_like(w)
    t = state.get("t", 0) + 1
    m = beta1 * state.get("exp_avg", zeros) + (1 - beta1) * g
    s = beta2 * state.get("exp_avg_sq", zeros) + (1 - beta2) * g * g
    new: State = {"t": t, "exp_avg": m, "exp_avg_sq": s}
    if amsgrad:
        s = np.maximum(state.get("max_exp_avg_sq", zeros), s)
        new["max_exp_avg_sq"] = s
    m_hat = m / (1 - beta1**t)
    s_hat = s / (1 - beta2**t)
    return w - lr * m_hat / (np.sqrt(s_hat) + eps), new


def adamw(w: Array, g: Array, state: State, *, lr: float, beta1: float = 0.9, beta2: float = 0.999,
          eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False,
          maximize: bool = False) -> tuple[Array, State]:
    """AdamW: Adam with decoupled weight decay w ← w·(1 − γλ) (torch's default λ = 1e-2)."""
    return adam(w, g, state, lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay,
                amsgrad=amsgrad, decoupled=True, maximize=maximize)


RULES = {"SGD": sgd, "Adagrad": adagrad, "RMSprop": rmsprop, "Adam": adam, "AdamW": adamw}
"""The reference function for each torch class name."""


def reference_hypers(class_name: str, group: dict[str, Any]) -> dict[str, Any]:
    """Translate a torch-style param group into the reference function's keywords
    (``betas`` → ``beta1``/``beta2``; engine options dropped)."""
    fn = RULES[class_name]
    keys = set(fn.__kwdefaults__ or {}) | {"lr"}
    out = {k: (float(v) if k == "lr" else v) for k, v in group.items() if k in keys}
    if "betas" in group:
        out["beta1"], out["beta2"] = (float(b) for b in group["betas"])
    if class_name == "Adam":
        out["decoupled"] = bool(group.get("decoupled_weight_decay", False))
    return out
