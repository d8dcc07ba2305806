"""The fused kernel for a batched race: k configurations of one rule, each with its own lr, in one call.

A stacked tensor ``[k, *shape]`` whose configurations are consecutive blocks of memory (dimension 0
outermost: contiguous, or the batched-matmul layout ``[k, in, out]`` transposed inside each block) is
k rows of the kernel's table (:mod:`._codegen`): row i points at block i and reads hyper-parameter row
i, which holds configuration i's lr as a number — the number its own run's param group holds. So each
configuration gets exactly the per-run core's arithmetic (one ``add(x, y, alpha=-lr_i)``, not a product
with an lr column), bitwise, for all of them in one pass over memory: read w, g and the state once,
write w and the state once.

A tensor with a lazy buffer not made yet (SGD's momentum before the first step) is stepped by the
core one configuration at a time, each with its lr as a number, so it too gets its run's bits. Tensors
the table cannot take (another layout, complex or half precision) are left to the caller, which steps
them with the rule's update on the stacks (:mod:`.stacked`).
"""

from __future__ import annotations

from array import array
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from . import _codegen
from ._eager import apply_update
from ._fused import DTYPES, call, columns_of, disabled, kernel_for, verify
from ._outside import changed
from ._trace import Unsupported, flatten_hypers, guard_inputs, guards_hold
from .rule import Rule


def blocks_of(tensor: torch.Tensor, like: torch.Tensor, k: int) -> bool:
    """Whether ``tensor`` (the parameter itself, its gradient or a buffer) is ``like``'s layout and that
    layout is k consecutive dense blocks, one per configuration, on the CPU."""
    if (type(tensor) is not torch.Tensor or tensor.dtype is not like.dtype or not tensor.is_cpu
            or tensor.shape != like.shape or tensor.stride() != like.stride() or tensor.dim() == 0
            or tensor.shape[0] != k):
        return False
    numel = tensor.numel()
    if numel == 0 or k == 0:
        return False
    if tensor.stride(0) != numel // k and k > 1:
        return False
    size = 1  # dense: the other dimensions, by increasing stride, tile the block without gaps
    for extent, stride in sorted(zip(tensor.shape[1:], tensor.stride()[1:], strict=True), key=lambda d: d[1]):
        if extent == 1:
            continue
        if stride != size:
            return False
        size *= extent
    return size == numel // k


def _like(tensor: torch.Tensor, param: torch.Tensor) -> bool:
    """Whether ``tensor`` has ``param``'s layout exactly (then it is k dense blocks when ``param`` is:
    :func:`blocks_of`, asked once per parameter)."""
    return (type(tensor) is torch.Tensor and tensor.dtype is param.dtype and tensor.is_cpu
            and tensor.shape == param.shape and tensor.stride() == param.stride())


def _hyper_rows(numbers: list[float], key: tuple[Any, ...], lrs: Sequence[float]) -> list[list[float]]:
    """Per configuration, :func:`flatten_hypers` of the group's hyper-parameters with its own lr: the first
    configuration's list with the lr's place changed (``lr`` is one number, where the key says)."""
    position = 0
    for entry in key:
        if entry[0] == "lr":
            break
        position += 1 if entry[1:] == ("number",) else entry[2] if entry[1] == "numbers" and len(entry) == 3 else 0
    else:
        return [list(numbers) for _ in lrs]
    if position >= len(numbers):
        return [list(numbers) for _ in lrs]
    rows = []
    for lr in lrs:
        row = list(numbers)
        row[position] = float(lr)
        rows.append(row)
    return rows


class StepCache:
    """What :func:`stacked_step` worked out at one step that the next step of the same group reads again:
    the kernel and hyper-parameter rows for the same lrs, and the address table for the same parameters
    and buffers (the same addresses, shapes, strides and dtypes), whose gradient column alone is
    rewritten each step (autograd hands over new gradient tensors). Per step, the checks that decide the
    route are still made (the switch, each gradient's layout); what comes out of the cache is what the
    same inputs would rebuild, so the kernel gets the same table and rows, and computes the same bits."""

    def __init__(self) -> None:
        self.hyper: tuple[Any, ...] | None = None
        """(the hyper-parameters' text and maximize, lrs, plan) of the last step: plan = (kernel, numbers, hyper
        rows array) or None (no kernel)."""
        self.tables: tuple[Any, ...] | None = None
        """(key, grad pattern, left, tables, checked, grad slots) of the last step without lazy buffers."""


def _hyper_plan(rule: Rule, math: Mapping[str, Any], names: Sequence[str], maximize: bool, lrs: Sequence[float],
                step: float | None) -> tuple[Any, list[float], array] | None:
    """The kernel and the hyper-parameter rows (one per configuration) for these lrs; None: no kernel."""
    try:
        numbers, key = flatten_hypers({**math, "lr": lrs[0]})
        kernel = kernel_for(rule, {**math, "lr": lrs[0]}, names, maximize, numbers, key, step)
        rows_numbers = _hyper_rows(numbers, key, lrs)
        if len(lrs) > 1 and rows_numbers[-1] != flatten_hypers({**math, "lr": lrs[-1]})[0]:  # never seen
            rows_numbers = [flatten_hypers({**math, "lr": lr})[0] for lr in lrs]
    except Unsupported:
        return None
    inputs = guard_inputs(kernel.program)  # rows differing only where no guard looks (the lr) share the outcome
    distinct = {tuple(row[i] for i in inputs): row for row in rows_numbers}
    if kernel.function is None or not all(guards_hold(kernel.program, row) for row in distinct.values()):
        return None
    return kernel, numbers, array("d", [value for row in rows_numbers for value in row])


def _layout_key(params: Sequence[torch.Tensor], states: Sequence[Mapping[str, torch.Tensor]],
                names: Sequence[str]) -> tuple[Any, ...]:
    """What the address table depends on besides the gradients: every parameter's and buffer's type,
    dtype, device, address, shape and strides."""
    def of(tensor: Any) -> Any:
        if not isinstance(tensor, torch.Tensor):
            return tensor is None
        return (type(tensor), tensor.dtype, tensor.is_cpu, tensor.data_ptr(), tensor.shape, tensor.stride())

    return tuple((of(param), *(of(state.get(name)) for name in names))
                 for param, state in zip(params, states, strict=True))


def stacked_step(rule: Rule, math: Mapping[str, Any], names: Sequence[str], maximize: bool,
                 params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor | None],
                 states: Sequence[Mapping[str, torch.Tensor]], lrs: Sequence[float], step: float | None,
                 cache: StepCache | None = None) -> list[int] | None:
    """Step the tensors of one stacked group (``params[j]``: ``[k, ...]``; ``lrs``: k numbers) in one
    fused call. Returns the indices ``j`` with a gradient left to the caller, or None when the kernel
    cannot be used at all (nothing moved). ``cache``: kept by the caller between steps of one group
    (:class:`StepCache`)."""
    if disabled():
        return None
    k = len(lrs)
    lrs_key = tuple(lrs)
    values_key = (repr(tuple(math.items())), maximize)  # (a dict edited in place is not another dict)
    if cache is not None and cache.hyper is not None and cache.hyper[0] == values_key and cache.hyper[1] == lrs_key:
        plan = cache.hyper[2]
    else:
        plan = _hyper_plan(rule, math, names, maximize, lrs, step)
        if cache is not None:
            cache.hyper = (values_key, lrs_key, plan)
    if plan is None or (plan[0].program.outside and changed(plan[0].program.outside)):
        return None
    kernel, numbers, hyper_rows = plan
    if cache is not None and cache.tables is not None:
        done = _step_cached(cache, kernel, params, grads, states, names, hyper_rows, len(numbers), step)
        if done is not None:
            return done
    tables: dict[torch.dtype, list[list[int]]] = {}
    slots: dict[torch.dtype, list[int]] = {}
    left: list[int] = []
    lazy: list[int] = []
    for j, (param, grad, state) in enumerate(zip(params, grads, states, strict=True)):
        if grad is None:
            continue
        buffers = [state.get(name) for name in names]
        if param.dtype not in DTYPES or not blocks_of(param, param, k) or not all(
                _like(t, param) for t in (grad, *buffers) if isinstance(t, torch.Tensor)):
            left.append(j)
            continue
        if any(b is None for b in buffers):
            lazy.append(j)
            continue
        block = param.numel() // k * param.element_size()
        addresses = [t.data_ptr() for t in (param, grad, *buffers)]  # type: ignore[union-attr]
        table = tables.setdefault(param.dtype, [])
        slots.setdefault(param.dtype, []).append(j)
        for i in range(k):
            table.append([param.numel() // k, 0, 0, i, *(a + i * block for a in addresses)])
    stride = _codegen.META_FIXED + 2 + len(names)
    checked = {dtype: verify(kernel, rule, names, {**math, "lr": lrs[0]}, maximize, numbers, dtype, False)
               for dtype in tables}
    if any(problem for problem, _, _ in checked.values()):
        return None
    if lazy:
        _rows_one_at_a_time(rule, math, names, maximize, [params[j] for j in lazy], [grads[j] for j in lazy],
                            [states[j] for j in lazy], lrs, step)
    metas = {dtype: columns_of(table, stride) for dtype, table in tables.items()}
    for dtype, table in tables.items():
        roots = checked[dtype][2]
        reject = call(kernel, dtype, metas[dtype], len(table), stride, hyper_rows, len(numbers),
                      float(step or 0.0), True, roots)
        if reject.count(0) != len(table):  # stacks sharing memory: not something a race makes; refuse loudly
            raise RuntimeError("descentlab: stacked tensors of one race overlap in memory")
    if cache is not None:
        cache.tables = None
        if not lazy:  # the buffers exist: the next step reads the same table, its gradient column rewritten
            pattern = tuple(grad is None for grad in grads)
            blocks = {dtype: [params[j].numel() // k * params[j].element_size() for j in js]
                      for dtype, js in slots.items()}
            cache.tables = (_layout_key(params, states, names), pattern, tuple(left), metas, checked, slots, blocks,
                            stride, k)
    return left


def _step_cached(cache: StepCache, kernel: Any, params: Sequence[torch.Tensor],
                 grads: Sequence[torch.Tensor | None], states: Sequence[Mapping[str, torch.Tensor]],
                 names: Sequence[str], hyper_rows: array, nh: int, step: float | None) -> list[int] | None:
    """The step on the last step's table when the parameters and buffers are where they were and every
    gradient has its parameter's layout as before (None: rebuild the table)."""
    assert cache.tables is not None
    key, pattern, left, metas, checked, slots, blocks, stride, k = cache.tables
    if len(grads) != len(pattern) or any((grad is None) is not was for grad, was in zip(grads, pattern, strict=True)):
        return None
    for js in slots.values():
        for j in js:
            if not _like(grads[j], params[j]):  # type: ignore[arg-type]
                return None
    if any(grads[j] is not None and _like(grads[j], params[j]) for j in left):  # type: ignore[arg-type]
        return None  # a tensor left to the caller might take the kernel now: decide afresh
    if _layout_key(params, states, names) != key:
        return None
    column = _codegen.META_FIXED + 1  # the gradient's address (column-major: column c of row r at c * rows + r)
    for dtype, js in slots.items():
        meta = metas[dtype]
        rows = len(js) * k
        position = column * rows
        for j, block in zip(js, blocks[dtype], strict=True):
            address = grads[j].data_ptr()  # type: ignore[union-attr]
            meta[position:position + k] = array("q", range(address, address + k * block, block))
            position += k
    for dtype, meta in metas.items():
        rows = len(slots[dtype]) * k
        reject = call(kernel, dtype, meta, rows, stride, hyper_rows, nh, float(step or 0.0), True, checked[dtype][2])
        if reject.count(0) != rows:
            raise RuntimeError("descentlab: stacked tensors of one race overlap in memory")
    return list(left)


def _rows_one_at_a_time(rule: Rule, math: Mapping[str, Any], names: Sequence[str], maximize: bool,
                        params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor | None],
                        states: Sequence[dict[str, torch.Tensor]], lrs: Sequence[float], step: float | None) -> None:
    """Tensors with a lazy buffer not made yet (SGD's momentum before its first step): the core's own
    call for each configuration's row, its lr a number (as its run computes it), then the buffers the
    rule made, stacked in the parameter's layout."""
    for param, grad, state in zip(params, grads, states, strict=True):
        made: list[dict[str, torch.Tensor]] = []
        for i, lr in enumerate(lrs):
            row = {name: state[name][i] for name in names if name in state}
            row_grad = -grad[i] if maximize else grad[i]  # type: ignore[index]
            apply_update(rule, param[i], row_grad, row, names, {**math, "lr": lr}, step)
            made.append(row)
        for name in names:
            if name not in state and all(name in row for row in made):
                stacked = torch.empty_like(param, memory_format=torch.preserve_format)
                for i, row in enumerate(made):
                    stacked[i].copy_(row[name])
                state[name] = stacked
