"""Tensor ops for writing rules that run everywhere: eager (torch's bits), compiled and batched.

A rule computes ``x + α·y`` with ``x.add(y, alpha=α)``: torch's fused kernel, so the eager step has
torch.optim's exact bits. When α is a tensor — the 0-dim ``lr`` of a compiled step, or one value per
configuration of a batched race — ``alpha=`` needs a Python number, and dynamo would read the
tensor's value and recompile for each new one. :func:`add_scaled` takes either: the fused kernel for
a number (or a 0-dim tensor outside a compiled graph, read as a number as torch.optim does), a
product and a sum otherwise.
"""

from __future__ import annotations

from typing import Any

import torch


def add_scaled(x: torch.Tensor, y: torch.Tensor, alpha: Any) -> torch.Tensor:
    """x + alpha·y (see the module docstring for which kernel computes it)."""
    if isinstance(alpha, torch.Tensor) and (alpha.dim() > 0 or torch.compiler.is_compiling()):
        return torch.addcmul(x, y, alpha)
    return x.add(y, alpha=alpha)
