"""k copies of one model as one: parameters stacked along a leading configuration dimension.

Built with ``torch.func``: :func:`torch.func.stack_module_state` stacks the k modules' parameters
(``W`` of shape ``[k, *shape]``, leaf tensors with ``.grad``), and the forward pass is
``vmap(functional_call)`` over them, so copy i computes ``f(x_i; W_i)`` exactly as module i would,
and a ``[k, B, d] @ [k, d, h]`` batched matmul replaces k small ones. Chosen over a hand-stacked
model (``baddbmm`` layers) because it takes any module vmap can batch — a user's model included —
without a second definition of it; what vmap refuses (random layers: ``randomness="error"``;
in-place buffer updates such as BatchNorm's running statistics) is found by :func:`stacking_problem`
before a race relies on it.

The k losses come back as a vector ``ℓ`` of shape ``[k]``; ``Σ_i ℓ_i`` is backpropagated once, and
since copy i's loss depends on ``W_i`` alone, ``∂(Σ ℓ)/∂W_i = ∂ℓ_i/∂W_i``: each copy gets its own
gradient.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from ..tasks.registry import LossFn

PROBE_TOLERANCE = 1e-4
"""Relative tolerance of the model check (float32 batched vs single matmuls differ in rounding)."""


class StackedModel:
    """``modules`` (same architecture, own weights) stacked into one; see the module docstring."""

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        params, buffers = stack_module_state(list(modules))
        self.names = list(params)
        self.params: list[torch.Tensor] = [params[name] for name in self.names]
        self.buffers = buffers
        self.base = copy.deepcopy(modules[0]).to("meta")

    @property
    def k(self) -> int:
        return self.params[0].shape[0]

    def _call(self, params: Sequence[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.base, (dict(zip(self.names, params, strict=True)), self.buffers), (x,))

    def outputs(self, x: torch.Tensor, shared: bool) -> torch.Tensor:
        """``[k, B, ...]``: copy i on ``x[i]`` (``shared``: every copy on the same batch ``x``)."""
        return vmap(self._call, in_dims=(0, None if shared else 0), randomness="error")(self.params, x)

    def losses(self, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn, shared: bool) -> torch.Tensor:
        """``[k]``: each copy's loss on its batch."""
        def one(params: Sequence[torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
            return loss_fn(self._call(params, xi), yi)

        dims = None if shared else 0
        return vmap(one, in_dims=(0, dims, dims), randomness="error")(self.params, x, y)

    def train(self, mode: bool) -> None:
        self.base.train(mode)

    def keep(self, index: torch.Tensor) -> None:
        """Keep only the copies at ``index`` (new leaf tensors; gradients kept along)."""
        kept = []
        for param in self.params:
            index = index.to(param.device)
            new = param.detach().index_select(0, index).requires_grad_(param.requires_grad)
            if param.grad is not None:
                new.grad = param.grad.index_select(0, index)
            kept.append(new)
        self.params = kept

    def weights_of(self, i: int) -> list[torch.Tensor]:
        """Copies of copy i's parameters."""
        return [param[i].detach().clone() for param in self.params]

    def grad_norms(self) -> torch.Tensor:
        """``[k]``: ``‖g_i‖₂`` over all of copy i's gradients (the norm of the per-tensor norms, as
        ``torch.nn.utils.get_total_norm`` computes it)."""
        norms = [param.grad.flatten(1).norm(dim=1) for param in self.params if param.grad is not None]
        if not norms:
            return torch.zeros(self.k)
        return torch.stack(norms).norm(dim=0)


def stacking_problem(modules: Sequence[nn.Module], x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn) -> str | None:
    """Why these modules cannot be trained stacked, or None: the stacked losses and gradients on one
    batch must equal each module's own (relative :data:`PROBE_TOLERANCE`)."""
    if any(True for module in modules for _ in module.buffers()):
        return "the model has buffers (e.g. BatchNorm running statistics), which a stacked model does not update"
    if any(not p.requires_grad for module in modules for p in module.parameters()):
        return "the model has frozen parameters"
    try:
        stacked = StackedModel([copy.deepcopy(m) for m in modules])
        losses = stacked.losses(x, y, loss_fn, shared=True)
        losses.sum().backward()
    except Exception as error:
        return f"torch.func.vmap cannot batch the model ({type(error).__name__}: {str(error).splitlines()[0]})"
    for i, module in enumerate(modules):
        single = copy.deepcopy(module)
        loss = loss_fn(single(x), y)
        loss.backward()
        if not torch.allclose(losses[i].detach(), loss.detach(), rtol=PROBE_TOLERANCE, atol=1e-6):
            return "the stacked model's loss differs from the model's own"
        for param, theirs in zip(stacked.params, single.parameters(), strict=True):
            if theirs.grad is None or not torch.allclose(param.grad[i], theirs.grad, rtol=PROBE_TOLERANCE,
                                                         atol=1e-6):
                return "the stacked model's gradients differ from the model's own"
    return None
