"""SGD, with optional momentum (heavy ball or Nesterov) — torch.optim.SGD's rule.

    g ← ∇f(w) (+ λ·w with weight decay)
    momentum ρ > 0:  b ← g on the first step, then b ← ρ·b + (1 − τ)·g      (τ = dampening)
                     d ← g + ρ·b (Nesterov) or d ← b
    otherwise:       d ← g
    w ← w − γ·d

Full-batch Gradient Descent is this rule fed the whole training set at every step: a property
of the data loop (``batch_size=None`` in :func:`descentlab.train`), not a different optimizer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from .define import DefinedRule
from .hyper import engine_option, flag, learning_rate, real
from .ops import add_scaled
from .rule import Buffer


def sgd_update(param: torch.Tensor, grad: torch.Tensor, state: Mapping[str, torch.Tensor | None], *,
               step: Any, lr: Any, momentum: float, dampening: float, weight_decay: float,
               nesterov: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    if weight_decay != 0:
        grad = grad.add(param, alpha=weight_decay)
    new_state = {}
    if momentum != 0:
        buf = state["momentum_buffer"]
        # the first buffer is the gradient, detached as torch.optim's (seen only with differentiable=True)
        buf = grad.detach() if buf is None else buf.mul(momentum).add(grad, alpha=1 - dampening)
        new_state["momentum_buffer"] = buf
        grad = grad.add(buf, alpha=momentum) if nesterov else buf
    return add_scaled(param, grad, -lr), new_state


def _nesterov_needs_plain_momentum(h: Mapping[str, Any]) -> Exception | None:
    if h["nesterov"] and (h["momentum"] <= 0 or h["dampening"] != 0):
        return ValueError(
            "nesterov=True requires momentum > 0 and dampening == 0, got "
            f"momentum={h['momentum']!r}, dampening={h['dampening']!r}"
        )
    return None


SGD_RULE = DefinedRule(
    name="SGD",
    update=sgd_update,
    hypers=(
        learning_rate(1e-3),
        real("momentum", 0.0, doc="momentum factor ρ"),
        real("dampening", 0.0, high=1.0, doc="dampening τ for momentum, in [0, 1]"),
        real("weight_decay", 0.0, doc="L2 penalty λ added to the gradient"),
        flag("nesterov", False, doc="Nesterov momentum"),
        flag("maximize", False, keyword_only=True, doc="ascend instead of descend"),
        engine_option("foreach", None),
        engine_option("differentiable", False),
        engine_option("fused", None),
    ),
    buffers=(Buffer("momentum_buffer", init=None, when=lambda h: h["momentum"] != 0),),
    counts_steps=False,
    constraints=(_nesterov_needs_plain_momentum,),
    doc=__doc__ or "",
)
