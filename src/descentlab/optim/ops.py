"""Tensor ops for writing rules that run everywhere: eager (torch's bits), compiled and batched.

A rule computes ``x + α·y`` with ``x.add(y, alpha=α)`` and ``x + α·u/v`` with
``torch.addcdiv(x, u, v, value=α)``: torch's fused kernels, so the eager step has torch.optim's
exact bits. Both need α to be a Python number. When α is a tensor — the 0-dim ``lr`` of a
compiled step, one value per configuration of a batched race (shape ``[k, 1, ..., 1]``), or an lr
that requires grad in a ``differentiable=True`` step — :func:`add_scaled` and :func:`add_ratio`
take it too: the fused kernel for a number (or a 0-dim tensor outside a compiled graph that needs no
gradient, read as a number as torch.optim does), a product and a sum otherwise (so autograd sees
α). A rule written with these runs batched from its one declaration.
"""

from __future__ import annotations

from typing import Any

import torch


def _per_element(alpha: Any) -> bool:
    """α must be applied as a tensor (not read as one number)."""
    return isinstance(alpha, torch.Tensor) and (alpha.dim() > 0 or alpha.requires_grad
                                                or torch.compiler.is_compiling())


def add_scaled(x: torch.Tensor, y: torch.Tensor, alpha: Any) -> torch.Tensor:
    """x + alpha·y (see the module docstring for which kernel computes it)."""
    if _per_element(alpha):
        return torch.addcmul(x, y, alpha)
    return x.add(y, alpha=alpha)


def add_ratio(x: torch.Tensor, numerator: torch.Tensor, denominator: torch.Tensor, alpha: Any) -> torch.Tensor:
    """x + alpha·numerator/denominator (``torch.addcdiv``'s math, with alpha a number or a tensor)."""
    if isinstance(alpha, torch.Tensor) and (alpha.dim() > 0 or alpha.requires_grad):
        return torch.addcmul(x, numerator / denominator, alpha)
    return torch.addcdiv(x, numerator, denominator, value=alpha)
