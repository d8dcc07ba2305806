"""What a rule's update reads from outside itself, which a traced kernel would keep — and what it does
that no trace or probe may repeat.

A fused kernel is the update traced once: a number the update reads from a module global
(``lr * SCALE``), a closure variable or a module's attribute (``config_module.CLIP``), or gets from a
helper function, is baked into the kernel as a constant, while the core reads it at every step. Set
``SCALE = 10`` between two steps and the fused step kept moving by the old value (-0.2 where the core
gives -1.1). So this module reads the bytecode of the functions the update reaches
(:mod:`._bytecode`) and lists every name they load from outside:

- a place whose object identifies what is read — an immutable value (a number of an exact builtin or
  numpy type, a string, ``None``, a dtype, an enum member, a tuple of such), a function (a notebook cell
  that redefines a helper rebinds its name), a module, a class — is recorded; the kernel is used only
  while every place still holds the same object (:func:`changed`, a few lookups a step), and a group
  whose place changed steps on the core from then on, with its name;
- everything it cannot watch so makes the update unfit for a trace (:attr:`Screen.problem`: the fused
  path refuses it, the slicing paths, which call the real update, still take it): an object that
  can change in place (an instance whose attribute it reads, a list, a dict, a tensor, a mutable default
  or ``partial`` argument, a function's attribute), an update that is not a plain function (a bound
  method reads through ``self``, a callable object's body is not read), a read by a name the bytecode does
  not show (``globals()``, ``getattr``, an ``import`` inside the rule), a C function that reads state
  (``torch.get_default_dtype()``, ``time.time()``, ``random.random()``: any outside :data:`PURE_C_MODULES`
  and torch's recorded tensor ops), an assignment to a global or an enclosing variable, and a helper
  deeper than the walk reads. The last kinds but the depth (:attr:`Screen.effect`) may give another
  value or change state at each call, so every path but the core, which calls the update once a tensor,
  would differ: the engine steps such an update on the core in every mode, without probing it.

Hyper-parameters are the way to give a rule a number that changes: they are inputs of the kernel.
"""

from __future__ import annotations

import builtins
import enum
import functools
import sys
import types
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

from ._bytecode import ATTRIBUTE_OPCODES, DEPTH, MISSING, Reached, Resolved, callees, reached, resolve, trusted_module
from ._op_names import ALIASES, TENSOR_OP_NAMES
from ._type_checks import type_inspection

Location = tuple[Any, str, str]
"""(holder, name, kind): kind "item" (a globals dict's entry), "cell" (a closure cell) or "attribute"."""
_C_CALLABLES = (types.BuiltinFunctionType, types.MethodDescriptorType, types.WrapperDescriptorType,
                types.MethodWrapperType, types.ClassMethodDescriptorType)
_FROZEN_TYPES = (int, float, complex, bool, str, bytes, type(None), torch.dtype, torch.device, range)
PURE_C_MODULES = frozenset({"builtins", "math", "cmath", "operator", "_operator"})
"""Modules whose C functions compute from their arguments alone (less :data:`READS_BY_NAME`)."""
READS_BY_NAME = (getattr, setattr, delattr, hasattr, globals, vars, locals, eval, exec, __import__, compile,
                 id, hash, input, open, breakpoint)
"""Builtins that read or write state by a name or an identity the bytecode does not show."""
DERIVED_ATTRIBUTES = {complex: ("real", "imag"), float: ("real", "imag"), int: ("real", "imag")}
NUMPY_SCALARS = frozenset({np.float16, np.float32, np.float64, np.longdouble, np.int8, np.int16, np.int32,
                           np.int64, np.uint8, np.uint16, np.uint32, np.uint64, np.bool_, np.complex64,
                           np.complex128})
LIBRARY_PACKAGES = frozenset({"builtins", "numpy", "torch"})
"""Whose modules and classes an update may hold whole (``torch.Tensor``, ``float``, ``np.float32``)."""
RANDOM_NAMES = frozenset({"rand", "rand_like", "randn", "randn_like", "randint", "randint_like", "randperm",
                          "normal", "normal_", "uniform_", "bernoulli", "bernoulli_", "multinomial", "poisson",
                          "random_", "exponential_", "geometric_", "cauchy_", "log_normal_", "dropout",
                          "dropout_", "rrelu", "rrelu_", "manual_seed", "seed", "set_rng_state", "empty",
                          "empty_like", "empty_strided"})
"""Names of torch functions and tensor methods that draw random numbers (or give uninitialised memory):
called more often than the core calls them (per slice, in a probe), they give other numbers."""


def _plain_named_tuple(kind: type) -> bool:
    """A class made by ``collections.namedtuple`` and nothing added: its items and fields are the tuple's."""
    return (kind.__bases__ == (tuple,) and isinstance(getattr(kind, "_fields", None), tuple)
            and all(name in ("_fields", "_field_defaults", "__doc__", "__slots__", "__module__", "__new__",
                             "__repr__", "_asdict", "_replace", "_make", "__getnewargs__", "__match_args__")
                    or (name in kind._fields and type(member).__name__ == "_tuplegetter")
                    for name, member in vars(kind).items()))


def _frozen(value: Any) -> bool:
    """An immutable value whose identity fixes everything the update can read of it: an exact builtin or
    numpy number, a string, None, a dtype, a device, a tuple (or a plain named tuple) of such, an enum
    member whose value is such."""
    if type(value) in (tuple, frozenset) or (isinstance(value, tuple) and _plain_named_tuple(type(value))):
        return all(_frozen(v) for v in value)
    if isinstance(value, enum.Enum):
        return _frozen(value.value)
    return type(value) in _FROZEN_TYPES or type(value) in NUMPY_SCALARS


def _attribute_fixed(value: Any, attribute: str) -> bool:
    """Whether ``value.attribute`` is fixed by the (frozen) value: a named tuple's field, an enum member's
    ``name``/``value``, a number's ``real``/``imag``."""
    if isinstance(value, tuple) and attribute in getattr(type(value), "_fields", ()):
        return True
    if isinstance(value, enum.Enum):
        return attribute in ("name", "value")
    return attribute in DERIVED_ATTRIBUTES.get(type(value), ())


def _c_module(value: Any) -> str | None:
    """The module a C function belongs to; None for a method bound to an object (``random.random``: a
    Random instance's state)."""
    owner = getattr(value, "__self__", None)
    if owner is not None and not isinstance(owner, (types.ModuleType, type)):
        return None
    objclass = getattr(value, "__objclass__", None)
    return (owner.__name__ if isinstance(owner, types.ModuleType)
            else getattr(objclass, "__module__", None) if objclass is not None
            else getattr(value, "__module__", None)) or ""


def _is_torch(module: str) -> bool:
    return module == "torch" or module.startswith("torch.")


def _pure_c(value: Any) -> bool:
    """A C function that computes from its arguments alone: one of :data:`PURE_C_MODULES`, or torch's
    tensor op of a name the trace records (it takes the stand-ins; any other torch C function, such as
    ``torch.get_default_dtype``, reads state or is not recorded)."""
    module = _c_module(value)
    if module is None:
        return False
    if module in PURE_C_MODULES:
        return not any(value is builtin for builtin in READS_BY_NAME)
    name = getattr(value, "__name__", "").rstrip("_")
    return _is_torch(module) and (name in TENSOR_OP_NAMES or name in ALIASES)


def _c_effect(value: Any) -> bool:
    """Whether a C function that is not pure (:func:`_pure_c`) may give another value, or change state,
    at every call: a method bound to an object, any function outside torch (``time.time``), and torch's
    random draws; other torch functions (``torch.where``, ``torch.get_default_dtype``) give the same within
    a step, so only a trace, which would keep their result, must not take them."""
    module = _c_module(value)
    if module is None or not _is_torch(module):
        return True
    return getattr(value, "__name__", "") in RANDOM_NAMES


def _top_problem(update: Any) -> str | None:
    """Why the update itself cannot be read: only a function (or a partial of one) has a body to read."""
    if isinstance(update, types.MethodType):
        return f"the update is a method bound to a {type(update.__self__).__name__}, read through self"
    if isinstance(update, functools.partial):
        return _top_problem(update.func) or _arguments_problem("the update's partial", update)
    if not isinstance(update, types.FunctionType):
        return f"the update is a {type(update).__name__}, not a function: its body cannot be read"
    return None


def _arguments_problem(where: str, value: Any) -> str | None:
    """A mutable default argument, or a partial's mutable argument: changed in place, unseen."""
    values = ([*value.args, *value.keywords.values()] if isinstance(value, functools.partial)
              else [*(value.__defaults__ or ()), *(value.__kwdefaults__ or {}).values()])
    for argument in values:
        if not (_frozen(argument) or callees(argument)):
            return f"{where} has a {type(argument).__name__} bound to it as an argument"
    return None


def _import_problem(function_read: Reached) -> str | None:
    for instruction in function_read.instructions:
        if instruction.opname in ("IMPORT_NAME", "IMPORT_FROM"):
            return f"{function_read.where} imports {instruction.argval} inside the rule"
    return None


def _instruction_effect(function_read: Reached) -> str | None:
    """An assignment to a global or an enclosing variable, or a random draw by name (``param.normal_()``,
    ``torch.randn_like``)."""
    own_cells = set(function_read.target.__code__.co_freevars)
    for instruction in function_read.instructions:
        name = instruction.opname
        if name in ("STORE_GLOBAL", "DELETE_GLOBAL"):
            return f"{function_read.where} assigns the global {instruction.argval}"
        if name in ("STORE_DEREF", "DELETE_DEREF") and instruction.argval in own_cells:
            return f"{function_read.where} assigns the enclosing variable {instruction.argval}"
        if name in ATTRIBUTE_OPCODES and instruction.argval in RANDOM_NAMES:
            return f"{function_read.where} calls {instruction.argval}(), a random draw"
    return None


def _function_places(function_read: Reached) -> list[Location]:
    """A function's defaults and code, which can be replaced on the same function object."""
    target = function_read.target
    return [(target, name, "attribute") for name in ("__code__", "__defaults__", "__kwdefaults__")]


def _library(value: Any) -> bool:
    """A module or class of Python itself, numpy or a trusted package (:func:`._bytecode.trusted`)."""
    name = value.__name__ if isinstance(value, types.ModuleType) else getattr(value, "__module__", "") or ""
    package = name.split(".")[0]
    return package in LIBRARY_PACKAGES or package in sys.stdlib_module_names or trusted_module(name)


def _value_problem(where: str, found: Resolved) -> str | None:
    """Why reading ``found`` cannot be watched by an identity check of its place, or None."""
    value = found.value
    if value is MISSING:
        return None
    if found.rest and not (_frozen(value) and _attribute_fixed(value, found.rest[0])):
        return f"{where} reads {found.dotted}.{found.rest[0]}, an attribute of a {type(value).__name__}"
    if any(value is builtin for builtin in READS_BY_NAME):
        return f"{where} calls {found.dotted}(), which reads by a name or an identity"
    if isinstance(value, types.MethodType):
        return f"{where} calls {found.dotted}, a method bound to a {type(value.__self__).__name__}"
    if isinstance(value, functools.partial):
        return _top_problem(value.func) or _arguments_problem(f"{where}'s {found.dotted}", value)
    if isinstance(value, _C_CALLABLES):
        if _pure_c(value):
            return None
        if _c_effect(value):
            return f"{where} calls {found.dotted}(), which may give another value or change state at each call"
        return f"{where} calls {found.dotted}(), a torch function the fused code generator does not record"
    if isinstance(value, (types.ModuleType, type)) and not _library(value):
        # held, not read through: an attribute read later (cfg = CFG; cfg.X, a helper's holder.X) has no
        # place to watch
        return f"{where} takes the {type(value).__name__} {found.dotted} itself, not one of its attributes"
    if isinstance(value, (types.FunctionType, types.ModuleType, type)) or _frozen(value):
        return None
    return f"{where} reads {found.dotted}, a {type(value).__name__}"


SIZE_NAMES = frozenset({"shape", "size", "numel", "nelement", "stride", "storage_offset", "is_contiguous",
                        "data_ptr", "untyped_storage", "__len__"})
"""Tensor attributes that tell a tensor's sizes or layout: an update that reads one may step a slice, a
concatenation or a stack of runs otherwise than the tensor itself (the slicing paths, the batched race),
at sizes no probe can try (``numel() >= 1e6``: the probe's tensors hold at most 48 elements, a slice
262,144)."""
RANK_NAMES = frozenset({"dim", "ndim", "ndimension"})
"""A tensor's rank: the probe tries ranks 0 to 5, over its few steps; read in an update that also reads the
step count (``step > 3 and param.dim() == 2``), past them."""


class Screen(NamedTuple):
    """What :func:`outside_reads` found."""

    locations: tuple[Location, ...]
    """The places read from outside, each checked before a kernel is used."""
    problem: str | None
    """The first thing that cannot be watched so ("<function> <what it does>"): not traced, not probed
    by class."""
    effect: str | None
    """Where that thing changes or reads state outside the rule at each call (an assignment to a global or
    an enclosing variable, a C function outside :data:`PURE_C_MODULES` and torch's tensor ops): every path
    but the core would call the update a different number of times (a probe, a trace, slices)."""
    type_look: str | None = None
    """Where the update looks at a value's type (:func:`._type_checks.type_inspection`)."""
    shape: str | None = None
    """Where the update reads a tensor's shape where the probe cannot try it (:func:`_shape_read`): no
    slicing path, no stacking, whatever a probe finds on its small tensors over a few steps."""


def outside_reads(function: Callable[..., Any], depth: int = DEPTH) -> Screen:
    """What the functions ``function`` reaches read from outside it (data, and the functions and modules
    they call), and what of it cannot be watched; see the module docstring. Kept per function while the
    places it read still hold the same objects (a helper redefined is read again: what the new one reads,
    draws or tests is screened before the next trace)."""
    known = _SCREENS.get(id(function))
    if known is not None and known[0] is function and known[1] == depth and changed(known[3]) is None:
        return known[2]
    functions = list(reached(function, depth))  # read once, for the three screens
    screen = _screen(function, functions, depth)._replace(type_look=type_inspection(function, depth, functions),
                                                          shape=_shape_read(functions))
    _SCREENS[id(function)] = (function, depth, screen, snapshot(screen.locations))
    while len(_SCREENS) > SCREENS_MAX:
        _SCREENS.pop(next(iter(_SCREENS)), None)
    return screen


SCREENS_MAX = 256
_SCREENS: dict[int, tuple[Callable[..., Any], int, Screen, tuple[tuple[Location, Any], ...]]] = {}


def _shape_read(functions: Sequence[Reached]) -> str | None:
    """Where the update (``functions[0]``) or what it reaches reads what the shape probe cannot try
    (:data:`SIZE_NAMES`, ``len``, or the rank in an update that reads the step count), or None."""
    reads_step = any(i.opname in ("LOAD_FAST", "LOAD_DEREF") and i.argval == "step"
                     for i in functions[0].instructions) if functions else False
    for function_read in functions:
        for instruction in function_read.instructions:
            name = instruction.argval
            if instruction.opname in ATTRIBUTE_OPCODES and (name in SIZE_NAMES or (reads_step and name in RANK_NAMES)):
                return f"{function_read.where} reads .{name}" + (" and the step count" if name in RANK_NAMES else "")
        if any(load.value is len for load in function_read.loads):
            return f"{function_read.where} calls len()"
    return None


def _screen(function: Callable[..., Any], functions: Sequence[Reached], depth: int) -> Screen:
    top = _top_problem(function)
    if top is not None:
        return Screen((), top, None)
    locations: dict[tuple[int, str], Location] = {}
    for function_read in functions:
        where = function_read.where
        if function_read.beyond:
            return Screen((), f"{where} calls {function_read.beyond[0]}, deeper than the {depth} calls the screen "
                              "reads", None)
        effect = _instruction_effect(function_read)
        if effect is not None:
            return Screen((), effect, effect)
        problem = _import_problem(function_read) or _arguments_problem(where, function_read.target)
        if problem is not None:
            return Screen((), problem, None)
        places = _function_places(function_read)
        for load in function_read.loads:
            found = resolve(load)
            problem = _value_problem(where, found)
            if problem is not None:
                stateful = isinstance(found.value, _C_CALLABLES) and _c_effect(found.value)
                return Screen((), problem, problem if stateful else None)
            if found.value is MISSING:
                continue
            if load.holder is vars(builtins):  # a global of that name would shadow it later (abs = ...)
                places.append((function_read.target.__globals__, load.name, "item"))
            places.append((found.owner, found.attribute, "attribute") if found.owner is not None
                          else (load.holder, load.name, "cell" if isinstance(load.holder, types.CellType) else "item"))
        for place in places:
            locations.setdefault((id(place[0]), place[1]), place)
    return Screen(tuple(locations.values()), None, None)


def value_at(location: Location) -> Any:
    """What ``location`` holds now (``MISSING`` where it holds nothing)."""
    holder, name, kind = location
    if kind == "item":
        return holder.get(name, MISSING)
    if kind == "cell":
        try:
            return holder.cell_contents
        except ValueError:
            return MISSING
    return getattr(holder, name, MISSING)


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
