"""The core: applies a rule's pure update to each parameter in turn, where the parameter lives.

This is the default path (bitwise equal to torch.optim's CPU for-loop), the reference every
accelerator (:mod:`._pieces`, :mod:`._compiled`) is tested against, and the path for whatever an
accelerator does not take. It keeps nothing between steps: each step reads ``group["params"]``,
each ``p.grad`` and ``state[p]`` afresh, so anything a user changes between steps (a reset state, a
replaced parameter, a new dtype, shared memory) is honoured as torch.optim honours it.

For each parameter with a gradient: negate the gradient when ``maximize``; increment
``state['step']`` (t = 1 on the first step); view complex tensors as real pairs (torch.optim's
convention); call ``update``; check what it returned; write the new values back in place. ``step``
reaches the rule as a Python number, or as the state's 0-dim tensor while ``torch.compile`` traces
the step (as torch.optim does, so a compiled training step counts steps on the tensor).

``differentiable=True`` steps with autograd on (torch's hypergradient pattern: a non-leaf parameter,
an lr that requires grad): the rule is given copies of the parameter and its buffers, so whatever
autograd saves from them survives the in-place write-back, and ``copy_`` carries the graph into the
user's tensors, as torch.optim's in-place kernels do. A leaf parameter that requires grad then fails
as torch's does (an in-place operation on a leaf).
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

import torch

from ._state import init_state, needs_state
from .rule import Rule, RuleError, buffer_names


def eager_step(rule: Rule, group: Mapping[str, Any], states: MutableMapping[torch.Tensor, Any],
               owner: str, params: list[torch.Tensor] | None = None) -> None:
    """One step of ``rule`` for every parameter of ``group`` (or of ``params``, some of the
    group's) that has a gradient."""
    hypers = {name: group[name] for name in rule.math_names}
    names = buffer_names(rule, group)
    stateful = needs_state(rule, group)
    for param in group["params"] if params is None else params:
        grad = param.grad
        if grad is None:
            continue
        check_dense(grad, owner)
        state = states[param] if stateful else {}
        init_state(rule, param, group, state)
        if group["maximize"]:
            grad = -grad
        step = advance_step(rule, state)
        apply_update(rule, param, grad, state, names, hypers, step)


def advance_step(rule: Rule, state: MutableMapping[str, Any]) -> Any:
    """Count one more step in ``state['step']``; the new count t for the rule (None if it counts none)."""
    if not rule.counts_steps:
        return None
    state["step"] += 1
    return state["step"] if torch.compiler.is_compiling() else state["step"].item()


def check_dense(grad: torch.Tensor, owner: str) -> None:
    if grad.is_sparse or grad.layout != torch.strided:
        raise RuntimeError(
            f"{owner} does not support sparse gradients (got a {grad.layout} gradient of shape "
            f"{tuple(grad.shape)}); use dense gradients, e.g. nn.Embedding(sparse=False)"
        )


def apply_update(rule: Rule, param: torch.Tensor, grad: torch.Tensor, state: MutableMapping[str, Any],
                 names: list[str] | tuple[str, ...], hypers: Mapping[str, Any], step: Any) -> None:
    """Call ``rule.update`` on (real views of) the tensors and write its results back."""
    as_real = torch.view_as_real if torch.is_complex(param) else _identity
    # a lazy buffer is None until made: absent, or None as an old torch checkpoint holds it
    current = {name: (None if (value := state.get(name)) is None else as_real(value)) for name in names}
    target = as_real(param)
    inputs, given = target, current
    if torch.is_grad_enabled():  # differentiable=True: autograd may save an input the write-back overwrites
        inputs = target.clone()
        given = {name: (None if value is None else value.clone()) for name, value in current.items()}
    new_param, new_state = rule.update(inputs, as_real(grad), given, step=step, **hypers)
    check_result(rule, target, new_param, new_state, current, grad.dtype)
    # a lazy buffer's first value is copied before the parameter is written, as torch clones its first
    # momentum buffer before the update (it may read the parameter's memory: a gradient that is the
    # parameter itself)
    lazy = {name: value.detach().clone(memory_format=torch.preserve_format)
            for name, value in new_state.items() if current[name] is None}
    if new_param is not target:
        target.copy_(new_param)
    for name, value in new_state.items():
        existing = current[name]
        if existing is None:  # a lazy buffer starts detached, as torch's first momentum buffer does
            state[name] = torch.view_as_complex(lazy[name]) if torch.is_complex(param) else lazy[name]
        elif value is not existing:
            existing.copy_(value)


def check_result(rule: Rule, param: torch.Tensor, new_param: Any, new_state: Any,
                 current: Mapping[str, torch.Tensor | None], grad_dtype: torch.dtype | None = None) -> None:
    """Refuse a result with the wrong type, shape or dtype, naming the rule and the buffer.

    A value may come back in the dtype its inputs promote to when the gradient's dtype (or a state
    buffer's, after ``model.double()``) differs from the parameter's: torch.optim's in-place kernels
    compute in that dtype too, and the write-back casts to the tensor's own dtype, as theirs does."""
    if _as_declared(param, new_param, new_state, current):
        return
    where = f"rule {rule.name!r}"
    if not isinstance(new_param, torch.Tensor):
        raise RuleError(f"{where}: update must return (param, state), got {type(new_param).__name__} "
                        "as the new parameter")
    promoted = _promoted(param.dtype, grad_dtype, current)
    if new_param.shape != param.shape or new_param.dtype not in (param.dtype, promoted):
        raise RuleError(f"{where}: returned a parameter of shape {tuple(new_param.shape)} and dtype "
                        f"{new_param.dtype}; expected {tuple(param.shape)} and {param.dtype}")
    if not isinstance(new_state, Mapping):
        raise RuleError(f"{where}: update must return (param, state) with state a dict, got "
                        f"{type(new_state).__name__}")
    for name, value in new_state.items():
        if name not in current:
            raise RuleError(f"{where}: returned state {name!r}, which is not a declared buffer of this "
                            f"group (declared here: {sorted(current)})")
        expected = current[name]
        dtype = param.dtype if expected is None else expected.dtype
        if not isinstance(value, torch.Tensor) or value.shape != param.shape or value.dtype not in (dtype, promoted):
            got = (f"shape {tuple(value.shape)} and dtype {value.dtype}" if isinstance(value, torch.Tensor)
                   else type(value).__name__)
            raise RuleError(f"{where}: state buffer {name!r} came back with {got}; expected shape "
                            f"{tuple(param.shape)} and dtype {dtype}")


def _as_declared(param: torch.Tensor, new_param: Any, new_state: Any,
                 current: Mapping[str, torch.Tensor | None]) -> bool:
    """The common case in one pass: everything came back with the shape and dtype it went in with."""
    if not isinstance(new_param, torch.Tensor) or new_param.shape != param.shape or new_param.dtype != param.dtype \
            or not isinstance(new_state, dict):
        return False
    for name, value in new_state.items():
        if name not in current:
            return False
        reference = current[name]
        dtype = param.dtype if reference is None else reference.dtype
        if not isinstance(value, torch.Tensor) or value.shape != param.shape or value.dtype != dtype:
            return False
    return True


def _promoted(dtype: torch.dtype, grad_dtype: torch.dtype | None,
              current: Mapping[str, torch.Tensor | None]) -> torch.dtype:
    for other in (grad_dtype, *(b.dtype for b in current.values() if b is not None)):
        if other is not None:
            dtype = torch.promote_types(dtype, other)
    return dtype


def _identity(tensor: torch.Tensor) -> torch.Tensor:
    return tensor
