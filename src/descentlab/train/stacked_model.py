"""k copies of one model as one: parameters stacked along a leading configuration dimension.

Built with ``torch.func``: :func:`torch.func.stack_module_state` stacks the k modules' parameters
(``W`` of shape ``[k, *shape]``, leaf tensors with ``.grad``), and the forward pass is
``vmap(functional_call)`` over them, so copy i computes ``f(x_i; W_i)`` exactly as module i would,
and a ``[k, B, d] @ [k, d, h]`` batched matmul replaces k small ones. vmap takes any module it can
batch — a user's model included — without a second definition of it; what it refuses (random
layers: ``randomness="error"``; in-place buffer updates such as BatchNorm's running statistics) is
found by :func:`stacking_problem` before a race relies on it.

One shape is common enough to be worth a direct form: an ``nn.Sequential`` of ``Linear``,
``Flatten`` and elementwise activations (every MLP of the built-in tasks). There each ``Linear`` is
one ``baddbmm`` (``b_i + h_i W_iᵀ`` for all i), and the task's loss, when it is one of the built-in
mean losses (cross-entropy, MSE, half MSE), is computed for all copies at once on the flattened
outputs instead of through vmap (whose per-call cost dominates at small k); measured against vmap in
``benchmarks/batched_race.py`` (docs/batched.md). :func:`stacking_problem` checks either form against
the modules themselves.

The k losses come back as a vector ``ℓ`` of shape ``[k]``; ``Σ_i ℓ_i`` is backpropagated once, and
since copy i's loss depends on ``W_i`` alone, ``∂(Σ ℓ)/∂W_i = ∂ℓ_i/∂W_i``: each copy gets its own
gradient.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from ..tasks.registry import LossFn, half_mse

PROBE_TOLERANCE = 1e-4
"""Relative tolerance of the model check (float32 batched vs single matmuls differ in rounding)."""


ELEMENTWISE = (nn.ReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU, nn.LeakyReLU, nn.ELU, nn.Softplus, nn.Identity)
"""Activations that act on each element alone (so on a stacked tensor as on each copy's)."""


def _direct_layers(module: nn.Module) -> list[nn.Module] | None:
    """The layers of ``module`` when it is a (nested) ``nn.Sequential`` of ``Linear``, ``Flatten`` and
    :data:`ELEMENTWISE` activations (exact types: a subclass may change ``forward``), else None."""
    if type(module) is not nn.Sequential:
        return None
    layers: list[nn.Module] = []
    for child in module:
        if type(child) is nn.Sequential:
            inner = _direct_layers(child)
            if inner is None:
                return None
            layers += inner
        elif type(child) in (nn.Linear, nn.Flatten, *ELEMENTWISE):
            layers.append(child)
        else:
            return None
    return layers


def _plain_layers(module: nn.Module) -> list[nn.Module] | None:
    """:func:`_direct_layers` when each layer is used once and owns its parameters (no layer reused,
    no weight tied between layers: the direct form reads one parameter per ``Linear`` slot, while
    ``stack_module_state`` lists a shared parameter once), else None (vmap handles those)."""
    layers = _direct_layers(module)
    if layers is None or len({id(layer) for layer in layers}) != len(layers):
        return None
    slots = sum(1 + (layer.bias is not None) for layer in layers if isinstance(layer, nn.Linear))
    return layers if slots == len(list(module.parameters())) else None


class StackedModel:
    """``modules`` (same architecture, own weights) stacked into one; see the module docstring."""

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        params, buffers = stack_module_state(list(modules))
        self.names = list(params)
        self.params: list[torch.Tensor] = [params[name] for name in self.names]
        self.buffers = buffers
        self.base = copy.deepcopy(modules[0]).to("meta")
        self.layers = _plain_layers(modules[0])
        self.direct = True
        """Use the direct forms where they apply (False: vmap everywhere, for comparison)."""
        self.laid_out: set[int] = set()
        """Indices of the parameters kept in the transposed layout (see :meth:`_lay_out_weights_for_bmm`)."""
        if self.layers is not None:
            self._lay_out_weights_for_bmm()

    def _lay_out_weights_for_bmm(self) -> None:
        """Store each stacked ``Linear`` weight ``[k, out, in]`` with ``in`` as its middle stride (a
        transposed layout): the batched matmul's weight gradient comes out in exactly that layout, so
        autograd hands it over as ``.grad`` instead of copying it into the default one."""
        assert self.layers is not None
        index = 0
        for layer in self.layers:
            if isinstance(layer, nn.Linear):
                weight = self.params[index]
                self.params[index] = _laid_out(weight.detach()).requires_grad_(weight.requires_grad)
                self.laid_out.add(index)
                index += 2 if layer.bias is not None else 1

    @property
    def k(self) -> int:
        return self.params[0].shape[0]

    def _call(self, params: Sequence[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.base, (dict(zip(self.names, params, strict=True)), self.buffers), (x,))

    def outputs(self, x: torch.Tensor, shared: bool, copies: slice | None = None) -> torch.Tensor:
        """``[k, B, ...]``: copy i on ``x[i]`` (``shared``: every copy on the same batch ``x``). ``copies``:
        only those copies (``[len, B, ...]``; each copy's outputs are the same bits either way)."""
        params = self.params if copies is None else [param[copies] for param in self.params]
        if self.layers is not None and self.direct:
            return self._direct(x, shared, params)
        return vmap(self._call, in_dims=(0, None if shared else 0), randomness="error")(params, x)

    def losses(self, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn, shared: bool) -> torch.Tensor:
        """``[k]``: each copy's loss on its batch."""
        return stacked_loss(loss_fn, self.outputs(x, shared), y, shared, self.direct)

    def _direct(self, x: torch.Tensor, shared: bool, stacked: Sequence[torch.Tensor]) -> torch.Tensor:
        """The direct form of a plain stack of layers (see the module docstring), with the parameters ``stacked``."""
        assert self.layers is not None
        k = stacked[0].shape[0]
        params = iter(stacked)
        h = x
        for layer in self.layers:
            if isinstance(layer, nn.Linear):
                weight = next(params)
                bias = next(params) if layer.bias is not None else None
                h = _stacked_linear(h, weight, bias, shared)
                shared = False
            elif isinstance(layer, nn.Flatten) and not shared:  # one more leading dimension than the layer expects
                end = layer.end_dim if layer.end_dim < 0 else layer.end_dim + 1
                h = h.flatten(layer.start_dim + 1 if layer.start_dim >= 0 else layer.start_dim, end)
            else:  # an elementwise activation, or Flatten on the batch all copies share
                h = layer(h)
        if shared:  # no Linear: every copy computes the same
            h = h.expand(k, *h.shape)
        return h

    def train(self, mode: bool) -> None:
        self.base.train(mode)

    def keep(self, index: torch.Tensor) -> None:
        """Keep only the copies at ``index`` (new leaf tensors; gradients kept along)."""
        kept = []
        for position, param in enumerate(self.params):
            index = index.to(param.device)
            new = param.detach().index_select(0, index)
            grad = param.grad.index_select(0, index) if param.grad is not None else None
            if position in self.laid_out:
                new = _laid_out(new)
                grad = _laid_out(grad) if grad is not None else None
            new.requires_grad_(param.requires_grad)
            new.grad = grad
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


def _laid_out(weight: torch.Tensor) -> torch.Tensor:
    """A copy of ``weight`` ``[k, out, in]`` stored as ``[k, in, out]`` (same values, transposed strides)."""
    k, out, width = weight.shape
    return torch.empty(k, width, out, dtype=weight.dtype, device=weight.device).transpose(1, 2).copy_(weight)


def _mean_per_copy(values: torch.Tensor) -> torch.Tensor:
    return values.reshape(values.shape[0], -1).mean(dim=1)


def _cross_entropy(outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``F.cross_entropy``'s mean per copy: over the targets that are not ``ignore_index`` (-100)."""
    per = F.cross_entropy(outputs.flatten(0, 1), y.flatten(0, 1), reduction="none").reshape(outputs.shape[0], -1)
    if y.is_floating_point():  # class probabilities: every position counts
        return per.mean(dim=1)
    return per.sum(dim=1) / (y != -100).reshape(y.shape[0], -1).sum(dim=1)


DIRECT_LOSSES: dict[object, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    F.cross_entropy: _cross_entropy,
    F.mse_loss: lambda out, y: _mean_per_copy(F.mse_loss(out, y, reduction="none")),
    half_mse: lambda out, y: 0.5 * _mean_per_copy(F.mse_loss(out, y, reduction="none")),
}
"""The built-in tasks' mean losses, for all copies at once: ``[k, B, ...]`` outputs and targets → ``[k]``."""


def stacked_loss(loss_fn: LossFn, outputs: torch.Tensor, y: torch.Tensor, shared: bool, direct: bool = True,
                 ) -> torch.Tensor:
    """``[k]``: ``loss_fn(outputs[i], y_i)`` for every copy (``y`` the same for all when ``shared``)."""
    if direct and loss_fn in DIRECT_LOSSES and outputs.dim() >= 2:
        targets = y.expand(outputs.shape[0], *y.shape) if shared else y
        return DIRECT_LOSSES[loss_fn](outputs, targets)
    return vmap(loss_fn, in_dims=(0, None if shared else 0), randomness="error")(outputs, y)


def _stacked_linear(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, shared: bool) -> torch.Tensor:
    """``h_i W_iᵀ + b_i`` for every copy i: ``h`` is ``[B, ..., in]`` when shared (every copy reads the
    same, expanded without a copy), else ``[k, B, ..., in]``; ``weight`` ``[k, out, in]``, ``bias``
    ``[k, out]``; the result ``[k, B, ..., out]``."""
    k, out, width = weight.shape
    if shared:
        h = h.expand(k, *h.shape)
    flat = h.reshape(k, -1, width)
    if bias is None:
        result = torch.bmm(flat, weight.transpose(1, 2))
    else:
        result = torch.baddbmm(bias.unsqueeze(1), flat, weight.transpose(1, 2))
    return result.reshape(*h.shape[:-1], out)


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
        first_line = next(iter(str(error).splitlines()), "")
        return f"torch.func.vmap cannot batch the model ({type(error).__name__}: {first_line})"
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
