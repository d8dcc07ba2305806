"""Evaluation: mean loss and accuracy of a model on a split, without gradients, in eval mode.

loss = (1/N)·Σ_chunks n_c·loss_fn(model(x_c), y_c) (the loss functions are means over their chunk);
accuracy = (1/N)·#{i : argmax model(x_i) = y_i} for classification, ``None`` for regression.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from ..tasks.registry import LossFn

EVAL_CHUNK = 8192


@torch.no_grad()
def evaluate(model: nn.Module, chunks: Iterable[tuple[torch.Tensor, torch.Tensor]], loss_fn: LossFn,
             classification: bool) -> tuple[float, float | None]:
    """Mean loss (and accuracy) over the ``(x, y)`` chunks of one split."""
    was_training = model.training
    model.eval()
    try:
        n = 0
        loss_sum = 0.0
        correct = 0
        for xc, yc in chunks:
            output = model(xc)
            loss_sum += float(loss_fn(output, yc)) * len(xc)
            n += len(xc)
            if classification:
                correct += int((output.argmax(dim=-1) == yc).sum())
    finally:
        model.train(was_training)
    return loss_sum / n, (correct / n if classification else None)


def grad_norm(parameters: list[torch.Tensor]) -> float:
    """‖g‖₂ over all parameters' gradients (0 when none has a gradient)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return 0.0
    return float(torch.nn.utils.get_total_norm(grads, norm_type=2.0))
