"""Calling the flat update's compiled graph directly, without dynamo's frame evaluation each step.

``torch.compile`` wraps a compiled graph in frame evaluation: every call checks dynamo's guards,
then rebuilds the graph's inputs from the function's arguments. For the flat engine's update that
layer, with AOTAutograd's wrapper inside it, costs 0.3-0.9 ms a step at 20M float32 elements against
calling the same graph directly, 4-11 % of the step (benchmarks/step_overheads.py; the Python it runs
is cold in cache after a pass over hundreds of MB).

The engine already guarantees what those guards check. A kernel (see :mod:`._flat`) is built for one
rule, buffer set, set of static hyper-parameters, ``maximize``, dtype and device, and its inputs are
always 1-D contiguous flat buffers plus 0-dim float64 tensors it made itself. What the engine does
not know is which sizes a compiled graph serves (dynamo specialises sizes 0 and 1), so each bucket
size is first called through dynamo; once dynamo has served that size with a graph this module can
map, later calls of that size go to the graph directly.

:func:`direct_call` maps the graph's placeholders back to the update's arguments through the sources
dynamo recorded for them: an argument, an item of one, an entry of the closure's ``static`` dict of
hyper-parameters or an item of one (dynamo passes a float as a 0-dim float64 tensor), or a tensor's
size. Anything else gives ``None``, and the engine keeps calling through dynamo. Where AOTAutograd's
wrapper around the graph has nothing to do, the call goes on to Inductor's own entry point
(:func:`._compile.boxed_entry`).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx
from torch._dynamo.source import DictGetItemSource, GetItemSource, LocalSource, TensorProperty, TensorPropertySource

from ._compile import boxed_entry

ARGUMENTS = ("param", "grad", "buffers", "step", "dynamic")
"""The compiled update's parameters, in order (``_flat._make_compiled``)."""
CLOSURE = "static"
"""The one closure variable whose values may become graph inputs: the static hyper-parameters."""


@dataclass(frozen=True)
class Captured:
    """One graph dynamo handed the backend: where each input comes from, and the compiled callable."""

    inputs: tuple[tuple[Any, Any], ...]
    """Per placeholder: (dynamo's source, the example value: a fake tensor, SymInt or number)."""
    compiled: Callable[..., Any]
    returns_nothing: bool


def capture(gm: torch.fx.GraphModule, compiled: Callable[..., Any]) -> Captured:
    """Record what :func:`direct_call` needs from a graph dynamo passed to the backend."""
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    output = next(n for n in gm.graph.nodes if n.op == "output")
    returned = output.args[0] if output.args else None
    returns_nothing = returned is None or (isinstance(returned, (tuple, list)) and len(returned) == 0)
    inputs = tuple((getattr(n, "_dynamo_source", None), n.meta.get("example_value")) for n in placeholders)
    return Captured(inputs, compiled, returns_nothing)


class _Unmapped(Exception):
    pass


def direct_call(captured: Captured, static: Mapping[str, Any], args: Sequence[Any]
                ) -> Callable[[Sequence[Any]], Any] | None:
    """A function of the update's ``args`` that calls ``captured.compiled`` with the inputs dynamo
    would build, or None when some input's source is not one this module knows.

    ``args`` (the call dynamo just served) checks the mapping: every input must come out with the
    kind, dtype and number of dimensions of dynamo's example."""
    if not captured.returns_nothing:
        return None  # dynamo would act on returned values (side effects); keep it in the loop
    try:
        getters = [_getter(source, example, static) for source, example in captured.inputs]
    except _Unmapped:
        return None
    for getter, (_, example) in zip(getters, captured.inputs, strict=True):
        if not _matches(getter(args), example):
            return None
    entry = boxed_entry(captured.compiled)
    if entry is not None:
        def call_entry(call_args: Sequence[Any]) -> Any:
            return entry([get(call_args) for get in getters])

        return call_entry
    compiled = captured.compiled

    def call(call_args: Sequence[Any]) -> Any:
        return compiled(*[get(call_args) for get in getters])

    return call


def _matches(value: Any, example: Any) -> bool:
    if isinstance(example, torch.Tensor):
        return (isinstance(value, torch.Tensor) and value.dtype == example.dtype and value.dim() == example.dim()
                and value.device.type == example.device.type)
    if isinstance(example, (torch.SymInt, int)):
        return isinstance(value, int) and not isinstance(value, bool)
    return False


def _getter(source: Any, example: Any, static: Mapping[str, Any]) -> Callable[[Sequence[Any]], Any]:
    if _from_closure(source):
        value = _evaluate(source, static)
        if isinstance(example, torch.Tensor) and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = torch.tensor(value, dtype=example.dtype, device=example.device)  # dynamo's wrapped number
        return lambda _args: value
    return _argument_getter(source)


def _from_closure(source: Any) -> bool:
    while not isinstance(source, LocalSource):
        if not isinstance(source, (GetItemSource, DictGetItemSource, TensorPropertySource)):
            raise _Unmapped
        source = source.base
    return source.is_derefed_cell_contents


def _evaluate(source: Any, static: Mapping[str, Any]) -> Any:
    if isinstance(source, LocalSource):
        if source.local_name != CLOSURE:
            raise _Unmapped
        return static
    if isinstance(source, DictGetItemSource) and isinstance(source.index, str):
        base = _evaluate(source.base, static)
        if source.index not in base:
            raise _Unmapped
        return base[source.index]
    if isinstance(source, GetItemSource) and isinstance(source.index, int) and not source.index_is_slice:
        base = _evaluate(source.base, static)
        if not isinstance(base, (tuple, list)) or not -len(base) <= source.index < len(base):
            raise _Unmapped
        return base[source.index]
    raise _Unmapped


def _argument_getter(source: Any) -> Callable[[Sequence[Any]], Any]:
    if isinstance(source, LocalSource):
        if source.local_name not in ARGUMENTS or source.is_varargs or source.is_varkw:
            raise _Unmapped
        return operator.itemgetter(ARGUMENTS.index(source.local_name))
    if isinstance(source, GetItemSource) and isinstance(source.index, int) and not source.index_is_slice:
        base, index = _argument_getter(source.base), source.index
        return lambda args: base(args)[index]
    if isinstance(source, TensorPropertySource) and source.prop is TensorProperty.SIZE and source.idx is not None:
        base, dim = _argument_getter(source.base), source.idx
        return lambda args: base(args).size(dim)
    raise _Unmapped
