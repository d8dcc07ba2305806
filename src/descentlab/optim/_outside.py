"""Values a rule's update reads from outside the rule, which a traced kernel would keep.

A fused kernel is the update traced once: a number the update reads from a module global
(``lr * SCALE``), a closure variable or a module's attribute (``config_module.CLIP``) is baked into the
kernel as a constant, while the core reads it at every step. Set ``SCALE = 10`` between two steps and the
fused step kept moving by the old value (-0.2 where the core gives -1.1). So before a trace this module
lists, from the bytecode of the functions the update reaches (:mod:`._bytecode`), every name it loads
that holds data rather than code:

- an immutable value (a number, a string, ``None``, a dtype, an enum member, a tuple of such) is
  recorded with where it lives (a globals dict, a closure cell, a module's or class's attribute); the
  kernel is used only while each place still holds the same object (:func:`changed`, a few lookups a
  step), and a group whose value changed steps on the core from then on, with the reason;
- any other object (an instance whose attributes the update reads, a list, a dict, a tensor) is mutable
  in place where no lookup can tell: such an update is not traced at all (its groups step on the core).

Hyper-parameters are the way to give a rule a number that changes: they are inputs of the kernel.
"""

from __future__ import annotations

import enum
import functools
import types
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ._bytecode import DEPTH, MISSING, callees, reached, resolve

Location = tuple[Any, str, str]
"""(holder, name, kind): kind "item" (a globals dict's entry), "cell" (a closure cell) or "attribute"."""
_CODE = (types.FunctionType, types.BuiltinFunctionType, types.MethodType, types.ModuleType, type,
         functools.partial, types.MethodDescriptorType, types.WrapperDescriptorType, types.MethodWrapperType,
         types.ClassMethodDescriptorType, types.GetSetDescriptorType, types.MemberDescriptorType)
_FROZEN = (int, float, complex, bool, str, bytes, type(None), torch.dtype, torch.device, enum.Enum, range)


def _frozen(value: Any) -> bool:
    if isinstance(value, (tuple, frozenset)):
        return all(_frozen(v) for v in value)
    return isinstance(value, _FROZEN)


def value_at(location: Location) -> Any:
    """What ``location`` holds now (a private marker where it holds nothing)."""
    holder, name, kind = location
    if kind == "item":
        return holder.get(name, MISSING)
    if kind == "cell":
        try:
            return holder.cell_contents
        except ValueError:
            return MISSING
    return getattr(holder, name, MISSING)


@functools.lru_cache(maxsize=256)
def outside_reads(function: Callable[..., Any], depth: int = DEPTH) -> tuple[tuple[Location, ...], str | None]:
    """Where the functions ``function`` reaches read immutable data from outside it, and the first mutable
    object they read from outside ("<function> reads <name>, a <type>"), or None."""
    locations: dict[tuple[int, str], Location] = {}
    for function_read in reached(function, depth):
        for load in function_read.loads:
            if load.holder is None:  # a builtin
                continue
            found = resolve(load)  # module.NAME, Class.NAME: the attribute is what is read
            value = found.value
            location: Location = ((found.owner, found.attribute, "attribute") if found.owner is not None
                                  else (load.holder, load.name,
                                        "cell" if isinstance(load.holder, types.CellType) else "item"))
            if value is MISSING or (isinstance(value, _CODE) and not _frozen(value)) or callees(value):
                continue
            if not _frozen(value):
                return (), f"{function_read.where} reads {found.dotted}, a {type(value).__name__}"
            locations.setdefault((id(location[0]), location[1]), location)
    return tuple(locations.values()), None


def snapshot(locations: Sequence[Location]) -> tuple[tuple[Location, Any], ...]:
    """Each location with the object it holds now (what a trace starting now reads)."""
    return tuple((location, value_at(location)) for location in locations)


def values_now(function: Callable[..., Any]) -> tuple[Any, ...]:
    """The objects the places ``function`` reads immutable data from hold now (:func:`outside_reads`)."""
    return tuple(value_at(location) for location in outside_reads(function)[0])


def changed(recorded: Sequence[tuple[Location, Any]]) -> str | None:
    """The name of the first recorded location that no longer holds its object, or None."""
    for location, value in recorded:
        if value_at(location) is not value:
            return location[1]
    return None
